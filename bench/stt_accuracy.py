"""Accuracy and latency of the local recognisers, through the real STT worker processes.

Run: .venv/bin/python bench/stt_accuracy.py [--quick] [--recognizers pocketsphinx,whisper,...]

Phrases a phone caller says (the demo's intents, questions, numbers, names, yes/no) are
synthesised with piper (en_US-joe-medium, three speeds) and espeak-ng (en-us, en-gb, female
variants, 130-190 wpm), sent through a condition (G.711 µ-law or A-law; 3 % packet loss through
the project's jitter buffer and loss concealment; babble or white noise at 15 dB SNR) and given
to each recogniser exactly as a call does: start(), 100 ms feeds, finish(). Printed per
recogniser and voice/condition: WER (word-level Levenshtein, implemented here, after a
normaliser: lowercase, numbers spelled as words, punctuation stripped), final latency p50/p95
(the finish() call on a complete utterance, measured in this process, so it includes the pipe
to the worker), and the worker's CPU seconds per second of speech (from /proc).

Recognisers (`--recognizers`): `pocketsphinx` (the baseline, a session per call), `whisper`
(the default configuration) and variants that change one thing each, to measure what it buys:
`whisper-w30` (Whisper's own 30 s encoder window), `whisper-greedy` (beam 1),
`whisper-2threads` (2 CTranslate2 threads), `whisper-prompt` (the demo's vocabulary as a
prompt), `whisper-partials` (decodes the growing turn every 1 s of speech, like a streaming
recogniser; finish() still decodes it all).

--quick: 16 phrases, 2 voices, clean µ-law and 3 % loss, pocketsphinx and whisper (< 2 min).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from callbridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.core.frames import FRAME_BYTES, PIPELINE_RATE
from callbridge.llm.intents import Intent, classify
from callbridge.rtp.jitter import JitterBuffer
from callbridge.stt.base import Recognizer
from callbridge.stt.isolated import WorkerPool
from callbridge.stt.whisper import DEFAULT_PROMPT
from callbridge.tts.espeak import EspeakSynthesizer
from callbridge.tts.piper import PiperSynthesizer

PHRASES = [
    # the demo's intents, several phrasings
    "What time is it?",
    "Do you know what time it is?",
    "Can you tell me the time, please?",
    "What's the date today?",
    "What day is it today?",
    "What is today's date?",
    "I'd like to leave a message.",
    "Can I leave a message for Sarah?",
    "Please take a message.",
    "Can I talk to a person?",
    "I want to speak to someone.",
    "Transfer me, please.",
    "Could you put me through to the front desk?",
    "What can you do?",
    "How can you help me?",
    "Can you repeat that?",
    "Sorry, could you say that again?",
    "Goodbye.",
    "That's all, thanks.",
    "Thank you, bye.",
    # yes / no
    "Yes, please.",
    "No, thank you.",
    "Yeah, that's right.",
    "No, that's wrong.",
    "Okay.",
    "Sure, go ahead.",
    # numbers
    "My number is five five five, one two three four.",
    "The order number is seven eight nine.",
    "I need a table for four people.",
    "It costs twenty five dollars.",
    "Call me back at three o'clock.",
    "I'll be there in ten minutes.",
    "My account number is two four six eight.",
    "We have two hundred and fifty boxes.",
    # names and places
    "My name is John Smith.",
    "This is Maria calling from London.",
    "I'm trying to reach Doctor Patel.",
    "Is Michael in the office today?",
    "I'm calling about my appointment with Anna.",
    "Please tell David I called.",
    # questions a caller asks
    "Are you open on Saturday?",
    "What are your opening hours?",
    "Where are you located?",
    "How much does it cost?",
    "Can I book an appointment for tomorrow?",
    "I'd like to cancel my order.",
    "Is anybody there?",
    "Hello, can you hear me?",
    "I have a question about my bill.",
    "My internet is not working.",
    "When will my package arrive?",
    "Can you send me an email?",
    "I need to change my address.",
    "How long will it take?",
    "Do you have any rooms available next week?",
    "Who am I speaking with?",
    # statements, longer turns
    "Hello, I'm calling about the job advertised on your website.",
    "I ordered a blue jacket last week and it still hasn't arrived.",
    "Please call me back this afternoon.",
    "I think there is a mistake on my invoice.",
    "The meeting has been moved to Thursday morning.",
    "I would like to make a reservation for dinner.",
    "My flight was cancelled and I need a new ticket.",
    "Could you check the weather for tomorrow?",
]
QUICK_PHRASES = [PHRASES[i] for i in (0, 1, 3, 6, 9, 11, 13, 15, 17, 18, 20, 26, 30, 34, 47, 57)]


# ---- the normaliser and WER -----------------------------------------------------------------

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spell(n: int) -> list[str]:
    """An integer below a million as words ("two hundred fifty": no "and")."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (spell(n % 100) if n % 100 else [])
    return [*spell(n // 1000), "thousand"] + (spell(n % 1000) if n % 1000 else [])


def _number(token: str, digits: bool) -> list[str]:
    plain = token.replace(",", "")
    # phone and account numbers are said digit by digit; "250" may be either
    if digits or len(plain) > 4 or plain.startswith("0"):
        return [_ONES[int(d)] for d in plain]
    return spell(int(plain))


def normalise(text: str, digits: bool = False) -> list[str]:
    """Words to compare: lowercase, numbers as words (`digits`: digit by digit), punctuation
    and "and" between numbers gone."""
    text = text.lower().replace("%", " percent")
    text = re.sub(r"\$([\d,]+)", r"\1 dollars", text)
    text = re.sub(r"(\d+):(\d\d)", lambda m: f"{m[1]} {'' if m[2] == '00' else m[2]}", text)
    # phone numbers ("555-1234"): digit by digit, as they are said
    text = re.sub(r"\d+(?:-\d+)+", lambda m: " ".join(m[0].replace("-", "")), text)
    text = text.replace("'", "").replace("’", "")
    text = re.sub(r"[^a-z0-9,. ]+", " ", text)
    words: list[str] = []
    for raw in text.split():
        token = raw.strip(",.")
        if not token:
            continue
        if re.fullmatch(r"\d[\d,]*", token):
            words += _number(token, digits)
        else:
            words += [w for w in re.split(r"[,.]", token) if w]
    aliases = {"ok": "okay", "dollars": "dollar", "mister": "mr", "doctor": "dr"}
    words = [aliases.get(w, w) for w in words]
    # "two hundred and fifty" and "250" are the same number
    return [
        w
        for i, w in enumerate(words)
        if not (w == "and" and 0 < i < len(words) - 1 and words[i - 1] == "hundred")
    ]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


# ---- voices and conditions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Voice:
    name: str
    make: Callable[[], Callable[[str], bytes]]


def _piper(length_scale: float) -> Callable[[], Callable[[str], bytes]]:
    def make() -> Callable[[str], bytes]:
        tts = PiperSynthesizer(length_scale=length_scale, deterministic=True)
        return lambda text: b"".join(tts.synthesize(text))

    return make


def _espeak(voice: str, wpm: int) -> Callable[[], Callable[[str], bytes]]:
    def make() -> Callable[[str], bytes]:
        tts = EspeakSynthesizer(voice=voice, speed=wpm)
        return lambda text: b"".join(tts.synthesize(text))

    return make


VOICES = [
    Voice("piper joe", _piper(1.0)),
    Voice("piper joe slow", _piper(1.25)),
    Voice("piper joe fast", _piper(0.85)),
    Voice("espeak en-us 160", _espeak("en-us", 160)),
    Voice("espeak en-gb 140", _espeak("en-gb", 140)),
    Voice("espeak en-us+f3 190", _espeak("en-us+f3", 190)),
    Voice("espeak en-gb+f2 130", _espeak("en-gb+f2", 130)),
]


def _g711(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes]
) -> Callable[[bytes, int], bytes]:
    return lambda pcm, seed: decode(encode(pcm))


def _loss(pcm: bytes, seed: int, rate: float = 0.03) -> bytes:
    """µ-law in 20 ms packets, 3 % dropped at random, through the jitter buffer and its PLC."""
    rng = random.Random(seed)
    jb = JitterBuffer()
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    frames += [bytes(FRAME_BYTES)] * 10  # the buffer's delay: let the tail play out
    out: list[bytes] = []
    for k, frame in enumerate(frames):
        now = 0.02 * k
        if rng.random() >= rate:
            payload = ulaw_decode(ulaw_encode(frame.ljust(FRAME_BYTES, b"\0")))
            jb.push(0x1234, k, 160 * k, payload, now + 0.01, marker=k == 0)
        popped = jb.pop(now + 0.02)
        if popped is not None:
            out.append(popped.pcm)
    return b"".join(out)


def _noise(kind: str) -> Callable[[bytes, int], bytes]:
    def apply(pcm: bytes, seed: int) -> bytes:
        x = np.frombuffer(pcm, "<i2").astype(np.float64)
        rng = np.random.default_rng(seed)
        if kind == "white":
            n = rng.normal(0, 1, x.size)
        else:  # babble: other callers' speech, overlapping, at the same level
            n = np.zeros(x.size)
            for _ in range(4):
                other = BABBLE[int(rng.integers(len(BABBLE)))]
                if other.size < x.size:
                    other = np.tile(other, x.size // other.size + 1)
                start = int(rng.integers(0, other.size - x.size + 1))
                n += other[start : start + x.size]
        speech = x[np.abs(x) > 0.05 * np.abs(x).max()]
        p_speech = float(np.mean(speech**2)) if speech.size else 1.0
        n *= np.sqrt(p_speech / 10 ** (15 / 10) / max(float(np.mean(n**2)), 1e-9))
        y = np.clip(x + n, -32768, 32767).astype("<i2").tobytes()
        return ulaw_decode(ulaw_encode(y))

    return apply


BABBLE: list[np.ndarray] = []


def load_babble() -> None:
    """The other voices of the babble condition: four sentences of another espeak-ng voice."""
    if BABBLE:
        return
    babble_voice = EspeakSynthesizer(voice="en-us+m3", speed=170)
    BABBLE.extend(
        np.frombuffer(b"".join(babble_voice.synthesize(p)), "<i2").astype(np.float64)
        for p in ("The weather is nice today, isn't it.", "We should meet again next week.",
                  "Did you see the game last night?", "I will bring the documents tomorrow.")
    )  # fmt: skip


CONDITIONS: dict[str, Callable[[bytes, int], bytes]] = {
    "µ-law": _g711(ulaw_encode, ulaw_decode),
    "A-law": _g711(alaw_encode, alaw_decode),
    "3% loss": _loss,
    "babble 15dB": _noise("babble"),
    "white 15dB": _noise("white"),
}


# ---- recognisers through their worker processes --------------------------------------------------

WORKER = [sys.executable, "-m", "callbridge.cli.stt_worker", "--log-level", "WARNING"]
RECOGNIZERS: dict[str, tuple[list[str], bool]] = {  # worker arguments, stateless
    "pocketsphinx": (["--engine", "pocketsphinx"], False),
    "whisper": (["--engine", "whisper"], True),
    "whisper-w30": (["--engine", "whisper", "--window", "30"], True),
    "whisper-w5": (["--engine", "whisper", "--window", "5"], True),
    "whisper-w3": (["--engine", "whisper", "--window", "3"], True),
    "whisper-w15": (["--engine", "whisper", "--window", "15"], True),
    "whisper-greedy": (["--engine", "whisper", "--beam-size", "1"], True),
    "whisper-2threads": (["--engine", "whisper", "--threads", "2"], True),
    "whisper-prompt": (["--engine", "whisper", "--prompt", DEFAULT_PROMPT], True),
    "whisper-partials": (["--engine", "whisper", "--partial-interval", "1.0"], False),
}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(slots=True)
class Score:
    errors: int = 0
    words: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0
    speech: float = 0.0
    worst: list[tuple[int, str, str]] = field(default_factory=list)
    missed: list[tuple[str, str, str]] = field(default_factory=list)  # (said, heard, taken as)
    intents: int = 0  # phrases that are one of the demo's requests
    intents_ok: int = 0  # ... whose transcript the demo brain takes for the same request

    def add(self, other: Score) -> None:
        self.intents += other.intents
        self.intents_ok += other.intents_ok
        self.errors += other.errors
        self.words += other.words
        self.latencies += other.latencies
        self.cpu += other.cpu
        self.speech += other.speech
        self.worst += other.worst
        self.missed += other.missed

    def row(self) -> str:
        lat = sorted(self.latencies)
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        intent = f"{100 * self.intents_ok / self.intents:5.1f} %" if self.intents else "    -  "
        return (
            f"{100 * self.errors / max(1, self.words):5.1f} %  {intent}  "
            f"{1000 * statistics.median(lat):6.0f} {1000 * p95:6.0f} ms  "
            f"{self.cpu / max(self.speech, 1e-9):5.3f}"
        )


def run_one(recognizer: Recognizer, pid: int, clips: list[tuple[str, bytes]]) -> Score:
    score = Score()
    for ref, pcm in clips:
        c0 = cpu_seconds(pid)
        recognizer.start()
        for i in range(0, len(pcm), 5 * FRAME_BYTES):  # 100 ms at a time, as a call feeds it
            recognizer.feed(pcm[i : i + 5 * FRAME_BYTES])
        t0 = time.perf_counter()
        text = recognizer.finish().text
        score.latencies.append(time.perf_counter() - t0)
        score.cpu += cpu_seconds(pid) - c0
        score.speech += len(pcm) / 2 / PIPELINE_RATE
        # "789" is "seven eight nine" or "seven hundred eighty nine": the reading nearer the
        # reference counts (references are written in words, as they were said)
        r = normalise(ref)
        errors = min(edit_distance(r, normalise(text)), edit_distance(r, normalise(text, True)))
        score.errors += errors
        score.words += len(r)
        # Intent success: the demo brain's reading of what was heard is its reading of what was
        # said, for the phrases that ask it for something (llm/intents.py).
        wanted = classify(ref).intent
        if wanted is not Intent.UNKNOWN:
            score.intents += 1
            got = classify(text).intent
            score.intents_ok += got is wanted
            if got is not wanted:
                score.missed.append((ref, text, got.value))
        if errors:
            score.worst.append((errors, ref, text))
    return score


def clips_for(
    voices: list[Voice], conditions: list[tuple[str, str]], phrases: list[str]
) -> Iterator[tuple[str, str, list[tuple[str, bytes]]]]:
    """(voice, condition, [(reference, 8 kHz PCM with 300 ms before and 150 ms after)])."""
    pad_before, pad_after = bytes(2 * 2400), bytes(2 * 1200)
    for voice in voices:
        say = voice.make()
        spoken = [(p, say(p)) for p in phrases]
        for vname, cname in conditions:
            if vname != voice.name:
                continue
            apply = CONDITIONS[cname]
            yield (
                voice.name,
                cname,
                [(p, apply(pad_before + pcm + pad_after, k)) for k, (p, pcm) in enumerate(spoken)],
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--others",
        action="store_true",
        help="the phrases that are not the demo's intents, 2 voices, µ-law (a prompt's cost)",
    )
    parser.add_argument(
        "--intents",
        action="store_true",
        help="only the demo's requests, every voice, µ-law; lists the requests misunderstood",
    )
    parser.add_argument("--recognizers", default="pocketsphinx,whisper")
    parser.add_argument("--model", default="", help="a CTranslate2 Whisper directory")
    parser.add_argument("--errors", type=int, default=0, help="print the N worst transcripts")
    args = parser.parse_args()
    names = args.recognizers.split(",")
    if args.intents:
        phrases = PHRASES[:20]
        voices = VOICES
        conditions = [(v.name, "µ-law") for v in VOICES]
    elif args.others:
        phrases = PHRASES[20:]
        voices = [VOICES[0], VOICES[3]]
        conditions = [(v.name, "µ-law") for v in voices]
    elif args.quick:
        phrases = QUICK_PHRASES
        voices = [VOICES[0], VOICES[3]]
        conditions = [(v.name, c) for v in voices for c in ("µ-law", "3% loss")]
    else:
        phrases = PHRASES
        voices = VOICES
        conditions = [(v.name, "µ-law") for v in VOICES]
        conditions += [(v.name, c) for v in (VOICES[0], VOICES[3]) for c in list(CONDITIONS)[1:]]
    load_babble()
    t_synth = time.perf_counter()
    sets = list(clips_for(voices, conditions, phrases))
    speech = sum(len(pcm) for _, _, clips in sets for _, pcm in clips) / 2 / PIPELINE_RATE
    print(
        f"{len(phrases)} phrases x {len(sets)} voice/condition sets = "
        f"{len(phrases) * len(sets)} utterances, {speech:.0f} s of audio "
        f"(synthesised in {time.perf_counter() - t_synth:.0f} s); {os.cpu_count()} cores"
    )
    results: dict[str, dict[tuple[str, str], Score]] = {}
    memory: dict[str, float] = {}
    for name in names:
        worker_args, stateless = RECOGNIZERS[name]
        if args.model and "whisper" in worker_args:
            worker_args = [*worker_args, "--model", args.model]
        pool = WorkerPool(WORKER + worker_args, 1, stateless=stateless)
        try:
            recognizer = pool.recognizer()
            worker = pool.workers[0]
            assert worker.pid is not None
            results[name] = {(v, c): run_one(recognizer, worker.pid, clips) for v, c, clips in sets}
            memory[name] = rss_mb(worker.pid)
            recognizer.close()
        finally:
            pool.close()
    print()
    print(
        f"{'recogniser':<18} {'voice':<22} {'condition':<12} {'WER':>7}  {'intent':>7}  {'p50':>6} {'p95':>6}     CPU s/s"
    )
    for name, by_set in results.items():
        for (v, c), score in by_set.items():
            print(f"{name:<18} {v:<22} {c:<12} {score.row()}")
    print()
    print(
        f"{'recogniser':<18} {'subset':<35} {'WER':>7}  {'intent':>7}  {'p50':>6} {'p95':>6}     CPU s/s   worker RSS"
    )
    for name, by_set in results.items():
        groups: list[tuple[str, str, str]] = [  # label, voice prefix, condition ("" = any)
            ("piper, clean µ-law", "piper", "µ-law"),
            ("espeak-ng, clean µ-law", "espeak", "µ-law"),
            ("all", "", ""),
        ]
        groups += [
            (f"{cond} (piper + espeak en-us)", "", cond)
            for cond in list(CONDITIONS)[1:]
            if any(c == cond for _, c in by_set)
        ]
        for label, prefix, cond in groups:
            total = Score()
            for (v, c), score in by_set.items():
                if v.startswith(prefix) and cond in ("", c):
                    total.add(score)
            if total.latencies:
                print(f"{name:<18} {label:<35} {total.row()}   {memory[name]:5.0f} MB")
    if args.intents:
        for name, by_set in results.items():
            print(f"\n{name}: requests misunderstood")
            for (v, _), score in by_set.items():
                for said, heard, got in score.missed:
                    print(f"  {v:<22} {said!r} -> {heard!r} ({got})")
    if args.errors:
        for name, by_set in results.items():
            total = Score()
            for score in by_set.values():
                total.add(score)
            print(f"\n{name}: worst transcripts")
            for errors, ref, hyp in sorted(total.worst, reverse=True)[: args.errors]:
                print(f"  {errors}  {ref!r} -> {hyp!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
