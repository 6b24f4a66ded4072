"""Call records through the store (SQLite): the write path before issue 12 (each write its own
autocommit statement on a one-thread executor) and now (one bounded queue, one writer thread,
batched transactions), in the same run, on the same disk.

    .venv/bin/python bench/store_rate.py [--calls N] [--cps R] [--seconds S] [--dir DIR]

Each call is what the calls layer writes for a short call with recording and transcripts
off: its row at `begin`, two events (call.started, call.ended) and its end at `finish`.

- burst: N calls begun and finished as fast as the loop can; call records per second until
  the database has them all (flush), the loop's own time per call, the transactions used,
  and whether the queue crossed its high-water mark (in the gateway: new calls get 503);
- paced: R calls per second for S seconds, each ending 1 s after it began (INVITE, 1 s,
  BYE), then flushed: transactions per second and the largest backlog seen.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.ports import LegInfo
from callbridge.store.db import SqliteCallDb
from callbridge.store.service import CallSession, Store, StoreConfig

INFO = LegInfo("sip", "inbound", "echo", "sip:alice@example.com", ids={"sip_call_id": "x@h"})


class OldPath(SqliteCallDb):
    """The writes as they were: each statement submitted to a one-thread executor and run
    alone in autocommit (one transaction per write). Reads keep the new path."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.statements = 0
        self._old = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="old-db")
        self._old_conn = self._old.submit(self._connect).result()
        self._last: concurrent.futures.Future[Any] | None = None

    def _write(self, what: str, sql: str, params: Sequence[Any], call_id: str = "") -> None:
        self.statements += 1
        self._last = self._old.submit(self._old_conn.execute, sql, params)

    @property
    def transactions(self) -> int:
        return self.statements

    @property
    def backlog(self) -> int:
        return self._old._work_queue.qsize()  # the executor's queue: statements not run yet

    async def flush(self) -> None:
        if self._last is not None:
            await asyncio.wrap_future(self._last)

    async def aclose(self, deadline_s: float = 10.0) -> None:
        await self.flush()
        self._old.submit(self._old_conn.close).result()
        self._old.shutdown()
        await super().aclose(deadline_s)


class NewPath(SqliteCallDb):
    @property
    def transactions(self) -> int:
        return self.commits


@dataclass
class Result:
    path: str
    calls: int
    records_per_s: float
    loop_us_per_call: float
    transactions: int
    saturated: bool  # the burst crossed the high-water mark (admission would refuse calls)
    paced_tx_per_s: float
    paced_max_backlog: int


def open_store(kind: str, d: Path) -> tuple[Store, OldPath | NewPath]:
    db: OldPath | NewPath = OldPath(d / "calls.db") if kind == "before" else NewPath(d / "calls.db")
    config = StoreConfig(d, recording=False, transcripts=False, events=False)
    return Store(config, db, clock=FakeClock()), db


def begin(st: Store, call_id: str) -> CallSession:
    s = st.begin(call_id=call_id, info=INFO, agent="echo", t0=0.0)
    s.add_event("call.started", {"agent": "echo", "remote_uri": INFO.remote_uri})
    return s


async def end(s: CallSession) -> None:
    s.add_event("call.ended", {"reason": "remote_bye", "duration": 1.0})
    await s.finish("remote_bye", 1.0)


async def burst(kind: str, calls: int, base: Path) -> tuple[float, float, int, bool]:
    d = Path(tempfile.mkdtemp(prefix=f"burst-{kind}-", dir=base))
    st, db = open_store(kind, d)
    t0 = time.perf_counter()
    loop_s, saturated = 0.0, False
    for n in range(calls):
        a = time.perf_counter()
        s = begin(st, f"call-{n}")
        await end(s)
        loop_s += time.perf_counter() - a
        saturated = saturated or st.saturated
        if n % 100 == 99:
            await asyncio.sleep(0)  # a loop that also does other things
    await db.flush()
    elapsed = time.perf_counter() - t0
    tx = db.transactions
    await st.aclose()
    check(d, calls)
    return calls / elapsed, 1e6 * loop_s / calls, tx, saturated


async def paced(kind: str, cps: int, seconds: float, base: Path) -> tuple[float, int]:
    d = Path(tempfile.mkdtemp(prefix=f"paced-{kind}-", dir=base))
    st, db = open_store(kind, d)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tx0 = db.transactions
    live: list[tuple[float, CallSession]] = []
    n, max_backlog, step = 0, 0, 0.01
    while (now := loop.time() - start) < seconds + 1.0:
        while n < cps * min(now, seconds):
            live.append((now, begin(st, f"call-{n}")))
            n += 1
        while live and live[0][0] <= now - 1.0:
            await end(live.pop(0)[1])
        max_backlog = max(max_backlog, db.backlog)
        await asyncio.sleep(step)
    for _, s in live:
        await end(s)
    await db.flush()
    elapsed = loop.time() - start
    tx = db.transactions - tx0
    await st.aclose()
    check(d, n)
    return tx / elapsed, max_backlog


def check(d: Path, calls: int) -> None:
    """Every call is in the database, ended."""
    with sqlite3.connect(d / "calls.db") as conn:
        (found,) = conn.execute("SELECT COUNT(*) FROM calls WHERE ended IS NOT NULL").fetchone()
    assert found == calls, (found, calls)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=3000, help="calls in the burst")
    ap.add_argument("--cps", type=int, default=300, help="paced calls per second")
    ap.add_argument("--seconds", type=float, default=3.0, help="paced run length")
    ap.add_argument("--dir", type=Path, default=None, help="where the databases go (a disk)")
    args = ap.parse_args()
    # The store's own lines (store.saturated in the burst) are the table's "saturated".
    logging.getLogger("callbridge").setLevel(logging.ERROR)
    base = args.dir or Path(tempfile.mkdtemp(prefix="store-rate-"))
    base.mkdir(parents=True, exist_ok=True)
    results = []
    for kind in ("before", "now"):
        rate, loop_us, tx, sat = await burst(kind, args.calls, base)
        tx_s, backlog = await paced(kind, args.cps, args.seconds, base)
        results.append(Result(kind, args.calls, rate, loop_us, tx, sat, tx_s, backlog))
    print(f"SQLite in {base}; 4 writes per call (row, 2 events, end)")
    print(f"{'path':<8} {'calls':>6} {'records/s':>10} {'loop us/call':>13} {'transactions':>13} "
          f"{'saturated':>10} {'tx/s at ' + str(args.cps) + ' cps':>17} {'max backlog':>12}")  # fmt: skip
    for r in results:
        shown = "yes" if r.saturated else "no" if r.path == "now" else "n/a"
        print(f"{r.path:<8} {r.calls:>6} {r.records_per_s:>10.0f} {r.loop_us_per_call:>13.1f} "
              f"{r.transactions:>13} {shown:>10} {r.paced_tx_per_s:>17.1f} "
              f"{r.paced_max_backlog:>12}")  # fmt: skip
    before, now = results
    print(f"now / before: {now.records_per_s / before.records_per_s:.1f}x records/s, "
          f"{before.paced_tx_per_s / max(now.paced_tx_per_s, 1e-9):.0f}x fewer transactions")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
