"""SIP dialogs (RFC 3261 §12): state shared by the two UAs of a call, and in-dialog requests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from callbridge.sip.message import Headers, SipRequest, SipResponse, Via, make_response
from callbridge.sip.uri import NameAddr, SipUri

# RFC 3261 §12.2 (INVITE), RFC 3311 (UPDATE), RFC 6665 (SUBSCRIBE/NOTIFY), RFC 3515 (REFER).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

# RFC 3261 §19.1.1 Table 1: `method` and URI headers are not allowed in a Request-URI.
_NOT_IN_REQUEST_URI = frozenset({"method"})

DialogId = tuple[str, str, str]


def _sip_uri(addr: NameAddr, what: str) -> SipUri:
    if not isinstance(addr.uri, SipUri):
        raise ValueError(f"{what} is not a sip:/sips: URI: {addr.uri}")
    return addr.uri


def _record_route(message: SipRequest | SipResponse, *, reverse: bool = False) -> list[NameAddr]:
    """The route set from Record-Route (§12.1.1 in order, §12.1.2 reversed). Its first entry is
    where every in-dialog request goes (§12.2.1.1), so it must be a SIP URI: checked here,
    when the dialog forms and a bad INVITE can still get its 400, not at the first BYE."""
    routes = [NameAddr.parse(v) for v in message.headers.get_all("Record-Route")]
    if reverse:
        routes.reverse()
    if routes:
        _sip_uri(routes[0], "first Record-Route")
    return routes


def _first_contact(message: SipRequest | SipResponse, what: str) -> NameAddr:
    contacts = message.contacts
    if not contacts:
        raise ValueError(f"{what} has no Contact; it cannot establish a dialog (§12.1)")
    return contacts[0]


@dataclass(slots=True)
class Dialog:
    """One dialog, seen from our side. Mutable: sequence numbers and the remote target move."""

    call_id: str
    local_tag: str
    remote_tag: str  # "" when the peer sent no tag (RFC 2543 compatibility, §12.1.1)
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: SipUri
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0  # 0 = "empty" (§12.1.1); the first request we send then uses CSeq 1
    remote_seq: int | None = None
    local_contact: NameAddr | None = None

    @property
    def id(self) -> DialogId:
        return self.call_id, self.local_tag, self.remote_tag

    # --- creation --------------------------------------------------------------------------

    @classmethod
    def from_uas(cls, invite: SipRequest, local_tag: str, local_contact: NameAddr) -> Dialog:
        """§12.1.1: the dialog a UAS creates when it answers `invite` (1xx with tag or 2xx).

        Raises ValueError when no dialog can be formed (e.g. a tel: Contact).
        """
        # An RFC 2543 INVITE may lack Contact (RFC 4475 §3.4 inv2543): the From address is
        # then where the caller can be reached, as RFC 2543 intended.
        contact = invite.contacts[0] if invite.contacts else invite.from_
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_.tag or "",
            local_uri=_untagged(invite.to),
            remote_uri=_untagged(invite.from_),
            remote_target=_sip_uri(contact, "INVITE Contact"),
            # §12.1.1: Record-Route in the order it appears in the request.
            route_set=_record_route(invite),
            local_seq=0,
            remote_seq=invite.cseq.number,
            local_contact=local_contact,
        )

    @classmethod
    def from_uac(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """§12.1.2: the dialog a UAC creates from a 1xx-with-tag or 2xx to its `invite`."""
        contact = _first_contact(response, "response")
        contacts = invite.contacts
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_uri=_untagged(invite.from_),
            remote_uri=_untagged(invite.to),
            remote_target=_sip_uri(contact, "response Contact"),
            # §12.1.2: Record-Route in reverse order, so our first hop comes first.
            route_set=_record_route(response, reverse=True),
            local_seq=invite.cseq.number,
            remote_seq=None,
            local_contact=contacts[0] if contacts else None,
        )

    # --- requests we send ------------------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
        via: Via,
    ) -> tuple[SipRequest, SipUri]:
        """§12.2.1.1: an in-dialog request and the URI of its next hop (to resolve and send to).

        CSeq advances for every method but ACK and CANCEL, which reuse the number of the request
        they belong to. Contact is added to target refresh requests when we know ours.
        """
        if method in ("ACK", "CANCEL"):
            cseq = self.local_seq
        else:
            self.local_seq += 1
            cseq = self.local_seq
        contact = self.local_contact if method in TARGET_REFRESH_METHODS else None
        return self._build(
            method,
            cseq,
            via,
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
            contact=contact,
        )

    def create_ack(
        self,
        invite_cseq: int,
        via: Via,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> tuple[SipRequest, SipUri]:
        """§13.2.2.4: ACK for a 2xx: built like any in-dialog request, but with the INVITE's CSeq
        number (method ACK) and a fresh `via` branch; local_seq is left alone."""
        return self._build(
            "ACK",
            invite_cseq,
            via,
            body=body,
            content_type=content_type,
            extra_headers=(),
            contact=None,
        )

    def _build(
        self,
        method: str,
        cseq: int,
        via: Via,
        *,
        body: bytes,
        content_type: str | None,
        extra_headers: Sequence[tuple[str, str]],
        contact: NameAddr | None,
    ) -> tuple[SipRequest, SipUri]:
        if body and content_type is None:
            raise ValueError("a body needs a content_type")
        request_uri, routes, next_hop = self._routing()
        items: list[tuple[str, str]] = [("Via", str(via)), ("Max-Forwards", "70")]
        items.extend(("Route", str(r)) for r in routes)
        items.append(("From", str(self.local_uri.with_tag(self.local_tag))))
        to = self.remote_uri.with_tag(self.remote_tag) if self.remote_tag else self.remote_uri
        items.append(("To", str(to)))
        items.append(("Call-ID", self.call_id))
        items.append(("CSeq", f"{cseq} {method}"))
        extra_names = {name.lower() for name, _ in extra_headers}
        if contact is not None and "contact" not in extra_names and "m" not in extra_names:
            items.append(("Contact", str(contact)))
        items.extend(extra_headers)
        if content_type is not None:
            items.append(("Content-Type", content_type))
        request = SipRequest(method, str(request_uri), Headers(tuple(items)), body)
        return request, next_hop

    def _routing(self) -> tuple[SipUri, list[NameAddr], SipUri]:
        """§12.2.1.1 Request-URI and Route set, plus the next hop (§8.1.2)."""
        if not self.route_set:
            return self.remote_target, [], self.remote_target
        first = _sip_uri(self.route_set[0], "first Route")
        if first.has_param("lr"):
            # Loose routing: Request-URI is the remote target, Route is the route set as is.
            return self.remote_target, list(self.route_set), first
        # Strict routing: the strict router goes into the Request-URI (minus parameters a
        # Request-URI may not carry) and the remote target becomes the last Route entry; the
        # request is sent to that router.
        request_uri = replace(
            first,
            params=tuple((n, v) for n, v in first.params if n.lower() not in _NOT_IN_REQUEST_URI),
            headers=(),
        )
        routes = [*self.route_set[1:], NameAddr(self.remote_target)]
        return request_uri, routes, first

    # --- requests we receive ---------------------------------------------------------------

    def check_remote_request(self, request: SipRequest) -> SipResponse | None:
        """§12.2.2: in-dialog request from the peer. Returns the error response to send (500 for
        an out-of-order CSeq) or None after updating remote_seq and, for target refresh
        requests, the remote target."""
        if request.method in ("ACK", "CANCEL"):
            # They carry the CSeq number of the request they belong to, not a new one.
            return None
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return make_response(request, 500)
        self.remote_seq = number
        if request.method in TARGET_REFRESH_METHODS:
            self._refresh_target(request)
        return None

    def on_target_refresh_response(self, response: SipResponse) -> None:
        """§12.2.1.2: a 2xx to our target refresh request carries the peer's new Contact."""
        if 200 <= response.status < 300 and response.cseq.method in TARGET_REFRESH_METHODS:
            self._refresh_target(response)

    def _refresh_target(self, message: SipRequest | SipResponse) -> None:
        contacts = message.contacts
        if contacts and isinstance(contacts[0].uri, SipUri):
            self.remote_target = contacts[0].uri


def _untagged(addr: NameAddr) -> NameAddr:
    return replace(addr, params=tuple((n, v) for n, v in addr.params if n.lower() != "tag"))


def dialog_id_for_incoming(request: SipRequest) -> DialogId:
    """The id (call_id, local tag, remote tag) of the dialog an incoming request belongs to: our
    tag is in To, the peer's in From (§12.2.2)."""
    return request.call_id, request.to.tag or "", request.from_.tag or ""


def dialog_id_for_response(response: SipResponse) -> DialogId:
    """The id of the dialog a response to one of our requests belongs to (UAC view, §12.1.2)."""
    return response.call_id, response.from_.tag or "", response.to.tag or ""
