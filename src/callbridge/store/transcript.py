"""A call's transcript as a JSON file, rewritten atomically (temp file + rename) on every change,
so it can be read while the call runs and a crash leaves the last complete version.

    {"call_id": "call-1-ab12cd", "started": 1718000000.123,   # wall clock (Unix seconds)
     "ended": null, "end_reason": null, "complete": false,   # set when the call ends
     "entries": [                                             # in order of `start`
       {"kind": "speech", "role": "agent", "text": "Hello!", "start": 0.31, "end": 1.2,
        "interrupted": false, "utterance": 1},
       {"kind": "speech", "role": "caller", "text": "what time is it", "start": 1.9,
        "end": 2.8, "interrupted": false},
       {"kind": "dtmf", "role": "caller", "text": "5", "digit": "5", "start": 4.1,
        "end": 4.1, "interrupted": false},
       {"kind": "message", "role": "caller", "text": "call bob back", "start": 9.4,
        "end": 9.4, "interrupted": false}]}                  # the take_message tool

`start`/`end` are seconds from the call's start (its recording's first frame, within a tick).
An interrupted agent entry holds what the caller heard, not what was meant.

The sink methods take the agent's clock (monotonic seconds) and run on the event loop; the
JSON is built there (small) and written on the io executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from callbridge.core.log import event

__all__ = ["Transcript"]

log = logging.getLogger("callbridge.store.transcript")


class Transcript:
    def __init__(
        self,
        path: Path,
        *,
        call_id: str,
        t0: float,
        started: float,
        io: concurrent.futures.Executor,
        fsync: bool = True,
        write_empty: bool = True,
    ) -> None:
        """`write_empty=False`: no file until the first entry or the close (an empty
        transcript is one more write per call setup, and tells nothing)."""
        self.path = path
        self.call_id = call_id
        self.t0 = t0  # the call's start on the agent's clock
        self.started = started  # the same moment on the wall clock
        self._io = io
        self._sync = fsync
        self._entries: list[dict[str, Any]] = []
        self._agent: dict[int, dict[str, Any]] = {}  # utterance -> its entry (updated on a cut)
        self._last_caller: dict[str, Any] | None = None
        self.ended: float | None = None
        self.end_reason: str | None = None
        self._version = 0
        self._written = 0
        self._lock = threading.Lock()  # writes of one transcript never overlap
        self._pending: concurrent.futures.Future[None] | None = None
        self._closed = False
        if write_empty:
            self._changed()  # the file exists (empty) from the start of the call

    # ---- the agent's sink ---------------------------------------------------------------

    def caller_said(self, text: str, start: float, end: float) -> None:
        entry = self._speech("caller", text, start, end, interrupted=False)
        self._last_caller = entry
        self._add(entry)

    def caller_retracted(self) -> None:
        """The last caller turn was only a pause: the words that follow replace it."""
        entry, self._last_caller = self._last_caller, None
        if entry is not None and entry in self._entries:
            self._entries.remove(entry)
            self._changed()

    def agent_said(
        self, utterance: int, text: str, start: float | None, end: float | None, interrupted: bool
    ) -> None:
        """What the caller heard of `utterance`; called again when it is cut later."""
        start = start if start is not None else end
        entry = self._speech("agent", text, start, end, interrupted=interrupted)
        entry["utterance"] = utterance
        old = self._agent.get(utterance)
        self._agent[utterance] = entry
        if old is not None and old in self._entries:
            self._entries[self._entries.index(old)] = entry
            self._changed()
        else:
            self._add(entry)

    def dtmf(self, digit: str, at: float) -> None:
        t = self._rel(at)
        self._add(
            {"kind": "dtmf", "role": "caller", "text": digit, "digit": digit, "start": t, "end": t,
             "interrupted": False}
        )  # fmt: skip

    def message(self, text: str, at: float) -> None:
        """A message the caller left with the agent (its words, as the agent took them)."""
        t = self._rel(at)
        self._add(
            {"kind": "message", "role": "caller", "text": text, "start": t, "end": t,
             "interrupted": False}
        )  # fmt: skip

    # ---- reading ------------------------------------------------------------------------

    @property
    def entries(self) -> list[dict[str, Any]]:
        return sorted(self._entries, key=lambda e: (e["start"] is None, e["start"] or 0.0))

    def document(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "started": round(self.started, 3),
            "ended": None if self.ended is None else round(self.ended, 3),
            "end_reason": self.end_reason,
            "complete": self._closed,
            "entries": self.entries,
        }

    # ---- lifecycle ----------------------------------------------------------------------

    def close_soon(self, ended: float, end_reason: str) -> concurrent.futures.Future[None] | None:
        """Mark it complete and queue its last write (synchronous: a cancelled caller cannot
        skip it); None if it was closed already."""
        if self._closed:
            return None
        self._closed = True
        self.ended, self.end_reason = ended, end_reason
        self._changed()
        return self._pending

    async def close(self, ended: float, end_reason: str) -> None:
        """`close_soon` and wait for the write. Idempotent."""
        self.close_soon(ended, end_reason)
        await self.drain()

    async def drain(self) -> None:
        pending = self._pending
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(pending))

    # ---- internals ----------------------------------------------------------------------

    def _rel(self, t: float | None) -> float | None:
        return None if t is None else round(max(0.0, t - self.t0), 3)

    def _speech(
        self, role: str, text: str, start: float | None, end: float | None, *, interrupted: bool
    ) -> dict[str, Any]:
        return {
            "kind": "speech",
            "role": role,
            "text": text,
            "start": self._rel(start),
            "end": self._rel(end),
            "interrupted": interrupted,
        }

    def _add(self, entry: dict[str, Any]) -> None:
        self._entries.append(entry)
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        text = render(self.document())
        self._pending = self._io.submit(self._write, self._version, text)

    def _write(self, version: int, text: str) -> None:
        with self._lock:
            if version <= self._written:
                return  # a newer version is on disk already
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                with tmp.open("w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    if self._sync:
                        os.fsync(f.fileno())
                os.replace(tmp, self.path)  # readers see the old or the new file, never half
            except OSError as exc:
                event(
                    log,
                    "transcript.write_failed",
                    logging.ERROR,
                    path=str(self.path),
                    error=str(exc),
                )
                return
            self._written = version


def render(document: dict[str, Any]) -> str:
    """The document as JSON with one field, and one entry, per line: readable and diffable.
    Not `json.dumps(indent=...)`: an indent selects json's pure-Python encoder, whose nested
    closures are reference cycles, left on every write for a full garbage collection (a
    pause of every call) to free."""
    fields = [
        f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
        for key, value in document.items()
        if key != "entries"
    ]
    entries = ",\n  ".join(json.dumps(e, ensure_ascii=False) for e in document["entries"])
    fields.append(f' "entries": [\n  {entries}\n ]' if entries else ' "entries": []')
    return "{\n" + ",\n".join(fields) + "\n}"
