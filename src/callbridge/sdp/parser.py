"""Parsing SDP (RFC 4566): text or bytes in, a SessionDescription or SdpParseError out.

The parser is tolerant where real peers are sloppy (LF-only line endings, a missing t= line,
blank lines, unknown line types) and strict where a mistake would make the description
meaningless (no v=0 first, an unparsable o=, m= or c= line).

SDP arrives from anyone who can reach the SIP port, so `parse` is total and bounded: any input
gives a SessionDescription or SdpParseError, nothing else. The body, its line count, m= lines,
attributes per section and formats per m= line are capped (the MAX_* constants); numbers are
read through sdp.values, bounded before int() sees them.
"""

from __future__ import annotations

from callbridge.sdp.description import (
    Attribute,
    Bandwidth,
    Connection,
    ExtraLine,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)
from callbridge.sdp.errors import SdpParseError
from callbridge.sdp.values import digits

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_FORMATS",
    "MAX_LINES",
    "MAX_MEDIA",
    "MAX_SDP_BYTES",
    "parse",
]

# Bounds on untrusted input. Real offers are 300 bytes to 2 KiB with one to three m= lines.
MAX_SDP_BYTES = 16 * 1024
MAX_LINES = 1024  # non-blank lines in the whole body
MAX_MEDIA = 16  # m= lines
MAX_ATTRIBUTES = 256  # a= lines per section (the session level, or one m= section)
# RFC 3550 §5.1: payload types are 7 bits, so an RTP m= line listing more formats than that
# repeats some; non-RTP protos (udptl t38, BFCP) use a couple of tokens.
MAX_FORMATS = 128
# RFC 4566 §5.2 suggests an NTP-format timestamp (64 bits) for the o= version: up to 20 digits.
_MAX_VERSION = 10**20 - 1
# t= times (§5.9), bandwidths (§5.8): 63 bits, a signed 64-bit integer for any reader.
_MAX_INT63 = 2**63 - 1
_MAX_PORT = 0xFFFF


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
    result = digits(value, len(str(maximum)))
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
