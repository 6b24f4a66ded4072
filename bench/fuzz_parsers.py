"""Long fuzz run of every wire parser: any input must give a value or the parser's own error.

Run: .venv/bin/python bench/fuzz_parsers.py [--inputs 1000000] [--parser NAME] [--seed 0]
Parsers: sip, sip-ua, sdp, sdp-oa, rtp, rtcp, rfc4733, twilio, audiosocket, chan-ws, agi, ari
(default: all). Inputs are golden
messages (tests/fixtures, tests/unit/twilio_streams/golden, packets our own builders emit) with
1-4 stacked mutations - bit flips, byte insertions/deletions, splices of two goldens, repeated
chunks, digit runs inflated to "9"*5000 or replaced by hostile numbers, range strings like
"0-30000000" - plus 10 % random bytes. The same --seed gives the same inputs, per parser.

Prints one row per parser: throughput on the unmutated goldens beside the mutated inputs,
accepted/rejected counts, unexpected exceptions (anything but the parser's own error: must be
0, the first reproducers are printed), the slowest input and the memory peaks (tracemalloc
peak of the slowest and largest inputs re-run, and the growth of the process's max RSS).
Exit status 1 if any unexpected exception (or, with --max-ms, any input slower than that).
--inputs 2000 takes seconds; the default million per parser takes 10-20 minutes (one core).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.asterisk import fuzz_targets as asterisk_fuzz
from tests.unit.fuzz import properties as prop

from callbridge.rtp.dtmf import DtmfReceiver
from callbridge.sip.ua import LocalIdentity, UserAgent

MAX_INPUT = 128 * 1024  # mutants are capped here: every parser refuses far smaller ones
REPRODUCERS = 5
RESEED_EVERY = 500  # stateful targets (UA, DTMF receiver) start afresh this often

# --- targets: return True (accepted) / False (the parser's own error); anything else escapes --
# The seeds and the per-parser checks (properties that must hold for accepted input raise
# AssertionError) are the ones tests/unit/fuzz/test_parsers_total.py runs under hypothesis.


@dataclass
class UaTarget:
    """The whole UA on one datagram: what the SIP port really runs (no exception may escape)."""

    ua: UserAgent = field(default_factory=lambda: UserAgent(LocalIdentity("127.0.0.1", 5060)))
    count: int = 0

    def __call__(self, data: bytes) -> bool:
        self.count += 1
        if self.count % RESEED_EVERY == 0:
            self.ua = UserAgent(LocalIdentity("127.0.0.1", 5060))
        bad = self.ua.bad_messages
        self.ua.receive(data, ("192.0.2.1", 5060), self.count * 0.01)
        return self.ua.bad_messages == bad


@dataclass
class DtmfTarget:
    receiver: DtmfReceiver = field(default_factory=DtmfReceiver)
    count: int = 0

    def __call__(self, data: bytes) -> bool:
        self.count += 1
        if self.count % RESEED_EVERY == 0:
            self.receiver = DtmfReceiver()
        return prop.check_dtmf(data, self.receiver, self.count * 0.02)


@dataclass(frozen=True)
class Target:
    name: str
    seeds: Callable[[], list[bytes]]
    run: Callable[[], Callable[[bytes], bool]]  # a fresh runner per phase (state is per run)
    own_error: str


TARGETS = [
    Target("sip", prop.sip_seeds, lambda: prop.check_sip, "SipParseError"),
    Target("sip-ua", prop.sip_seeds, UaTarget, "none"),
    Target("sdp", prop.sdp_seeds, lambda: prop.check_sdp, "SdpParseError"),
    Target("sdp-oa", prop.sdp_seeds, lambda: prop.check_offer_answer, "SdpError"),
    Target("rtp", prop.rtp_seeds, lambda: prop.check_rtp, "RtpParseError"),
    Target("rtcp", prop.rtcp_seeds, lambda: prop.check_rtcp, "RtcpParseError"),
    Target("rfc4733", prop.dtmf_seeds, DtmfTarget, "RtpParseError"),
    Target("twilio", prop.twilio_seeds, lambda: prop.check_twilio, "MessageError"),
    Target(
        "audiosocket",
        asterisk_fuzz.audiosocket_seeds,
        lambda: asterisk_fuzz.check_audiosocket,
        "AudioSocketError",
    ),
    Target(
        "chan-ws",
        asterisk_fuzz.chan_websocket_seeds,
        lambda: asterisk_fuzz.check_chan_websocket,
        "ChanWebSocketError",
    ),
    Target("agi", asterisk_fuzz.agi_seeds, lambda: asterisk_fuzz.check_agi, "AgiError"),
    Target("ari", asterisk_fuzz.ari_seeds, lambda: asterisk_fuzz.check_ari, "AriError"),
]

# --- mutation --------------------------------------------------------------------------------

HOSTILE_NUMBERS = [
    b"9" * 5000, b"9" * 400, b"1" * 4301, b"0" * 40, "²".encode(), "١٢".encode(),
    "８".encode(), b"-1", b"+5", b"1_0", b"1e999", b"nan", b"inf", b"0x1f", b"128", b"256",
    b"65536", b"4294967296", b"18446744073709551616", b"9223372036854775808", b"0", b"",
]  # fmt: skip
RANGES = [
    b"0-30000000", b"30000000-0", b"0-255," * 200 + b"16", b"15-0", b"0-", b"-", b"1-2-3",
    b"0-9999999999999999999999",
]  # fmt: skip
TOKENS = [
    b"\r\n", b"\r\n\r\n", b"\n", b"\x00", b"%00", b"%", b'"', b"\\", b"<", b">", b";", b",",
    b":", b"=", b"/", b"[", b"]", b"{", b"}", b"\\u0000", b"\\ud800", b"\xff\xfe", b"\xc0\x80",
    b";rport=", b";branch=", b"a=ptime:", b"a=rtpmap:101 ", b"a=fmtp:101 ", b"m=audio ",
    b'"payload":"', b'"sequenceNumber":', b"[" * 64, b"{" * 64,
]  # fmt: skip
_DIGITS_RE = re.compile(rb"[0-9]+")


class Mutator:
    def __init__(self, seeds: list[bytes], rng: random.Random) -> None:
        self.seeds = seeds
        self.rng = rng
        self.ops: list[Callable[[bytearray], None]] = [
            self.flip, self.set_byte, self.insert, self.delete, self.splice, self.repeat,
            self.number, self.number, self.range, self.truncate, self.swap_lines, self.word,
        ]  # fmt: skip

    def __call__(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.1:
            return rng.randbytes(rng.choice((rng.randrange(64), rng.randrange(2048))))
        data = bytearray(rng.choice(self.seeds))
        for _ in range(rng.randint(1, 4)):
            rng.choice(self.ops)(data)
            if len(data) > MAX_INPUT:
                del data[MAX_INPUT:]
        return bytes(data)

    def _pos(self, data: bytearray) -> int:
        return self.rng.randrange(len(data) + 1)

    def flip(self, data: bytearray) -> None:
        for _ in range(self.rng.randint(1, 8)):
            if data:
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)

    def set_byte(self, data: bytearray) -> None:
        if data:
            data[self.rng.randrange(len(data))] = self.rng.choice(
                b'\x00\xff\x7f\x80\r\n :;,"<>[{%\\/-='
            )

    def insert(self, data: bytearray) -> None:
        pos = self._pos(data)
        if self.rng.random() < 0.5:
            data[pos:pos] = self.rng.choice(TOKENS)
        else:
            data[pos:pos] = self.rng.randbytes(self.rng.randint(1, 16))

    def delete(self, data: bytearray) -> None:
        pos = self._pos(data)
        del data[pos : pos + self.rng.choice((1, 2, 4, self.rng.randint(1, 64)))]

    def splice(self, data: bytearray) -> None:
        other = self.rng.choice(self.seeds)
        data[self._pos(data) :] = other[self.rng.randrange(len(other) + 1) :]

    def repeat(self, data: bytearray) -> None:
        pos = self._pos(data)
        chunk = bytes(data[pos : pos + self.rng.randint(1, 64)])
        data[pos:pos] = chunk * self.rng.choice((2, 10, 100, 1000, 5000))

    def _digit_run(self, data: bytearray) -> tuple[int, int]:
        runs = [(m.start(), m.end()) for m in _DIGITS_RE.finditer(data)]
        if not runs:
            pos = self._pos(data)
            return pos, pos
        return self.rng.choice(runs)

    def number(self, data: bytearray) -> None:
        start, end = self._digit_run(data)
        if self.rng.random() < 0.5:
            data[start:end] = self.rng.choice(HOSTILE_NUMBERS)
        else:
            data[start:end] = str(self.rng.randrange(10 ** self.rng.randint(1, 30))).encode()

    def range(self, data: bytearray) -> None:
        start, end = self._digit_run(data)
        data[start:end] = self.rng.choice(RANGES)

    def truncate(self, data: bytearray) -> None:
        del data[self._pos(data) :]

    def swap_lines(self, data: bytearray) -> None:
        lines = bytes(data).split(b"\n")
        if len(lines) > 2:
            i, j = self.rng.randrange(len(lines)), self.rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data[:] = b"\n".join(lines)

    def word(self, data: bytearray) -> None:
        # Binary length/count fields: 16- or 32-bit extremes at an aligned offset.
        if len(data) >= 4:
            pos = self.rng.randrange(len(data) // 2) * 2
            size = self.rng.choice((2, 4))
            value = self.rng.choice((0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, self.rng.getrandbits(32)))
            data[pos : pos + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "big")


# --- running ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    unexpected: int = 0
    parse_seconds: float = 0.0
    golden_per_s: float = 0.0
    slowest_s: float = 0.0
    slowest: bytes = b""
    peak_kib: float = 0.0
    rss_kib: int = 0
    reproducers: list[tuple[str, bytes]] = field(default_factory=list)


def _max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def golden_rate(target: Target, seeds: list[bytes], calls: int) -> float:
    run = target.run()
    start = time.perf_counter()
    done = 0
    while done < calls and time.perf_counter() - start < 2.0:
        with contextlib.suppress(Exception):  # torture goldens are meant to be rejected
            run(seeds[done % len(seeds)])
        done += 1
    return done / (time.perf_counter() - start)


def best_time(target: Target, data: bytes, rounds: int = 3) -> float:
    run = target.run()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        with contextlib.suppress(Exception):
            run(data)
        best = min(best, time.perf_counter() - t0)
    return best


def tracemalloc_peak(target: Target, inputs: list[bytes]) -> float:
    """Largest per-input allocation peak, KiB, re-running the given inputs under tracemalloc."""
    run = target.run()
    worst = 0
    tracemalloc.start()
    try:
        for data in inputs:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            with contextlib.suppress(Exception):
                run(data)
            worst = max(worst, tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    return worst / 1024


def fuzz(target: Target, inputs: int, seed: int, progress: bool) -> Result:
    seeds = target.seeds()
    result = Result(target.name)
    result.golden_per_s = golden_rate(target, seeds, max(len(seeds) * 20, inputs // 20))
    mutate = Mutator(seeds, random.Random(f"{seed}:{target.name}"))
    run = target.run()
    keep_slow: list[tuple[float, bytes]] = []  # a few of the slowest, for the memory re-run
    largest: list[bytes] = []
    rss_before = _max_rss_kib()
    started = last_report = time.monotonic()
    for i in range(inputs):
        data = mutate()
        t0 = time.perf_counter()
        try:
            ok = run(data)
        except Exception as exc:
            elapsed = time.perf_counter() - t0
            result.unexpected += 1
            if len(result.reproducers) < REPRODUCERS:
                result.reproducers.append((f"{type(exc).__name__}: {str(exc)[:160]}", data))
        else:
            elapsed = time.perf_counter() - t0
            if ok:
                result.accepted += 1
            else:
                result.rejected += 1
        result.parse_seconds += elapsed
        if len(keep_slow) < 20 or elapsed > keep_slow[0][0]:
            keep_slow.append((elapsed, data))
            keep_slow.sort(key=lambda item: item[0])
            del keep_slow[:-20]
        if len(largest) < 20 or len(data) > len(largest[0]):
            largest.append(data)
            largest.sort(key=len)
            del largest[:-20]
        if progress and time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            rate = (i + 1) / (last_report - started)
            print(f"  {target.name}: {i + 1}/{inputs} ({rate:.0f}/s)", file=sys.stderr)
    result.inputs = inputs
    result.rss_kib = _max_rss_kib() - rss_before
    # A single timing is noisy (a GC pass, another process): the slowest is the worst of the
    # 20 slowest inputs re-timed, best of 3 each.
    result.slowest_s, result.slowest = max(
        ((best_time(target, data), data) for _, data in keep_slow), key=lambda item: item[0]
    )
    sample = [mutate() for _ in range(200)]
    result.peak_kib = tracemalloc_peak(target, [d for _, d in keep_slow] + largest + sample)
    return result


def report(results: list[Result]) -> None:
    header = (
        f"{'parser':<8} {'inputs':>9} {'golden/s':>9} {'mutated/s':>9} {'accepted':>9}"
        f" {'rejected':>9} {'unexpected':>10} {'slowest ms':>10} {'peak KiB':>9} {'RSS +KiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        rate = r.inputs / r.parse_seconds if r.parse_seconds else 0.0
        print(
            f"{r.name:<8} {r.inputs:>9} {r.golden_per_s:>9.0f} {rate:>9.0f} {r.accepted:>9}"
            f" {r.rejected:>9} {r.unexpected:>10} {r.slowest_s * 1000:>10.2f}"
            f" {r.peak_kib:>9.0f} {r.rss_kib:>9}"
        )
    print("golden/s: unmutated goldens; mutated/s: parse time only (mutation excluded)")
    print("peak KiB: tracemalloc peak of one input (slowest, largest and 200 sampled re-run)")
    for r in results:
        print(f"\n{r.name}: slowest {r.slowest_s * 1000:.2f} ms, {len(r.slowest)} bytes:")
        print(f"  {r.slowest[:80]!r}")
        for what, data in r.reproducers:
            print(f"  UNEXPECTED {what}\n    input ({len(data)} bytes): {data[:300]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="mutated inputs per parser")
    parser.add_argument(
        "--parser",
        action="append",
        choices=[t.name for t in TARGETS],
        help="only this parser (repeatable); default all",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-ms", type=float, default=0.0, help="fail if an input is slower")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args()
    chosen = [t for t in TARGETS if not args.parser or t.name in args.parser]
    print(
        f"fuzzing {', '.join(t.name for t in chosen)}: {args.inputs} inputs each, seed {args.seed}"
    )
    results = []
    for target in chosen:
        results.append(fuzz(target, args.inputs, args.seed, progress=not args.quiet))
        if not args.quiet:
            print(f"  {target.name} done", file=sys.stderr)
    report(results)
    failed = sum(r.unexpected for r in results)
    slow = [r.name for r in results if args.max_ms and r.slowest_s * 1000 > args.max_ms]
    if failed:
        print(f"\nFAIL: {failed} unexpected exceptions")
    if slow:
        print(f"\nFAIL: inputs slower than {args.max_ms} ms in {', '.join(slow)}")
    sys.exit(1 if failed or slow else 0)


if __name__ == "__main__":
    main()
