"""Structured log events and the call id that travels with a call's tasks.

The call id lives in a ContextVar: tasks created inside `call_context()` inherit it, so
no layer has to pass it along. Formatting and handlers are in observability/logging.py.

Every `event()` is also published on the process-wide bus (core.bus) as a `Noted`, whatever
the log level: the level decides what is printed, nothing else (the store's events table
listens on the bus, not to logging).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from callbridge.core.bus import default_bus
from callbridge.core.call_events import Noted

_call_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)


@contextlib.contextmanager
def call_context(call_id: str) -> Iterator[None]:
    token = _call_id.set(call_id)
    try:
        yield
    finally:
        _call_id.reset(token)


def current_call_id() -> str | None:
    return _call_id.get()


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a named event with structured fields (they become JSON keys) and publish it."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields}, stacklevel=2)
    _publish(logger, msg, level, fields)


def event_fields(
    logger: logging.Logger, msg: str, fields: Mapping[str, Any], level: int = logging.INFO
) -> None:
    """`event` for fields built at run time (e.g. a call's correlation ids or statistics)."""
    copied = dict(fields)
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": copied}, stacklevel=2)
    _publish(logger, msg, level, copied)


def _publish(logger: logging.Logger, msg: str, level: int, fields: dict[str, Any]) -> None:
    # An explicit call_id field wins: events logged outside the call's context (a worker
    # pool's callback) name their call.
    named = fields.get("call_id")
    call_id = str(named) if named else current_call_id()
    default_bus().publish(Noted(msg, fields, call_id, logger.name, level))
