"""SIP messages (RFC 3261 §7): data types, UDP-datagram parser, serializer, response builder.

`parse` is total (SipParseError, nothing else) and bounded: a datagram over MAX_MESSAGE_BYTES or
with more than MAX_HEADER_LINES header lines is refused before any header is looked at, and
address lists (Via, Contact, Route, Record-Route) hold at most MAX_LIST_ELEMENTS entries per
header name, because every later layer walks them again (a 64 KiB datagram of 8,000 one-byte
Contacts cost the UA 140 ms). Numbers are matched as at most 10 ASCII digits before int().
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from callbridge.sip.grammar import TOKEN_CHARS, TOKEN_RE, split_list
from callbridge.sip.headers import (
    CSeq,
    Headers,
    SipParseError,
    Via,
    canonical_name,
    header_key,
)
from callbridge.sip.uri import NameAddr, SipUri, UriParseError, parse_any_uri

__all__ = [
    "CSeq",
    "Headers",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "Via",
    "canonical_name",
    "make_response",
    "new_branch",
    "new_tag",
    "parse",
    "reason_phrase",
]

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7

# The largest UDP payload (RFC 768's 16-bit length); all this parser is fed is one datagram.
MAX_MESSAGE_BYTES = 65535
# Real requests carry 10-60 header lines, even after a few proxies.
MAX_HEADER_LINES = 256
# Max-Forwards starts at 70 (§8.1.1.6), so a request collects at most ~70 Vias and
# Record-Routes on its way; a REGISTER response lists a handful of Contacts.
MAX_LIST_ELEMENTS = 128
_ADDRESS_LISTS = frozenset({"Via", "Contact", "Route", "Record-Route"})


class _Accessors:
    """Typed views over the raw headers, shared by requests and responses."""

    __slots__ = ()
    headers: Headers

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"Missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        value = self._required("Call-ID")
        if not value:
            raise SipParseError("Empty Call-ID header")
        return value

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self._required("CSeq"))

    @property
    def vias(self) -> list[Via]:
        values = self.headers.get_all("Via")
        if not values:
            raise SipParseError("Missing Via header")
        return [Via.parse(v) for v in values]

    @property
    def from_(self) -> NameAddr:
        return _name_addr("From", self._required("From"))

    @property
    def to(self) -> NameAddr:
        return _name_addr("To", self._required("To"))

    @property
    def contacts(self) -> list[NameAddr]:
        values = self.headers.get_all("Contact")
        if any(v == "*" for v in values):
            raise SipParseError("Contact is '*'")
        return [_name_addr("Contact", v) for v in values]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()


def _name_addr(header: str, value: str) -> NameAddr:
    try:
        return NameAddr.parse(value)
    except UriParseError as exc:
        raise SipParseError(f"Malformed {header} header: {exc}") from None


def _encode_head(start_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [start_line]
    wrote_length = False
    for name, value in headers.items:
        if header_key(name) == "content-length":
            if wrote_length:
                continue
            wrote_length = True
            # Keep the value as written when it is already right, so parse(bytes(m)) == m.
            stripped = value.strip()
            if (
                len(stripped) < 12
                and stripped.isascii()
                and stripped.isdigit()
                and int(stripped) == len(body)
            ):
                lines.append(f"{name}: {value}")
            else:
                lines.append(f"{name}: {len(body)}")
            continue
        lines.append(f"{name}: {value}")
    if not wrote_length:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


@dataclass(frozen=True, slots=True)
class SipRequest(_Accessors):
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def __bytes__(self) -> bytes:
        return _encode_head(f"{self.method} {self.uri} {self.version}", self.headers, self.body)

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 10:
            raise SipParseError(f"Malformed Max-Forwards: {value[:20]!r}")
        return int(value)

    @property
    def request_uri(self) -> SipUri:
        return SipUri.parse(self.uri)


@dataclass(frozen=True, slots=True)
class SipResponse(_Accessors):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def __bytes__(self) -> bytes:
        return _encode_head(f"{self.version} {self.status} {self.reason}", self.headers, self.body)


SipMessage = SipRequest | SipResponse


# --- parser -------------------------------------------------------------------------------

_REQUEST_LINE_RE = re.compile(rf"([{TOKEN_CHARS}]+) (\S+) (SIP/[0-9]{{1,3}}\.[0-9]{{1,3}})")
_STATUS_LINE_RE = re.compile(r"(SIP/[0-9]{1,3}\.[0-9]{1,3}) ([1-6][0-9][0-9])(?: ([^\r\n]*))?")
_DIGITS_RE = re.compile(r"[0-9]{1,10}")
_WS_IN_RE = re.compile(r"[ \t]")
_MEDIA_TYPE_RE = re.compile(rf"[ \t]*[{TOKEN_CHARS}]+[ \t]*/[ \t]*[{TOKEN_CHARS}]+[ \t]*(;.*)?")
# RFC 3261 §20.17: rfc1123-date, and the zone is always "GMT" (RFC 4475 §3.1.2.12 baddate).
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


def _split_head(data: bytes) -> tuple[bytes, bytes | None]:
    """Head and body; body None when the empty line ending the headers is missing."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return data, None
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], data[crlf + 4 :]
    return data[:lf], data[lf + 2 :]


def _parse_header_lines(lines: list[str]) -> tuple[list[tuple[str, str]], str | None]:
    """Unfold and split `name: value` lines; returns the items and the first error, if any."""
    items: list[tuple[str, str]] = []
    error: str | None = None
    # RFC 3261 §7.3.1: a line starting with SP/HT continues the previous one (folding).
    logical: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and logical:
            logical[-1] += " " + line.strip(" \t")
        elif line[:1] in (" ", "\t"):
            error = error or "Folded line before any header"
        else:
            logical.append(line)
    for line in logical:
        colon = line.find(":")
        name = line[:colon].rstrip(" \t") if colon > 0 else ""
        if not name or TOKEN_RE.fullmatch(name) is None:
            error = error or f"Malformed header line: {line[:40]!r}"
            continue
        items.append((canonical_name(name), line[colon + 1 :].strip(" \t")))
    return items, error


def _frame_body(items: list[tuple[str, str]], rest: bytes) -> tuple[bytes, str | None]:
    """RFC 3261 §18.3 framing of a datagram's body by Content-Length."""
    values = [v for n, v in items if n == "Content-Length"]
    if not values:
        # No Content-Length on a datagram: the body runs to the end (§18.3, RFC 2543 peers).
        return rest, None
    if any(_DIGITS_RE.fullmatch(v) is None for v in values):
        return b"", "Malformed Content-Length"
    lengths = {int(v) for v in values}
    if len(lengths) > 1:
        # RFC 4475 §3.3.9 (mcl01): the framing is ambiguous.
        return b"", "Conflicting Content-Length values"
    length = lengths.pop()
    if length > len(rest):
        return b"", "Content-Length larger than the message body"
    # A body longer than Content-Length is truncated (§18.3; RFC 4475 dblreq).
    return rest[:length], None


def _list_sizes_ok(items: list[tuple[str, str]]) -> bool:
    counts = dict.fromkeys(_ADDRESS_LISTS, 0)
    for name, value in items:
        if name in counts:
            counts[name] += len(split_list(value, keep_empty=True))
            if counts[name] > MAX_LIST_ELEMENTS:
                return False
    return True


def _check_headers(items: list[tuple[str, str]]) -> str | None:
    """Syntax checks for the headers every element must understand; first error or None."""
    if not _list_sizes_ok(items):
        return f"More than {MAX_LIST_ELEMENTS} Via, Contact, Route or Record-Route entries"
    try:
        for name, value in items:
            match name:
                case "Via":
                    for part in split_list(value, keep_empty=True):
                        if not part:
                            return "Malformed Via: empty value"
                        Via.parse(part)
                case "From" | "To":
                    _name_addr(name, value)
                case "Contact" | "Route" | "Record-Route":
                    if name == "Contact" and value == "*":
                        continue
                    for part in split_list(value, keep_empty=True):
                        _name_addr(name, part)
                case "CSeq":
                    CSeq.parse(value)
                case "Call-ID":
                    if not value or _WS_IN_RE.search(value):
                        return "Malformed Call-ID"
                case "Max-Forwards":
                    if _DIGITS_RE.fullmatch(value) is None or int(value) > 255:
                        return "Malformed Max-Forwards"
                case "Date":
                    if _DATE_RE.fullmatch(value) is None:
                        return "Malformed Date"
                case "Content-Type":
                    if _MEDIA_TYPE_RE.fullmatch(value) is None:
                        return "Malformed Content-Type"
                case _:
                    pass
    except SipParseError as exc:
        return exc.reason
    return None


def _check_request_uri(uri: str) -> str | None:
    try:
        parsed = parse_any_uri(uri)
    except UriParseError:
        return "Malformed Request-URI"
    # RFC 3261 §19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 escruri).
    if isinstance(parsed, SipUri) and parsed.headers:
        return "Request-URI must not contain headers"
    return None


def parse(data: bytes) -> SipMessage:
    """Parse one UDP datagram (RFC 3261 §7, §18.3); raises SipParseError only."""
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"Message larger than {MAX_MESSAGE_BYTES} bytes")
    # §7.5: CRLFs before the start line (keepalives) are ignored.
    start = 0
    while start < len(data) and data[start] in (0x0D, 0x0A):
        start += 1
    if start >= len(data):
        raise SipParseError("Empty message")
    head, rest = _split_head(data[start:])
    text = head.decode("utf-8", "surrogateescape")
    if text.count("\n") > MAX_HEADER_LINES:
        # Dropped rather than answered: building even a 400 would walk every line.
        raise SipParseError(f"More than {MAX_HEADER_LINES} header lines")
    # Stray CRs before a line's end (">\r\r\n") go with the line ending: a header value never
    # ends in CR, so what we re-serialise parses back to the same message.
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    first = lines[0]
    items, error = _parse_header_lines(lines[1:])

    if first.startswith("SIP/"):
        sm = _STATUS_LINE_RE.fullmatch(first)
        if sm is None:
            raise SipParseError("Malformed status line")
        if rest is None:
            raise SipParseError("Missing empty line after headers")
        body, frame_error = _frame_body(items, rest)
        error = error or frame_error or _check_headers(items)
        if error is not None:
            raise SipParseError(error)
        return SipResponse(
            int(sm.group(2)), sm.group(3) or "", Headers(tuple(items)), body, sm.group(1)
        )

    rm = _REQUEST_LINE_RE.fullmatch(first)
    if rm is None:
        # RFC 4475 §3.1.2.7-10: keep what we can so that a 400 can still be sent.
        words = first.split()
        method = words[0] if words else ""
        uri = words[1] if len(words) > 1 else ""
        version = "SIP/2.0"
        error = "Malformed request line"
    else:
        method, uri, version = rm.group(1), rm.group(2), rm.group(3)
        error = _check_request_uri(uri) or error
    body = b""
    if rest is None:
        error = error or "Missing empty line after headers"
    else:
        body, frame_error = _frame_body(items, rest)
        error = error or frame_error
    request = SipRequest(method, uri, Headers(tuple(items)), body, version)
    error = error or _check_headers(items)
    if error is not None:
        raise SipParseError(error, request)
    return request


# --- responses --------------------------------------------------------------------------

_REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded",
    469: "Bad Info Package", 470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    555: "Push Notification Service Not Supported", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}  # fmt: skip


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def new_branch() -> str:
    """A Via branch with the RFC 3261 §8.1.1.7 magic cookie, unique over space and time."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    """A From/To tag with at least 32 bits of randomness (RFC 3261 §19.3)."""
    return secrets.token_hex(8)


def _to_has_tag(value: str) -> bool | None:
    """True/False when To parses; None when it is too malformed to touch."""
    try:
        return NameAddr.parse(value).tag is not None
    except UriParseError:
        return None


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    record_route: bool = False,
) -> SipResponse:
    """Build a response per RFC 3261 §8.2.6.2 (Via list, From, To, Call-ID, CSeq copied).
    `record_route`: the response establishes a dialog (1xx with a tag or 2xx to INVITE), so
    every Record-Route value is copied in order (§12.1.1): the proxies that asked to stay in
    the path learn the caller's route set from it."""
    req = request.headers.items
    items: list[tuple[str, str]] = [(n, v) for n, v in req if header_key(n) == "via"]
    if record_route:
        items.extend((n, v) for n, v in req if header_key(n) == "record-route")
    for key in ("from", "to", "call-id", "cseq"):
        for n, v in req:
            if header_key(n) != key:
                continue
            if key == "to" and to_tag is not None and _to_has_tag(v) is False:
                # Appending works for both name-addr and addr-spec forms: in the addr-spec
                # form the params after the URI are header params (§20.10).
                items.append((canonical_name(n), f"{v};tag={to_tag}"))
            else:
                items.append((canonical_name(n), v))
            break
    if status == 100:
        # §8.2.6.1: a 100 echoes the request's Timestamp.
        ts = request.headers.get("Timestamp")
        if ts is not None:
            items.append(("Timestamp", ts))
    items.extend((canonical_name(n), v) for n, v in headers)
    return SipResponse(
        status,
        reason if reason is not None else reason_phrase(status),
        Headers(tuple(items)),
        body,
    )
