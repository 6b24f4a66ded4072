"""Local, offline STT with pocketsphinx (its wheel ships the en-US model).

The model is 16 kHz, so 8 kHz telephone audio is upsampled on the way in. The slow second
pass (fwdflat + bestpath) is off: it improves accuracy a little but makes finalisation take
~300 ms instead of a few tens of ms, and finalisation sits on the voice-to-voice path.
"""

from __future__ import annotations

import threading
from typing import Any

import pocketsphinx  # type: ignore[import-untyped]

from callbridge.audio.resample import Resampler
from callbridge.stt.base import Transcript

MODEL_RATE = 16000
_PARTIAL_EVERY = 2 * MODEL_RATE // 5  # samples (200 ms) between partial hypotheses
# 200 ms of silence around the utterance helps the decoder's start/end states (cheap).
_PAD = bytes(2 * MODEL_RATE // 5)

# Initial cepstral mean for 8 kHz telephone speech upsampled to 16 kHz (measured on piper and
# espeak-ng speech through G.711). The model's default assumes wide-band audio, and its live
# CMN needs a few seconds to adapt: short turns like "what time is it" come out garbled.
TELEPHONE_CMN = "46.6,24.7,-31.8,41.7,-21.8,-1.9,8.9,-30.8,9.1,-12.2,4.4,7.0,-17.4"
_OPTIONS: dict[str, Any] = {
    "loglevel": "FATAL",
    "fwdflat": False,
    "bestpath": False,
    "cmninit": TELEPHONE_CMN,
}

_shared: dict[str, Any] = {}
_lock = threading.Lock()


def _language_model() -> tuple[Any, Any]:
    """Load the n-gram model once per process; every decoder shares it (saves ~1 s per call)."""
    with _lock:
        if "lm" not in _shared:
            config = pocketsphinx.Config(**_OPTIONS)
            _shared["lm"] = pocketsphinx.NGramModel(config, pocketsphinx.LogMath(), config["lm"])
        return _shared["lm"], None


class PocketsphinxRecognizer:
    def __init__(self) -> None:
        lm, _ = _language_model()
        self._decoder = pocketsphinx.Decoder(lm=None, **_OPTIONS)
        self._decoder.add_lm("ngram", lm)
        self._decoder.activate_search("ngram")
        self._up: Resampler | None = None
        self._since_partial = 0
        self._partial = ""
        self._active = False

    def start(self) -> None:
        if self._active:
            self.finish()
        self._up = Resampler(8000, MODEL_RATE)
        self._since_partial = 0
        self._partial = ""
        self._decoder.start_utt()
        self._decoder.process_raw(_PAD, False, False)
        self._active = True

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        if not self._active or self._up is None:
            self.start()
        assert self._up is not None
        data = self._up.feed(pcm8k)
        if data:
            self._decoder.process_raw(data, False, False)
        self._since_partial += len(data) // 2
        if self._since_partial < _PARTIAL_EVERY:
            return []
        self._since_partial = 0
        hyp = self._decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        if text and text != self._partial:
            self._partial = text
            return [Transcript(text, final=False)]
        return []

    def finish(self) -> Transcript:
        if not self._active:
            return Transcript("", final=True)
        self._active = False
        if self._up is not None:
            tail = self._up.finish()
            if tail:
                self._decoder.process_raw(tail, False, False)
        self._decoder.process_raw(_PAD, False, False)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        if hyp is None or not hyp.hypstr:
            return Transcript("", final=True)
        return Transcript(hyp.hypstr, final=True, confidence=None)

    def close(self) -> None:
        if self._active:
            self._active = False
            self._decoder.end_utt()
