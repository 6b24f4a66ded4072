"""SIP digest authentication, server side (RFC 3261 §22.1 and §22.4, RFC 7616, RFC 8760).
Sans-IO: the time comes in as an argument.

Nonces are stateless: the issue time and an HMAC of it under a per-process secret, so any
nonce we issued is recognised without a table, and one older than `nonce_ttl` is answered
with a fresh challenge marked `stale=true` (RFC 7616 §3.3: the client retries without asking
its user). Each challenge offers SHA-256 first, then MD5 for older phones (RFC 8760 §2.4:
one WWW-Authenticate per algorithm, most preferred first), both with qop=auth.

Replays (RFC 7616 §5.9): credentials must use qop=auth, whose nonce count the client raises
with each request on a nonce. The highest count seen per nonce is kept (bounded, oldest
forgotten first); a request that does not raise it is a replay, or a client out of step, and
is challenged again (stale), which only someone with the password can answer.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from callbridge.sip.digest import (
    DigestError,
    canonical_algorithm,
    digest_params,
    digest_response,
)
from callbridge.sip.grammar import quote

__all__ = ["AuthOutcome", "AuthResult", "Credentials", "DigestServer", "parse_credentials"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """One Authorization / Proxy-Authorization value (RFC 3261 §25.1 `credentials`)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""
    opaque: str | None = None


def parse_credentials(value: str) -> Credentials:
    p = digest_params(value, "credentials")  # UnsupportedChallenge (a DigestError) for Basic
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise DigestError(f"credentials without {', '.join(missing)}")
    algorithm = canonical_algorithm(p.get("algorithm", "MD5"))
    if algorithm is None:
        raise DigestError(f"algorithm {p['algorithm']!r}")
    qop = p.get("qop", "").lower()
    if qop not in ("", "auth"):
        raise DigestError(f"qop {qop!r}")
    if qop and not ("nc" in p and "cnonce" in p):
        raise DigestError("qop without nc and cnonce")  # RFC 7616 §3.4
    return Credentials(
        username=p["username"], realm=p["realm"], nonce=p["nonce"], uri=p["uri"],
        response=p["response"].lower(), algorithm=algorithm, qop=qop, nc=p.get("nc", ""),
        cnonce=p.get("cnonce", ""), opaque=p.get("opaque"),
    )  # fmt: skip


class AuthOutcome(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge (401)
    STALE = "stale"  # right password, expired nonce: challenge again with stale=true (401)
    FAILED = "failed"  # unknown user, wrong password, a nonce we never issued: 403


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    username: str = ""
    reason: str = ""


class DigestServer:
    """Challenges and checks requests for one realm and a fixed set of users."""

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str],
        *,
        secret: bytes | None = None,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        max_tracked: int = 10_000,
    ) -> None:
        self.realm = realm
        self.users = dict(users)
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.nonce_ttl = nonce_ttl
        self.algorithms = tuple(algorithms)
        self._counts: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.max_tracked = max_tracked

    def nonce(self, now: float) -> str:
        stamp = f"{int(now):x}"
        mac = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp}.{mac}"

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since we issued `nonce`; None when we did not issue it."""
        stamp, _, mac = nonce.partition(".")
        want = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, want):
            return None
        try:
            return now - int(stamp, 16)
        except ValueError:
            return None

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate values for a 401, one per algorithm (RFC 8760 §2.4)."""
        nonce = self.nonce(now)
        tail = ", stale=true" if stale else ""
        return [
            f"Digest realm={quote(self.realm)}, nonce={quote(nonce)}, algorithm={alg}, "
            f'qop="auth"{tail}'
            for alg in self.algorithms
        ]

    def check(self, method: str, authorizations: Sequence[str], now: float) -> AuthResult:
        """Judge a request by its Authorization values (RFC 3261 §22.4)."""
        ours: list[Credentials] = []
        for value in authorizations:
            try:
                creds = parse_credentials(value)
            except DigestError as exc:
                return AuthResult(AuthOutcome.FAILED, reason=f"malformed credentials: {exc}")
            if creds.realm == self.realm:
                ours.append(creds)
        if not ours:
            return AuthResult(AuthOutcome.MISSING)
        creds = ours[0]
        password = self.users.get(creds.username)
        if password is None:
            return AuthResult(AuthOutcome.FAILED, creds.username, "unknown user")
        if creds.algorithm not in self.algorithms:
            return AuthResult(AuthOutcome.FAILED, creds.username, "algorithm not offered")
        age = self._nonce_age(creds.nonce, now)
        if age is None or age < -5:
            return AuthResult(AuthOutcome.FAILED, creds.username, "a nonce we did not issue")
        expected = digest_response(
            algorithm=creds.algorithm, username=creds.username, password=password,
            realm=self.realm, method=method, uri=creds.uri, nonce=creds.nonce,
            cnonce=creds.cnonce, nc=creds.nc, qop=creds.qop,
        )  # fmt: skip
        if not hmac.compare_digest(expected, creds.response):
            return AuthResult(AuthOutcome.FAILED, creds.username, "wrong password")
        if age > self.nonce_ttl:
            return AuthResult(AuthOutcome.STALE, creds.username, "nonce expired")
        if not creds.qop:
            # RFC 2069 style answers carry no count: nothing tells a replay from a retry.
            return AuthResult(AuthOutcome.FAILED, creds.username, "qop=auth required")
        count = int(creds.nc, 16) if _is_hex(creds.nc) else 0
        if count <= self._counts.get(creds.nonce, 0):
            return AuthResult(AuthOutcome.STALE, creds.username, "nonce count not raised")
        self._counts[creds.nonce] = count
        self._counts.move_to_end(creds.nonce)
        while len(self._counts) > self.max_tracked:
            self._counts.popitem(last=False)
        return AuthResult(AuthOutcome.OK, creds.username)


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)
