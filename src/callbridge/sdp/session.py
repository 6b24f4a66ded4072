"""SDP session descriptions (RFC 4566): parse and serialise. Sans-IO, no I/O, no clocks.

The parser is tolerant where real peers are sloppy (LF-only line endings, a missing t= line,
blank lines, unknown line types) and strict where a mistake would make the description
meaningless (no v=0 first, an unparsable o=, m= or c= line).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "Connection",
    "MediaDescription",
    "Origin",
    "SdpParseError",
    "SessionDescription",
    "Timing",
    "parse",
]

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})

# RFC 3551 §6 table 4: static audio payload types, usable without an a=rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}

# RFC 4566 §5: the fixed order of session-level lines; extras are emitted in their slot.
_SESSION_BEFORE_C = ("i", "u", "e", "p")
_SESSION_AFTER_T = ("r", "z", "k")


class SdpParseError(ValueError):
    """The text is not a usable SDP session description; the message says which line and why."""


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

    def rtpmap(self, payload_type: int | str) -> tuple[str, int, int] | None:
        """(encoding, clock_rate, channels) for a format, from a=rtpmap or the static table.

        RFC 4566 §6: a=rtpmap overrides; RFC 3551 §6 defines static types that need none.
        """
        pt = str(payload_type)
        for value in self.attribute_values("rtpmap"):
            number, _, rest = value.partition(" ")
            if number != pt:
                continue
            parts = rest.strip().split("/")
            try:
                clock = int(parts[1])
                channels = int(parts[2]) if len(parts) > 2 and parts[2] else 1
            except (IndexError, ValueError):
                return None
            return parts[0], clock, channels
        if pt.isdigit():
            return STATIC_PAYLOAD_TYPES.get(int(pt))
        return None

    def fmtp(self, payload_type: int | str) -> str | None:
        pt = str(payload_type)
        for value in self.attribute_values("fmtp"):
            number, _, rest = value.partition(" ")
            if number == pt:
                return rest.strip()
        return None

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            # Some stacks send fractional ptime ("a=ptime:20.0"); RTP framing is whole ms.
            ms = round(float(value))
        except ValueError:
            return None
        return ms if ms > 0 else None

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


# --- parsing -------------------------------------------------------------------------------


def _split_lines(text: str) -> list[tuple[int, str, str]]:
    out: list[tuple[int, str, str]] = []
    # RFC 4566 §5 mandates CRLF but also says parsers SHOULD accept bare LF.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpParseError(f"line {number}: expected '<type>=<value>', got {line[:40]!r}")
        out.append((number, line[0], line[2:]))
    return out


def _int(value: str, what: str, number: int) -> int:
    try:
        result = int(value)
    except ValueError:
        raise SdpParseError(f"line {number}: {what} {value!r} is not an integer") from None
    if result < 0:
        raise SdpParseError(f"line {number}: {what} {value!r} is negative")
    return result


def _origin(value: str, number: int) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpParseError(f"line {number}: o= needs 6 fields, got {len(parts)}: {value!r}")
    user, sess_id, version, nettype, addrtype, address = parts
    return Origin(
        user, sess_id, _int(version, "o= session version", number), nettype, addrtype, address
    )


def _connection(value: str, number: int) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError(f"line {number}: c= needs 3 fields, got {value!r}")
    return Connection(nettype=parts[0], addrtype=parts[1], address=parts[2])


def _bandwidth(value: str, number: int) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    if not sep or not bwtype:
        raise SdpParseError(f"line {number}: b= must be <bwtype>:<bandwidth>, got {value!r}")
    return bwtype, _int(amount.strip(), "bandwidth", number)


def _attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return (name, rest) if sep else (name, None)


def _media_line(value: str, number: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpParseError(
            f"line {number}: m= needs <media> <port> <proto> <fmt>..., got {value!r}"
        )
    media, port_text, proto, *formats = parts
    port_str, slash, count_str = port_text.partition("/")
    port = _int(port_str, "m= port", number)
    if port > 0xFFFF:
        raise SdpParseError(f"line {number}: m= port {port} out of range")
    count = _int(count_str, "m= port count", number) if slash else None
    return MediaDescription(media, port, proto, tuple(formats), port_count=count)


def parse(text: str | bytes) -> SessionDescription:
    """Parse an SDP body. Raises SdpParseError with the line number and reason."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpParseError(f"SDP is not UTF-8: {exc}") from None
    lines = _split_lines(text)
    if not lines:
        raise SdpParseError("empty SDP")
    number, kind, value = lines[0]
    if kind != "v" or value.strip() != "0":
        raise SdpParseError(f"line {number}: SDP must start with v=0 (RFC 4566 §5.1)")

    origin: Origin | None = None
    session_name: str | None = None
    timing: Timing | None = None
    s_conn: Connection | None = None
    s_attrs: list[Attribute] = []
    s_bw: list[Bandwidth] = []
    s_extra: list[ExtraLine] = []
    media: list[MediaDescription] = []
    # Per-m= accumulators; flushed into `media` when the next m= or the end arrives.
    current: MediaDescription | None = None
    m_conn: Connection | None = None
    m_attrs: list[Attribute] = []
    m_bw: list[Bandwidth] = []
    m_extra: list[ExtraLine] = []

    def flush() -> None:
        if current is not None:
            media.append(
                MediaDescription(
                    current.media,
                    current.port,
                    current.proto,
                    current.formats,
                    m_conn,
                    tuple(m_attrs),
                    tuple(m_bw),
                    current.port_count,
                    tuple(m_extra),
                )
            )

    for number, kind, value in lines[1:]:
        if kind == "m":
            flush()
            current = _media_line(value, number)
            m_conn, m_attrs, m_bw, m_extra = None, [], [], []
        elif current is not None:
            match kind:
                case "c":
                    m_conn = _connection(value, number)
                case "a":
                    m_attrs.append(_attribute(value))
                case "b":
                    m_bw.append(_bandwidth(value, number))
                case "v" | "o" | "s" | "t":
                    raise SdpParseError(f"line {number}: {kind}= is not allowed after m=")
                case _:
                    m_extra.append((kind, value))
        else:
            match kind:
                case "o" if origin is None:
                    origin = _origin(value, number)
                case "s" if session_name is None:
                    session_name = value
                case "t" if timing is None:
                    fields = value.split()
                    if len(fields) != 2:
                        raise SdpParseError(
                            f"line {number}: t= needs <start> <stop>, got {value!r}"
                        )
                    timing = Timing(
                        _int(fields[0], "t= start", number), _int(fields[1], "t= stop", number)
                    )
                case "c":
                    s_conn = _connection(value, number)
                case "a":
                    s_attrs.append(_attribute(value))
                case "b":
                    s_bw.append(_bandwidth(value, number))
                case "v" | "o" | "s":
                    raise SdpParseError(f"line {number}: duplicate {kind}= line")
                case _:
                    # Additional t= (and r=, z=, k=, i=, unknown) lines are carried, not interpreted.
                    s_extra.append((kind, value))
    flush()

    if origin is None:
        raise SdpParseError("missing o= line (RFC 4566 §5.2)")
    return SessionDescription(
        origin=origin,
        # Some UAs omit s= or leave it empty; "-" is RFC 4566's "no name" value.
        session_name=session_name if session_name else "-",
        connection=s_conn,
        timing=timing or Timing(),
        attributes=tuple(s_attrs),
        media=tuple(media),
        bandwidths=tuple(s_bw),
        extra=tuple(s_extra),
    )
