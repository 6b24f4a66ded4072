"""callbridge.testing: test an agent without a network, on exact fake time.

For the project's own tests and for third-party agent authors. Nothing in callbridge imports
this package; it builds on the same leg base as the real transports, so an agent that
behaves on a FakeLeg behaves on SIP and Twilio legs.

    from callbridge.testing import FakeClock, FakeLeg, drive

    async def test_my_agent_answers() -> None:
        clock = FakeClock()
        leg = FakeLeg(clock)
        leg.say(frames=40, silence_before=10)       # 0.2 s of silence, 0.8 s of speech
        task = asyncio.create_task(MyAgent().run(leg))
        await drive(clock, leg.pump(3.0))            # 3 s of the call, 1 ms steps
        leg.end()                                    # the caller hangs up
        await drive(clock, task)
        assert leg.audio_sent(utterance=1)           # what the caller heard, tick by tick

- `FakeLeg`: a complete `core.ports.CallLeg`. The test scripts the caller (`say`, `silence`,
  `feed`, `put`, `end`); every tick (`run`, `pump`, `tick`) sends one frame of the agent's
  playout and records it in `sent` (`Sent(at, utterance, pcm)`); it also records flushes,
  taps, DTMF sent, transfers (answered with `transfer_result`) and hang-ups.
- `FakeClock` (from core.asyncio_clock), `drive` (advance it in steps until something is done),
  `drain` (let every ready task run) and `FakeWorkers` (an executor whose jobs take fake time).
- `LegDriver`: runs a real transport leg on the FakeClock, collects its inputs and moves
  time tick by tick (a new transport's unit tests start from it).
"""

from callbridge.testing.fake_leg import AfterScript, FakeLeg, Sent, TransferRequest, caller_tone
from callbridge.testing.fake_time import FakeClock, FakeWorkers, drain, drive
from callbridge.testing.leg_driver import LegDriver, settle

__all__ = [
    "AfterScript",
    "FakeClock",
    "FakeLeg",
    "FakeWorkers",
    "LegDriver",
    "Sent",
    "TransferRequest",
    "caller_tone",
    "drain",
    "drive",
    "settle",
]
