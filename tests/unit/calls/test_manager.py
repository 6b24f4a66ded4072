"""CallManager + Router + EchoAgent on a scripted in-memory leg (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from callbridge.agents.echo import EchoAgent
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.core.clocks import FakeClock
from callbridge.core.events import DtmfDigit, LegInput
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import LegInfo, Rejection


class ScriptedLeg:
    """Delivers scripted inputs, records what the agent plays; ends on hangup or script end."""

    def __init__(
        self, script: list[LegInput], user: str = "agent", end_after_script: bool = True
    ) -> None:
        self._info = LegInfo("test", "inbound", local_user=user)
        self.script = script
        self.frames: list[AudioFrame] = []
        self.end_reason = ""
        self._ended = asyncio.Event()
        self.end_after_script = end_after_script
        self.hangups = 0

    @property
    def info(self) -> LegInfo:
        return self._info

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def inputs(self) -> AsyncIterator[LegInput]:
        for item in self.script:
            yield item
        if self.end_after_script:
            self.end_reason = self.end_reason or "remote_bye"
            self._ended.set()
        await self._ended.wait()

    async def play(self, frame: AudioFrame, utterance: int = 0) -> None:
        self.frames.append(frame)

    def flush_playout(self) -> int:
        return 0

    def pause_playout(self, paused: bool) -> None:
        pass

    def played(self, utterance: int) -> int:
        return self.samples_played

    @property
    def samples_played(self) -> int:
        return sum(f.samples for f in self.frames)

    @property
    def playing(self) -> bool:
        return False

    @property
    def playback_dbfs(self) -> float:
        return -120.0

    async def send_dtmf(self, digits: str) -> None:
        pass

    async def hangup(self, reason: str = "normal") -> None:
        self.hangups += 1
        self.end_reason = self.end_reason or reason
        self._ended.set()

    async def run(self) -> None:
        await self._ended.wait()

    def stats(self) -> dict[str, int | float]:
        return {"rtp_in": len(self.script)}


def frame(i: int) -> AudioFrame:
    return AudioFrame(bytes([i % 256, 0]) * 160)


def manager() -> CallManager:
    router = Router({"echo": lambda: EchoAgent(delay_ms=40)}, default="echo")
    return CallManager(router, FakeClock())


async def run_to_end(mgr: CallManager, leg: ScriptedLeg) -> Call:
    done: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    mgr.on_end.append(done.set_result)
    mgr.start_call(leg)
    async with asyncio.timeout(5):
        return await done


async def test_echo_plays_back_what_it_heard_after_its_delay() -> None:
    frames = [frame(i) for i in range(10)]
    leg = ScriptedLeg([*frames[:5], DtmfDigit("5", 100), *frames[5:]])
    call = await run_to_end(manager(), leg)
    # A 40 ms delay: two frames of silence queued ahead of the echo (see EchoAgent).
    assert leg.frames == [AudioFrame.silence()] * 2 + frames
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
    leg = ScriptedLeg([frame(1)], end_after_script=False)
    done: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    mgr.on_end.append(done.set_result)
    mgr.start_call(leg, agent=CrashingAgent(), agent_name="crash")  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        await done
    assert leg.hangups >= 1
    assert mgr.calls == {}
