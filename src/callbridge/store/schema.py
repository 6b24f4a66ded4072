"""The call database's schema: versioned migrations, the same on SQLite and PostgreSQL.

Each migration runs once, in its own transaction, and is recorded in `schema_version`; a
database migrated by a newer callbridge is refused. Several gateways may start at once on
one new database (`--workers N` on PostgreSQL): each transaction first takes the backend's
lock (`lock`: PostgreSQL's advisory lock; SQLite's `BEGIN IMMEDIATE`) and reads the version
again, so each migration runs once whoever gets there first. The SQL is portable (TEXT, INTEGER,
DOUBLE PRECISION, BOOLEAN; composite keys instead of autoincrement), written with `?`
placeholders that a driver with another style (psycopg: `%s`) rewrites.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from callbridge.core.errors import StoreError
from callbridge.core.log import event

__all__ = [
    "MIGRATIONS",
    "POSTGRES_LOCK",
    "SQLITE_LOCK",
    "DbConnection",
    "DbCursor",
    "Migration",
    "MigrationLock",
    "SchemaTooNew",
    "migrate",
    "placeholders",
    "schema_version",
]

log = logging.getLogger("callbridge.store.db")  # with the rest of the database's lines

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "calls, events, turns",
        (
            """CREATE TABLE calls (
                id TEXT NOT NULL PRIMARY KEY,
                transport TEXT NOT NULL,
                direction TEXT NOT NULL,
                from_uri TEXT NOT NULL,
                to_uri TEXT NOT NULL,
                agent TEXT NOT NULL,
                started DOUBLE PRECISION NOT NULL,
                answered DOUBLE PRECISION,
                ended DOUBLE PRECISION,
                end_reason TEXT,
                recording_path TEXT,
                transcript_path TEXT,
                ids TEXT NOT NULL
            )""",
            "CREATE INDEX calls_by_start ON calls (started)",
            """CREATE TABLE events (
                call_id TEXT NOT NULL REFERENCES calls (id),
                seq INTEGER NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                name TEXT NOT NULL,
                data TEXT NOT NULL,
                PRIMARY KEY (call_id, seq)
            )""",
            """CREATE TABLE turns (
                call_id TEXT NOT NULL REFERENCES calls (id),
                utterance INTEGER NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                user_text TEXT NOT NULL,
                agent_text TEXT NOT NULL,
                interrupted BOOLEAN NOT NULL,
                voice_to_voice_ms INTEGER,
                stt_ms INTEGER,
                brain_ms INTEGER,
                tts_ms INTEGER,
                PRIMARY KEY (call_id, utterance)
            )""",
        ),
    ),
    # Several gateways may share one (PostgreSQL) database: each start-up may only close the
    # calls its own previous run left live. Rows from before have '' and are closed by anyone.
    Migration(
        2,
        "calls.gateway",
        ("ALTER TABLE calls ADD COLUMN gateway TEXT NOT NULL DEFAULT ''",),
    ),
    # A live call's latest sign of life (the store stamps every live call every few
    # seconds): a call left live by a killed process ends then, not at the restart. Rows
    # from before have NULL (their start is the last thing known of them).
    Migration(
        3,
        "calls.last_activity",
        ("ALTER TABLE calls ADD COLUMN last_activity DOUBLE PRECISION",),
    ),
)


class SchemaTooNew(StoreError, RuntimeError):
    """The database was migrated by a newer callbridge: refuse rather than corrupt it."""


class DbCursor(Protocol):
    def fetchone(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class DbConnection(Protocol):
    """What the store uses of a DB-API connection (sqlite3's and psycopg's both fit)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> DbCursor: ...

    def close(self) -> None: ...


def placeholders(sql: str, param: str) -> str:
    # The statements hold no "?" other than placeholders (no string literals with one).
    return sql if param == "?" else sql.replace("?", param)


def schema_version(conn: DbConnection) -> int:
    """0 for an empty database."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, name TEXT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


@dataclass(frozen=True, slots=True)
class MigrationLock:
    """How a backend keeps two processes from migrating at once: the statement that opens a
    migration's transaction, and one run first inside it (a lock held until its end)."""

    begin: str = "BEGIN"
    lock: str = ""


# A constant key of this application's advisory lock ("cbmg").
POSTGRES_LOCK = MigrationLock("BEGIN", "SELECT pg_advisory_xact_lock(1667394919)")
SQLITE_LOCK = MigrationLock("BEGIN IMMEDIATE")  # the write lock from the start


def migrate(
    conn: DbConnection,
    migrations: Sequence[Migration] = MIGRATIONS,
    *,
    param: str = "?",
    lock: MigrationLock = MigrationLock(),
) -> int:
    """Apply, in order and each in its own transaction, the migrations newer than the
    database. Returns the resulting version. `conn` must be in autocommit mode (sqlite3:
    isolation_level=None, psycopg: autocommit=True) so that the explicit transactions hold
    the DDL too. `param` is the driver's placeholder ("?" or "%s")."""
    latest = max((m.version for m in migrations), default=0)
    record = placeholders("INSERT INTO schema_version (version, name) VALUES (?, ?)", param)
    current = _locked(conn, lock, lambda: schema_version(conn))
    if current > latest:
        raise SchemaTooNew(f"database schema v{current} is newer than this callbridge (v{latest})")
    for m in sorted(migrations, key=lambda m: m.version):
        if m.version <= current:
            continue

        def apply(m: Migration = m) -> bool:
            # Another process may have run it since we looked: read again, under the lock.
            if schema_version(conn) >= m.version:
                return False
            for statement in m.statements:
                conn.execute(statement)
            conn.execute(record, (m.version, m.name))
            return True

        if _locked(conn, lock, apply):
            event(log, "store.migrated", version=m.version, name=m.name)
        current = m.version
    return current


def _locked(conn: DbConnection, lock: MigrationLock, body: Callable[[], T]) -> T:
    """`body` in one transaction holding the migration lock."""
    conn.execute(lock.begin)
    try:
        if lock.lock:
            conn.execute(lock.lock)
        result = body()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
