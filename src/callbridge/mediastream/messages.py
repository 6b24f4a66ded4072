"""Twilio Media Streams WebSocket messages, both directions, as frozen dataclasses.

Shapes follow https://www.twilio.com/docs/voice/media-streams/websocket-messages exactly:
`sequenceNumber`, `media.chunk` and `media.timestamp` are JSON strings holding numbers, while
`mediaFormat.sampleRate` and `channels` are numbers; `dtmf.track` is "inbound_track" where
`media.track` is "inbound"; `connected` alone has no `streamSid`. Messages from Twilio carry a
`sequenceNumber`, the ones an app sends back (`media`, `mark`, `clear`) do not, so `media` and
`mark` exist once per direction: `Media`/`Mark` come from Twilio, `MediaOut`/`MarkOut` go to it.

Both roles are expressible: callbridge normally is the app (parse what Twilio sends, dump what
an app sends), and for the agent socket it plays Twilio (dump `Start`, `Media`... and parse the
agent's `MediaOut`, `MarkOut`, `Clear`). `parse()` raises `MessageError` naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DTMF_DIGITS",
    "Clear",
    "Connected",
    "Dtmf",
    "FromTwilio",
    "Mark",
    "MarkOut",
    "Media",
    "MediaFormat",
    "MediaOut",
    "Message",
    "MessageError",
    "Sender",
    "Start",
    "Stop",
    "ToTwilio",
    "UnknownEvent",
    "dumps",
    "parse",
    "parse_from_app",
    "parse_from_twilio",
    "to_json",
]

DTMF_DIGITS = frozenset("0123456789*#ABCD")
Sender = Literal["twilio", "app"]


class MessageError(ValueError):
    """A WebSocket message that is not a valid Media Streams message."""


class UnknownEvent(MessageError):
    """Well-formed JSON with an `event` this protocol does not define (ignorable)."""

    def __init__(self, event: str) -> None:
        super().__init__(f"unknown event {event!r}")
        self.event = event


# ---- Twilio -> app ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Connected:
    """The first message on the socket (no streamSid, no sequenceNumber)."""

    protocol: str = "Call"
    version: str = "1.0.0"


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...] = ("inbound",)
    media_format: MediaFormat = MediaFormat()
    # The <Parameter>s of the <Stream> TwiML, values always strings.
    custom_parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    """Caller (or, on a both-tracks fork, callee) audio: `timestamp` is ms of stream time."""

    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp: int
    payload: bytes  # raw µ-law, base64 only on the wire


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_sid: str
    digit: str
    track: str = "inbound_track"


@dataclass(frozen=True, slots=True)
class Mark:
    """Twilio's echo of a mark: the audio sent before it has played, or was cleared."""

    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


# ---- app -> Twilio ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaOut:
    """Audio for Twilio to play (any length; buffered and played in order)."""

    stream_sid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class MarkOut:
    """Ask Twilio to echo `name` once the audio sent before it has played."""

    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    """Drop every buffered audio; Twilio then echoes every outstanding mark."""

    stream_sid: str


FromTwilio = Connected | Start | Media | Dtmf | Mark | Stop
ToTwilio = MediaOut | MarkOut | Clear
Message = FromTwilio | ToTwilio


# ---- dumping ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_json(msg: Message) -> dict[str, Any]:
    """The message as a JSON object, keys in the documented order."""
    match msg:
        case Connected(protocol=protocol, version=version):
            return {"event": "connected", "protocol": protocol, "version": version}
        case Start():
            fmt = msg.media_format
            return {
                "event": "start",
                "sequenceNumber": str(msg.sequence_number),
                "start": {
                    "accountSid": msg.account_sid,
                    "streamSid": msg.stream_sid,
                    "callSid": msg.call_sid,
                    "tracks": list(msg.tracks),
                    "mediaFormat": {
                        "encoding": fmt.encoding,
                        "sampleRate": fmt.sample_rate,
                        "channels": fmt.channels,
                    },
                    "customParameters": dict(msg.custom_parameters),
                },
                "streamSid": msg.stream_sid,
            }
        case Media():
            return {
                "event": "media",
                "sequenceNumber": str(msg.sequence_number),
                "media": {
                    "track": msg.track,
                    "chunk": str(msg.chunk),
                    "timestamp": str(msg.timestamp),
                    "payload": _b64(msg.payload),
                },
                "streamSid": msg.stream_sid,
            }
        case Dtmf():
            return {
                "event": "dtmf",
                "streamSid": msg.stream_sid,
                "sequenceNumber": str(msg.sequence_number),
                "dtmf": {"track": msg.track, "digit": msg.digit},
            }
        case Mark():
            return {
                "event": "mark",
                "sequenceNumber": str(msg.sequence_number),
                "streamSid": msg.stream_sid,
                "mark": {"name": msg.name},
            }
        case Stop():
            return {
                "event": "stop",
                "sequenceNumber": str(msg.sequence_number),
                "stop": {"accountSid": msg.account_sid, "callSid": msg.call_sid},
                "streamSid": msg.stream_sid,
            }
        case MediaOut():
            return {
                "event": "media",
                "streamSid": msg.stream_sid,
                "media": {"payload": _b64(msg.payload)},
            }
        case MarkOut():
            return {"event": "mark", "streamSid": msg.stream_sid, "mark": {"name": msg.name}}
        case Clear():
            return {"event": "clear", "streamSid": msg.stream_sid}


def dumps(msg: Message) -> str:
    """The text frame to send: compact JSON in the documented shape."""
    return json.dumps(to_json(msg), separators=(",", ":"), ensure_ascii=False)


# ---- parsing ----------------------------------------------------------------------------------


def _object(data: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise MessageError(f"{where}{key} must be a JSON object")
    return value


def _str(data: Mapping[str, Any], key: str, where: str = "", default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise MessageError(f"{where}{key} must be a string")
    return value


def _sid(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = _str(data, key, where)
    if not value:
        raise MessageError(f"{where}{key} must not be empty")
    return value


def _counter(data: Mapping[str, Any], key: str, where: str = "") -> int:
    # Twilio sends these as strings; a number is accepted too (lenient in what we take).
    value = data.get(key)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MessageError(f"{where}{key} must be a decimal string, got {value!r}")


def _number(data: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{where}{key} must be a number")
    return value


def _payload(media: Mapping[str, Any]) -> bytes:
    text = _str(media, "payload", "media.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError("media.payload is not valid base64") from None


def _load(text: str | bytes) -> tuple[str, Mapping[str, Any]]:
    if isinstance(text, bytes | bytearray):
        raise MessageError("binary WebSocket frame: Media Streams messages are JSON text")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError(f"a message must be a JSON object, got {type(data).__name__}")
    event = data.get("event")
    if not isinstance(event, str):
        raise MessageError("the message has no string 'event'")
    return event, data


def _start(data: Mapping[str, Any]) -> Start:
    start = _object(data, "start")
    top_sid = _sid(data, "streamSid")
    inner_sid = start.get("streamSid", top_sid)
    if inner_sid != top_sid:
        raise MessageError(f"start.streamSid {inner_sid!r} differs from streamSid {top_sid!r}")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise MessageError("start.tracks must be a list of strings")
    fmt = start.get("mediaFormat", {})
    if not isinstance(fmt, dict):
        raise MessageError("start.mediaFormat must be a JSON object")
    params = start.get("customParameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise MessageError("start.customParameters must be an object of strings")
    return Start(
        sequence_number=_counter(data, "sequenceNumber"),
        stream_sid=top_sid,
        account_sid=_str(start, "accountSid", "start."),
        call_sid=_str(start, "callSid", "start."),
        tracks=tuple(tracks),
        media_format=MediaFormat(
            encoding=_str(fmt, "encoding", "start.mediaFormat.", "audio/x-mulaw"),
            sample_rate=_number(fmt, "sampleRate", "start.mediaFormat.", 8000),
            channels=_number(fmt, "channels", "start.mediaFormat.", 1),
        ),
        custom_parameters=dict(params),
    )


def parse_from_twilio(text: str | bytes) -> FromTwilio:
    """A message Twilio sends to the app (what callbridge receives as a Twilio transport)."""
    event, data = _load(text)
    if event == "connected":
        return Connected(
            _str(data, "protocol", default="Call"), _str(data, "version", default="1.0.0")
        )
    if event not in ("start", "media", "dtmf", "mark", "stop"):
        raise UnknownEvent(event)
    if event == "start":
        return _start(data)
    seq = _counter(data, "sequenceNumber")
    sid = _sid(data, "streamSid")
    match event:
        case "media":
            media = _object(data, "media")
            return Media(
                sequence_number=seq,
                stream_sid=sid,
                track=_str(media, "track", "media.", "inbound"),
                chunk=_counter(media, "chunk", "media."),
                timestamp=_counter(media, "timestamp", "media."),
                payload=_payload(media),
            )
        case "dtmf":
            dtmf = _object(data, "dtmf")
            digit = _str(dtmf, "digit", "dtmf.")
            if len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
                raise MessageError(f"dtmf.digit must be one of 0-9 * # A-D, got {digit!r}")
            return Dtmf(seq, sid, digit.upper(), _str(dtmf, "track", "dtmf.", "inbound_track"))
        case "mark":
            return Mark(seq, sid, _str(_object(data, "mark"), "name", "mark."))
        case _:
            stop = _object(data, "stop")
            return Stop(seq, sid, _str(stop, "accountSid", "stop."), _str(stop, "callSid", "stop."))


def parse_from_app(text: str | bytes) -> ToTwilio:
    """A message an app sends to Twilio (what callbridge receives when it plays Twilio)."""
    event, data = _load(text)
    if event not in ("media", "mark", "clear"):
        raise UnknownEvent(event)
    sid = _sid(data, "streamSid")
    match event:
        case "media":
            return MediaOut(sid, _payload(_object(data, "media")))
        case "mark":
            return MarkOut(sid, _str(_object(data, "mark"), "name", "mark."))
        case _:
            return Clear(sid)


def parse(text: str | bytes, *, sender: Sender = "twilio") -> Message:
    """Parse one text frame sent by `sender`. Raises MessageError (UnknownEvent for an event
    this protocol does not define, which a receiver may ignore)."""
    return parse_from_twilio(text) if sender == "twilio" else parse_from_app(text)
