"""The call database on PostgreSQL (`store.url = "postgresql://user:password@host:port/db"`).

The same `WorkerCallDb` as SQLite (one worker thread owning the connection, the same
statements and migrations) over psycopg 3 in autocommit mode: each write is its own
statement, each migration its own explicit transaction (PostgreSQL's DDL is transactional).

Writes are committed in batches, each batch one explicit transaction (writer.py). A lost
connection fails the batch that found it: the batch stays queued and is retried with
backoff (an `OperationalError` is the server's state: down, restarting, disk full), the
next attempt reconnects, at most every `_RETRY_S` while the server stays away, so reads
meanwhile fail fast. The password never reaches a log line, an error message or a repr.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from callbridge.core.errors import ConfigError
from callbridge.core.log import event
from callbridge.store.db import MIGRATIONS, Migration, WorkerCallDb
from callbridge.store.schema import POSTGRES_LOCK
from callbridge.store.writer import WriterLimits

__all__ = ["PostgresCallDb"]

log = logging.getLogger("callbridge.store.db")  # with the write failures it explains

_CONNECT_TIMEOUT_S = 5  # libpq waits forever by default: the worker queue would stall behind it
_RETRY_S = 2.0

Connection = psycopg.Connection[TupleRow]


class PostgresCallDb(WorkerCallDb[Connection]):
    """`CallDb` on a PostgreSQL database. Raises ConfigError("store.url", ...) when it cannot
    be opened at construction."""

    param = "%s"
    errors = (psycopg.Error,)
    migration_lock = POSTGRES_LOCK  # several workers may start at once on a new database

    def __init__(
        self,
        url: str,
        migrations: Sequence[Migration] = MIGRATIONS,
        limits: WriterLimits | None = None,
    ) -> None:
        self._secrets = _secrets(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:  # libpq may quote the piece it chokes on: the password
            raise ConfigError("store.url", self._error_text(exc)) from None
        self._params: dict[str, Any] = {
            "connect_timeout": _CONNECT_TIMEOUT_S,
            "application_name": "callbridge",
            **params,
        }
        self.location = _location(params)
        self._retry_at = 0.0
        try:
            super().__init__(migrations, limits)
        except psycopg.Error as exc:
            raise ConfigError(
                "store.url", f"cannot open {self.location}: {self._error_text(exc)}"
            ) from None

    def __repr__(self) -> str:
        return f"<PostgresCallDb {self.location}>"

    def _connect(self) -> Connection:
        return psycopg.connect(autocommit=True, **self._params)

    def _connection(self) -> Connection:
        conn = super()._connection()
        if not conn.closed:
            return conn
        if time.monotonic() < self._retry_at:
            raise psycopg.OperationalError("no connection (the last reconnect failed)")
        try:
            self._conn = self._connect()
        except psycopg.Error:
            self._retry_at = time.monotonic() + _RETRY_S
            raise
        event(log, "store.reconnected", db=self.location)
        return self._conn

    def _transient(self, exc: BaseException) -> bool:
        # Connection lost or refused, server shutting down, disk full, a deadlock or
        # serialization failure: all OperationalError. A refused statement (a duplicate
        # key, bad data) is an IntegrityError/DataError/ProgrammingError: not retried.
        return isinstance(exc, psycopg.OperationalError)

    def _error_text(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())  # libpq's messages span lines
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _secrets(url: str) -> list[str]:
    """The password of a URL, as written and decoded (in its userinfo or `?password=`)."""
    try:
        parts = urllib.parse.urlsplit(url)
        found = [parts.password or ""]
        found += urllib.parse.parse_qs(parts.query).get("password", [])
        raw_query = (p.partition("=") for p in parts.query.split("&"))
        found += [v for k, _, v in raw_query if k == "password"]
    except ValueError:
        return []
    found += [urllib.parse.unquote(s) for s in found]
    # Longest first: a password that contains another is replaced whole.
    return sorted({s for s in found if s}, key=len, reverse=True)


def _location(params: dict[str, Any]) -> str:
    """`postgresql://user@host:port/db` as libpq will connect: the URL's parts, else libpq's
    defaults (which the PG* environment variables set)."""
    defaults = {o.keyword.decode(): o.val.decode() for o in pq.Conninfo.get_defaults() if o.val}

    def get(key: str, fallback: str) -> str:
        return str(params.get(key) or defaults.get(key) or fallback)

    user = get("user", "")
    host = get("host", "local socket")
    return f"postgresql://{user}@{host}:{get('port', '5432')}/{get('dbname', user)}"
