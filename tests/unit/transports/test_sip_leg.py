"""SipLeg on a fake RTP socket, a fake dialog handle and a fake clock: what arrives as RTP
reaches inputs(), what the agent plays leaves as RTP one packet per 20 ms tick, flush and
pause act on the next tick, RFC 4733 DTMF goes out ahead of queued audio, silence keeps an
idle line alive, a re-INVITE's hold (negotiated by transports.sip_media) becomes LegHold and
stops our RTP, and hang-up and transfer go through the handle. Also the negotiator's own
cases: late offer, refused re-INVITEs, early media, an unusable answer."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.events import DtmfDigit, LegHold, LegInput
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.core.ports import LegInfo, Rejection
from callbridge.observability.metrics import Metrics
from callbridge.rtp.dtmf import dtmf_packets
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.packet import RtpPacket, is_rtcp
from callbridge.rtp.rtcp_packets import Bye, parse_compound
from callbridge.sdp.offer_answer import PCMA, PCMU, LocalMedia, MediaPlan, create_answer
from callbridge.sdp.session import parse as parse_sdp
from callbridge.sip.message import SipRequest, make_response
from callbridge.sip.message import parse as parse_sip
from callbridge.sip.refer import TransferFailed, TransferSucceeded
from callbridge.testing import FakeClock, drain
from callbridge.transports.leg_base import TICK
from callbridge.transports.sip.leg import Receiver, SipLeg
from callbridge.transports.sip.media import Refuse, Reply, SipMedia, Unusable
from callbridge.transports.sip.transport import CallFailed, SipTransport, SipTransportConfig

Addr = tuple[str, int]
FAR: Addr = ("192.0.2.10", 30000)
START = 1000.0  # FakeClock's
SILENCE = ulaw_encode(bytes(2 * FRAME_SAMPLES))


class FakeWire:
    """The RTP/RTCP socket pair: records what is sent (with the fake time), delivers what
    the test says the far end sent."""

    def __init__(self, clock: FakeClock, on_rtp: Receiver, on_rtcp: Receiver) -> None:
        self.clock = clock
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.rtp: list[tuple[float, RtpPacket, Addr]] = []
        self.rtcp: list[tuple[float, bytes, Addr]] = []
        self.open_on: str | None = None
        self.closed = False

    async def open(self, host: str) -> int:
        self.open_on = host
        return 40000

    def send(self, data: bytes, addr: Addr) -> None:
        assert not self.closed, "sent on a closed socket"
        self.rtp.append((self.clock.now(), RtpPacket.parse(data), addr))

    def send_rtcp(self, data: bytes, addr: Addr) -> None:
        assert is_rtcp(data)
        self.rtcp.append((self.clock.now(), data, addr))

    def drain(self) -> int:
        return 0  # the test delivers packets itself

    def close(self) -> None:
        self.closed = True

    def audio(self) -> list[RtpPacket]:
        return [p for _, p, _ in self.rtp if p.payload_type != 101]


class FakeDialog:
    """The leg's SipDialogHandle. `bye`: whether a hang-up ends the session at once (a BYE
    went out) or the end comes back from signalling later (CANCEL of an early call)."""

    def __init__(self) -> None:
        self.bye = True
        self.hangups = 0
        self.refers: list[str] = []
        self.refer_error: str | None = None
        self.closed_count = 0

    def hangup(self) -> bool:
        self.hangups += 1
        return self.bye

    def refer(self, target: str) -> str:
        if self.refer_error is not None:
            raise ValueError(self.refer_error)
        self.refers.append(target)
        return f"sip:{target}@pbx.example"

    def closed(self) -> None:
        self.closed_count += 1


class Harness:
    def __init__(self, *, rtp_timeout: float = 30.0) -> None:
        self.clock = FakeClock(START)
        self.dialog = FakeDialog()
        self.wires: list[FakeWire] = []
        self.leg = SipLeg(
            info=LegInfo("sip", "inbound"),
            dialog=self.dialog,
            clock=self.clock,
            wire=self._wire,
            bind_host="127.0.0.1",
            jitter=JitterConfig(),
            rtp_timeout=rtp_timeout,
            name="ua-1",
        )
        self.inputs: list[LegInput] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ticked = 0

    def _wire(self, on_rtp: Receiver, on_rtcp: Receiver) -> FakeWire:
        wire = FakeWire(self.clock, on_rtp, on_rtcp)
        self.wires.append(wire)
        return wire

    @property
    def wire(self) -> FakeWire:
        return self.wires[0]

    async def start(self, plan: MediaPlan | None = None) -> None:
        assert await self.leg.open_media() == 40000
        self.leg.apply_plan(plan or sendrecv())
        self._tasks.append(asyncio.create_task(self.leg.run()))
        self._tasks.append(asyncio.create_task(self._collect()))
        await drain()

    async def _collect(self) -> None:
        async for item in self.leg.inputs():
            self.inputs.append(item)

    async def ticks(self, n: int) -> None:
        """Exactly n more media ticks: to just past each 20 ms boundary from the start (an
        absolute target, so float steps never lose a tick)."""
        for _ in range(n):
            done = math.floor((self.clock.now() - START) / TICK + 1e-3)
            self._ticked = max(self._ticked, done) + 1
            await self.clock.advance(START + self._ticked * TICK + 1e-6 - self.clock.now())
            await drain()

    async def close(self) -> None:
        self.leg.ended_by_signalling("remote_bye")
        await self.ticks(1)
        for task in self._tasks:
            assert task.done(), task
            task.result()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    if not harness.leg.ended:
        await harness.close()


def sendrecv(*, hold: bool = False, dtmf: int | None = 101) -> MediaPlan:
    return MediaPlan(FAR[0], FAR[1], PCMU, dtmf, 20, "recvonly" if hold else "sendrecv", hold)


def pcm(n: int) -> bytes:
    """A distinct frame that survives G.711 unchanged."""
    return ulaw_decode(ulaw_encode(struct.pack("<h", 100 * (n + 1)) * FRAME_SAMPLES))


def far_packet(i: int, payload: bytes, *, first_seq: int = 500) -> bytes:
    return bytes(RtpPacket(0, first_seq + i, 8000 + 160 * i, 0xFACE, payload, marker=i == 0))


# ---- media --------------------------------------------------------------------------------


async def test_rtp_from_the_far_end_reaches_inputs_in_order(h: Harness) -> None:
    await h.start()
    said = [pcm(i) for i in range(10)]
    for i, frame in enumerate(said):
        h.wire.on_rtp(far_packet(i, ulaw_encode(frame)), FAR)
        await h.ticks(1)
    await h.ticks(6)  # the jitter buffer's delay
    heard = [item.pcm for item in h.inputs if isinstance(item, AudioFrame)]
    assert heard[: len(said)] == said
    assert h.leg.stats()["rtp_in"] == 10


async def test_rfc4733_digits_from_the_far_end_reach_inputs(h: Harness) -> None:
    await h.start()
    packets = dtmf_packets("7", payload_type=101, ssrc=0xFACE, first_sequence=9, timestamp=1600)
    for offset, packet in packets:
        await h.clock.advance(max(0.0, START + TICK + offset - h.clock.now()))
        h.wire.on_rtp(bytes(packet), FAR)
    await h.ticks(2)
    assert [i for i in h.inputs if isinstance(i, DtmfDigit)] == [DtmfDigit("7", 160)]


async def test_played_frames_leave_one_per_tick_on_the_fake_clock(h: Harness) -> None:
    frames = [pcm(i) for i in range(5)]
    for frame in frames:
        await h.leg.play(AudioFrame(frame), utterance=3)
    await h.start()
    await h.ticks(8)
    sent = h.wire.rtp
    assert [at for at, _, _ in sent] == [
        pytest.approx(START + TICK * (n + 1), abs=1e-5) for n in range(8)
    ]
    assert all(dest == FAR for _, _, dest in sent)
    packets = [p for _, p, _ in sent]
    assert [p.payload for p in packets[:5]] == [ulaw_encode(f) for f in frames]
    assert [p.payload for p in packets[5:]] == [SILENCE] * 3  # then the line stays alive
    assert [p.sequence - packets[0].sequence for p in packets] == list(range(8))
    assert [p.timestamp - packets[0].timestamp for p in packets] == [160 * n for n in range(8)]
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert h.leg.played(3) == 5 * FRAME_SAMPLES and h.leg.samples_played == 5 * FRAME_SAMPLES


async def test_an_idle_line_sends_silence_every_20ms(h: Harness) -> None:
    await h.start()
    await h.ticks(50)
    packets = h.wire.audio()
    assert len(packets) == 50 and {p.payload for p in packets} == {SILENCE}
    assert h.leg.samples_played == 0  # silence is not the agent's audio


async def test_flush_drops_queued_audio_from_the_next_tick_on(h: Harness) -> None:
    for i in range(10):
        await h.leg.play(AudioFrame(pcm(i)))
    await h.start()
    await h.ticks(3)
    assert h.leg.flush_playout() == 7 * FRAME_SAMPLES
    await h.ticks(2)
    payloads = [p.payload for p in h.wire.audio()]
    assert payloads == [ulaw_encode(pcm(i)) for i in range(3)] + [SILENCE] * 2


async def test_pause_holds_the_queue_and_resume_sends_it_in_order(h: Harness) -> None:
    for i in range(4):
        await h.leg.play(AudioFrame(pcm(i)))
    await h.start()
    await h.ticks(1)
    h.leg.pause_playout(True)
    await h.ticks(3)
    h.leg.pause_playout(False)
    await h.ticks(4)
    payloads = [p.payload for p in h.wire.audio()]
    assert payloads == [ulaw_encode(pcm(0)), *[SILENCE] * 3] + [
        ulaw_encode(pcm(i)) for i in range(1, 4)
    ] + [SILENCE]


async def test_dtmf_goes_out_as_rfc4733_ahead_of_queued_audio(h: Harness) -> None:
    await h.start()
    await h.leg.send_dtmf("5")
    await h.leg.play(AudioFrame(pcm(0)))
    await h.ticks(20)
    kinds = [(p.payload_type, p) for _, p, _ in h.wire.rtp]
    events = [p for pt, p in kinds if pt == 101]
    # RFC 4733 §2.5: one timestamp for the event, the duration grows, E bit on the final 3.
    assert len(events) == 8 + 2 and len({p.timestamp for p in events}) == 1
    assert [p.payload[0] for p in events] == [5] * len(events)
    assert [bool(p.payload[1] & 0x80) for p in events] == [False] * 7 + [True] * 3
    durations = [int.from_bytes(p.payload[2:4], "big") for p in events]
    assert durations[:8] == [160 * (n + 1) for n in range(8)] and durations[8:] == [1280] * 2
    assert events[0].marker  # §2.5.1.3: the event's first packet starts a talkspurt
    # no audio until the event and the 100 ms gap after it are over, then the queued frame
    first_audio = next(i for i, (pt, _) in enumerate(kinds) if pt == 0)
    assert first_audio >= len(events) and kinds[first_audio][1].payload == ulaw_encode(pcm(0))
    at = next(t for t, p, _ in h.wire.rtp if p.payload_type == 0)
    assert at - h.wire.rtp[0][0] >= 0.16 + 0.1 - 1e-9


async def test_dtmf_needs_telephone_event_and_real_digits(h: Harness) -> None:
    await h.start(sendrecv(dtmf=None))
    with pytest.raises(ValueError, match="telephone-event"):
        await h.leg.send_dtmf("1")
    h.leg.apply_plan(sendrecv())
    with pytest.raises(ValueError, match="not a DTMF digit"):
        await h.leg.send_dtmf("12x")


async def test_rtcp_reports_go_to_the_next_port_up(h: Harness) -> None:
    await h.start()
    await h.ticks(130)  # the first report after half the 5 s interval (RFC 3550 §6.2)
    assert [dest for _, _, dest in h.wire.rtcp] == [(FAR[0], FAR[1] + 1)]
    assert h.wire.rtcp[0][0] >= START + 2.5


# ---- signalling through the plans and the handle -------------------------------------------

OFFER = """v=0
o=phone 7 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 30000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a={direction}
"""


def offer(direction: str = "sendrecv", *, formats: str = "") -> bytes:
    text = OFFER.format(direction=direction)
    if formats:
        text = text.replace("RTP/AVP 0 8 101", f"RTP/AVP {formats}")
    return text.replace("\n", "\r\n").encode()


async def test_a_reinvite_hold_becomes_leghold_and_stops_our_rtp(h: Harness) -> None:
    media = SipMedia("198.51.100.1", 40000, (PCMU, PCMA))
    first = media.answer_invite(offer())
    assert isinstance(first, Reply) and first.plan is not None
    await h.start(first.plan)
    await h.ticks(3)
    # RFC 3264 §8.4: the peer offers sendonly; we answer recvonly and send nothing.
    held = media.answer_reinvite(offer("sendonly"))
    assert isinstance(held, Reply) and held.plan is not None and held.plan.remote_hold
    assert b"a=recvonly" in held.sdp and b"m=audio 40000 " in held.sdp
    h.leg.apply_plan(held.plan)
    await h.leg.play(AudioFrame(pcm(0)))
    sent_before = len(h.wire.rtp)
    await h.ticks(10)
    assert h.inputs[-1] == LegHold(True)
    assert len(h.wire.rtp) == sent_before  # a held call sends nothing, not even silence
    assert h.leg.samples_played == 0
    resumed = media.answer_reinvite(offer())
    assert isinstance(resumed, Reply) and resumed.plan is not None
    assert b"a=sendrecv" in resumed.sdp
    h.leg.apply_plan(resumed.plan)
    await h.leg.play(AudioFrame(pcm(1)))
    await h.ticks(2)
    assert h.inputs[-1] == LegHold(False)
    assert [p.payload for p in h.wire.audio()[sent_before:]] == [ulaw_encode(pcm(1)), SILENCE]


async def test_hold_outlasts_the_rtp_timeout_but_silence_does_not() -> None:
    h = Harness(rtp_timeout=1.0)
    await h.start(sendrecv(hold=True))
    await h.ticks(100)
    assert (h.dialog.hangups, h.leg.ended) == (0, False)
    h.leg.apply_plan(sendrecv())
    await h.ticks(100)
    assert h.dialog.hangups == 1 and h.leg.ended and h.leg.end_reason == "rtp_timeout"
    assert h.dialog.closed_count == 1


async def test_hangup_through_the_handle_ends_media_at_once_after_a_bye(h: Harness) -> None:
    await h.start()
    await h.ticks(2)
    await h.leg.hangup("normal")
    assert h.dialog.hangups == 1 and h.leg.ended and h.leg.end_reason == "normal"
    # RFC 3550 §6.6: an RTCP BYE for our source, then the ports are closed and forgotten
    assert len(h.wire.rtcp) == 1
    assert any(isinstance(p, Bye) for p in parse_compound(h.wire.rtcp[0][1]))
    assert h.wire.closed and h.dialog.closed_count == 1
    sent = len(h.wire.rtp)
    await h.ticks(3)
    assert len(h.wire.rtp) == sent
    await h.leg.hangup("again")  # once ended, nothing more is asked of signalling
    assert h.dialog.hangups == 1 and h.leg.end_reason == "normal"


async def test_an_early_hangup_waits_for_signalling_to_end_the_call(h: Harness) -> None:
    await h.start()
    h.dialog.bye = False  # a CANCEL: the call ends when its answer comes back
    waiting = asyncio.create_task(h.leg.hangup("caller_left"))
    await h.ticks(3)
    assert not waiting.done() and not h.leg.ended and h.dialog.hangups == 1
    h.leg.ended_by_signalling("cancelled")
    await h.ticks(1)
    assert waiting.done() and h.leg.end_reason == "caller_left"  # the first reason stays
    assert h.wire.closed and h.dialog.closed_count == 1


async def test_a_transfer_refers_through_the_handle_and_leaves_on_success(h: Harness) -> None:
    await h.start()
    pending = asyncio.create_task(h.leg.transfer("200"))
    await drain()
    assert h.dialog.refers == ["200"] and not pending.done()
    again = await h.leg.transfer("300")
    assert not again.ok and "in progress" in again.reason
    h.leg.transfer_event(TransferSucceeded("ua-1", 200, "OK"))
    result = await pending
    assert result.ok and result.status == 200
    assert h.leg.ended and h.leg.end_reason == "transferred"  # RFC 5589 §6.1


async def test_a_refused_or_failed_transfer_keeps_the_call(h: Harness) -> None:
    await h.start()
    h.dialog.refer_error = "call ua-1 is not established"
    refused = await h.leg.transfer("200")
    assert not refused.ok and refused.reason == "call ua-1 is not established"
    h.dialog.refer_error = None
    pending = asyncio.create_task(h.leg.transfer("200"))
    await drain()
    h.leg.transfer_event(TransferFailed("ua-1", 486, "Busy Here"))
    result = await pending
    assert not result.ok and result.status == 486 and not h.leg.ended


# ---- the negotiator's other cases ---------------------------------------------------------


def test_a_late_offer_is_ours_in_the_200_and_the_ack_answers_it() -> None:
    media = SipMedia("198.51.100.1", 40000, (PCMU,))
    reply = media.answer_invite(b"")
    assert isinstance(reply, Reply) and reply.plan is None  # RFC 3261 §13.2.1
    assert media.awaiting_answer and b"m=audio 40000 RTP/AVP 0 101" in reply.sdp
    answer, _ = create_answer(parse_sdp(reply.sdp), LocalMedia(FAR[0], FAR[1], (PCMU,)))
    plan = media.ack(bytes(answer))
    assert isinstance(plan, MediaPlan) and (plan.remote_address, plan.remote_port) == FAR
    assert (media.awaiting_answer, media.ack(None)) == (False, None)  # nothing more to answer


def test_an_ack_without_a_usable_answer_ends_the_call() -> None:
    media = SipMedia("198.51.100.1", 40000, (PCMU,))
    media.answer_invite(b"")
    assert media.ack(None) == Unusable("no_sdp_answer")
    bad = media.ack(b"v=0\r\nnonsense\r\n")
    assert isinstance(bad, Unusable) and bad.reason == "bad_sdp" and bad.error


def test_an_offer_with_an_initial_invite_is_answered_with_a_plan() -> None:
    reply = SipMedia("198.51.100.1", 40000, (PCMA,)).answer_invite(offer())
    assert isinstance(reply, Reply) and reply.plan is not None
    assert reply.plan.codec == PCMA and reply.plan.dtmf_payload_type == 101
    assert (reply.plan.remote_address, reply.plan.remote_port) == FAR
    assert b"m=audio 40000 RTP/AVP 8 101" in reply.sdp and b"c=IN IP4 198.51.100.1" in reply.sdp


@pytest.mark.parametrize(
    ("body", "status"),
    [(offer(formats="18 101"), 488), (b"v=0\r\nnot sdp\r\n", 400)],
)
def test_unusable_offers_are_refused_and_the_media_stays(body: bytes, status: int) -> None:
    media = SipMedia("198.51.100.1", 40000, (PCMU,))
    assert isinstance(media.answer_invite(offer()), Reply)
    refused = media.answer_reinvite(body)
    assert isinstance(refused, Refuse) and refused.status == status and refused.reason
    assert isinstance(media.answer_invite(body), Refuse)


def test_an_offerless_reinvite_gets_our_offer() -> None:
    media = SipMedia("198.51.100.1", 40000, (PCMU,))
    media.answer_invite(offer())
    reply = media.answer_reinvite(b"")
    assert isinstance(reply, Reply) and reply.plan is None and media.awaiting_answer


def test_outbound_early_media_applies_once_and_the_200_answer_wins() -> None:
    media = SipMedia("198.51.100.1", 40000, (PCMU, PCMA))
    sent = parse_sdp(media.offer())
    early, _ = create_answer(sent, LocalMedia(FAR[0], FAR[1], (PCMU,)))
    plan = media.early_answer(bytes(early))
    assert isinstance(plan, MediaPlan) and media.early
    assert media.early_answer(bytes(early)) is None  # a second 183: already flowing
    final, _ = create_answer(sent, LocalMedia("192.0.2.99", 31000, (PCMA,)))
    answered = media.final_answer(bytes(final))
    assert isinstance(answered, MediaPlan) and answered.codec == PCMA
    assert answered.remote_address == "192.0.2.99"


def test_an_unusable_answer_is_reported_not_raised() -> None:
    media = SipMedia("198.51.100.1", 40000, (PCMU,))
    media.offer()
    refused = media.early_answer(b"garbage")
    assert isinstance(refused, Unusable) and not media.early
    assert isinstance(media.final_answer(b""), Unusable)


# ---- the transport's one way out of an unanswered outbound call ---------------------------


class Callee:
    """A far end on loopback UDP that answers the test's way: parse what arrives, reply with
    a response built from the request."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    async def recv(self, want: str) -> SipRequest:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            while True:
                data, _ = await loop.sock_recvfrom(self.sock, 65535)
                msg = parse_sip(data)
                if isinstance(msg, SipRequest) and msg.method == want:
                    return msg

    def reply(self, req: SipRequest, status: int, body: bytes = b"") -> None:
        headers = [("Contact", f"<sip:callee@127.0.0.1:{self.port}>")]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        resp = make_response(req, status, to_tag="callee", headers=headers, body=body)
        self.sock.sendto(bytes(resp), req.vias[0].sent_by)


class NoInbound:
    def admit(self, info: LegInfo) -> None:
        raise Rejection(Rejection.NOT_FOUND)

    def start(self, leg: object) -> None:
        raise AssertionError("no inbound calls here")


@pytest.fixture
async def transport() -> AsyncIterator[SipTransport]:
    config = SipTransportConfig(host="127.0.0.1", port=0, rtp_port_min=47000, rtp_port_max=47020)
    sip = SipTransport(config, LoopClock(), NoInbound())
    await sip.start()
    yield sip
    await sip.shutdown(0.5)


@pytest.fixture
def callee() -> Iterator[Callee]:
    c = Callee()
    yield c
    c.sock.close()


def all_ports_free(sip: SipTransport) -> bool:
    return sip.ports.free == len(range(sip.ports.low, sip.ports.high, 2))


async def test_a_cancelled_outbound_call_cancels_and_gives_everything_back(
    transport: SipTransport, callee: Callee
) -> None:
    legs: list[SipLeg] = []
    call = asyncio.create_task(
        transport.call(f"sip:callee@127.0.0.1:{callee.port}", on_leg=legs.append)
    )
    invite = await callee.recv("INVITE")
    # The INVITE went out with the ports open and the leg registered, in one step.
    assert transport._legs and not all_ports_free(transport)
    callee.reply(invite, 180)
    call.cancel()  # whether or not the 180 is in yet: the CANCEL waits for it (§9.1)
    with pytest.raises(asyncio.CancelledError):
        await call
    cancel = await callee.recv("CANCEL")  # RFC 3261 §9.1: after a provisional response
    assert cancel.call_id == invite.call_id
    assert not transport._legs and all_ports_free(transport)
    assert legs[0].ended and legs[0].end_reason == "cancelled"


async def test_no_answer_and_an_unusable_answer_take_the_same_way_out(
    transport: SipTransport, callee: Callee
) -> None:
    target = f"sip:callee@127.0.0.1:{callee.port}"
    ringing = asyncio.create_task(transport.call(target, timeout=0.3))
    invite = await callee.recv("INVITE")
    callee.reply(invite, 180)
    with pytest.raises(CallFailed) as no_answer:
        await ringing
    assert no_answer.value.status == 408 and no_answer.value.result == "no_answer"
    await callee.recv("CANCEL")
    assert not transport._legs and all_ports_free(transport)

    answered = asyncio.create_task(transport.call(target))
    invite = await callee.recv("INVITE")
    callee.reply(invite, 200, b"v=0\r\nnot an answer\r\n")
    with pytest.raises(CallFailed) as unusable:
        await answered
    assert unusable.value.status == 488 and "unusable SDP answer" in unusable.value.reason
    bye = await callee.recv("BYE")  # the dialog was established: it ends with a BYE
    assert bye.call_id == invite.call_id
    assert not transport._legs and all_ports_free(transport)


async def test_the_leg_moves_its_tick_to_the_phase_of_the_callers_packets(h: Harness) -> None:
    """The far end's packets arrive 3 ms after the shared 20 ms pass, so each frame is due
    (arrival + the 10 ms target) 7 ms before the pass comes round again. The leg moves its
    tick one 5 ms slot earlier (transports.media_clock), which takes 5 ms off every frame of
    the call and loses none."""
    await h.start()
    said = [pcm(i % 50) for i in range(75)]
    for i, frame in enumerate(said):
        arrival = START + 0.003 + i * TICK
        await h.clock.advance(max(0.0, arrival - h.clock.now()))
        h.wire.on_rtp(far_packet(i, ulaw_encode(frame)), FAR)
        await drain()
    await h.clock.advance(0.015)  # the last frame is due and played; the stream ends here
    await drain()
    st = h.leg.stats()
    phases = [round((at - START + 1e-6) % TICK, 3) for at, _, _ in h.wire.rtp]
    assert phases[:3] == [0.0, 0.0, 0.0]  # the shared pass first
    moved = phases.index(0.015)
    assert moved <= 10 and set(phases[moved:]) == {0.015}  # then 5 ms earlier, for good
    assert st["concealed"] == 0 and st["late"] == 0
    assert st["inserted_ms"] == 0 and st["dropped_ms"] == 0  # the phase moved, not the audio
    assert 10.0 <= st["playout_delay_ms"] < 15.0  # target (10 ms) + what is left: 2 ms
    heard = [item.pcm for item in h.inputs if isinstance(item, AudioFrame)]
    assert heard[-len(said) :] == said  # every frame, in order, none concealed
    h.leg.ended_by_signalling("remote_bye")
    await h.clock.advance(TICK)  # the leg's next tick, in its own phase, sees the end
    await drain()
    for task in h._tasks:
        assert task.done()


async def test_how_late_the_media_runs_reaches_the_listeners_with_the_guard_off() -> None:
    """Every 100 ms the transport samples how late the media runs (the latest media-clock
    pass, or a timer with no call up) for the metrics, whether or not the overload guard
    (`limits.max_loop_lag`) uses it."""
    config = SipTransportConfig(host="127.0.0.1", port=0, rtp_port_min=47000, rtp_port_max=47020)
    config = replace(config, guard=replace(config.guard, max_loop_lag=0.0))
    clock = FakeClock()
    sip = SipTransport(config, clock, NoInbound())
    samples: list[float] = []
    metrics = Metrics()
    sip.on_media_lateness += [samples.append, metrics.media_lateness.observe]
    await sip.start()
    try:
        await drain()
        await clock.advance(0.35)
        assert samples == [0.0, 0.0, 0.0]  # no call up: the timer's own lateness, none here
        assert sip.guard.loop_lag == 0.0  # the guard is off: it hears nothing
        text = metrics.render().decode()
        assert "callbridge_media_lateness_seconds_count 3.0" in text, text
    finally:
        await sip.shutdown(0.5)
