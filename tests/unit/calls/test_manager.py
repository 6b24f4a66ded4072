"""CallManager + Router + EchoAgent on a scripted FakeLeg (no network, fake time)."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.agents.echo import EchoAgent
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.events import DtmfDigit, LegInput
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import LegInfo, Rejection
from callbridge.testing import FakeLeg, drive


def scripted_leg(
    clock: FakeClock, script: list[LegInput], user: str = "agent", hang_up: bool = True
) -> FakeLeg:
    """Delivers `script` one frame per tick, records what the agent plays; the caller hangs
    up when the script is done (`hang_up`) or stays on the line in silence."""
    info = LegInfo("test", "inbound", local_user=user)
    leg = FakeLeg(clock, info=info, after_script="hangup" if hang_up else "silence")
    leg.feed(*script)
    return leg


def frame(i: int) -> AudioFrame:
    return AudioFrame(bytes([i % 256, 0]) * 160)


def manager(clock: FakeClock | None = None) -> CallManager:
    router = Router({"echo": lambda: EchoAgent(delay_ms=40)}, default="echo")
    return CallManager(router, clock or FakeClock())


async def run_to_end(mgr: CallManager, leg: FakeLeg) -> Call:
    done: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    mgr.on_end.append(done.set_result)
    mgr.start_call(leg)
    return await drive(leg.clock, done, limit=5.0)


async def test_echo_plays_back_what_it_heard_after_its_delay() -> None:
    frames = [frame(i) for i in range(10)]
    clock = FakeClock()
    leg = scripted_leg(clock, [*frames[:5], DtmfDigit("5", 100), *frames[5:]])
    call = await run_to_end(manager(clock), leg)
    # A 40 ms delay: two frames of silence queued ahead of the echo (see EchoAgent).
    assert leg.agent_frames == [AudioFrame.silence()] * 2 + frames
    assert leg.end_reason == "remote_bye" and not leg.hangups
    assert call.agent_name == "echo"
    assert leg.info.ids["call_id"] == call.id
    assert call.ended is not None


async def test_router_maps_agent_alias_and_rejects_unknown_users() -> None:
    mgr = manager()
    mgr.admit(LegInfo("sip", "inbound", local_user="agent"))
    mgr.admit(LegInfo("sip", "inbound", local_user="echo"))
    with pytest.raises(Rejection) as exc:
        mgr.admit(LegInfo("sip", "inbound", local_user="bob"))
    assert exc.value.kind == Rejection.NOT_FOUND


async def test_no_new_calls_while_shutting_down() -> None:
    mgr = manager()
    await mgr.shutdown(0.1)
    with pytest.raises(Rejection) as exc:
        mgr.admit(LegInfo("sip", "inbound", local_user="agent"))
    assert exc.value.kind == Rejection.UNAVAILABLE


class CrashingAgent:
    async def run(self, leg: object) -> None:
        raise RuntimeError("boom")


async def test_a_crashing_agent_hangs_up_the_call_and_the_manager_survives() -> None:
    mgr = manager()
    leg = scripted_leg(FakeClock(), [frame(1)], hang_up=False)
    done: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    mgr.on_end.append(done.set_result)
    mgr.start_call(leg, agent=CrashingAgent(), agent_name="crash")
    async with asyncio.timeout(5):
        await done
    assert leg.hangups  # the agent's end hung up the call
    assert mgr.calls == {}


async def test_drain_takes_no_new_calls_and_lets_live_ones_end_by_themselves() -> None:
    clock = FakeClock()
    mgr = manager(clock)
    ending = scripted_leg(clock, [frame(i) for i in range(10)])  # hangs up after 200 ms
    staying = scripted_leg(clock, [], hang_up=False)  # on the line until hung up
    mgr.start_call(ending)
    mgr.start_call(staying)
    left = await drive(clock, mgr.drain(1.0), limit=5.0)
    assert left == 1  # the one still talking after the drain's time
    assert ending.end_reason == "remote_bye" and not ending.hangups  # nobody cut it off
    assert not staying.ended
    with pytest.raises(Rejection) as exc:
        mgr.admit(LegInfo("sip", "inbound", local_user="agent"))
    assert exc.value.kind == Rejection.UNAVAILABLE
    staying.end()
    assert await drive(clock, mgr.drain(1.0), limit=5.0) == 0
