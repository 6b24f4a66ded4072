"""callbridge.testing: FakeLeg's caller script and wire record, its control records, and the
fake-time helpers (drive, drain, FakeWorkers)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegHold, LegInput, TransferResult
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.testing import FakeClock, FakeLeg, FakeWorkers, Sent, caller_tone, drain, drive


def frame(n: int) -> AudioFrame:
    return AudioFrame(np.full(FRAME_SAMPLES, n, "<i2").tobytes())


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[tuple[bytes | None, bytes | None]] = []

    def on_tick(self, caller: bytes | None, agent: bytes | None) -> None:
        self.ticks.append((caller, agent))


async def inputs(leg: FakeLeg) -> list[LegInput]:
    return [item async for item in leg.inputs()]


async def test_the_script_goes_out_one_frame_per_tick_with_its_events() -> None:
    leg = FakeLeg(FakeClock(), after_script="hangup")
    leg.put(LegHold(False))  # at once, before any tick
    leg.feed(DtmfDigit("1", 50), frame(1), DtmfDigit("2", 50), frame(2).pcm, frame(3))
    reader = asyncio.create_task(inputs(leg))
    for _ in range(3):
        leg.tick()
    assert not leg.ended
    leg.tick()  # the script is done: the caller hangs up
    assert leg.ended and leg.end_reason == "remote_bye" and leg.ticks == 3
    assert await reader == [
        LegHold(False), DtmfDigit("1", 50), frame(1), DtmfDigit("2", 50), frame(2), frame(3),
    ]  # fmt: skip


@pytest.mark.parametrize(("after", "expected"), [("silence", 3), ("nothing", 1)])
async def test_after_the_script_the_line_is_silent_or_empty(after: str, expected: int) -> None:
    leg = FakeLeg(FakeClock(), after_script=after)  # type: ignore[arg-type]
    leg.say(frames=1)
    for _ in range(3):
        leg.tick()
    leg.end()
    got = await inputs(leg)
    assert len(got) == expected
    assert got[0] == caller_tone(1)[0] and all(f == AudioFrame.silence() for f in got[1:])


async def test_each_tick_sends_one_queued_frame_and_records_it() -> None:
    clock = FakeClock()
    leg = FakeLeg(clock, after_script="nothing")
    tap = Recorder()
    leg.set_tap(tap)
    leg.feed(frame(5))
    await leg.play(frame(1), utterance=1)
    await leg.play(frame(2), utterance=2)
    for _ in range(3):
        leg.tick()
    t = clock.now()
    assert leg.sent == [Sent(t, 1, frame(1).pcm), Sent(t, 2, frame(2).pcm), Sent(t, None, b"")]
    assert [s.utterance for s in leg.audio_sent()] == [1, 2] and leg.audio_sent(3) == []
    assert leg.played(1) == leg.played(2) == FRAME_SAMPLES
    assert leg.samples_played == 2 * FRAME_SAMPLES
    assert leg.stats() == {"ticks": 3, "frames_out": 2}
    assert tap.ticks == [(frame(5).pcm, frame(1).pcm), (None, frame(2).pcm), (None, None)]
    assert leg.taps == [tap] and leg.agent_frames == [frame(1), frame(2)]


async def test_echo_adds_the_agents_audio_at_minus_20_db() -> None:
    leg = FakeLeg(FakeClock(), echo=True)
    await leg.play(frame(1000))
    leg.tick()
    leg.end()
    (heard,) = await inputs(leg)
    assert heard == frame(100)  # silence from the caller + a tenth of the agent


async def test_pump_ticks_every_20_ms_for_the_time_given() -> None:
    clock = FakeClock()
    leg = FakeLeg(clock)
    t0 = clock.now()
    await drive(clock, leg.pump(0.1))
    assert [round(s.at - t0, 6) for s in leg.sent] == [0.02, 0.04, 0.06, 0.08, 0.1]


async def test_flushes_dtmf_and_hangups_are_recorded() -> None:
    clock = FakeClock()
    leg = FakeLeg(clock)
    await leg.play(frame(1))
    assert leg.flush_playout() == FRAME_SAMPLES and leg.flushes == [clock.now()]
    await leg.send_dtmf("12#")
    assert leg.dtmf_sent == ["12#"]
    await leg.hangup("agent_hangup")
    await leg.hangup("again")
    assert leg.hangups == ["agent_hangup", "again"] and leg.end_reason == "agent_hangup"
    with pytest.raises(CallEnded):
        await leg.play(frame(2))


async def test_a_successful_transfer_ends_the_leg_a_failed_one_does_not() -> None:
    ok = FakeLeg(FakeClock(), transfer_result=TransferResult(ok=True, status=202))
    assert (await ok.transfer("sip:bob@example.com")).ok
    assert ok.ended and ok.end_reason == "transferred"
    assert [t.target for t in ok.transfers] == ["sip:bob@example.com"]
    assert not (await ok.transfer("again")).ok and len(ok.transfers) == 1

    busy = FakeLeg(FakeClock(), transfer_result=TransferResult(ok=False, status=486))
    assert (await busy.transfer("sales")).status == 486 and not busy.ended
    assert not (await FakeLeg(FakeClock()).transfer("x")).ok  # by default: not supported


async def test_run_ticks_until_the_leg_ends_and_wait_sent_sees_the_audio() -> None:
    clock = FakeClock()
    leg = FakeLeg(clock)
    runner = asyncio.create_task(leg.run())
    for i in range(3):
        await leg.play(frame(i), utterance=1)
    await drive(clock, leg.wait_sent(3, timeout=5))
    leg.end()
    await drive(clock, runner)
    assert len(leg.audio_sent(1)) == 3


async def test_fake_workers_complete_after_the_time_a_job_charges() -> None:
    clock = FakeClock()
    workers = FakeWorkers(clock)

    def slow() -> str:
        workers.charge(0.5)
        return "done"

    t0 = clock.now()
    fut = asyncio.wrap_future(workers.submit(slow))
    assert await drive(clock, fut) == "done"
    assert 0.5 <= clock.now() - t0 < 0.502
    assert workers.submit(lambda: 7).result() == 7  # nothing charged: done at once
    with pytest.raises(ZeroDivisionError):
        workers.submit(lambda: 1 / 0).result()


async def test_drive_gives_up_after_its_limit_and_drain_on_a_busy_loop() -> None:
    clock = FakeClock()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(AssertionError, match="fake time"):
        await drive(clock, never, limit=0.01)

    async def spin() -> None:
        while True:  # noqa: ASYNC110  # a busy loop: always ready, never waiting
            await asyncio.sleep(0)

    task = asyncio.create_task(spin())
    with pytest.raises(AssertionError, match="never settled"):
        await drain(rounds=50)
    task.cancel()
