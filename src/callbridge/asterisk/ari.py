"""ARI: typed events from the events WebSocket and the REST requests a Stasis app needs.

Source: asterisk/asterisk@f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9, rest-api/api-docs/
events.json (StasisStart, StasisEnd, ChannelDtmfReceived, ChannelHangupRequest,
ChannelDestroyed; the `Message` base's `type` and `asterisk_id`, the `Event` base's
`application` and `timestamp`), channels.json (the Channel model; externalMedia, answer,
hangup, continue, redirect, variable), bridges.json (create, addChannel, removeChannel,
destroy) and res/ari/resource_channels.c:2414-2700 (what externalMedia really checks and that
its answer is the new Channel with `channelvars`, where chan_rtp.c:403-407 put
UNICASTRTP_LOCAL_ADDRESS and UNICASTRTP_LOCAL_PORT).

No HTTP here: a request is (method, path, query, body) for any client. Paths carry ARI's
default prefix `/ari` (http.conf `prefix` empty). Event parsing is total and bounded: any
text gives an event or AriError; event types not modelled come back as UnknownEvent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

from callbridge.asterisk.bounded_json import load_object
from callbridge.asterisk.bounded_json import text as bounded_text
from callbridge.asterisk.errors import AriError

__all__ = [
    "ARI_PREFIX",
    "MAX_EVENT_BYTES",
    "AriError",
    "AriRequest",
    "CallerId",
    "Channel",
    "ChannelDestroyed",
    "ChannelDtmfReceived",
    "ChannelHangupRequest",
    "DialplanCep",
    "Event",
    "StasisEnd",
    "StasisStart",
    "UnknownEvent",
    "add_channel",
    "answer",
    "continue_in_dialplan",
    "create_bridge",
    "destroy_bridge",
    "events_path",
    "external_media",
    "external_media_problem",
    "get_variable",
    "hangup",
    "parse_channel",
    "parse_event",
    "redirect",
    "remove_channel",
    "unicast_rtp_address",
]

ARI_PREFIX: Final = "/ari"
# A StasisStart with a few dozen channel variables is a few KiB.
MAX_EVENT_BYTES: Final = 256 * 1024
_MAX_DEPTH: Final = 16
_MAX_INT_DIGITS: Final = 19
_DTMF: Final = frozenset("0123456789ABCDE#*")  # events.json: "0-9, A-E, # or *"
Method = Literal["GET", "POST", "DELETE"]


# --- models -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallerId:
    name: str = ""
    number: str = ""


@dataclass(frozen=True, slots=True)
class DialplanCep:
    context: str = ""
    exten: str = ""
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Channel:
    """channels.json `Channel`. Only id, name and state are required here: older versions
    lack protocol_id, and fields we do not use should not fail a call."""

    id: str
    name: str
    state: str
    caller: CallerId = CallerId()
    connected: CallerId = CallerId()
    dialplan: DialplanCep = DialplanCep()
    language: str = ""
    creationtime: str = ""
    protocol_id: str = ""
    channelvars: tuple[tuple[str, str], ...] = ()

    def variable(self, name: str) -> str | None:
        for key, value in self.channelvars:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class StasisStart:
    application: str
    timestamp: str
    channel: Channel
    args: tuple[str, ...] = ()
    replace_channel: Channel | None = None
    asterisk_id: str = ""


@dataclass(frozen=True, slots=True)
class StasisEnd:
    application: str
    timestamp: str
    channel: Channel
    asterisk_id: str = ""


@dataclass(frozen=True, slots=True)
class ChannelDtmfReceived:
    application: str
    timestamp: str
    channel: Channel
    digit: str
    duration_ms: int
    asterisk_id: str = ""


@dataclass(frozen=True, slots=True)
class ChannelHangupRequest:
    application: str
    timestamp: str
    channel: Channel
    cause: int | None = None
    soft: bool | None = None
    asterisk_id: str = ""


@dataclass(frozen=True, slots=True)
class ChannelDestroyed:
    application: str
    timestamp: str
    channel: Channel
    cause: int
    cause_txt: str
    asterisk_id: str = ""


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """Any other ARI message type (ChannelStateChange, ChannelVarset, ...)."""

    type: str
    application: str = ""
    channel_id: str | None = None


Event = (
    StasisStart | StasisEnd | ChannelDtmfReceived | ChannelHangupRequest | ChannelDestroyed
    | UnknownEvent
)  # fmt: skip


# --- bounded JSON -----------------------------------------------------------------------------


def _load(data: str | bytes) -> dict[str, Any]:
    return load_object(
        bounded_text(data, MAX_EVENT_BYTES, AriError),
        AriError,
        max_depth=_MAX_DEPTH,
        max_int_digits=_MAX_INT_DIGITS,
    )


def _str(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise AriError(f"ARI field {key!r} must be a string")
    return value


def _int(obj: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AriError(f"ARI field {key!r} must be an integer")
    return value


def _obj(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise AriError(f"ARI field {key!r} must be an object")
    return value


def _caller(obj: Mapping[str, Any], key: str) -> CallerId:
    if key not in obj:
        return CallerId()
    value = _obj(obj, key)
    return CallerId(_str(value, "name", ""), _str(value, "number", ""))


def _channel(obj: Mapping[str, Any]) -> Channel:
    dialplan = _obj(obj, "dialplan") if "dialplan" in obj else {}
    variables = obj.get("channelvars", {})
    if not isinstance(variables, dict):
        raise AriError("ARI field 'channelvars' must be an object")
    pairs = []
    for key, value in variables.items():
        if not isinstance(value, str):
            raise AriError(f"channel variable {key[:40]!r} is not a string")
        pairs.append((key, value))
    return Channel(
        id=_str(obj, "id"),
        name=_str(obj, "name"),
        state=_str(obj, "state"),
        caller=_caller(obj, "caller"),
        connected=_caller(obj, "connected"),
        dialplan=DialplanCep(
            _str(dialplan, "context", ""),
            _str(dialplan, "exten", ""),
            _int(dialplan, "priority", 0),
        ),
        language=_str(obj, "language", ""),
        creationtime=_str(obj, "creationtime", ""),
        protocol_id=_str(obj, "protocol_id", ""),
        channelvars=tuple(pairs),
    )


def parse_channel(data: str | bytes) -> Channel:
    """A Channel response body (GET /channels/{id}, POST /channels/externalMedia)."""
    return _channel(_load(data))


def unicast_rtp_address(channel: Channel) -> tuple[str, int] | None:
    """Where Asterisk's UnicastRTP channel listens (chan_rtp.c:403-407), if it says."""
    host = channel.variable("UNICASTRTP_LOCAL_ADDRESS")
    port = channel.variable("UNICASTRTP_LOCAL_PORT")
    if not host or not port or not port.isascii() or not port.isdigit() or len(port) > 5:
        return None
    number = int(port)
    return (host, number) if 0 < number < 65536 else None


def parse_event(data: str | bytes) -> Event:
    """One events-WebSocket message; AriError if it is not an ARI event."""
    obj = _load(data)
    kind = _str(obj, "type")
    common: dict[str, Any] = {}
    if kind in _MODELLED:
        common = {
            "application": _str(obj, "application"),
            "timestamp": _str(obj, "timestamp", ""),
            "channel": _channel(_obj(obj, "channel")),
            "asterisk_id": _str(obj, "asterisk_id", ""),
        }
    match kind:
        case "StasisStart":
            args = obj.get("args", [])
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise AriError("StasisStart 'args' must be a list of strings")
            replace = obj.get("replace_channel")
            return StasisStart(
                **common,
                args=tuple(args),
                replace_channel=None if replace is None else _channel(_obj(obj, "replace_channel")),
            )
        case "StasisEnd":
            return StasisEnd(**common)
        case "ChannelDtmfReceived":
            digit = _str(obj, "digit")
            if digit not in _DTMF or len(digit) != 1:
                raise AriError(f"not a DTMF digit: {digit[:8]!r}")
            return ChannelDtmfReceived(**common, digit=digit, duration_ms=_int(obj, "duration_ms"))
        case "ChannelHangupRequest":
            soft = obj.get("soft")
            if soft is not None and not isinstance(soft, bool):
                raise AriError("ChannelHangupRequest 'soft' must be a boolean")
            cause = _int(obj, "cause") if obj.get("cause") is not None else None
            return ChannelHangupRequest(**common, cause=cause, soft=soft)
        case "ChannelDestroyed":
            return ChannelDestroyed(
                **common, cause=_int(obj, "cause"), cause_txt=_str(obj, "cause_txt")
            )
        case _:
            application = obj.get("application")
            channel = obj.get("channel")
            channel_id = channel.get("id") if isinstance(channel, dict) else None
            return UnknownEvent(
                kind[:64],
                application if isinstance(application, str) else "",
                channel_id if isinstance(channel_id, str) else None,
            )


_MODELLED: Final = frozenset(
    {"StasisStart", "StasisEnd", "ChannelDtmfReceived", "ChannelHangupRequest", "ChannelDestroyed"}
)


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AriRequest:
    method: Method
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: Mapping[str, Any] | None = None


def _id(value: str) -> str:
    if not value:
        raise ValueError("an ARI id must not be empty")
    return quote(value, safe="")


def _query(**params: str | int | bool | None) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in params.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append((key, text))
    return tuple(out)


def events_path(
    app: str, *, subscribe_all: bool = False
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """GET /ari/events, upgraded to the WebSocket subprotocol "ari" (events.json)."""
    return f"{ARI_PREFIX}/events", _query(app=app, subscribeAll=subscribe_all or None)


def answer(channel_id: str) -> AriRequest:
    return AriRequest("POST", f"{ARI_PREFIX}/channels/{_id(channel_id)}/answer")


def hangup(channel_id: str, reason: str | None = None) -> AriRequest:
    return AriRequest("DELETE", f"{ARI_PREFIX}/channels/{_id(channel_id)}", _query(reason=reason))


def continue_in_dialplan(
    channel_id: str,
    context: str | None = None,
    extension: str | None = None,
    priority: int | None = None,
    label: str | None = None,
) -> AriRequest:
    """Leave Stasis for the dialplan: the transfer tool's way out (POST .../continue)."""
    return AriRequest(
        "POST",
        f"{ARI_PREFIX}/channels/{_id(channel_id)}/continue",
        _query(context=context, extension=extension, priority=priority, label=label),
    )


def redirect(channel_id: str, endpoint: str) -> AriRequest:
    return AriRequest(
        "POST", f"{ARI_PREFIX}/channels/{_id(channel_id)}/redirect", _query(endpoint=endpoint)
    )


def get_variable(channel_id: str, variable: str) -> AriRequest:
    return AriRequest(
        "GET", f"{ARI_PREFIX}/channels/{_id(channel_id)}/variable", _query(variable=variable)
    )


def external_media(
    app: str,
    external_host: str,
    format: str,  # the ARI parameter's name
    *,
    encapsulation: Literal["rtp", "audiosocket", "none"] = "rtp",
    transport: Literal["udp", "tcp", "websocket"] = "udp",
    connection_type: Literal["client", "server"] | None = None,
    direction: Literal["both", "in", "out"] | None = None,
    data: str | None = None,
    channel_id: str | None = None,
    transport_data: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> AriRequest:
    """POST /ari/channels/externalMedia. ValueError for a combination Asterisk answers 400."""
    query = _query(
        app=app, external_host=external_host or None, format=format,
        encapsulation=encapsulation, transport=transport, connection_type=connection_type,
        direction=direction, data=data, channelId=channel_id, transport_data=transport_data,
    )  # fmt: skip
    problem = external_media_problem(dict(query))
    if problem:
        raise ValueError(problem)
    body = {"variables": dict(variables)} if variables else None
    return AriRequest("POST", f"{ARI_PREFIX}/channels/externalMedia", query, body)


def external_media_problem(query: Mapping[str, str]) -> str | None:
    """Asterisk's 400 message for these externalMedia parameters, None if it accepts them
    (resource_channels.c:2597-2680; the swagger lists only direction=both, the code takes
    in and out as well)."""
    transport = query.get("transport") or "udp"
    encapsulation = query.get("encapsulation") or "rtp"
    connection_type = query.get("connection_type") or "client"
    host = query.get("external_host", "")
    if not query.get("app"):
        return "app cannot be empty"
    if transport == "websocket" and encapsulation != "none":
        return "encapsulation must be 'none' for websocket transport"
    if encapsulation == "rtp" and transport != "udp":
        return "transport must be 'udp' for rtp encapsulation"
    if encapsulation == "audiosocket" and transport != "tcp":
        return "transport must be 'tcp' for audiosocket encapsulation"
    if transport != "websocket" and connection_type == "server":
        return "'server' connection_type can only be used with the websocket transport"
    if not host and connection_type == "client":
        return "external_host is required for all but websocket server connections"
    if transport != "websocket" and not _host_port(host):
        return "external_host must be <host>:<port> for all transports other than websocket"
    if not query.get("format"):
        return "format cannot be empty"
    if query.get("direction") not in (None, "", "both", "in", "out"):
        return "Invalid direction specified"
    if encapsulation == "audiosocket" and not query.get("data"):
        return "data can not be empty"  # the AudioSocket UUID travels in `data`
    return None


def _host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        return False
    return 0 < int(port[:6]) < 65536


def create_bridge(
    bridge_id: str | None = None, bridge_type: str = "mixing", name: str | None = None
) -> AriRequest:
    if bridge_id is not None:
        return AriRequest(
            "POST", f"{ARI_PREFIX}/bridges/{_id(bridge_id)}", _query(type=bridge_type, name=name)
        )
    return AriRequest("POST", f"{ARI_PREFIX}/bridges", _query(type=bridge_type, name=name))


def add_channel(bridge_id: str, *channel_ids: str) -> AriRequest:
    if not channel_ids:
        raise ValueError("addChannel needs at least one channel")
    return AriRequest(
        "POST",
        f"{ARI_PREFIX}/bridges/{_id(bridge_id)}/addChannel",
        _query(channel=",".join(channel_ids)),
    )


def remove_channel(bridge_id: str, *channel_ids: str) -> AriRequest:
    return AriRequest(
        "POST",
        f"{ARI_PREFIX}/bridges/{_id(bridge_id)}/removeChannel",
        _query(channel=",".join(channel_ids)),
    )


def destroy_bridge(bridge_id: str) -> AriRequest:
    return AriRequest("DELETE", f"{ARI_PREFIX}/bridges/{_id(bridge_id)}")
