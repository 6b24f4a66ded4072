"""The media helpers of the streaming legs (AudioSocket, chan_websocket): caller audio cut in
pipeline frames at any rate and chunk size, concealment when the peer is late, the drop of
audio too far ahead of real time; the agent's audio at the peer's rate in whole frames."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.core.frames import FRAME_BYTES
from callbridge.transports.asterisk.stream_media import AgentStream, CallerStream


def test_any_chunking_gives_whole_frames_of_the_same_audio() -> None:
    pcm = (np.arange(8000) % 200 - 100).astype("<i2").tobytes()  # 1 s at 8 kHz
    for chunk in (2, 100, 320, 999 * 2, 4000):
        s = CallerStream(max_ahead_frames=100)
        frames = [
            f for i in range(0, len(pcm), chunk) for f in s.receive(pcm[i : i + chunk], 8000, 0.0)
        ]
        assert [len(f.pcm) for f in frames] == [FRAME_BYTES] * 50
        assert b"".join(f.pcm for f in frames) == pcm


def test_a_late_peer_is_concealed_and_a_burst_ahead_is_dropped() -> None:
    s = CallerStream(slack_frames=3, max_ahead_frames=5)
    assert s.tick(0.0) == []  # nothing before the first audio
    assert len(s.receive(bytes(FRAME_BYTES), 8000, 10.0)) == 1
    assert s.tick(10.04) == []  # 2 frames late: within the slack
    concealed = s.tick(10.2)  # 11 frames owed (0 ms ... 200 ms), 1 delivered, 3 of slack
    assert len(concealed) == 7 and all(f.concealed for f in concealed)
    burst = s.receive(bytes(FRAME_BYTES * 20), 8000, 10.2)
    assert len(burst) == 8  # 8 delivered so far: up to 11 owed + 5 ahead of real time
    assert (s.stats.frames, s.stats.concealed_frames, s.stats.ahead_frames) == (16, 7, 12)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([12000, 16000, 24000, 48000]), st.integers(1, 5))
def test_other_rates_are_resampled_to_pipeline_frames(rate: int, frames: int) -> None:
    s = CallerStream(max_ahead_frames=100)
    pcm = bytes(rate // 50 * 2 * frames)
    out = s.receive(pcm, rate, 0.0)
    assert frames - 1 <= len(out) <= frames and all(len(f.pcm) == FRAME_BYTES for f in out)


def test_agent_audio_in_whole_peer_frames_and_drop() -> None:
    a = AgentStream(8000, frame_bytes=480)  # 30 ms frames of 8 kHz slin
    assert a.convert(bytes(FRAME_BYTES)) == []
    assert a.convert(bytes(FRAME_BYTES)) == [bytes(480)]  # 40 ms in, one 30 ms frame out
    a.drop()
    assert a.convert(bytes(FRAME_BYTES)) == []  # the 10 ms held back went with the drop
    wide = AgentStream(16000)
    out = b"".join(b for _ in range(5) for b in wide.convert(bytes(FRAME_BYTES)))
    assert 5 * 640 - 64 <= len(out) <= 5 * 640
