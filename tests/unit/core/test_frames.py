"""AudioFrame: the one internal audio format, a value like the frozen dataclasses."""

from __future__ import annotations

import pickle

import pytest

from callbridge import native
from callbridge.core.frames import FRAME_SAMPLES, PIPELINE_RATE, AudioFrame


def test_a_frame_is_a_value() -> None:
    a = AudioFrame(b"\x01\x00" * 160)
    b = AudioFrame(b"\x01\x00" * 160, PIPELINE_RATE, False)
    assert a == b and hash(a) == hash(b)
    assert a != AudioFrame(b"\x01\x00" * 160, concealed=True)
    assert a != AudioFrame(b"\x01\x00" * 160, sample_rate=16000)
    assert a != AudioFrame(b"\x02\x00" * 160)
    assert a != b"\x01\x00" * 160  # a frame is not its bytes
    assert len({a, b}) == 1
    assert repr(AudioFrame(b"\x00\x00", 16000, True)) == (
        "AudioFrame(pcm=b'\\x00\\x00', sample_rate=16000, concealed=True)"
    )


def test_a_frame_matches_by_keyword_and_by_position() -> None:
    frame = AudioFrame(b"\x00\x01", 16000)
    match frame:
        case AudioFrame(pcm=pcm, concealed=False):
            assert pcm == b"\x00\x01"
        case _:
            pytest.fail("no keyword match")
    match frame:
        case AudioFrame(pcm, rate):
            assert (pcm, rate) == (b"\x00\x01", 16000)
        case _:
            pytest.fail("no positional match")
    match "not a frame":
        case AudioFrame():
            pytest.fail("matched a str")


def test_size_silence_and_bad_input() -> None:
    silence = AudioFrame.silence()
    assert silence.samples == FRAME_SAMPLES and silence.pcm == bytes(2 * FRAME_SAMPLES)
    assert silence.duration == 0.02 and not silence.concealed
    assert AudioFrame.silence(320, 16000).duration == 0.02
    with pytest.raises(ValueError, match="even number of bytes"):
        AudioFrame(b"\x00\x01\x02")


def test_a_frame_survives_pickling() -> None:
    frame = AudioFrame(b"\x05\x00" * 8, 16000, True)
    assert pickle.loads(pickle.dumps(frame)) == frame


def test_compiled_frames_are_read_only() -> None:
    frame = AudioFrame.silence()
    if not native.status().native:  # interpreted: read-only to mypy (Final), not at run time
        return
    with pytest.raises(AttributeError):
        frame.pcm = b""  # type: ignore[misc]
    with pytest.raises(AttributeError):
        frame.concealed = True  # type: ignore[misc]
    assert frame == AudioFrame.silence()
