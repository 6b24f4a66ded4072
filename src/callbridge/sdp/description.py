"""The SDP session description (RFC 4566) as frozen dataclasses, and its serialisation.

Origin, Connection, Timing, MediaDescription and SessionDescription carry what a body says,
unknown lines included (in order), and str()/bytes() write it back in RFC 4566 §5 order.
Reading a body is sdp.parser's job; the numbers inside attributes are read by sdp.values.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.sdp.values import (
    STATIC_PAYLOAD_TYPES,
    as_payload_type,
    parse_payload_type,
    ptime_ms,
    rtpmap_value,
)

__all__ = [
    "DIRECTIONS",
    "Attribute",
    "Bandwidth",
    "Connection",
    "ExtraLine",
    "MediaDescription",
    "Origin",
    "SessionDescription",
    "Timing",
]

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})

# RFC 4566 §5: the fixed order of session-level lines; extras are emitted in their slot.
_SESSION_BEFORE_C = ("i", "u", "e", "p")
_SESSION_AFTER_T = ("r", "z", "k")


@dataclass(frozen=True, slots=True)
class Origin:
    """o= (RFC 4566 §5.2). sess_id is opaque; sess_version is numeric so re-offers can bump it."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """c= (RFC 4566 §5.7). address keeps any multicast /ttl/count suffix verbatim."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @property
    def is_null(self) -> bool:
        """RFC 2543-style hold address (RFC 3264 §8.4 still asks answerers to accept it)."""
        return self.address.split("/", 1)[0] in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Timing:
    """t= (RFC 4566 §5.9); 0 0 means an unbounded session, the norm for SIP."""

    start: int = 0
    stop: int = 0

    def __str__(self) -> str:
        return f"{self.start} {self.stop}"


Attribute = tuple[str, str | None]  # (name, value); value None for a property attribute
Bandwidth = tuple[str, int]  # (bwtype, kbps or bps per type)
ExtraLine = tuple[str, str]  # (type letter, raw value) for lines we carry but do not interpret


def _find_attr(attributes: tuple[Attribute, ...], name: str) -> str | None:
    for key, value in attributes:
        if key == name:
            return value if value is not None else ""
    return None


def _direction_of(attributes: tuple[Attribute, ...]) -> str | None:
    for key, value in attributes:
        if value is None and key in DIRECTIONS:
            return key
    return None


@dataclass(frozen=True, slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    port_count: int | None = None  # m=<media> <port>/<count>
    extra: tuple[ExtraLine, ...] = ()  # i=, k= and unknown line types, in order

    def attribute(self, name: str) -> str | None:
        """Value of the first a=<name> ("" for a property attribute), or None if absent."""
        return _find_attr(self.attributes, name)

    def attribute_values(self, name: str) -> tuple[str, ...]:
        return tuple(v if v is not None else "" for k, v in self.attributes if k == name)

    def _rtpmap_lines(self) -> dict[int, tuple[str, int, int] | None]:
        """Each payload type's first a=rtpmap, None when that line is unusable; one pass."""
        out: dict[int, tuple[str, int, int] | None] = {}
        for key, value in self.attributes:
            if key != "rtpmap" or value is None:
                continue
            number, _, rest = value.partition(" ")
            pt = parse_payload_type(number)
            if pt is not None and pt not in out:
                out[pt] = rtpmap_value(rest)
        return out

    def rtpmap(self, payload_type: int | str) -> tuple[str, int, int] | None:
        """(encoding, clock_rate, channels) for a format, from a=rtpmap or the static table.

        RFC 4566 §6: a=rtpmap overrides; RFC 3551 §6 defines static types that need none.
        """
        pt = as_payload_type(payload_type)
        if pt is None:
            return None
        lines = self._rtpmap_lines()
        return lines[pt] if pt in lines else STATIC_PAYLOAD_TYPES.get(pt)

    def rtpmaps(self) -> dict[int, tuple[str, int, int]]:
        """Payload type -> mapping for every listed format that has one, in format order.

        Linear in the section's size, where calling rtpmap() per format would be quadratic.
        """
        lines = self._rtpmap_lines()
        out: dict[int, tuple[str, int, int]] = {}
        for fmt in self.formats:
            pt = parse_payload_type(fmt)
            if pt is None or pt in out:
                continue
            mapping = lines[pt] if pt in lines else STATIC_PAYLOAD_TYPES.get(pt)
            if mapping is not None:
                out[pt] = mapping
        return out

    def fmtp(self, payload_type: int | str) -> str | None:
        pt = as_payload_type(payload_type)
        if pt is None:
            return None
        for value in self.attribute_values("fmtp"):
            number, _, rest = value.partition(" ")
            if parse_payload_type(number) == pt:
                return rest.strip()
        return None

    @property
    def ptime(self) -> int | None:
        return ptime_ms(self.attribute("ptime"))

    @property
    def own_direction(self) -> str | None:
        """The media-level direction attribute, None when absent."""
        return _direction_of(self.attributes)

    def __str__(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        lines = [f"m={' '.join((self.media, port, self.proto, *self.formats))}"]
        lines += [f"{t}={v}" for t, v in self.extra if t == "i"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={t}:{v}" for t, v in self.bandwidths]
        lines += [f"{t}={v}" for t, v in self.extra if t != "i"]
        lines += [_attr_line(a) for a in self.attributes]
        return "".join(line + "\r\n" for line in lines)


def _attr_line(attr: Attribute) -> str:
    name, value = attr
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass(frozen=True, slots=True)
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: Timing = Timing()
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    extra: tuple[ExtraLine, ...] = ()  # i= u= e= p= r= z= k= and unknown types, in order
    version: int = 0

    def attribute(self, name: str) -> str | None:
        return _find_attr(self.attributes, name)

    @property
    def direction(self) -> str:
        """Session-level direction; RFC 3264 §5.1 defaults to sendrecv."""
        return _direction_of(self.attributes) or "sendrecv"

    def media_direction(self, media: MediaDescription) -> str:
        """RFC 4566 §6: a media-level direction overrides the session-level one."""
        return media.own_direction or self.direction

    def media_connection(self, media: MediaDescription) -> Connection | None:
        """RFC 4566 §5.7: a media-level c= overrides the session-level one."""
        return media.connection or self.connection

    def __str__(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        lines += [f"{t}={v}" for t, v in self.extra if t in _SESSION_BEFORE_C]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={t}:{v}" for t, v in self.bandwidths]
        lines.append(f"t={self.timing}")
        lines += [f"{t}={v}" for t, v in self.extra if t not in _SESSION_BEFORE_C]
        lines += [_attr_line(a) for a in self.attributes]
        return "".join(line + "\r\n" for line in lines) + "".join(str(m) for m in self.media)

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")
