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
import collections
import concurrent.futures
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from callbridge.agents.vad_pool import VadHandle, VadPool
from callbridge.audio.levels import first_sound, trim_leading_silence
from callbridge.core.clock import Clock
from callbridge.core.errors import CallEnded
from callbridge.core.events import DtmfDigit, LegHold
from callbridge.core.frames import FRAME_BYTES, AudioFrame
from callbridge.core.log import event
from callbridge.core.ports import CallLeg
from callbridge.media.bargein import BargeInConfig, BargeInDetector
from callbridge.media.turns import (
    SpeechConfirmed,
    SpeechDiscarded,
    SpeechStarted,
    TurnConfig,
    TurnDetector,
    TurnEnded,
    TurnState,
)
from callbridge.media.vad import VadResult
from callbridge.stt.base import Recognizer
from callbridge.tts.base import Synthesizer, split_clauses

log = logging.getLogger("callbridge.agents.conversation")

PRE_ROLL_FRAMES = 20  # 400 ms of caller audio kept so STT hears the onset VAD reports late
FALLBACK_SPEECH_DBFS = -45.0  # a chunk the VAD could not judge counts as speech above this
LEAD_IN_SAMPLES = 80  # 10 ms of lead-in kept before an answer's first sound
STT_BATCH_FRAMES = 5  # feed the recognizer 100 ms at a time (fewer thread hops)


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
    ) -> None:
        self.leg = leg
        self.clock = clock
        self.config = config or ConversationConfig()
        self._pool = vad_pool
        self._vad: VadHandle | None = None
        self._make_stt = recognizer  # built on a worker thread: loading may take a while
        self._tts = synthesizer
        self._executor = executor
        self._turns = TurnDetector(self.config.turn)
        self._bargein = BargeInDetector(self.config.bargein)
        self._events: asyncio.Queue[ConversationEvent | None] = asyncio.Queue()
        self._pre_roll: collections.deque[bytes] = collections.deque(maxlen=PRE_ROLL_FRAMES)
        self._stt_ops: asyncio.Queue[tuple[str, bytes, asyncio.Future[object] | None]] = (
            asyncio.Queue()
        )
        self._stt_pending: list[bytes] = []
        self._in_turn = False
        self._turn_started = 0.0
        self._utterances = itertools.count(1)
        self._speaking: asyncio.Task[SpeechResult] | None = None
        self._current: SpeechResult | None = None
        self._closed = False
        self._held = False  # playout paused (suspected barge-in or an answer not yet due)
        self._turn_audio: list[bytes] = []  # the current turn's audio, to re-decode on resume
        self._stt_open = False  # the recognizer is inside an utterance
        self._tentative = 0  # generation of the tentative turn in flight (0: none)
        self._tentative_emitted = False  # its UserTurn went out: the agent may be preparing
        self._answer_held = False  # speech queued now waits for TurnConfirmed
        self._confirm_pending = False  # the turn ended before its tentative transcript came
        self._generations = itertools.count(1)
        self._held_at: float | None = None

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

    # ---- listening --------------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._vad is not None
        async for item in self.leg.inputs():
            match item:
                case AudioFrame():
                    now = self.clock.now()
                    self._pre_roll.append(item.pcm)
                    if self._in_turn:
                        self._turn_audio.append(item.pcm)
                        if self._stt_open:
                            self._stt_feed(item.pcm)
                    self._vad.feed(item, now)
                case DtmfDigit(digit=digit):
                    self._events.put_nowait(Dtmf(digit))
                case LegHold(on_hold=on_hold):
                    self._turns.reset()
                    self._events.put_nowait(Hold(on_hold))

    def _on_vad(self, result: VadResult) -> None:
        now = result.end
        # The agent's own voice comes back on the caller's stream (phone or line echo). While
        # it may (the playback level window covers the echo delay), caller audio that is not
        # louder than that echo could be is not the caller: it must not start a turn either.
        probability = result.probability
        if result.source == "failed":
            # The model missed its deadline (overload): judge by level rather than take it
            # for silence, which would end the caller's turn in the middle of a sentence.
            probability = 1.0 if result.level_dbfs >= FALLBACK_SPEECH_DBFS else 0.0
        speech = probability
        if result.level_dbfs < self._bargein.echo_threshold(self.leg.playback_dbfs):
            probability = 0.0
        was_stopping = self._turns.state is TurnState.STOPPING
        for ev in self._turns.update(probability, now, result.level_dbfs):
            match ev:
                case SpeechStarted(at=at):
                    self._start_turn(at)
                case SpeechConfirmed(onset=onset):
                    self._events.put_nowait(UserSpeaking(onset))
                case SpeechDiscarded():
                    self._in_turn = False
                    self._stt_open = False
                    self._stt_ops.put_nowait(("reset", b"", None))
                case TurnEnded():
                    self._end_turn(ev)
        if was_stopping and self._turns.state is TurnState.SPEAKING and self._tentative:
            self._resume_turn(now)
        self._maybe_prepare(now)
        if self.config.allow_barge_in:
            barge = self._bargein.update(
                caller_dbfs=result.level_dbfs,
                speech=speech,
                # held answer audio is not heard: speech over it is the turn going on
                agent_playing=self.speaking and not self._answer_held,
                agent_dbfs=self.leg.playback_dbfs,
                now=now,
            )
            if barge is not None and self._current is not None:
                cut = self.interrupt()
                if cut is not None:
                    event(
                        log,
                        "agent.barge_in",
                        # VAD results arrive in the pool's context, not the call's: name it.
                        call_id=self.leg.info.ids.get("call_id"),
                        utterance=cut.utterance,
                        onset=round(barge.onset, 3),
                        decided_after_ms=round(1000 * (barge.at - barge.onset)),
                        # when the caller stopped hearing the agent (the hold), from the onset
                        silenced_after_ms=round(1000 * ((self._held_at or barge.at) - barge.onset)),
                        heard=cut.heard,
                    )
                    self._events.put_nowait(Interrupted(cut.utterance, barge.onset, barge.at))
            self._hold_while_suspected(now)

    def _hold_while_suspected(self, now: float) -> None:
        """Silence the agent the moment caller speech over it qualifies, before it is confirmed
        as an interruption: the caller hears the agent stop within a VAD chunk or two instead
        of after `min_speech`. A cough releases the hold and the answer goes on where it was;
        a confirmed barge-in flushes (which releases the hold too). An answer prepared for a
        tentative turn is held the same way until the turn is confirmed."""
        suspected = self._bargein.holding
        hold = suspected or self._answer_held
        if hold != self._held:
            self._held = hold
            self._held_at = now if suspected else None
            self.leg.pause_playout(hold)
            event(
                log,
                "agent.hold",
                call_id=self.leg.info.ids.get("call_id"),
                held=hold,
                why="caller" if suspected else "prepared" if hold else "",
                at=round(now, 3),
            )

    # ---- tentative turns: prepare the answer during the end-of-turn silence -----------------

    def _maybe_prepare(self, now: float) -> None:
        """After `prepare_after` of silence, finish the transcript and report a tentative
        turn, so the answer is synthesised by the time the silence ends the turn."""
        after = self.config.prepare_after
        since = self._turns.silent_since
        if (
            after is None
            or since is None
            or self._tentative
            or now - since + 1e-9 < after
            or after >= self.config.turn.end_silence
            or self.speaking  # the agent is talking: a backchannel, not a turn to prepare for
        ):
            return
        self._tentative = generation = next(self._generations)
        self._stt_flush()
        self._stt_open = False
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._stt_ops.put_nowait(("finish", b"", fut))
        speech_start, speech_end = self._turns.onset or since, since

        def done(f: asyncio.Future[object]) -> None:
            if generation != self._tentative or self._closed:
                return  # the caller went on meanwhile: this transcript is stale
            text = _transcript(f)
            latency = self.clock.now() - now
            if self._confirm_pending:  # the turn ended while this was decoded: final
                self._reset_tentative()
                self._events.put_nowait(
                    UserTurn(text, speech_start, speech_end, now, latency, tentative=False)
                )
                return
            self._tentative_emitted = True
            self._answer_held = True
            self._hold_while_suspected(self.clock.now())
            self._events.put_nowait(
                UserTurn(text, speech_start, speech_end, now, latency, tentative=True)
            )

        fut.add_done_callback(done)

    def _reset_tentative(self) -> None:
        self._tentative = 0
        self._tentative_emitted = False
        self._confirm_pending = False
        self._answer_held = False

    def _confirm_turn(self, at: float) -> None:
        self._reset_tentative()
        self._hold_while_suspected(at)  # releases the held answer
        self._events.put_nowait(TurnConfirmed(at))

    def _resume_turn(self, now: float) -> None:
        """Speech after a tentative turn: drop what was prepared and decode the whole turn
        again (the recognizer closed its utterance at the tentative end)."""
        emitted = self._tentative_emitted
        self._reset_tentative()
        self._stt_ops.put_nowait(("start", b"", None))
        self._stt_ops.put_nowait(("feed", b"".join(self._turn_audio), None))
        self._stt_open = True
        if emitted:
            self._drop_prepared()
            self._events.put_nowait(TurnResumed(now))

    def _drop_prepared(self) -> None:
        if self._current is not None:
            self._current.discarded = self._current.interrupted = True
        if self._speaking is not None and not self._speaking.done():
            self._speaking.cancel()
        self.leg.flush_playout()
        self._held = False  # the flush released the leg's hold

    def _start_turn(self, at: float) -> None:
        self._in_turn = True
        self._stt_open = True
        self._turn_started = at
        self._turn_audio = list(self._pre_roll)  # the onset arrived before the VAD said so
        self._stt_ops.put_nowait(("start", b"", None))
        for pcm in self._pre_roll:
            self._stt_feed(pcm)

    def _end_turn(self, ev: TurnEnded) -> None:
        self._in_turn = False
        self._turn_audio = []
        if self._tentative:
            # Prepared already: let the held answer play (or, if its transcript is still
            # being decoded, report that transcript as the final turn when it comes).
            if self._tentative_emitted:
                self._confirm_turn(ev.at)
            else:
                self._confirm_pending = True
            return
        self._stt_open = False
        self._stt_flush()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._stt_ops.put_nowait(("finish", b"", fut))

        def done(f: asyncio.Future[object]) -> None:
            latency = self.clock.now() - ev.at
            self._events.put_nowait(
                UserTurn(_transcript(f), ev.speech_start, ev.speech_end, ev.at, latency)
            )

        fut.add_done_callback(done)

    def _stt_feed(self, pcm: bytes) -> None:
        self._stt_pending.append(pcm)
        if len(self._stt_pending) >= STT_BATCH_FRAMES:
            self._stt_flush()

    def _stt_flush(self) -> None:
        if self._stt_pending:
            self._stt_ops.put_nowait(("feed", b"".join(self._stt_pending), None))
            self._stt_pending = []

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
                        await loop.run_in_executor(self._executor, stt.finish)
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
