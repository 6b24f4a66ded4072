"""Settings: defaults < TOML file < CALLBRIDGE_* environment. Every bad value names its field.

Each field has one public name per source: `[sip] host` in TOML is `CALLBRIDGE_SIP_HOST` in the
environment; top-level keys (`data_dir`) are `CALLBRIDGE_DATA_DIR`. These names are public API.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from callbridge.config import validators as v
from callbridge.config.accounts import AccountSettings, account_settings
from callbridge.config.validators import auth_users
from callbridge.core.errors import ConfigError
from callbridge.sip.uri import SipUri

ENV_PREFIX = "CALLBRIDGE_"


@dataclass(frozen=True, slots=True)
class SipSettings:
    host: str = "0.0.0.0"
    port: int = 5060
    public_host: str = ""  # advertised in Via/Contact/SDP when behind NAT; "" = the bound address
    t1: float = 0.5  # RFC 3261 §17.1.1.1 timer defaults, per endpoint
    t2: float = 4.0
    t4: float = 5.0
    user_agent: str = "callbridge"
    dns_servers: str = ""  # for SRV/address lookups: "192.0.2.53, 127.0.0.1:5353"; "" = system
    allow_from: str = ""  # networks INVITEs may come from, e.g. "10.0.0.0/8, 203.0.113.7"; ""=any
    auth_routes: str = ""  # routes (Request-URI users) whose callers must authenticate; "*" = all
    auth_users: str = field(default="", repr=False)  # "alice:secret, bob:pw" for auth_routes
    auth_realm: str = "callbridge"
    # challenges offered, most preferred first (RFC 8760 §2.4); put MD5 alone for clients that
    # answer only the first challenge and know no SHA-256 (SIPp 3.6, some old phones)
    auth_algorithms: str = "SHA-256,MD5"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # "auto": serve when something needs it (public_url, api_token or Twilio credentials)
    enabled: str = "auto"
    max_body_bytes: int = 1 << 20  # a bigger request body is refused with 413 (api/limits.py)


@dataclass(frozen=True, slots=True)
class RtpSettings:
    port_min: int = 10000
    port_max: int = 20000
    timeout: float = 30.0  # seconds without RTP before the call is ended with a BYE
    jitter_min_ms: int = 20
    jitter_max_ms: int = 60
    codecs: str = "PCMU,PCMA"  # preference order for offers; answers follow the offerer


@dataclass(frozen=True, slots=True)
class LogSettings:
    format: str = "text"  # "text" | "json" (JSON lines)
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class EchoSettings:
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class AgentSettings:
    greet: bool = True
    min_speech_ms: int = 200  # speech shorter than this is not a turn (clicks, coughs)
    # silence that ends the caller's turn when the turn model calls it complete (with
    # turn_model = "off": the only end of a turn; 400 suits that better)
    end_silence_ms: int = 200
    # silence that ends a turn the model calls incomplete ("Hello. ... I'd like to")
    end_silence_max_ms: int = 1200
    turn_model: str = "smart-turn"  # "smart-turn" (Smart Turn v3, ONNX, CPU) | "off"
    # silence after which the answer is prepared (held until end_silence_ms); 0 = off. With an
    # LLM brain, each pause the caller talks through costs one extra (discarded) request.
    prepare_ms: int = 150
    barge_in: bool = True
    barge_in_min_ms: int = 150  # caller speech over the agent needed to interrupt it
    # "whisper" (offline, tiny.en) | "pocketsphinx" (offline, fast, mishears) | "openai" ([stt])
    stt: str = "whisper"
    stt_model: str = ""  # whisper: a CTranslate2 Whisper directory; "" = the packaged tiny.en
    tts: str = "piper"  # "piper" | "espeak" | "openai" (see [tts])
    transfer_to: str = ""  # where the demo brain puts callers who ask for a person; "" = no one


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    enabled: bool = True  # a stereo WAV per call (caller left, agent right) under data_dir
    transcripts: bool = True  # a JSON transcript per call under data_dir


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = ""  # "" = sqlite:///callbridge.db under data_dir (PostgreSQL: not yet)
    events: bool = True  # each call's structured log events into the events table
    # this gateway's name in a database shared by several; "" = host name and SIP port
    gateway_id: str = ""


@dataclass(frozen=True, slots=True)
class SttSettings:
    """The local recognizer's processes, or an OpenAI-compatible /audio/transcriptions server
    (Whisper) for `agent.stt = "openai"`."""

    workers: int = 0  # local recognizer worker processes; 0 = one per CPU core (at most 8)
    base_url: str = ""  # e.g. https://api.openai.com/v1 or a local Whisper server's /v1
    model: str = "whisper-1"
    api_key: str = field(default="", repr=False)  # never logged
    language: str = ""  # e.g. "en"; "" lets the server detect it
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class TtsSettings:
    """An OpenAI-compatible /audio/speech server, for `agent.tts = "openai"`."""

    base_url: str = ""
    model: str = "tts-1"
    voice: str = "alloy"
    api_key: str = field(default="", repr=False)  # never logged
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class LlmSettings:
    provider: str = (
        "demo"  # "demo" (built in, offline) | "openai" (any compatible server) | "anthropic"
    )
    base_url: str = ""  # e.g. http://127.0.0.1:11434/v1 for Ollama
    model: str = ""
    api_key: str = ""  # never logged
    system_prompt: str = ""  # "" = the built-in phone-conversation prompt
    timeout: float = 10.0  # seconds to the first word before the agent apologises


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str = ""  # also read from TWILIO_ACCOUNT_SID
    auth_token: str = field(default="", repr=False)  # also TWILIO_AUTH_TOKEN; never logged
    validate: bool = True  # check X-Twilio-Signature on webhooks and the media WebSocket
    from_number: str = ""  # caller ID for `callbridge call --via twilio` (a Twilio number)
    max_message_bytes: int = 65536  # a bigger media-stream message closes it (1009)


@dataclass(frozen=True, slots=True)
class WebhooksSettings:
    """Signed JSON POSTs of call and registration events (README "Webhooks")."""

    url: str = ""  # "" = off
    secret: str = field(default="", repr=False)  # the HMAC-SHA256 key; never logged
    timeout: float = 5.0  # per delivery attempt
    tries: int = 5  # attempts per event, 0.5 s backoff doubling between them


AGENT_KINDS = ("twilio-socket",)
BUILTIN_AGENTS = ("voice", "echo")


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """Admission and abuse limits of the SIP port (docs/security.md)."""

    max_calls: int = 0  # concurrent calls; 0 = as many as the RTP port range holds
    max_unconfirmed: int = 50  # calls answered but not yet ACKed (a flood never ACKs); 0 = off
    calls_per_second: float = 100.0  # new calls/s from all sources; 0 = no limit
    calls_per_second_per_source: float = 20.0  # new calls/s from one address; 0 = no limit
    requests_per_second_per_source: float = 200.0  # SIP datagrams/s from one address -> ban
    ban_seconds: float = 300.0  # how long a banned address is dropped
    auth_failures: int = 5  # failed digest answers from one address in auth_window -> ban
    auth_user_failures: int = 20  # failures on one user from all addresses -> stricter bans
    auth_window: float = 60.0  # seconds
    retry_after: int = 5  # seconds, in the 503 answered to refused calls
    max_loop_lag_ms: float = 25.0  # new calls get 503 while the event loop runs this late
    trusted: str = ""  # networks exempt from per-source limits and bans (trunks, Kamailio/SBC)


@dataclass(frozen=True, slots=True)
class AgentRoute:
    """`[agents.NAME]`: `sip:NAME@host` (or `default_agent = "NAME"`) reaches this agent."""

    name: str
    kind: str = "twilio-socket"  # an external agent speaking Twilio Media Streams
    url: str = ""  # ws:// or wss://
    parameters: Mapping[str, str] = field(default_factory=dict)  # `start.customParameters`
    secret: str = field(default="", repr=False)  # signs the upgrade; never logged
    connect_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: str = field(default_factory=lambda: str(Path.home() / ".local/share/callbridge"))
    public_url: str = ""
    api_token: str = ""
    default_agent: str = "voice"
    shutdown_grace: float = 5.0
    sip: SipSettings = SipSettings()
    http: HttpSettings = HttpSettings()
    rtp: RtpSettings = RtpSettings()
    log: LogSettings = LogSettings()
    echo: EchoSettings = EchoSettings()
    agent: AgentSettings = AgentSettings()
    llm: LlmSettings = LlmSettings()
    stt: SttSettings = SttSettings()
    tts: TtsSettings = TtsSettings()
    recording: RecordingSettings = RecordingSettings()
    store: StoreSettings = StoreSettings()
    twilio: TwilioSettings = TwilioSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    limits: LimitsSettings = LimitsSettings()
    agents: Mapping[str, AgentRoute] = field(default_factory=dict)  # [agents.NAME] routes
    accounts: Mapping[str, AccountSettings] = field(default_factory=dict)  # [accounts.NAME]

    def __repr__(self) -> str:  # never print the token
        token = "***" if self.api_token else ""
        return (
            f"Settings(sip={self.sip}, http={self.http}, data_dir={self.data_dir!r}, "
            f"api_token={token!r}, llm.provider={self.llm.provider!r}, "
            f"agents={sorted(self.agents)})"
        )


# Never printed (`callbridge settings` shows *** when set) nor logged.
SECRET_SETTINGS = frozenset(
    {
        "api_token",
        "sip.auth_users",
        "llm.api_key",
        "stt.api_key",
        "tts.api_key",
        "twilio.auth_token",
        "webhooks.secret",
    }
)


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


# Field validators by dotted name; fields not listed only get their type checked.
_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "sip.host": v.host,
    "sip.port": v.port,
    "sip.t1": v.positive,
    "sip.t2": v.positive,
    "sip.t4": v.positive,
    "sip.allow_from": v.networks,
    "sip.dns_servers": v.addresses,
    "sip.auth_algorithms": v.algorithms,
    "http.host": v.host,
    "http.port": v.port,
    "http.enabled": v.choice("auto", "true", "false"),
    "http.max_body_bytes": v.positive,
    "rtp.port_min": v.port,
    "rtp.port_max": v.port,
    "rtp.timeout": v.positive,
    "rtp.jitter_min_ms": v.non_negative,
    "rtp.jitter_max_ms": v.positive,
    "log.format": v.choice("text", "json"),
    "log.level": v.choice("DEBUG", "INFO", "WARNING", "ERROR"),
    "echo.delay_ms": v.non_negative,
    "public_url": v.url,
    "default_agent": lambda v: _route_name(v, reserved=False),
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
}

# Names other tools use for the same setting (Twilio's own), read below CALLBRIDGE_*.
_ENV_ALIASES: dict[str, str] = {
    "twilio.account_sid": "TWILIO_ACCOUNT_SID",
    "twilio.auth_token": "TWILIO_AUTH_TOKEN",
}

_SECTION_TYPES: dict[str, type[Any]] = {
    "sip": SipSettings,
    "http": HttpSettings,
    "rtp": RtpSettings,
    "log": LogSettings,
    "echo": EchoSettings,
    "agent": AgentSettings,
    "llm": LlmSettings,
    "stt": SttSettings,
    "tts": TtsSettings,
    "recording": RecordingSettings,
    "store": StoreSettings,
    "twilio": TwilioSettings,
    "webhooks": WebhooksSettings,
    "limits": LimitsSettings,
}


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def all_fields() -> list[tuple[str, Any]]:
    """(dotted name, default) for every setting, for docs and `callbridge doctor`."""
    out: list[tuple[str, Any]] = []
    base = Settings()
    for f in fields(Settings):
        if f.name in ("agents", "accounts"):
            continue  # tables of tables, not one setting each (see _agent_routes, accounts.py)
        if f.name in _SECTION_TYPES:
            sect = getattr(base, f.name)
            out.extend((f"{f.name}.{sf.name}", getattr(sect, sf.name)) for sf in fields(sect))
        else:
            out.append((f.name, getattr(base, f.name)))
    return out


def _coerce(dotted: str, raw: Any, default: Any, source: str) -> Any:
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
            elif isinstance(val, dict) and key in _SECTION_TYPES:
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
    sections: dict[str, Any] = {s: getattr(settings, s) for s in _SECTION_TYPES}
    top: dict[str, Any] = {}
    for dotted, (raw, source) in values.items():
        value = _coerce(dotted, raw, defaults[dotted], source)
        if "." in dotted:
            sect, key = dotted.split(".", 1)
            sections[sect] = replace(sections[sect], **{key: value})
        else:
            top[dotted] = value
    routes = _agent_routes(*routes_table, env)
    accounts = account_settings(*accounts_table, env)
    settings = replace(settings, **top, **sections, agents=routes, accounts=accounts)
    _check_relations(settings)
    return settings


# ---- [agents.NAME] routes --------------------------------------------------------------------

_ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_ROUTE_KEYS = ("kind", "url", "parameters", "secret", "connect_timeout")
# CALLBRIDGE_AGENTS_<NAME>_<FIELD>: one route without a config file ("_" in NAME is kept).
_ROUTE_ENV = re.compile(
    ENV_PREFIX + r"AGENTS_([A-Z0-9][A-Z0-9_]*)_(KIND|URL|SECRET|CONNECT_TIMEOUT)"
)


def _route_name(value: str, *, reserved: bool = True) -> str:
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
        _route_name(name)
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


def _agent_routes(table: Any, source: str, env: Mapping[str, str]) -> dict[str, AgentRoute]:
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


def _unknown_hint(dotted: str, known: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(dotted, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown setting{hint}"


def _check_relations(s: Settings) -> None:
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
    if not _is_loopback(s.http.host) and not s.api_token:
        raise ConfigError(
            "api_token",
            f"http.host {s.http.host} is not a loopback address, so the API needs a token: "
            f"set {env_name('api_token')}",
        )


def http_wanted(s: Settings) -> bool:
    """Whether the gateway serves HTTP: `http.enabled`, where "auto" means when something
    needs it (a public URL for webhooks, an API token, Twilio credentials)."""
    if s.http.enabled != "auto":
        return s.http.enabled == "true"
    return bool(s.public_url or s.api_token or s.twilio.auth_token or s.twilio.account_sid)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
