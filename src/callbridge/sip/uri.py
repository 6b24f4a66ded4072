"""SIP URIs (RFC 3261 §19.1) and name-addr / addr-spec values (§20.10, §25.1)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from callbridge.core.errors import ProtocolError
from callbridge.sip.grammar import (
    QUOTED_RE,
    GrammarError,
    Params,
    find_param,
    format_params,
    has_param,
    is_token,
    parse_params,
    quote,
    replace_params,
    unquote,
)


class UriParseError(ProtocolError, ValueError):
    """The text is not a valid URI / name-addr."""


_ESC = r"%[0-9A-Fa-f]{2}"
# Possessive repeats (++, *+) over alternatives that start with disjoint characters: the same
# language, without a backtracking frame per character (see grammar.QUOTED_RE).
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
# user = 1*( unreserved / escaped / user-unreserved ); user-unreserved = & = + $ , ; ? /
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})++")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*+")
# Hostnames are accepted with "_" (seen in the wild) even though §25.1 forbids it.
_HOSTPORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?::([0-9]{1,5}))?")
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
_PNAME_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})++")
# hnv-unreserved = [ ] / ? : + $
_HCHAR_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})*+")
# Any URI: printable ASCII without the characters that delimit it inside a header.
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
_URI_BAD_CHAR_RE = re.compile(r'[^\x21-\x7e]|[<>"]')
_WS_RE = re.compile(r"[ \t]+")


_ESCAPE_RE = re.compile(rb"%[0-9A-Fa-f]{2}")


def uri_unescape(text: str) -> str:
    """Decode %HH escapes (as UTF-8, undecodable bytes kept via surrogateescape)."""
    if "%" not in text:
        return text
    raw = _ESCAPE_RE.sub(
        lambda m: bytes((int(m.group()[1:], 16),)), text.encode("utf-8", "surrogateescape")
    )
    return raw.decode("utf-8", "surrogateescape")


# A call's messages carry the same From, To, Contact and Request-URI texts again and again
# (the INVITE, its ACK, the BYE, every retransmission), and a trunk's calls mostly the same
# URIs: parsing them (and building their frozen dataclasses) was ~25 % of the SIP receive path
# at 100 call setups a second. The values are immutable, so a parse is kept for reuse, in an
# LRU of bounded size; only texts this short are kept, so a flood of long, distinct headers
# costs the cache at most _CACHED entries of this size. Errors are not kept: a bad text is
# parsed (and refused) every time.
_CACHED_TEXT = 256
_CACHED = 2048


def _bad_uri_chars(text: str) -> bool:
    return _URI_BAD_CHAR_RE.search(text) is not None


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:/sips: URI; components are kept as written (still %-escaped) so str() round-trips."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parsed once per distinct text while it is recent (see _CACHED_TEXT)."""
        if len(text) <= _CACHED_TEXT and cls is SipUri:
            return _sip_uri_cached(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> SipUri:
        m = _SCHEME_RE.match(text)
        if m is None or m.group(1).lower() not in ("sip", "sips"):
            raise UriParseError(f"not a sip/sips URI: {text[:40]!r}")
        scheme = m.group(1).lower()
        rest = text[m.end() :]
        if not rest or _bad_uri_chars(rest):
            raise UriParseError(f"invalid characters in URI: {text[:40]!r}")
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            # '@' cannot appear unescaped in userinfo, so the first one ends it (§19.1.1).
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, sep, pw = userinfo.partition(":")
            if _USER_RE.fullmatch(user) is None:
                raise UriParseError(f"invalid user part: {user[:40]!r}")
            if sep:
                if _PASSWORD_RE.fullmatch(pw) is None:
                    raise UriParseError("invalid password part")
                password = pw
        hm = _HOSTPORT_RE.match(rest)
        if hm is None:
            raise UriParseError(f"invalid host in URI: {text[:40]!r}")
        host = hm.group(1)
        port: int | None = None
        if hm.group(2) is not None:
            port = int(hm.group(2))
            if port > 65535:
                raise UriParseError(f"port out of range: {port}")
        rest = rest[hm.end() :]
        hdr_text = ""
        q = rest.find("?")
        if q >= 0:
            rest, hdr_text = rest[:q], rest[q + 1 :]
        params: list[tuple[str, str | None]] = []
        if rest:
            if rest[0] != ";":
                raise UriParseError(f"unexpected text after host: {rest[:20]!r}")
            for item in rest[1:].split(";"):
                name, eq, value = item.partition("=")
                if _PNAME_RE.fullmatch(name) is None or (eq and _PNAME_RE.fullmatch(value) is None):
                    raise UriParseError(f"invalid URI parameter: {item[:20]!r}")
                params.append((name, value if eq else None))
        headers: list[tuple[str, str]] = []
        if q >= 0:
            for item in hdr_text.split("&"):
                name, eq, value = item.partition("=")
                if not eq or not name or _HCHAR_RE.fullmatch(name) is None:
                    raise UriParseError(f"invalid URI header: {item[:20]!r}")
                if _HCHAR_RE.fullmatch(value) is None:
                    raise UriParseError(f"invalid URI header value: {item[:20]!r}")
                headers.append((name, value))
        return cls(scheme, host, user, password, port, tuple(params), tuple(headers))

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        out.append(format_params(self.params))
        if self.headers:
            out += ["?", "&".join(f"{n}={v}" for n, v in self.headers)]
        return "".join(out)

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return has_param(self.params, name)

    def with_params(self, **changes: str | None) -> SipUri:
        """Replace or add params; a None value writes a flag param (e.g. lr=None)."""
        return SipUri(
            self.scheme,
            self.host,
            self.user,
            self.password,
            self.port,
            replace_params(self.params, changes),
            self.headers,
        )

    def without_params(self, *names: str) -> SipUri:
        drop = {n.lower() for n in names}
        kept = tuple(p for p in self.params if p[0].lower() not in drop)
        return SipUri(
            self.scheme, self.host, self.user, self.password, self.port, kept, self.headers
        )

    @property
    def host_port(self) -> tuple[str, int | None]:
        return self.host, self.port


def parse_any_uri(text: str) -> SipUri | str:
    """A sip/sips URI parsed, any other absoluteURI checked lexically and returned as written."""
    m = _SCHEME_RE.match(text)
    if m is None:
        raise UriParseError(f"URI without scheme: {text[:40]!r}")
    if m.group(1).lower() in ("sip", "sips"):
        return SipUri.parse(text)
    if len(text) == m.end() or _bad_uri_chars(text):
        raise UriParseError(f"invalid URI: {text[:40]!r}")
    return text


@dataclass(frozen=True, slots=True)
class NameAddr:
    """name-addr or addr-spec plus header params (From, To, Contact, Route, Record-Route...)."""

    uri: SipUri | str
    display_name: str | None = None
    params: Params = ()
    bracketed: bool = True

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parsed once per distinct text while it is recent (see _CACHED_TEXT)."""
        if len(text) <= _CACHED_TEXT and cls is NameAddr:
            return _name_addr_cached(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> NameAddr:
        s = text.strip(" \t")
        if not s:
            raise UriParseError("empty name-addr")
        display: str | None = None
        pos = 0
        if s[0] == '"':
            qm = QUOTED_RE.match(s)
            if qm is None:
                raise UriParseError("unterminated quoted display name")
            display = unquote(qm.group())
            pos = qm.end()
            while pos < len(s) and s[pos] in " \t":
                pos += 1
            if pos >= len(s) or s[pos] != "<":
                raise UriParseError("quoted display name without <URI>")
        lt = s.find("<", pos)
        if lt >= 0:
            if display is None:
                words = _WS_RE.split(s[:lt].strip(" \t"))
                if words != [""]:
                    # display-name = *(token LWS) / quoted-string (§25.1)
                    if not all(is_token(w) for w in words):
                        raise UriParseError("display name must be tokens or a quoted string")
                    display = " ".join(words)
            gt = s.find(">", lt)
            if gt < 0:
                raise UriParseError("unterminated <URI>")
            uri_text = s[lt + 1 : gt]
            # RFC 4475 §3.1.2.14: no whitespace inside the angle brackets.
            if not uri_text or _bad_uri_chars(uri_text):
                raise UriParseError(f"invalid URI in <>: {uri_text[:40]!r}")
            param_pos = gt + 1
            bracketed = True
        else:
            semi = s.find(";")
            uri_text = s if semi < 0 else s[:semi].rstrip(" \t")
            param_pos = len(s) if semi < 0 else semi
            # §20: a URI with a comma, '?' or ';' must be in name-addr form (RFC 4475 regbadct).
            if any(c in uri_text for c in ",?") or _bad_uri_chars(uri_text):
                raise UriParseError(f"addr-spec needs <> around {uri_text[:40]!r}")
            bracketed = False
        uri = parse_any_uri(uri_text)
        try:
            params = parse_params(s, param_pos)
        except GrammarError as exc:
            raise UriParseError(str(exc)) from None
        return cls(uri, display, params, bracketed)

    def __str__(self) -> str:
        uri_s = str(self.uri)
        brackets = self.bracketed or self.display_name is not None or any(c in uri_s for c in ";,?")
        head = "" if self.display_name is None else quote(self.display_name) + " "
        body = f"<{uri_s}>" if brackets else uri_s
        return head + body + format_params(self.params)

    @property
    def tag(self) -> str | None:
        return find_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(
            self.uri, self.display_name, replace_params(self.params, {"tag": tag}), self.bracketed
        )

    def param(self, name: str) -> str | None:
        """Case-insensitive; "" for a flag param; quoted values are returned with their quotes."""
        return find_param(self.params, name)

    @property
    def sip_uri(self) -> SipUri:
        """The URI as a SipUri, raising UriParseError for other schemes."""
        if isinstance(self.uri, SipUri):
            return self.uri
        raise UriParseError(f"not a sip/sips URI: {self.uri[:40]!r}")


_sip_uri_cached = functools.lru_cache(maxsize=_CACHED)(SipUri._parse)
_name_addr_cached = functools.lru_cache(maxsize=_CACHED)(NameAddr._parse)
