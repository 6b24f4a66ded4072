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

Parsing is total and bounded, as the frames come from the network: any input gives a message or
a MessageError, nothing else. A frame over MAX_MESSAGE_BYTES or nested deeper than MAX_DEPTH is
refused before `json.loads` runs, JSON numbers longer than 20 digits are refused while decoding
(int() of 4,300 digits raises ValueError), counters are range-checked and a media payload is
refused by its base64 length before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Literal

from callbridge.core.errors import ProtocolError

__all__ = [
    "DTMF_DIGITS",
    "MAX_APP_PAYLOAD_BYTES",
    "MAX_COUNTER",
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_PAYLOAD_BYTES",
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

# Twilio's media frames are ~300 bytes of JSON (20 ms of µ-law); start with its parameters a
# few KiB. Anything near these limits is not a Media Streams message.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_DEPTH = 8  # JSON nesting; Twilio's deepest is 3 (start.mediaFormat)
MAX_PAYLOAD_BYTES = 16 * 1024  # decoded media from Twilio: 2 s of µ-law, Twilio sends 20 ms
# An app's audio towards "Twilio" (our agent socket) may come in bigger TTS chunks: bounded by
# what fits in one frame (about 6 s of µ-law).
MAX_APP_PAYLOAD_BYTES = 48 * 1024
# Counters (sequenceNumber, chunk, timestamp in ms): the largest integer a JavaScript producer
# represents exactly; a real stream stays far below (ms of stream time).
MAX_COUNTER = 2**53 - 1
_MAX_NUMBER_DIGITS = 20
_MAX_SAMPLE_RATE = 1_000_000
_MAX_CHANNELS = 8
_QUOTE_MAX = 40

# A JSON string (an unterminated one runs to the end, so the scan never backtracks) and what
# is not a bracket: blanked out to measure nesting without recursion.
_JSON_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_MAX else text[:_QUOTE_MAX] + "..."


class MessageError(ProtocolError, ValueError):
    """A WebSocket message that is not a valid Media Streams message."""


class UnknownEvent(MessageError):
    """Well-formed JSON with an `event` this protocol does not define (ignorable)."""

    def __init__(self, event: str) -> None:
        super().__init__(f"unknown event {_quote(event)}")
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
    number: int | None = None
    if isinstance(value, str) and 0 < len(value) <= _MAX_NUMBER_DIGITS and value.isascii():
        number = int(value) if value.isdigit() else None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    if number is None or not 0 <= number <= MAX_COUNTER:
        raise MessageError(
            f"{where}{key} must be a decimal string 0..{MAX_COUNTER}, got {_quote(value)}"
        )
    return number


def _number(data: Mapping[str, Any], key: str, where: str, default: int, maximum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise MessageError(f"{where}{key} must be a number 0..{maximum}")
    return value


def _payload(media: Mapping[str, Any], limit: int) -> bytes:
    text = _str(media, "payload", "media.")
    # Refused by its encoded length, so an oversized payload is never decoded (4 chars: 3 bytes).
    if len(text) > (limit + 2) // 3 * 4:
        raise MessageError(f"media.payload larger than {limit} bytes")
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError("media.payload is not valid base64") from None
    if len(payload) > limit:
        raise MessageError(f"media.payload larger than {limit} bytes")
    return payload


def _json_int(text: str) -> int:
    # json's parse_int hook: refuse long numbers before int() (quadratic, and a ValueError past
    # 4,300 digits) ever sees them; raised through json.loads unchanged.
    if len(text.lstrip("-")) > _MAX_NUMBER_DIGITS:
        raise MessageError(f"JSON number longer than {_MAX_NUMBER_DIGITS} digits")
    return int(text)


def _too_deep(text: str) -> bool:
    """Nesting deeper than MAX_DEPTH, measured without recursion in time linear in the text:
    strings blanked out, the depth is the highest running sum of +1 per opening and -1 per
    closing bracket (all in C: a 64 KiB frame of brackets takes about 2 ms)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False  # the common case: a Twilio message has 2-6 brackets
    if '"' in text:
        text = _JSON_STRING_RE.sub("", text)
    steps = map(_DEPTH_STEP.__getitem__, _NOT_BRACKET_RE.sub("", text))
    return max(accumulate(steps), default=0) > MAX_DEPTH


def _load(text: str | bytes) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(text, str):
        raise MessageError("binary WebSocket frame: Media Streams messages are JSON text")
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(f"message larger than {MAX_MESSAGE_BYTES} bytes ({size})")
    if _too_deep(text):
        raise MessageError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    except MessageError:
        raise
    except (ValueError, RecursionError) as exc:
        # Belt and braces: the checks above keep json.loads from these.
        raise MessageError(f"not JSON: {type(exc).__name__}") from None
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
        raise MessageError(
            f"start.streamSid {_quote(inner_sid)} differs from streamSid {_quote(top_sid)}"
        )
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
            sample_rate=_number(fmt, "sampleRate", "start.mediaFormat.", 8000, _MAX_SAMPLE_RATE),
            channels=_number(fmt, "channels", "start.mediaFormat.", 1, _MAX_CHANNELS),
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
                payload=_payload(media, MAX_PAYLOAD_BYTES),
            )
        case "dtmf":
            dtmf = _object(data, "dtmf")
            digit = _str(dtmf, "digit", "dtmf.")
            if len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
                raise MessageError(f"dtmf.digit must be one of 0-9 * # A-D, got {_quote(digit)}")
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
            return MediaOut(sid, _payload(_object(data, "media"), MAX_APP_PAYLOAD_BYTES))
        case "mark":
            return MarkOut(sid, _str(_object(data, "mark"), "name", "mark."))
        case _:
            return Clear(sid)


def parse(text: str | bytes, *, sender: Sender = "twilio") -> Message:
    """Parse one text frame sent by `sender`. Raises MessageError (UnknownEvent for an event
    this protocol does not define, which a receiver may ignore)."""
    return parse_from_twilio(text) if sender == "twilio" else parse_from_app(text)
