"""Caller audio timeline: prompt delivery, timestamp placement, concealment of stalls and
skipped audio, late payloads dropped once their time was concealed; and the inbound limits:
message size and rate (InboundGuard), audio never more than max_ahead ahead of real time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.core.frames import AudioFrame
from callbridge.twilio_streams import inbound
from callbridge.twilio_streams.inbound import CallerAudio, InboundGuard, Refusal, message_size

T0 = 100.0


def tone(n: int, frames: int = 1) -> bytes:
    """µ-law of a 440 Hz tone, frame `n` of it (continuous across frames)."""
    t = (np.arange(160 * frames) + 160 * n) / 8000
    return ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())


def pcm(frames: list[AudioFrame]) -> list[bytes]:
    return [f.pcm for f in frames]


def test_each_payload_is_delivered_at_once_in_order() -> None:
    audio = CallerAudio()
    for n in range(5):
        out = audio.receive(20 * n, tone(n), T0 + 0.02 * n)
        assert pcm(out) == [ulaw_decode(tone(n))]
        assert not out[0].concealed
    assert audio.tick(T0 + 0.08) == []  # nothing is overdue
    assert audio.stats.frames == 5


def test_a_stall_is_concealed_one_frame_per_frame_time() -> None:
    audio = CallerAudio(slack=0.06)
    audio.receive(0, tone(0), T0)
    # Frame 1 is due at T0 + 0.02; concealed only once it is `slack` late.
    assert audio.tick(T0 + 0.079) == []
    out = audio.tick(T0 + 0.081)
    assert len(out) == 1 and out[0].concealed
    out = audio.tick(T0 + 0.2)  # 120 ms later: frames 2..7 are overdue too
    assert len(out) == 6 and all(f.concealed for f in out)
    # The stalled payloads arrive in a burst: those concealed are dropped, the rest delivered.
    delivered = []
    for n in range(1, 10):
        delivered += audio.receive(20 * n, tone(n), T0 + 0.2)
    assert pcm(delivered)[0] != b""
    assert len(delivered) == 2  # frames 8 and 9
    assert audio.stats.late_payloads == 7
    assert audio.stats.frames == 10


def test_recovery_cross_fades_into_real_audio() -> None:
    audio = CallerAudio(slack=0.0)
    for n in range(10):
        audio.receive(20 * n, tone(n), T0 + 0.02 * n)
    assert len(audio.tick(T0 + 0.21)) == 1  # frame 10 lost
    first_good = audio.receive(220, tone(11), T0 + 0.22)
    assert len(first_good) == 1 and not first_good[0].concealed
    # Same tone, so concealment continues it well: the seam has no click.
    x = np.frombuffer(first_good[0].pcm, "<i2").astype(float)
    assert np.max(np.abs(np.diff(x))) < 0.6 * 8000


def test_a_timestamp_jump_is_concealed_at_arrival() -> None:
    """Audio Twilio never received: the next payload's timestamp jumps (no stall)."""
    audio = CallerAudio(slack=0.2)
    audio.receive(0, tone(0), T0)
    out = audio.receive(60, tone(3), T0 + 0.02)  # frames 1 and 2 never existed
    assert [f.concealed for f in out] == [True, True, False]
    # The real frame is cross-faded in over its first samples, then exact.
    assert pcm(out)[2][200:] == ulaw_decode(tone(3))[200:]
    assert pcm(audio.receive(80, tone(4), T0 + 0.04)) == [ulaw_decode(tone(4))]


def test_payloads_of_any_size_become_20ms_frames() -> None:
    audio = CallerAudio()
    out = audio.receive(0, tone(0, frames=3)[:400], T0)  # 50 ms
    assert len(out) == 2
    out += audio.receive(50, tone(0, frames=3)[400:], T0 + 0.05)
    assert len(out) == 3
    assert b"".join(pcm(out)) == ulaw_decode(tone(0, frames=3))


def test_overlap_keeps_only_the_new_part() -> None:
    audio = CallerAudio()
    audio.receive(0, tone(0), T0)
    out = audio.receive(10, tone(0, frames=2)[80:240], T0 + 0.03)  # 10..30 ms, 10..20 known
    assert out == []
    out = audio.receive(30, tone(0, frames=3)[240:400], T0 + 0.05)
    assert len(out) == 1 and not out[0].concealed
    assert out[0].pcm == ulaw_decode(tone(1))


def test_late_delay_increase_reanchors() -> None:
    audio = CallerAudio(slack=0.04)
    audio.receive(0, tone(0), T0)
    # From frame 1 on, the network adds 100 ms: two frames get concealed, then the timeline
    # follows the new delay instead of concealing and dropping every frame from now on.
    got = audio.tick(T0 + 0.1)
    assert len(got) == 2
    for n in range(1, 20):
        at = T0 + 0.1 + 0.02 * n
        got += audio.receive(20 * n, tone(n), at)
        got += audio.tick(at + 0.001)
    assert audio.stats.late_payloads == 2
    assert len(got) == 19
    assert sum(f.concealed for f in got) == 2


def test_implausible_jump_is_followed_not_filled() -> None:
    audio = CallerAudio(max_fill=1.0)
    audio.receive(0, tone(0), T0)
    out = audio.receive(3_600_000, tone(1), T0 + 0.02)  # an hour ahead
    assert len(out) == 1 and not out[0].concealed
    assert audio.stats.resyncs == 1


def test_nothing_before_the_first_payload() -> None:
    audio = CallerAudio()
    assert audio.tick(T0 + 10) == []
    assert not audio.started


# ---- bounded: never more than max_ahead ahead of real time (issue 9, D7) ----------------------


def test_a_flood_of_timestamps_delivers_one_second_then_real_time() -> None:
    audio = CallerAudio(max_ahead=1.0)
    got = []
    for n in range(3000):  # a minute of audio in one instant
        got += audio.receive(20 * n, tone(n), T0)
    assert len(got) == 50
    assert audio.stats.ahead_payloads == 2950
    assert audio.stats.ahead_samples == 2950 * 160
    # As real time passes the credit refills: one frame's worth per 20 ms, no more.
    got = audio.receive(20 * 50, tone(50), T0 + 0.02)
    assert len(got) == 1
    assert audio.receive(20 * 51, tone(51), T0 + 0.02) == []


def test_a_flood_of_gaps_or_resyncs_is_bounded_too() -> None:
    gaps = CallerAudio(max_fill=1.0)
    frames = sum(len(gaps.receive(990 * n, tone(0), T0)) for n in range(500))  # fills of 970 ms
    assert frames <= 50
    resyncs = CallerAudio(max_fill=1.0)
    frames = sum(len(resyncs.receive(2000 * n, tone(0, 50), T0)) for n in range(500))  # 1 s each
    assert frames == 50 and resyncs.stats.ahead_payloads == 499


def test_dropped_payloads_are_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    real = ulaw_decode

    def counting(payload: bytes) -> bytes:
        decoded.append(len(payload))
        return real(payload)

    monkeypatch.setattr(inbound, "ulaw_decode", counting)
    audio = CallerAudio(max_ahead=1.0)
    assert audio.receive(0, b"\xff" * 8001, T0) == []  # longer than a second: refused
    assert audio.stats.oversized_payloads == 1
    for n in range(100):
        audio.receive(20 * n, tone(n), T0)
    assert decoded == [160] * 50


@given(
    st.lists(
        st.tuples(
            st.integers(0, 200_000),  # timestamp, ms
            st.integers(0, 8000),  # payload bytes
            st.floats(0, 0.5),  # time since the previous message
        ),
        max_size=60,
    )
)
def test_received_audio_never_outruns_real_time_by_more_than_max_ahead(
    messages: list[tuple[int, int, float]],
) -> None:
    audio = CallerAudio(max_ahead=1.0)
    now, delivered = T0, 0
    for timestamp, size, dt in messages:
        now += dt
        delivered += sum(f.samples for f in audio.receive(timestamp, b"\xff" * size, now))
        assert delivered <= 8000 + (now - T0) * 8000 * 1.01 + 1e-6


def test_a_long_call_from_a_fast_clock_loses_nothing() -> None:
    """Two minutes from a sender whose clock runs 0.5 % fast, with jitter: no drops."""
    audio = CallerAudio()
    rng = np.random.default_rng(7)
    got = 0
    for n in range(6000):
        at = T0 + n * 0.02 / 1.005 + rng.uniform(0, 0.03)
        got += len(audio.receive(20 * n, tone(0), at))
    assert audio.stats.ahead_payloads == 0
    assert got == 6000


# ---- message size and rate ----------------------------------------------------------------------


def test_message_size_is_utf8_bytes() -> None:
    assert message_size("abc") == 3
    assert message_size("é" * 10) == 20
    assert message_size(b"\x00" * 7) == 7


def test_guard_refuses_a_message_over_the_limit_by_its_bytes() -> None:
    guard = InboundGuard(max_message_bytes=100)
    assert guard.check("x" * 100, T0) is None
    assert guard.check("é" * 60, T0) == Refusal(
        1009, "message too big: 120 bytes, limit 100", "message_too_big"
    )
    assert guard.check(b"x" * 101, T0) is not None
    huge = "x" * 10_000_000
    assert guard.check(huge, T0) == Refusal(
        1009, "message too big: 10000000 bytes, limit 100", "message_too_big"
    )


def test_guard_rate_is_a_sliding_second() -> None:
    guard = InboundGuard(max_messages_per_s=10)
    for i in range(10):
        assert guard.check("m", T0 + i * 0.05) is None
    refusal = guard.check("m", T0 + 0.9)
    assert refusal == Refusal(1008, "rate limit: over 10 messages/s", "rate_limit")
    slow = InboundGuard(max_messages_per_s=10)
    for i in range(100):  # 10 per second, forever: fine
        assert slow.check("m", T0 + i * 0.1) is None


def test_guard_byte_rate() -> None:
    guard = InboundGuard(max_message_bytes=1000, max_bytes_per_s=2500)
    assert guard.check("x" * 1000, T0) is None
    assert guard.check("x" * 1000, T0 + 0.5) is None
    assert guard.check("x" * 1000, T0 + 1.2) is None  # the first left the window
    assert guard.check("x" * 1000, T0 + 1.3) == Refusal(
        1008, "rate limit: over 2500 bytes/s", "rate_limit"
    )
    # A message the size limit allows always fits the byte rate.
    assert InboundGuard(max_message_bytes=4 << 20).max_bytes_per_s == 4 << 20


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limits"):
        InboundGuard(max_message_bytes=0)
    with pytest.raises(ValueError, match="max_ahead"):
        CallerAudio(max_ahead=0.01)
