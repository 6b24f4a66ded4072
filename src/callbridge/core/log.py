"""Structured log events and the call id that travels with a call's tasks.

The call id lives in a ContextVar: tasks created inside `call_context()` inherit it, so
no layer has to pass it along. Formatting and handlers are in observability/logging.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from typing import Any

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
    """Log a named event with structured fields (they become JSON keys)."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields}, stacklevel=2)


def event_fields(
    logger: logging.Logger, msg: str, fields: Mapping[str, Any], level: int = logging.INFO
) -> None:
    """`event` for fields built at run time (e.g. a call's correlation ids or statistics)."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": dict(fields)}, stacklevel=2)
