"""UAS request validation (RFC 3261 §8.2) and answers to malformed requests (RFC 4475)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from callbridge.sip.message import (
    MAGIC_COOKIE,
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    new_tag,
)
from callbridge.sip.uri import UriParseError

_RFC3261_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER")
_EXTENSION_METHODS = (
    "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
)  # fmt: skip
# Stable order for Allow headers: the usual order, then anything else alphabetically.
_METHOD_ORDER = {m: i for i, m in enumerate(_RFC3261_METHODS + _EXTENSION_METHODS)}


@dataclass(frozen=True, slots=True)
class UasPolicy:
    allowed_methods: frozenset[str] = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"})
    known_methods: frozenset[str] = frozenset(_RFC3261_METHODS + _EXTENSION_METHODS)
    supported_extensions: frozenset[str] = frozenset()  # option tags for Require (§8.2.2.3)
    accepted_content_types: frozenset[str] = frozenset({"application/sdp"})
    accepted_encodings: frozenset[str] = frozenset({"identity"})
    uri_schemes: frozenset[str] = frozenset({"sip"})  # "sips" only with TLS
    # RFC 4475 §3.3.11: an endpoint processes Max-Forwards: 0 normally; only a proxy answers
    # 483. Set this when the element should behave like a proxy for that check.
    reject_zero_max_forwards: bool = False


# The headers a UAS needs to answer at all (§8.1.1); Max-Forwards is checked separately.
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
# Headers that carry exactly one value (RFC 4475 §3.3.8 multi01, §3.3.9 mcl01).
_SINGLE_VALUE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type")
# "SIP/2.0/UDP host" at the start of the top Via is enough to route a response (§18.2.2).
_USABLE_VIA_RE = re.compile(
    r"[ \t]*SIP[ \t]*/[ \t]*[0-9.]+[ \t]*/[ \t]*[A-Za-z]+[ \t]+[\[A-Za-z0-9]"
)


def _allow(policy: UasPolicy) -> str:
    return ", ".join(sorted(policy.allowed_methods, key=lambda m: (_METHOD_ORDER.get(m, 99), m)))


def _reply(
    request: SipRequest, status: int, reason: str | None = None, **headers: str
) -> SipResponse:
    extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
    return make_response(request, status, reason, to_tag=new_tag(), headers=extra)


def _safe_reason(text: str) -> str:
    # The reason phrase is a single line of text (§25.1); never echo control characters.
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:100]


def reject_malformed(data: bytes, error: SipParseError) -> SipResponse | None:
    """400 with the reason, built from error.partial (needs at least Via, From, To, Call-ID,
    CSeq to be answerable, §8.2 / RFC 4475 §3.1.2); None when unanswerable (a malformed
    *response*, an ACK, or no usable Via)."""
    request = error.partial
    if request is None or data.lstrip(b"\r\n").startswith(b"SIP/"):
        return None
    # §17.1.1.3: an ACK is never answered, even a broken one.
    if request.method.upper() == "ACK":
        return None
    headers = request.headers
    if any(headers.get(name) is None for name in _MANDATORY):
        return None
    vias = headers.get_all("Via")
    if not vias or _USABLE_VIA_RE.match(vias[0]) is None:
        return None
    return make_response(request, 400, _safe_reason(error.reason), to_tag=new_tag())


def _accepts(accept_values: list[str], media_type: str) -> bool:
    major = media_type.split("/", 1)[0]
    for entry in accept_values:
        candidate = entry.split(";", 1)[0].strip().lower().replace(" ", "")
        if candidate in (media_type, f"{major}/*", "*/*"):
            return True
    return False


_DEFAULT_POLICY = UasPolicy()


def check_request(request: SipRequest, policy: UasPolicy = _DEFAULT_POLICY) -> SipResponse | None:
    """The §8.2 checks in order; returns the error response, or None when the request may be
    processed. ACK is never answered."""
    if request.method.upper() == "ACK":
        return None
    headers = request.headers

    # RFC 4475 §3.1.2.16: a version we don't speak gets 505.
    if request.version.upper() != "SIP/2.0":
        return _reply(request, 505)

    # Requests that cannot be processed at all: missing mandatory headers (RFC 4475 insuf).
    missing = [name for name in _MANDATORY if name not in headers]
    if "Max-Forwards" not in headers and _is_rfc3261(request):
        # RFC 2543 peers (no magic cookie) never sent Max-Forwards (RFC 4475 §3.4 inv2543).
        missing.append("Max-Forwards")
    if missing:
        return _reply(request, 400, "Missing " + ", ".join(missing))
    for name in _SINGLE_VALUE:
        if headers.count(name) > 1:
            return _reply(request, 400, f"Multiple {name} values")
    try:
        cseq = request.cseq
        request.vias  # noqa: B018 - parsed for its validation side effect
        request.from_  # noqa: B018
        request.to  # noqa: B018
        max_forwards = request.max_forwards
    except SipParseError as exc:
        return _reply(request, 400, _safe_reason(exc.reason))
    # RFC 4475 §3.1.2.17/18: the CSeq method must match the request method.
    if cseq.method != request.method:
        return _reply(request, 400, "CSeq method does not match request method")

    if policy.reject_zero_max_forwards and max_forwards == 0:
        return _reply(request, 483)

    # §8.2.1 method inspection.
    if request.method not in policy.allowed_methods:
        status = 405 if request.method in policy.known_methods else 501
        return _reply(request, status, Allow=_allow(policy))

    # §8.2.2.1: Request-URI scheme.
    scheme = request.uri.split(":", 1)[0].lower() if ":" in request.uri else ""
    if scheme not in policy.uri_schemes:
        return _reply(request, 416)
    if scheme in ("sip", "sips"):
        try:
            request.request_uri  # noqa: B018
        except UriParseError:
            return _reply(request, 400, "Malformed Request-URI")

    # §8.2.2.3: Require (never applied to CANCEL, whose Require is ignored per §9.1).
    if request.method != "CANCEL":
        supported = {tag.lower() for tag in policy.supported_extensions}
        unsupported = [t for t in headers.get_all("Require") if t.lower() not in supported]
        if unsupported:
            return _reply(request, 420, Unsupported=", ".join(unsupported))

    # §8.2.3: content processing.
    if request.body:
        content_type = request.content_type
        if content_type is None:
            # §20.15: Content-Type MUST be present with a non-empty body.
            return _reply(request, 400, "Missing Content-Type")
        accepted = {t.lower() for t in policy.accepted_content_types}
        if content_type not in accepted:
            return _reply(request, 415, Accept=", ".join(sorted(accepted)))
    encodings = {e.lower() for e in policy.accepted_encodings} | {"identity"}
    if any(e.lower() not in encodings for e in headers.get_all("Content-Encoding")):
        return _reply(
            request,
            415,
            Accept=", ".join(sorted(policy.accepted_content_types)),
            Accept_Encoding=", ".join(sorted(encodings)),
        )

    # §8.2.6 / RFC 4475 §3.3.14 (sdp01): we can only answer INVITE/OPTIONS with SDP.
    if request.method in ("INVITE", "OPTIONS") and "Accept" in headers:
        accept = headers.get_all("Accept")
        if not _accepts(accept, "application/sdp"):
            return _reply(request, 406, Accept="application/sdp")
    return None


def _is_rfc3261(request: SipRequest) -> bool:
    """Whether the sender is an RFC 3261 element: its top Via branch has the magic cookie."""
    try:
        branch = request.vias[0].branch
    except SipParseError:
        return True
    return branch is not None and branch.startswith(MAGIC_COOKIE)
