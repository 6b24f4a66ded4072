"""Voice-to-voice and barge-in latency of the voice agent, measured on the wire.

Run: .venv/bin/python bench/voice_latency.py [--calls 10]

Starts `callbridge serve` (local models, demo brain, no greeting) and places calls one after
the other with SIPp (signalling) and an RTP endpoint of this process (media, PCMU 20 ms, like a
phone: silence between clips). In each call the caller asks a long question, the agent answers
(the demo brain repeats it back: a long answer), and 1.5 s into that answer the caller talks
over it. From the packets alone (send and arrival times at the caller's socket, on loopback:
the wire) it measures:

- voice-to-voice: the caller's last loud frame of the question -> the agent's first loud frame;
- barge-in: the caller's first loud frame of the interruption -> the agent's last loud frame.

Baseline in the same run: the `echo` route on the same peer and machine, whose voice-to-voice
(caller onset -> echo onset) is the transport's own floor (jitter buffer + pacing). The
gateway's own view of each stage (from its agent.turn / agent.barge_in events) is printed
beside, labelled as such. Targets (issue 3, one call, 2 cores): voice-to-voice p50 <= 500 ms,
p95 <= 800 ms; barge-in p50 <= 150 ms, p95 <= 250 ms.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.peers.peerlib import speech
from tests.peers.peerlib.callbridge import (
    CallbridgeProcess,
    GatewayConfig,
    start_gateway,
)
from tests.peers.peerlib.process import (
    PORT_BLOCKS,
    ProcessRegistry,
    free_port,
    wait_true,
)
from tests.peers.peerlib.speech import TimedFrame
from tests.peers.peerlib.voice_caller import (
    CallerMedia,
    start_voice_caller,
    wait_for_quiet,
    wait_for_sound,
)

QUESTION = "I would like to know more about the weather in the mountains next week"
INTERRUPTION = "hold on, I have another question"
INTO_ANSWER_S = 1.5
TARGETS = {"voice_to_voice": (500.0, 800.0), "barge_in": (150.0, 250.0)}


@dataclass(frozen=True, slots=True)
class Trial:
    voice_to_voice_ms: float
    barge_in_ms: float | None
    gateway: dict[str, Any]


def loud_span(pcm: speech.Pcm) -> tuple[float, float]:
    """First and last loud instant of a clip, in seconds from its start."""
    segs = speech.speech_segments(pcm)
    return segs[0].start, segs[-1].end


def agent_frames(media: CallerMedia, after: float) -> list[TimedFrame]:
    return [f for f in media.frames() if f.time >= after]


def voice_trial(registry: ProcessRegistry, gw: CallbridgeProcess, n: int) -> Trial:
    question = speech.piper_speech(QUESTION)
    interruption = speech.piper_speech(INTERRUPTION)
    with CallerMedia(free_port()) as media:
        caller = start_voice_caller(registry, gw.sip_addr, media, name=f"caller{n}")
        sip_call_id = caller.sip_call_id
        call_id = gw.wait_for("call.started", timeout=5, sip_call_id=sip_call_id)[0]["call_id"]
        asked = media.play(question, at=time.time() + 0.5)
        q_end = asked + loud_span(question)[1]
        answer_on = wait_for_sound(media, after=q_end, timeout=15, what="the answer")
        barged = media.play(interruption, at=answer_on + INTO_ANSWER_S)
        onset = barged + loud_span(interruption)[0]
        end = barged + speech.duration(interruption)
        wait_true(lambda: time.time() >= end + 0.3, 10, "the interruption to be over")
        stop = speech.end_of_sound_at(agent_frames(media, answer_on), onset)
        # let the agent answer the interruption, then hang up
        wait_for_quiet(media, after=end + 0.5, quiet_s=1.0, timeout=20, what="the second answer")
        caller.hang_up()
    gw.wait_for("call.ended", timeout=10, call_id=call_id)
    turns = gw.events("agent.turn", call_id=call_id)
    barges = gw.events("agent.barge_in", call_id=call_id)
    seen: dict[str, Any] = dict(turns[0]) if turns else {}
    if barges:
        seen["silenced_after_ms"] = barges[0].get("silenced_after_ms")
        seen["decided_after_ms"] = barges[0].get("decided_after_ms")
    barge_ms = 1000 * (stop - onset) if stop is not None else None
    if barge_ms is not None and barge_ms > TARGETS["barge_in"][1]:
        print(
            f"  slow barge-in: {barges} {gw.events('agent.hold', call_id=call_id)}", file=sys.stderr
        )
    return Trial(1000 * (answer_on - q_end), barge_ms, seen)


def echo_trial(registry: ProcessRegistry, gw: CallbridgeProcess, n: int) -> float:
    clip = speech.piper_speech("hello there")
    with CallerMedia(free_port()) as media:
        caller = start_voice_caller(registry, gw.sip_addr, media, service="echo", name=f"echo{n}")
        start = media.play(clip, at=time.time() + 0.3)
        onset = start + loud_span(clip)[0]
        heard = wait_for_sound(media, after=onset - 0.01, timeout=10, what="the echo", min_s=0.1)
        caller.hang_up()
    return 1000 * (heard - onset)


def concurrent_trials(
    registry: ProcessRegistry, gw: CallbridgeProcess, calls: int, at_once: int
) -> list[Trial]:
    """`calls` trials, `at_once` of them at a time, started within a second of each other so
    the callers talk over the same stretch: the load a busy line puts on the decoders."""
    lock = threading.Lock()
    poll = gw.log.poll

    def locked_poll() -> None:
        with lock:
            poll()

    gw.log.poll = locked_poll  # type: ignore[method-assign]  # one reader of the log at a time
    trials: list[Trial] = []
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        for first in range(0, calls, at_once):
            batch = range(first, min(calls, first + at_once))

            def one(i: int, first: int = first) -> Trial:
                time.sleep(0.1 * (i - first))  # staggered by 100 ms: SIPp starts are not free
                return voice_trial(registry, gw, i)

            for t in pool.map(one, batch):
                trials.append(t)
                print(
                    f"call {len(trials)}/{calls}: voice-to-voice {t.voice_to_voice_ms:.0f} ms",
                    file=sys.stderr,
                )
    return trials


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def row(name: str, values: list[float], target: tuple[float, float] | None) -> str:
    if not values:
        return f"{name:<34} {'-':>7} {'-':>7} {'-':>7} {'-':>7}  n=0"
    goal = f"  target p50<={target[0]:.0f} p95<={target[1]:.0f}" if target else ""
    return (
        f"{name:<34} {pct(values, 0.5):7.0f} {pct(values, 0.95):7.0f} {min(values):7.0f} "
        f"{max(values):7.0f}  n={len(values)}{goal}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    parser.add_argument(
        "--concurrent",
        type=int,
        default=1,
        help="callers talking at once (each round starts this many calls together)",
    )
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="cb-bench-")
            print(f"logs in {tmp}", file=sys.stderr)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="cb-bench-"))
        registry = ProcessRegistry(Path(tmp))
        try:
            cfg = GatewayConfig.allocate(
                Path(tmp) / "data",
                PORT_BLOCKS.take(40),
                extra_env={"CALLBRIDGE_AGENT_GREET": "false"},
            )
            gw = start_gateway(registry, cfg, timeout=60)
            echo = [echo_trial(registry, gw, i) for i in range(min(args.calls, 5))]
            trials: list[Trial] = []
            if args.concurrent > 1:
                trials = concurrent_trials(registry, gw, args.calls, args.concurrent)
            for i in range(args.calls if args.concurrent <= 1 else 0):
                t = voice_trial(registry, gw, i)
                trials.append(t)
                print(
                    f"call {i + 1}/{args.calls}: voice-to-voice {t.voice_to_voice_ms:.0f} ms, "
                    f"barge-in {t.barge_in_ms if t.barge_in_ms is None else round(t.barge_in_ms)}"
                    " ms",
                    file=sys.stderr,
                )
        finally:
            registry.stop_all()

    def seen(key: str) -> list[float]:
        return [float(t.gateway[key]) for t in trials if t.gateway.get(key) is not None]

    cpus = os.cpu_count()
    how = "one at a time" if args.concurrent <= 1 else f"{args.concurrent} at a time"
    print(f"\nvoice agent latency, {args.calls} calls {how}, {cpus} CPUs, local models")
    print(f"{'ms':<34} {'p50':>7} {'p95':>7} {'min':>7} {'max':>7}")
    print("on the wire (caller's packets)")
    print(row("  baseline: echo route onset->echo", echo, None))
    print(
        row(
            "  voice-to-voice",
            [t.voice_to_voice_ms for t in trials],
            TARGETS["voice_to_voice"],
        )
    )
    barges = [t.barge_in_ms for t in trials if t.barge_in_ms is not None]
    print(row("  barge-in (onset->agent silent)", barges, TARGETS["barge_in"]))
    print("gateway's own view (its event log)")
    for key in (
        "voice_to_voice_ms",
        "stt_final_ms",
        "brain_first_token_ms",
        "tts_first_audio_ms",
        "silenced_after_ms",
        "decided_after_ms",
    ):
        print(row(f"  {key}", seen(key), None))
    missed = len(trials) - len(barges)
    if missed:
        print(f"\n{missed} call(s) where the agent was not talking at the caller's onset")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
