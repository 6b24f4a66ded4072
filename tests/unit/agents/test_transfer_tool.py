"""The voice agent's `transfer` tool on a FakeLeg: the notice plays out first, the leg
is asked to transfer, success leaves the call to the transport, failure is said and the
call goes on."""

from __future__ import annotations

from callbridge.agents.voice import TRANSFER_FAILED, TRANSFERRING
from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.events import TransferResult
from callbridge.llm.base import Message, ToolCall
from callbridge.testing import FakeLeg
from tests.unit.agents.test_voice_agent import ScriptBrain, agent_audio_times, run_agent

NOTICE_FRAMES = 5 * len(TRANSFERRING.split())  # FakeTts: 100 ms (5 frames) per word


def transfer_leg(result: TransferResult) -> FakeLeg:
    return FakeLeg(FakeClock(), transfer_result=result)


def notice_frames_before(leg: FakeLeg) -> int:
    """Frames of the notice (utterance 2) that went out before the transfer was asked for."""
    (request,) = leg.transfers
    return sum(s.at <= request.at for s in leg.audio_sent(2))


def transfer_brain(target: str) -> ScriptBrain:
    return ScriptBrain(["Sure."], tools=[ToolCall("t1", "transfer", {"target": target})])


async def test_transfer_plays_the_notice_then_transfers_and_the_call_ends() -> None:
    leg = transfer_leg(TransferResult(ok=True, status=200, reason="OK"))
    agent = await run_agent(transfer_brain("sip:sales@example.com"), leg, seconds=2.5, greet=True)
    assert [t.target for t in leg.transfers] == ["sip:sales@example.com"]
    assert len(agent_audio_times(leg, 1)) == 5  # "Sure." played in full first
    # The whole notice went out before the REFER: the caller heard it.
    assert notice_frames_before(leg) == NOTICE_FRAMES
    assert leg.end_reason == "transferred"
    assert agent.history[-1] == Message("tool", "transferred", tool_call_id="t1")
    assert not agent_audio_times(leg, 3)  # nothing said after a successful transfer


async def test_a_failed_transfer_is_said_and_the_call_goes_on() -> None:
    leg = transfer_leg(TransferResult(ok=False, status=486, reason="Busy Here"))
    agent = await run_agent(transfer_brain("sales"), leg, seconds=2.5, greet=True)
    assert [t.target for t in leg.transfers] == ["sales"]
    assert notice_frames_before(leg) == NOTICE_FRAMES
    assert leg.end_reason == "remote_bye"  # still on the call until the caller hung up
    tool, sorry = agent.history[-2:]
    assert tool == Message("tool", "failed: Busy Here", tool_call_id="t1")
    assert sorry == Message("assistant", TRANSFER_FAILED)
    assert len(agent_audio_times(leg, 3)) == 5 * len(TRANSFER_FAILED.split())


async def test_an_unsupported_leg_keeps_the_call() -> None:
    unsupported = TransferResult(ok=False, reason="not supported on Twilio media streams")
    leg = transfer_leg(unsupported)
    agent = await run_agent(transfer_brain("+15551234"), leg, seconds=2.5, greet=True)
    assert leg.end_reason == "remote_bye"
    assert agent.history[-2].content == "failed: not supported on Twilio media streams"
