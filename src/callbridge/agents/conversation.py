"""The Conversation API: a full-duplex voice conversation on top of any CallLeg.

It listens all the time (VAD -> turn taking -> streaming STT), speaks when asked (clause by
clause TTS into the leg's playout queue, tagged with an utterance id), and interrupts itself
when the caller barges in: the current speech is cancelled, the playout queue is dropped at
once, and the speech's result says exactly which part was heard (from the playout position).

Knows nothing of SIP or RTP: only core.ports.CallLeg, media/ state machines, stt/ and tts/.
Every task belongs to the TaskGroup of `run()`; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from callbridge.agents.vad_pool import VadHandle, VadPool
from callbridge.audio.levels import first_sound, trim_leading_silence
from callbridge.core.clock import Clock
from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegHold
from callbridge.core.frames import FRAME_BYTES, PIPELINE_RATE, AudioFrame
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
from callbridge.tts.base import Synthesizer, split_clauses

log = logging.getLogger("callbridge.agents.conversation")

LEAD_IN_SAMPLES = 80  # 10 ms of lead-in kept before an answer's first sound


class TurnModel(Protocol):
    """An end-of-turn model (media.smart_turn.SmartTurn): P(the utterance is complete).
    Blocking; the conversation calls it off the event loop, one call at a time per thread."""

    def predict(self, pcm: bytes, sample_rate: int = PIPELINE_RATE) -> float: ...


# ---- what a conversation reports --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserSpeaking:
    at: float


@dataclass(frozen=True, slots=True)
class UserTurn:
    """The caller finished a turn: the final transcript and when their speech started/ended.

    `tentative`: the caller has only paused for `prepare_after` so far. The agent may start on
    its answer now; whatever it says is held (not sent) until TurnConfirmed, and dropped on
    TurnResumed (then a new UserTurn with the whole turn's words follows)."""

    text: str
    speech_start: float
    speech_end: float
    decided_at: float  # end-of-turn decision (speech_end + end silence, or + prepare_after)
    stt_latency: float  # decision -> final transcript
    tentative: bool = False


@dataclass(frozen=True, slots=True)
class TurnConfirmed:
    """The tentative turn is over for real (end silence reached): held answer audio plays."""

    at: float


@dataclass(frozen=True, slots=True)
class TurnResumed:
    """The caller went on after a tentative turn: the answer being prepared was dropped."""

    at: float


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The caller barged in over utterance `utterance`; their speech began at `onset`."""

    utterance: int
    onset: float
    at: float


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Hold:
    on_hold: bool


ConversationEvent = (
    UserSpeaking | UserTurn | TurnConfirmed | TurnResumed | Interrupted | Dtmf | Hold
)


class Speech:
    """A `say()` in progress. Interruption cancels its task; `wait()` still returns the result."""

    def __init__(self, result: SpeechResult, task: asyncio.Task[SpeechResult]) -> None:
        self.result = result
        self.task = task

    async def wait(self) -> SpeechResult:
        """Until synthesis ends or is interrupted (the audio may still be playing out)."""
        await asyncio.wait({self.task})
        if not self.task.cancelled() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]
        return self.result


@dataclass(slots=True)
class SpeechResult:
    """What became of one `say()`: the text, what of it the caller heard, and timings."""

    utterance: int
    text: str = ""
    heard: str = ""
    interrupted: bool = False
    samples_queued: int = 0
    samples_played: int = 0
    first_audio_at: float | None = None  # TTS produced the first frame
    discarded: bool = False  # prepared for a pause the caller talked through: never heard
    clauses: list[tuple[str, int, int]] = field(default_factory=list)  # text, first, end sample


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


def heard_text(clauses: list[tuple[str, int, int]], played: int) -> str:
    """The words of the clauses covered by the first `played` samples; a clause cut midway
    keeps the share of its words proportional to the share of its audio that was played."""
    words: list[str] = []
    for text, first, end in clauses:
        if played >= end:
            words.extend(text.split())
        elif played > first:
            clause_words = text.split()
            share = (played - first) / max(1, end - first)
            words.extend(clause_words[: int(len(clause_words) * share)])
            break
        else:
            break
    return " ".join(words)


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
        self._make_stt = recognizer  # built on a worker thread: loading may take a while
        self._tts = synthesizer
        self._executor = executor
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
        self._events: asyncio.Queue[ConversationEvent | None] = asyncio.Queue()
        self._stt_ops: asyncio.Queue[tuple[str, bytes, asyncio.Future[object] | None]] = (
            asyncio.Queue()
        )
        self._utterances = itertools.count(1)
        self._speaking: asyncio.Task[SpeechResult] | None = None
        self._current: SpeechResult | None = None
        self._closed = False

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen until the leg ends. Owns the VAD handle and the STT worker."""
        self._vad = self._pool.register(
            self.leg.info.ids.get("call_id", "call"), on_result=self._on_vad
        )
        try:
            async with asyncio.TaskGroup() as tg:
                worker = tg.create_task(self._stt_worker())
                await self._listen()
                worker.cancel()
        finally:
            self._vad.close()
            self._closed = True
            self._events.put_nowait(None)
            if self._speaking is not None:
                self._speaking.cancel()

    async def events(self) -> AsyncIterator[ConversationEvent]:
        while True:
            ev = await self._events.get()
            if ev is None:
                return
            yield ev

    # ---- speaking ---------------------------------------------------------------------------

    def say(self, text: str | AsyncIterator[str]) -> Speech:
        """Speak `text` (or a stream of text pieces, spoken clause by clause as they complete).
        Synthesis runs in the background; `await speech.wait()` for the SpeechResult."""
        if self._speaking is not None and not self._speaking.done():
            raise RuntimeError("already speaking: interrupt() or wait for the current speech first")
        result = SpeechResult(next(self._utterances))
        self._current = result
        self._speaking = asyncio.get_running_loop().create_task(self._speak(text, result))
        return Speech(result, self._speaking)

    def interrupt(self) -> SpeechResult | None:
        """Stop speaking now: cancel synthesis, drop queued audio. Returns the cut result."""
        result = self._current
        if result is None or self._speaking is None:
            return None
        if self._speaking.done() and not self.leg.playing:
            return None
        self._speaking.cancel()
        self.leg.flush_playout()
        result.interrupted = True
        self._settle(result)
        return result

    @property
    def speaking(self) -> bool:
        return (self._speaking is not None and not self._speaking.done()) or self.leg.playing

    async def wait_played(self, result: SpeechResult, timeout: float = 30.0) -> None:
        """Wait until the queued audio of `result` has been sent (e.g. before hanging up)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (
                    not self.leg.ended and self.leg.played(result.utterance) < result.samples_queued
                ):
                    await self.clock.sleep_until(self.clock.now() + 0.02)
        self._settle(result)

    async def _speak(self, text: str | AsyncIterator[str], result: SpeechResult) -> SpeechResult:
        loop = asyncio.get_running_loop()
        pending = ""
        try:
            async for piece in _pieces(text):
                pending += piece
                clauses = split_clauses(pending)
                # Keep the last (maybe unfinished) clause until more text or the end arrives,
                # with its trailing space: the next piece may start a new word.
                tail = " " if pending[-1:].isspace() else ""
                complete, pending = (clauses[:-1], clauses[-1] + tail) if clauses else ([], pending)
                for clause in complete:
                    await self._speak_clause(clause, result, loop)
            if pending.strip():
                await self._speak_clause(pending.strip(), result, loop)
        except CallEnded:
            pass
        self._settle(result)
        return result

    async def _speak_clause(
        self, clause: str, result: SpeechResult, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Synthesise `clause` and queue its audio chunk by chunk as the synthesiser yields it
        (a streaming TTS starts playing before the clause is complete)."""
        deadline = loop.time() + self.config.tts_timeout
        chunks = await loop.run_in_executor(self._executor, _start_synthesis, self._tts, clause)
        first = result.samples_queued
        # Recorded before queuing: an interruption midway must still know this clause's
        # span, whose end grows as audio is queued.
        result.text = f"{result.text} {clause}".strip()
        index = len(result.clauses)
        result.clauses.append((clause, first, first))
        lead_in = first == 0  # the answer's first sound: trim what comes before it
        pending = b""
        while True:
            async with asyncio.timeout_at(deadline):
                pcm = await loop.run_in_executor(self._executor, next, chunks, None)
            if pcm is None:
                break
            pending += pcm
            if lead_in:
                # Piper starts every clause with ~40 ms of silence: on an answer's first
                # clause that is only delay.
                if first_sound(pending) is None:
                    continue  # no sound yet
                pending, lead_in = trim_leading_silence(pending, keep=LEAD_IN_SAMPLES), False
            whole = len(pending) - len(pending) % FRAME_BYTES
            await self._queue(pending[:whole], result, index, first)
            pending = pending[whole:]
        if pending:
            await self._queue(pending + bytes(-len(pending) % FRAME_BYTES), result, index, first)

    async def _queue(self, pcm: bytes, result: SpeechResult, index: int, first: int) -> None:
        """Queue whole frames of clause `index` of `result` for playout."""
        if not pcm:
            return
        if result.first_audio_at is None:
            result.first_audio_at = self.clock.now()
        clause, _, end = result.clauses[index]
        result.clauses[index] = (clause, first, end + len(pcm) // 2)
        for i in range(0, len(pcm), FRAME_BYTES):
            await self.leg.play(AudioFrame(pcm[i : i + FRAME_BYTES]), result.utterance)
            result.samples_queued += FRAME_BYTES // 2

    def _settle(self, result: SpeechResult) -> None:
        result.samples_played = self.leg.played(result.utterance)
        result.heard = (
            heard_text(result.clauses, result.samples_played) if result.interrupted else result.text
        )

    # ---- listening: media.listening.Listener decides, this carries its actions out ----------

    async def _listen(self) -> None:
        assert self._vad is not None
        async for item in self.leg.inputs():
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
                    self._stt_ops.put_nowait(("start", b"", None))
                    if pcm:
                        self._stt_ops.put_nowait(("feed", pcm, None))
                case FeedStt(pcm=pcm):
                    self._stt_ops.put_nowait(("feed", pcm, None))
                case DiscardUtterance():
                    self._stt_ops.put_nowait(("reset", b"", None))
                case FinishUtterance(request=request):
                    self._finish_utterance(request)
                case SpeechOnset(onset=onset):
                    self._events.put_nowait(UserSpeaking(onset))
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
                    self._drop_prepared()
                    self._events.put_nowait(TurnResumed(at))
                case PausePlayout(why=why, at=at):
                    self._hold(True, why, at)
                case ResumePlayout(at=at):
                    self._hold(False, "", at)
                case ConfirmBargeIn():
                    self._barge_in(action)
                case AskTurnModel():
                    self._ask_turn_model(action)

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
        if self._current is None:
            return
        cut = self.interrupt()
        if cut is None:
            return
        event(
            log,
            "agent.barge_in",
            # VAD results arrive in the pool's context, not the call's: name it.
            call_id=self.leg.info.ids.get("call_id"),
            utterance=cut.utterance,
            onset=round(barge.onset, 3),
            decided_after_ms=round(1000 * (barge.at - barge.onset)),
            # when the caller stopped hearing the agent (the hold), from the onset
            silenced_after_ms=round(1000 * (barge.silenced_at - barge.onset)),
            heard=cut.heard,
        )
        self._events.put_nowait(Interrupted(cut.utterance, barge.onset, barge.at))

    def _drop_prepared(self) -> None:
        """The caller talked through the pause: what was prepared for it is never heard."""
        if self._current is not None:
            self._current.discarded = self._current.interrupted = True
        if self._speaking is not None and not self._speaking.done():
            self._speaking.cancel()
        self.leg.flush_playout()

    def _finish_utterance(self, request: int) -> None:
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._stt_ops.put_nowait(("finish", b"", fut))

        def done(f: asyncio.Future[object]) -> None:
            if not self._closed:
                self._execute(self._listener.transcript(request, _transcript(f), self.clock.now()))

        fut.add_done_callback(done)

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

    async def _stt_worker(self) -> None:
        """Runs the recognizer's calls in order on the speech executor, off the event loop."""
        loop = asyncio.get_running_loop()
        stt = await loop.run_in_executor(self._executor, self._make_stt)
        try:
            await self._stt_loop(stt, loop)
        finally:
            stt.close()

    async def _stt_loop(self, stt: Recognizer, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            op, pcm, fut = await self._stt_ops.get()
            try:
                async with asyncio.timeout(self.config.stt_timeout):
                    if op == "start":
                        await loop.run_in_executor(self._executor, stt.start)
                    elif op == "feed":
                        await loop.run_in_executor(self._executor, stt.feed, pcm)
                    elif op == "reset":
                        # start() drops the unfinished utterance without decoding it (a whole
                        # Whisper decode, on a worker another call may need, thrown away)
                        await loop.run_in_executor(self._executor, stt.start)
                    else:
                        transcript = await loop.run_in_executor(self._executor, stt.finish)
                        if fut is not None and not fut.done():
                            fut.set_result(transcript.text)
            except Exception as exc:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                else:
                    event(log, "agent.stt_failed", logging.WARNING, op=op, error=repr(exc))


def _transcript(f: asyncio.Future[object]) -> str:
    """The text of a finished recognition; "" (logged) when it failed."""
    if f.cancelled():
        return ""
    if f.exception() is not None:
        event(log, "agent.stt_failed", logging.WARNING, error=repr(f.exception()))
        return ""
    return str(f.result())


def _start_synthesis(tts: Synthesizer, text: str) -> Iterator[bytes]:
    return iter(tts.synthesize(text))


async def _pieces(text: str | AsyncIterator[str]) -> AsyncIterator[str]:
    if isinstance(text, str):
        yield text
        return
    async for piece in text:
        yield piece
