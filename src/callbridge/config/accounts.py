"""`[accounts.NAME]`: SIP provider accounts (registration, trunk calls), from the config file
and CALLBRIDGE_ACCOUNTS_<NAME>_<FIELD> (the password belongs in the environment)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from callbridge.core.errors import ConfigError
from callbridge.sip.access import parse_networks

__all__ = ["AccountSettings", "account_settings"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_ENV = re.compile(r"CALLBRIDGE_ACCOUNTS_([A-Z0-9][A-Z0-9_]*?)_([A-Z]+(?:_[A-Z]+)*)")


@dataclass(frozen=True, slots=True)
class AccountSettings:
    name: str
    registrar: str  # host[:port]
    username: str
    password: str = field(default="", repr=False)  # never logged
    domain: str = ""  # the address-of-record's domain; default: the registrar host
    auth_username: str = ""  # digest username; default: username
    expires: int = 3600
    register: bool = True  # false: credentials for outbound calls only
    outbound_proxy: str = ""  # host[:port]
    agent: str = ""  # the agent for calls to this account ("" = default_agent)
    # networks this provider's INVITEs come from (its signalling IPs); "" = anywhere. Calls
    # to this account's username from elsewhere get 403.
    allow_from: str = ""


_KEYS = {f.name: f.type for f in fields(AccountSettings) if f.name != "name"}
_INT_KEYS = {"expires"}
_BOOL_KEYS = {"register"}


def _value(where: str, key: str, raw: Any) -> Any:
    if key in _INT_KEYS:
        try:
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(where, f"must be an integer, got {raw!r}") from None
    if key in _BOOL_KEYS:
        if isinstance(raw, bool):
            return raw
        low = str(raw).strip().lower()
        if low in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return low in ("1", "true", "yes", "on")
        raise ConfigError(where, f"must be true or false, got {raw!r}")
    if not isinstance(raw, str):
        raise ConfigError(where, "must be a string")
    return raw.strip()


def account_settings(table: Any, source: str, env: Mapping[str, str]) -> dict[str, AccountSettings]:
    """The `[accounts.NAME]` tables, then CALLBRIDGE_ACCOUNTS_<NAME>_<FIELD> overrides (which
    may also define an account of their own)."""
    if not isinstance(table, dict):
        raise ConfigError(f"accounts ({source})", "must be tables: [accounts.NAME] ...")
    merged: dict[str, dict[str, tuple[Any, str]]] = {}
    for name, body in table.items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"accounts.{name} ({source})",
                f'must be a table: [accounts.{name}] with registrar = "sip.example.com" and '
                'username = "..."',
            )
        merged[name] = {k: (v, source) for k, v in body.items()}
    for key, raw in env.items():
        m = _ENV.fullmatch(key)
        if m is None:
            continue
        name, attr = m.group(1).lower(), m.group(2).lower()
        merged.setdefault(name, {})[attr] = (raw, f"env {key}")
    out: dict[str, AccountSettings] = {}
    for name, body in merged.items():
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"accounts.{name}", "names are lower-case letters, digits, '_', '.', '-'"
            )
        values: dict[str, Any] = {}
        for key, (raw, src) in body.items():
            where = f"accounts.{name}.{key} ({src})"
            if key not in _KEYS:
                raise ConfigError(where, f"unknown key (allowed: {', '.join(_KEYS)})")
            values[key] = _value(where, key, raw)
        for required in ("registrar", "username"):
            if not values.get(required):
                raise ConfigError(
                    f"accounts.{name}.{required}",
                    f"is required (e.g. CALLBRIDGE_ACCOUNTS_{name.upper()}_{required.upper()})",
                )
        if values.get("allow_from"):
            try:
                parse_networks(values["allow_from"])
            except ValueError as exc:
                raise ConfigError(f"accounts.{name}.allow_from", str(exc)) from None
        out[name] = AccountSettings(name=name, **values)
    return out
