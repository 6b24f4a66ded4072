"""The Asterisk peers (peerlib.asterisk, asyncio) driven from a synchronous peer test: their
own event loop in a thread, so the blocking helpers (gateway.wait_for, wait_for_speech_end)
work unchanged while "Asterisk" keeps streaming in real time.

- `LoopThread`: an event loop in a daemon thread; `run(coro)` waits for a result.
- `AudioSocketCaller`: an AudioSocketAsterisk that streams the caller's "microphone" without
  a gap, one 20 ms frame per 20 ms (silence when nothing is said), as app_audiosocket does
  while the channel is up; what it sent and received, timed on the wall clock
  (`time.time()`, the clock of voice_caller's waits).
- `ChanWebSocketCaller`: ChanWebSocketAsterisk's played frames and commands on that clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np

from callbridge.asterisk.audiosocket import Audio

from .asterisk import AudioSocketAsterisk, ChanWebSocketAsterisk
from .audio import Pcm, ulaw_decode
from .speech import FRAME, TimedFrame

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        # loop.time() -> time.time(), measured once (both are steady over a test)
        self.offset = time.time() - self.run(self._now())

    @staticmethod
    async def _now() -> float:
        return asyncio.get_running_loop().time()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wall(self, loop_time: float) -> float:
        return loop_time + self.offset

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class AudioSocketCaller:
    def __init__(self, lt: LoopThread, host: str, port: int) -> None:
        self.lt = lt
        self.peer = AudioSocketAsterisk(host, port)
        self.sent: list[TimedFrame] = []  # the caller's frames, when they were written
        self._mic: collections.deque[bytes] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def connect(self) -> AudioSocketCaller:
        async def start() -> None:
            await self.peer.connect()
            self._task = asyncio.create_task(self._stream())

        self.lt.run(start(), 10)
        return self

    async def _stream(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self.peer.ended.is_set():
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
            frame = self._mic.popleft() if self._mic else bytes(2 * FRAME)
            await self.peer.stream(frame)  # one frame: written at once
            pcm = np.frombuffer(frame, dtype="<i2")
            self.sent.append(TimedFrame.of(time.time(), pcm))

    def say(self, pcm: Pcm) -> float:
        """Queue speech for the microphone; the wall time its first frame goes out."""
        data = pcm.astype("<i2").tobytes()
        at = time.time() + 0.02 * (len(self._mic) + 1)
        frames = [
            data[i : i + 2 * FRAME].ljust(2 * FRAME, b"\0") for i in range(0, len(data), 2 * FRAME)
        ]
        self.lt.loop.call_soon_threadsafe(self._mic.extend, frames)
        return at

    def frames(self) -> list[TimedFrame]:
        """The agent's audio as received (Asterisk's side of the socket), wall-clock timed."""
        return [
            TimedFrame.of(self.lt.wall(a.at), np.frombuffer(a.frame.pcm, dtype="<i2"))
            for a in list(self.peer.received)
            if isinstance(a.frame, Audio)
        ]

    def hang_up(self) -> None:
        """Asterisk hangs up: it closes the socket."""
        self.lt.run(self.peer.hangup(), 5)


class ChanWebSocketCaller:
    def __init__(self, lt: LoopThread, peer: ChanWebSocketAsterisk) -> None:
        self.lt = lt
        self.peer = peer

    def frames(self) -> list[TimedFrame]:
        """What Asterisk played to the caller off its queue, one frame per 20 ms."""
        return [
            TimedFrame.of(self.lt.wall(a.at), ulaw_decode(a.frame))
            for a in list(self.peer.played)
            if isinstance(a.frame, bytes)
        ]

    def commands(self) -> list[tuple[float, object]]:
        return [(self.lt.wall(a.at), a.frame) for a in list(self.peer.commands)]
