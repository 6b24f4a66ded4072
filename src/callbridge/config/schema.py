"""What can be set: one frozen dataclass per TOML section, their defaults and public names.

Each field has one public name per source: `[sip] host` in TOML is `CALLBRIDGE_SIP_HOST` in the
environment; top-level keys (`data_dir`) are `CALLBRIDGE_DATA_DIR`. These names are public API.
Reading them is config.settings' job, checking them config.checks'.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from callbridge.config.accounts import AccountSettings

__all__ = [
    "AGENT_KINDS",
    "BUILTIN_AGENTS",
    "ENV_PREFIX",
    "SECRET_SETTINGS",
    "SECTION_TYPES",
    "AgentRoute",
    "AgentSettings",
    "AriSettings",
    "AudiosocketSettings",
    "ChanWebsocketSettings",
    "EchoSettings",
    "FastagiSettings",
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
    "WebRtcSettings",
    "WebhooksSettings",
    "all_fields",
    "env_name",
    "http_required",
    "http_wanted",
    "is_loopback",
]

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
    # our own proxies in front (Kamailio; --workers sets its dispatcher): a call through one is
    # recorded with the caller's address from the Via below the proxy's, and via_proxy
    trusted_proxies: str = ""
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
    # "auto": serve on a loopback host (the softphone page at http://127.0.0.1:8080/), and
    # elsewhere when something needs it (public_url, api_token or Twilio credentials)
    enabled: str = "auto"
    max_body_bytes: int = 1 << 20  # a bigger request body is refused with 413 (api/limits.py)
    # PEM files: with both set the server speaks TLS (https://, and wss://HOST:PORT/sip for
    # SIP over WebSocket, RFC 7118 §5.3)
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True, slots=True)
class RtpSettings:
    port_min: int = 10000
    port_max: int = 20000
    timeout: float = 30.0  # seconds without RTP before the call is ended with a BYE
    jitter_min_ms: int = 10
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


@dataclass(frozen=True, slots=True)
class AudiosocketSettings:
    """Asterisk's AudioSocket connects here over TCP (docs/asterisk.md)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9092
    route: str = ""  # the agent for calls no one routed (FastAGI, ARI do); "" = default_agent
    allow_from: str = ""  # networks Asterisk may connect from, as sip.allow_from; "" = any


@dataclass(frozen=True, slots=True)
class FastagiSettings:
    """`AGI(agi://host:4573/ROUTE)` hands a call to ROUTE over AudioSocket (needs it on)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 4573
    allow_from: str = ""
    audiosocket_address: str = ""  # host:port Asterisk reaches AudioSocket at; "" = derived


@dataclass(frozen=True, slots=True)
class AriSettings:
    """An ARI Stasis app: each call gets externalMedia (RTP) to an agent (docs/asterisk.md)."""

    enabled: bool = False
    url: str = "http://127.0.0.1:8088"  # Asterisk's HTTP server (http.conf)
    username: str = ""  # ari.conf user
    password: str = field(default="", repr=False)  # never logged
    app: str = "callbridge"  # Stasis(callbridge[,ROUTE]) in the dialplan
    route: str = ""  # the agent when Stasis() names none; "" = default_agent
    rtp_host: str = "127.0.0.1"  # our RTP address Asterisk sends to (externalMedia external_host)
    format: str = "ulaw"  # "ulaw" | "alaw"
    transfer_context: str = ""  # the agent's transfer continues here (exten = the target)


@dataclass(frozen=True, slots=True)
class ChanWebsocketSettings:
    """Asterisk 22.6+ chan_websocket dials out to ws://<http>/asterisk/media (docs/asterisk.md)."""

    enabled: bool = False
    route: str = ""  # the agent when the URL has no ?agent=; "" = default_agent
    username: str = ""  # websocket_client.conf username (HTTP Basic); "" = no auth
    password: str = field(default="", repr=False)  # never logged


@dataclass(frozen=True, slots=True)
class WebRtcSettings:
    """Browser calls: the softphone page's WebRTC media (README "Browser softphone")."""

    enabled: bool = True  # POST /webrtc/offer answers calls (the page needs HTTP on)
    # ICE servers for browsers behind NAT: "stun:stun.example.com:3478, turn:turn.example.com"
    # (RFC 7064/7065 URLs); "" = host candidates only, nothing external is contacted
    ice_servers: str = ""
    ice_username: str = ""  # for turn: URLs
    ice_credential: str = field(default="", repr=False)  # never logged


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
    # SIGTERM: refuse new calls (503 to INVITE and OPTIONS, so a dispatcher such as Kamailio
    # marks this worker inactive) and let live calls finish for up to this many seconds
    # before the shutdown above; 0 = hang up at once. A second signal ends the wait.
    drain_timeout: float = 0.0
    # gateway processes behind the built-in SIP dispatcher (`serve --workers`): a number,
    # "auto" (or 0) = one per core; "" = 1 (README "Using every core" says why)
    workers: str = ""
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
    webrtc: WebRtcSettings = WebRtcSettings()
    audiosocket: AudiosocketSettings = AudiosocketSettings()
    fastagi: FastagiSettings = FastagiSettings()
    ari: AriSettings = AriSettings()
    chan_websocket: ChanWebsocketSettings = ChanWebsocketSettings()
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
        "webrtc.ice_credential",
        "ari.password",
        "chan_websocket.password",
    }
)

SECTION_TYPES: dict[str, type[Any]] = {
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
    "webrtc": WebRtcSettings,
    "audiosocket": AudiosocketSettings,
    "fastagi": FastagiSettings,
    "ari": AriSettings,
    "chan_websocket": ChanWebsocketSettings,
}


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def all_fields() -> list[tuple[str, Any]]:
    """(dotted name, default) for every setting, for docs and `callbridge doctor`."""
    out: list[tuple[str, Any]] = []
    base = Settings()
    for f in fields(Settings):
        if f.name in ("agents", "accounts"):
            continue  # tables of tables, not one setting each (see agent_routes.py, accounts.py)
        if f.name in SECTION_TYPES:
            sect = getattr(base, f.name)
            out.extend((f"{f.name}.{sf.name}", getattr(sect, sf.name)) for sf in fields(sect))
        else:
            out.append((f.name, getattr(base, f.name)))
    return out


def http_wanted(s: Settings) -> bool:
    """Whether the gateway serves HTTP: `http.enabled`, where "auto" means on a loopback host
    (the softphone page, reachable from this machine only) and elsewhere when something needs
    it (a public URL for webhooks, an API token, Twilio credentials)."""
    return http_required(s) or (s.http.enabled == "auto" and is_loopback(s.http.host))


def http_required(s: Settings) -> bool:
    """HTTP is needed, not only nice to have: `http.enabled = "true"`, or "auto" with a public
    URL, an API token or Twilio credentials. (On a loopback host "auto" serves the softphone
    page too, but a busy port there is not worth failing the start for.)"""
    if s.http.enabled != "auto":
        return s.http.enabled == "true"
    return bool(
        s.public_url
        or s.api_token
        or s.twilio.auth_token
        or s.twilio.account_sid
        or s.chan_websocket.enabled  # its media endpoint is an HTTP route
    )


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost"."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
