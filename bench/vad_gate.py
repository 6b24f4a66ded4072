"""What the VAD's noise gate saves, and what it costs in speech detection.

Run: .venv/bin/python bench/vad_gate.py [--margins 3,6,9] [--phrases 6]

The gate (`VadConfig.noise_margin_db`, media/noise_floor.py) skips Silero on chunks within a
margin of the line's noise floor once the hangover ran out. Per condition, over several voices
(piper joe at three speeds, espeak-ng en-us/en-gb male and female at 130-190 wpm): callers
say two phrases with pauses around them, through G.711 µ-law (A-law, 3 % loss through the
jitter buffer) with noise under them (a quiet line at -60 dBFS, white noise at 20/10/5 dB
SNR, babble of other voices at 10 dB SNR). Each clip runs through one VadStream without the
gate (the baseline: energy floor only, as before) and one per margin, in the same run:

- model %: chunks Silero evaluated (the rest skipped: the CPU the gate saves), without the
  gate beside it, and `idle`: the same over the line noise alone (0.3 s before a phrase to
  0.5 s after it left out), which is what a listening call mostly hears;
- speech kept %: of the chunks the baseline calls speech (p >= 0.5), those still speech;
- added: chunks speech now that the baseline called not speech;
- onset +chunks: per utterance, how many 32 ms chunks later its first speech chunk comes
  (mean / max); missed: utterances the baseline found and the gated stream did not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stt_accuracy import BABBLE, PHRASES, VOICES, _loss, load_babble

from callbridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.media.vad import SileroVad, VadConfig, VadResult

RATE = 8000
FRAME = 160
LEAD, GAP, TAIL = 1.0, 0.8, 1.2  # seconds of line noise around and between the phrases


def _ulaw(x: np.ndarray) -> bytes:
    return ulaw_decode(ulaw_encode(np.clip(x, -32768, 32767).astype("<i2").tobytes()))


def _alaw(x: np.ndarray) -> bytes:
    return alaw_decode(alaw_encode(np.clip(x, -32768, 32767).astype("<i2").tobytes()))


def _line(n: int, rng: np.random.Generator, dbfs: float = -60.0) -> np.ndarray:
    """A quiet line's hiss, low-passed like the load benchmark's: `dbfs` RMS."""
    x = np.convolve(rng.normal(0, 1, n + 7), np.ones(8) / 8, mode="valid")
    return x / np.sqrt(np.mean(x**2)) * 32767 * 10 ** (dbfs / 20)


def _white(speech: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    return _scaled(rng.normal(0, 1, speech.size), speech, snr)


def _babble(speech: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    n = np.zeros(speech.size)
    for _ in range(4):
        other = BABBLE[int(rng.integers(len(BABBLE)))]
        other = np.tile(other, speech.size // other.size + 1)
        start = int(rng.integers(0, other.size - speech.size + 1))
        n += other[start : start + speech.size]
    return _scaled(n, speech, snr)


def _scaled(noise: np.ndarray, speech: np.ndarray, snr: float) -> np.ndarray:
    active = speech[np.abs(speech) > 0.05 * np.abs(speech).max()]
    p_speech = float(np.mean(active**2))
    return noise * np.sqrt(p_speech / 10 ** (snr / 10) / max(float(np.mean(noise**2)), 1e-9))


Condition = Callable[[np.ndarray, np.random.Generator], bytes]
CONDITIONS: dict[str, Condition] = {
    "line -60 dBFS, µ-law": lambda s, r: _ulaw(s + _line(s.size, r)),
    "line -60 dBFS, A-law": lambda s, r: _alaw(s + _line(s.size, r)),
    "line, 3% loss": lambda s, r: _loss(_ulaw(s + _line(s.size, r)), int(r.integers(1 << 30))),
    "white 20 dB SNR": lambda s, r: _ulaw(s + _white(s, 20, r)),
    "white 10 dB SNR": lambda s, r: _ulaw(s + _white(s, 10, r)),
    "white 5 dB SNR": lambda s, r: _ulaw(s + _white(s, 5, r)),
    "babble 10 dB SNR": lambda s, r: _ulaw(s + _babble(s, 10, r)),
}


@dataclass
class Tally:
    chunks: int = 0
    model: int = 0
    idle: int = 0  # chunks of line noise only (away from the phrases)
    idle_model: int = 0
    speech: int = 0
    kept: int = 0
    added: int = 0
    onsets: list[int] = field(default_factory=list)
    missed: int = 0


def run(vad: SileroVad, pcm: bytes, config: VadConfig) -> list[VadResult]:
    stream = vad.stream(config)
    out: list[VadResult] = []
    for i in range(0, len(pcm) - 2 * FRAME + 1, 2 * FRAME):
        stream.feed(pcm[i : i + 2 * FRAME], (i // 2 + FRAME) / RATE)
        vad.evaluate([stream])
        out.extend(stream.results())
    return out


def first_speech(results: list[VadResult], t0: float, t1: float) -> int | None:
    return next(
        (k for k, r in enumerate(results) if t0 <= r.start < t1 and r.probability >= 0.5), None
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--margins", default="3,6,9")
    ap.add_argument("--phrases", type=int, default=6, help="phrase pairs per voice")
    a = ap.parse_args()
    margins = [float(m) for m in a.margins.split(",")]
    load_babble()
    vad = SileroVad()
    base_cfg = VadConfig(noise_margin_db=None)
    configs = {m: VadConfig(noise_margin_db=m) for m in margins}
    tallies: dict[tuple[str, float], Tally] = {}
    base_model: dict[str, list[int]] = {}
    rng = np.random.default_rng(11)
    clips: list[tuple[np.ndarray, list[tuple[float, float]]]] = []
    for voice in VOICES:
        say = voice.make()
        for k in range(a.phrases):
            one = np.frombuffer(say(PHRASES[(2 * k) % len(PHRASES)]), "<i2").astype(float)
            two = np.frombuffer(say(PHRASES[(2 * k + 7) % len(PHRASES)]), "<i2").astype(float)
            parts = [np.zeros(int(LEAD * RATE)), one, np.zeros(int(GAP * RATE)), two,
                     np.zeros(int(TAIL * RATE))]  # fmt: skip
            t_one = (LEAD, LEAD + one.size / RATE)
            t_two = (t_one[1] + GAP, t_one[1] + GAP + two.size / RATE)
            clips.append((np.concatenate(parts), [t_one, t_two]))
    print(f"{len(VOICES)} voices x {a.phrases} clips of two phrases, {len(CONDITIONS)} conditions")
    for cname, condition in CONDITIONS.items():
        for speech, spans in clips:
            pcm = condition(speech, rng)
            base = run(vad, pcm, base_cfg)
            base_model.setdefault(cname, [0, 0])
            base_model[cname][0] += len(base)
            base_model[cname][1] += sum(r.source == "model" for r in base)
            for m, cfg in configs.items():
                got = run(vad, pcm, cfg)
                t = tallies.setdefault((cname, m), Tally())
                n = min(len(base), len(got))
                t.chunks += n
                t.model += sum(r.source == "model" for r in got[:n])
                for g in got[:n]:
                    if all(not t0 - 0.3 <= g.start < t1 + 0.5 for t0, t1 in spans):
                        t.idle += 1
                        t.idle_model += g.source == "model"
                for b, g in zip(base[:n], got[:n], strict=True):
                    if b.probability >= 0.5:
                        t.speech += 1
                        t.kept += g.probability >= 0.5
                    elif g.probability >= 0.5:
                        t.added += 1
                for t0, t1 in spans:
                    fb = first_speech(base, t0 - 0.1, t1)
                    if fb is None:
                        continue
                    fg = first_speech(got, t0 - 0.1, t1)
                    if fg is None:
                        t.missed += 1
                    else:
                        t.onsets.append(fg - fb)
    print(f"\n{'condition':<22} {'margin':>6} {'model%':>7} {'(base)':>7} {'idle':>6} {'speech kept%':>12} "
          f"{'added':>6} {'onset +chunks mean/max':>22} {'missed':>6}")  # fmt: skip
    for (cname, m), t in tallies.items():
        bm = base_model[cname]
        onset = f"{np.mean(t.onsets):.2f} / {max(t.onsets)}" if t.onsets else "-"
        kept = 100 * t.kept / t.speech if t.speech else float("nan")
        idle = 100 * t.idle_model / t.idle if t.idle else float("nan")
        print(f"{cname:<22} {m:>6g} {100 * t.model / t.chunks:>7.1f} {100 * bm[1] / bm[0]:>7.1f} {idle:>6.1f} "
              f"{kept:>12.2f} {t.added:>6} {onset:>22} {t.missed:>6}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
