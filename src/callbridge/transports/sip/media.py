"""Every SDP offer/answer of one SIP call, in one place (RFC 3264). Sans-IO.

The transport hands it the SDP bodies the user agent reports (INVITE, ACK, re-INVITE, 183,
200) and sends what it returns; the leg applies the MediaPlans it returns to its RTP session.
Nothing else in the transports reads or writes SDP.

    inbound   INVITE with offer -> Reply(answer, plan)           the 200 answers (§5, §6)
              INVITE without    -> Reply(our offer, None), ACK -> plan (RFC 3261 §13.2.1)
              re-INVITE         -> Reply(answer, plan) | Refuse   hold, resume, new codec (§8)
    outbound  offer() for the INVITE; 183 SDP -> early plan; 200 SDP -> plan (§5, §6)
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.sdp.offer_answer import (
    Codec,
    LocalMedia,
    MediaPlan,
    NoCommonCodec,
    apply_answer,
    create_answer,
    create_offer,
)
from callbridge.sdp.session import SdpError, SessionDescription
from callbridge.sdp.session import parse as parse_sdp

__all__ = ["Refuse", "Reply", "SipMedia", "Unusable"]


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the request with a 2xx carrying `sdp`; apply `plan` now (None: our SDP is an
    offer, the ACK brings the answer)."""

    sdp: bytes
    plan: MediaPlan | None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the request with this error status; the media stays as it was."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unusable:
    """The peer's answer cannot be used. `reason` is the call's end reason where the call
    cannot go on; `error` says what was wrong with the SDP ("" if there was none)."""

    reason: str
    error: str = ""


def _refusal(exc: SdpError) -> Refuse:
    # RFC 3264 §6: no codec in common is 488; an offer we cannot read is a bad request (400).
    return Refuse(488 if isinstance(exc, NoCommonCodec) else 400, str(exc))


class SipMedia:
    """One call's offer/answer state: our media address and codecs, the offer of ours still
    waiting for its answer, and whether early media was already applied."""

    def __init__(self, address: str, port: int, codecs: tuple[Codec, ...]) -> None:
        self.address = address
        self.port = port
        self.codecs = codecs
        self._offer: SessionDescription | None = None  # ours, until its answer came
        self._sent_offer: SessionDescription | None = None  # the outbound INVITE's
        self._early = False

    def local(self) -> LocalMedia:
        # A fresh description per SDP we send (new o= session id), as the transport always
        # did; RFC 3264 §8 would keep the o= line and bump its version.
        return LocalMedia(address=self.address, port=self.port, codecs=self.codecs)

    @property
    def awaiting_answer(self) -> bool:
        return self._offer is not None

    # ---- inbound -----------------------------------------------------------------------------

    def answer_invite(self, body: bytes) -> Reply | Refuse:
        """The initial INVITE. Raises only what is not about SDP (a bug: the caller answers 500)."""
        if not body:
            # RFC 3261 §13.2.1: no offer in the INVITE, so the 2xx carries ours, the ACK answers.
            return self._offer_ours()
        try:
            answer, plan = create_answer(parse_sdp(body), self.local())
        except SdpError as exc:
            return _refusal(exc)
        return Reply(bytes(answer), plan)

    def ack(self, body: bytes | None) -> MediaPlan | Unusable | None:
        """The first ACK: the answer to the offer in our 2xx, if we made one (§13.2.1)."""
        offer = self._offer
        if offer is None:
            return None
        if not body:
            return Unusable("no_sdp_answer")
        try:
            plan = apply_answer(offer, parse_sdp(body))
        except SdpError as exc:
            return Unusable("bad_sdp", str(exc))
        self._offer = None
        return plan

    def answer_reinvite(self, body: bytes) -> Reply | Refuse:
        """A re-INVITE (RFC 3264 §8): hold (§8.4), resume, a new address or codec. `body` is
        the request's SDP (b"" when it had none)."""
        if not body:
            # An offerless re-INVITE: we offer what we have (RFC 3261 §14.1), the ACK would answer.
            return self._offer_ours()
        try:
            answer, plan = create_answer(parse_sdp(body), self.local())
        except SdpError as exc:  # RFC 3261 §14.2: a refused offer leaves the session as it was
            return _refusal(exc)
        return Reply(bytes(answer), plan)

    def _offer_ours(self) -> Reply:
        self._offer = create_offer(self.local())
        return Reply(bytes(self._offer), None)

    # ---- outbound ----------------------------------------------------------------------------

    def offer(self) -> bytes:
        """The offer for our INVITE (RFC 3264 §5)."""
        self._sent_offer = create_offer(self.local())
        return bytes(self._sent_offer)

    @property
    def early(self) -> bool:
        """Whether a 183's answer was applied (early media flows)."""
        return self._early

    def early_answer(self, body: bytes) -> MediaPlan | Unusable | None:
        """A provisional response's SDP: the early media's plan (None: already applied by an
        earlier 183, the media flows; Unusable: refused, the call goes on without it)."""
        if self._early:
            return None
        plan = self._apply(body)
        if isinstance(plan, MediaPlan):
            self._early = True
        return plan

    def final_answer(self, body: bytes) -> MediaPlan | Unusable:
        """The 2xx's SDP: the answer to our offer (§6); it replaces any early plan."""
        return self._apply(body)

    def _apply(self, body: bytes) -> MediaPlan | Unusable:
        if self._sent_offer is None:
            raise RuntimeError("no offer was made: call offer() first")
        try:
            return apply_answer(self._sent_offer, parse_sdp(body))
        except SdpError as exc:
            return Unusable("bad_sdp", str(exc))
