"""Calls a killed gateway left live, closed as "lost" at its next start-up, ending when they
really ended rather than at the restart.

Nothing ran at the moment of a `kill -9`, so the end is the latest moment the call is known
to have been alive. The evidence, each O(1) per call:

- its recording: the WAV's data size / byte rate after the call's answer is its last
  recorded instant. The recorder writes every 200 ms and the kernel keeps what a killed
  process wrote (the page cache), so this is within ~0.2 s of the kill: the most truthful,
  and free (a 44-byte read and a stat). `recover_wav` also fixes the header's sizes, which
  lag the data when the process died between a write and its size rewrite.
- its heartbeat (`calls.last_activity`): the store stamps every live call every
  `HEARTBEAT_S` in one statement, so this is within `HEARTBEAT_S` of the kill. It covers
  the calls without a usable recording (recording off, a full disk, a moved file).
- its answer, else its start: a call killed before the first of either.

Each is a moment the call was alive, so the latest is the tightest bound; never after the
restart (a clock stepped back). The restart itself is no evidence: it says only that the
process was gone, possibly for hours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callbridge.core.log import event
from callbridge.store.db import UnfinishedCall, WorkerCallDb
from callbridge.store.recording import RecoveredWav, recover_wav

__all__ = ["HEARTBEAT_S", "LostCall", "close_lost_calls", "lost_call_end"]

log = logging.getLogger("callbridge.store")

HEARTBEAT_S = 2.0  # a live call's last_activity is at most this old (one statement per beat)


@dataclass(frozen=True, slots=True)
class LostCall:
    call_id: str
    ended: float  # wall clock
    evidence: str  # what `ended` came from: "recording", "heartbeat", "answer" or "start"
    recording: RecoveredWav | None  # None: none, or not readable


def lost_call_end(
    call: UnfinishedCall, now: float, recording: RecoveredWav | None
) -> tuple[float, str]:
    """When `call` ended, and what says so (see the module's docstring)."""
    found = []  # the most precise first: it names a tie
    if recording is not None:
        # The recorder's first tick is the answer (within a tick): the calls layer only
        # sees answered legs and taps them at once.
        start = call.answered if call.answered is not None else call.started
        found.append((start + recording.seconds, "recording"))
    if call.last_activity is not None:
        found.append((call.last_activity, "heartbeat"))
    if call.answered is not None:
        found.append((call.answered, "answer"))
    found.append((call.started, "start"))
    ended, evidence = max(found, key=lambda f: f[0])
    return min(ended, max(now, call.started)), evidence


def close_lost_calls(db: WorkerCallDb[Any], now: float, end_reason: str = "lost") -> list[LostCall]:
    """Close the calls this gateway's previous run left live, each at its own end, and fix
    their recordings' headers. Blocking: for start-up, before any call; returns once the
    rows are written."""
    lost = []
    for call in db.unfinished_calls():
        recording = recover_wav(Path(call.recording_path)) if call.recording_path else None
        ended, evidence = lost_call_end(call, now, recording)
        db.end_unfinished(call.id, ended=ended, end_reason=end_reason)
        lost.append(LostCall(call.id, ended, evidence, recording))
        event(
            log,
            "store.call_lost",
            logging.WARNING,
            call_id=call.id,
            ended=round(ended, 3),
            evidence=evidence,
            recording_s=round(recording.seconds, 3) if recording is not None else None,
            recording_fixed=recording.fixed if recording is not None else None,
            before_restart_s=round(now - ended, 3),
        )
    db.flush_blocking()
    return lost
