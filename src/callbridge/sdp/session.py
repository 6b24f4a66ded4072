"""SDP session descriptions (RFC 4566): parse and serialise. Sans-IO, no I/O, no clocks.

The parser is tolerant where real peers are sloppy (LF-only line endings, a missing t= line,
blank lines, unknown line types) and strict where a mistake would make the description
meaningless (no v=0 first, an unparsable o=, m= or c= line).

SDP arrives from anyone who can reach the SIP port, so `parse` is total and bounded: any input
gives a SessionDescription or SdpParseError, nothing else. The body, its line count, m= lines,
attributes per section and formats per m= line are capped (the MAX_* constants); every number
is checked as at most a few ASCII digits before int() sees it (int() of 4,300 digits raises
ValueError, and "²".isdigit() is true) and range-checked before use. Values read lazily
(rtpmap, ptime) give "no value" rather than an error when out of range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_FORMATS",
    "MAX_LINES",
    "MAX_MEDIA",
    "MAX_SDP_BYTES",
    "STATIC_PAYLOAD_TYPES",
    "Connection",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SdpParseError",
    "SessionDescription",
    "Timing",
    "parse",
    "parse_payload_type",
    "ptime_ms",
]

# Bounds on untrusted input. Real offers are 300 bytes to 2 KiB with one to three m= lines.
MAX_SDP_BYTES = 16 * 1024
MAX_LINES = 1024  # non-blank lines in the whole body
MAX_MEDIA = 16  # m= lines
MAX_ATTRIBUTES = 256  # a= lines per section (the session level, or one m= section)
# RFC 3550 §5.1: payload types are 7 bits, so an RTP m= line listing more formats than that
# repeats some; non-RTP protos (udptl t38, BFCP) use a couple of tokens.
MAX_FORMATS = 128
MAX_PTIME_MS = 1000
MAX_CLOCK_RATE = 1_000_000
MAX_CHANNELS = 8
# RFC 4566 §5.2 suggests an NTP-format timestamp (64 bits) for the o= version: up to 20 digits.
_MAX_VERSION = 10**20 - 1
# t= times (§5.9), bandwidths (§5.8): 63 bits, a signed 64-bit integer for any reader.
_MAX_INT63 = 2**63 - 1
_MAX_PORT = 0xFFFF
_MAX_PAYLOAD_TYPE = 127
_PTIME_RE = re.compile(r"[0-9]{1,4}(?:\.[0-9]{0,6})?")

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})

# RFC 3551 §6 table 4: static audio payload types, usable without an a=rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1), 7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1),
    10: ("L16", 44100, 2), 11: ("L16", 44100, 1), 12: ("QCELP", 8000, 1), 13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1), 15: ("G728", 8000, 1), 16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1), 18: ("G729", 8000, 1),
}  # fmt: skip

# RFC 4566 §5: the fixed order of session-level lines; extras are emitted in their slot.
_SESSION_BEFORE_C = ("i", "u", "e", "p")
_SESSION_AFTER_T = ("r", "z", "k")


class SdpError(Exception):
    """Base of every error the sdp package raises for wire input: catch this one.

    Not itself a ValueError so that NoCommonCodec (488, RFC 3264 §6) stays distinct from
    malformed input; SdpParseError, OfferError and AnswerError are also ValueErrors.
    """


class SdpParseError(SdpError, ValueError):
    """The text is not a usable SDP session description; the message says which line and why."""


def _digits(text: str, max_digits: int) -> int | None:
    """An ASCII decimal of 1..max_digits significant digits, else None; checked before int()
    sees it. Leading zeros are tolerated (and cost only their scan)."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= max_digits else None


def parse_payload_type(fmt: str) -> int | None:
    """A format as an RTP payload type 0..127 (RFC 3550 §5.1), or None for anything else.

    Non-numeric formats are legitimate for other protos (m=image ... udptl t38), so they are
    carried as opaque tokens that match no codec rather than rejected.
    """
    pt = _digits(fmt, 3)
    return pt if pt is not None and pt <= _MAX_PAYLOAD_TYPE else None


def ptime_ms(value: str | None) -> int | None:
    """An a=ptime value in whole ms, None when absent or outside 1..MAX_PTIME_MS.

    Some stacks send fractional ptime ("a=ptime:20.0"); RTP framing is whole ms. The pattern
    bounds the text before float() so "9"*400 (inf) or "nan" never reach round().
    """
    if value is None:
        return None
    text = value.strip()
    if _PTIME_RE.fullmatch(text) is None:
        return None
    ms = round(float(text))
    return ms if 1 <= ms <= MAX_PTIME_MS else None


def _rtpmap_value(text: str) -> tuple[str, int, int] | None:
    """RFC 4566 §6 rtpmap: <encoding>/<clock>[/<channels>]; out-of-range numbers: no mapping."""
    parts = text.strip().split("/")
    if len(parts) < 2 or len(parts) > 3:
        return None
    clock = _digits(parts[1].strip(), 7)
    channels = _digits(parts[2].strip(), 1) if len(parts) > 2 and parts[2] else 1
    if clock is None or not 1 <= clock <= MAX_CLOCK_RATE:
        return None
    if channels is None or not 1 <= channels <= MAX_CHANNELS:
        return None
    return parts[0], clock, channels


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
                out[pt] = _rtpmap_value(rest)
        return out

    def rtpmap(self, payload_type: int | str) -> tuple[str, int, int] | None:
        """(encoding, clock_rate, channels) for a format, from a=rtpmap or the static table.

        RFC 4566 §6: a=rtpmap overrides; RFC 3551 §6 defines static types that need none.
        """
        pt = _as_payload_type(payload_type)
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
        pt = _as_payload_type(payload_type)
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


def _as_payload_type(payload_type: int | str) -> int | None:
    if isinstance(payload_type, int):
        return payload_type if 0 <= payload_type <= _MAX_PAYLOAD_TYPE else None
    return parse_payload_type(payload_type)


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
        if len(out) >= MAX_LINES:
            raise SdpParseError(f"more than {MAX_LINES} lines")
        out.append((number, line[0], line[2:]))
    return out


def _int(value: str, what: str, number: int, maximum: int) -> int:
    result = _digits(value, len(str(maximum)))
    if result is None:
        if value.isascii() and value.isdigit():
            raise SdpParseError(f"line {number}: {what} of {len(value)} digits out of range")
        raise SdpParseError(f"line {number}: {what} {value[:24]!r} is not a decimal number")
    if result > maximum:
        raise SdpParseError(f"line {number}: {what} {result} out of range (0..{maximum})")
    return result


def _origin(value: str, number: int) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpParseError(f"line {number}: o= needs 6 fields, got {len(parts)}: {value[:80]!r}")
    user, sess_id, version, nettype, addrtype, address = parts
    return Origin(
        user,
        sess_id,
        _int(version, "o= session version", number, _MAX_VERSION),
        nettype,
        addrtype,
        address,
    )


def _connection(value: str, number: int) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError(f"line {number}: c= needs 3 fields, got {value[:80]!r}")
    return Connection(nettype=parts[0], addrtype=parts[1], address=parts[2])


def _timing(value: str, number: int) -> Timing:
    fields = value.split()
    if len(fields) != 2:
        raise SdpParseError(f"line {number}: t= needs <start> <stop>, got {value[:80]!r}")
    return Timing(
        _int(fields[0], "t= start", number, _MAX_INT63),
        _int(fields[1], "t= stop", number, _MAX_INT63),
    )


def _bandwidth(value: str, number: int) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    if not sep or not bwtype:
        raise SdpParseError(f"line {number}: b= must be <bwtype>:<bandwidth>, got {value[:80]!r}")
    return bwtype, _int(amount.strip(), "bandwidth", number, _MAX_INT63)


def _attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return (name, rest) if sep else (name, None)


def _add_attribute(attrs: list[Attribute], value: str, number: int) -> None:
    if len(attrs) >= MAX_ATTRIBUTES:
        raise SdpParseError(f"line {number}: more than {MAX_ATTRIBUTES} a= lines in one section")
    attrs.append(_attribute(value))


def _media_line(value: str, number: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpParseError(
            f"line {number}: m= needs <media> <port> <proto> <fmt>..., got {value[:80]!r}"
        )
    media, port_text, proto, *formats = parts
    if len(formats) > MAX_FORMATS:
        raise SdpParseError(f"line {number}: more than {MAX_FORMATS} formats on one m= line")
    port_str, slash, count_str = port_text.partition("/")
    port = _int(port_str, "m= port", number, _MAX_PORT)
    count: int | None = None
    if slash:
        # RFC 4566 §5.14: <port>/<number of ports>, at least one and no more than ports exist.
        count = _int(count_str, "m= port count", number, _MAX_PORT)
        if count == 0:
            raise SdpParseError(f"line {number}: m= port count 0")
    return MediaDescription(media, port, proto, tuple(formats), port_count=count)


def _decode(text: str | bytes) -> str:
    """Size-check first (bytes before decoding), so an oversized body costs nothing more."""
    if isinstance(text, str):
        if len(text) > MAX_SDP_BYTES:
            raise SdpParseError(f"SDP larger than {MAX_SDP_BYTES} bytes")
        try:
            # A str with lone surrogates would parse but fail later when the answer is encoded.
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise SdpParseError("SDP text is not encodable as UTF-8") from None
    else:
        raw = bytes(text)
    if len(raw) > MAX_SDP_BYTES:
        raise SdpParseError(f"SDP larger than {MAX_SDP_BYTES} bytes ({len(raw)})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpParseError(f"SDP is not UTF-8: {exc}") from None


def parse(text: str | bytes) -> SessionDescription:
    """Parse an SDP body. Raises SdpParseError (with the line number and reason), nothing else."""
    lines = _split_lines(_decode(text))
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
            if len(media) >= MAX_MEDIA:
                raise SdpParseError(f"line {number}: more than {MAX_MEDIA} m= lines")
            current = _media_line(value, number)
            m_conn, m_attrs, m_bw, m_extra = None, [], [], []
        elif current is not None:
            match kind:
                case "c":
                    m_conn = _connection(value, number)
                case "a":
                    _add_attribute(m_attrs, value, number)
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
                    timing = _timing(value, number)
                case "c":
                    s_conn = _connection(value, number)
                case "a":
                    _add_attribute(s_attrs, value, number)
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
