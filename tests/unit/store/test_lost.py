"""Crash truth: the store's heartbeat (paced by a fake clock: no sleeping), and the start-up
after a crash, which closes the calls the killed process left live at their last sign of
life (the recording's end, else the heartbeat, else the answer), never at the restart, and
fixes their recordings' headers. The crashed "previous run" is a store abandoned without
finishing its calls, or a real child process killed by SIGKILL."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.frames import FRAME_SAMPLES
from callbridge.core.ports import LegInfo
from callbridge.store.db import SqliteCallDb, UnfinishedCall
from callbridge.store.lost import HEARTBEAT_S, lost_call_end
from callbridge.store.recording import TICK_BYTES, RecoveredWav, wav_header
from callbridge.store.service import CallSession, Store, StoreConfig, build_store

INFO = LegInfo("sip", "inbound", "agent", "sip:alice@example.com")


def frame(value: int) -> bytes:
    return np.full(FRAME_SAMPLES, value, dtype="<i2").tobytes()


class Wall:
    """The wall clock of a test: only moves when told."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteCallDb]:
    d = SqliteCallDb(tmp_path / "callbridge.db")
    yield d
    d.close()


def config(tmp_path: Path, **kw: Any) -> StoreConfig:
    return StoreConfig(tmp_path, fsync=False, transcripts=False, gateway_id="gw-1", **kw)


async def last_activity(db: SqliteCallDb) -> dict[str, float | None]:
    await db.flush()
    return {c.id: c.last_activity for c in db.unfinished_calls()}


# ---- the heartbeat ----------------------------------------------------------------------


async def test_the_heartbeat_stamps_all_live_calls_every_2_s_in_one_statement(
    tmp_path: Path, db: SqliteCallDb, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = Wall()
    st = Store(config(tmp_path), db, clock=clock, wall=wall)
    touched: list[tuple[list[str], float]] = []
    real = db.touch_calls

    def touch(ids: Sequence[str], at: float) -> None:
        touched.append((list(ids), at))
        real(ids, at)

    monkeypatch.setattr(db, "touch_calls", touch)
    a = st.begin(call_id="call-a", info=INFO, agent="echo", t0=clock.now())
    b = st.begin(call_id="call-b", info=INFO, agent="echo", t0=clock.now())
    assert HEARTBEAT_S == 2.0
    wall.now += 1.9
    await clock.advance(1.9)
    assert touched == []
    wall.now += 0.1
    await clock.advance(0.1)
    assert touched == [(["call-a", "call-b"], wall.now)]
    assert await last_activity(db) == {"call-a": wall.now, "call-b": wall.now}

    await a.finish("remote_bye", clock.now())
    wall.now += 2.0
    await clock.advance(2.0)
    assert touched[1:] == [(["call-b"], wall.now)]  # the live one only

    await b.finish("remote_bye", clock.now())
    await clock.advance(2.0)
    assert len(touched) == 2  # nothing live: no statement ...
    assert st._heartbeat is not None and st._heartbeat.done()  # ... and no task
    c = st.begin(call_id="call-c", info=INFO, agent="echo", t0=clock.now())  # starts again
    wall.now += 10
    await clock.advance(2.0)
    assert touched[2:] == [(["call-c"], wall.now)]
    await c.finish("remote_bye", clock.now())
    await st.aclose()


async def test_closing_the_store_stops_the_heartbeat(
    tmp_path: Path, db: SqliteCallDb, clock: FakeClock
) -> None:
    st = Store(config(tmp_path), db, clock=clock)
    st.begin(call_id="call-a", info=INFO, agent="echo", t0=clock.now())
    task = st._heartbeat
    assert task is not None
    await st.aclose()
    await asyncio.sleep(0)
    assert task.cancelled()


# ---- when a lost call ended ----------------------------------------------------------------


def unfinished(
    last_activity: float | None = None, answered: float | None = 100.0
) -> UnfinishedCall:
    return UnfinishedCall("call-1", 99.5, answered, last_activity, "/r/call-1.wav")


@pytest.mark.parametrize(
    ("call", "recording", "expected"),
    [
        (unfinished(), RecoveredWav(12.34, True), (112.34, "recording")),
        (unfinished(110.0), RecoveredWav(12.34, False), (112.34, "recording")),
        (unfinished(110.0), None, (110.0, "heartbeat")),
        (unfinished(130.0), RecoveredWav(2.0, False), (130.0, "heartbeat")),  # a failed recording
        (unfinished(), None, (100.0, "answer")),
        (unfinished(answered=None), None, (99.5, "start")),
        (unfinished(answered=None), RecoveredWav(1.5, False), (101.0, "recording")),
        (unfinished(), RecoveredWav(500.0, False), (300.0, "recording")),  # never after now
        (unfinished(400.0), None, (300.0, "heartbeat")),
    ],
)
def test_a_lost_call_ends_at_its_last_sign_of_life(
    call: UnfinishedCall, recording: RecoveredWav | None, expected: tuple[float, str]
) -> None:
    ended, evidence = lost_call_end(call, 300.0, recording)
    assert (round(ended, 6), evidence) == expected


# ---- the start-up after a crash --------------------------------------------------------------


def crash(st: Store) -> None:
    """What a kill -9 leaves: rows and files as they are, nothing finished or closed."""
    assert isinstance(st.db, SqliteCallDb)
    st.db.close()  # (the writes queued before the kill are in, as a real run's would be)
    if st._unsubscribe is not None:  # the dead process hears no more events
        st._unsubscribe()
    if st._heartbeat is not None:
        st._heartbeat.cancel()
    st.io.shutdown(wait=True)


async def record(session: CallSession, ticks: int) -> None:
    assert session.recorder is not None
    for i in range(ticks):
        session.recorder.on_tick(frame(i), frame(-i))
        await session.recorder.drain()


async def test_a_restart_closes_lost_calls_at_their_recording_heartbeat_or_answer(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callbridge.store")
    db = SqliteCallDb(tmp_path / "callbridge.db")
    db.gateway = "gw-1"
    first = Store(config(tmp_path), db, clock=clock)
    recorded = first.begin(call_id="call-rec", info=INFO, agent="echo", t0=clock.now())
    unrecorded = first.begin(call_id="call-hb", info=INFO, agent="echo", t0=clock.now())
    unrecorded.recorder = None  # as with recording off: only the heartbeat knows
    await record(recorded, 157)  # 3.14 s; the checkpoints cover 3.0 s
    first.db.touch_calls(["call-hb"], unrecorded.started + 4.0)
    silent = first.begin(call_id="call-new", info=INFO, agent="echo", t0=clock.now())
    silent.recorder = None  # killed before its first heartbeat, its recording gone
    (tmp_path / "recordings" / "call-new.wav").unlink()
    wav = tmp_path / "recordings" / "call-rec.wav"
    assert recorded.recorder is not None
    with wav.open("ab") as f:  # killed between a checkpoint's write(2) and its pwrite(2)s
        f.write(bytes(5 * TICK_BYTES))
    crash(first)
    with wave.open(str(wav)) as w:
        assert w.getnframes() == 150 * FRAME_SAMPLES  # the stale header

    second = build_store(config(tmp_path))
    rows = {c.id: c for c in await second.db.list_calls()}
    rec, hb, new = rows["call-rec"], rows["call-hb"], rows["call-new"]
    assert {r.end_reason for r in rows.values()} == {"lost"}
    assert rec.ended == pytest.approx(recorded.started + 155 * 0.02)  # what the file holds
    assert hb.ended == pytest.approx(unrecorded.started + 4.0)
    assert new.ended == silent.started
    with wave.open(str(wav)) as w:  # the header now covers the whole file
        assert w.getnframes() == 155 * FRAME_SAMPLES
    lost = {
        r.fields["call_id"]: r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.msg == "store.call_lost"
    }
    assert lost["call-rec"]["evidence"] == "recording" and lost["call-rec"]["recording_fixed"]
    assert lost["call-rec"]["recording_s"] == 3.1
    assert (lost["call-hb"]["evidence"], lost["call-new"]["evidence"]) == ("heartbeat", "answer")
    ready = next(r for r in caplog.records if r.msg == "store.ready")
    assert ready.fields["lost_calls"] == 3  # type: ignore[attr-defined]
    await second.aclose()


async def test_a_restart_leaves_other_gateways_live_calls_alone(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = SqliteCallDb(tmp_path / "callbridge.db")
    db.gateway = "gw-2"
    other = Store(config(tmp_path), db, clock=clock)
    other.begin(call_id="call-2", info=INFO, agent="echo", t0=clock.now())
    await other.db.flush()
    mine = build_store(config(tmp_path))  # gw-1
    row = await mine.db.get_call("call-2")
    assert row is not None and row.live
    await mine.aclose()
    await other.aclose()


def test_a_gateway_killed_mid_call_restarts_with_the_call_ended_at_its_recording_end(
    tmp_path: Path,
) -> None:
    """A real kill: a child process records 2.74 s of a call (ticks fed as fast as the io
    thread takes them; its wall clock stands still, so the call's end is its recording's),
    then SIGKILLs itself. The restart closes the call 2.6 s after its answer: the last
    checkpoint (the 7 ticks after it were in memory only)."""
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from pathlib import Path
        import numpy as np
        from callbridge.core.ports import LegInfo
        from callbridge.store.service import StoreConfig, build_store

        async def main():
            st = build_store(StoreConfig(Path({str(tmp_path)!r}), transcripts=False,
                                         gateway_id="gw-1"))
            s = st.begin(call_id="call-k", info=LegInfo("sip", "inbound"), agent="echo", t0=0.0)
            print(s.started, flush=True)
            for i in range(137):
                s.recorder.on_tick(np.full(160, i, "<i2").tobytes(), None)
                await s.recorder.drain()
            await st.db.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3] / "src"))
    done = subprocess.run([sys.executable, "-c", script], timeout=60, env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    started = float(done.stdout.decode().split()[0])

    st = build_store(config(tmp_path))
    row = asyncio.run(st.db.get_call("call-k"))
    assert isinstance(st.db, SqliteCallDb)
    st.db.close()
    st.io.shutdown()
    assert row is not None and row.end_reason == "lost"
    assert row.ended == pytest.approx(started + 2.6)
    wav = tmp_path / "recordings" / "call-k.wav"
    with wave.open(str(wav)) as w:
        assert w.getnframes() == 130 * FRAME_SAMPLES
    assert wav.read_bytes()[:44] == wav_header(130 * TICK_BYTES)
