"""STT on any OpenAI-compatible ``/audio/transcriptions`` endpoint (OpenAI Whisper,
faster-whisper servers such as speaches, vLLM, LocalAI, Groq).

Whisper-family models transcribe whole files, not streams: `feed` only buffers the caller's
8 kHz audio and `finish` uploads the utterance once, as a 16 kHz WAV (the models work at
16 kHz; some servers refuse lower rates, and resampling here keeps the server from choosing a
worse filter). There are no partial transcripts. Plain httpx, no SDK: the request is one
multipart POST.
"""

from __future__ import annotations

import functools
import ssl
from typing import Final

import httpx

from callbridge.audio.resample import resample
from callbridge.audio.wav import wav_bytes
from callbridge.core.frames import PIPELINE_RATE
from callbridge.core.http_errors import error_detail, public_url
from callbridge.core.http_responses import let_go
from callbridge.stt.base import SttError, Transcript

__all__ = ["MAX_UTTERANCE_S", "UPLOAD_RATE", "OpenAICompatRecognizer"]

UPLOAD_RATE: Final = 16000
# Beyond this the rest of a turn is dropped: a stuck end-of-turn must not grow memory without
# bound, and OpenAI refuses uploads over 25 MB (~13 min of 16 kHz PCM16).
MAX_UTTERANCE_S: Final = 600
_MAX_BYTES: Final = MAX_UTTERANCE_S * PIPELINE_RATE * 2


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Parsing the CA bundle takes ~60 ms: once per process, not once per call.
    return httpx.create_ssl_context()


class OpenAICompatRecognizer:
    """Recognizer (see stt.base) for one call, one utterance at a time.

    ``base_url`` includes the API version (``https://api.openai.com/v1``,
    ``http://127.0.0.1:8000/v1``). ``language`` (ISO-639-1, e.g. "en") is sent only when set;
    it saves the server's language detection and avoids misdetections on short turns.
    ``timeout`` bounds connecting and every wait for the server. Pass a shared ``client`` to
    reuse connections across calls (this recognizer then leaves it open on `close`).
    """

    def __init__(
        self,
        base_url: str,
        model: str = "whisper-1",
        api_key: str = "",
        *,
        language: str = "",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/audio/transcriptions"
        self.model = model
        self.language = language
        self.timeout = timeout
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(verify=_tls_context())
        self._audio = bytearray()
        self._in_utterance = False
        self._closed = False

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return (
            f"OpenAICompatRecognizer(url={public_url(self.url)!r}, model={self.model!r}, key={key})"
        )

    def start(self) -> None:
        """Begin an utterance (dropping any unfinished one)."""
        if self._closed:
            raise RuntimeError("recognizer is closed")
        self._audio.clear()
        self._in_utterance = True

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        """Buffer PCM16 8 kHz audio; never any partial transcript."""
        if len(pcm8k) % 2:
            raise ValueError("PCM16 data must have an even number of bytes")
        if not self._in_utterance:
            self.start()
        room = _MAX_BYTES - len(self._audio)
        self._audio += pcm8k[: max(0, room)]
        return []

    def finish(self) -> Transcript:
        """Upload the utterance and return its transcript ("" for no audio, without a request).

        Raises SttError when the server cannot be reached, times out or answers with an error.
        """
        pcm = bytes(self._audio)
        self._audio.clear()
        in_utterance, self._in_utterance = self._in_utterance, False
        if not in_utterance or not pcm:
            return Transcript("", final=True)
        wav = wav_bytes(resample(pcm, PIPELINE_RATE, UPLOAD_RATE), UPLOAD_RATE)
        return Transcript(self._transcribe(wav), final=True)

    def close(self) -> None:
        """Drop any unfinished utterance and close the HTTP client if this recognizer made it.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._audio.clear()
        self._in_utterance = False
        if self._owns_client:
            self._client.close()

    def request_fields(self) -> dict[str, str]:
        """The multipart form fields sent besides the file (public for tests and debugging)."""
        fields = {"model": self.model, "response_format": "json"}
        if self.language:
            fields["language"] = self.language
        return fields

    def _transcribe(self, wav: bytes) -> str:
        where = public_url(self.url)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            response = self._client.post(
                self.url,
                data=self.request_fields(),
                files={"file": ("utterance.wav", wav, "audio/wav")},
                headers=headers,
                timeout=self.timeout,
            )
            let_go(response)  # read: no reference cycle left for a full collection
        except httpx.TimeoutException as exc:
            raise SttError(f"POST {where} timed out after {self.timeout} s") from exc
        except httpx.HTTPError as exc:
            raise SttError(
                self._redact(f"POST {where} failed: {type(exc).__name__}: {exc}")
            ) from exc
        if response.status_code >= 400:
            raise SttError(
                self._redact(
                    f"POST {where} answered HTTP {response.status_code}"
                    + error_detail(response.content)
                )
            )
        try:
            payload = response.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise SttError(
                f"POST {where} answered HTTP {response.status_code} without JSON "
                f"(content-type {response.headers.get('content-type', 'none')!r})"
            ) from exc
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            raise SttError(
                f"POST {where} answered HTTP {response.status_code} with JSON but no text field"
            )
        return text.strip()

    def _redact(self, text: str) -> str:
        # Providers echo (partly masked) keys back in 401 messages; never pass the key on.
        return text.replace(self._api_key, "***") if self._api_key else text
