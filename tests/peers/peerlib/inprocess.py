"""Helpers for peer tests that run callbridge's transport in the test's own event loop
(when the gateway process cannot be configured for what is tested, e.g. SIP accounts).

The test awaits; blocking peer helpers (SIPp's wait, tshark's stop) run after the transport
is shut down or through asyncio.to_thread, so the loop keeps serving SIP meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from callbridge.core.ports import CallLeg, LegInfo, Rejection

T = TypeVar("T")


async def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `check` on the loop (the transport runs meanwhile) until it returns a value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


class NoCalls:
    """The calls layer for a test that places and takes no calls."""

    def admit(self, info: LegInfo) -> None:
        raise Rejection(Rejection.NOT_FOUND, "no calls in this test")

    def start(self, leg: CallLeg) -> None:
        raise AssertionError("no call expected")


class Records(logging.Handler):
    """Every record logged under `callbridge` while installed; `events` filters the
    structured ones (`event(log, msg, **fields)`) by name and field values."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, msg: str, **match: Any) -> list[dict[str, Any]]:
        out = []
        for r in self.records:
            fields: dict[str, Any] = getattr(r, "fields", {})
            if r.msg == msg and all(fields.get(k) == v for k, v in match.items()):
                out.append(fields)
        return out

    def text(self) -> str:
        return "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in self.records)


@contextmanager
def recording(logger_name: str = "callbridge") -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger(logger_name)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
