"""A tiny OpenAI-compatible speech server on 127.0.0.1, for the STT/TTS adapter tests.

stdlib ThreadingHTTPServer in a thread, port 0. It checks what a real server would refuse:

- ``POST /v1/audio/transcriptions``: the multipart upload must hold ``model`` and a ``file``
  that is a valid PCM16 mono WAV at 16 kHz, of ``expect_seconds`` (when set). Answers
  ``{"text": transcript}``; 400 with the reason otherwise.
- ``POST /v1/audio/speech``: the JSON body must hold ``model``, ``input``, ``voice`` and
  ``response_format: "wav"``. Answers a 440 Hz tone at 24 kHz, 50 ms per character of input,
  as a streamed WAV (sizes 0xFFFFFFFF, HTTP chunked, 100 ms per chunk) like OpenAI does.

Every request is recorded. ``replies`` queues canned error answers; ``gate`` holds a speech
reply after its first chunk until the test releases it; ``stall`` holds any request before
it is answered.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import struct
import threading
import wave
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import numpy as np

SPEECH_RATE = 24000
SECONDS_PER_CHAR = 0.05
TONE_HZ = 440.0
CHUNK_SECONDS = 0.1
GATE_TIMEOUT = 5.0  # how long a gated or stalled reply waits for the test at most


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # lower-case names
    fields: dict[str, str]  # multipart text fields, or the JSON body's string values
    file: bytes = b""  # the uploaded file (transcriptions)
    file_type: str = ""


@dataclass(frozen=True)
class Canned:
    status: int
    body: bytes
    content_type: str = "application/json"


def tone(seconds: float, rate: int = SPEECH_RATE, hz: float = TONE_HZ) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return np.rint(8000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def streaming_wav_header(rate: int, channels: int = 1) -> bytes:
    """A WAV header as a streaming writer sends it: sizes unknown (0xFFFFFFFF)."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, 2 * channels * rate, 2 * channels, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", 0xFFFFFFFF))
    )


@dataclass
class FakeSpeechServer:
    transcript: str = "what time is it"
    expect_seconds: float | None = None
    tolerance: float = 0.005
    requests: list[Recorded] = field(default_factory=list)
    replies: deque[Canned] = field(default_factory=deque)
    gate: threading.Event | None = None
    gate_released: list[bool] = field(default_factory=list)  # per gated reply: in time?
    stall: threading.Event | None = None
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeSpeechServer:
        owner = self

        class Handler(_Handler):
            server_state = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for event in (self.gate, self.stall):
            if event is not None:
                event.set()
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FakeSpeechServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        state = self.server_state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        if state.stall is not None:
            state.stall.wait(GATE_TIMEOUT)
        try:
            if self.path == "/v1/audio/transcriptions":
                self._transcribe(state, headers, body)
            elif self.path == "/v1/audio/speech":
                self._speak(state, headers, body)
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def _transcribe(self, state: FakeSpeechServer, headers: dict[str, str], body: bytes) -> None:
        fields, file, file_type = _multipart(headers.get("content-type", ""), body)
        state.requests.append(Recorded(self.path, headers, fields, file, file_type))
        if state.replies:
            return self._canned(state.replies.popleft())
        problem = _check_upload(fields, file, state.expect_seconds, state.tolerance)
        if problem:
            return self._send(400, {"error": {"message": problem}})
        self._send(200, {"text": state.transcript})

    def _speak(self, state: FakeSpeechServer, headers: dict[str, str], body: bytes) -> None:
        request = json.loads(body)
        state.requests.append(
            Recorded(self.path, headers, {k: v for k, v in request.items() if isinstance(v, str)})
        )
        if state.replies:
            return self._canned(state.replies.popleft())
        missing = [k for k in ("model", "input", "voice") if not request.get(k)]
        if missing or request.get("response_format") != "wav":
            return self._send(400, {"error": {"message": f"bad request: {request}"}})
        pcm = tone(SECONDS_PER_CHAR * len(request["input"]))
        step = 2 * round(CHUNK_SECONDS * SPEECH_RATE)
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(streaming_wav_header(SPEECH_RATE))
        for i in range(0, len(pcm), step):
            self._chunk(pcm[i : i + step])
            if i == 0 and state.gate is not None:
                state.gate_released.append(state.gate.wait(GATE_TIMEOUT))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _canned(self, reply: Canned) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def _send(self, status: int, payload: object) -> None:
        self._canned(Canned(status, json.dumps(payload).encode()))


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], bytes, str]:
    """(text fields, file bytes, file content type) of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    file, file_type = b"", ""
    if not message.is_multipart():
        return fields, file, file_type
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        if part.get_filename() is not None:
            file, file_type = payload, part.get_content_type()
        elif isinstance(name, str):
            fields[name] = payload.decode()
    return fields, file, file_type


def _check_upload(
    fields: dict[str, str], file: bytes, expect_seconds: float | None, tolerance: float
) -> str:
    """Why a real server would refuse this upload ("" when it is fine)."""
    if not fields.get("model"):
        return "model is required"
    if not file:
        return "file is required"
    try:
        with wave.open(io.BytesIO(file), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.getnframes()
            data = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        return f"not a WAV file: {exc}"
    if (channels, width, rate) != (1, 2, 16000):
        return f"expected 16 kHz PCM16 mono, got {rate} Hz, {channels} ch, {8 * width} bit"
    if len(data) != 2 * frames:
        return f"WAV says {frames} frames but holds {len(data) // 2}"
    seconds = frames / rate
    if expect_seconds is not None and abs(seconds - expect_seconds) > tolerance:
        return f"expected {expect_seconds} s of audio, got {seconds} s"
    return ""
