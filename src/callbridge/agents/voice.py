"""The cascade voice agent: turn -> transcript -> brain (streamed) -> clause TTS -> playout.

Full duplex through Conversation: it keeps listening while it speaks, and when the caller
barges in, the current answer (brain stream and synthesis) is cancelled, the queued audio is
dropped, and the history keeps only what the caller heard, marked interrupted.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from callbridge.agents.conversation import (
    Conversation,
    Dtmf,
    Hold,
    Interrupted,
    SpeechResult,
    TurnConfirmed,
    TurnResumed,
    UserSpeaking,
    UserTurn,
)
from callbridge.core.bus import default_bus
from callbridge.core.call_events import TranscriptLine, TranscriptRetracted, TurnMeasured
from callbridge.core.clock import Clock
from callbridge.core.frames import PIPELINE_RATE
from callbridge.core.log import current_call_id, event
from callbridge.core.ports import CallLeg
from callbridge.llm.base import Brain, Message, TextDelta, ToolCall

log = logging.getLogger("callbridge.agents.voice")

APOLOGY = "Sorry, I'm having trouble answering right now. Could you say that again?"
TRANSFERRING = "Transferring you now."
TRANSFER_FAILED = "Sorry, I could not transfer you. I'm still here."


async def settle(task: asyncio.Future[Any]) -> None:
    """Wait until `task` is done, whatever it ended with (its error or cancellation is its own
    business, already reported). Unlike `suppress(BaseException): await task`, the waiter's
    own cancellation still propagates, and the awaited task is not cancelled along with it."""
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at collection


@dataclass(frozen=True, slots=True)
class VoiceAgentConfig:
    greet: bool = True
    apology: str = APOLOGY
    hangup_grace: float = 15.0  # max wait for a goodbye to finish playing before hanging up


class TranscriptSink(Protocol):
    """Where a VoiceAgent reports what was said, as it is said (e.g. the call store).

    Times are on the agent's clock. Methods must return at once; a failing sink is logged
    and the call goes on."""

    def caller_said(self, text: str, start: float, end: float) -> None: ...

    def caller_retracted(self) -> None:
        """The last caller turn was only a pause: a turn with all of its words follows."""
        ...

    def agent_said(
        self, utterance: int, text: str, start: float | None, end: float | None, interrupted: bool
    ) -> None:
        """What the caller heard of `utterance` (again, corrected, if it is cut later)."""
        ...

    def dtmf(self, digit: str, at: float) -> None: ...

    def message(self, text: str, at: float) -> None:
        """The caller left a message (the brain's `take_message` tool)."""
        ...

    def turn(
        self,
        utterance: int,
        user_text: str,
        agent_text: str,
        interrupted: bool,
        *,
        voice_to_voice_ms: int | None = None,
        stt_ms: int | None = None,
        brain_ms: int | None = None,
        tts_ms: int | None = None,
    ) -> None:
        """An answer and the caller turn it answered, with its latencies (same utterance
        again: replaces it)."""
        ...


@dataclass(slots=True)
class _TurnTiming:
    started: float
    speech_end: float | None = None
    stt_latency: float | None = None
    first_token: float | None = None
    released: float | None = None  # a prepared answer's audio was let out (turn confirmed)
    user_text: str = ""  # the caller turn this answers ("" for the greeting)


class VoiceAgent:
    def __init__(
        self,
        *,
        brain: Brain,
        conversation: Callable[[CallLeg], Conversation],
        clock: Clock,
        config: VoiceAgentConfig | None = None,
    ) -> None:
        self.brain = brain
        self.make_conversation = conversation
        self.clock = clock
        self.config = config or VoiceAgentConfig()
        self.history: list[Message] = []
        self._turn: asyncio.Task[None] | None = None
        self._conv: Conversation | None = None
        self._results: dict[int, SpeechResult] = {}  # the last answer, for late barge-ins
        # An answer prepared for a tentative turn: the history length before it, its timing.
        self._prepared: tuple[int, _TurnTiming] | None = None
        self._discarding = False
        self.sink: TranscriptSink | None = None
        self._spoken: tuple[SpeechResult, _TurnTiming, bool] | None = None  # last reported
        self._context: contextvars.Context | None = None
        self._call_id: str | None = None

    def attach_transcript(self, sink: TranscriptSink) -> None:
        """Report the conversation to `sink` (before `run`)."""
        self.sink = sink

    def _report(self, report: Callable[[TranscriptSink], None]) -> None:
        if self.sink is None:
            return
        try:
            report(self.sink)
        except Exception as exc:  # the transcript is a by-product: never worth the call
            event(log, "agent.transcript_failed", logging.WARNING, error=repr(exc))

    async def run(self, leg: CallLeg) -> None:
        conv = self.make_conversation(leg)
        self._conv = conv
        self._context = contextvars.copy_context()
        self._call_id = current_call_id()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(conv.run())
                if self.config.greet:
                    self._start_turn(conv, leg, _TurnTiming(self.clock.now()))
                async for ev in conv.events():
                    await self._on_event(ev, conv, leg)
        finally:
            if self._turn is not None:
                self._turn.cancel()
                await settle(self._turn)
            # The stored conversation, as the caller heard it (interrupted turns cut).
            history = [
                {"role": m.role, "content": m.content, "interrupted": m.interrupted}
                for m in self.history
            ]
            event(log, "agent.history", messages=history)

    async def _on_event(self, ev: object, conv: Conversation, leg: CallLeg) -> None:
        match ev:
            case UserTurn(text=text) if not text.strip():
                event(
                    log,
                    "agent.turn_unheard",
                    speech_ms=round(1000 * (ev.speech_end - ev.speech_start)),
                )
            case UserTurn(text=text):
                said = (text, ev.speech_start, ev.speech_end)
                self._report(lambda sink: sink.caller_said(*said))
                self._publish(TranscriptLine(self._call_id, time.time(), "caller", text))
                if (self._turn is not None and not self._turn.done()) or conv.speaking:
                    # Speech that was too short or quiet to interrupt us: a backchannel
                    # ("uh-huh") while we talk; do not answer it.
                    event(log, "agent.backchannel", text=text)
                    return
                event(
                    log,
                    "agent.heard",
                    text=text,
                    stt_ms=round(1000 * ev.stt_latency),
                    tentative=ev.tentative,
                )
                timing = _TurnTiming(
                    self.clock.now(), ev.speech_end, ev.stt_latency, user_text=text
                )
                if ev.tentative:
                    self._prepared = (len(self.history), timing)
                self.history.append(Message("user", text))
                self._start_turn(conv, leg, timing)
            case TurnConfirmed(at=at):
                if self._prepared is not None:
                    timing = self._prepared[1]
                    timing.released = at
                    self._prepared = None
                    if self._spoken is not None and self._spoken[1] is timing:
                        self._report_speech(*self._spoken)  # it was reported before it played
            case TurnResumed():
                await self._drop_prepared()
            case Interrupted(utterance=utterance):
                if self._turn is not None and not self._turn.done():
                    self._turn.cancel()  # its handler records what was heard
                else:
                    # Synthesis had finished; only queued audio was cut: fix the stored answer.
                    self._cut_recorded(utterance, conv)
            case Dtmf(digit=digit):
                event(log, "agent.dtmf", digit=digit)
                at = self.clock.now()
                self._report(lambda sink: sink.dtmf(digit, at))
            case Hold(on_hold=on_hold):
                if on_hold:
                    conv.interrupt()
            case UserSpeaking():
                pass

    async def _drop_prepared(self) -> None:
        """The caller went on talking: forget the answer prepared for their pause (it was
        never heard; the conversation dropped its audio) and the words it answered."""
        if self._prepared is None:
            return
        keep, _ = self._prepared
        self._prepared = None
        if self._turn is not None and not self._turn.done():
            self._discarding = True
            self._turn.cancel()
            await settle(self._turn)
            self._discarding = False
        del self.history[keep:]
        self._report(lambda sink: sink.caller_retracted())
        self._publish(TranscriptRetracted(self._call_id, time.time()))
        event(log, "agent.turn_resumed")

    async def say(self, text: str, *, interrupt: bool = False) -> None:
        """Speak `text` on this call (the operator's words, e.g. from POST /calls/{id}/say):
        after what the agent is saying now, or instead of it with `interrupt`. It goes into the
        history as the agent's own words, so the brain knows they were said; the caller can
        barge in on it like on any answer. Returns once it is queued, not played."""
        conv = self._conv
        if conv is None:
            raise RuntimeError("the agent is not running")
        before = self._turn
        if interrupt:
            cut = conv.interrupt()
            if before is not None and not before.done():
                before.cancel()  # its handler records what was heard of it
            elif cut is not None:
                self._cut_recorded(cut.utterance, conv)  # only its queued audio was left
        timing = _TurnTiming(self.clock.now(), user_text="")

        async def speak() -> None:
            if before is not None and not before.done():
                await settle(before)
            speech = conv.say(text)
            try:
                result = await speech.wait()
            except asyncio.CancelledError:
                if not speech.result.discarded:
                    self._record(speech.result, [], timing, interrupted=True)
                raise
            except Exception as exc:  # TTS failure: log, keep the call
                event(log, "agent.speech_failed", logging.ERROR, error=repr(exc))
                return
            self._record(result, [], timing, interrupted=result.interrupted)
            event(log, "agent.said", utterance=result.utterance, text=result.text)

        # The call's context (its call_id on every log line), not the API request's.
        self._turn = asyncio.get_running_loop().create_task(speak(), context=self._context)

    def _start_turn(self, conv: Conversation, leg: CallLeg, timing: _TurnTiming) -> None:
        self._turn = asyncio.get_running_loop().create_task(self._answer(conv, leg, timing))

    async def _answer(self, conv: Conversation, leg: CallLeg, timing: _TurnTiming) -> None:
        tools: list[ToolCall] = []
        failure: list[BaseException] = []

        async def text() -> AsyncIterator[str]:
            try:
                async for out in self.brain.respond(list(self.history)):
                    if isinstance(out, TextDelta):
                        if timing.first_token is None:
                            timing.first_token = self.clock.now()
                        yield out.text
                    else:
                        tools.append(out)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # BrainError or a bug: the caller hears an apology
                failure.append(exc)

        speech = conv.say(text())
        try:
            result = await speech.wait()
        except asyncio.CancelledError:
            # Barge-in: the conversation already cut the speech at the playout position.
            if not self._discarding and not speech.result.discarded:
                self._record(speech.result, tools, timing, interrupted=True)
                self._keep_messages(tools)
            raise
        except Exception as exc:  # TTS failure: log, keep the call
            event(log, "agent.speech_failed", logging.ERROR, error=repr(exc))
            return
        if failure:
            event(log, "agent.brain_failed", logging.WARNING, error=str(failure[0]))
            if not result.text:
                apology = conv.say(self.config.apology)
                result = await apology.wait()
                self.history.append(Message("assistant", result.text))
                self._report_speech(result, timing, result.interrupted)
                return
        if result.discarded:
            return  # the caller talked on: _drop_prepared forgets this turn
        self._record(result, tools, timing, interrupted=result.interrupted)
        self._metrics(timing, result)
        if result.interrupted:
            # Cut by the caller: what it meant to do next is moot (e.g. hang up), but a
            # message they left is theirs whether or not they heard the confirmation.
            self._keep_messages(tools)
            return
        for call in tools:
            await self._tool(call, conv, leg, result)

    def _cut_recorded(self, utterance: int, conv: Conversation) -> None:
        result = self._results.get(utterance)
        if result is None or not result.interrupted:
            return
        for i in range(len(self.history) - 1, -1, -1):
            m = self.history[i]
            if m.role == "assistant" and m.content == result.text and not m.interrupted:
                self.history[i] = Message("assistant", result.heard, interrupted=True)
                event(log, "agent.interrupted", said=result.text, heard=result.heard)
                if self._spoken is not None and self._spoken[0] is result:
                    self._report_speech(result, self._spoken[1], True)
                return

    def _record(
        self,
        result: SpeechResult,
        tools: list[ToolCall],
        timing: _TurnTiming,
        *,
        interrupted: bool,
    ) -> None:
        self._results = {result.utterance: result}
        if interrupted and not result.text:
            return  # cut before a word was synthesised: nothing was said
        if interrupted:
            self.history.append(Message("assistant", result.heard, interrupted=True))
            event(log, "agent.interrupted", said=result.text, heard=result.heard)
        elif result.text or tools:
            self.history.append(Message("assistant", result.text, tool_calls=tuple(tools)))
        if result.text:
            self._report_speech(result, timing, interrupted)

    def _report_speech(self, result: SpeechResult, timing: _TurnTiming, interrupted: bool) -> None:
        """Tell the sink what the caller heard of `result`, when, and the turn's latencies."""
        text = result.heard if interrupted else result.text
        said = result.text if interrupted else ""
        self._publish(
            TranscriptLine(self._call_id, time.time(), "agent", text, result.utterance,
                           interrupted, said)
        )  # fmt: skip
        self._spoken = (result, timing, interrupted)
        if self.sink is None:
            return
        start = end = None
        if result.first_audio_at is not None:
            start = max(result.first_audio_at, timing.released or 0.0)
            samples = result.samples_played if interrupted else result.samples_queued
            end = start + samples / PIPELINE_RATE
        m = _turn_metrics(timing, result)
        self._report(lambda sink: sink.agent_said(result.utterance, text, start, end, interrupted))
        self._report(
            lambda sink: sink.turn(
                result.utterance, timing.user_text, text, interrupted,
                voice_to_voice_ms=m.get("voice_to_voice_ms"), stt_ms=m.get("stt_final_ms"),
                brain_ms=m.get("brain_first_token_ms"), tts_ms=m.get("tts_first_audio_ms"),
            )
        )  # fmt: skip

    def _publish(self, ev: TranscriptLine | TranscriptRetracted) -> None:
        # The live view's transcript (api/dashboard.py); the sink above keeps the stored one.
        default_bus().publish(ev)

    def _metrics(self, timing: _TurnTiming, result: SpeechResult) -> None:
        # Printed as `agent.turn` (observability.logging), counted by metrics, filed by the store.
        m = _turn_metrics(timing, result)
        turn = TurnMeasured(
            current_call_id(), time.time(), result.utterance, result.text,
            voice_to_voice_ms=m.get("voice_to_voice_ms"), stt_final_ms=m.get("stt_final_ms"),
            brain_first_token_ms=m.get("brain_first_token_ms"),
            tts_first_audio_ms=m.get("tts_first_audio_ms"),
        )  # fmt: skip
        default_bus().publish(turn)

    async def _tool(
        self, call: ToolCall, conv: Conversation, leg: CallLeg, said: SpeechResult
    ) -> None:
        event(log, "agent.tool", name=call.name, arguments=call.arguments)
        outcome = "done"
        match call.name:
            case "hang_up":
                await conv.wait_played(said, self.config.hangup_grace)
                self.history.append(Message("tool", outcome, tool_call_id=call.id))
                await leg.hangup("agent_hangup")
                return
            case "send_dtmf":
                digits = str(call.arguments.get("digits", ""))
                try:
                    await conv.wait_played(said, self.config.hangup_grace)
                    await leg.send_dtmf(digits)
                except ValueError as exc:
                    outcome = f"failed: {exc}"
            case "transfer":
                target = str(call.arguments.get("target", "")).strip()
                await conv.wait_played(said, self.config.hangup_grace)
                notice = await conv.say(TRANSFERRING).wait()
                await conv.wait_played(notice, self.config.hangup_grace)
                self._report_speech(notice, _TurnTiming(self.clock.now()), notice.interrupted)
                result = await leg.transfer(target)
                event(
                    log, "agent.transfer", logging.INFO if result.ok else logging.WARNING,
                    target=target, ok=result.ok, status=result.status, reason=result.reason,
                )  # fmt: skip
                if result.ok:
                    outcome = "transferred"  # the leg is ending (the transferor hangs up)
                else:
                    # The call stays with us: tell the model why, and the caller that it failed.
                    outcome = f"failed: {result.reason or 'the transfer did not go through'}"
                    self.history.append(Message("tool", outcome, tool_call_id=call.id))
                    sorry = await conv.say(TRANSFER_FAILED).wait()
                    self.history.append(
                        Message("assistant", sorry.heard if sorry.interrupted else sorry.text)
                    )
                    self._report_speech(sorry, _TurnTiming(self.clock.now()), sorry.interrupted)
                    return
            case "take_message":
                # An answer prepared during the caller's pause is held until their turn is
                # over for real, and dropped (this task cancelled) if they talk on: a message
                # counts only once its turn is confirmed.
                while self._prepared is not None:
                    await self.clock.sleep_until(self.clock.now() + 0.02)
                text = self._take_message(call)
                outcome = f"message taken: {text}" if text else "failed: the message is empty"
            case _:
                outcome = f"failed: unknown tool {call.name}"
        self.history.append(Message("tool", outcome, tool_call_id=call.id))

    def _keep_messages(self, tools: list[ToolCall]) -> None:
        for call in tools:
            if call.name == "take_message":
                self._take_message(call)

    def _take_message(self, call: ToolCall) -> str:
        """Record the caller's message: an `agent.message` event (the call's events in the
        API) and a transcript entry. Returns its text ("" for none)."""
        text = " ".join(str(call.arguments.get("text", "")).split())
        if text:
            at = self.clock.now()
            event(log, "agent.message", text=text)
            self._report(lambda sink: sink.message(text, at))
        return text


def _turn_metrics(timing: _TurnTiming, result: SpeechResult) -> dict[str, int]:
    fields: dict[str, int] = {}
    if timing.speech_end is not None and result.first_audio_at is not None:
        # Caller's end of speech to our first audio frame queued (sent at the next tick),
        # or to its release when it was prepared during the caller's pause.
        out = max(result.first_audio_at, timing.released or 0.0)
        fields["voice_to_voice_ms"] = round(1000 * (out - timing.speech_end))
    if timing.stt_latency is not None:
        fields["stt_final_ms"] = round(1000 * timing.stt_latency)
    if timing.first_token is not None:
        fields["brain_first_token_ms"] = round(1000 * (timing.first_token - timing.started))
        if result.first_audio_at is not None:
            fields["tts_first_audio_ms"] = round(
                1000 * (result.first_audio_at - timing.first_token)
            )
    return fields
