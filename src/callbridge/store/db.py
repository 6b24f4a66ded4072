"""The call database: calls, their events and their turns, behind a small interface (`CallDb`).

SQLite by default (the standard library's sqlite3), PostgreSQL in postgres.py: both are a
`WorkerCallDb`, ONE writer thread that owns the connection (writer.py): every statement runs
there in submission order, the event loop never waits on the database. Writes are
fire-and-forget (queued, committed in batches, retried while the database fails, never
raised into a call); reads are awaited and see every write queued before them. A backlog
past the high-water mark makes `saturated` true: the calls layer then refuses new calls. The SQL is portable
(TEXT, INTEGER, DOUBLE PRECISION, BOOLEAN; composite keys instead of autoincrement;
`ON CONFLICT ... DO UPDATE`), so both backends run the same statements and migrations, written
with `?` placeholders that a backend with another style (psycopg: `%s`) rewrites. The schema
and its migrations are in schema.py.

Times are wall-clock Unix seconds (DOUBLE PRECISION), JSON is stored as TEXT.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from callbridge.core.log import event
from callbridge.store.rows import CallRow, EventRow, TurnRow, UnfinishedCall
from callbridge.store.schema import (
    MIGRATIONS,
    SQLITE_LOCK,
    DbConnection,
    DbCursor,
    Migration,
    MigrationLock,
    SchemaTooNew,
    migrate,
    placeholders,
    schema_version,
)
from callbridge.store.writer import BatchWriter, Write, WriterLimits

__all__ = [
    "MIGRATIONS",
    "CallDb",
    "CallRow",
    "DbConnection",
    "EventRow",
    "Migration",
    "SchemaTooNew",
    "SqliteCallDb",
    "TurnRow",
    "UnfinishedCall",
    "WorkerCallDb",
    "WriterLimits",
    "migrate",
    "schema_version",
]

log = logging.getLogger("callbridge.store.db")

T = TypeVar("T")


class CallDb(Protocol):
    """What the calls layer and the API need from a database."""

    def insert_call(self, row: CallRow) -> None:
        """Queued; never raises."""
        ...

    def end_call(
        self,
        call_id: str,
        *,
        ended: float,
        end_reason: str,
        recording_path: str | None,
        transcript_path: str | None,
    ) -> None: ...

    def touch_calls(self, call_ids: Sequence[str], at: float) -> None:
        """The heartbeat: `at` becomes the last activity of these live calls."""
        ...

    def add_event(self, row: EventRow) -> None: ...

    def save_turn(self, row: TurnRow) -> None:
        """Insert, or replace the turn with the same (call_id, utterance) (a late cut)."""
        ...

    async def flush(self) -> None:
        """Until every write queued so far is done."""
        ...

    @property
    def saturated(self) -> bool:
        """Too many writes queued: take no new calls until it drains (live calls go on)."""
        ...

    @property
    def backlog(self) -> int:
        """Writes queued and not committed yet."""
        ...

    async def get_call(self, call_id: str) -> CallRow | None: ...

    async def live_gateway(self, call_id: str) -> str | None: ...

    async def list_calls(
        self, *, live: bool | None = None, limit: int = 100, q: str | None = None
    ) -> list[CallRow]:
        """Newest first; `live` True: not ended, False: ended, None: both. `q`: only calls
        whose from/to URI, agent or transcript text holds it (any case), among the newest
        SEARCH_WINDOW calls."""
        ...

    async def events(self, call_id: str) -> list[EventRow]: ...

    async def turns(self, call_id: str) -> list[TurnRow]: ...

    async def aclose(self, deadline_s: float = ...) -> None:
        """Write what is queued (for at most `deadline_s`; what is left is logged with its
        call ids), then close."""
        ...


# ---- the backends' shared half --------------------------------------------------------------

_CALL_COLUMNS = (
    "id, transport, direction, from_uri, to_uri, agent, started, answered, ended, end_reason, "
    "recording_path, transcript_path, ids"
)
_TURN_COLUMNS = (
    "call_id, utterance, ts, user_text, agent_text, interrupted, voice_to_voice_ms, stt_ms, "
    "brain_ms, tts_ms"
)


def _call(r: Sequence[Any]) -> CallRow:
    return CallRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], json.loads(r[12])
    )


def _turn(row: Sequence[Any]) -> TurnRow:
    return TurnRow(row[0], row[1], row[2], row[3], row[4], bool(row[5]), *row[6:10])


# A search reads at most this many of the newest calls (by the `started` index), each one's
# turns by their primary key: its cost is bounded whatever the table's size. (A substring
# search cannot use a b-tree index; a full-text index would be per backend.)
SEARCH_WINDOW = 5000
MAX_QUERY_CHARS = 100
_LIKE_ESCAPE = "!"


def like_pattern(q: str) -> str:
    """`q` as a case-folded LIKE pattern that matches it anywhere, its wildcards literal."""
    e = _LIKE_ESCAPE
    text = q.lower().replace(e, e + e).replace("%", e + "%").replace("_", e + "_")
    return f"%{text}%"


_TOUCH_BATCH = 500  # ids per heartbeat statement: within SQLite's smallest parameter limit
# What the log holds too: under extreme backlog these are shed, never a call's row or turns.
_SHEDDABLE = frozenset({"event", "heartbeat"})

C = TypeVar("C", bound=DbConnection)


class WorkerCallDb(Generic[C]):
    """A `CallDb` whose connection lives on one writer thread. Opens, and migrates, on
    construction. A backend says how to connect (`_connect`), its placeholder style, which
    errors a failed write raises and which of them are the database's state (`_transient`:
    retried) rather than the statement's (left out)."""

    param: ClassVar[str] = "?"
    migration_lock: ClassVar[MigrationLock] = MigrationLock()
    errors: ClassVar[tuple[type[Exception], ...]] = ()
    location: str  # for logs: a file, or a URL without its password
    version: int
    gateway: str = ""  # which gateway writes (store.gateway_id): its calls carry it

    def __init__(
        self, migrations: Sequence[Migration] = MIGRATIONS, limits: WriterLimits | None = None
    ) -> None:
        self._conn: C | None = None
        self._writer = BatchWriter(
            self._connection,
            self._close_conn,
            errors=self.errors,
            transient=self._transient,
            error_text=self._error_text,
            limits=limits,
        )
        try:
            self.version = self._writer.submit(lambda: self._open(migrations)).result()
        except BaseException:
            self._writer.close(0.0)
            raise

    def _connect(self) -> C:
        raise NotImplementedError

    def _open(self, migrations: Sequence[Migration]) -> int:
        conn = self._connect()
        try:
            version = migrate(conn, migrations, param=self.param, lock=self.migration_lock)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return version

    def _connection(self) -> C:
        """The open connection (on the worker thread); a backend may reconnect here."""
        assert self._conn is not None, "database closed"
        return self._conn

    def _error_text(self, exc: BaseException) -> str:
        return str(exc)

    def _transient(self, exc: BaseException) -> bool:
        """The database's state (retry the batch later), not the statement's fault."""
        return False

    # ---- plumbing -----------------------------------------------------------------------

    @property
    def saturated(self) -> bool:
        return self._writer.saturated

    @property
    def backlog(self) -> int:
        return self._writer.backlog

    @property
    def commits(self) -> int:
        """Transactions the writer committed."""
        return self._writer.commits

    def _submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        return self._writer.submit(fn)

    def _write(self, what: str, sql: str, params: Sequence[Any], call_id: str = "") -> None:
        """Queued; committed with the writes around it. Never raises."""
        sql = placeholders(sql, self.param)
        self._writer.write(Write(what, sql, params, call_id, what in _SHEDDABLE))

    async def _read(self, sql: str, params: Sequence[Any], rows: Callable[[DbCursor], T]) -> T:
        sql = placeholders(sql, self.param)
        return await asyncio.wrap_future(
            self._submit(lambda: rows(self._connection().execute(sql, params)))
        )

    # ---- writes ---------------------------------------------------------------------------

    def insert_call(self, row: CallRow) -> None:
        self._write(
            "call",
            f"INSERT INTO calls ({_CALL_COLUMNS}, gateway) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id, row.transport, row.direction, row.from_uri, row.to_uri, row.agent,
                row.started, row.answered, row.ended, row.end_reason, row.recording_path,
                row.transcript_path, json.dumps(dict(row.ids)), self.gateway,
            ),
            row.id,
        )  # fmt: skip

    def end_call(
        self,
        call_id: str,
        *,
        ended: float,
        end_reason: str,
        recording_path: str | None,
        transcript_path: str | None,
    ) -> None:
        self._write(
            "call_end",
            "UPDATE calls SET ended = ?, end_reason = ?, recording_path = ?, transcript_path = ? "
            "WHERE id = ?",
            (ended, end_reason, recording_path, transcript_path, call_id),
            call_id,
        )

    def touch_calls(self, call_ids: Sequence[str], at: float) -> None:
        """The heartbeat: one statement (per 500) stamps all the live calls, by primary key:
        its cost grows with the live calls, never with the table."""
        for i in range(0, len(call_ids), _TOUCH_BATCH):
            batch = call_ids[i : i + _TOUCH_BATCH]
            self._write(
                "heartbeat",
                f"UPDATE calls SET last_activity = ? WHERE id IN ({', '.join('?' * len(batch))})",
                (at, *batch),
            )

    def unfinished_calls(self) -> list[UnfinishedCall]:
        """The calls this gateway's previous run left live (it was killed). Other gateways'
        live calls in a shared database are theirs; rows from before gateways had names
        (gateway '') are anyone's. Blocking: for start-up, before any call. [] when the
        database cannot answer (logged): those calls then stay live, nothing else breaks."""
        sql = placeholders(
            "SELECT id, started, answered, last_activity, recording_path FROM calls "
            "WHERE ended IS NULL AND (gateway = ? OR gateway = '')",
            self.param,
        )

        def rows() -> list[UnfinishedCall]:
            cur = self._connection().execute(sql, (self.gateway,))
            return [UnfinishedCall(r[0], r[1], r[2], r[3], r[4]) for r in cur]

        try:
            return self._submit(rows).result()
        except self.errors as exc:
            event(log, "store.read_failed", logging.ERROR, what="unfinished",
                  error=self._error_text(exc))  # fmt: skip
            return []

    def end_unfinished(self, call_id: str, *, ended: float, end_reason: str = "lost") -> None:
        """Close a call of `unfinished_calls` (unless something closed it meanwhile)."""
        self._write(
            "unfinished",
            "UPDATE calls SET ended = ?, end_reason = ? WHERE id = ? AND ended IS NULL",
            (ended, end_reason, call_id),
            call_id,
        )

    def add_event(self, row: EventRow) -> None:
        self._write(
            "event",
            "INSERT INTO events (call_id, seq, ts, name, data) VALUES (?, ?, ?, ?, ?)",
            (row.call_id, row.seq, row.ts, row.name, json.dumps(row.data, default=str)),
            row.call_id,
        )

    def save_turn(self, row: TurnRow) -> None:
        self._write(
            "turn",
            f"INSERT INTO turns ({_TURN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (call_id, utterance) DO UPDATE SET ts = excluded.ts, "
            "user_text = excluded.user_text, agent_text = excluded.agent_text, "
            "interrupted = excluded.interrupted, voice_to_voice_ms = excluded.voice_to_voice_ms, "
            "stt_ms = excluded.stt_ms, brain_ms = excluded.brain_ms, tts_ms = excluded.tts_ms",
            (
                row.call_id, row.utterance, row.ts, row.user_text, row.agent_text,
                row.interrupted, row.voice_to_voice_ms, row.stt_ms, row.brain_ms, row.tts_ms,
            ),
            row.call_id,
        )  # fmt: skip

    async def flush(self) -> None:
        """Until every write queued so far is committed (while the database fails: until it
        is back, or the store closes)."""
        await asyncio.shield(asyncio.wrap_future(self._writer.barrier()))

    def flush_blocking(self) -> None:
        """`flush` for code without a loop (start-up)."""
        self._writer.barrier().result()

    # ---- reads ----------------------------------------------------------------------------

    async def get_call(self, call_id: str) -> CallRow | None:
        def one(cur: DbCursor) -> CallRow | None:
            found = cur.fetchone()
            return _call(found) if found else None

        return await self._read(f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = ?", (call_id,), one)

    async def live_gateway(self, call_id: str) -> str | None:
        """The gateway (worker) that holds `call_id` while it is live; None when the call is
        unknown or has ended. `serve --workers`: where worker 0 forwards a live-call action."""

        def first(cur: DbCursor) -> str | None:
            found = cur.fetchone()
            return str(found[0]) if found else None

        return await self._read(
            "SELECT gateway FROM calls WHERE id = ? AND ended IS NULL", (call_id,), first
        )

    async def list_calls(
        self, *, live: bool | None = None, limit: int = 100, q: str | None = None
    ) -> list[CallRow]:
        where = {None: "", True: " WHERE ended IS NULL", False: " WHERE ended IS NOT NULL"}[live]
        if not q:
            sql = f"SELECT {_CALL_COLUMNS} FROM calls{where} ORDER BY started DESC, id LIMIT ?"
            return await self._read(sql, (limit,), lambda cur: [_call(r) for r in cur])
        pattern = like_pattern(q[:MAX_QUERY_CHARS])
        like = f"LIKE ? ESCAPE '{_LIKE_ESCAPE}'"
        sql = (
            f"SELECT {_CALL_COLUMNS} FROM (SELECT {_CALL_COLUMNS} FROM calls{where} "
            "ORDER BY started DESC, id LIMIT ?) recent "
            f"WHERE LOWER(from_uri) {like} OR LOWER(to_uri) {like} OR LOWER(agent) {like} "
            "OR EXISTS (SELECT 1 FROM turns t WHERE t.call_id = recent.id "
            f"AND (LOWER(t.user_text) {like} OR LOWER(t.agent_text) {like})) "
            "ORDER BY started DESC, id LIMIT ?"
        )
        params = (SEARCH_WINDOW, *([pattern] * 5), limit)
        return await self._read(sql, params, lambda cur: [_call(r) for r in cur])

    async def events(self, call_id: str) -> list[EventRow]:
        sql = "SELECT call_id, seq, ts, name, data FROM events WHERE call_id = ? ORDER BY seq"
        return await self._read(
            sql,
            (call_id,),
            lambda cur: [EventRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in cur],
        )

    async def turns(self, call_id: str) -> list[TurnRow]:
        sql = f"SELECT {_TURN_COLUMNS} FROM turns WHERE call_id = ? ORDER BY utterance"
        return await self._read(sql, (call_id,), lambda cur: [_turn(r) for r in cur])

    # ---- lifecycle ------------------------------------------------------------------------

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self, deadline_s: float = 10.0) -> None:
        """Write what is queued (retrying a failing database until `deadline_s`; what is
        left is logged with its call ids), close the connection and the thread. Idempotent."""
        await asyncio.shield(asyncio.to_thread(self._writer.close, deadline_s))

    def close(self, deadline_s: float = 10.0) -> None:
        """`aclose` for code without a loop (blocks until the queued writes are done)."""
        self._writer.close(deadline_s)

    @property
    def unsaved(self) -> list[str]:
        """After close: the calls with writes that could not be made (logged too)."""
        return self._writer.unsaved


# Result codes (the primary, low byte) that are the database's state, not a statement's
# fault: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
_SQLITE_TRANSIENT = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_WAL_WAIT = 10.0  # seconds a starting gateway waits for another to finish switching to WAL


class SqliteCallDb(WorkerCallDb[sqlite3.Connection]):
    """`CallDb` on a SQLite file (or ":memory:")."""

    errors = (sqlite3.Error,)
    migration_lock = SQLITE_LOCK

    def __init__(
        self,
        path: Path | str,
        migrations: Sequence[Migration] = MIGRATIONS,
        limits: WriterLimits | None = None,
    ) -> None:
        self.path = self.location = str(path)
        super().__init__(migrations, limits)

    def _transient(self, exc: BaseException) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _SQLITE_TRANSIENT

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        if self.path != ":memory:":
            try:
                # A WAL lets readers (the API, a `sqlite3` shell) work while calls write.
                self._wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, retrying while another process holds the lock. Workers that start
        together on a new database race for it, and SQLite answers the losers' journal-mode
        change with "database is locked" at once, without waiting out the busy timeout."""
        deadline = time.monotonic() + _WAL_WAIT
        pause = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if not self._transient(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # this runs on the store's own writer thread, at startup
            pause = min(0.1, pause * 2)
