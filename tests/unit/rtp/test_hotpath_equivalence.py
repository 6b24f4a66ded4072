"""The optimised per-packet hot path (issue 12) against the frozen pre-optimisation copy.

tests/unit/rtp/legacy/ holds the implementation as it was before the hot path was reworked.
Both are driven with the same random packet streams (loss, reordering, duplicates, timestamp
and sequence jumps, SSRC changes, stalls, DTMF, RTCP, malformed and non-plain headers, a
second source) and the same send calls; every frame out, every concealment decision, every
datagram on the wire and every statistic must be identical.
"""

from __future__ import annotations

import random
import struct
from dataclasses import asdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.core.frames import AudioFrame
from callbridge.rtp.jitter import JitterBuffer, JitterConfig
from callbridge.rtp.playout_clock import PlayoutClock
from callbridge.rtp.rtcp import ReceiverReport, ReportBlock, SenderReport, serialize_compound
from callbridge.rtp.sender import RtpSender
from callbridge.rtp.session import RtpParams, RtpSession
from tests.unit.rtp.legacy import g711 as old_g711
from tests.unit.rtp.legacy.jitter import JitterBuffer as OldJitterBuffer
from tests.unit.rtp.legacy.jitter import JitterConfig as OldJitterConfig
from tests.unit.rtp.legacy.playout_clock import PlayoutClock as OldPlayoutClock
from tests.unit.rtp.legacy.sender import RtpSender as OldRtpSender
from tests.unit.rtp.legacy.session import RtpParams as OldRtpParams
from tests.unit.rtp.legacy.session import RtpSession as OldRtpSession

SRC = ("10.0.0.1", 4000)
OTHER = ("10.0.0.2", 4000)
EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
MORE_EXAMPLES = settings(EXAMPLES, max_examples=150)


def _payload(rng: random.Random, n: int, loud: bool) -> bytes:
    if loud:
        return rng.randbytes(n)
    # Quiet µ-law/A-law codes around zero (0x7x/0xFx and 0x5x/0xDx decode to small values).
    return bytes(rng.choice((0xFF, 0xFE, 0x7F, 0xD5, 0x55, 0xFD)) for _ in range(n))


def _header(b0: int, b1: int, seq: int, ts: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)


def _stream(
    seed: int, n: int, knobs: tuple[float, ...], pt: int = 0
) -> list[tuple[float, bytes, tuple[str, int]]]:
    """(arrival time, datagram, source) in arrival order."""
    loss, reorder, dup, jump, ssrc_change, odd = knobs
    rng = random.Random(seed)
    seq, ts, ssrc = rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32)
    t = 0.0
    loud = True
    ptime = rng.choice((80, 160, 160, 240))
    out: list[tuple[float, bytes, tuple[str, int]]] = []
    for _ in range(n):
        r = rng.random()
        marker = False
        if r < jump / 3:
            seq += rng.choice((150, -150, 3000, 40000))
        elif r < 2 * jump / 3:
            ts += rng.choice((8000 * 3, -8000 * 3, 800, 1 << 31))
            marker = True
        elif r < jump:
            t += rng.choice((0.3, 1.5, 3.0))  # hold / DTX / stall
            ts += int(rng.choice((0.3, 1.5, 3.0)) * 8000)
            marker = True
        if rng.random() < ssrc_change:
            ssrc = rng.getrandbits(32)
            seq, ts = rng.getrandbits(16), rng.getrandbits(32)
        if rng.random() < 0.05:
            loud = not loud
            marker = marker or loud
        if rng.random() < 0.02:
            ptime = rng.choice((80, 160, 240))
        t += ptime / 8000
        arrival = t + abs(rng.gauss(0.0, 0.015)) + (0.12 if rng.random() < 0.02 else 0.0)
        payload = _payload(rng, ptime, loud)
        b1 = (0x80 if marker else 0) | pt
        kind = rng.random()
        if kind < odd * 0.2:  # CSRCs, extension, padding: the general parser's path
            data = (
                _header(0x80 | 0x20 | 0x10 | 1, b1, seq, ts, ssrc)
                + struct.pack("!I", 7)
                + struct.pack("!HH", 0xBEDE, 1)
                + b"\0" * 4
                + payload
                + b"\0\0\3"
            )
        elif kind < odd * 0.4:  # RFC 4733 telephone-event (PT 101), maybe the end packet
            event = struct.pack("!BBH", rng.randrange(16), 0x8A if rng.random() < 0.5 else 10, 800)
            data = _header(0x80, 101 | (0x80 if rng.random() < 0.3 else 0), seq, ts, ssrc) + event
        elif kind < odd * 0.5:  # unknown payload type
            data = _header(0x80, 96, seq, ts, ssrc) + payload
        elif kind < odd * 0.6:  # malformed: short, wrong version, truncated CSRC
            data = rng.choice(
                (b"\x80\x00\x01", _header(0x40, 0, seq, ts, ssrc), b"\x8f" + b"\0" * 13)
            )
        elif kind < odd * 0.7:  # RTCP multiplexed on the RTP port (a bare RR)
            data = serialize_compound([ReceiverReport(ssrc, ())])
        else:
            data = _header(0x80, b1, seq, ts, ssrc) + payload
        source = OTHER if rng.random() < odd * 0.05 else SRC
        out.append((arrival, data, source))
        if rng.random() < dup:
            out.append((arrival + rng.random() * 0.05, data, source))
        if rng.random() < loss:
            out.pop()
        seq += 1
        ts += ptime
        if rng.random() < reorder and len(out) >= 2:
            out[-1], out[-2] = out[-2], out[-1]
    out.sort(key=lambda x: x[0])  # stable: equal arrival times keep their order
    return out


def _frame(f: Any) -> Any:
    return None if f is None else (f.pcm, f.sample_rate, f.concealed)


knobs_strategy = st.tuples(
    st.sampled_from((0.0, 0.02, 0.1, 0.3)),  # loss
    st.sampled_from((0.0, 0.05, 0.3)),  # reorder
    st.sampled_from((0.0, 0.02, 0.2)),  # duplicates
    st.sampled_from((0.0, 0.01, 0.05)),  # timestamp/sequence jumps, stalls
    st.sampled_from((0.0, 0.005, 0.05)),  # SSRC changes
    st.sampled_from((0.0, 0.05, 0.2)),  # odd packets (DTMF, RTCP, malformed, CSRC...)
)


def _pair(codec: str, pt: int, latch: bool, seed: int) -> tuple[Any, Any]:
    jc = JitterConfig()
    new = RtpSession(RtpParams(SRC, codec, pt, 101), 0.0, jitter=jc, latch=latch)
    old = OldRtpSession(
        OldRtpParams(SRC, codec, pt, 101), 0.0, jitter=OldJitterConfig(), latch=latch
    )
    ssrc = random.Random(seed).getrandbits(32)
    new.sender = RtpSender(pt, ssrc=ssrc, rng=random.Random(seed))
    old.sender = OldRtpSender(pt, ssrc=ssrc, rng=random.Random(seed))
    new.sender_stats.ssrc = old.sender_stats.ssrc = ssrc
    return new, old


@MORE_EXAMPLES
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from((1, 3, 30, 150, 400)),
    knobs=knobs_strategy,
    codec=st.sampled_from(("PCMU", "PCMA")),
    latch=st.booleans(),
)
def test_session_receive_and_tick_match_the_reference(
    seed: int, n: int, knobs: tuple[float, ...], codec: str, latch: bool
) -> None:
    pt = 0 if codec == "PCMU" else 8
    new, old = _pair(codec, pt, latch, seed)
    arrivals = _stream(seed, n, knobs, pt)
    end = (arrivals[-1][0] if arrivals else 0.0) + 2.0
    rng = random.Random(seed ^ 0x5A5A)
    i, k = 0, 0
    while k * 0.02 <= end:
        now = k * 0.02 + 0.0003
        while i < len(arrivals) and arrivals[i][0] <= now:
            at, data, source = arrivals[i]
            assert new.receive(data, source, at) == old.receive(data, source, at)
            i += 1
        f_new, d_new = new.tick(now)
        f_old, d_old = old.tick(now)
        assert _frame(f_new) == _frame(f_old), k
        assert d_new == d_old
        # Send side in the same tick: a frame, nothing, silence, or a digit.
        r = rng.random()
        if r < 0.5:
            out = AudioFrame(_payload(rng, 160, True) * 2)
            a, b = new.send_frame(out, now), old.send_frame(out, now)
        elif r < 0.6:
            a, b = new.send_frame(None, now), old.send_frame(None, now)
        elif r < 0.98:
            a, b = new.send_silence(now), old.send_silence(now)
        else:
            a, b = new.dtmf("5"), old.dtmf("5")
        assert a == b
        if new.rtcp_due(now):
            assert old.rtcp_due(now)
            assert new.rtcp_report(now, 3.9e9 + now) == old.rtcp_report(now, 3.9e9 + now)
        k += 1
    assert new.stats() == old.stats()
    assert asdict(new.jitter.stats) == asdict(old.jitter.stats)
    assert asdict(new.counters) == asdict(old.counters)
    assert new.remote == old.remote and new.last_rx == old.last_rx
    assert new.rtcp_report(end, 4e9) == old.rtcp_report(end, 4e9)
    assert new.sender_stats.rtp_timestamp_at(end + 1) == old.sender_stats.rtp_timestamp_at(end + 1)


@EXAMPLES
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from((1, 5, 50, 300)),
    frame=st.sampled_from((160, 240)),  # 80 (< pitch_max) crashes _compress, before and after
    max_late=st.sampled_from((1, 3, 10)),
    delays=st.sampled_from(((0.02, 0.06), (0.0, 0.0), (0.04, 0.2))),
)
def test_jitter_buffer_matches_the_reference_with_odd_inputs(
    seed: int, n: int, frame: int, max_late: int, delays: tuple[float, float]
) -> None:
    """Any payload length (odd, empty), any numbers, and unusual configurations."""
    cfg = dict(frame_samples=frame, max_late=max_late, min_delay=delays[0], max_delay=delays[1])
    new, old = JitterBuffer(JitterConfig(**cfg)), OldJitterBuffer(OldJitterConfig(**cfg))  # type: ignore[arg-type]
    rng = random.Random(seed)
    seq, ts, ssrc = rng.getrandbits(16), rng.getrandbits(32), 1
    now = 0.0
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            size = rng.choice((0, 1, 2, 161, 320, 320, 320, 480, 2000))
            pcm = rng.randbytes(size) if rng.random() < 0.5 else bytes(size)
            if rng.random() < 0.05:
                ssrc = rng.choice((1, 2, 3))
            s = seq + rng.choice((0, 0, 0, -1, 1, -3, 200, -200, 1 << 16))
            t = ts + rng.choice((0, 0, 0, -160, 160, 80, 3 * 8000, 1 << 32))
            marker = rng.random() < 0.1
            new.push(ssrc, s, t, pcm, now, marker)
            old.push(ssrc, s, t, pcm, now, marker)
            seq, ts = seq + 1, ts + max(1, len(pcm) // 2)
        else:
            assert _frame(new.pop(now)) == _frame(old.pop(now))
        now += rng.choice((0.0, 0.001, 0.01, 0.02, 0.02, 0.05, 1.2))
    assert asdict(new.stats) == asdict(old.stats)


@EXAMPLES
@given(
    steps=st.lists(
        st.tuples(st.floats(0.0, 0.5), st.integers(-(2**33), 2**33), st.integers(0, 20)),
        max_size=300,
    )
)
def test_playout_clock_matches_the_reference(steps: list[tuple[float, int, int]]) -> None:
    new, old = PlayoutClock(8000, 0.02, 0.06), OldPlayoutClock(8000, 0.02, 0.06)
    now = 0.0
    for dt, ts, action in steps:
        now += dt
        if action == 0:
            new.reanchor()
            old.reanchor()
        elif action == 1:
            new.reanchor(path_changed=True)
            old.reanchor(path_changed=True)
        else:
            assert new.observe(now, ts) == old.observe(now, ts)
        assert (new.base, new.target, new.jitter, new.anchored, new.position(now)) == (
            old.base,
            old.target,
            old.jitter,
            old.anchored,
            old.position(now),
        )


@given(pcm=st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0), codes=st.binary(max_size=400))
def test_g711_matches_the_reference(pcm: bytes, codes: bytes) -> None:
    assert ulaw_encode(pcm) == old_g711.ulaw_encode(pcm)
    assert alaw_encode(pcm) == old_g711.alaw_encode(pcm)
    assert ulaw_decode(codes) == old_g711.ulaw_decode(codes)
    assert alaw_decode(codes) == old_g711.alaw_decode(codes)


def test_a_sender_report_block_about_us_is_applied_identically() -> None:
    new, old = _pair("PCMU", 0, True, 7)
    block = ReportBlock(new.sender.ssrc, 64, 7, 100, 80, 0, 0)
    sr = serialize_compound([SenderReport(5, 1 << 40, 0, 0, 0, (block,))])
    for s in (new, old):
        s.receive(_header(0x80, 0, 1, 1, 5) + b"\xff" * 160, SRC, 0.01)
        s.receive(sr, SRC, 0.02)
    assert asdict(new.counters) == asdict(old.counters)
    assert new.rtcp_report(1.0, 4e9) == old.rtcp_report(1.0, 4e9)
