"""Caller audio timeline: prompt delivery, timestamp placement, concealment of stalls and
skipped audio, late payloads dropped once their time was concealed."""

from __future__ import annotations

import numpy as np

from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.core.frames import AudioFrame
from callbridge.mediastream.inbound import CallerAudio

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
