"""A finished call leaves nothing for the cycle collector.

A call's objects (leg, RTP session, jitter buffer, dialog, agent closures, transcript) must
go by reference counting when the call ends. Whatever sits in a reference cycle instead
waits for a full garbage collection, which stops every live call's media while it walks the
heap (50-150 ms at a few hundred calls), and comes the sooner the more such garbage there
is. So: two gateways on loopback, calls from one to the other's echo agent, and to its
local voice agent (VAD, turn taking, STT on what the probe's noise bursts sound like), with
the collector off; once they ended on both sides, a collection must find nothing.
"""

from __future__ import annotations

import asyncio
import collections
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from callbridge.calls.manager import Call
from callbridge.config.settings import Settings, load_settings

from .gateways import echo_settings, running
from .test_loopback_call import ProbeAgent


@contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cyclic_garbage() -> collections.Counter[str]:
    """Collect once; what the collector freed, by type (empty: everything went by itself)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = collections.Counter(
            f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


def answering(agent: str, data_dir: Path) -> Settings:
    echo = echo_settings(data_dir, (44400, 44500))
    if agent == "echo":
        return echo
    voice = load_settings(
        environ={"CALLBRIDGE_DEFAULT_AGENT": agent, "CALLBRIDGE_AGENT_GREET": "false"}
    )
    return replace(voice, data_dir=echo.data_dir, sip=echo.sip, rtp=echo.rtp)


@pytest.mark.parametrize("agent", ["echo", "voice"])
async def test_ended_calls_leave_no_reference_cycles(tmp_path: Path, agent: str) -> None:
    async with (
        running(answering(agent, tmp_path / "a")) as a,
        running(echo_settings(tmp_path / "b", (44600, 44700))) as b,
    ):
        host, port = a.sip.local_addr
        with collector_off():
            for _ in range(3):
                ended_a: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
                a.calls.on_end.append(lambda c, f=ended_a: f.done() or f.set_result(c))
                async with asyncio.timeout(20):
                    leg = await b.sip.call(f"sip:{agent}@{host}:{port}")
                    probe = ProbeAgent(frames=10 if agent == "echo" else 100)
                    call = b.calls.start_call(leg, agent=probe, agent_name="probe")
                    assert call.task is not None
                    await call.task
                    answered = await ended_a
                    assert answered.task is not None
                    await answered.task
                a.calls.on_end.clear()
            del leg, call, answered, ended_a, probe
            garbage = cyclic_garbage()
        assert not garbage, f"objects of ended calls in reference cycles: {garbage.most_common()}"
