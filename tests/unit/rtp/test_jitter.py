"""JitterBuffer against synthetic RTP streams on simulated time (no I/O, no sleeping)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import pytest

from callbridge.core.frames import AudioFrame
from callbridge.rtp.jitter import JitterBuffer, JitterConfig

RATE = 8000
FRAME = 160
TICK = FRAME / RATE  # 20 ms pop schedule


def voiced(samples: int, seed: int = 1) -> np.ndarray:
    """Speech-like, never quiet: a drifting 120-180 Hz harmonic tone plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(h * phase) / h for h in range(1, 6)) * 6000
    x = x + rng.normal(0, 300, samples)
    return np.clip(x, -32768, 32767).astype("<i2")


def talk_spurts(samples: int, seed: int = 2) -> np.ndarray:
    """Voiced bursts of ~1.2 s separated by ~0.8 s of faint noise (like speech)."""
    x = voiced(samples, seed).astype(np.float64)
    t = np.arange(samples) / RATE
    on = (t % 2.0) < 1.2
    rng = np.random.default_rng(seed + 1)
    x = np.where(on, x, rng.normal(0, 20, samples))
    return np.clip(x, -32768, 32767).astype("<i2")


@dataclass(frozen=True)
class Pkt:
    arrival: float
    ssrc: int
    seq: int
    ts: int
    pcm: bytes
    marker: bool = False


def stream(
    signal: np.ndarray,
    *,
    ptime: int = FRAME,
    ssrc: int = 0x1234,
    seq0: int = 1000,
    ts0: int = 50_000,
    start: float = 0.0,
    transit: float = 0.030,
    skew: float = 0.0,
    jitter: Callable[[int], float] | None = None,
    lose: Callable[[int], bool] | None = None,
) -> Iterator[Pkt]:
    """Packets of `ptime` samples. skew > 0: the sender clock runs fast by that fraction."""
    for k in range(len(signal) // ptime):
        if lose is not None and lose(k):
            continue
        sent = start + (k + 1) * ptime / RATE / (1 + skew)  # sent once the packet is full
        delay = transit + (jitter(k) if jitter is not None else 0.0)
        yield Pkt(
            arrival=sent + delay,
            ssrc=ssrc,
            seq=(seq0 + k) & 0xFFFF,
            ts=(ts0 + k * ptime) & 0xFFFF_FFFF,
            pcm=signal[k * ptime : (k + 1) * ptime].tobytes(),
        )


def run(
    jb: JitterBuffer,
    packets: Iterable[Pkt],
    duration: float,
    *,
    phase: float = 0.0071,
    on_pop: Callable[[float, AudioFrame | None], None] | None = None,
) -> list[AudioFrame | None]:
    """Deliver packets at their arrival times and pop on an absolute 20 ms schedule."""
    pending = sorted(packets, key=lambda p: p.arrival)
    out: list[AudioFrame | None] = []
    i = 0
    for k in range(round(duration / TICK)):
        now = phase + k * TICK
        while i < len(pending) and pending[i].arrival <= now:
            p = pending[i]
            jb.push(p.ssrc, p.seq, p.ts, p.pcm, p.arrival, p.marker)
            i += 1
        frame = jb.pop(now)
        if frame is not None:
            assert frame.samples == FRAME
            assert frame.sample_rate == RATE
        out.append(frame)
        if on_pop is not None:
            on_pop(now, frame)
    return out


def started(frames: list[AudioFrame | None]) -> list[AudioFrame]:
    """Frames from the first non-None on; asserts no None after the start."""
    first = next(i for i, f in enumerate(frames) if f is not None)
    rest = frames[first:]
    assert all(f is not None for f in rest), "output stopped mid-stream"
    return [f for f in rest if f is not None]


def pcm_of(frames: Iterable[AudioFrame]) -> np.ndarray:
    return np.frombuffer(b"".join(f.pcm for f in frames), dtype="<i2")


def is_prefix(out: np.ndarray, signal: np.ndarray) -> bool:
    """The played audio starts with the signal, bit-exact (concealment may follow its end)."""
    n = min(len(out), len(signal))
    return bool(np.array_equal(out[:n], signal[:n]))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def find_in(out: np.ndarray, signal: np.ndarray, min_len: int) -> int:
    """Offset at which `out` continues `signal` bit-exact for >= min_len samples."""
    for cand in np.flatnonzero(signal == out[0]):
        m = min(len(out), len(signal) - int(cand))
        if m >= min_len and np.array_equal(signal[cand : cand + m], out[:m]):
            return int(cand)
    raise AssertionError("output does not continue the input bit-exact")


# -- clean streams ---------------------------------------------------------------------------


def test_none_before_first_packet_then_initial_delay() -> None:
    jb = JitterBuffer()
    assert jb.pop(0.0) is None
    sig = voiced(RATE)
    frames = run(jb, stream(sig, start=1.0), duration=2.0)
    first = next(i for i, f in enumerate(frames) if f is not None)
    # First packet arrives at 1.0 + 0.02 + 0.03; playout starts min_delay (10 ms) later.
    assert 1.059 <= 0.0071 + first * TICK <= 1.06 + TICK


def test_clean_stream_is_bit_exact() -> None:
    sig = voiced(RATE * 3)
    jb = JitterBuffer()
    frames = started(run(jb, stream(sig), duration=3.0))
    out = pcm_of(frames)
    assert not any(f.concealed for f in frames)
    assert is_prefix(out, sig)
    assert len(out) >= len(sig) - 4 * FRAME
    st = jb.stats
    assert (st.lost, st.late, st.duplicates, st.reordered, st.resyncs) == (0, 0, 0, 0, 0)
    assert st.inserted == st.dropped == 0
    assert st.target_delay == pytest.approx(0.010)
    assert st.frames_out == len(frames)


def test_clean_stream_30ms_packets_gives_20ms_frames_bit_exact() -> None:
    sig = voiced(RATE * 3)
    jb = JitterBuffer()
    frames = started(run(jb, stream(sig, ptime=240), duration=3.0))
    out = pcm_of(frames)
    assert not any(f.concealed for f in frames)
    assert is_prefix(out, sig)
    assert len(out) >= len(sig) - 5 * FRAME


@pytest.mark.parametrize("ptime", [80, 160, 240, 320])
def test_other_packet_sizes_play_continuously(ptime: int) -> None:
    sig = voiced(RATE * 2)
    jb = JitterBuffer()
    frames = started(run(jb, stream(sig, ptime=ptime), duration=2.0))
    out = pcm_of(frames)
    assert is_prefix(out, sig)
    assert jb.stats.lost == 0


def test_reordered_neighbours_are_bit_exact() -> None:
    sig = voiced(RATE * 3)
    pkts = list(stream(sig))
    swapped: list[Pkt] = []
    for k in range(0, len(pkts) - 1, 2):
        a, b = pkts[k], pkts[k + 1]
        if k % 6 == 2:  # swap every third pair: b overtakes a by 1 ms
            a, b = replace(a, arrival=b.arrival + 0.001), replace(b, arrival=b.arrival)
        swapped += [a, b]
    # A buffer as deep as the overtaking (20 ms beyond the fastest packet) loses nothing.
    jb = JitterBuffer(JitterConfig(min_delay=0.020))
    frames = started(run(jb, swapped, duration=3.0))
    out = pcm_of(frames)
    assert is_prefix(out, sig)
    assert jb.stats.reordered > 20
    assert jb.stats.late == jb.stats.lost == 0
    # The default starts at 10 ms: the first overtaken packet comes too late for it, and the
    # buffer deepens to the delay it saw, so every later one plays.
    jb = JitterBuffer()
    frames = started(run(jb, swapped, duration=3.0))
    out = pcm_of(frames)
    assert jb.stats.reordered > 20
    assert jb.stats.lost <= 1 and jb.stats.late <= 1
    assert jb.stats.target_delay >= 0.020
    find_in(out[len(out) // 2 :], sig, min_len=RATE // 2)  # the second half: bit-exact


def test_duplicates_are_dropped_and_counted() -> None:
    sig = voiced(RATE * 2)
    pkts = list(stream(sig))
    dups = [replace(p, arrival=p.arrival + 0.005) for p in pkts[::3]]
    # A duplicate arriving after its audio was played is still a duplicate, not late.
    dups += [replace(p, arrival=p.arrival + 0.2) for p in pkts[1::7]]
    jb = JitterBuffer()
    frames = started(run(jb, pkts + dups, duration=2.5))
    out = pcm_of(frames)
    assert is_prefix(out, sig)
    assert jb.stats.duplicates == len(dups)
    assert jb.stats.late == 0
    assert jb.stats.received == len(pkts) + len(dups)


def test_duplicates_across_the_sequence_wrap() -> None:
    # The stream starts at sequence 0; its first packets come twice, and sequence 65535
    # arrives late: "one before the first", its extended number is -1, which must not look
    # like an empty slot of the duplicate memory.
    sig = voiced(RATE * 3)
    pkts = list(stream(sig, seq0=0))
    early = [replace(p, arrival=p.arrival + 0.004) for p in pkts[:3]]
    jb = JitterBuffer()
    run(jb, pkts + early, duration=3.0)
    assert jb.stats.duplicates == len(early)
    before_first = replace(pkts[0], seq=65_535, ts=pkts[0].ts - FRAME, arrival=pkts[0].arrival)
    jb = JitterBuffer()
    run(jb, [pkts[0], before_first, before_first, *pkts[1:100]], duration=2.0)
    assert jb.stats.duplicates == 1  # its second copy only
    assert jb.stats.reordered >= 1


def test_sequence_and_timestamp_wrap() -> None:
    sig = voiced(RATE * 3)
    pkts = stream(sig, seq0=65_500, ts0=2**32 - 40 * FRAME - 17)
    jb = JitterBuffer()
    frames = started(run(jb, pkts, duration=3.0))
    out = pcm_of(frames)
    assert is_prefix(out, sig)
    assert len(out) >= len(sig) - 4 * FRAME
    st = jb.stats
    assert (st.resyncs, st.lost, st.late, st.reordered) == (0, 0, 0, 0)


# -- loss ------------------------------------------------------------------------------------


def test_random_loss_is_concealed_not_silenced() -> None:
    sig = voiced(RATE * 10)
    rng = random.Random(5)
    lost = {k for k in range(len(sig) // FRAME) if rng.random() < 0.05}
    lost -= {0}
    jb = JitterBuffer()
    frames = started(run(jb, stream(sig, lose=lambda k: k in lost), duration=10.0))
    out = pcm_of(frames)
    concealed = [i for i, f in enumerate(frames) if f.concealed]
    played_lost = {k for k in lost if (k + 1) * FRAME <= len(out)}
    assert len(played_lost) > 30
    assert abs(len(concealed) - len(played_lost)) <= 1
    assert jb.stats.lost == len(concealed)
    # Frames are aligned with packets: every concealed frame is exactly a lost one ...
    assert {i for i in concealed} == {k for k in played_lost}
    # ... and is a plausible continuation, not silence.
    for i in concealed:
        assert rms(np.frombuffer(frames[i].pcm, "<i2")) > 0.2 * rms(sig)
    # Received audio is untouched except the cross-fade right after a concealment.
    for i, f in enumerate(frames):
        if not f.concealed and i - 1 not in concealed:
            assert np.array_equal(np.frombuffer(f.pcm, "<i2"), sig[i * FRAME : (i + 1) * FRAME])


def test_burst_loss_keeps_output_continuous() -> None:
    sig = voiced(RATE * 10)
    rng = random.Random(9)
    lost: set[int] = set()
    k = 5
    while k < len(sig) // FRAME:
        if rng.random() < 0.06:
            n = rng.randint(3, 5)
            lost |= set(range(k, k + n))
            k += n + 1
        else:
            k += 1
    assert 0.15 < len(lost) / (len(sig) // FRAME) < 0.3
    jb = JitterBuffer()
    frames = started(run(jb, stream(sig, lose=lambda k: k in lost), duration=10.0))
    assert len(frames) >= 10.0 / TICK - 10
    concealed = sum(f.concealed for f in frames)
    assert concealed >= 0.9 * len([k for k in lost if k < len(frames)])
    # Concealment fades out after 60 ms: a 5-frame burst ends in silence.
    out = pcm_of(frames)
    assert np.array_equal(out[: 5 * FRAME], sig[: 5 * FRAME])


# -- delay adaptation ------------------------------------------------------------------------


def test_jitter_spikes_grow_target_within_max_delay() -> None:
    sig = voiced(RATE * 20)
    n = len(sig) // FRAME

    def spike(k: int) -> float:
        # Every 2 s the network holds packets for 100 ms and then releases them at once.
        t = (k % 100) * TICK
        return max(0.0, 0.100 - t) if k >= 100 else 0.0

    targets: list[float] = []
    jb = JitterBuffer()

    def watch(now: float, frame: AudioFrame | None) -> None:
        targets.append(jb.stats.target_delay)

    frames = started(run(jb, stream(sig, jitter=spike), duration=20.0, on_pop=watch))
    st = jb.stats
    assert len(frames) >= n - 10
    assert st.late > 0
    assert max(targets) == pytest.approx(0.060)  # grew, but only up to max_delay
    assert min(targets) == pytest.approx(0.010)
    assert st.inserted > 0  # the buffer actually deepened
    # Deeper buffer -> later spikes cost fewer packets than the first one did.
    late_per_spike = st.late / 9
    assert late_per_spike < 5


def test_steady_jitter_sets_target_and_avoids_late_packets() -> None:
    sig = voiced(RATE * 20)
    rng = np.random.default_rng(3)
    jit = rng.uniform(0.0, 0.030, len(sig) // FRAME)
    jb = JitterBuffer()
    frames = started(run(jb, stream(sig, jitter=lambda k: float(jit[k])), duration=20.0))
    st = jb.stats
    assert 0.025 <= st.target_delay <= 0.060
    assert st.late <= 15  # only while adapting at the start
    assert sum(f.concealed for f in frames) <= 40
    assert st.jitter == pytest.approx(0.010, abs=0.004)  # E|U1-U2| = 30/3 ms


# -- stream changes --------------------------------------------------------------------------


def test_ssrc_change_resyncs_without_gap() -> None:
    a = voiced(RATE * 2, seed=1)
    b = voiced(RATE * 2, seed=7)
    pkts = list(stream(a, ssrc=111, seq0=10, ts0=1000))
    # The new source continues in time but with unrelated sequence numbers and timestamps.
    pkts += list(stream(b, ssrc=222, seq0=40_000, ts0=3_000_000_000, start=2.0))
    jb = JitterBuffer()
    frames = started(run(jb, pkts, duration=4.0))
    out = pcm_of(frames)
    st = jb.stats
    assert st.resyncs == 1
    assert not any(f.concealed for f in frames)
    both = np.concatenate((a, b))
    assert is_prefix(out, both)
    assert len(out) >= len(both) - 4 * FRAME


def test_stray_packet_of_previous_ssrc_does_not_flip_back() -> None:
    a = voiced(RATE * 2, seed=1)
    b = voiced(RATE * 2, seed=7)
    pkts = list(stream(a, ssrc=111))
    last = pkts[-1]
    pkts += list(stream(b, ssrc=222, seq0=9, ts0=77, start=2.0))
    pkts.append(replace(last, arrival=last.arrival + 0.07))  # late duplicate after the switch
    jb = JitterBuffer()
    started(run(jb, pkts, duration=4.0))
    assert jb.stats.resyncs == 1


def test_timestamp_jump_resyncs() -> None:
    a = voiced(RATE * 2, seed=1)
    b = voiced(RATE * 2, seed=7)
    pkts = list(stream(a, seq0=10, ts0=1000))
    # Same SSRC, sequence continues, timestamp jumps 1 hour (e.g. a media server restart).
    pkts += list(stream(b, seq0=10 + 100, ts0=1000 + 3600 * RATE, start=2.0))
    jb = JitterBuffer()
    frames = started(run(jb, pkts, duration=4.0))
    assert jb.stats.resyncs == 1
    assert sum(f.concealed for f in frames) == 0
    out = pcm_of(frames)
    both = np.concatenate((a, b))
    assert is_prefix(out, both)


def test_sequence_jump_needs_confirmation() -> None:
    a = voiced(RATE * 2, seed=1)
    b = voiced(RATE * 2, seed=7)
    pkts = list(stream(a, seq0=10, ts0=1000))
    stray = pkts[50]
    pkts.append(Pkt(stray.arrival + 0.001, stray.ssrc, 30_000, stray.ts, stray.pcm))
    pkts += list(stream(b, seq0=20_000, ts0=1000 + 2 * RATE, start=2.0))
    jb = JitterBuffer()
    frames = started(run(jb, pkts, duration=4.0))
    assert jb.stats.resyncs == 1  # the lone stray did not resync; the real jump did
    out = pcm_of(frames)
    # All of the first stream, bit-exact; the second stream's first packet waits for the
    # next to confirm the jump (20 ms), which a 10 ms buffer covers with one concealed frame.
    assert is_prefix(out, a)
    assert jb.stats.lost == 1
    # then the concealed frame, b's first frame fading in from it, and b bit-exact
    assert find_in(out[len(a) + 2 * FRAME :], b, min_len=RATE) == FRAME


def test_source_stops_then_resumes() -> None:
    a = voiced(RATE * 2, seed=1)
    b = voiced(RATE * 2, seed=7)
    pkts = list(stream(a, ts0=0))
    # 3 s of nothing (hold), then the same source resumes, its timestamps 1.5 s on.
    pkts += list(stream(b, seq0=1100, ts0=int(3.5 * RATE), start=5.0))
    jb = JitterBuffer()
    frames = run(jb, pkts, duration=7.5)
    t = [0.0071 + k * TICK for k in range(len(frames))]
    playing_a = [f for f, tt in zip(frames, t, strict=True) if 0.2 < tt < 2.05]
    assert all(f is not None and not f.concealed for f in playing_a)
    gap = [f for f, tt in zip(frames, t, strict=True) if 2.1 < tt < 3.0]
    assert all(f is not None and f.concealed for f in gap)  # concealment, fading to silence
    assert all(f is not None and rms(np.frombuffer(f.pcm, "<i2")) == 0 for f in gap[5:])
    stalled = [f for f, tt in zip(frames, t, strict=True) if 3.1 < tt < 5.0]
    assert stalled and all(f is None for f in stalled)
    resumed = started([f for f, tt in zip(frames, t, strict=True) if tt > 3.1])
    # Arrives at 5.05 s, plays from 5.06 s, fading in over the first frame, then bit-exact.
    assert 5.06 <= t[frames.index(resumed[0])] < 5.06 + TICK
    assert not any(f.concealed for f in resumed[: 2 * RATE // FRAME])
    out = pcm_of(resumed)
    assert not np.array_equal(out[:FRAME], b[:FRAME])
    assert find_in(out[FRAME:], b, min_len=RATE) == FRAME
    assert jb.stats.resyncs == 0


# -- clock skew ------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [0.005, -0.005])
@pytest.mark.parametrize("kind", ["speech", "tone"])
def test_clock_skew_does_not_drift(skew: float, kind: str) -> None:
    minutes = 10 if kind == "speech" else 3
    duration = minutes * 60.0
    base = talk_spurts(RATE * 10) if kind == "speech" else voiced(RATE * 10)
    sig = np.tile(base, minutes * 6 + 1)  # the sender outlasts the run
    rng = np.random.default_rng(11)
    jit = rng.uniform(0.0, 0.010, len(sig) // FRAME)
    depths: list[float] = []
    jb = JitterBuffer()

    def watch(now: float, frame: AudioFrame | None) -> None:
        depths.append(jb.stats.depth)

    frames = started(
        run(jb, stream(sig, skew=skew, jitter=lambda k: float(jit[k])), duration, on_pop=watch)
    )
    st = jb.stats
    surplus = abs(skew) * duration * RATE  # samples the buffer has to absorb (about)
    assert len(frames) >= duration / TICK - 10
    assert max(depths[100:]) <= 0.120  # bounded: no drift
    assert np.mean(depths[-3000:]) <= 0.080
    if skew > 0:
        assert st.dropped == pytest.approx(surplus, rel=0.2)
    else:
        assert st.inserted == pytest.approx(surplus, rel=0.2)
    concealed = sum(f.concealed for f in frames)
    assert concealed <= 0.02 * len(frames)  # no runaway concealment
    assert st.lost <= 0.01 * len(frames)
    # Every drop and insert is cross-faded: no sample step beyond what the input has.
    step = np.abs(np.diff(pcm_of(frames).astype(np.float64)))
    assert step.max() <= 1.1 * np.abs(np.diff(sig.astype(np.float64))).max()


# -- talk-spurts, path changes, consumer hiccups ---------------------------------------------


def test_dtx_talk_spurts_with_marker() -> None:
    # Silence suppression: nothing is sent during pauses; each spurt starts with marker=1
    # (RFC 3551 §4.1) and timestamps keep counting real time.
    sig = talk_spurts(RATE * 10)
    on = (np.arange(len(sig) // FRAME) * FRAME / RATE) % 2.0 < 1.2
    pkts = []
    for k, p in enumerate(stream(sig)):
        if on[k]:
            pkts.append(Pkt(p.arrival, p.ssrc, p.seq, p.ts, p.pcm, marker=k == 0 or not on[k - 1]))
    seq = {p.ts: i for i, p in enumerate(pkts)}
    pkts = [
        Pkt(p.arrival, p.ssrc, (1000 + seq[p.ts]) & 0xFFFF, p.ts, p.pcm, p.marker) for p in pkts
    ]
    jb = JitterBuffer()
    frames = started(run(jb, pkts, duration=10.0))
    out = pcm_of(frames)
    # Spurts play bit-exact in their place; pauses are concealment fading to silence.
    for k, f in enumerate(frames):
        if on[k] and k > 0 and on[k - 1]:
            assert np.array_equal(np.frombuffer(f.pcm, "<i2"), sig[k * FRAME : (k + 1) * FRAME])
        if not on[k] and k >= 4 and not on[k - 4]:
            assert not np.any(np.frombuffer(f.pcm, "<i2"))
    assert len(out) >= len(sig) - 4 * FRAME
    assert jb.stats.late == 0


def test_marker_lets_the_buffer_shrink_in_the_pause() -> None:
    # The first packet is 60 ms slow, so playout starts 60 ms too deep; the surplus is
    # removed from the first pause (the silent gap before the next marked packet).
    sig = talk_spurts(RATE * 6)
    on = (np.arange(len(sig) // FRAME) * FRAME / RATE) % 2.0 < 1.2
    pkts = []
    for k, p in enumerate(stream(sig, jitter=lambda k: 0.060 if k == 0 else 0.0)):
        if on[k]:
            pkts.append(Pkt(p.arrival, p.ssrc, p.seq, p.ts, p.pcm, marker=k > 0 and not on[k - 1]))
    jb = JitterBuffer(JitterConfig(spike_window=0.5))
    delays: list[float] = []
    run(jb, pkts, duration=6.0, on_pop=lambda now, f: delays.append(jb.stats.delay))
    t = np.arange(len(delays)) * TICK
    assert max(np.array(delays)[(t > 0.5) & (t < 1.2)]) > 0.070  # still too deep while talking
    assert max(np.array(delays)[(t > 2.1) & (t < 3.2)]) < 0.045  # fixed in the pause
    assert jb.stats.dropped >= 0.040 * RATE


def test_path_delay_increase_reanchors() -> None:
    # At 3 s the route changes and every packet arrives 150 ms later, for good.
    sig = voiced(RATE * 8)
    jb = JitterBuffer()
    frames = started(
        run(jb, stream(sig, jitter=lambda k: 0.150 if k >= 150 else 0.0), duration=8.0)
    )
    assert len(frames) >= 8.0 / TICK - 10
    # A short outage (concealment) at the change, then clean playback again.
    concealed = [i for i, f in enumerate(frames) if f.concealed]
    assert 3 <= len(concealed) <= 25
    assert not any(f.concealed for f in frames[-150:])
    assert jb.stats.delay <= 0.045
    out = pcm_of(frames[-150:])
    find_in(out, sig, min_len=len(out) - 10 * FRAME)


def test_consumer_pause_is_recovered_by_skipping() -> None:
    # The receiver task stalls for 400 ms (packets keep arriving); afterwards the buffer
    # must not keep the extra 400 ms of latency.
    sig = voiced(RATE * 5)
    pending = sorted(stream(sig), key=lambda p: p.arrival)
    jb = JitterBuffer()
    i = 0
    frames = []
    for k in range(round(5.0 / TICK)):
        now = 0.0071 + k * TICK
        while i < len(pending) and pending[i].arrival <= now:
            p = pending[i]
            jb.push(p.ssrc, p.seq, p.ts, p.pcm, p.arrival, p.marker)
            i += 1
        if 2.0 <= now < 2.4:
            continue  # no pops
        frames.append(jb.pop(now))
    assert all(f is not None for f in frames[5:])
    assert jb.stats.delay <= 0.045
    assert jb.stats.dropped >= 0.3 * RATE


def test_stats_is_a_snapshot_and_config_is_validated() -> None:
    jb = JitterBuffer()
    s = jb.stats
    jb.push(1, 1, 0, bytes(320), 0.0)
    assert s.received == 0
    assert jb.stats.received == 1
    with pytest.raises(ValueError):
        JitterConfig(min_delay=0.1, max_delay=0.05)
    with pytest.raises(ValueError):
        JitterConfig(frame_samples=0)
    with pytest.raises(ValueError, match="15 ms"):
        JitterConfig(frame_samples=80)  # 10 ms at 8 kHz: the time-stretch could not cut a period


def test_odd_and_empty_payloads() -> None:
    jb = JitterBuffer()
    jb.push(1, 1, 0, b"", 0.0)
    assert jb.pop(0.1) is None
    jb.push(1, 2, 0, bytes(321), 0.0)
    frame = jb.pop(0.1)
    assert frame is not None
    assert frame.samples == FRAME


# -- the consumer's phase ----------------------------------------------------------------------


def test_slack_says_how_much_earlier_the_consumer_may_pop() -> None:
    """A consumer popping 20 ms apart at a phase of its own holds every frame from when it is
    due until its pop. `take_slack` measures that wait; popping that much earlier (rounded
    down to the media clock's 5 ms slots) takes it off the delay and loses nothing."""
    sig = voiced(RATE * 6)
    rng = np.random.default_rng(5)
    jit = rng.uniform(0.0, 0.003, len(sig) // FRAME)
    pending = sorted(stream(sig, jitter=lambda k: float(jit[k])), key=lambda p: p.arrival)
    jb = JitterBuffer()
    frames: list[AudioFrame | None] = []
    delays: list[float] = []
    slacks: list[tuple[float, float]] = []
    now, i, moved = 0.0141, 0, []
    while now < 6.0:
        while i < len(pending) and pending[i].arrival <= now:
            p = pending[i]
            jb.push(p.ssrc, p.seq, p.ts, p.pcm, p.arrival)
            i += 1
        frames.append(jb.pop(now))
        delays.append(jb.stats.delay)
        slack = jb.take_slack(50)
        step = TICK
        if slack is not None:
            slacks.append((now, slack))
            if slack >= 0.005:  # as the media clock does: whole 5 ms slots
                moved.append(0.005 * int(slack / 0.005))
                step -= moved[-1]  # the next pop comes that much sooner, then 20 ms apart
        now += step
    out = started(frames)
    st = jb.stats
    assert slacks[0][1] >= 0.010, "this phase leaves slack to take"
    assert len(moved) >= 1 and sum(moved) >= 0.010
    assert not any(f.concealed for f in out)
    assert (st.late, st.lost, st.inserted, st.dropped) == (0, 0, 0, 0)
    assert is_prefix(pcm_of(out), sig)
    # The delay fell by what the consumer moved, and what slack is left is under one slot.
    assert delays[40] - delays[-1] == pytest.approx(sum(moved), abs=0.001)
    assert all(s < 0.005 for _, s in slacks[len(moved) :])
    assert st.delay - st.target_delay < 0.005


def test_slack_restarts_after_an_adjustment() -> None:
    jb = JitterBuffer()
    sig = voiced(RATE * 2)
    run(jb, stream(sig), duration=2.0)
    assert jb.take_slack(50) is not None
    assert jb.take_slack(50) is None  # counting starts again
    # Popping far too early makes the buffer conceal to deepen: no slack is claimed for it.
    jb2 = JitterBuffer()
    for p in stream(sig[: FRAME * 10]):
        jb2.push(p.ssrc, p.seq, p.ts, p.pcm, p.arrival)
    assert jb2.take_slack(1) is None


def _pop_late(
    jb: JitterBuffer, packets: Iterable[Pkt], schedule: list[float], late: Callable[[int], float]
) -> list[AudioFrame | None]:
    """Pop at `schedule[k] + late(k)`, saying so (`late`), as a leg ticked inside a long media
    pass does: the packets that arrived meanwhile are in the buffer."""
    pending = sorted(packets, key=lambda p: p.arrival)
    out: list[AudioFrame | None] = []
    i = 0
    for k, at in enumerate(schedule):
        now = at + late(k)
        while i < len(pending) and pending[i].arrival <= now:
            p = pending[i]
            jb.push(p.ssrc, p.seq, p.ts, p.pcm, p.arrival, p.marker)
            i += 1
        out.append(jb.pop(now, now - at))
    return out


def test_a_pop_late_in_the_pass_does_not_move_the_playout_point() -> None:
    """The first frame becomes due 5 ms after a tick's schedule, and that tick runs 8 ms late
    (its leg came last in a long media pass); the ticks after it run on time. Playout follows
    the schedule, not when each tick happened to run: the buffer starts on the next tick and
    never inserts a frame, which used to add 20 ms to the rest of the call (seen at 800 calls)."""
    sig = talk_spurts(RATE * 4)
    # sent at k * 20 ms, 30 ms transit: the first packet is due at 0.060 s (+ 10 ms target)
    schedule = [0.055 + k * TICK for k in range(200)]
    frames = _pop_late(JitterBuffer(), stream(sig), schedule, lambda k: 0.008 if k == 0 else 0.0)
    out = started(frames)
    assert frames.index(out[0]) == 1  # not on the late tick that saw it due
    assert not any(f.concealed for f in out[: len(sig) // FRAME - 2])
    assert is_prefix(pcm_of(out), sig)


@pytest.mark.parametrize("seed", range(6))
def test_how_late_a_tick_runs_within_its_pass_changes_no_frame(seed: int) -> None:
    """Ticks that run 0-9 ms after their schedule, at random (a leg's place in the pass), pop
    the same frames and count the same as ticks that run on time, whenever the packets they
    need have arrived by the schedule."""
    sig = talk_spurts(RATE * 6, seed=seed)
    rng = np.random.default_rng(seed)
    jit = rng.uniform(0.0, 0.004, len(sig) // FRAME)
    lates = rng.uniform(0.0, 0.009, 400) * (rng.random(400) < 0.3)
    packets = list(stream(sig, jitter=lambda k: float(jit[k])))
    # Arrivals fall in [30, 34] ms after the 20 ms grid and frames are due 10 ms after the
    # fastest: ticks scheduled at +38 ms have every packet they need, and one that runs late
    # passes the moment the frame is due.
    schedule = [0.038 + k * TICK for k in range(300)]
    on_time, late = JitterBuffer(), JitterBuffer()
    a = _pop_late(on_time, packets, schedule, lambda k: 0.0)
    b = _pop_late(late, packets, schedule, lambda k: float(lates[k]))
    assert [f.pcm if f else None for f in a] == [f.pcm if f else None for f in b]
    sa, sb = on_time.stats, late.stats
    assert (sa.inserted, sa.dropped, sa.lost, sa.late) == (
        sb.inserted,
        sb.dropped,
        sb.lost,
        sb.late,
    )


def test_passes_run_behind_and_catch_up_without_touching_the_audio() -> None:
    """The process stalls for 50 ms (a busy moment, under the media clock's STALL): the three
    ticks due meanwhile run back to back when it resumes, each told how late it is, as the
    media clock runs the passes it owes. The buffer plays on as if they had run on time:
    dropping audio to catch the late ticks up would leave the catch-up ticks short, and
    insert it back as concealment."""
    sig = voiced(RATE * 3)
    schedule = [0.055 + k * TICK for k in range(150)]
    resume = schedule[52] + 0.009

    def late(k: int) -> float:
        return resume - schedule[k] if 50 <= k <= 52 else 0.0

    jb = JitterBuffer()
    frames = _pop_late(jb, stream(sig), schedule, late)
    out = started(frames)
    st = jb.stats
    assert (st.inserted, st.dropped, st.lost, st.late) == (0, 0, 0, 0)
    assert not any(f.concealed for f in out[: len(sig) // FRAME - 3])
    assert is_prefix(pcm_of(out), sig)
