"""`callbridge serve --workers N`: the supervisor and the built-in dispatcher (N > 1), or one
worker of it (`--worker-index`, which the supervisor passes), or the lone gateway (N = 1)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from callbridge.cluster.plan import cpu_count, plan, resolve_count, worker_settings
from callbridge.cluster.supervisor import supervise, watch_parent
from callbridge.config.settings import Settings
from callbridge.core.errors import ConfigError

__all__ = ["run_serve"]

T = TypeVar("T")


def run_serve(
    settings: Settings,
    config_file: str | None,
    workers: str | None,
    worker_index: int | None,
    advertise: str | None,
) -> int:
    """Raises ConfigError for a bad --workers or a plan that does not fit the settings."""
    cpus = cpu_count()
    count = resolve_count(workers, settings.workers, cpus)
    if worker_index is not None:
        if count < 2:
            raise ConfigError("--worker-index", "needs --workers N with N of at least 2")
        the_plan = plan(settings, count, advertise)
        for handler in logging.getLogger().handlers:  # the workers share one log stream
            handler.addFilter(_WorkerTag(worker_index))
        _run(_worker(worker_settings(settings, worker_index, the_plan, cpus), worker_index))
        return 0
    if count == 1:
        _run(serve(settings))
        return 0
    return _run(supervise(settings, count, config_file))


def _run(main: Coroutine[Any, Any, T]) -> T:
    """The one place that picks the event loop for every way of serving."""
    return asyncio.run(main)


async def serve(settings: Settings, *, http_optional: bool = False) -> None:
    """One gateway until a signal; imported on first use, so the supervisor (which only
    dispatches) never loads the gateway, its models and its ~100 MB."""
    from callbridge.cli.serve import serve as run_gateway

    await run_gateway(settings, http_optional=http_optional)


async def _worker(settings: Settings, index: int) -> None:
    watcher = asyncio.create_task(watch_parent(os.getppid()))
    try:
        # Worker 0 serves the public API (required as configured); the others an internal one.
        await serve(settings, http_optional=index > 0)
    finally:
        watcher.cancel()


class _WorkerTag(logging.Filter):
    """`worker=<index>` on every line a worker prints (explicit fields win)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if not isinstance(fields, dict):
            record.fields = {"worker": self.index}
        elif "worker" not in fields:
            record.fields = {**fields, "worker": self.index}  # a copy: the dict may be shared
        return True
