"""AudioSocket framing against byte fixtures written from res_audiosocket.c (see SOURCES.md)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.asterisk.audiosocket import (
    FROM_ASTERISK,
    MAX_PAYLOAD_BYTES,
    TO_ASTERISK,
    Audio,
    AudioSocketDecoder,
    Dtmf,
    ErrorCode,
    ErrorFrame,
    Hangup,
    Kind,
    UuidFrame,
    audio_frames,
    encode,
    frame_bytes,
    kind_for_rate,
)
from callbridge.asterisk.errors import AudioSocketError
from callbridge.core.errors import ProtocolError

from .fuzz_targets import FIXTURES

CALL = uuid.UUID("40325ec2-5efd-4bd3-805f-53576e581d13")


def golden(name: str) -> bytes:
    return (FIXTURES / f"audiosocket-{name}.bin").read_bytes()


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("uuid", UuidFrame(CALL)),
        ("dtmf-5", Dtmf("5")),
        ("dtmf-hash", Dtmf("#")),
        ("hangup", Hangup()),
        ("error-hangup", ErrorFrame(b"\x01")),
    ],
)
def test_golden_frames_encode_and_decode(name: str, frame: object) -> None:
    data = golden(name)
    assert encode(frame) == data  # type: ignore[arg-type]
    assert AudioSocketDecoder().feed(data) == [frame]


@pytest.mark.parametrize(("name", "rate", "kind"), [("slin", 8000, 0x10), ("slin16", 16000, 0x12)])
def test_golden_audio(name: str, rate: int, kind: int) -> None:
    data = golden(f"audio-{name}-20ms")
    (frame,) = AudioSocketDecoder().feed(data)
    assert frame == Audio(data[3:], rate)
    assert len(data) - 3 == frame_bytes(rate) and data[0] == kind
    assert encode(frame) == data


def test_the_stream_asterisk_sends_decodes_in_any_chunking() -> None:
    data = golden("stream-from-asterisk")
    expected = AudioSocketDecoder().feed(data)
    assert [type(f).__name__ for f in expected] == [
        "UuidFrame",
        "Audio",
        "Audio",
        "Audio",
        "Dtmf",
        "Audio",
    ]
    assert expected[0] == UuidFrame(CALL) and expected[4] == Dtmf("7")
    for size in (1, 2, 3, 5, 322, 1000):
        decoder = AudioSocketDecoder()
        frames = [f for i in range(0, len(data), size) for f in decoder.feed(data[i : i + size])]
        assert frames == expected
        assert decoder.buffered == 0


def test_partial_frame_is_held_back() -> None:
    decoder = AudioSocketDecoder()
    data = golden("audio-slin-20ms")
    assert decoder.feed(data[:100]) == []
    assert decoder.buffered == 100
    assert decoder.feed(data[100:]) == [Audio(data[3:], 8000)]


def test_error_frame_code() -> None:
    assert ErrorFrame(b"\x01").code is ErrorCode.HANGUP
    assert ErrorFrame(b"\x06").code == ErrorCode.FRAME_FORWARDING | ErrorCode.MEMORY
    assert ErrorFrame().code is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x02\x00\x00", "unknown AudioSocket kind 0x02"),  # no silence kind in the source
        (b"\x20\x00\x01\x00", "unknown AudioSocket kind 0x20"),
        (b"\x01\x00\x0f" + b"\x00" * 15, "UUID payload of 15 bytes"),
        (b"\x03\x00\x02ab", "DTMF payload of 2 bytes"),
        (b"\x03\x00\x01x", "not a digit"),
        (b"\x10\x00\x00", "empty AudioSocket audio frame"),
    ],
)
def test_garbage_raises_its_own_error(data: bytes, why: str) -> None:
    with pytest.raises(AudioSocketError, match=why) as info:
        AudioSocketDecoder().feed(data)
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, ValueError)


def test_bad_header_fails_before_its_payload_arrives() -> None:
    with pytest.raises(AudioSocketError):
        AudioSocketDecoder().feed(b"\x42\xff\xff")


def test_failed_decoder_stays_failed() -> None:
    decoder = AudioSocketDecoder()
    with pytest.raises(AudioSocketError):
        decoder.feed(b"\x77\x00\x00")
    with pytest.raises(AudioSocketError, match="already failed"):
        decoder.feed(golden("hangup"))


def test_asterisk_side_accepts_only_hangup_and_audio() -> None:
    # res_audiosocket.c:330-369: anything but 0x00 and 0x10-0x18 ends the call with an error
    decoder = AudioSocketDecoder(TO_ASTERISK)
    assert decoder.feed(golden("audio-slin16-20ms") + golden("hangup"))[1] == Hangup()
    for other in ("uuid", "dtmf-5", "error-hangup"):
        with pytest.raises(AudioSocketError, match="not expected"):
            AudioSocketDecoder(TO_ASTERISK).feed(golden(other))
    assert Kind.UUID in FROM_ASTERISK


def test_max_payload_bounds_the_buffer() -> None:
    decoder = AudioSocketDecoder(max_payload=640)
    with pytest.raises(AudioSocketError, match="exceeds 640"):
        decoder.feed(b"\x10\x02\x82")
    big = b"\x10\xff\xff" + b"\x01\x00" * (MAX_PAYLOAD_BYTES // 2) + b"\x01"
    (frame,) = AudioSocketDecoder().feed(big)
    assert isinstance(frame, Audio) and len(frame.pcm) == MAX_PAYLOAD_BYTES


def test_encoder_refuses_what_asterisk_would_not_take() -> None:
    with pytest.raises(ValueError, match="empty audio"):
        encode(Audio(b""))
    with pytest.raises(ValueError, match="exceeds"):
        encode(Audio(b"\x00" * (MAX_PAYLOAD_BYTES + 1)))
    with pytest.raises(ValueError, match="no AudioSocket audio kind"):
        encode(Audio(b"\x00\x00", 22050))
    with pytest.raises(ValueError, match="DTMF"):
        encode(Dtmf("x"))


def test_rates_match_the_header() -> None:
    assert [
        kind_for_rate(r) for r in (8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000)
    ] == list(range(0x10, 0x19))


def test_audio_frames_cut_20ms() -> None:
    pcm = bytes(range(256)) * 5  # 1280 bytes = 80 ms at 8 kHz
    frames = audio_frames(pcm + b"\x00\x00")
    assert [len(f) for f in frames] == [323, 323, 323, 323, 5]
    decoder = AudioSocketDecoder()
    assert b"".join(f.pcm for f in decoder.feed(b"".join(frames))) == pcm + b"\x00\x00"  # type: ignore[union-attr]


frames_strategy = st.one_of(
    st.just(Hangup()),
    st.uuids().map(UuidFrame),
    st.sampled_from("0123456789*#ABCD").map(Dtmf),
    st.builds(Audio, st.binary(min_size=1, max_size=2000), st.sampled_from([8000, 16000, 48000])),
    st.binary(max_size=4).map(ErrorFrame),
)


@given(st.lists(frames_strategy, max_size=12), st.integers(min_value=1, max_value=64))
def test_round_trip_any_frames_any_chunking(frames: list[object], chunk: int) -> None:
    data = b"".join(encode(f) for f in frames)  # type: ignore[arg-type]
    decoder = AudioSocketDecoder()
    out = [f for i in range(0, len(data), chunk) for f in decoder.feed(data[i : i + chunk])]
    assert out == frames
