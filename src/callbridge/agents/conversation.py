"""The Conversation API: a full-duplex voice conversation on top of any CallLeg.

It listens all the time (VAD -> turn taking -> streaming STT), speaks when asked (clause by
clause TTS into the leg's playout queue, tagged with an utterance id), and interrupts itself
when the caller barges in: the current speech is cancelled, the playout queue is dropped at
once, and the speech's result says exactly which part was heard (from the playout position).

This module is the listening shell: media.listening.Listener decides (sans-IO), this carries
its actions out — to the Speaker (agents/speaker.py: the speaking side), the Transcriber
(agents/transcriber.py: the call's recognizer) and the agent's event queue
(agents/conversation_events.py). Every name those define is importable from here too.

Knows nothing of SIP or RTP: only core.ports.CallLeg, media/ state machines, stt/ and tts/.
Every task belongs to the TaskGroup of `run()`; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from callbridge.agents.conversation_events import (
    ConversationEvent,
    Dtmf,
    Hold,
    Interrupted,
    TurnConfirmed,
    TurnResumed,
    UserSpeaking,
    UserTurn,
)
from callbridge.agents.speaker import LEAD_IN_SAMPLES, Speaker, Speech, SpeechResult, heard_text
from callbridge.agents.transcriber import Transcriber, transcript_text
from callbridge.agents.vad_pool import VadHandle, VadPool
from callbridge.core.bus import default_bus
from callbridge.core.call_events import BargeIn, TranscriptPartial
from callbridge.core.clock import Clock
from callbridge.core.events import DtmfDigit, LegHold, LegInput
from callbridge.core.frames import PIPELINE_RATE, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import CallLeg
from callbridge.media.bargein import BargeInConfig
from callbridge.media.listening import (
    AskTurnModel,
    ConfirmBargeIn,
    ConfirmTurn,
    DiscardUtterance,
    EndTurn,
    FeedStt,
    FinishUtterance,
    ListenAction,
    Listener,
    ListeningConfig,
    PausePlayout,
    PrepareTurn,
    ResumePlayout,
    ResumeTurn,
    SpeechOnset,
    StartUtterance,
)
from callbridge.media.turns import TurnConfig
from callbridge.media.vad import VadResult
from callbridge.stt.base import Recognizer
from callbridge.tts.base import Synthesizer

__all__ = [
    "LEAD_IN_SAMPLES",
    "Conversation",
    "ConversationConfig",
    "ConversationEvent",
    "Dtmf",
    "Hold",
    "Interrupted",
    "Speech",
    "SpeechResult",
    "TurnConfirmed",
    "TurnModel",
    "TurnResumed",
    "UserSpeaking",
    "UserTurn",
    "heard_text",
]

log = logging.getLogger("callbridge.agents.conversation")


class TurnModel(Protocol):
    """An end-of-turn model (media.smart_turn.SmartTurn): P(the utterance is complete).
    Blocking; the conversation calls it off the event loop, one call at a time per thread."""

    def predict(self, pcm: bytes, sample_rate: int = PIPELINE_RATE) -> float: ...


@dataclass(frozen=True, slots=True)
class ConversationConfig:
    turn: TurnConfig = TurnConfig()
    bargein: BargeInConfig = BargeInConfig()
    allow_barge_in: bool = True
    # Silence after which the answer is prepared (transcript, brain, first clause) while the
    # end of the turn is still unsure: the answer is ready when `turn.end_silence` is reached.
    # None: prepare nothing before the end of the turn.
    prepare_after: float | None = 0.15
    # With a turn model: `turn.end_silence` is the quick end of a turn the model calls
    # complete; one it calls incomplete ends after this much silence (if speech does not
    # resume first).
    end_silence_max: float = 1.2
    turn_complete_threshold: float = 0.5
    stt_timeout: float = 5.0  # deadline for a final transcript
    tts_timeout: float = 10.0  # deadline per clause


class Conversation:
    def __init__(
        self,
        leg: CallLeg,
        *,
        clock: Clock,
        vad_pool: VadPool,
        recognizer: Callable[[], Recognizer],
        synthesizer: Synthesizer,
        executor: concurrent.futures.Executor,
        config: ConversationConfig | None = None,
        turn_model: TurnModel | None = None,
        turn_executor: concurrent.futures.Executor | None = None,
    ) -> None:
        """`turn_model`: end the turn by meaning as well as silence (None: silence only);
        it runs on `turn_executor` (default: `executor`)."""
        self.leg = leg
        self.clock = clock
        self.config = config or ConversationConfig()
        self._pool = vad_pool
        self._vad: VadHandle | None = None
        self._turn_model = turn_model
        self._turn_executor = turn_executor or executor
        cfg = self.config
        self._listener = Listener(
            ListeningConfig(
                turn=cfg.turn,
                bargein=cfg.bargein,
                allow_barge_in=cfg.allow_barge_in,
                prepare_after=cfg.prepare_after,
                semantic=turn_model is not None,
                end_silence_max=max(cfg.end_silence_max, cfg.turn.end_silence),
                complete_threshold=cfg.turn_complete_threshold,
            )
        )
        self._speaker = Speaker(leg, clock, synthesizer, executor, cfg.tts_timeout)
        self._stt = Transcriber(recognizer, executor, cfg.stt_timeout)
        self._events: asyncio.Queue[ConversationEvent | None] = asyncio.Queue()
        self._closed = False

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen until the leg ends. Owns the VAD handle and the STT worker."""
        self._vad = self._pool.register(
            self.leg.info.ids.get("call_id", "call"), on_result=self._on_vad
        )
        try:
            async with asyncio.TaskGroup() as tg:
                worker = tg.create_task(self._stt.run())
                await self._listen()
                worker.cancel()
        finally:
            self._vad.close()
            self._closed = True
            self._events.put_nowait(None)
            self._speaker.cancel()

    async def events(self) -> AsyncIterator[ConversationEvent]:
        while True:
            ev = await self._events.get()
            if ev is None:
                return
            yield ev

    # ---- speaking (agents/speaker.py) -------------------------------------------------------

    def say(self, text: str | AsyncIterator[str]) -> Speech:
        """Speak `text` (or a stream of text pieces, spoken clause by clause as they complete).
        Synthesis runs in the background; `await speech.wait()` for the SpeechResult."""
        return self._speaker.say(text)

    def interrupt(self) -> SpeechResult | None:
        """Stop speaking now: cancel synthesis, drop queued audio. Returns the cut result."""
        return self._speaker.interrupt()

    @property
    def speaking(self) -> bool:
        return self._speaker.speaking

    async def wait_played(self, result: SpeechResult, timeout: float = 30.0) -> None:
        """Wait until the queued audio of `result` has been sent (e.g. before hanging up)."""
        await self._speaker.wait_played(result, timeout)

    # ---- listening: media.listening.Listener decides, this carries its actions out ----------

    async def _listen(self) -> None:
        # Caller frames are heard inside the leg's media tick (CallLeg.listen): one pass for
        # every call instead of a task wake per call per frame, and a suspected barge-in
        # pauses the agent's audio in the very tick that heard it.
        self.leg.listen(self._hear)
        await self.leg.wait_ended()

    def _hear(self, item: LegInput) -> None:
        assert self._vad is not None
        match item:
            case AudioFrame():
                now = self.clock.now()
                self._execute(self._listener.frame(item.pcm, now))
                self._vad.feed(item, now)
            case DtmfDigit(digit=digit):
                self._events.put_nowait(Dtmf(digit))
            case LegHold(on_hold=on_hold):
                self._listener.hold()
                self._events.put_nowait(Hold(on_hold))

    def _on_vad(self, result: VadResult) -> None:
        self._execute(
            self._listener.vad(
                result, agent_speaking=self.speaking, agent_dbfs=self.leg.playback_dbfs
            )
        )

    def _execute(self, actions: list[ListenAction]) -> None:
        for action in actions:
            match action:
                case StartUtterance(pcm=pcm):
                    self._stt.start(pcm)
                case FeedStt(pcm=pcm):
                    self._stt.feed(pcm)
                case DiscardUtterance():
                    self._stt.reset()
                    self._partial(active=False)
                case FinishUtterance(request=request):
                    self._finish_utterance(request)
                case SpeechOnset(onset=onset):
                    self._events.put_nowait(UserSpeaking(onset))
                    self._partial(active=True)
                case PrepareTurn() | EndTurn():
                    tentative = isinstance(action, PrepareTurn)
                    self._events.put_nowait(
                        UserTurn(
                            action.text,
                            action.speech_start,
                            action.speech_end,
                            action.decided_at,
                            action.stt_latency,
                            tentative=tentative,
                        )
                    )
                case ConfirmTurn(at=at):
                    self._events.put_nowait(TurnConfirmed(at))
                case ResumeTurn(at=at):
                    self._speaker.drop_prepared()
                    self._events.put_nowait(TurnResumed(at))
                case PausePlayout(why=why, at=at):
                    self._hold(True, why, at)
                case ResumePlayout(at=at):
                    self._hold(False, "", at)
                case ConfirmBargeIn():
                    self._barge_in(action)
                case AskTurnModel():
                    self._ask_turn_model(action)

    def _partial(self, *, active: bool) -> None:
        """The live view's grey line: the caller started talking (no words yet), or what
        they said was noise after all. (The recognizer's own partials: transcriber.py.)"""
        call_id = self.leg.info.ids.get("call_id")  # VAD results come in the pool's context
        default_bus().publish(TranscriptPartial(call_id, time.time(), "", active))

    def _hold(self, held: bool, why: str, at: float) -> None:
        """Pause the agent's audio (suspected barge-in: the caller hears it stop within a VAD
        chunk or two; or an answer prepared for a turn that is not over yet), or release it."""
        self.leg.pause_playout(held)
        event(
            log,
            "agent.hold",
            call_id=self.leg.info.ids.get("call_id"),
            held=held,
            why=why,
            at=round(at, 3),
        )

    def _barge_in(self, barge: ConfirmBargeIn) -> None:
        if self._speaker.current is None:
            return
        cut = self.interrupt()
        if cut is None:
            return
        # Printed as `agent.barge_in` (observability.logging), counted, filed by the store.
        default_bus().publish(
            BargeIn(
                # VAD results arrive in the pool's context, not the call's: name it.
                call_id=self.leg.info.ids.get("call_id"),
                at=time.time(),
                utterance=cut.utterance,
                onset=round(barge.onset, 3),
                decided_after_ms=round(1000 * (barge.at - barge.onset)),
                # when the caller stopped hearing the agent (the hold), from the onset
                silenced_after_ms=round(1000 * (barge.silenced_at - barge.onset)),
                heard=cut.heard,
            )
        )
        self._events.put_nowait(Interrupted(cut.utterance, barge.onset, barge.at))

    def _finish_utterance(self, request: int) -> None:
        def done(f: asyncio.Future[object]) -> None:
            if not self._closed:
                self._execute(
                    self._listener.transcript(request, transcript_text(f), self.clock.now())
                )

        self._stt.finish().add_done_callback(done)

    def _ask_turn_model(self, ask: AskTurnModel) -> None:
        """Run the end-of-turn model off the event loop (tens of ms of CPU); its verdict comes
        back with the time it came. A failure is logged and leaves the turn to end_silence_max."""
        model = self._turn_model
        if model is None:
            return
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._turn_executor, model.predict, ask.pcm, ask.sample_rate)

        def done(f: asyncio.Future[float]) -> None:
            if self._closed or f.cancelled():
                return
            now = self.clock.now()
            if f.exception() is not None:
                event(log, "agent.turn_model_failed", logging.WARNING, error=repr(f.exception()))
                return
            probability = f.result()
            event(
                log,
                "agent.turn_model",
                call_id=self.leg.info.ids.get("call_id"),
                probability=round(probability, 3),
                ms=round(1000 * (now - ask.at)),
            )
            self._execute(self._listener.verdict(ask.request, probability, now))

        fut.add_done_callback(done)
