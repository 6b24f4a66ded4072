"""Log formatting: text or JSON lines, each line of a call carrying its call id (core.log);
and the printer of the bus's typed events (core.call_events) that have a log line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from callbridge.core.bus import Bus, Unsubscribe, default_bus
from callbridge.core.call_events import Noted, as_noted
from callbridge.core.log import call_context, current_call_id, event

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "call_context",
    "event",
    "print_events",
    "setup_logging",
]


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = current_call_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id:
            out["call_id"] = call_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                out.setdefault(k, v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


_LEVEL_COLOURS = {"WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}
_BOLD, _RESET = "\033[1m", "\033[0m"


class TextFormatter(logging.Formatter):
    """One line per event; with `colour` (a terminal), warnings yellow, errors red, the event
    name bold, so a person watching `callbridge serve` sees what matters."""

    def __init__(self, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        ms = int(record.msecs)
        call_id = getattr(record, "call_id", None)
        level = f"{record.levelname:<7}"
        msg = record.getMessage()
        if self.colour:
            tint = _LEVEL_COLOURS.get(record.levelname)
            level = f"{tint}{level}{_RESET}" if tint else level
            msg = f"{_BOLD}{msg}{_RESET}"
        parts = [f"{ts}.{ms:03d} {level} {record.name}"]
        if call_id:
            parts.append(f"[{call_id}]")
        parts.append(msg)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            parts.append(" ".join(f"{k}={v}" for k, v in fields.items()))
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def print_event(ev: object) -> None:
    """Log a typed event's line (e.g. TurnMeasured as `agent.turn`) on the logger that printed
    it before the bus. `Noted` events are not printed here: `event()` logs them itself."""
    if isinstance(ev, Noted):
        return
    noted = as_noted(ev)
    if noted is None:
        return
    logger = logging.getLogger(noted.logger)
    if logger.isEnabledFor(noted.level):
        logger.log(noted.level, noted.name, extra={"fields": dict(noted.fields)})


_printing: dict[Bus, Unsubscribe] = {}  # bus -> how to stop its printer


def print_events(bus: Bus | None = None) -> Unsubscribe:
    """Print the typed events published on `bus` (default: the process-wide one). Once per
    bus, however often called (setup_logging and the gateway both ask)."""
    target = bus if bus is not None else default_bus()
    if target not in _printing:
        unsubscribe = target.subscribe(None, print_event)

        def stop() -> None:
            unsubscribe()
            _printing.pop(target, None)

        _printing[target] = stop
    return _printing[target]


def setup_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    # Colour only for a person at a terminal who has not asked for none (no-color.org).
    colour = out.isatty() and not os.environ.get("NO_COLOR")
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(colour))
    handler.addFilter(_CallIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # `level` decides what is printed, nothing else: metrics, the call store and webhooks
    # listen on the bus (core.bus), which hears every event at any level.
    handler.setLevel(level)
    root.setLevel(level)
    print_events()
    # httpx logs every request at INFO ("HTTP Request: GET ..."): noise in `callbridge calls`
    # and one line per LLM/STT/TTS request in the gateway; its warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
