"""TTS on any OpenAI-compatible ``/audio/speech`` endpoint (OpenAI, Kokoro-FastAPI,
openedai-speech, LocalAI, speaches).

Asks for ``wav`` (PCM16, usually 24 kHz): no decoder needed, and the header says the rate.
Two levels of streaming keep the first audio early: the reply is synthesised clause by clause
(`split_clauses`), and each clause's HTTP response is read as it arrives (servers that stream
send a WAV header whose sizes are 0 or 0xFFFFFFFF, then the samples as they are made), so
audio is resampled and yielded chunk by chunk with the low-delay resampler (2 ms).

One instance serves every call: each `synthesize` has its own decoder and resampler, and
httpx's Client is thread-safe.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterator

import httpx

from callbridge.audio.resample import Resampler
from callbridge.audio.wav import WavStream
from callbridge.core.frames import PIPELINE_RATE
from callbridge.core.http_errors import error_detail, public_url
from callbridge.core.http_responses import let_go
from callbridge.tts.base import TtsError, split_clauses

__all__ = ["OpenAICompatSynthesizer"]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Parsing the CA bundle takes ~60 ms: once per process.
    return httpx.create_ssl_context()


class OpenAICompatSynthesizer:
    """Synthesizer (see tts.base) for an OpenAI-compatible speech endpoint.

    ``base_url`` includes the API version (``https://api.openai.com/v1``). ``timeout`` bounds
    connecting and every wait for the server (also between chunks of a streamed reply). Pass
    ``client`` to share one; this synthesizer then leaves it open on `close`.
    """

    sample_rate = PIPELINE_RATE

    def __init__(
        self,
        base_url: str,
        model: str = "tts-1",
        api_key: str = "",
        *,
        voice: str = "alloy",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/audio/speech"
        self.model = model
        self.voice = voice
        self.timeout = timeout
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(verify=_tls_context())

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return (
            f"OpenAICompatSynthesizer(url={public_url(self.url)!r}, model={self.model!r}, "
            f"voice={self.voice!r}, key={key})"
        )

    def synthesize(self, text: str) -> Iterator[bytes]:
        """PCM16 8 kHz chunks, clause by clause, each as soon as its audio arrives.

        Raises TtsError when the server cannot be reached, times out, answers with an error or
        sends something other than PCM16 WAV.
        """
        for clause in split_clauses(text):
            yield from self._clause(clause)

    def close(self) -> None:
        """Close the HTTP client if this synthesizer made it."""
        if self._owns_client:
            self._client.close()

    def request_body(self, text: str) -> dict[str, str]:
        """The JSON sent for one clause (public for tests and debugging)."""
        return {"model": self.model, "input": text, "voice": self.voice, "response_format": "wav"}

    def _clause(self, clause: str) -> Iterator[bytes]:
        where = public_url(self.url)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        response: httpx.Response | None = None
        try:
            with self._client.stream(
                "POST", self.url, json=self.request_body(clause), headers=headers,
                timeout=self.timeout,
            ) as response:  # fmt: skip
                if response.status_code >= 400:
                    response.read()
                    raise TtsError(
                        self._redact(
                            f"POST {where} answered HTTP {response.status_code}"
                            + error_detail(response.content)
                        )
                    )
                yield from _decode(response, where)
        except httpx.TimeoutException as exc:
            raise TtsError(f"POST {where} timed out after {self.timeout} s") from exc
        except httpx.HTTPError as exc:
            raise TtsError(
                self._redact(f"POST {where} failed: {type(exc).__name__}: {exc}")
            ) from exc
        finally:
            let_go(response)  # closed: no reference cycle left for a full collection

    def _redact(self, text: str) -> str:
        # Providers echo (partly masked) keys back in 401 messages; never pass the key on.
        return text.replace(self._api_key, "***") if self._api_key else text


def _decode(response: httpx.Response, where: str) -> Iterator[bytes]:
    """The WAV body of `response` as PCM16 8 kHz mono, chunk by chunk as it arrives."""
    wav = WavStream()
    resampler: Resampler | None = None

    def unusable(exc: ValueError) -> TtsError:
        kind = response.headers.get("content-type", "none")
        return TtsError(f"POST {where} sent no usable WAV ({exc}; content-type {kind!r})")

    for data in response.iter_bytes():
        try:
            pcm = wav.feed(data)
        except ValueError as exc:
            raise unusable(exc) from exc
        if pcm:
            if resampler is None:
                assert wav.format is not None
                resampler = Resampler(wav.format.rate, PIPELINE_RATE)
            out = resampler.feed(pcm)
            if out:
                yield out
        if wav.done:
            break  # anything after the data chunk (LIST, id3) is not audio
    try:
        wav.finish()
    except ValueError as exc:
        raise unusable(exc) from exc
    if resampler is not None:
        tail = resampler.finish()
        if tail:
            yield tail
