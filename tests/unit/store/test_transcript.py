"""Transcript JSON: entries and their times, corrections (a late cut, a retracted pause),
DTMF, completion, and atomic rewrites (a reader never sees a partial file)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callbridge.store.transcript import Transcript

T0 = 500.0  # the call's start on the agent's clock


@pytest.fixture
def io() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    yield pool
    pool.shutdown(wait=True)


def transcript(tmp_path: Path, io: concurrent.futures.Executor) -> Transcript:
    return Transcript(
        tmp_path / "call-1.json", call_id="call-1", t0=T0, started=1_700_000_000.0, io=io
    )


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


async def test_the_file_exists_from_the_start_and_is_not_complete(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    tr = transcript(tmp_path, io)
    await tr.drain()
    doc = load(tr.path)
    assert doc == {
        "call_id": "call-1", "started": 1_700_000_000.0, "ended": None, "end_reason": None,
        "complete": False, "entries": [],
    }  # fmt: skip


async def test_turns_are_written_as_they_happen_with_times_from_the_call_start(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    tr = transcript(tmp_path, io)
    tr.agent_said(1, "Hello, how can I help?", T0 + 0.3, T0 + 1.7, False)
    tr.caller_said("what time is it", T0 + 2.0, T0 + 3.25)
    await tr.drain()
    assert load(tr.path)["entries"] == [
        {"kind": "speech", "role": "agent", "text": "Hello, how can I help?", "start": 0.3,
         "end": 1.7, "interrupted": False, "utterance": 1},
        {"kind": "speech", "role": "caller", "text": "what time is it", "start": 2.0,
         "end": 3.25, "interrupted": False},
    ]  # fmt: skip
    tr.dtmf("5", T0 + 4.0)
    tr.agent_said(2, "It is", T0 + 3.9, T0 + 4.4, True)
    await tr.drain()
    entries = load(tr.path)["entries"]
    assert [(e["role"], e["kind"], e["text"]) for e in entries] == [
        ("agent", "speech", "Hello, how can I help?"),
        ("caller", "speech", "what time is it"),
        ("agent", "speech", "It is"),  # ordered by start, not by report
        ("caller", "dtmf", "5"),
    ]
    assert entries[2]["interrupted"] is True
    assert entries[3]["digit"] == "5" and entries[3]["start"] == entries[3]["end"] == 4.0


async def test_a_late_cut_replaces_the_agent_entry(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    tr = transcript(tmp_path, io)
    tr.agent_said(3, "one two three four", T0 + 1.0, T0 + 3.0, False)
    tr.agent_said(3, "one two", T0 + 1.0, T0 + 2.0, True)
    await tr.drain()
    entries = load(tr.path)["entries"]
    assert len(entries) == 1
    assert (entries[0]["text"], entries[0]["end"], entries[0]["interrupted"]) == (
        "one two",
        2.0,
        True,
    )


async def test_a_retracted_pause_is_replaced_by_the_whole_turn(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    tr = transcript(tmp_path, io)
    tr.caller_said("I would like", T0 + 1.0, T0 + 1.8)
    tr.caller_retracted()
    tr.caller_said("I would like a taxi", T0 + 1.0, T0 + 2.9)
    tr.caller_retracted()  # only the last one, once
    tr.caller_retracted()
    tr.caller_said("to the station", T0 + 3.5, T0 + 4.0)
    await tr.drain()
    assert [e["text"] for e in load(tr.path)["entries"]] == ["to the station"]


async def test_times_before_the_call_start_clamp_to_zero_and_missing_ones_stay_null(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    tr = transcript(tmp_path, io)
    tr.caller_said("hi", T0 - 0.2, T0 + 0.4)  # the pre-roll reaches before the answer
    tr.agent_said(1, "ok", None, None, True)
    await tr.drain()
    entries = load(tr.path)["entries"]
    assert entries[0]["start"] == 0.0 and entries[0]["end"] == 0.4
    assert entries[1]["start"] is None and entries[1]["end"] is None


async def test_close_marks_it_complete_with_the_end(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    tr = transcript(tmp_path, io)
    tr.caller_said("bye", T0 + 1, T0 + 2)
    await tr.close(1_700_000_012.5, "rtp_timeout")
    doc = load(tr.path)
    assert doc["complete"] is True
    assert (doc["ended"], doc["end_reason"]) == (1_700_000_012.5, "rtp_timeout")
    assert len(doc["entries"]) == 1
    await tr.close(1_700_000_099.0, "other")  # idempotent
    assert load(tr.path)["end_reason"] == "rtp_timeout"
    assert os.listdir(tmp_path) == ["call-1.json"]  # no temp file left


async def test_readers_never_see_a_partial_file(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    tr = Transcript(tmp_path / "c.json", call_id="c", t0=T0, started=0.0, io=io, fsync=False)
    await tr.drain()
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(len(load(tr.path)["entries"]))
            except ValueError as exc:
                errors.append(str(exc))

    th = threading.Thread(target=reader)
    th.start()
    try:
        for i in range(150):
            tr.caller_said("word " * 50 + str(i), T0 + i, T0 + i + 0.5)
            if i % 20 == 0:
                await tr.drain()
        await tr.close(1.0, "normal")
    finally:
        stop.set()
        th.join()
    assert not errors, errors[:3]
    assert seen and seen == sorted(seen)  # only ever growing, complete versions
    assert len(load(tr.path)["entries"]) == 150


async def test_without_write_empty_the_file_appears_with_the_first_entry_or_the_close(
    tmp_path: Path, io: concurrent.futures.Executor
) -> None:
    quiet = Transcript(tmp_path / "quiet.json", call_id="q", t0=T0, started=1.0, io=io,
                       write_empty=False)  # fmt: skip
    talking = Transcript(tmp_path / "talking.json", call_id="t", t0=T0, started=1.0, io=io,
                         write_empty=False)  # fmt: skip
    await quiet.drain()
    assert not quiet.path.exists() and not talking.path.exists()  # no write at the call's setup
    talking.caller_said("hello", T0 + 1.0, T0 + 1.5)
    await talking.drain()
    assert [e["text"] for e in load(talking.path)["entries"]] == ["hello"]
    await quiet.close(1.0 + 30.0, "remote_bye")
    assert load(quiet.path) == {
        "call_id": "q", "started": 1.0, "ended": 31.0, "end_reason": "remote_bye",
        "complete": True, "entries": [],
    }  # fmt: skip
