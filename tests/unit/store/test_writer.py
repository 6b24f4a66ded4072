"""The database's write queue (store/writer.py) on SQLite: batching (many calls' writes in one
transaction), order, reads that see the writes queued before them, retry of a failing
database (a full disk) without losing a record, the high/low-water marks that saturate the
store, shedding past the hard limit, and close with its deadline.

The slow database is a `GatedDb`: the writer thread waits in it, one transaction per permit,
so every step is a hand-off between threads, never a sleep."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.ports import LegInfo
from callbridge.store.db import EventRow, SqliteCallDb, TurnRow
from callbridge.store.schema import DbCursor
from callbridge.store.service import CallSession, Store, StoreConfig
from callbridge.store.writer import WriterLimits
from tests.unit.store.test_db import call

FAST = WriterLimits(batch_s=0.0, retry_s=0.001, retry_max_s=0.01)
INFO = LegInfo("sip", "inbound", "agent", "sip:alice@example.com")


class GatedDb(SqliteCallDb):
    """A database as slow as the test says: each transaction (and read) of the writer thread
    first reports `entered`, then waits for a permit."""

    def __init__(self, path: Path, limits: WriterLimits) -> None:
        self.gated = False
        self.entered = threading.Semaphore(0)
        self.permits = threading.Semaphore(0)
        super().__init__(path, limits=limits)

    def _connection(self) -> sqlite3.Connection:
        if self.gated:
            self.entered.release()
            assert self.permits.acquire(timeout=10), "the test never let the writer go on"
        return super()._connection()

    def close_gate(self) -> None:
        self.gated = True

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=10), "the writer never came"

    def step(self) -> None:
        """Let the waiting transaction run; return once the writer is at the next one (so
        the one let go is committed and counted)."""
        self.permits.release()
        self.wait_entered()

    def open_gate(self) -> None:
        self.gated = False
        self.permits.release(1000)


def trace(db: SqliteCallDb) -> list[str]:
    """Every statement the writer thread runs from now on (bound values expanded)."""
    statements: list[str] = []
    db._submit(lambda: db._connection().set_trace_callback(statements.append)).result()
    return statements


def run_on_writer(db: SqliteCallDb, sql: str) -> None:
    """A statement on the writer's connection, even while it backs off (out of turn)."""
    db._submit(lambda: db._connection().execute(sql)).result()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[SqliteCallDb]:
    d = SqliteCallDb(tmp_path / "callbridge.db", limits=FAST)
    yield d
    d.close()


def store(tmp_path: Path, db: SqliteCallDb, limits: WriterLimits = FAST) -> Store:
    config = StoreConfig(tmp_path, recording=False, transcripts=False, events=False,
                         fsync=False, writer=limits)  # fmt: skip
    return Store(config, db, clock=FakeClock())


def saturated(st: Store) -> bool:
    """(A call, not an attribute: the state changes behind the test's back.)"""
    return st.saturated


# ---- batching and order -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "most"),
    [
        (WriterLimits(), 3),  # now: the queue's writes share transactions
        (WriterLimits(batch_s=0.0, max_batch=1), 600),  # before: one per write
    ],
)
async def test_300_call_setups_cost_a_few_commits_not_hundreds(
    tmp_path: Path, limits: WriterLimits, most: int
) -> None:
    db = SqliteCallDb(tmp_path / "callbridge.db", limits=limits)
    statements = trace(db)
    st = store(tmp_path, db, limits)
    sessions = [st.begin(call_id=f"call-{n}", info=INFO, agent="echo", t0=0.0) for n in range(300)]
    for s in sessions:
        await s.finish("remote_bye", 1.0)
    await db.flush()
    commits = sum(1 for s in statements if s == "COMMIT")
    assert commits == db.commits
    assert 1 <= commits <= most if most < 600 else commits == 600
    rows = await db.list_calls(limit=1000)
    assert len(rows) == 300 and all(r.end_reason == "remote_bye" for r in rows)
    await st.aclose()


async def test_a_calls_writes_keep_their_order_across_batches(tmp_path: Path) -> None:
    db = SqliteCallDb(tmp_path / "callbridge.db", limits=WriterLimits(batch_s=0.0, max_batch=7))
    statements = trace(db)
    for n in range(40):
        db.insert_call(call(n, 100.0 + n))
    for n in range(40):
        db.save_turn(TurnRow(f"call-{n}", 1, 101.0, "hi", "first", False))
        db.add_event(EventRow(f"call-{n}", 1, 101.0, "call.dtmf", {"digit": "1"}))
    for n in range(40):
        db.save_turn(TurnRow(f"call-{n}", 1, 102.0, "hi", "second", True))  # a late cut
        db.end_call(f"call-{n}", ended=103.0, end_reason="remote_bye", recording_path=None,
                    transcript_path=None)  # fmt: skip
    await db.flush()
    assert db.commits >= 40 * 5 // 7  # many batches ...
    kinds: dict[str, list[str]] = {}
    for s in statements:
        found = re.search(r"'(call-\d+)'", s)
        what = re.match(r"(INSERT) INTO (\w+)|(UPDATE) (\w+)", s)
        if found and what:
            verb, table = what.group(1) or what.group(3), what.group(2) or what.group(4)
            kinds.setdefault(found.group(1), []).append(f"{verb} {table}")
    for n in range(40):  # ... and each call's writes in the order they were made
        assert kinds[f"call-{n}"] == [
            "INSERT calls", "INSERT turns", "INSERT events", "INSERT turns", "UPDATE calls",
        ]  # fmt: skip
        assert [t.agent_text for t in await db.turns(f"call-{n}")] == ["second"]
    await db.aclose()


async def test_a_read_sees_the_writes_queued_before_it_without_waiting_for_the_batch(
    tmp_path: Path,
) -> None:
    db = SqliteCallDb(tmp_path / "callbridge.db", limits=WriterLimits(batch_s=30.0))
    t0 = time.monotonic()
    db.insert_call(call(1, 100.0))
    row = await db.get_call("call-1")  # cuts the 30 s wait for company short
    assert row is not None and time.monotonic() - t0 < 5
    await db.aclose()


async def test_a_refused_statement_is_left_out_and_the_rest_of_its_batch_is_committed(
    lite: SqliteCallDb, caplog: pytest.LogCaptureFixture
) -> None:
    db = SqliteCallDb(lite.path, limits=WriterLimits(batch_s=30.0))
    db.insert_call(call(1, 100.0))
    db.insert_call(call(1, 100.0))  # the same id: the database refuses it
    db.insert_call(call(2, 100.0))
    await db.flush()
    assert db.commits == 1
    assert [c.id for c in await db.list_calls()] == ["call-1", "call-2"]
    failed = [r for r in caplog.records if r.msg == "store.write_failed"]
    assert [r.fields["call_ids"] for r in failed] == [["call-1"]]  # type: ignore[attr-defined]
    await db.aclose()


# ---- a failing database ---------------------------------------------------------------------


async def test_a_full_disk_is_retried_with_backoff_and_nothing_is_lost(
    lite: SqliteCallDb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callbridge.store.db")
    lite.insert_call(call(0, 100.0))
    await lite.flush()
    pages = lite._submit(lambda: lite._connection().execute("PRAGMA page_count").fetchone()[0])
    run_on_writer(lite, f"PRAGMA max_page_count = {pages.result()}")  # the disk is full
    for n in range(1, 51):
        lite.insert_call(call(n, 100.0 + n, recording_path="x" * 2000))
    retried = threading.Event()
    handler = _On("store.write_retry", 5, retried)
    logging.getLogger("callbridge.store.db").addHandler(handler)
    try:
        assert await asyncio.to_thread(retried.wait, 10)
        assert lite.backlog == 50  # all still queued ...
        assert [c.id for c in await lite.list_calls()] == ["call-0"]  # ... reads go on meanwhile
        run_on_writer(lite, "PRAGMA max_page_count = 1000000")  # space again
        await lite.flush()
    finally:
        logging.getLogger("callbridge.store.db").removeHandler(handler)
    assert len(await lite.list_calls(limit=100)) == 51 and lite.backlog == 0
    retries = [r for r in caplog.records if r.msg == "store.write_retry"]
    assert "full" in retries[0].fields["error"]  # type: ignore[attr-defined]
    assert retries[0].levelno == logging.ERROR and retries[1].levelno == logging.WARNING
    delays = [r.fields["retry_in_s"] for r in retries]  # type: ignore[attr-defined]
    assert delays[:5] == [0.001, 0.002, 0.004, 0.008, 0.01] and max(delays) == 0.01
    assert "store.db_recovered" in [r.msg for r in caplog.records]


class _On(logging.Handler):
    def __init__(self, msg: str, count: int, ready: threading.Event) -> None:
        super().__init__()
        self.msg, self.count, self.ready = msg, count, ready

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == self.msg:
            self.count -= 1
            if self.count <= 0:
                self.ready.set()


class FlakyConnection:
    """A connection that fails statements at random, as a busy or flapping database does
    (SQLITE_BUSY: transient)."""

    def __init__(self, conn: sqlite3.Connection, rng: random.Random) -> None:
        self.conn, self.rng = conn, rng

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> DbCursor:
        if sql != "ROLLBACK" and self.rng.random() < 0.05:
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = 5
            raise exc
        return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()


class FlakyDb(SqliteCallDb):
    flaky = False
    rng = random.Random(12)

    def _connection(self) -> sqlite3.Connection:
        conn = super()._connection()
        return FlakyConnection(conn, self.rng) if self.flaky else conn  # type: ignore[return-value]


async def test_every_begun_call_is_in_the_database_at_the_end_on_a_flaky_database(
    tmp_path: Path,
) -> None:
    db = FlakyDb(tmp_path / "callbridge.db", limits=WriterLimits(batch_s=0.0, max_batch=16,
                                                                  retry_s=0.0005, retry_max_s=0.002))  # fmt: skip
    db.flaky = True
    st = store(tmp_path, db)
    rng = random.Random(3)
    live: dict[str, CallSession] = {}
    for n in range(300):
        if live and rng.random() < 0.4:
            s = live.pop(rng.choice(sorted(live)))
            s.turn(1, "hello", f"answer {s.call_id}", False, voice_to_voice_ms=700)
            await s.finish("remote_bye", 2.0)
        else:
            live[f"call-{n}"] = st.begin(call_id=f"call-{n}", info=INFO, agent="voice", t0=0.0)
    for s in live.values():
        await s.finish("remote_bye", 2.0)
    await db.flush()
    db.flaky = False
    rows = await db.list_calls(limit=1000)
    begun = [n for n in range(300) if f"call-{n}" in {r.id for r in rows}]
    assert len(rows) == len(begun) and all(r.end_reason == "remote_bye" for r in rows)
    for r in rows[:50]:
        turns = await db.turns(r.id)
        assert [t.agent_text for t in turns] in ([], [f"answer {r.id}"])
    await st.aclose()


# ---- back-pressure -------------------------------------------------------------------------


async def test_the_store_saturates_at_the_high_water_mark_until_the_low_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callbridge.store.db")
    db = GatedDb(tmp_path / "callbridge.db", WriterLimits(batch_s=0.0, max_batch=4, high=20, low=5))
    st = store(tmp_path, db)
    db.close_gate()
    for n in range(19):
        st.begin(call_id=f"call-{n}", info=INFO, agent="echo", t0=0.0)
    db.wait_entered()  # the writer holds the first batch, uncommitted: still counted
    assert db.backlog == 19 and not saturated(st)
    st.begin(call_id="call-19", info=INFO, agent="echo", t0=0.0)
    assert saturated(st)
    db.step()  # 4 committed: 16 left
    db.step()  # 12
    assert db.backlog == 12 and saturated(st)  # below high, above low: still refusing
    db.step()  # 8
    db.step()  # 4
    assert db.backlog == 4 and not saturated(st)
    names = [r.msg for r in caplog.records if r.msg in ("store.saturated", "store.drained")]
    assert names == ["store.saturated", "store.drained"]
    db.open_gate()
    await db.flush()
    assert len(await db.list_calls()) == 20
    await st.aclose()


async def test_past_the_hard_limit_only_events_are_shed_never_a_calls_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = WriterLimits(batch_s=0.0, max_batch=100, high=10, low=2, max_queued=30)
    db = GatedDb(tmp_path / "callbridge.db", limits)
    db.close_gate()
    for n in range(30):
        db.insert_call(call(n, 100.0 + n))
    for n in range(10):
        db.add_event(EventRow(f"call-{n}", 1, 101.0, "call.dtmf", {"digit": "1"}))
        db.touch_calls([f"call-{n}"], 102.0)
    for n in range(30, 35):
        db.insert_call(call(n, 100.0 + n))  # past the limit too: queued all the same
    assert db.backlog == 35
    db.wait_entered()
    db.open_gate()
    await db.flush()
    assert len(await db.list_calls(limit=100)) == 35
    for n in range(10):
        assert await db.events(f"call-{n}") == []
    shed = [r for r in caplog.records if r.msg.startswith("store.writes_shed")]
    assert [r.msg for r in shed] == ["store.writes_shed", "store.writes_shed_total"]
    assert shed[1].fields["shed"] == 20  # type: ignore[attr-defined]
    await db.aclose()


# ---- shutdown ---------------------------------------------------------------------------------


async def test_close_writes_everything_queued(tmp_path: Path) -> None:
    db = SqliteCallDb(tmp_path / "callbridge.db", limits=WriterLimits(batch_s=30.0))
    st = store(tmp_path, db)
    for n in range(100):
        st.begin(call_id=f"call-{n}", info=INFO, agent="echo", t0=0.0)
    await st.aclose()  # finishes the live calls as "shutdown", writes, closes
    assert db.unsaved == []
    again = SqliteCallDb(tmp_path / "callbridge.db")
    rows = await again.list_calls(limit=1000)
    assert len(rows) == 100 and {r.end_reason for r in rows} == {"shutdown"}
    await again.aclose()


class DownDb(SqliteCallDb):
    """A database server that is away: every attempt fails with a transient error."""

    down = False

    def _connection(self) -> sqlite3.Connection:
        if self.down:
            exc = sqlite3.OperationalError("unable to open database file")
            exc.sqlite_errorcode = 14
            raise exc
        return super()._connection()


async def test_a_database_still_failing_at_shutdown_is_given_up_at_the_deadline_naming_the_calls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lite = DownDb(tmp_path / "callbridge.db", limits=FAST)
    st = store(tmp_path, lite)
    lite.down = True
    for n in range(3):
        st.begin(call_id=f"call-{n}", info=INFO, agent="echo", t0=0.0)
    t0 = time.monotonic()
    await st.aclose(deadline_s=0.2)
    assert time.monotonic() - t0 < 3
    unsaved = [r for r in caplog.records if r.msg == "store.unsaved"]
    assert len(unsaved) == 1 and unsaved[0].levelno == logging.ERROR
    ids = unsaved[0].fields["call_ids"]  # type: ignore[attr-defined]
    assert ids == ["call-0", "call-1", "call-2"] and lite.unsaved == ids


async def test_a_database_stuck_in_a_statement_at_shutdown_is_left_at_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = GatedDb(tmp_path / "callbridge.db", WriterLimits(batch_s=0.0))
    db.close_gate()
    db.insert_call(call(1, 100.0))
    db.wait_entered()
    db.insert_call(call(2, 100.0))
    t0 = time.monotonic()
    await db.aclose(deadline_s=0.1)
    assert time.monotonic() - t0 < 3
    assert db.unsaved == ["call-1", "call-2"]
    assert "store.unsaved" in [r.msg for r in caplog.records]
    db.insert_call(call(3, 100.0))  # after close: logged, never raised
    assert [r.msg for r in caplog.records][-1] == "store.write_dropped"
    db.open_gate()  # let the abandoned thread go
