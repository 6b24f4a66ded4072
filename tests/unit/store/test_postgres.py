"""PostgreSQL specifics (test_db.py runs the shared behaviour on it too): choosing it by
URL, a server that is not there, a connection lost during a call, and the password, which
appears in no error, log line or repr."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import psycopg
import pytest

from callbridge.core.errors import ConfigError
from callbridge.core.ports import LegInfo
from callbridge.store.db import MIGRATIONS, SqliteCallDb
from callbridge.store.postgres import PostgresCallDb
from callbridge.store.service import StoreConfig, build_store, open_db
from callbridge.store.writer import WriterLimits
from tests.unit.store.conftest import PASSWORD, PgServer
from tests.unit.store.test_db import call

FAST = WriterLimits(batch_s=0.0, retry_s=0.01, retry_max_s=0.05)


def test_the_test_server_is_there(postgres: PgServer) -> None:
    print(f"PostgreSQL test server up in {postgres.startup_s:.2f} s")
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None and int(row[0].split(".")[0]) >= 12


async def test_the_url_chooses_the_backend(postgres_url: str, tmp_path: Path) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        db = open_db(url, tmp_path)
        assert isinstance(db, PostgresCallDb) and db.version == MIGRATIONS[-1].version
        await db.aclose()
    lite = open_db("", tmp_path)
    assert isinstance(lite, SqliteCallDb) and lite.path == str(tmp_path / "callbridge.db")
    await lite.aclose()


async def test_a_store_on_postgres_records_a_call(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callbridge")
    st = build_store(StoreConfig(tmp_path, url=postgres_url, fsync=False))
    assert isinstance(st.db, PostgresCallDb)
    session = st.begin(call_id="call-p", info=LegInfo("sip", "inbound", "agent", "sip:al@h"),
                       agent="voice", t0=0.0)  # fmt: skip
    session.turn(1, "", "Hello!", False, brain_ms=12)
    session.add_event("call.dtmf", {"digit": "5"})
    await session.finish("remote_bye", 1.5)
    await st.db.flush()
    row = await st.db.get_call("call-p")
    assert row is not None and (row.from_uri, row.end_reason) == ("sip:al@h", "remote_bye")
    assert [t.agent_text for t in await st.db.turns("call-p")] == ["Hello!"]
    assert [e.name for e in await st.db.events("call-p")] == ["call.dtmf"]
    await st.aclose()
    ready = next(r for r in caplog.records if r.msg == "store.ready")
    shown = postgres_url.replace(f":{PASSWORD}", "")
    assert ready.fields["db"] == st.db.location == shown  # type: ignore[attr-defined]
    assert PASSWORD not in caplog.text and PASSWORD not in repr(st.db)


async def test_calls_left_live_by_a_crash_are_closed_at_start(
    postgres_url: str, tmp_path: Path
) -> None:
    crashed = PostgresCallDb(postgres_url)
    crashed.gateway = "gw-a"
    crashed.insert_call(call(1, 100.0))
    crashed.touch_calls(["call-1"], 130.0)  # its last heartbeat
    other = PostgresCallDb(postgres_url)
    other.gateway = "gw-b"  # another gateway on the same database, its call still live
    other.insert_call(call(2, 100.0))
    await crashed.flush()  # ... and gw-a's process dies: no end_call
    await other.flush()
    st = build_store(StoreConfig(tmp_path, url=postgres_url, fsync=False, gateway_id="gw-a"))
    await st.db.flush()
    row = await st.db.get_call("call-1")
    assert row is not None and (row.ended, row.end_reason) == (130.0, "lost")
    row = await st.db.get_call("call-2")
    assert row is not None and row.ended is None  # gw-b's: not gw-a's to close
    await st.aclose()
    await crashed.aclose()
    await other.aclose()


def test_a_server_that_is_not_there_names_the_setting_not_the_password(
    postgres: PgServer,
) -> None:
    closed_port = postgres.port + 1 if postgres.port < 65535 else postgres.port - 1
    url = postgres.url("calls").replace(f":{postgres.port}/", f":{closed_port}/")
    with pytest.raises(ConfigError) as err:
        PostgresCallDb(url)
    message = str(err.value)
    assert err.value.field == "store.url"
    assert f"postgresql://postgres@127.0.0.1:{closed_port}/calls" in message
    assert "refused" in message.lower()
    assert PASSWORD not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_url_libpq_cannot_parse_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigError, match=r"^store\.url: ") as err:
        PostgresCallDb("postgresql://u:pa%zzword@127.0.0.1/db")  # a bad %-escape
    assert "pa%zzword" not in str(err.value) and "***" in str(err.value)


class Seen(logging.Handler):
    """Sets `ready` once `count` records named `msg` were logged (from any thread)."""

    def __init__(self, msg: str, count: int) -> None:
        super().__init__()
        self.msg, self.count, self.ready = msg, count, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == self.msg:
            self.count -= 1
            if self.count <= 0:
                self.ready.set()


async def test_a_lost_connection_delays_a_write_never_loses_it_and_reconnects(
    postgres: PgServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """(Before batching, the write that found the connection gone was lost: now its batch
    is retried on a new connection.)"""
    caplog.set_level(logging.INFO, "callbridge.store.db")
    db = PostgresCallDb(postgres_url, limits=FAST)
    db.insert_call(call(1, 100.0))
    await db.flush()
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'callbridge' AND datname = %s",
            (postgres_url.rsplit("/", 1)[1],),
        )
    db.insert_call(call(2, 200.0))  # finds the connection gone: retried, never raised
    db.insert_call(call(3, 300.0))
    await db.flush()
    assert [r.msg for r in caplog.records if r.levelno >= logging.WARNING] == ["store.write_retry"]
    assert {"store.reconnected", "store.db_recovered"} <= {r.msg for r in caplog.records}
    assert [c.id for c in await db.list_calls()] == ["call-3", "call-2", "call-1"]
    await db.aclose()
    assert PASSWORD not in caplog.text


async def test_while_the_server_stays_away_writes_wait_and_reads_fail_fast(
    postgres_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Before, each write was lost while the server was away: now they stay queued and
    land when it is back.)"""
    monkeypatch.setattr("callbridge.store.postgres._RETRY_S", 0.05)
    db = PostgresCallDb(postgres_url, limits=FAST)
    assert db._conn is not None
    port = db._params.get("port")
    db._conn.close()  # as if lost ...
    db._params["port"] = 1  # ... and nothing listens where it was
    seen = Seen("store.write_retry", 3)
    logging.getLogger("callbridge.store.db").addHandler(seen)
    try:
        for n in range(5):
            db.insert_call(call(n, 100.0 + n))
        assert await asyncio.to_thread(seen.ready.wait, 10)
        with pytest.raises(psycopg.OperationalError):
            await db.list_calls()  # out of turn: a read does not wait for the outage
        assert db.backlog == 5
        db._params["port"] = port  # the server is back
        await db.flush()
    finally:
        logging.getLogger("callbridge.store.db").removeHandler(seen)
    retries = [r for r in caplog.records if r.msg == "store.write_retry"]
    assert "refused" in retries[0].fields["error"].lower()  # type: ignore[attr-defined]
    assert all(r.fields["writes"] == 5 for r in retries)  # type: ignore[attr-defined]
    assert len(await db.list_calls()) == 5 and db.backlog == 0
    await db.aclose()
