"""The call database: calls, their events and their turns, behind a small interface (`CallDb`).

SQLite by default (the standard library's sqlite3), PostgreSQL in postgres.py: both are a
`WorkerCallDb`, ONE worker thread that owns the connection: every statement runs there in
submission order, the event loop never waits on the database. Writes are fire-and-forget
(queued, errors logged, never raised into a call); reads are awaited. The SQL is portable
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from callbridge.core.log import event
from callbridge.store.schema import (
    MIGRATIONS,
    DbConnection,
    DbCursor,
    Migration,
    SchemaTooNew,
    migrate,
    placeholders,
    schema_version,
)

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
    "migrate",
    "schema_version",
]

log = logging.getLogger("callbridge.store.db")

T = TypeVar("T")


# ---- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRow:
    id: str
    transport: str  # "sip", "twilio"
    direction: str  # "inbound" | "outbound"
    from_uri: str
    to_uri: str
    agent: str
    started: float
    answered: float | None = None
    ended: float | None = None
    end_reason: str | None = None
    recording_path: str | None = None
    transcript_path: str | None = None
    ids: Mapping[str, str] = field(default_factory=dict)  # the leg's correlation ids

    @property
    def live(self) -> bool:
        return self.ended is None


@dataclass(frozen=True, slots=True)
class EventRow:
    call_id: str
    seq: int  # order within the call
    ts: float
    name: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TurnRow:
    """One agent utterance and the caller turn it answered ("" for a greeting)."""

    call_id: str
    utterance: int
    ts: float
    user_text: str
    agent_text: str  # what the caller heard
    interrupted: bool
    voice_to_voice_ms: int | None = None
    stt_ms: int | None = None
    brain_ms: int | None = None
    tts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class UnfinishedCall:
    """A call a previous run of this gateway left live: what is known of when it ended."""

    id: str
    started: float
    answered: float | None
    last_activity: float | None  # the latest heartbeat (None: it died before the first)
    recording_path: str | None


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

    async def get_call(self, call_id: str) -> CallRow | None: ...

    async def list_calls(
        self, *, live: bool | None = None, limit: int = 100, q: str | None = None
    ) -> list[CallRow]:
        """Newest first; `live` True: not ended, False: ended, None: both. `q`: only calls
        whose from/to URI, agent or transcript text holds it (any case), among the newest
        SEARCH_WINDOW calls."""
        ...

    async def events(self, call_id: str) -> list[EventRow]: ...

    async def turns(self, call_id: str) -> list[TurnRow]: ...

    async def aclose(self) -> None: ...


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

C = TypeVar("C", bound=DbConnection)


class WorkerCallDb(Generic[C]):
    """A `CallDb` whose connection lives on one worker thread. Opens, and migrates, on
    construction. A backend says how to connect (`_connect`), its placeholder style and
    which errors a failed write raises."""

    param: ClassVar[str] = "?"
    errors: ClassVar[tuple[type[Exception], ...]] = ()
    location: str  # for logs: a file, or a URL without its password
    version: int
    gateway: str = ""  # which gateway writes (store.gateway_id): its calls carry it

    def __init__(self, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-db")
        self._conn: C | None = None
        self._last: concurrent.futures.Future[Any] | None = None
        self._closing = False
        try:
            self.version = self._thread.submit(self._open, migrations).result()
        except BaseException:
            self._thread.shutdown(wait=True)
            raise

    def _connect(self) -> C:
        raise NotImplementedError

    def _open(self, migrations: Sequence[Migration]) -> int:
        conn = self._connect()
        try:
            version = migrate(conn, migrations, param=self.param)
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

    # ---- plumbing -----------------------------------------------------------------------

    def _submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        fut = self._thread.submit(fn)
        self._last = fut
        return fut

    def _write(self, what: str, sql: str, params: Sequence[Any]) -> None:
        sql = placeholders(sql, self.param)

        def run() -> None:
            try:
                self._connection().execute(sql, params)
            except self.errors as exc:
                error = self._error_text(exc)
                event(log, "store.write_failed", logging.ERROR, what=what, error=error)

        try:
            self._submit(run)
        except RuntimeError:  # closed (shutting down): the write is lost, the call is not
            event(log, "store.write_dropped", logging.WARNING, what=what)

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
        )

    def add_event(self, row: EventRow) -> None:
        self._write(
            "event",
            "INSERT INTO events (call_id, seq, ts, name, data) VALUES (?, ?, ?, ?, ?)",
            (row.call_id, row.seq, row.ts, row.name, json.dumps(row.data, default=str)),
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
        )  # fmt: skip

    async def flush(self) -> None:
        last = self._last
        if last is not None:
            await asyncio.shield(asyncio.wrap_future(last))

    def flush_blocking(self) -> None:
        """`flush` for code without a loop (start-up)."""
        last = self._last
        if last is not None:
            concurrent.futures.wait([last])

    # ---- reads ----------------------------------------------------------------------------

    async def get_call(self, call_id: str) -> CallRow | None:
        def one(cur: DbCursor) -> CallRow | None:
            found = cur.fetchone()
            return _call(found) if found else None

        return await self._read(f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = ?", (call_id,), one)

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

    async def aclose(self) -> None:
        """Finish the queued writes, close the connection and the thread. Idempotent."""
        if self._closing:
            return
        self._closing = True
        fut = self._thread.submit(self._close_conn)
        self._thread.shutdown(wait=False)
        await asyncio.shield(asyncio.wrap_future(fut))

    def close(self) -> None:
        """`aclose` for code without a loop (blocks until the queued writes are done)."""
        if self._closing:
            return
        self._closing = True
        self._thread.submit(self._close_conn).result()
        self._thread.shutdown(wait=True)


class SqliteCallDb(WorkerCallDb[sqlite3.Connection]):
    """`CallDb` on a SQLite file (or ":memory:")."""

    errors = (sqlite3.Error,)

    def __init__(self, path: Path | str, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = self.location = str(path)
        super().__init__(migrations)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        if self.path != ":memory:":
            try:
                # A WAL lets readers (the API, a `sqlite3` shell) work while calls write.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
        return conn
