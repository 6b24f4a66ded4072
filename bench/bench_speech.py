"""Benchmark of the local speech adapters: resampler delay, STT finalisation, TTS first audio.

Run: .venv/bin/python bench/bench_speech.py [--reps N]
Prints one table, everything measured in this run on this machine:
- resampler: output withheld while streaming 20 ms chunks (mean / max), the low-delay chain
  against soxr's own recipes;
- pocketsphinx: decoder load time and memory, finish() latency with and without the second
  pass (fwdflat + bestpath), decoding real-time factor, on piper speech through G.711;
- piper and espeak-ng: time to the first 8 kHz chunk and real-time factor.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterable

import numpy as np

from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.audio.resample import Quality, Resampler
from callbridge.core.frames import FRAME_BYTES
from callbridge.stt.pocketsphinx import DecoderPool, PocketsphinxRecognizer
from callbridge.tts.base import Synthesizer
from callbridge.tts.espeak import EspeakSynthesizer
from callbridge.tts.piper import PiperSynthesizer

PHRASES = [
    "What time is it?",
    "Can you tell me what time it is?",
    "Please call me back tomorrow morning.",
    "I want to leave a message for John.",
    "My number is five five five one two three four.",
    "Goodbye, talk to you later.",
]
TTS_TEXTS = [
    "Sure.",
    "It is ten past three.",
    "Hello, thanks for calling. How can I help you today?",
    "I have taken your message and will pass it on this afternoon.",
]

Row = tuple[str, str, str]


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ms(x: float) -> str:
    return f"{1000 * x:.1f} ms"


def spread(xs: Iterable[float]) -> str:
    v = sorted(xs)
    return f"p50 {ms(statistics.median(v))}  max {ms(v[-1])}"


def resampler_rows() -> list[Row]:
    rows: list[Row] = []
    rng = np.random.default_rng(0)
    qualities: list[Quality] = ["low_delay", "LQ", "MQ", "HQ"]
    for in_rate, out_rate in ((8000, 16000), (22050, 8000)):
        pcm = rng.normal(0, 3000, 2 * in_rate).astype("<i2").tobytes()
        chunk = 2 * in_rate // 50
        for q in qualities:
            r = Resampler(in_rate, out_rate, q)
            delays = []
            for k in range(0, len(pcm), chunk):
                r.feed(pcm[k : k + chunk])
                delays.append(r.delay)
            steady = delays[10:]
            rows.append(
                (
                    f"resample {in_rate / 1000:g}->{out_rate / 1000:g} kHz",
                    q,
                    f"delay mean {ms(statistics.fmean(steady))}  max {ms(max(steady))}",
                )
            )
    return rows


def stt_rows(utterances: list[tuple[str, bytes]], reps: int) -> list[Row]:
    rows: list[Row] = []
    for second_pass in (False, True):
        label = "second pass ON" if second_pass else "first pass only"
        pool = DecoderPool(second_pass=second_pass)
        gc.collect()
        before = rss_mb()
        t0 = time.perf_counter()
        stt = PocketsphinxRecognizer(pool=pool)
        load = time.perf_counter() - t0
        grown = rss_mb() - before
        finals: list[float] = []
        feed_time = audio = 0.0
        correct = total = 0
        for _ in range(reps):
            for text, pcm in utterances:
                stt.start()
                t0 = time.perf_counter()
                for k in range(0, len(pcm), FRAME_BYTES):
                    stt.feed(pcm[k : k + FRAME_BYTES])
                feed_time += time.perf_counter() - t0
                audio += len(pcm) / 2 / 8000
                t0 = time.perf_counter()
                heard = stt.finish().text.split()
                finals.append(time.perf_counter() - t0)
                words = [w.strip("?.,").lower() for w in text.split()]
                correct += sum(w in heard for w in words)
                total += len(words)
        stt.close()
        rows.append(("pocketsphinx", label, f"decoder load {ms(load)}, +{grown:.0f} MB RSS"))
        rows.append(("pocketsphinx", label, f"finish() {spread(finals)}"))
        rows.append(
            (
                "pocketsphinx",
                label,
                f"decode RTF {feed_time / audio:.3f}, words found {correct}/{total}",
            )
        )
    return rows


def tts_rows(name: str, make: Callable[[], Synthesizer], reps: int) -> list[Row]:
    t0 = time.perf_counter()
    tts = make()
    load = time.perf_counter() - t0
    first: list[float] = []
    short_first: list[float] = []
    busy = audio = 0.0
    for _ in range(reps):
        for text in TTS_TEXTS:
            t0 = time.perf_counter()
            got_first = None
            samples = 0
            for chunk in tts.synthesize(text):
                if got_first is None:
                    got_first = time.perf_counter() - t0
                samples += len(chunk) // 2
            busy += time.perf_counter() - t0
            audio += samples / 8000
            assert got_first is not None
            (short_first if len(text) < 25 else first).append(got_first)
    tts.close()
    return [
        (name, "load (+ warm-up)", ms(load)),
        (name, "first audio, short sentence", spread(short_first)),
        (name, "first audio, long sentence", spread(first)),
        (name, "real-time factor", f"{busy / audio:.3f}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    rows = resampler_rows()
    piper_rows = tts_rows("piper joe-medium", PiperSynthesizer, args.reps)
    rows += piper_rows
    rows += tts_rows("espeak-ng", EspeakSynthesizer, args.reps)

    voice = PiperSynthesizer()
    utterances = [
        (text, ulaw_decode(ulaw_encode(b"".join(voice.synthesize(text))))) for text in PHRASES
    ]
    rows += stt_rows(utterances, args.reps)

    print(f"speech benchmark: {os.cpu_count()} CPUs, {args.reps} repetitions")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for a, b, c in rows:
        print(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}")


if __name__ == "__main__":
    main()
