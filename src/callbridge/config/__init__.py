"""Typed settings: one TOML file plus CALLBRIDGE_* environment overrides, validated at start."""
