"""chan_websocket's commands, app -> Asterisk (re-exported by chan_websocket).

Source: asterisk/asterisk@f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9, channels/chan_websocket.c
lines 129-144 (names, MAX_TEXT_MESSAGE_LEN) and 734-961 (handle_command, process_text_message).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal

from callbridge.asterisk.bounded_json import load_object
from callbridge.asterisk.bounded_json import text as bounded_text
from callbridge.asterisk.errors import ChanWebSocketError

ControlFormat = Literal["plain-text", "json"]
MAX_COMMAND_BYTES: Final = 128  # MAX_TEXT_MESSAGE_LEN: longer commands are ignored by Asterisk
_DIRECTIONS: Final = frozenset({"both", "in", "out"})


# --- commands --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    pass


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class StartMediaBuffering:
    pass


@dataclass(frozen=True, slots=True)
class StopMediaBuffering:
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class MarkMedia:
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class FlushMedia:
    pass


@dataclass(frozen=True, slots=True)
class ReportQueueDrained:
    pass


@dataclass(frozen=True, slots=True)
class GetStatus:
    pass


@dataclass(frozen=True, slots=True)
class PauseMedia:
    pass


@dataclass(frozen=True, slots=True)
class ContinueMedia:
    pass


@dataclass(frozen=True, slots=True)
class SetMediaDirection:
    direction: Literal["both", "in", "out"]


Command = (
    Answer | Hangup | StartMediaBuffering | StopMediaBuffering | MarkMedia | FlushMedia
    | ReportQueueDrained | GetStatus | PauseMedia | ContinueMedia | SetMediaDirection
)  # fmt: skip

_SIMPLE_COMMANDS: Final[dict[str, Command]] = {
    "ANSWER": Answer(), "HANGUP": Hangup(), "START_MEDIA_BUFFERING": StartMediaBuffering(),
    "FLUSH_MEDIA": FlushMedia(), "REPORT_QUEUE_DRAINED": ReportQueueDrained(),
    "GET_STATUS": GetStatus(), "PAUSE_MEDIA": PauseMedia(), "CONTINUE_MEDIA": ContinueMedia(),
}  # fmt: skip
_COMMAND_NAMES: Final = {type(c): name for name, c in _SIMPLE_COMMANDS.items()}


# --- text --------------------------------------------------------------------------------


def format_command(command: Command, fmt: ControlFormat = "plain-text") -> str:
    """The command as a TEXT message. ValueError if Asterisk would refuse or ignore it."""
    match command:
        case StopMediaBuffering(correlation_id=cid) | MarkMedia(correlation_id=cid):
            name = "MARK_MEDIA" if isinstance(command, MarkMedia) else "STOP_MEDIA_BUFFERING"
            if fmt == "json":
                text = json.dumps({"command": name, "correlation_id": cid or ""})
            else:
                text = name + (f" {cid}" if cid else "")
        case SetMediaDirection(direction=direction):
            # Plain text is refused with an ERROR event (chan_websocket.c:868-871).
            if fmt != "json":
                raise ValueError("SET_MEDIA_DIRECTION needs the JSON control format")
            text = json.dumps({"command": "SET_MEDIA_DIRECTION", "direction": direction})
        case _:
            name = _COMMAND_NAMES[type(command)]
            text = json.dumps({"command": name}) if fmt == "json" else name
    if len(text.encode("utf-8")) > MAX_COMMAND_BYTES:
        raise ValueError(f"command over {MAX_COMMAND_BYTES} bytes: Asterisk would ignore it")
    return text


def parse_command(data: str | bytes, fmt: ControlFormat = "plain-text") -> Command | None:
    """A TEXT message as Asterisk reads it (for test peers): None where Asterisk ignores it
    (empty, over 128 bytes, unknown command); ChanWebSocketError where it answers ERROR."""
    if not data or len(data) > MAX_COMMAND_BYTES:
        return None
    text = bounded_text(data, MAX_COMMAND_BYTES, ChanWebSocketError).strip()
    if fmt == "json":
        obj = load_object(text, ChanWebSocketError, max_depth=4, max_int_digits=10)
        name = obj.get("command")
        cid = obj.get("correlation_id")
        arg = cid if isinstance(cid, str) else None
    else:
        name, _, rest = text.partition(" ")
        arg = rest or None
        obj = {}
    match name:
        case "STOP_MEDIA_BUFFERING":
            return StopMediaBuffering(arg or None)
        case "MARK_MEDIA":
            return MarkMedia(arg or None)
        case "SET_MEDIA_DIRECTION":
            direction = obj.get("direction")
            if fmt != "json" or direction not in _DIRECTIONS:
                raise ChanWebSocketError("SET_MEDIA_DIRECTION needs JSON and a valid direction")
            return SetMediaDirection(direction)
        case str() if name in _SIMPLE_COMMANDS:
            return _SIMPLE_COMMANDS[name]
        case _:
            return None
