"""chan_websocket's control messages (Asterisk 22.6+/23), both directions, plain-text or JSON.

Source: asterisk/asterisk@f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9, channels/chan_websocket.c.
Media travels as BINARY WebSocket messages of raw audio in the channel's format; control as
TEXT messages. The format is per channel: `f(json)` in the dial string or
`control_message_format` in chan_websocket.conf, default "plain-text" (lines 56-66, 1708-1718).

Asterisk -> app events (lines 197-432): MEDIA_START on connect (connection id, channel, format,
`optimal_frame_size` in bytes, `ptime`), MEDIA_XOFF / MEDIA_XON (its queue of our audio
reached 900 / fell under 800 frames, 1000 is the hard limit; lines 141-143), QUEUE_DRAINED,
MEDIA_BUFFERING_COMPLETED, MEDIA_MARK_PROCESSED, DTMF_END, STATUS and ERROR. In plain text an
event is its name followed by `key:value` words; the no-data events are the bare name.

App -> Asterisk commands (lines 129-139, 734-933): ANSWER, HANGUP, START_MEDIA_BUFFERING,
STOP_MEDIA_BUFFERING [id], MARK_MEDIA [id], FLUSH_MEDIA (drop all queued audio: barge-in),
REPORT_QUEUE_DRAINED, GET_STATUS, PAUSE_MEDIA, CONTINUE_MEDIA and SET_MEDIA_DIRECTION (JSON
only). Asterisk ignores a TEXT message over 128 bytes (MAX_TEXT_MESSAGE_LEN, lines 144 and
951-955), strips whitespace, and in plain text splits the command from its argument at the
first space (lines 744-750). There is no DTMF command towards Asterisk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from callbridge.asterisk.bounded_json import load_object
from callbridge.asterisk.bounded_json import text as bounded_text
from callbridge.asterisk.chan_websocket_commands import (
    MAX_COMMAND_BYTES,
    Answer,
    Command,
    ContinueMedia,
    ControlFormat,
    FlushMedia,
    GetStatus,
    Hangup,
    MarkMedia,
    PauseMedia,
    ReportQueueDrained,
    SetMediaDirection,
    StartMediaBuffering,
    StopMediaBuffering,
    format_command,
    parse_command,
)
from callbridge.asterisk.errors import ChanWebSocketError

__all__ = [
    "MAX_COMMAND_BYTES",
    "MAX_EVENT_BYTES",
    "OPTIMAL_FRAME_SIZES",
    "QUEUE_LENGTH_MAX",
    "QUEUE_XOFF_LEVEL",
    "QUEUE_XON_LEVEL",
    "Answer",
    "ChanWebSocketError",
    "Command",
    "ContinueMedia",
    "ControlFormat",
    "DtmfEnd",
    "Event",
    "EventError",
    "FlushMedia",
    "GetStatus",
    "Hangup",
    "MarkMedia",
    "MediaBufferingCompleted",
    "MediaMarkProcessed",
    "MediaStart",
    "MediaXoff",
    "MediaXon",
    "PauseMedia",
    "QueueDrained",
    "ReportQueueDrained",
    "SetMediaDirection",
    "StartMediaBuffering",
    "Status",
    "StopMediaBuffering",
    "UnknownEvent",
    "format_command",
    "format_event",
    "parse_command",
    "parse_event",
]

# MEDIA_START in JSON carries every channel variable; far beyond anything real at this size.
MAX_EVENT_BYTES: Final = 64 * 1024
_MAX_DEPTH: Final = 8
_MAX_INT_DIGITS: Final = 10
QUEUE_LENGTH_MAX: Final = 1000
QUEUE_XOFF_LEVEL: Final = 900
QUEUE_XON_LEVEL: Final = 800
# optimal_frame_size = default_ms * minimum_bytes / minimum_ms (chan_websocket.c:1447-1450)
# with the codecs of main/codec_builtin.c: 20 ms of audio. Codecs with minimum_bytes <= 10
# are passthrough (size 0): Asterisk cannot re-frame them.
OPTIMAL_FRAME_SIZES: Final[Mapping[str, int]] = {
    "ulaw": 160, "alaw": 160, "slin": 320, "slin12": 480, "slin16": 640, "slin24": 960,
    "slin32": 1280, "slin44": 1764, "slin48": 1920, "slin96": 3840, "slin192": 7680,
}  # fmt: skip


# --- events, Asterisk -> app ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaStart:
    connection_id: str
    channel: str
    channel_id: str
    format: str
    optimal_frame_size: int
    ptime: int
    channel_variables: tuple[tuple[str, str], ...] = ()  # JSON format only


@dataclass(frozen=True, slots=True)
class MediaXoff:
    channel_id: str | None = None  # JSON only: plain text sends the bare name


@dataclass(frozen=True, slots=True)
class MediaXon:
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueDrained:
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class MediaBufferingCompleted:
    correlation_id: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class MediaMarkProcessed:
    correlation_id: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class DtmfEnd:
    digit: str
    channel_id: str


@dataclass(frozen=True, slots=True)
class Status:
    channel_id: str
    queue_length: int
    xon_level: int
    xoff_level: int
    queue_full: bool
    bulk_media: bool
    media_paused: bool


@dataclass(frozen=True, slots=True)
class EventError:
    """ERROR: Asterisk refused a command (passthrough mode, wrong direction, bad JSON)."""

    channel_id: str
    error_text: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event name this module does not know: newer Asterisk versions add events."""

    name: str
    text: str


Event = (
    MediaStart | MediaXoff | MediaXon | QueueDrained | MediaBufferingCompleted
    | MediaMarkProcessed | DtmfEnd | Status | EventError | UnknownEvent
)  # fmt: skip


def _opt(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ChanWebSocketError(f"{key!r} must be a string")
    return value


def _req(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ChanWebSocketError(f"{key!r} must be a string")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise ChanWebSocketError(f"{key!r} must be a non-negative int")
    return value


def _bool(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise ChanWebSocketError(f"{key!r} must be a boolean")
    return value


# --- events ----------------------------------------------------------------------------------


def parse_event(data: str | bytes, fmt: ControlFormat = "plain-text") -> Event:
    """A TEXT message from Asterisk as an event; ChanWebSocketError if it is not one."""
    text = bounded_text(data, MAX_EVENT_BYTES, ChanWebSocketError)
    if fmt == "json":
        return _event_from_json(
            load_object(
                text, ChanWebSocketError, max_depth=_MAX_DEPTH, max_int_digits=_MAX_INT_DIGITS
            ),
            text,
        )
    return _event_from_plain(text.strip())


def _pairs(words: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition(":")
        if not sep or not key:
            raise ChanWebSocketError(f"expected key:value, got {word[:40]!r}")
        pairs[key] = value
    return pairs


def _plain_int(pairs: Mapping[str, str], key: str) -> int:
    value = pairs.get(key)
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 9:
        raise ChanWebSocketError(f"{key!r} must be a non-negative integer")
    return int(value)


def _plain_bool(pairs: Mapping[str, str], key: str) -> bool:
    value = pairs.get(key)
    if value not in ("true", "false"):
        raise ChanWebSocketError(f"{key!r} must be true or false")
    return value == "true"


def _plain_str(pairs: Mapping[str, str], key: str) -> str:
    value = pairs.get(key)
    if value is None:
        raise ChanWebSocketError(f"{key!r} missing")
    return value


def _event_from_plain(text: str) -> Event:
    name, _, rest = text.partition(" ")
    if not name:
        raise ChanWebSocketError("empty control message")
    match name:
        case "MEDIA_XOFF" | "MEDIA_XON" | "QUEUE_DRAINED":
            if rest:
                raise ChanWebSocketError(f"{name} takes no data in plain text")
            if name == "MEDIA_XOFF":
                return MediaXoff()
            return MediaXon() if name == "MEDIA_XON" else QueueDrained()
        case "MEDIA_BUFFERING_COMPLETED":
            return MediaBufferingCompleted(rest or None)
        case "MEDIA_MARK_PROCESSED":
            return MediaMarkProcessed(rest or None)
        case "ERROR":
            # error_text is the rest of the message, spaces included (chan_websocket.c:422)
            head, sep, error_text = rest.partition(" error_text:")
            if not sep:
                raise ChanWebSocketError("ERROR without error_text")
            return EventError(_plain_str(_pairs(head.split()), "channel_id"), error_text)
        case _:
            pass
    pairs = _pairs(rest.split())
    match name:
        case "MEDIA_START":
            return MediaStart(
                connection_id=_plain_str(pairs, "connection_id"),
                channel=_plain_str(pairs, "channel"),
                channel_id=_plain_str(pairs, "channel_id"),
                format=_plain_str(pairs, "format"),
                optimal_frame_size=_plain_int(pairs, "optimal_frame_size"),
                ptime=_plain_int(pairs, "ptime"),
            )
        case "DTMF_END":
            return DtmfEnd(_digit(_plain_str(pairs, "digit")), _plain_str(pairs, "channel_id"))
        case "STATUS":
            return Status(
                channel_id=_plain_str(pairs, "channel_id"),
                queue_length=_plain_int(pairs, "queue_length"),
                xon_level=_plain_int(pairs, "xon_level"),
                xoff_level=_plain_int(pairs, "xoff_level"),
                queue_full=_plain_bool(pairs, "queue_full"),
                bulk_media=_plain_bool(pairs, "bulk_media"),
                media_paused=_plain_bool(pairs, "media_paused"),
            )
        case _:
            return UnknownEvent(name[:64], text)


def _digit(value: str) -> str:
    if len(value) != 1:
        raise ChanWebSocketError(f"DTMF digit must be one character, got {value[:8]!r}")
    return value


def _event_from_json(obj: Mapping[str, Any], text: str) -> Event:
    name = _req(obj, "event")
    channel_id = _opt(obj, "channel_id")
    match name:
        case "MEDIA_START":
            variables = obj.get("channel_variables", {})
            if not isinstance(variables, dict) or not all(
                isinstance(v, str) for v in variables.values()
            ):
                raise ChanWebSocketError("'channel_variables' must be an object of strings")
            return MediaStart(
                connection_id=_req(obj, "connection_id"),
                channel=_req(obj, "channel"),
                channel_id=_req(obj, "channel_id"),
                format=_req(obj, "format"),
                optimal_frame_size=_int(obj, "optimal_frame_size"),
                ptime=_int(obj, "ptime"),
                channel_variables=tuple(sorted(variables.items())),
            )
        case "MEDIA_XOFF":
            return MediaXoff(channel_id)
        case "MEDIA_XON":
            return MediaXon(channel_id)
        case "QUEUE_DRAINED":
            return QueueDrained(channel_id)
        case "MEDIA_BUFFERING_COMPLETED":
            # Asterisk writes "" for a missing id (S_OR(id, ""), line 275)
            return MediaBufferingCompleted(_opt(obj, "correlation_id") or None, channel_id)
        case "MEDIA_MARK_PROCESSED":
            return MediaMarkProcessed(_opt(obj, "correlation_id") or None, channel_id)
        case "DTMF_END":
            return DtmfEnd(_digit(_req(obj, "digit")), _req(obj, "channel_id"))
        case "STATUS":
            return Status(
                channel_id=_req(obj, "channel_id"),
                queue_length=_int(obj, "queue_length"),
                xon_level=_int(obj, "xon_level"),
                xoff_level=_int(obj, "xoff_level"),
                queue_full=_bool(obj, "queue_full"),
                bulk_media=_bool(obj, "bulk_media"),
                media_paused=_bool(obj, "media_paused"),
            )
        case "ERROR":
            return EventError(_req(obj, "channel_id"), _req(obj, "error_text"))
        case _:
            return UnknownEvent(name[:64], text)


def format_event(event: Event, fmt: ControlFormat = "plain-text") -> str:
    """The event as chan_websocket.c writes it (for test peers playing Asterisk)."""
    if fmt == "json":
        return json.dumps(_event_json(event), separators=(",", ":"))
    match event:
        case MediaStart():
            return (
                f"MEDIA_START connection_id:{event.connection_id} channel:{event.channel}"
                f" channel_id:{event.channel_id} format:{event.format}"
                f" optimal_frame_size:{event.optimal_frame_size} ptime:{event.ptime}"
            )
        case MediaXoff():
            return "MEDIA_XOFF"
        case MediaXon():
            return "MEDIA_XON"
        case QueueDrained():
            return "QUEUE_DRAINED"
        case MediaBufferingCompleted(correlation_id=cid):
            return "MEDIA_BUFFERING_COMPLETED" + (f" {cid}" if cid else "")
        case MediaMarkProcessed(correlation_id=cid):
            return "MEDIA_MARK_PROCESSED" + (f" {cid}" if cid else "")
        case DtmfEnd(digit=digit, channel_id=channel_id):
            return f"DTMF_END digit:{digit} channel_id:{channel_id}"
        case Status():
            return (
                f"STATUS channel_id:{event.channel_id} queue_length:{event.queue_length}"
                f" xon_level:{event.xon_level} xoff_level:{event.xoff_level}"
                f" queue_full:{_tf(event.queue_full)} bulk_media:{_tf(event.bulk_media)}"
                f" media_paused:{_tf(event.media_paused)}"
            )
        case EventError(channel_id=channel_id, error_text=error_text):
            return f"ERROR channel_id:{channel_id} error_text:{error_text}"
        case UnknownEvent(text=text):
            return text


def _tf(value: bool) -> str:
    return "true" if value else "false"


def _event_json(event: Event) -> dict[str, Any]:
    match event:
        case MediaStart():
            return {
                "event": "MEDIA_START", "connection_id": event.connection_id,
                "channel": event.channel, "channel_id": event.channel_id, "format": event.format,
                "optimal_frame_size": event.optimal_frame_size, "ptime": event.ptime,
                "channel_variables": dict(event.channel_variables),
            }  # fmt: skip
        case MediaXoff() | MediaXon() | QueueDrained():
            names = {MediaXoff: "MEDIA_XOFF", MediaXon: "MEDIA_XON", QueueDrained: "QUEUE_DRAINED"}
            out: dict[str, Any] = {"event": names[type(event)]}
            if event.channel_id is not None:
                out["channel_id"] = event.channel_id
            return out
        case MediaBufferingCompleted() | MediaMarkProcessed():
            name = (
                "MEDIA_BUFFERING_COMPLETED"
                if isinstance(event, MediaBufferingCompleted)
                else "MEDIA_MARK_PROCESSED"
            )
            out = {"event": name, "correlation_id": event.correlation_id or ""}
            if event.channel_id is not None:
                out["channel_id"] = event.channel_id
            return out
        case DtmfEnd(digit=digit, channel_id=channel_id):
            return {"event": "DTMF_END", "channel_id": channel_id, "digit": digit}
        case Status():
            return {
                "event": "STATUS", "channel_id": event.channel_id,
                "queue_length": event.queue_length, "xon_level": event.xon_level,
                "xoff_level": event.xoff_level, "queue_full": event.queue_full,
                "bulk_media": event.bulk_media, "media_paused": event.media_paused,
            }  # fmt: skip
        case EventError(channel_id=channel_id, error_text=error_text):
            return {"event": "ERROR", "channel_id": channel_id, "error_text": error_text}
        case UnknownEvent(name=name):
            return {"event": name}
