"""The voice agent's `transfer` tool on a simulated leg: the notice plays out first, the leg
is asked to transfer, success leaves the call to the transport, failure is said and the
call goes on."""

from __future__ import annotations

from callbridge.agents.voice import TRANSFER_FAILED, TRANSFERRING
from callbridge.core.clocks import FakeClock
from callbridge.core.events import TransferResult
from callbridge.llm.base import Message, ToolCall
from tests.unit.agents.test_voice_agent import ScriptBrain, SimLeg, agent_audio_times, run_agent

NOTICE_FRAMES = 5 * len(TRANSFERRING.split())  # FakeTts: 100 ms (5 frames) per word


class TransferLeg(SimLeg):
    def __init__(self, clock: FakeClock, result: TransferResult) -> None:
        super().__init__(clock)
        self.result = result
        self.targets: list[str] = []
        self.notice_frames_before: int | None = None

    async def transfer(self, target: str) -> TransferResult:
        self.targets.append(target)
        self.notice_frames_before = len(agent_audio_times(self, 2))
        if self.result.ok:  # as SipLeg does: the transferor hangs up after success
            self.end_reason = "transferred"
            self._end()
        return self.result


def transfer_brain(target: str) -> ScriptBrain:
    return ScriptBrain(["Sure."], tools=[ToolCall("t1", "transfer", {"target": target})])


async def test_transfer_plays_the_notice_then_transfers_and_the_call_ends() -> None:
    leg = TransferLeg(FakeClock(), TransferResult(ok=True, status=200, reason="OK"))
    agent = await run_agent(transfer_brain("sip:sales@example.com"), leg, seconds=2.5, greet=True)
    assert leg.targets == ["sip:sales@example.com"]
    assert len(agent_audio_times(leg, 1)) == 5  # "Sure." played in full first
    # The whole notice went out before the REFER: the caller heard it.
    assert leg.notice_frames_before == NOTICE_FRAMES
    assert leg.end_reason == "transferred"
    assert agent.history[-1] == Message("tool", "transferred", tool_call_id="t1")
    assert not agent_audio_times(leg, 3)  # nothing said after a successful transfer


async def test_a_failed_transfer_is_said_and_the_call_goes_on() -> None:
    leg = TransferLeg(FakeClock(), TransferResult(ok=False, status=486, reason="Busy Here"))
    agent = await run_agent(transfer_brain("sales"), leg, seconds=2.5, greet=True)
    assert leg.targets == ["sales"]
    assert leg.notice_frames_before == NOTICE_FRAMES
    assert not leg.end_reason  # still on the call until the test ends it
    tool, sorry = agent.history[-2:]
    assert tool == Message("tool", "failed: Busy Here", tool_call_id="t1")
    assert sorry == Message("assistant", TRANSFER_FAILED)
    assert len(agent_audio_times(leg, 3)) == 5 * len(TRANSFER_FAILED.split())


async def test_an_unsupported_leg_keeps_the_call() -> None:
    unsupported = TransferResult(ok=False, reason="not supported on Twilio media streams")
    leg = TransferLeg(FakeClock(), unsupported)
    agent = await run_agent(transfer_brain("+15551234"), leg, seconds=2.5, greet=True)
    assert not leg.end_reason
    assert agent.history[-2].content == "failed: not supported on Twilio media streams"
