"""Back-pressure from the call store to admission: while the store's write queue is past its
high-water mark, new calls are refused with UNAVAILABLE (SIP 503) and live calls go on; once
the database catches up, every record is there and calls are admitted again. A save that
takes long is waited for (logged), never given up. Fake time for the calls; the slow
database is a gated writer thread (no sleeping)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from pathlib import Path

import pytest

from callbridge.agents.echo import EchoAgent
from callbridge.calls.manager import SAVE_SLOW_S, Call, CallManager
from callbridge.calls.routing import Router
from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.frames import AudioFrame
from callbridge.core.ports import LegInfo, Rejection
from callbridge.store.service import Store, StoreConfig
from callbridge.store.writer import WriterLimits
from callbridge.testing import FakeLeg, drive
from tests.unit.store.test_writer import GatedDb, saturated

INFO = LegInfo("sip", "inbound", local_user="echo", remote_uri="sip:alice@example.com")


def frame(i: int) -> AudioFrame:
    return AudioFrame(bytes([i % 256, 1]) * 160)


def leg(clock: FakeClock, frames: int) -> FakeLeg:
    caller = FakeLeg(clock, info=LegInfo("sip", "inbound", "echo", "sip:a@h"),
                     after_script="hangup")  # fmt: skip
    caller.feed(*(frame(i) for i in range(1, frames + 1)))
    return caller


def manager(clock: FakeClock, st: Store) -> CallManager:
    return CallManager(Router({"echo": lambda: EchoAgent(delay_ms=40)}, "echo"), clock, store=st)


async def test_a_saturated_store_refuses_new_calls_and_keeps_the_live_ones(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    limits = WriterLimits(batch_s=0.0, max_batch=50, high=10, low=2)
    db = GatedDb(tmp_path / "callbridge.db", limits)
    config = StoreConfig(tmp_path, recording=False, transcripts=False, fsync=False,
                         writer=limits)  # fmt: skip
    st = Store(config, db, clock=clock)
    mgr = manager(clock, st)
    db.close_gate()  # the database stalls

    live = leg(clock, 50)
    done: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    mgr.on_end.append(done.set_result)
    mgr.admit(INFO)
    call = mgr.start_call(live)  # taken before the stall shows
    db.wait_entered()
    for n in range(12):  # other calls' records pile up behind it
        st.begin(call_id=f"call-other-{n}", info=INFO, agent="echo", t0=clock.now())
    assert saturated(st)

    with pytest.raises(Rejection) as refused:
        mgr.admit(INFO)
    assert refused.value.kind == Rejection.UNAVAILABLE  # SIP: 503

    # The live call is not disturbed: it echoes and ends by itself, its end queued.
    ended = await drive(clock, done, limit=5.0)
    assert ended is call and live.end_reason == "remote_bye"
    assert len(live.audio_sent()) >= 45
    assert call.record is not None and call.record.finished
    with pytest.raises(Rejection):
        mgr.admit(INFO)  # still behind

    db.open_gate()  # the database catches up
    await db.flush()
    assert not saturated(st)
    mgr.admit(INFO)  # admitted again
    row = await db.get_call(call.id)
    assert row is not None and row.end_reason == "remote_bye"
    assert len(await db.list_calls(limit=100)) == 13  # every record landed
    assert "call.ended" in [e.name for e in await db.events(call.id)]
    await mgr.shutdown(1.0)


async def test_a_slow_disk_delays_the_end_of_a_call_never_drops_its_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(Before, the save gave up after 10 s with "saving call ... failed".)"""
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    gate = threading.Event()
    io = concurrent.futures.ThreadPoolExecutor(1)
    io.submit(gate.wait, 30)  # the file thread is stuck behind a slow disk
    config = StoreConfig(tmp_path, recording=False, fsync=False,
                         writer=WriterLimits(batch_s=0.0))  # fmt: skip
    st = Store(config, st_db(tmp_path), io=io, clock=clock)
    mgr = manager(clock, st)
    ends: list[Call] = []
    mgr.on_end.append(ends.append)
    call = mgr.start_call(leg(clock, 5))
    assert call.task is not None
    slow = Logged("call.save_slow")
    logging.getLogger("callbridge.calls").addHandler(slow)
    try:
        await drive(clock, slow.seen, limit=SAVE_SLOW_S + 5)
        assert ends == [] and not call.task.done()  # still waiting for its files, not given up
    finally:
        logging.getLogger("callbridge.calls").removeHandler(slow)
        gate.set()
    await asyncio.wait_for(asyncio.shield(call.task), 10)
    assert ends == [call]
    doc = json.loads((tmp_path / "transcripts" / f"{call.id}.json").read_text())
    assert doc["complete"] and doc["end_reason"] == "remote_bye"
    assert not any("saving call" in r.getMessage() for r in caplog.records)
    await mgr.shutdown(1.0)
    io.shutdown()


def st_db(tmp_path: Path) -> GatedDb:
    return GatedDb(tmp_path / "callbridge.db", WriterLimits(batch_s=0.0))


class Logged(logging.Handler):
    """`seen` is done once a record named `msg` is logged (on the loop's thread)."""

    def __init__(self, msg: str) -> None:
        super().__init__()
        self.msg = msg
        self.seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == self.msg and not self.seen.done():
            self.seen.set_result(None)
