"""`[agents.NAME]`: routes to external agents, from the config file's tables and
CALLBRIDGE_AGENTS_<NAME>_<FIELD> (which override one field or define a route of their own).

Route names are the user part of `sip:NAME@host`, so their syntax and the reserved built-in
names are checked here too (default_agent uses the same rule).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from callbridge.config import validators as v
from callbridge.config.schema import AGENT_KINDS, BUILTIN_AGENTS, ENV_PREFIX, AgentRoute
from callbridge.core.errors import ConfigError

__all__ = ["agent_routes", "route_name"]

_ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_ROUTE_KEYS = ("kind", "url", "parameters", "secret", "connect_timeout")
# CALLBRIDGE_AGENTS_<NAME>_<FIELD>: one route without a config file ("_" in NAME is kept).
_ROUTE_ENV = re.compile(
    ENV_PREFIX + r"AGENTS_([A-Z0-9][A-Z0-9_]*)_(KIND|URL|SECRET|CONNECT_TIMEOUT)"
)


def route_name(value: str, *, reserved: bool = True) -> str:
    """A name the SIP user part can carry; `reserved` refuses the built-in names."""
    if not _ROUTE_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a route name: use lowercase letters, digits, '-', '_' or '.' "
            "(it is the user part of sip:NAME@host)"
        )
    if reserved and value in ("agent", *BUILTIN_AGENTS):
        raise ValueError(
            f"{value!r} is built in ('agent' is the default agent, 'voice' and 'echo' are "
            "callbridge's own); choose another name"
        )
    return value


def _ws_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        hint = ""
        if parts.scheme in ("http", "https"):
            hint = f" (for a WebSocket write {'wss' if parts.scheme == 'https' else 'ws'}://)"
        raise ValueError(f"must be a ws:// or wss:// URL with a host, got {value!r}{hint}")
    return value


def _route(name: str, table: Mapping[str, Any], source: str) -> AgentRoute:
    where = f"[agents.{name}]"
    try:
        route_name(name)
    except ValueError as exc:
        raise ConfigError(f"{where} ({source})", str(exc)) from None
    for key in table:
        if key not in _ROUTE_KEYS:
            close = [k for k in _ROUTE_KEYS if k.startswith(str(key)[:3])]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{where} {key} ({source})",
                f"unknown key{hint} (allowed: {', '.join(_ROUTE_KEYS)})",
            )
    kind = table.get("kind", "twilio-socket")
    if kind not in AGENT_KINDS:
        raise ConfigError(
            f"{where} kind ({source})",
            f"unknown kind {kind!r}; allowed: {', '.join(AGENT_KINDS)}",
        )
    url = table.get("url", "")
    if not url:
        raise ConfigError(
            f"{where} url ({source})",
            'a twilio-socket agent needs the URL of its WebSocket, e.g. url = "wss://agent.example.com/media"',
        )
    if not isinstance(url, str):
        raise ConfigError(f"{where} url ({source})", "must be a string")
    try:
        url = _ws_url(url.strip())
    except ValueError as exc:
        raise ConfigError(f"{where} url ({source})", str(exc)) from None
    params = table.get("parameters", {})
    if not isinstance(params, dict):
        raise ConfigError(
            f"{where} parameters ({source})",
            'must be a table of strings, e.g. parameters = { tenant = "acme" }',
        )
    for key, val in params.items():
        if not isinstance(val, str):
            raise ConfigError(
                f"{where} parameters.{key} ({source})",
                f'must be a string (Twilio\'s customParameters are strings): write {key} = "{val}"',
            )
    secret = table.get("secret", "")
    if not isinstance(secret, str):
        raise ConfigError(f"{where} secret ({source})", "must be a string")
    timeout = table.get("connect_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float | str):
        raise ConfigError(f"{where} connect_timeout ({source})", "must be a number of seconds")
    try:
        timeout = v.positive(float(timeout))
    except ValueError as exc:
        msg = str(exc) if "must" in str(exc) else f"must be a number of seconds, got {timeout!r}"
        raise ConfigError(f"{where} connect_timeout ({source})", msg) from None
    return AgentRoute(name, kind, url, dict(params), secret, timeout)


def agent_routes(table: Any, source: str, env: Mapping[str, str]) -> dict[str, AgentRoute]:
    """The `[agents.NAME]` tables of the config file, then CALLBRIDGE_AGENTS_<NAME>_<FIELD>
    (which override one field of a file's route, or define a route of their own)."""
    if not isinstance(table, dict):
        raise ConfigError(f"agents ({source})", "must be tables: [agents.NAME] with kind, url ...")
    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for name, body in table.items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"agents.{name} ({source})",
                f'must be a table: [agents.{name}] with kind = "twilio-socket" and url = "wss://..."',
            )
        merged[name] = dict(body)
        sources[name] = source
    for key, value in env.items():
        m = _ROUTE_ENV.fullmatch(key)
        if m is None:
            continue
        name = m.group(1).lower()
        merged.setdefault(name, {})[m.group(2).lower()] = value
        sources[name] = f"env {key}" if name not in table else f"{source} + env"
    return {name: _route(name, body, sources[name]) for name, body in merged.items()}
