"""Local, offline streaming STT with pocketsphinx 5 (its wheel ships the en-US model).

- The model is 16 kHz only: 8 kHz telephone audio is upsampled on the way in with the
  low-delay resampler (2 ms), whose withheld tail is flushed at `finish()`.
- The slow second pass is off (fwdflat + bestpath): finalising an utterance then costs only
  end_utt() on the forward-tree search. bench/bench_speech.py measures both on this 2-core
  machine: finish() p50 24 ms / max 47 ms without, 110 / 159 ms with it (~300 ms with
  pocketsphinx's default search limits). The second pass sometimes recovers a word or two;
  on the voice-to-voice path latency matters more.
- Partial hypotheses are read every 200 ms of audio (hyp() walks the search's backpointer
  table, cheap but not free) and reported only when the text changed.
- Loading a decoder takes ~0.4-0.5 s and ~70-90 MB (acoustic model, 33 MB n-gram model,
  search lextree). Decoders are pooled: a call takes an idle decoder and gives it back when it
  closes, so only the first calls pay the load and memory grows with the peak number of
  concurrent calls. The n-gram model is deliberately NOT shared between decoders even though
  `Decoder.add_lm` would allow it: its trie keeps per-query caches (lm_trie_t.backoff,
  prev_hist) and process_raw() releases the GIL, so concurrent calls would race on them;
  sharing would also save only memory (33 MB), not load time (the lextree build dominates).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

import pocketsphinx  # type: ignore[import-untyped]

from callbridge.audio.resample import Resampler
from callbridge.core.frames import PIPELINE_RATE
from callbridge.core.log import event
from callbridge.stt.base import Transcript

__all__ = ["MODEL_RATE", "TELEPHONE_CMN", "DecoderPool", "PocketsphinxRecognizer", "shared_pool"]

log = logging.getLogger("callbridge.stt.pocketsphinx")

MODEL_RATE: Final = 16000
PARTIAL_INTERVAL: Final = 0.2  # seconds of audio between partial hypotheses

# Initial cepstral mean for 8 kHz telephone speech upsampled to 16 kHz. The model's default
# (40,3,-1) describes wide-band audio, and live CMN adapts only from one utterance to the next,
# so short first turns ("what time is it") came out garbled. Measured as the mean cepstrum of
# telephone-band speech (piper and espeak-ng, linear and G.711 µ-law, 80 utterances);
# c0 (log energy) set for speech about 12 dB below full scale.
TELEPHONE_CMN: Final = "46.0,33.6,-36.9,46.1,-22.8,-1.9,12.2,-31.3,14.3,-12.7,2.3,7.4,-15.8"


def _options(second_pass: bool) -> dict[str, Any]:
    return {
        "loglevel": "FATAL",
        "fwdflat": second_pass,
        "bestpath": second_pass,
        "cmninit": TELEPHONE_CMN,
        # Cap on active HMMs per frame (default 30000). Measured on 24 TTS utterances through
        # G.711: 3000 halves the decoding CPU (real-time factor 0.39-0.50 -> 0.21-0.26 on this
        # 2-core machine) with no loss of words (109 vs 106-109 of 150); 1500 starts losing them.
        "maxhmmpf": 3000,
    }


class DecoderPool:
    """Loaded pocketsphinx decoders waiting for a call. Thread-safe."""

    def __init__(self, *, second_pass: bool = False, max_idle: int = 8) -> None:
        self.second_pass = second_pass
        self.max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.loads = 0  # decoders created so far

    def acquire(self) -> Any:
        """An idle decoder, or a newly loaded one (~0.5 s) when none is idle."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        t0 = time.perf_counter()
        decoder = pocketsphinx.Decoder(**_options(self.second_pass))
        with self._lock:
            self.loads += 1
        event(
            log,
            "stt.decoder_loaded",
            seconds=round(time.perf_counter() - t0, 3),
            second_pass=self.second_pass,
        )
        return decoder

    def release(self, decoder: Any) -> None:
        """Give a decoder back (not inside an utterance). Its CMN goes back to the prior so the
        next call does not start from the previous caller's channel."""
        decoder.set_cmn(TELEPHONE_CMN)
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(decoder)

    def prewarm(self, n: int = 1) -> None:
        """Load decoders ahead of the first calls."""
        decoders = [self.acquire() for _ in range(n)]
        for d in decoders:
            self.release(d)

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


_pools: dict[bool, DecoderPool] = {}
_pools_lock = threading.Lock()


def shared_pool(second_pass: bool = False) -> DecoderPool:
    """The process-wide pool for the given configuration."""
    with _pools_lock:
        pool = _pools.get(second_pass)
        if pool is None:
            pool = _pools[second_pass] = DecoderPool(second_pass=second_pass)
        return pool


class PocketsphinxRecognizer:
    """Streaming recognizer for one call (one utterance at a time); see stt.base.Recognizer."""

    def __init__(
        self,
        *,
        second_pass: bool = False,
        partial_interval: float = PARTIAL_INTERVAL,
        pool: DecoderPool | None = None,
    ) -> None:
        self._pool = pool if pool is not None else shared_pool(second_pass)
        self._decoder: Any = self._pool.acquire()
        self._upsample = Resampler(PIPELINE_RATE, MODEL_RATE)
        self._partial_every = max(1, round(partial_interval * MODEL_RATE))
        self._since_partial = 0
        self._partial = ""
        self._in_utterance = False
        self._closed = False

    def start(self) -> None:
        """Begin an utterance (ending any unfinished one, whose result is dropped)."""
        if self._closed:
            raise RuntimeError("recognizer is closed")
        if self._in_utterance:
            self._abort()
        self._upsample.reset()
        self._since_partial = 0
        self._partial = ""
        self._decoder.start_utt()
        self._in_utterance = True

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        """Decode PCM16 8 kHz audio; returns a partial transcript when the hypothesis changed."""
        if not self._in_utterance:
            self.start()
        data = self._upsample.feed(pcm8k)
        if not data:
            return []
        self._decoder.process_raw(data, False, False)
        self._since_partial += len(data) // 2
        if self._since_partial < self._partial_every:
            return []
        self._since_partial = 0
        text = self._hypothesis()
        if text and text != self._partial:
            self._partial = text
            return [Transcript(text, final=False)]
        return []

    def finish(self) -> Transcript:
        """End the utterance: its final transcript ("" for silence or no utterance)."""
        if not self._in_utterance:
            return Transcript("", final=True)
        tail = self._upsample.finish()
        if tail:
            self._decoder.process_raw(tail, False, False)
        self._decoder.end_utt()
        self._in_utterance = False
        hyp = self._decoder.hyp()
        if hyp is None or not hyp.hypstr:
            return Transcript("", final=True)
        # No confidence: the first pass builds no lattice, so pocketsphinx has no posterior
        # (hyp.prob stays 0, i.e. "certain", even with the second pass unless it is computed).
        return Transcript(str(hyp.hypstr), final=True)

    def close(self) -> None:
        """Return the decoder to the pool. Idempotent."""
        if self._closed:
            return
        if self._in_utterance:
            self._abort()
        self._closed = True
        self._pool.release(self._decoder)
        self._decoder = None

    def _abort(self) -> None:
        self._decoder.end_utt()
        self._upsample.reset()
        self._in_utterance = False

    def _hypothesis(self) -> str:
        hyp = self._decoder.hyp()
        return str(hyp.hypstr) if hyp is not None else ""
