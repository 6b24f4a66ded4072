"""X-Twilio-Signature: is this request (webhook or WebSocket upgrade) really from Twilio?

Twilio signs each request with the account's auth token: base64(HMAC-SHA1(token, url + the
POST parameters sorted by name, each name followed by its value)). The URL is the one Twilio
requested, i.e. the public one: behind a proxy the caller must rebuild it from configuration,
not from the request it sees. Twilio is not consistent about the port, so a signature over the
URL without its port or with the scheme's default port is accepted (as twilio-python does).
JSON bodies are not parameters: Twilio then adds `bodySHA256=<hex sha256 of the body>` to the
query and signs the URL alone. A WebSocket upgrade is signed over its wss:// URL, no params.

Pure functions; `hmac.compare_digest` keeps the comparison constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = [
    "SIGNATURE_HEADER",
    "Params",
    "SignatureCheck",
    "body_sha256",
    "compute_signature",
    "url_variants",
    "verify",
]

SIGNATURE_HEADER = "X-Twilio-Signature"
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}

Params = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    ok: bool
    reason: str = ""  # why not, for the log line

    def __bool__(self) -> bool:
        return self.ok


def _pairs(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    if isinstance(params, Mapping):
        return [(str(k), str(v)) for k, v in params.items()]
    return [(str(k), str(v)) for k, v in params]


def compute_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """The signature Twilio sends for `url` with form `params` (repeated names allowed)."""
    by_name: dict[str, set[str]] = {}
    for name, value in _pairs(params):
        by_name.setdefault(name, set()).add(value)
    # Names in sorted order, each with its values sorted (twilio-python's rule for repeats).
    data = url + "".join(
        name + value for name in sorted(by_name) for value in sorted(by_name[name])
    )
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def body_sha256(body: bytes) -> str:
    """The hex digest Twilio puts in the `bodySHA256` query parameter of a JSON webhook."""
    return hashlib.sha256(body).hexdigest()


def _host(netloc: str) -> tuple[str, str]:
    """(userinfo@, host) of a netloc, the host keeping IPv6 brackets, the port removed."""
    userinfo, _, hostport = netloc.rpartition("@")
    prefix = f"{userinfo}@" if userinfo else ""
    if hostport.startswith("["):
        return prefix, hostport[: hostport.find("]") + 1]
    return prefix, hostport.split(":", 1)[0]


def _same(a: str, b: str) -> bool:
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header can hold anything.
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def url_variants(url: str) -> list[str]:
    """`url` as given, without its port, and with the scheme's default port."""
    parts = urlsplit(url)
    prefix, host = _host(parts.netloc)
    out = [url, urlunsplit(parts._replace(netloc=prefix + host))]
    if parts.port is None and parts.scheme in _DEFAULT_PORTS:
        port = _DEFAULT_PORTS[parts.scheme]
        out.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}")))
    return list(dict.fromkeys(out))


def verify(
    auth_token: str,
    url: str,
    signature: str | None,
    params: Params | None = None,
    body: bytes | None = None,
) -> SignatureCheck:
    """Check `signature` (the X-Twilio-Signature header) for a request to public `url`.

    Form webhooks pass their parameters; JSON webhooks pass the raw `body` (its hash must match
    the `bodySHA256` query parameter); a WebSocket upgrade passes neither.
    """
    if not auth_token:
        return SignatureCheck(False, "no auth token configured")
    if not signature:
        return SignatureCheck(False, f"missing {SIGNATURE_HEADER} header")
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    if "bodySHA256" in query:
        if body is None or not _same(body_sha256(body), query["bodySHA256"]):
            return SignatureCheck(False, "body does not match its bodySHA256")
        params = None  # the body is covered by its hash, the signature by the URL alone
    for candidate in url_variants(url):
        if _same(compute_signature(auth_token, candidate, params), signature):
            return SignatureCheck(True)
    return SignatureCheck(False, "signature mismatch (check public_url and the auth token)")
