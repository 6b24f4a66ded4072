"""The speaking side of a Conversation: text -> clause-by-clause TTS -> the leg's playout queue,
each utterance tagged with an id so that the leg's playout position says what was heard.

Synthesis runs on the speech executor, off the event loop; interruption cancels it and drops
the queued audio at once, and the result keeps the words the caller heard."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from callbridge.audio.levels import first_sound, trim_leading_silence
from callbridge.core.clock import Clock
from callbridge.core.errors import CallEnded
from callbridge.core.frames import FRAME_BYTES, AudioFrame
from callbridge.core.ports import CallLeg
from callbridge.tts.base import Synthesizer, split_clauses

LEAD_IN_SAMPLES = 80  # 10 ms of lead-in kept before an answer's first sound


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


class Speaker:
    """One speech at a time into `leg`; the conversation's listening side cuts it on barge-in."""

    def __init__(
        self,
        leg: CallLeg,
        clock: Clock,
        synthesizer: Synthesizer,
        executor: concurrent.futures.Executor,
        tts_timeout: float,
    ) -> None:
        self.leg = leg
        self.clock = clock
        self._tts = synthesizer
        self._executor = executor
        self._tts_timeout = tts_timeout
        self._utterances = itertools.count(1)
        self._speaking: asyncio.Task[SpeechResult] | None = None
        self.current: SpeechResult | None = None  # the latest say(), finished or not

    def say(self, text: str | AsyncIterator[str]) -> Speech:
        if self._speaking is not None and not self._speaking.done():
            raise RuntimeError("already speaking: interrupt() or wait for the current speech first")
        result = SpeechResult(next(self._utterances))
        self.current = result
        self._speaking = asyncio.get_running_loop().create_task(self._speak(text, result))
        return Speech(result, self._speaking)

    def interrupt(self) -> SpeechResult | None:
        result = self.current
        if result is None or self._speaking is None:
            return None
        if self._speaking.done() and not self.leg.playing:
            return None
        self._speaking.cancel()
        self.leg.flush_playout()
        result.interrupted = True
        self._settle(result)
        return result

    def drop_prepared(self) -> None:
        """The caller talked through the pause: what was prepared for it is never heard."""
        if self.current is not None:
            self.current.discarded = self.current.interrupted = True
        self.cancel()
        self.leg.flush_playout()

    def cancel(self) -> None:
        """Stop synthesising (the audio already queued stays queued)."""
        if self._speaking is not None and not self._speaking.done():
            self._speaking.cancel()

    @property
    def speaking(self) -> bool:
        return (self._speaking is not None and not self._speaking.done()) or self.leg.playing

    async def wait_played(self, result: SpeechResult, timeout: float = 30.0) -> None:
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
        deadline = loop.time() + self._tts_timeout
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


def _start_synthesis(tts: Synthesizer, text: str) -> Iterator[bytes]:
    return iter(tts.synthesize(text))


async def _pieces(text: str | AsyncIterator[str]) -> AsyncIterator[str]:
    if isinstance(text, str):
        yield text
        return
    async for piece in text:
        yield piece
