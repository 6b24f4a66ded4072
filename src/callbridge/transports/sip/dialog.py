"""One SIP call's glue: its UA call, its media negotiator and its leg.

The transport routes the user agent's events for a call here; the leg sees this object only
as its narrow `SipDialogHandle` (hang up, REFER, closed). Offer/answer is asked of the
negotiator (transports.sip_media) and its plans are handed to the leg.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from callbridge.core.log import event
from callbridge.sdp.offer_answer import Codec, MediaPlan
from callbridge.sip.endpoint import SipEndpoint
from callbridge.sip.refer import TransferFailed, TransferProgress, TransferSucceeded
from callbridge.sip.ua import UaError, UserAgent
from callbridge.transports.sip.leg import NO_DIALOG, SipDialogHandle, SipLeg
from callbridge.transports.sip.media import Refuse, Reply, SipMedia, Unusable

__all__ = ["SipDialog"]

log = logging.getLogger("callbridge.transports.sip.transport")


class SipDialog:
    """Implements SipDialogHandle for one leg; reacts to the UA's events for its call."""

    def __init__(
        self,
        *,
        ua: UserAgent,
        endpoint: SipEndpoint,
        ua_call: str,
        local_host: str,
        codecs: tuple[Codec, ...],
        leg: Callable[[SipDialogHandle], SipLeg],
        forget: Callable[[SipDialog], None],
    ) -> None:
        self.ua = ua
        self.endpoint = endpoint
        self.ua_call = ua_call  # "" until an outbound INVITE is placed
        self.local_host = local_host
        self.codecs = codecs
        self._forget = forget
        self.media: SipMedia | None = None  # once the RTP ports are open
        # Outbound, until the answer: who hears early media (a 183 with SDP).
        self.on_early: Callable[[SipLeg], None] | None = None
        self.leg = leg(self)

    async def open_media(self) -> SipMedia:
        """Bind the leg's RTP ports; the negotiator then knows our media address."""
        port = await self.leg.open_media()
        self.media = SipMedia(self.local_host, port, self.codecs)
        return self.media

    # ---- SipDialogHandle (what the leg asks) -------------------------------------------------

    def hangup(self) -> bool:
        cid, ua = self.ua_call, self.ua
        self.endpoint.run(lambda now: ua.hangup(cid, now))
        return ua.bye_sent(cid)

    def refer(self, target: str) -> str:
        cid, ua = self.ua_call, self.ua
        try:
            refer_to = ua.refer_target(cid, target)
            self.endpoint.run(lambda now: ua.refer(cid, refer_to, now))
        except UaError as exc:
            raise ValueError(str(exc)) from None
        return refer_to

    def closed(self) -> None:
        self._forget(self)

    # ---- the UA's events for this call -------------------------------------------------------

    def confirmed(self, sdp: bytes | None) -> None:
        """The first ACK: it answers the offer our 2xx made, if we made one."""
        if self.media is None:
            return
        match self.media.ack(sdp):
            case MediaPlan() as plan:
                self.leg.apply_plan(plan)
            case Unusable(reason=reason, error=error):
                if error:
                    event(log, "call.bad_answer", logging.WARNING, error=error)
                self.leg.request_hangup(reason)
            case None:
                pass

    def reinvite(self, body: bytes) -> None:
        """A re-INVITE's offer (b"" for none): apply the plan, then answer."""
        cid, ua = self.ua_call, self.ua
        if self.media is None:  # cannot happen: a dialog exists only after media was set up
            self.endpoint.run(lambda now: ua.answer_reinvite(cid, None, now, status=500))
            return
        match self.media.answer_reinvite(body):
            case Reply(sdp=sdp, plan=plan):
                if plan is not None:
                    self.leg.apply_plan(plan)
                self.endpoint.run(lambda now: ua.answer_reinvite(cid, sdp, now))
            case Refuse(status=status):
                self.endpoint.run(lambda now: ua.answer_reinvite(cid, None, now, status=status))

    def progress(self, status: int, reason: str, sdp: bytes) -> None:
        """A provisional response to our INVITE; a 183's SDP starts early media if wanted."""
        leg = self.leg
        event(log, "call.progress", call_id=leg.info.ids.get("call_id"), status=status,
              reason=reason, early_media=bool(sdp))  # fmt: skip
        listener = self.on_early
        if not sdp or listener is None or self.media is None:
            return
        match self.media.early_answer(sdp):
            case MediaPlan() as plan:
                leg.apply_plan(plan)
                leg.start_early_media()
                listener(leg)
            case Unusable(error=error):
                event(log, "call.early_media_refused", logging.WARNING, reason=error)
            case None:
                pass  # a second 183: the media is already flowing

    def ended(self, reason: str, status: int | None) -> None:
        self.leg.ended_by_signalling(reason, status)

    def transfer(self, ev: TransferProgress | TransferSucceeded | TransferFailed) -> None:
        self.leg.transfer_event(ev)

    # ---- a call that never became one ------------------------------------------------------------

    def release(self) -> None:
        """An incoming call refused while it was set up: the ports go back, the entry goes;
        the transport answers the INVITE."""
        self.leg.close_media()
        self.leg.dialog = NO_DIALOG  # no cycle left: the leg goes when the transport forgets it
        self._forget(self)

    def abandon(self, reason: str) -> None:
        """Undo all of it: the UA call (CANCEL, or BYE after an unusable answer; nothing if it
        already ended), the leg and its early media, the RTP ports, the transport's entry."""
        self.on_early = None
        cid, ua = self.ua_call, self.ua
        if cid:
            self.endpoint.run(lambda now: ua.hangup(cid, now))
        self.leg.abandon(reason)
        self.leg.close_media()  # also when the ports opened after the leg ended
        self._forget(self)
