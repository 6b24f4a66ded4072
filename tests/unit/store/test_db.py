"""The call database, on SQLite and on PostgreSQL (the `backend` and `db` fixtures of
conftest.py run each test on both): schema and migrations from an empty database, forward
migrations, refusal of a newer schema, portable SQL, writes never raising, and the queries."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from callbridge.core.errors import ConfigError
from callbridge.store.db import (
    MIGRATIONS,
    CallRow,
    EventRow,
    Migration,
    SchemaTooNew,
    TurnRow,
    UnfinishedCall,
    WorkerCallDb,
    migrate,
    schema_version,
)
from callbridge.store.service import sqlite_path
from tests.unit.store.conftest import Backend

Db = WorkerCallDb[Any]


LATEST = MIGRATIONS[-1].version


def call(n: int, started: float, **kw: object) -> CallRow:
    return CallRow(
        id=f"call-{n}", transport="sip", direction="inbound", from_uri=f"sip:alice{n}@example.com",
        to_uri="agent", agent="voice", started=started, answered=started,
        ids={"sip_call_id": f"abc{n}@host"}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_an_empty_database_gets_the_whole_schema(backend: Backend) -> None:
    d = backend.open()
    assert d.version == MIGRATIONS[-1].version == LATEST == 3
    await d.aclose()
    schema = backend.columns()
    assert schema["calls"] == [
        "id", "transport", "direction", "from_uri", "to_uri", "agent", "started", "answered",
        "ended", "end_reason", "recording_path", "transcript_path", "ids", "gateway", "last_activity",
    ]  # fmt: skip
    assert schema["events"] == ["call_id", "seq", "ts", "name", "data"]
    assert schema["turns"] == [
        "call_id", "utterance", "ts", "user_text", "agent_text", "interrupted",
        "voice_to_voice_ms", "stt_ms", "brain_ms", "tts_ms",
    ]  # fmt: skip
    assert schema["schema_version"] == ["version", "name"]


async def test_reopening_does_not_migrate_again_and_keeps_the_data(backend: Backend) -> None:
    d = backend.open()
    d.insert_call(call(1, 100.0))
    await d.aclose()
    again = backend.open()
    assert again.version == LATEST
    assert [c.id for c in await again.list_calls()] == ["call-1"]
    await again.aclose()
    assert backend.query("SELECT COUNT(*) FROM schema_version") == [(LATEST,)]


V2 = Migration(LATEST + 1, "call notes", ("ALTER TABLE calls ADD COLUMN note TEXT",))


async def test_a_newer_callbridge_migrates_forward_keeping_the_rows(backend: Backend) -> None:
    d = backend.open()
    d.insert_call(call(1, 100.0))
    await d.aclose()
    newer = backend.open([*MIGRATIONS, V2])
    assert newer.version == LATEST + 1
    assert (await newer.get_call("call-1")) == call(1, 100.0)
    await newer.aclose()
    assert "note" in backend.columns()["calls"]


def test_a_failing_migration_is_rolled_back_whole(backend: Backend) -> None:
    conn = backend.connect()
    migrate(conn, param=backend.param)
    broken = Migration(
        LATEST + 1, "broken", ("CREATE TABLE legs (id TEXT)", "ALTER TABLE nope ADD x TEXT")
    )
    with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
        migrate(conn, [*MIGRATIONS, broken], param=backend.param)
    assert schema_version(conn) == LATEST
    assert "legs" not in backend.columns()  # the statement before the failure too
    conn.close()


async def test_gateways_starting_at_once_on_a_new_database_migrate_it_once(
    backend: Backend,
) -> None:
    """`--workers N` on one new database: N processes migrate at the same moment (before the
    migration lock, the second CREATE TABLE failed and its gateway did not start)."""
    barrier = threading.Barrier(6)

    def start() -> WorkerCallDb[Any]:
        barrier.wait(10)
        return backend.open()

    opened = await asyncio.gather(*(asyncio.to_thread(start) for _ in range(6)))
    assert {d.version for d in opened} == {LATEST}
    assert sorted(v for (v,) in backend.query("SELECT version FROM schema_version")) == [
        m.version for m in MIGRATIONS
    ]
    for d in opened:
        await d.aclose()


def test_a_database_from_a_newer_callbridge_is_refused(backend: Backend) -> None:
    d = backend.open([*MIGRATIONS, V2])
    d.close()
    with pytest.raises(SchemaTooNew, match=f"v{LATEST + 1}"):
        backend.open()


def test_the_schema_sql_is_portable() -> None:
    """Nothing PostgreSQL would reject: no SQLite-only types, keywords or rowid tricks."""
    sqlite_only = re.compile(
        r"AUTOINCREMENT|INTEGER PRIMARY KEY|WITHOUT ROWID|\bBLOB\b|\bDATETIME\b|INSERT OR|"
        r"REPLACE INTO|strftime|julianday|\bPRAGMA\b",
        re.IGNORECASE,
    )
    for m in MIGRATIONS:
        for statement in m.statements:
            assert not sqlite_only.search(statement), statement
    types = {
        t.upper()
        for m in MIGRATIONS
        for s in m.statements
        for t in re.findall(r"^\s+\w+ (\w+(?: PRECISION)?)", s, re.MULTILINE)
    }
    assert types <= {"TEXT", "INTEGER", "DOUBLE PRECISION", "BOOLEAN", "KEY"}, types


async def test_calls_are_listed_newest_first_filtered_by_live(db: Db) -> None:
    for n, started in ((1, 100.0), (2, 300.0), (3, 200.0)):
        db.insert_call(call(n, started))
    db.end_call("call-3", ended=260.0, end_reason="remote_bye", recording_path="/r/3.wav",
                transcript_path="/t/3.json")  # fmt: skip
    assert [c.id for c in await db.list_calls()] == ["call-2", "call-3", "call-1"]
    assert [c.id for c in await db.list_calls(live=True)] == ["call-2", "call-1"]
    assert [c.id for c in await db.list_calls(live=False)] == ["call-3"]
    assert [c.id for c in await db.list_calls(limit=1)] == ["call-2"]
    ended = await db.get_call("call-3")
    assert ended is not None and not ended.live
    assert (ended.ended, ended.end_reason, ended.recording_path, ended.transcript_path) == (
        260.0, "remote_bye", "/r/3.wav", "/t/3.json",
    )  # fmt: skip
    assert ended.ids == {"sip_call_id": "abc3@host"}
    assert await db.get_call("call-9") is None


async def test_events_keep_their_order_and_json(db: Db) -> None:
    db.insert_call(call(1, 100.0))
    db.add_event(EventRow("call-1", 2, 101.5, "call.dtmf", {"digit": "5", "duration_ms": 100}))
    db.add_event(EventRow("call-1", 1, 100.1, "call.started", {"agent": "voice", "nested": [1, 2]}))
    db.add_event(EventRow("call-1", 3, 102.0, "odd", {"value": Path("/x")}))  # not JSON: str()
    events = await db.events("call-1")
    assert [(e.seq, e.name) for e in events] == [(1, "call.started"), (2, "call.dtmf"), (3, "odd")]
    assert events[0].data == {"agent": "voice", "nested": [1, 2]}
    assert events[2].data == {"value": "/x"}
    assert await db.events("call-2") == []


async def test_a_turn_saved_again_replaces_the_first(db: Db) -> None:
    db.insert_call(call(1, 100.0))
    db.save_turn(TurnRow("call-1", 1, 100.5, "", "Hello!", False, None, None, 310, 95))
    db.save_turn(
        TurnRow("call-1", 2, 103.0, "what time is it", "It is three", False, 820, 120, 400, 90)
    )
    db.save_turn(TurnRow("call-1", 2, 103.9, "what time is it", "It is", True, 820, 120, 400, 90))
    turns = await db.turns("call-1")
    assert turns == [
        TurnRow("call-1", 1, 100.5, "", "Hello!", False, None, None, 310, 95),
        TurnRow("call-1", 2, 103.9, "what time is it", "It is", True, 820, 120, 400, 90),
    ]
    assert turns[1].interrupted is True  # a bool, whatever the backend stores


async def test_a_failing_write_is_logged_never_raised(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "callbridge.store.db")
    db.insert_call(call(1, 100.0))
    db.insert_call(call(1, 100.0))  # same id
    await db.flush()
    assert [r.msg for r in caplog.records] == ["store.write_failed"]
    assert len(await db.list_calls()) == 1


async def test_unfinished_calls_are_listed_with_their_heartbeat_and_closed_one_by_one(
    db: Db,
) -> None:
    db.insert_call(call(1, 100.0, recording_path="/r/1.wav"))
    db.insert_call(call(2, 100.0))
    db.insert_call(call(3, 100.0, ended=150.0, end_reason="remote_bye"))
    db.touch_calls(["call-1"], 131.5)
    await db.flush()
    got = sorted(db.unfinished_calls(), key=lambda c: c.id)
    assert got == [
        UnfinishedCall("call-1", 100.0, 100.0, 131.5, "/r/1.wav"),
        UnfinishedCall("call-2", 100.0, 100.0, None, None),
    ]
    db.end_unfinished("call-1", ended=131.7, end_reason="lost")
    db.end_unfinished("call-3", ended=999.0, end_reason="lost")  # already ended: untouched
    db.flush_blocking()
    assert [(c.id, c.ended, c.end_reason) for c in await db.list_calls()] == [
        ("call-1", 131.7, "lost"), ("call-2", None, None), ("call-3", 150.0, "remote_bye"),
    ]  # fmt: skip
    assert [c.id for c in db.unfinished_calls()] == ["call-2"]


async def test_a_shared_database_lists_only_this_gateways_unfinished_calls(db: Db) -> None:
    """Gateways a and b share the database; a restarts after a crash. b's live call is b's."""
    db.gateway = "b"
    db.insert_call(call(1, 100.0))
    db.gateway = "a"
    db.insert_call(call(2, 100.0))
    db.gateway = ""
    db.insert_call(call(3, 100.0))  # written before gateways had names: anyone's to close
    db.gateway = "a"
    await db.flush()
    assert sorted(c.id for c in db.unfinished_calls()) == ["call-2", "call-3"]


async def test_the_heartbeat_is_one_statement_per_500_live_calls(
    db: Db, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(1201):
        db.insert_call(call(n, 100.0))
    statements: list[str] = []
    write = db._write

    def counted(what: str, sql: str, params: Any) -> None:
        statements.append(what)
        write(what, sql, params)

    monkeypatch.setattr(db, "_write", counted)
    db.touch_calls([f"call-{n}" for n in range(1200)], 140.0)  # all but call-1200
    await db.flush()
    assert statements == ["heartbeat"] * 3
    assert backend.query("SELECT last_activity, COUNT(*) FROM calls GROUP BY last_activity "
                         "ORDER BY last_activity") in (
        [(140.0, 1200), (None, 1)], [(None, 1), (140.0, 1200)],
    )  # fmt: skip
    db.touch_calls([], 150.0)  # no live call: no statement
    assert statements == ["heartbeat"] * 3


async def test_writes_after_close_are_dropped_quietly(backend: Backend) -> None:
    d = backend.open()
    await d.aclose()
    await d.aclose()
    d.insert_call(call(1, 1.0))  # must not raise


def test_sqlite_urls(tmp_path: Path) -> None:
    assert sqlite_path("", tmp_path) == tmp_path / "callbridge.db"
    assert sqlite_path("sqlite:///calls/x.db", tmp_path) == tmp_path / "calls/x.db"
    assert sqlite_path("sqlite:////var/lib/cb.db", tmp_path) == Path("/var/lib/cb.db")
    assert sqlite_path("sqlite:///:memory:", tmp_path) == ":memory:"
    with pytest.raises(ConfigError, match="sqlite:///FILE or postgresql://"):
        sqlite_path("mysql://x", tmp_path)
    with pytest.raises(ConfigError, match=r"got 'mysql://u:\*\*\*@h/x'") as err:
        sqlite_path("mysql://u:secret@h/x", tmp_path)
    assert "secret" not in str(err.value)


async def test_the_gateway_holding_a_live_call_is_known_until_it_ends(backend: Backend) -> None:
    """`serve --workers`: worker 0 forwards an action on another worker's live call there."""
    d = backend.open()
    d.gateway = "box/w1"
    d.insert_call(call(1, 100.0))
    await d.flush()
    assert await d.live_gateway("call-1") == "box/w1"
    assert await d.live_gateway("call-2") is None
    d.end_call("call-1", ended=130.0, end_reason="api", recording_path=None, transcript_path=None)
    await d.flush()
    assert await d.live_gateway("call-1") is None  # ended: nothing to forward
    await d.aclose()
