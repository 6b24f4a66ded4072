"""Background tasks a transport owns outside any one call (an incoming INVITE being set up, a
registration round, a load watcher): kept referenced until done, a failure logged with its
traceback (never lost with the task), all cancelled when the transport shuts down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class Background:
    def __init__(self, log: logging.Logger, event: str) -> None:
        self._log = log
        self._event = event  # the log event a failed task is reported as
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._log.error(self._event, exc_info=exc)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def __len__(self) -> int:
        return len(self._tasks)
