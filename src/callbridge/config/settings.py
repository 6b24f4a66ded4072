"""Settings: defaults < TOML file < CALLBRIDGE_* environment. Every bad value names its field.

Each field has one public name per source: `[sip] host` in TOML is `CALLBRIDGE_SIP_HOST` in the
environment; top-level keys (`data_dir`) are `CALLBRIDGE_DATA_DIR`. These names are public API.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from callbridge.core.errors import ConfigError

ENV_PREFIX = "CALLBRIDGE_"


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be an IP address or host name") from None
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return check


_HEX = frozenset("0123456789abcdefABCDEF")


def _account_sid(value: str) -> str:
    if value and not (
        len(value) == 34 and value.startswith("AC") and all(c in _HEX for c in value[2:])
    ):
        raise ValueError("must be AC followed by 32 hex digits (Twilio console, Account Info)")
    return value


def _phone(value: str) -> str:
    if value and not (value.startswith("+") and value[1:].isdigit() and len(value) > 4):
        raise ValueError("must be a number in E.164 form, e.g. +15551234567")
    return value


def _url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class SipSettings:
    host: str = "0.0.0.0"
    port: int = 5060
    public_host: str = ""  # advertised in Via/Contact/SDP when behind NAT; "" = the bound address
    t1: float = 0.5  # RFC 3261 §17.1.1.1 timer defaults, per endpoint
    t2: float = 4.0
    t4: float = 5.0
    user_agent: str = "callbridge"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # "auto": serve when something needs it (public_url, api_token or Twilio credentials)
    enabled: str = "auto"


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
    end_silence_ms: int = 400  # silence that ends the caller's turn
    # silence after which the answer is prepared (held until end_silence_ms); 0 = off. With an
    # LLM brain, each pause the caller talks through costs one extra (discarded) request.
    prepare_ms: int = 150
    barge_in: bool = True
    barge_in_min_ms: int = 150  # caller speech over the agent needed to interrupt it
    tts: str = "piper"  # "piper" | "espeak"


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
    twilio: TwilioSettings = TwilioSettings()

    def __repr__(self) -> str:  # never print the token
        token = "***" if self.api_token else ""
        return (
            f"Settings(sip={self.sip}, http={self.http}, data_dir={self.data_dir!r}, "
            f"api_token={token!r}, llm.provider={self.llm.provider!r})"
        )


# Field validators by dotted name; fields not listed only get their type checked.
_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "sip.host": _host,
    "sip.port": _port,
    "sip.t1": _positive,
    "sip.t2": _positive,
    "sip.t4": _positive,
    "http.host": _host,
    "http.port": _port,
    "http.enabled": _choice("auto", "true", "false"),
    "rtp.port_min": _port,
    "rtp.port_max": _port,
    "rtp.timeout": _positive,
    "rtp.jitter_min_ms": _non_negative,
    "rtp.jitter_max_ms": _positive,
    "log.format": _choice("text", "json"),
    "log.level": _choice("DEBUG", "INFO", "WARNING", "ERROR"),
    "echo.delay_ms": _non_negative,
    "public_url": _url,
    "default_agent": _choice("voice", "echo"),
    "agent.min_speech_ms": _non_negative,
    "agent.end_silence_ms": _positive,
    "agent.barge_in_min_ms": _non_negative,
    "agent.prepare_ms": _non_negative,
    "agent.tts": _choice("piper", "espeak"),
    "llm.provider": _choice("demo", "openai", "anthropic"),
    "llm.base_url": _url,
    "llm.timeout": _positive,
    "shutdown_grace": _non_negative,
    "twilio.account_sid": _account_sid,
    "twilio.from_number": _phone,
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
    "twilio": TwilioSettings,
}


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def all_fields() -> list[tuple[str, Any]]:
    """(dotted name, default) for every setting, for docs and `callbridge doctor`."""
    out: list[tuple[str, Any]] = []
    base = Settings()
    for f in fields(Settings):
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
            if isinstance(val, dict) and key in _SECTION_TYPES:
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
    settings = replace(settings, **top, **sections)
    _check_relations(settings)
    return settings


def _unknown_hint(dotted: str, known: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(dotted, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown setting{hint}"


def _check_relations(s: Settings) -> None:
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
    if s.llm.provider == "anthropic" and not (s.llm.api_key and s.llm.model):
        raise ConfigError(
            "llm.api_key",
            "the anthropic provider needs llm.api_key and llm.model "
            "(CALLBRIDGE_LLM_API_KEY, CALLBRIDGE_LLM_MODEL)",
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
