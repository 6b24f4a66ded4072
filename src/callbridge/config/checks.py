"""What makes a setting valid: the per-field validators, type coercion from TOML or
environment strings, and the relations between fields checked once everything is read.

Every failure is a ConfigError naming the field (and its source) with the fix; the messages
are part of the user interface and tests check them word for word.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from callbridge.config import validators as v
from callbridge.config.agent_routes import route_name
from callbridge.config.schema import BUILTIN_AGENTS, Settings, env_name
from callbridge.config.validators import auth_users
from callbridge.core.errors import ConfigError
from callbridge.sip.uri import SipUri

__all__ = ["check_relations", "coerce"]


def _workers(value: str) -> str:
    """Gateway processes: "" (1), "auto" (one per core) or a count; 0 = auto."""
    low = value.strip().lower()
    if low in ("", "auto") or (low.isascii() and low.isdigit() and int(low) <= 256):
        return low
    raise ValueError('must be "auto" or a number of worker processes (0 = auto), e.g. 4')


def _transfer_target(value: str) -> str:
    """A sip:/sips: URI (or tel:) for blind transfers (REFER, RFC 3515 §2.1); "" = none."""
    if not value or (value.lower().startswith("tel:+") and value[5:].isdigit()):
        return value
    try:
        SipUri.parse(value)
    except ValueError:
        raise ValueError(
            'must be a SIP URI, e.g. "sip:reception@pbx.example.com", or "tel:+15551234567"'
        ) from None
    return value


def _ice_servers(value: str) -> str:
    """A comma list of stun:/turn:/turns: URLs (RFC 7064, RFC 7065); "" = none."""
    for url in (u.strip() for u in value.split(",")):
        scheme, _, rest = url.partition(":")
        if url and (scheme not in ("stun", "turn", "turns") or not rest or " " in rest):
            raise ValueError(
                f'{url!r} is not a stun:, turn: or turns: URL, e.g. "stun:stun.example.com:3478"'
            )
    return value


# Field validators by dotted name; fields not listed only get their type checked.
_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "sip.host": v.host,
    "sip.port": v.port,
    "sip.t1": v.positive,
    "sip.t2": v.positive,
    "sip.t4": v.positive,
    "sip.allow_from": v.networks,
    "sip.trusted_proxies": v.networks,
    "sip.dns_servers": v.addresses,
    "sip.auth_algorithms": v.algorithms,
    "http.host": v.host,
    "http.port": v.port,
    "http.enabled": v.choice("auto", "true", "false"),
    "http.max_body_bytes": v.positive,
    "webrtc.ice_servers": _ice_servers,
    "rtp.port_min": v.port,
    "rtp.port_max": v.port,
    "rtp.timeout": v.positive,
    "rtp.jitter_min_ms": v.non_negative,
    "rtp.jitter_max_ms": v.positive,
    "log.format": v.choice("text", "json"),
    "log.level": v.choice("DEBUG", "INFO", "WARNING", "ERROR"),
    "echo.delay_ms": v.non_negative,
    "public_url": v.url,
    "default_agent": lambda v: route_name(v, reserved=False),
    "agent.min_speech_ms": v.non_negative,
    "agent.end_silence_ms": v.positive,
    "agent.end_silence_max_ms": v.positive,
    "agent.turn_model": v.choice("smart-turn", "off"),
    "agent.barge_in_min_ms": v.non_negative,
    "agent.prepare_ms": v.non_negative,
    "stt.workers": v.non_negative,
    "agent.stt": v.choice("whisper", "pocketsphinx", "openai"),
    "agent.tts": v.choice("piper", "espeak", "openai"),
    "agent.transfer_to": _transfer_target,
    "stt.base_url": v.url,
    "stt.timeout": v.positive,
    "tts.base_url": v.url,
    "tts.timeout": v.positive,
    "llm.provider": v.choice("demo", "openai", "anthropic"),
    "llm.base_url": v.url,
    "llm.timeout": v.positive,
    "shutdown_grace": v.non_negative,
    "drain_timeout": v.non_negative,
    "workers": _workers,
    "twilio.account_sid": v.account_sid,
    "twilio.from_number": v.phone,
    "twilio.max_message_bytes": v.positive,
    "webhooks.url": lambda value: v.url(value) and value,  # checked like a URL, kept as written
    "webhooks.timeout": v.positive,
    "webhooks.tries": v.positive,
    "limits.max_calls": v.non_negative,
    "limits.max_unconfirmed": v.non_negative,
    "limits.calls_per_second": v.non_negative,
    "limits.calls_per_second_per_source": v.non_negative,
    "limits.requests_per_second_per_source": v.non_negative,
    "limits.ban_seconds": v.positive,
    "limits.auth_failures": v.non_negative,
    "limits.auth_user_failures": v.non_negative,
    "limits.auth_window": v.positive,
    "limits.retry_after": v.non_negative,
    "limits.max_loop_lag_ms": v.non_negative,
    "limits.trusted": v.networks,
    "audiosocket.host": v.host,
    "audiosocket.port": v.port,
    "audiosocket.allow_from": v.networks,
    "fastagi.host": v.host,
    "fastagi.port": v.port,
    "fastagi.allow_from": v.networks,
    "ari.url": v.url,
    "ari.rtp_host": v.host,
    "ari.format": v.choice("ulaw", "alaw"),
}


def coerce(dotted: str, raw: Any, default: Any, source: str) -> Any:
    kind = type(default)
    where = f"{dotted} ({source})"
    try:
        if kind is bool:
            if isinstance(raw, str):
                low = raw.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError("must be true or false")
                value: Any = low in ("1", "true", "yes", "on")
            elif isinstance(raw, bool):
                value = raw
            else:
                raise ValueError("must be true or false")
        elif kind is int:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError("must be an integer")
            value = int(raw)
        elif kind is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError("must be a number")
            value = float(raw)
        else:
            if not isinstance(raw, str):
                raise ValueError("must be a string")
            value = raw.strip()
        check = _VALIDATORS.get(dotted)
        return check(value) if check else value
    except ValueError as exc:
        msg = str(exc)
        if "invalid literal" in msg or "could not convert" in msg:
            msg = f"must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        raise ConfigError(where, msg) from None


def check_relations(s: Settings) -> None:
    for account in s.accounts.values():
        if account.agent and account.agent not in (*BUILTIN_AGENTS, *s.agents):
            raise ConfigError(
                f"accounts.{account.name}.agent",
                f"{account.agent!r} is neither a built-in agent nor an [agents.NAME] route",
            )
    if s.default_agent not in (*BUILTIN_AGENTS, *s.agents):
        routes = "".join(f", {name}" for name in sorted(s.agents))
        raise ConfigError(
            "default_agent",
            f"{s.default_agent!r} is neither a built-in agent nor an [agents.NAME] route "
            f"(one of voice, echo{routes})",
        )
    if s.rtp.port_min > s.rtp.port_max:
        raise ConfigError(
            "rtp.port_min", f"{s.rtp.port_min} is above rtp.port_max {s.rtp.port_max}"
        )
    if s.rtp.jitter_min_ms > s.rtp.jitter_max_ms:
        raise ConfigError("rtp.jitter_min_ms", "must not exceed rtp.jitter_max_ms")
    for codec in s.rtp.codecs.split(","):
        if codec.strip().upper() not in ("PCMU", "PCMA"):
            raise ConfigError("rtp.codecs", f"unknown codec {codec.strip()!r}; allowed: PCMU, PCMA")
    if s.llm.provider == "openai" and not (s.llm.base_url and s.llm.model):
        raise ConfigError(
            "llm.base_url",
            "the openai provider needs llm.base_url and llm.model "
            "(e.g. CALLBRIDGE_LLM_BASE_URL=http://127.0.0.1:11434/v1 CALLBRIDGE_LLM_MODEL=llama3.2)",
        )
    for kind, section in (("stt", s.stt), ("tts", s.tts)):
        if getattr(s.agent, kind) == "openai" and not section.base_url:
            raise ConfigError(
                f"{kind}.base_url",
                f'agent.{kind} = "openai" needs {kind}.base_url '
                f"(e.g. {env_name(kind + '.base_url')}=https://api.openai.com/v1)",
            )
    if s.llm.provider == "anthropic" and not (s.llm.api_key and s.llm.model):
        raise ConfigError(
            "llm.api_key",
            "the anthropic provider needs llm.api_key and llm.model "
            "(CALLBRIDGE_LLM_API_KEY, CALLBRIDGE_LLM_MODEL)",
        )
    try:
        users = auth_users(s.sip.auth_users)
    except ValueError as exc:
        # The value is a secret: the message never quotes it.
        raise ConfigError("sip.auth_users", str(exc)) from None
    if s.sip.auth_routes.strip() and not users:
        raise ConfigError(
            "sip.auth_users",
            f"sip.auth_routes needs the users who may call them: set {env_name('sip.auth_users')}"
            '="alice:secret"',
        )
    if s.webhooks.url and not s.webhooks.secret:
        raise ConfigError(
            "webhooks.secret",
            "webhooks.url is set, so deliveries need a signing secret: "
            f"set {env_name('webhooks.secret')}",
        )
    _check_asterisk(s)
    if bool(s.http.tls_cert) != bool(s.http.tls_key):
        raise ConfigError(
            "http.tls_key",
            "TLS needs both the certificate and its key: set "
            f"{env_name('http.tls_cert')} and {env_name('http.tls_key')}, or neither",
        )
    if not _is_loopback(s.http.host) and not s.api_token:
        raise ConfigError(
            "api_token",
            f"http.host {s.http.host} is not a loopback address, so the API needs a token: "
            f"set {env_name('api_token')}",
        )


def _check_asterisk(s: Settings) -> None:
    """The Asterisk transports' relations (docs/asterisk.md)."""
    known = (*BUILTIN_AGENTS, *s.agents)
    for name, route in (("audiosocket", s.audiosocket.route), ("ari", s.ari.route),
                        ("chan_websocket", s.chan_websocket.route)):  # fmt: skip
        if route and route != "agent" and route not in known:
            raise ConfigError(f"{name}.route", f"{route!r} is neither a built-in agent nor an "
                              "[agents.NAME] route")  # fmt: skip
    if s.fastagi.enabled and not s.audiosocket.enabled:
        raise ConfigError(
            "fastagi.enabled",
            "FastAGI hands calls to the AudioSocket server: set "
            f"{env_name('audiosocket.enabled')}=true",
        )
    if s.ari.enabled and not (s.ari.username and s.ari.password):
        raise ConfigError(
            "ari.username",
            f"ARI needs the ari.conf user: set {env_name('ari.username')} and "
            f"{env_name('ari.password')}",
        )
    cws = s.chan_websocket
    if bool(cws.username) != bool(cws.password):
        raise ConfigError(
            "chan_websocket.password", "set both chan_websocket.username and .password, or neither"
        )
    if cws.enabled and not cws.username and not _is_loopback(s.http.host):
        raise ConfigError(
            "chan_websocket.username",
            f"http.host {s.http.host} is not a loopback address and the API token does not "
            "cover /asterisk/media: set chan_websocket.username and .password (Asterisk's "
            "websocket_client.conf sends them)",
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
