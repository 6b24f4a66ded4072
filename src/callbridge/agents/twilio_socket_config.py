"""How callbridge reaches one external agent over the agent socket (Twilio Media Streams):
the route's URL, parameters and secret, and the timeouts and buffer bounds of a session.

Validated when built; `safe_url` is the URL as logs may show it (no credentials, no query).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TwilioSocketConfig", "safe_url"]


@dataclass(frozen=True, slots=True)
class TwilioSocketConfig:
    url: str  # ws:// or wss://
    parameters: Mapping[str, str] = field(default_factory=dict)  # sent as customParameters
    secret: str = field(default="", repr=False)  # signs the upgrade (X-Twilio-Signature)
    route: str = ""  # the route's name, for logs
    account_sid: str = ""  # "" = derived from the URL (stable per agent)
    connect_timeout: float = 5.0
    send_timeout: float = 5.0  # an agent that takes no message for this long ends the call
    close_timeout: float = 2.0
    partial_wait: float = 0.04  # a partial 20 ms frame waits this long for the rest (at least
    # until the leg has nothing else to play), then plays completed with silence
    # Audio that starts from silence (the leg has none of ours left) waits until this much is
    # buffered, or this long: an agent that paces its audio in real time (Pipecat does)
    # delivers each chunk just in time, and without a cushion every late one is a gap.
    # Agents that send faster than real time have it at once and wait for nothing.
    cushion: float = 0.06
    # The websockets client refuses (closes 1009) a bigger message before buffering it. Agents
    # may send a whole utterance at once, so this is larger than Twilio's own media messages.
    max_message_bytes: int = 1 << 20
    max_buffer: float = 60.0  # seconds of agent audio held; beyond, the oldest is dropped

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("ws", "wss"):
            raise ValueError(f"agent socket URL must be ws:// or wss://, got {safe_url(self.url)}")
        if min(self.connect_timeout, self.send_timeout, self.close_timeout) <= 0:
            raise ValueError("timeouts must be > 0")
        if self.max_buffer < 1.0 or self.max_message_bytes <= 0:
            raise ValueError("max_buffer must be >= 1 s and max_message_bytes > 0")


def safe_url(url: str) -> str:
    """`url` without credentials or query (they may carry tokens): what logs may show."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
