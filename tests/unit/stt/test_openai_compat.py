"""OpenAI-compatible /audio/transcriptions recognizer: request shape and error mapping with
httpx.MockTransport, then the whole path over real sockets to a fake server."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import re
import socket
import threading
import wave
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from callbridge.stt import openai_compat
from callbridge.stt.base import Recognizer, SttError, Transcript
from callbridge.stt.openai_compat import OpenAICompatRecognizer
from tests.unit.openai_fake_server import Canned, FakeSpeechServer

KEY = "sk-test-SECRET-0123456789"
BASE = "http://stt.example:8000/v1"


def _tone8k(seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(round(seconds * 8000)) / 8000
    return np.rint(6000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def _frames(pcm: bytes, size: int = 320) -> Iterator[bytes]:
    for i in range(0, len(pcm), size):
        yield pcm[i : i + size]


class Mock:
    """A MockTransport that records requests and answers with `reply`."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._reply = reply or (lambda _: httpx.Response(200, json={"text": " hello there "}))
        self.client = httpx.Client(transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self._reply(request)


def _parts(request: httpx.Request) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """(text fields, files as name -> (filename, content type, bytes)) of a multipart body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode() + request.content
    )
    assert message.is_multipart()
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        filename = part.get_filename()
        if filename is None:
            fields[name] = payload.decode()
        else:
            files[name] = (filename, part.get_content_type(), payload)
    return fields, files


def _recognize(rec: OpenAICompatRecognizer, pcm: bytes) -> Transcript:
    rec.start()
    for frame in _frames(pcm):
        assert rec.feed(frame) == []
    return rec.finish()


# -- request shape ----------------------------------------------------------------------------


def test_request_shape_with_key_and_language() -> None:
    mock = Mock()
    rec = OpenAICompatRecognizer(
        BASE + "/", "whisper-large-v3", KEY, language="en", client=mock.client
    )
    assert _recognize(rec, _tone8k(0.5)) == Transcript("hello there", final=True)

    (req,) = mock.requests
    assert req.method == "POST"
    assert str(req.url) == "http://stt.example:8000/v1/audio/transcriptions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields, files = _parts(req)
    assert fields == {"model": "whisper-large-v3", "response_format": "json", "language": "en"}
    assert set(files) == {"file"}
    filename, content_type, data = files["file"]
    assert filename.endswith(".wav") and content_type == "audio/wav"
    with wave.open(io.BytesIO(data), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == 2 * 4000  # 0.5 s at 16 kHz: upsampled, same duration


def test_no_key_no_language_means_no_header_and_no_field() -> None:
    mock = Mock()
    rec = OpenAICompatRecognizer(BASE, client=mock.client)
    _recognize(rec, _tone8k(0.1))
    (req,) = mock.requests
    assert "authorization" not in req.headers
    fields, _ = _parts(req)
    assert fields == {"model": "whisper-1", "response_format": "json"}


def test_uploaded_audio_is_the_fed_audio_upsampled() -> None:
    mock = Mock()
    rec = OpenAICompatRecognizer(BASE, client=mock.client)
    pcm = _tone8k(0.3, hz=500.0)
    _recognize(rec, pcm)
    _, files = _parts(mock.requests[0])
    with wave.open(io.BytesIO(files["file"][2]), "rb") as w:
        up = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(up))
    assert np.argmax(spectrum) * 16000 / len(up) == pytest.approx(500, abs=5)
    assert np.sqrt(np.mean(up**2)) == pytest.approx(6000 / np.sqrt(2), rel=0.05)


def test_start_drops_an_unfinished_utterance_and_feed_starts_one() -> None:
    mock = Mock()
    rec = OpenAICompatRecognizer(BASE, client=mock.client)
    assert rec.feed(_tone8k(1.0)) == []  # no start(): feed begins an utterance
    rec.start()  # ... which this drops
    rec.feed(_tone8k(0.2))
    rec.finish()
    _, files = _parts(mock.requests[0])
    with wave.open(io.BytesIO(files["file"][2]), "rb") as w:
        assert w.getnframes() == 3200


def test_empty_utterance_makes_no_request() -> None:
    mock = Mock()
    rec = OpenAICompatRecognizer(BASE, client=mock.client)
    assert rec.finish() == Transcript("", final=True)  # never started
    rec.start()
    assert rec.finish() == Transcript("", final=True)  # started, no audio
    rec.start()
    rec.feed(b"")
    assert rec.finish() == Transcript("", final=True)
    assert mock.requests == []


def test_finish_ends_the_utterance() -> None:
    mock = Mock()
    rec = OpenAICompatRecognizer(BASE, client=mock.client)
    _recognize(rec, _tone8k(0.1))
    assert rec.finish() == Transcript("", final=True)
    assert len(mock.requests) == 1


def test_odd_length_audio_rejected() -> None:
    rec = OpenAICompatRecognizer(BASE, client=Mock().client)
    with pytest.raises(ValueError, match="even"):
        rec.feed(b"\x00")


def test_utterance_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_compat, "_MAX_BYTES", 1600)  # 100 ms at 8 kHz
    mock = Mock()
    rec = OpenAICompatRecognizer(BASE, client=mock.client)
    _recognize(rec, _tone8k(0.5))
    _, files = _parts(mock.requests[0])
    with wave.open(io.BytesIO(files["file"][2]), "rb") as w:
        assert w.getnframes() == 1600


def test_satisfies_the_recognizer_protocol() -> None:
    rec: Recognizer = OpenAICompatRecognizer(BASE, client=Mock().client)
    assert rec.feed(_tone8k(0.02)) == []


# -- client ownership -------------------------------------------------------------------------


def test_given_client_stays_open_own_client_is_closed() -> None:
    mock = Mock()
    rec = OpenAICompatRecognizer(BASE, client=mock.client)
    rec.close()
    rec.close()  # idempotent
    assert not mock.client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        rec.start()

    own = OpenAICompatRecognizer(BASE)
    own.close()
    assert own._client.is_closed


# -- errors -----------------------------------------------------------------------------------


def _fail(reply: Callable[[httpx.Request], httpx.Response], key: str = KEY) -> SttError:
    rec = OpenAICompatRecognizer(BASE, api_key=key, client=Mock(reply).client)
    with pytest.raises(SttError) as info:
        _recognize(rec, _tone8k(0.1))
    return info.value


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def reply(_: httpx.Request) -> httpx.Response:
        raise exc

    return reply


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            lambda _: httpx.Response(500, json={"error": {"message": "model overloaded"}}),
            r"POST http://stt\.example:8000/v1/audio/transcriptions answered HTTP 500: "
            r"model overloaded$",
        ),
        (lambda _: httpx.Response(503, text="busy\n  try later"), r"HTTP 503: busy try later$"),
        (lambda _: httpx.Response(422, json={"detail": [{"loc": "file"}]}), r"HTTP 422: \[\{"),
        (lambda _: httpx.Response(404), r"/v1/audio/transcriptions answered HTTP 404$"),
        (
            lambda _: httpx.Response(200, text="hello", headers={"content-type": "text/plain"}),
            r"HTTP 200 without JSON \(content-type 'text/plain'\)",
        ),
        (lambda _: httpx.Response(200, json={"txt": "x"}), r"HTTP 200 with JSON but no text"),
        (lambda _: httpx.Response(200, json=["x"]), r"HTTP 200 with JSON but no text"),
        (_raise(httpx.ReadTimeout("read timed out")), r"audio/transcriptions timed out after"),
        (_raise(httpx.ConnectError("refused")), r"transcriptions failed: ConnectError: refused"),
        (_raise(httpx.RemoteProtocolError("eof")), r"failed: RemoteProtocolError: eof"),
    ],
)
def test_errors_are_mapped(reply: Callable[[httpx.Request], httpx.Response], expected: str) -> None:
    err = _fail(reply)
    assert isinstance(err, RuntimeError)
    assert KEY not in str(err)
    assert re.search(expected, str(err)), str(err)


def test_key_echoed_by_the_server_never_reaches_the_error() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}. Find yours at ..."}}
    err = _fail(lambda _: httpx.Response(401, json=body))
    assert "HTTP 401" in str(err) and "Incorrect API key provided: ***" in str(err)
    assert KEY not in str(err) and KEY not in repr(err)


def test_key_in_a_transport_error_never_reaches_the_error() -> None:
    err = _fail(_raise(httpx.ConnectError(f"proxy said no to {KEY}")))
    assert KEY not in str(err)


def test_repr_hides_the_key() -> None:
    rec = OpenAICompatRecognizer("https://user:pw@api.example/v1?k=1", api_key=KEY)
    try:
        assert KEY not in repr(rec) and "pw" not in repr(rec) and "key=set" in repr(rec)
    finally:
        rec.close()


def test_recognizer_is_usable_after_an_error() -> None:
    answers = iter([httpx.Response(500), httpx.Response(200, json={"text": "ok"})])
    rec = OpenAICompatRecognizer(BASE, client=Mock(lambda _: next(answers)).client)
    with pytest.raises(SttError):
        _recognize(rec, _tone8k(0.1))
    assert _recognize(rec, _tone8k(0.1)).text == "ok"


# -- real HTTP --------------------------------------------------------------------------------


def test_over_real_http_with_the_fake_server() -> None:
    with FakeSpeechServer(transcript="what time is it", expect_seconds=1.0) as server:
        rec = OpenAICompatRecognizer(server.base_url, api_key=KEY, language="en")
        try:
            assert _recognize(rec, _tone8k(1.0)) == Transcript("what time is it", final=True)
            assert _recognize(rec, _tone8k(1.0)).text == "what time is it"  # keep-alive reuse
        finally:
            rec.close()
    first = server.requests[0]
    assert first.path == "/v1/audio/transcriptions"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.fields == {"model": "whisper-1", "response_format": "json", "language": "en"}
    assert first.file_type == "audio/wav"
    assert len(server.requests) == 2


def test_real_server_refusing_the_audio_is_an_error() -> None:
    # The fake server's checks can fail: 0.5 s of audio where it wants 1 s.
    with FakeSpeechServer(expect_seconds=1.0) as server:
        rec = OpenAICompatRecognizer(server.base_url, client=httpx.Client())
        with pytest.raises(SttError, match=r"HTTP 400: expected 1.0 s of audio, got 0.5 s"):
            _recognize(rec, _tone8k(0.5))


def test_real_server_error_status() -> None:
    with FakeSpeechServer() as server:
        server.replies.append(Canned(500, json.dumps({"error": {"message": "boom"}}).encode()))
        rec = OpenAICompatRecognizer(server.base_url, client=httpx.Client())
        with pytest.raises(SttError, match=r"/v1/audio/transcriptions answered HTTP 500: boom"):
            _recognize(rec, _tone8k(0.2))


def test_real_server_too_slow_is_a_timeout() -> None:
    with FakeSpeechServer() as server:
        server.stall = threading.Event()  # released when the server stops
        rec = OpenAICompatRecognizer(server.base_url, timeout=0.2, client=httpx.Client())
        with pytest.raises(SttError, match=r"transcriptions timed out after 0.2 s"):
            _recognize(rec, _tone8k(0.2))


def test_nobody_listening_is_an_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago, now closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = OpenAICompatRecognizer(f"http://127.0.0.1:{port}/v1", api_key=KEY)
    try:
        with pytest.raises(SttError, match=rf"127\.0\.0\.1:{port}/v1/audio/transcriptions failed"):
            _recognize(rec, _tone8k(0.1))
    finally:
        rec.close()
