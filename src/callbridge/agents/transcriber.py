"""The conversation's speech recognition: one recognizer per call, driven strictly in order
(start, feed, finish) on the speech executor, off the event loop, each call under a deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import time
from collections.abc import Callable

from callbridge.core.bus import default_bus
from callbridge.core.call_events import TranscriptPartial
from callbridge.core.log import current_call_id, event
from callbridge.stt.base import Recognizer, Transcript

# The conversation's logger: its events (agent.stt_failed) keep the name they always had.
log = logging.getLogger("callbridge.agents.conversation")


class SttOp(enum.Enum):
    START = "start"
    FEED = "feed"
    RESET = "reset"
    FINISH = "finish"


class Transcriber:
    """Queues the listener's STT requests; `run()` carries them out one after the other."""

    def __init__(
        self,
        make_recognizer: Callable[[], Recognizer],
        executor: concurrent.futures.Executor,
        timeout: float,
    ) -> None:
        self._make_stt = make_recognizer  # built on a worker thread: loading may take a while
        self._executor = executor
        self._timeout = timeout
        self._ops: asyncio.Queue[tuple[SttOp, bytes, asyncio.Future[object] | None]] = (
            asyncio.Queue()
        )

    def start(self, pcm: bytes = b"") -> None:
        """A new utterance, beginning with `pcm` (the audio heard before the onset)."""
        self._ops.put_nowait((SttOp.START, b"", None))
        if pcm:
            self.feed(pcm)

    def feed(self, pcm: bytes) -> None:
        self._ops.put_nowait((SttOp.FEED, pcm, None))

    def reset(self) -> None:
        self._ops.put_nowait((SttOp.RESET, b"", None))

    def finish(self) -> asyncio.Future[object]:
        """The final transcript's text, once every request queued before it is done."""
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._ops.put_nowait((SttOp.FINISH, b"", fut))
        return fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stt = await loop.run_in_executor(self._executor, self._make_stt)
        try:
            await self._loop(stt, loop)
        finally:
            stt.close()

    async def _loop(self, stt: Recognizer, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            op, pcm, fut = await self._ops.get()
            try:
                async with asyncio.timeout(self._timeout):
                    match op:
                        case SttOp.START:
                            await loop.run_in_executor(self._executor, stt.start)
                        case SttOp.FEED:
                            partials = await loop.run_in_executor(self._executor, stt.feed, pcm)
                            self._publish(partials)
                        case SttOp.RESET:
                            # start() drops the unfinished utterance without decoding it (a
                            # whole Whisper decode, on a worker another call may need, thrown
                            # away)
                            await loop.run_in_executor(self._executor, stt.start)
                        case SttOp.FINISH:
                            transcript = await loop.run_in_executor(self._executor, stt.finish)
                            if fut is not None and not fut.done():
                                fut.set_result(transcript.text)
            except Exception as exc:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                else:
                    event(log, "agent.stt_failed", logging.WARNING, op=op.value, error=repr(exc))

    def _publish(self, partials: list[Transcript]) -> None:
        # The live view's grey line (api/dashboard.py); this task runs in the call's context.
        texts = [p.text for p in partials if p.text and not p.final]
        if texts:
            default_bus().publish(TranscriptPartial(current_call_id(), time.time(), texts[-1]))


def transcript_text(f: asyncio.Future[object]) -> str:
    """The text of a finished recognition; "" (logged) when it failed."""
    if f.cancelled():
        return ""
    if f.exception() is not None:
        event(log, "agent.stt_failed", logging.WARNING, error=repr(f.exception()))
        return ""
    return str(f.result())
