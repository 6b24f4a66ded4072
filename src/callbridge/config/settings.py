"""Settings: defaults < TOML file < CALLBRIDGE_* environment. Every bad value names its field.

This module reads the sources (the TOML file, the environment and its aliases) and is the one
import path for settings: the dataclasses and public names live in config.schema, the checks
in config.checks, the `[agents.NAME]` routes in config.agent_routes and the `[accounts.NAME]`
in config.accounts; the public names are re-exported here.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from callbridge.config.accounts import account_settings
from callbridge.config.agent_routes import agent_routes
from callbridge.config.checks import check_relations, coerce
from callbridge.config.schema import (
    AGENT_KINDS,
    BUILTIN_AGENTS,
    ENV_PREFIX,
    SECRET_SETTINGS,
    SECTION_TYPES,
    AgentRoute,
    AgentSettings,
    EchoSettings,
    HttpSettings,
    LimitsSettings,
    LlmSettings,
    LogSettings,
    RecordingSettings,
    RtpSettings,
    Settings,
    SipSettings,
    StoreSettings,
    SttSettings,
    TtsSettings,
    TwilioSettings,
    WebhooksSettings,
    all_fields,
    env_name,
    http_wanted,
)
from callbridge.core.errors import ConfigError

__all__ = [
    "AGENT_KINDS",
    "BUILTIN_AGENTS",
    "ENV_PREFIX",
    "SECRET_SETTINGS",
    "AgentRoute",
    "AgentSettings",
    "EchoSettings",
    "HttpSettings",
    "LimitsSettings",
    "LlmSettings",
    "LogSettings",
    "RecordingSettings",
    "RtpSettings",
    "Settings",
    "SipSettings",
    "StoreSettings",
    "SttSettings",
    "TtsSettings",
    "TwilioSettings",
    "WebhooksSettings",
    "all_fields",
    "env_name",
    "http_wanted",
    "load_settings",
]

# Names other tools use for the same setting (Twilio's own), read below CALLBRIDGE_*.
_ENV_ALIASES: dict[str, str] = {
    "twilio.account_sid": "TWILIO_ACCOUNT_SID",
    "twilio.auth_token": "TWILIO_AUTH_TOKEN",
}


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated settings. Raises ConfigError naming the field and the fix."""
    env = os.environ if environ is None else environ
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = env[ENV_PREFIX + "CONFIG"]
    values: dict[str, tuple[Any, str]] = {}
    routes_table: tuple[Any, str] = ({}, "")
    accounts_table: tuple[Any, str] = ({}, "")
    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config file", f"{path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config file", f"{path} is not valid TOML: {exc}") from None
        known = dict(all_fields())
        for key, val in data.items():
            if key == "agents":
                routes_table = (val, str(path))
            elif key == "accounts":
                accounts_table = (val, str(path))
            elif isinstance(val, dict) and key in SECTION_TYPES:
                for sub, subval in val.items():
                    dotted = f"{key}.{sub}"
                    if dotted not in known:
                        raise ConfigError(f"[{key}] {sub} ({path})", _unknown_hint(dotted, known))
                    values[dotted] = (subval, str(path))
            elif key in known:
                values[key] = (val, str(path))
            else:
                raise ConfigError(f"{key} ({path})", _unknown_hint(key, known))
    defaults = dict(all_fields())
    for dotted, alias in _ENV_ALIASES.items():
        if alias in env:
            values[dotted] = (env[alias], f"env {alias}")
    for dotted in defaults:
        name = env_name(dotted)
        if name in env:
            values[dotted] = (env[name], f"env {name}")
    settings = Settings()
    sections: dict[str, Any] = {s: getattr(settings, s) for s in SECTION_TYPES}
    top: dict[str, Any] = {}
    for dotted, (raw, source) in values.items():
        value = coerce(dotted, raw, defaults[dotted], source)
        if "." in dotted:
            sect, key = dotted.split(".", 1)
            sections[sect] = replace(sections[sect], **{key: value})
        else:
            top[dotted] = value
    routes = agent_routes(*routes_table, env)
    accounts = account_settings(*accounts_table, env)
    settings = replace(settings, **top, **sections, agents=routes, accounts=accounts)
    check_relations(settings)
    return settings


def _unknown_hint(dotted: str, known: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(dotted, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown setting{hint}"
