"""Header collection and the structured headers the transaction layer needs (CSeq, Via).

Re-exported by callbridge.sip.message, which is the public import path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from callbridge.core.errors import ProtocolError
from callbridge.sip.grammar import (
    TOKEN_CHARS,
    GrammarError,
    Params,
    find_param,
    format_params,
    parse_params,
    replace_params,
    split_list,
)

if TYPE_CHECKING:
    from callbridge.sip.message import SipRequest


class SipParseError(ProtocolError, ValueError):
    """Malformed message. `partial` carries what could be recovered so a 400 can still be built."""

    def __init__(self, reason: str, partial: SipRequest | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


# RFC 3261 §7.3.3 compact forms, plus the ones registered later (RFC 3265, 3515, 3841...).
_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

_KNOWN = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
]  # fmt: skip
_CANONICAL = {n.lower(): n for n in _KNOWN}

# Headers whose values are comma-separated lists (§7.3.1); the authentication headers and
# Date contain commas that are not list separators, so they are deliberately absent.
_LIST_KEYS = frozenset(
    n.lower()
    for n in (
        "Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require",
        "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
        "Content-Encoding", "Content-Language", "Allow-Events", "Path", "Service-Route",
        "Alert-Info", "Call-Info", "Error-Info", "In-Reply-To", "Warning",
        "P-Asserted-Identity",
    )
)  # fmt: skip


@lru_cache(maxsize=2048)  # header names repeat endlessly; bounded because they come off the wire
def header_key(name: str) -> str:
    """Lower-case long form: the comparison key for header names."""
    lname = name.strip().lower()
    return _COMPACT.get(lname, lname)


def canonical_name(name: str) -> str:
    """ "v" -> "Via", "call-id" -> "Call-ID"; unknown names keep their written form."""
    stripped = name.strip()
    return _CANONICAL.get(header_key(stripped), stripped)


def is_list_header(name: str) -> bool:
    return header_key(name) in _LIST_KEYS


@dataclass(frozen=True, slots=True)
class Headers:
    """Ordered header fields as (canonical name, raw value) pairs; raw text kept for round-trips."""

    items: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        key = header_key(name)
        for n, v in self.items:
            if header_key(n) == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        key = header_key(name)
        values = [v for n, v in self.items if header_key(n) == key]
        if key not in _LIST_KEYS:
            return values
        out: list[str] = []
        for v in values:
            out.extend(split_list(v))
        return out

    def count(self, name: str) -> int:
        """Number of header lines (not list elements) with this name."""
        key = header_key(name)
        return sum(1 for n, _ in self.items if header_key(n) == key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def set(self, name: str, value: str) -> Headers:
        """Replace all fields of that name by one, at the position of the first."""
        key = header_key(name)
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self.items:
            if header_key(n) == key:
                if not placed:
                    out.append((canonical_name(name), value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((canonical_name(name), value))
        return Headers(tuple(out))

    def add(self, name: str, value: str, *, first: bool = False) -> Headers:
        """Append; with first=True insert before the first field of that name (or at the top)."""
        item = (canonical_name(name), value)
        if not first:
            return Headers((*self.items, item))
        key = header_key(name)
        for i, (n, _) in enumerate(self.items):
            if header_key(n) == key:
                return Headers((*self.items[:i], item, *self.items[i:]))
        return Headers((item, *self.items))

    def remove(self, name: str) -> Headers:
        key = header_key(name)
        return Headers(tuple((n, v) for n, v in self.items if header_key(n) != key))


_CSEQ_RE = re.compile(rf"[ \t]*([0-9]{{1,10}})[ \t]+([{TOKEN_CHARS}]+)[ \t]*")


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ_RE.fullmatch(text)
        if m is None:
            raise SipParseError(f"Malformed CSeq: {text[:40]!r}")
        number = int(m.group(1))
        # RFC 3261 §8.1.1.5: the sequence number is a 32-bit unsigned integer.
        if number > 0xFFFFFFFF:
            raise SipParseError("CSeq number exceeds 32 bits")
        return cls(number, m.group(2))

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_VIA_RE = re.compile(
    rf"[ \t]*(SIP)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*",
    re.IGNORECASE,
)
_SECURE_TRANSPORTS = frozenset({"TLS", "WSS"})
_PORT_RE = re.compile(r"[0-9]{1,5}")
_VIA_CACHED_TEXT = 256  # longer ones are parsed each time: the cache's memory stays bounded


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        """Kept for reuse while recent, as sip.uri keeps URIs: a message's Via is parsed by
        the syntax check and again by whoever reads it, and a retransmission repeats it."""
        if len(text) <= _VIA_CACHED_TEXT and cls is Via:
            return _via_cached(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Via:
        m = _VIA_RE.match(text)
        if m is None:
            raise SipParseError(f"Malformed Via: {text[:60]!r}")
        port: int | None = None
        if m.group(5) is not None:
            port = int(m.group(5))
            if port > 65535:
                raise SipParseError("Via port out of range")
        try:
            params = parse_params(text, m.end())
        except GrammarError:
            raise SipParseError(f"Malformed Via parameters: {text[:60]!r}") from None
        # RFC 3581 §3: response-port = "rport" [EQUAL 1*DIGIT]. Checked here because the value
        # becomes the port responses are sent to (§4).
        rport = find_param(params, "rport")
        if rport and (_PORT_RE.fullmatch(rport) is None or int(rport) > 65535):
            raise SipParseError(f"Malformed Via rport: {rport[:20]!r}")
        return cls(m.group(3).upper(), m.group(4), port, params)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return find_param(self.params, "branch")

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)

    def with_params(self, **changes: str | None) -> Via:
        """Replace or add params; a None value writes a flag param (e.g. rport=None)."""
        return Via(self.transport, self.host, self.port, replace_params(self.params, changes))

    @property
    def sent_by(self) -> tuple[str, int]:
        if self.port is not None:
            return self.host, self.port
        # RFC 3261 §18.2.2 / §19.1.2 default ports.
        return self.host, 5061 if self.transport in _SECURE_TRANSPORTS else 5060


_via_cached = lru_cache(maxsize=2048)(Via._parse)
