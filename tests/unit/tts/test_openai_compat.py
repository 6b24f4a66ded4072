"""OpenAI-compatible /audio/speech synthesizer: request shape, WAV decoding, resampling and
error mapping with httpx.MockTransport, then streaming over real sockets to a fake server."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.audio.resample import LOW_DELAY, resample
from callbridge.audio.wav import wav_bytes
from callbridge.tts.base import Synthesizer, TtsError
from callbridge.tts.openai_compat import OpenAICompatSynthesizer
from tests.unit.openai_fake_server import (
    SECONDS_PER_CHAR,
    TONE_HZ,
    Canned,
    FakeSpeechServer,
    streaming_wav_header,
    tone,
)

KEY = "sk-test-SECRET-0123456789"
BASE = "http://tts.example/v1"


class Mock:
    """A MockTransport recording requests; `reply` makes each answer."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self._reply = reply
        self.client = httpx.Client(transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self._reply(request)


def _wav_reply(body: bytes | Iterable[bytes], content_type: str = "audio/wav") -> httpx.Response:
    content = body if isinstance(body, bytes) else iter(body)
    return httpx.Response(200, content=content, headers={"content-type": content_type})


def _tone_reply(request: httpx.Request) -> httpx.Response:
    text = json.loads(request.content)["input"]
    return _wav_reply(wav_bytes(tone(SECONDS_PER_CHAR * len(text)), 24000))


def _samples(chunks: Iterable[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype="<i2").astype(float)


def _peak_hz(x: np.ndarray, rate: int = 8000) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x))


# -- request shape ----------------------------------------------------------------------------


def test_one_request_per_clause_with_the_right_shape() -> None:
    mock = Mock(_tone_reply)
    tts = OpenAICompatSynthesizer(
        BASE + "/", "gpt-4o-mini-tts", KEY, voice="nova", client=mock.client
    )
    chunks = list(tts.synthesize("Hello there. How are you today?"))
    assert chunks and all(len(c) % 2 == 0 for c in chunks)
    assert [r.method for r in mock.requests] == ["POST", "POST"]
    assert {str(r.url) for r in mock.requests} == {"http://tts.example/v1/audio/speech"}
    assert [json.loads(r.content) for r in mock.requests] == [
        {"model": "gpt-4o-mini-tts", "input": t, "voice": "nova", "response_format": "wav"}
        for t in ("Hello there.", "How are you today?")
    ]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in mock.requests)
    assert all(r.headers["content-type"] == "application/json" for r in mock.requests)


def test_no_key_no_authorization_header_and_defaults() -> None:
    mock = Mock(_tone_reply)
    tts = OpenAICompatSynthesizer(BASE, client=mock.client)
    list(tts.synthesize("Hi."))
    (req,) = mock.requests
    assert "authorization" not in req.headers
    assert json.loads(req.content) == {
        "model": "tts-1",
        "input": "Hi.",
        "voice": "alloy",
        "response_format": "wav",
    }


def test_first_clause_audio_comes_before_the_second_request() -> None:
    mock = Mock(_tone_reply)
    tts = OpenAICompatSynthesizer(BASE, client=mock.client)
    chunks = tts.synthesize("First clause here. Second clause here.")
    assert next(chunks)
    assert len(mock.requests) == 1
    list(chunks)
    assert len(mock.requests) == 2


def test_satisfies_the_synthesizer_protocol() -> None:
    tts: Synthesizer = OpenAICompatSynthesizer(BASE, client=Mock(_tone_reply).client)
    assert tts.sample_rate == 8000
    assert list(tts.synthesize("")) == []
    tts.close()


# -- audio ------------------------------------------------------------------------------------


def test_24khz_wav_becomes_8khz_of_the_same_sound() -> None:
    tts = OpenAICompatSynthesizer(BASE, client=Mock(_tone_reply).client)
    out = _samples(tts.synthesize("Twenty chars of text"))  # 1.0 s
    assert len(out) == 8000
    assert _peak_hz(out) == pytest.approx(TONE_HZ, abs=2)
    assert np.sqrt(np.mean(out[100:-100] ** 2)) == pytest.approx(8000 / np.sqrt(2), rel=0.03)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_output_length_for_each_server_rate(rate: int) -> None:
    pcm = tone(0.5, rate=rate)
    tts = OpenAICompatSynthesizer(
        BASE, client=Mock(lambda _: _wav_reply(wav_bytes(pcm, rate))).client
    )
    out = b"".join(tts.synthesize("x"))
    assert len(out) // 2 == pytest.approx(4000, abs=1)
    assert out == resample(pcm, rate, 8000, LOW_DELAY)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 5000), min_size=0, max_size=12))
def test_any_network_chunking_gives_the_same_audio(cuts: list[int]) -> None:
    pcm = tone(0.2)
    body = streaming_wav_header(24000) + pcm
    pieces, pos = [], 0
    for cut in sorted(set(cuts)):
        pieces.append(body[pos:cut])
        pos = cut
    pieces.append(body[pos:])
    tts = OpenAICompatSynthesizer(BASE, client=Mock(lambda _: _wav_reply(pieces)).client)
    assert b"".join(tts.synthesize("x")) == resample(pcm, 24000, 8000, LOW_DELAY)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_streaming_header_sizes_read_to_the_end(size: int) -> None:
    pcm = tone(0.3)
    body = bytearray(wav_bytes(pcm, 24000))
    struct.pack_into("<I", body, 4, size)
    struct.pack_into("<I", body, 40, size)
    tts = OpenAICompatSynthesizer(BASE, client=Mock(lambda _: _wav_reply(bytes(body))).client)
    assert len(b"".join(tts.synthesize("x"))) // 2 == 2400


def test_exact_data_size_stops_before_trailing_chunks() -> None:
    pcm = tone(0.3)
    trailer = b"LIST" + struct.pack("<I", 4) + b"INFO" + b"\x55" * 4000
    reply = _wav_reply([wav_bytes(pcm, 24000), trailer])
    tts = OpenAICompatSynthesizer(BASE, client=Mock(lambda _: reply).client)
    assert b"".join(tts.synthesize("x")) == resample(pcm, 24000, 8000, LOW_DELAY)


def test_stereo_is_downmixed() -> None:
    left = np.frombuffer(tone(0.2), dtype="<i2")
    frames = np.stack([left, np.zeros_like(left)], axis=1).astype("<i2").tobytes()
    body = streaming_wav_header(24000, channels=2) + frames
    tts = OpenAICompatSynthesizer(BASE, client=Mock(lambda _: _wav_reply(body)).client)
    out = _samples(tts.synthesize("x"))
    assert len(out) == 1600
    assert np.max(np.abs(out)) == pytest.approx(4000, rel=0.05)  # average of the two channels


def test_empty_audio_yields_nothing() -> None:
    reply = _wav_reply(wav_bytes(b"", 24000))
    tts = OpenAICompatSynthesizer(BASE, client=Mock(lambda _: reply).client)
    assert list(tts.synthesize("x")) == []


# -- errors -----------------------------------------------------------------------------------


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def reply(_: httpx.Request) -> httpx.Response:
        raise exc

    return reply


def _8bit(_: httpx.Request) -> httpx.Response:
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 4) + bytes(4)
    return _wav_reply(b"RIFF" + struct.pack("<I", len(body)) + body)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            lambda _: httpx.Response(500, json={"error": {"message": "voice not found"}}),
            r"^POST http://tts\.example/v1/audio/speech answered HTTP 500: voice not found$",
        ),
        (lambda _: httpx.Response(429, text="slow down"), r"answered HTTP 429: slow down$"),
        (
            lambda _: _wav_reply(b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb" * 50, "audio/mpeg"),
            r"sent no usable WAV \(not a RIFF/WAVE stream; content-type 'audio/mpeg'\)",
        ),
        (_8bit, r"sent no usable WAV \(8-bit samples; expected 16-bit integer PCM"),
        (lambda _: _wav_reply(b""), r"no usable WAV \(WAV ended before its fmt chunk"),
        (
            lambda _: _wav_reply(wav_bytes(tone(0.1), 24000)[:30]),
            r"no usable WAV \(WAV ended before its fmt chunk",
        ),
        (
            lambda _: _wav_reply(wav_bytes(tone(0.1), 24000)[:40]),
            r"no usable WAV \(WAV ended before its data chunk",
        ),
        (_raise(httpx.ReadTimeout("slow")), r"/v1/audio/speech timed out after 10.0 s$"),
        (_raise(httpx.ConnectError("refused")), r"speech failed: ConnectError: refused$"),
    ],
)
def test_errors_are_mapped(reply: Callable[[httpx.Request], httpx.Response], expected: str) -> None:
    tts = OpenAICompatSynthesizer(BASE, api_key=KEY, client=Mock(reply).client)
    with pytest.raises(TtsError) as info:
        list(tts.synthesize("Hello."))
    assert re.search(expected, str(info.value)), str(info.value)
    assert KEY not in str(info.value)


def test_key_echoed_by_the_server_never_reaches_the_error() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}."}}
    tts = OpenAICompatSynthesizer(
        BASE, api_key=KEY, client=Mock(lambda _: httpx.Response(401, json=body)).client
    )
    with pytest.raises(TtsError, match=r"HTTP 401: Incorrect API key provided: \*\*\*") as info:
        list(tts.synthesize("Hello."))
    assert KEY not in str(info.value) and KEY not in repr(tts)


def test_timeout_in_the_middle_of_a_streamed_reply() -> None:
    def body() -> Iterator[bytes]:
        yield streaming_wav_header(24000) + tone(0.1)
        raise httpx.ReadTimeout("stalled")

    tts = OpenAICompatSynthesizer(BASE, client=Mock(lambda _: _wav_reply(body())).client)
    chunks = tts.synthesize("Hello.")
    assert next(chunks)  # the audio that did arrive is played
    with pytest.raises(TtsError, match="timed out"):
        list(chunks)


def test_given_client_stays_open_own_client_is_closed() -> None:
    mock = Mock(_tone_reply)
    OpenAICompatSynthesizer(BASE, client=mock.client).close()
    assert not mock.client.is_closed
    own = OpenAICompatSynthesizer(BASE)
    own.close()
    assert own._client.is_closed


# -- real HTTP --------------------------------------------------------------------------------


def test_over_real_http_with_the_fake_server() -> None:
    with FakeSpeechServer() as server:
        tts = OpenAICompatSynthesizer(server.base_url, api_key=KEY, voice="echo")
        try:
            out = _samples(tts.synthesize("Hello caller. This is the agent."))
        finally:
            tts.close()
    chars = len("Hello caller.") + len("This is the agent.")
    assert len(out) == pytest.approx(SECONDS_PER_CHAR * chars * 8000, abs=2)
    assert _peak_hz(out) == pytest.approx(TONE_HZ, abs=3)
    assert [r.fields for r in server.requests] == [
        {"model": "tts-1", "input": t, "voice": "echo", "response_format": "wav"}
        for t in ("Hello caller.", "This is the agent.")
    ]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)


def test_audio_starts_while_the_server_is_still_sending() -> None:
    with FakeSpeechServer() as server:
        server.gate = threading.Event()  # the server holds the reply after its first 100 ms
        tts = OpenAICompatSynthesizer(server.base_url, client=httpx.Client())
        chunks = tts.synthesize("A long clause that takes a while to say")
        first = next(chunks)
        server.gate.set()
        rest = b"".join(chunks)
    assert server.gate_released == [True]  # released by us, not by the server's time-out
    assert 0 < len(first) // 2 <= 800  # at most the first 100 ms
    assert (len(first) + len(rest)) // 2 == pytest.approx(39 * SECONDS_PER_CHAR * 8000, abs=2)


def test_real_server_error_status_and_bad_request() -> None:
    with FakeSpeechServer() as server:
        server.replies.append(Canned(503, b'{"error": {"message": "warming up"}}'))
        tts = OpenAICompatSynthesizer(server.base_url, client=httpx.Client())
        with pytest.raises(TtsError, match=r"/v1/audio/speech answered HTTP 503: warming up"):
            list(tts.synthesize("Hello."))
        # The server's checks can fail too: no voice.
        bad = OpenAICompatSynthesizer(server.base_url, voice="", client=httpx.Client())
        with pytest.raises(TtsError, match=r"HTTP 400: bad request"):
            list(bad.synthesize("Hello."))
        assert b"".join(tts.synthesize("Hello.")) != b""  # and it works again


def test_real_server_too_slow_is_a_timeout() -> None:
    with FakeSpeechServer() as server:
        server.stall = threading.Event()
        tts = OpenAICompatSynthesizer(server.base_url, timeout=0.2, client=httpx.Client())
        with pytest.raises(TtsError, match=r"speech timed out after 0.2 s"):
            list(tts.synthesize("Hello."))


def test_nobody_listening_is_an_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tts = OpenAICompatSynthesizer(f"http://127.0.0.1:{port}/v1", client=httpx.Client())
    with pytest.raises(TtsError, match=rf"127\.0\.0\.1:{port}/v1/audio/speech failed"):
        list(tts.synthesize("Hello."))
