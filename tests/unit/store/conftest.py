"""The store's databases: a real, throwaway PostgreSQL server, started once per session from
Debian's `postgresql` package (scripts/test.sh installs it) on 127.0.0.1 (its unix socket in
a temp dir), with a fresh database per test; and `backend`/`db`, which run a test on both
SQLite and PostgreSQL."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from callbridge.store.db import MIGRATIONS, Migration, SqliteCallDb, WorkerCallDb
from callbridge.store.postgres import PostgresCallDb

PASSWORD = "pw-s3cret-9f2c"  # trust auth ignores it; the tests check it never leaks


@dataclass(frozen=True, slots=True)
class PgServer:
    host: str
    port: int
    startup_s: float

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres:{PASSWORD}@{self.host}:{self.port}/{dbname}"


def _bin_dir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "install Debian's `postgresql` package (scripts/test.sh does)",
            pytrace=False,
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    bin_dir = _bin_dir()
    base = Path(tempfile.mkdtemp(prefix="callbridge-pg-"))
    data, port = base / "data", _free_port()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("no `postgres` OS user to run the test server as", pytrace=False)
        os.chown(base, owner.pw_uid, owner.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]

    def run(*argv: str) -> None:
        done = subprocess.run(
            [*as_postgres, *argv], cwd=base, capture_output=True, text=True, timeout=120
        )
        if done.returncode:
            log = (base / "log").read_text() if (base / "log").exists() else ""
            pytest.fail(f"{argv[0]} failed:\n{done.stdout}{done.stderr}{log}", pytrace=False)

    t0 = time.monotonic()
    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
        "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip
    # Durability off: the server lives for one test session.
    options = f"-h 127.0.0.1 -p {port} -k {base} -F -c full_page_writes=off"
    try:
        run(str(bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data),
            "-l", str(base / "log"), "-o", options)  # fmt: skip
        yield PgServer("127.0.0.1", port, time.monotonic() - t0)
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate"],
            cwd=base, capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres: PgServer) -> str:
    """The URL (with a password) of a new, empty database."""
    name = f"test_{next(_databases)}"
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return postgres.url(name)


# ---- one test, both backends --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backend:
    """A database of one backend: `open` it (as callbridge does) or `query` it behind
    callbridge's back."""

    name: str
    target: str  # a SQLite file or a PostgreSQL URL

    def open(self, migrations: Sequence[Migration] = MIGRATIONS) -> WorkerCallDb[Any]:
        if self.name == "sqlite":
            return SqliteCallDb(self.target, migrations)
        return PostgresCallDb(self.target, migrations)

    def connect(self) -> Any:
        """A raw autocommit connection, as `migrate` wants it."""
        if self.name == "sqlite":
            return sqlite3.connect(self.target, isolation_level=None)
        return psycopg.connect(self.target, autocommit=True)

    @property
    def param(self) -> str:
        return "?" if self.name == "sqlite" else "%s"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return [tuple(r) for r in conn.execute(sql.replace("?", self.param), params)]
        finally:
            conn.close()

    def columns(self) -> dict[str, list[str]]:
        """Table: its columns, in order."""
        if self.name == "sqlite":
            names = [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type='table'")]
            return {n: [c[1] for c in self.query(f"PRAGMA table_info({n})")] for n in names}
        found: dict[str, list[str]] = {}
        for table, column in self.query(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ):
            found.setdefault(table, []).append(column)
        return found


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "calls.db"))
    return Backend("postgres", request.getfixturevalue("postgres_url"))


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[WorkerCallDb[Any]]:
    d = backend.open()
    yield d
    await d.aclose()
