"""SIP digest authentication, client side (RFC 3261 §22, RFC 7616, RFC 8760). Sans-IO.

Parses `WWW-Authenticate` / `Proxy-Authenticate` challenges and builds `Authorization` /
`Proxy-Authorization` answers: MD5, MD5-sess, SHA-256 and SHA-256-sess, with qop "auth" or none.
`auth-int` and other algorithms are refused with `UnsupportedChallenge` (the caller reports
"unsupported challenge"). Client nonces come from an injectable function so tests are exact.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from callbridge.core.errors import ProtocolError
from callbridge.sip.grammar import TOKEN_CHARS, quote, unquote
from callbridge.sip.message import SipRequest, SipResponse, new_branch
from callbridge.sip.transaction import replace_top_via

__all__ = [
    "AuthHeader",
    "Challenge",
    "DigestClient",
    "DigestError",
    "UnsupportedChallenge",
    "authorization",
    "canonical_algorithm",
    "digest_params",
    "digest_response",
    "parse_challenge",
    "select_challenge",
    "with_credentials",
]

# RFC 7616 §3.3 / RFC 8760 §2.2: the algorithms we answer, by their canonical spelling.
_ALGORITHMS = {a.lower(): a for a in ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")}
_AUTH_HEADERS = ("Authorization", "Proxy-Authorization")

_SCHEME_RE = re.compile(rf"[ \t]*([{TOKEN_CHARS}]+)(?:[ \t\r\n]+|$)")
# auth-param = token EQUAL ( token / quoted-string ). Unquoted values are taken up to the next
# comma or blank, since real servers send base64 nonces ('/', '=') without quotes.
_PARAM_RE = re.compile(
    rf'[ \t\r\n,]*([{TOKEN_CHARS}]+)[ \t\r\n]*=[ \t\r\n]*("(?:[^"\\]|\\.)*"|[^\s,"]+)[ \t\r\n]*',
    re.DOTALL,
)
_TRAILER_RE = re.compile(r"[ \t\r\n,]*")


class DigestError(ProtocolError, ValueError):
    """A challenge we cannot read (syntax, missing realm or nonce)."""


class UnsupportedChallenge(DigestError):
    """A well-formed challenge we will not answer (another scheme, auth-int only, AKA...)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """One digest challenge. `proxy` tells which header carried it (407 vs 401)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"  # canonical spelling, one of _ALGORITHMS' values
    qop: tuple[str, ...] = ()  # offered qop values, lower-case; () = RFC 2069 compatibility
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False

    @property
    def header_name(self) -> str:
        # RFC 3261 §22.2 / §22.3: the answer goes in the header matching the challenge's.
        return "Proxy-Authorization" if self.proxy else "Authorization"


@dataclass(frozen=True, slots=True)
class AuthHeader:
    name: str  # "Authorization" | "Proxy-Authorization"
    value: str
    realm: str
    nonce: str


def _params(text: str, pos: int) -> dict[str, str]:
    out: dict[str, str] = {}
    end = len(text)
    while True:
        tail = _TRAILER_RE.match(text, pos)
        if tail is not None and tail.end() == end:
            return out
        m = _PARAM_RE.match(text, pos)
        if m is None:
            raise DigestError(f"malformed challenge near {text[pos : pos + 30]!r}")
        name, value = m.group(1).lower(), m.group(2)
        if name in out:
            # RFC 7616 §3.3: each parameter at most once; two nonces would be ambiguous.
            raise DigestError(f"parameter {name!r} repeated")
        out[name] = unquote(value) if value.startswith('"') else value
        pos = m.end()
        if pos < end and text[pos] != ",":
            raise DigestError(f"missing comma near {text[pos : pos + 30]!r}")


def digest_params(value: str, what: str = "challenge") -> dict[str, str]:
    """The auth-params of a Digest header value (a challenge, or credentials: RFC 3261 §25.1),
    names lower-cased, values unquoted. UnsupportedChallenge for another scheme."""
    m = _SCHEME_RE.match(value)
    if m is None:
        raise DigestError(f"empty {what}")
    scheme = m.group(1)
    if scheme.lower() != "digest":
        raise UnsupportedChallenge(f"scheme {scheme!r} (only Digest)")
    return _params(value, m.end())


def canonical_algorithm(name: str) -> str | None:
    """The canonical spelling of an algorithm we support (RFC 8760), or None."""
    return _ALGORITHMS.get(name.lower())


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge:
    """Parse one WWW-Authenticate / Proxy-Authenticate value (RFC 3261 §25.1 `challenge`)."""
    params = digest_params(value)
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or nonce is None:
        raise DigestError("challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    canonical = canonical_algorithm(algorithm)
    if canonical is None:
        raise UnsupportedChallenge(f"algorithm {algorithm!r}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and "auth" not in qop:
        raise UnsupportedChallenge(f"qop {params['qop']!r} (only auth)")
    if canonical.endswith("-sess") and not qop:
        # RFC 2617 §3.2.2.2: a -sess HA1 needs a cnonce, and a cnonce needs a qop.
        raise UnsupportedChallenge(f"{canonical} without qop")
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=canonical,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def select_challenge(response: SipResponse) -> Challenge:
    """The challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) to answer.

    RFC 8760: a server may offer one challenge per algorithm, in its order of preference; we
    answer the first one we support. Raises UnsupportedChallenge when none fits (the reasons of
    every refused one are in the message) and DigestError when none is readable.
    """
    proxy = response.status == 407
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    # Not a list header: each field line is one challenge (RFC 3261 §7.3.1 exceptions).
    values = response.headers.get_all(name)
    if not values:
        raise DigestError(f"{response.status} without {name}")
    problems: list[str] = []
    unsupported = False
    for value in values:
        try:
            return parse_challenge(value, proxy=proxy)
        except UnsupportedChallenge as exc:
            unsupported = True
            problems.append(str(exc))
        except DigestError as exc:
            problems.append(str(exc))
    error = UnsupportedChallenge if unsupported else DigestError
    raise error("; ".join(problems))


# ---- computing the answer -----------------------------------------------------------------


def _hash(algorithm: str, text: str) -> str:
    data = text.encode("utf-8")
    if algorithm.startswith("SHA-256"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    cnonce: str = "",
    nc: str = "",
    qop: str = "",
) -> str:
    """The `response` value (RFC 7616 §3.4.1; RFC 2069 form when qop is empty)."""
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.endswith("-sess"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")  # RFC 7616 §3.4.2
    ha2 = _hash(algorithm, f"{method}:{uri}")  # RFC 7616 §3.4.3 (qop=auth)
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")


def authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int,
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (RFC 3261 §22.4).

    `uri` is the Request-URI as sent; `nc` counts the requests sent with this nonce, from 1."""
    qop = "auth" if challenge.qop else ""
    nc_text = f"{nc:08x}" if qop else ""  # RFC 7616 §3.4: 8 hex digits
    response = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        password=password,
        realm=challenge.realm,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        cnonce=cnonce if qop else "",
        nc=nc_text,
        qop=qop,
    )
    parts = [
        f"username={quote(username)}",
        f"realm={quote(challenge.realm)}",
        f"nonce={quote(challenge.nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(response)}",
        # RFC 7616 §3.4: algorithm, qop and nc are never quoted.
        f"algorithm={challenge.algorithm}",
    ]
    if qop:
        parts += [f"cnonce={quote(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


def _new_cnonce() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class DigestClient:
    """One set of credentials: answers challenges and counts each nonce's uses (nc).

    One cnonce per nonce: with -sess algorithms HA1 then stays the same whether the server
    computes it once per nonce (RFC 2617 §3.2.2.2) or per request, and (nonce, cnonce, nc)
    stays unique because nc grows.
    """

    username: str
    password: str = field(repr=False)
    cnonce: Callable[[], str] = field(default=_new_cnonce, repr=False)
    last: Challenge | None = None  # the latest challenge answered, for preemptive credentials
    _uses: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False, init=False)

    def authorize(self, challenge: Challenge, method: str, uri: str) -> AuthHeader:
        previous = self._uses.pop(challenge.nonce, None)
        cnonce, used = previous if previous is not None else (self.cnonce(), 0)
        self._uses[challenge.nonce] = (cnonce, used + 1)
        while len(self._uses) > 8:  # old nonces are dead; keep the map small
            del self._uses[next(iter(self._uses))]
        self.last = challenge
        value = authorization(
            challenge,
            username=self.username,
            password=self.password,
            method=method,
            uri=uri,
            cnonce=cnonce,
            nc=used + 1,
        )
        return AuthHeader(challenge.header_name, value, challenge.realm, challenge.nonce)

    def preemptive(self, method: str, uri: str) -> AuthHeader | None:
        """Credentials for the latest nonce with the next nc (RFC 3261 §22.3: a UAC may reuse
        them); a server that expired the nonce answers 401 with stale=true."""
        if self.last is None:
            return None
        return self.authorize(self.last, method, uri)


def with_credentials(request: SipRequest, auth: list[AuthHeader]) -> SipRequest:
    """`request` resent with credentials (RFC 3261 §22.2): same Call-ID, From and To, CSeq + 1,
    a new Via branch (a new transaction), and `auth` in place of any earlier answers."""
    vias = request.vias
    top = vias[0].with_params(branch=new_branch())
    headers = replace_top_via(request.headers, [top, *vias[1:]])
    for name in _AUTH_HEADERS:
        headers = headers.remove(name)
    cseq = request.cseq
    headers = headers.set("CSeq", f"{cseq.number + 1} {cseq.method}")
    for item in auth:
        headers = headers.add(item.name, item.value)
    return SipRequest(request.method, request.uri, headers, request.body, request.version)
