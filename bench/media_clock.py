"""Pacing cost: N legs ticking every 20 ms, each on its own timer (the old per-leg loop, the
baseline, run here in the same process) vs all of them on the one media clock
(transports.media_clock), on asyncio's loop and on uvloop when installed.

    .venv/bin/python bench/media_clock.py [--legs 100,250,400] [--secs 3]

Each leg's tick does what a G.711 echo leg does per frame with no network: take a frame out
of an RTP session's jitter buffer and packetise one back (rtp.session), so the table shows
what the pacing adds on top of real per-frame work. Prints CPU (% of one core, process time over
wall time), the ticks each leg got per second (50 when the loop keeps up) and the CPU per
leg-tick (the per-frame work plus what pacing adds). No timing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.packet import RtpPacket
from callbridge.rtp.session import RtpParams, RtpSession
from callbridge.transports.media_clock import TICK, MediaClock

PCM = b"\x10\x00" * FRAME_SAMPLES


class Leg:
    """The per-frame work of an echo leg without sockets."""

    def __init__(self, now: float) -> None:
        self.session = RtpSession(
            RtpParams(remote=("127.0.0.1", 9), codec="PCMU", payload_type=0), now, JitterConfig()
        )
        self.seq = 0
        self.n = 0

    def tick(self, now: float, missed: int) -> None:
        # One packet in (as if received this tick), one frame out, one packet back.
        self.seq += 1
        pkt = RtpPacket(0, self.seq & 0xFFFF, self.seq * 160, 0x1234, b"\xff" * 160)
        self.session.receive(bytes(pkt), ("127.0.0.1", 9), now)
        frame, _ = self.session.tick(now)
        out = frame if frame is not None else AudioFrame(PCM)
        self.session.send_frame(out, now)
        self.n += 1


async def per_leg_loop(
    clock: LoopClock, on_tick: Callable[[float, int], None], stop: float
) -> None:
    """The baseline: what LegCore.tick_loop did before the media clock (one timer per leg)."""
    start = clock.now()
    n = 0
    while clock.now() < stop:
        n += 1
        await clock.sleep_until(start + n * TICK)
        on_tick(clock.now(), 0)


async def run(mode: str, legs: int, secs: float) -> tuple[float, float, float]:
    clock = LoopClock()
    media = MediaClock(clock)
    now = clock.now()
    items = [Leg(now) for _ in range(legs)]
    stop = now + secs
    done = False

    def measured(leg: Leg) -> Callable[[float, int], None]:
        return leg.tick

    cpu0, wall0 = time.process_time(), time.monotonic()
    if mode == "per-leg timers":
        await asyncio.gather(*(per_leg_loop(clock, measured(leg), stop) for leg in items))
    else:
        tasks = [asyncio.create_task(media.ticks(measured(leg), lambda: done)) for leg in items]
        await asyncio.sleep(secs)
        done = True
        await asyncio.gather(*tasks)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    ticks = sum(leg.n for leg in items)
    return 100 * cpu / wall, ticks / wall / legs, 1e6 * cpu / max(ticks, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", default="100,250,400")
    parser.add_argument("--secs", type=float, default=3.0)
    args = parser.parse_args()
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
        ("asyncio", asyncio.new_event_loop)
    ]
    try:
        import uvloop

        loops.append(("uvloop", uvloop.new_event_loop))
    except ImportError:
        print("(uvloop not installed: asyncio only)")
    print(f"{'legs':>5} {'loop':<8} {'pacing':<16} {'CPU % core':>10} {'ticks/s/leg':>11} "
          f"{'µs/leg-tick':>11}")  # fmt: skip
    for legs in (int(x) for x in args.legs.split(",")):
        for loop_name, factory in loops:
            for mode in ("per-leg timers", "one media clock"):
                with asyncio.Runner(loop_factory=factory) as runner:
                    cpu, rate, cost = runner.run(run(mode, legs, args.secs))
                print(f"{legs:>5} {loop_name:<8} {mode:<16} {cpu:>10.1f} {rate:>11.1f} "
                      f"{cost:>11.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
