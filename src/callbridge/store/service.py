"""The store as the calls layer sees it: one `CallSession` per call, which records it.

    store = build_store(StoreConfig(data_dir))          # gateway.py, at start-up
    session = store.begin(call_id=..., info=leg.info, agent="voice", t0=clock.now())
    leg.set_tap(session.tap)                             # the recording (None when disabled)
    agent.attach_transcript(session)                     # transcript + turns (VoiceAgent)
    await session.finish("remote_bye", clock.now())     # at hang-up
    await store.aclose()                                 # at shutdown

Files: `<data_dir>/recordings/<call_id>.wav`, `<data_dir>/transcripts/<call_id>.json`; the
database gets the call, its turns and every structured log event of the call
(`event(log, "call.dtmf", ...)` lines: a logging handler picks those whose call id belongs to
a live session). `url` chooses the database: `sqlite:///FILE` (default
`<data_dir>/callbridge.db`) or `postgresql://user:password@host:port/db` (`postgres://` too).

Everything a call does here is a memory operation on the event loop or work queued to a
thread: disk or database trouble is logged and never ends a call. The database's writes go
through one bounded queue, committed in batches by one thread (writer.py); a call's records
are never dropped for overload: when the database queue (or the file queue) is past its
high-water mark, `saturated` is true and the calls layer refuses new calls (503) until it
drains; live calls go on. `aclose` writes what is queued, for at most its deadline, and
logs the ids of the calls it could not save.

A transcript file appears with the call's first entry or at its end, not empty at its start:
the empty file was one more fsynced write per call setup that nobody reads.

While calls are live, the store stamps them all (`calls.last_activity`, in one statement) every
`HEARTBEAT_S`; after a crash, the next start-up closes them as "lost" at their last sign of
life, the recording's end or that heartbeat (lost.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable
from contextvars import Context
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.bus import Bus, Unsubscribe, default_bus
from callbridge.core.call_events import as_noted
from callbridge.core.clock import Clock
from callbridge.core.errors import ConfigError
from callbridge.core.log import event
from callbridge.core.ports import LegInfo, MediaTap
from callbridge.store.db import CallDb, CallRow, EventRow, SqliteCallDb, TurnRow
from callbridge.store.lost import HEARTBEAT_S, close_lost_calls
from callbridge.store.recording import CHECKPOINT_TICKS, WavRecorder
from callbridge.store.transcript import Transcript
from callbridge.store.writer import WriterLimits

if TYPE_CHECKING:
    from callbridge.store.postgres import PostgresCallDb

__all__ = ["CallSession", "Store", "StoreConfig", "build_store", "open_db", "sqlite_path"]

log = logging.getLogger("callbridge.store")

_TICK_S = 0.02
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    data_dir: Path
    url: str = ""  # "" = sqlite:///callbridge.db (relative: under data_dir), or postgresql://...
    recording: bool = True  # stereo WAV per call
    transcripts: bool = True  # JSON per call
    events: bool = True  # the calls' structured events (INFO and up) into the events table
    checkpoint_s: float = CHECKPOINT_TICKS * _TICK_S  # recording: what a crash may lose
    fsync: bool = True  # off only for tests on tmpfs-like speed
    gateway_id: str = ""  # this gateway's name in a shared database ("" = the only one)
    # the database queue: batching, high/low-water marks (also used for the file queue),
    # retry backoff
    writer: WriterLimits = field(default_factory=WriterLimits)
    close_deadline_s: float = 10.0  # shutdown: how long queued writes may take

    def __post_init__(self) -> None:
        if self.checkpoint_s < _TICK_S:
            raise ConfigError("recording.checkpoint_s", "must be at least one tick (0.02 s)")


def sqlite_path(url: str, data_dir: Path) -> Path | str:
    """The file of a `sqlite:///PATH` URL: `sqlite:///calls.db` is under `data_dir`,
    `sqlite:////var/lib/callbridge.db` absolute, `sqlite:///:memory:` in memory."""
    url = url or "sqlite:///callbridge.db"
    scheme, sep, rest = url.partition(":///")
    if not sep or scheme != "sqlite" or not rest:
        shown = re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)  # no password in the message
        raise ConfigError(
            "store.url", f"expected sqlite:///FILE or postgresql://USER@HOST/DB, got {shown!r}"
        )
    if rest == ":memory:":
        return rest
    path = Path(rest)
    return path if path.is_absolute() else data_dir / path


class CountedIo(concurrent.futures.Executor):
    """The file thread's executor, counting its backlog (recording checkpoints, transcript
    rewrites): a disk that falls behind saturates the store like a slow database."""

    def __init__(self, inner: concurrent.futures.Executor, high: int, low: int) -> None:
        self.inner, self.high, self.low = inner, high, low
        self.pending = 0
        self.saturated = False
        self._lock = threading.Lock()

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        self._count(1)
        try:
            fut = self.inner.submit(fn, *args, **kwargs)
        except BaseException:
            self._count(-1)
            raise
        fut.add_done_callback(lambda _: self._count(-1))
        return fut

    def _count(self, delta: int) -> None:
        with self._lock:
            self.pending += delta
            n = self.pending
            flip = (not self.saturated and n >= self.high) or (self.saturated and n <= self.low)
            if flip:
                self.saturated = not self.saturated
        if flip:
            # An empty context: this is the store's line, not the call that crossed the mark.
            name = "store.io_saturated" if self.saturated else "store.io_drained"
            level = logging.WARNING if self.saturated else logging.INFO
            Context().run(event, log, name, level, backlog=n)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait, cancel_futures=cancel_futures)


class CallSession:
    """Records one call. Implements MediaTap (via `tap`) and the VoiceAgent transcript sink.

    Agent times (`start`, `end`, `at`) are on the call's clock, the one `t0` was read from.
    """

    def __init__(
        self,
        store: Store,
        *,
        call_id: str,
        t0: float,
        recorder: WavRecorder | None,
        transcript: Transcript | None,
    ) -> None:
        self.store = store
        self.call_id = call_id
        self.t0 = t0
        self.started = time.time()
        self.recorder = recorder
        self.transcript = transcript
        self.finished = False
        self._seq = itertools.count(1)

    @property
    def tap(self) -> MediaTap | None:
        return self.recorder

    def wall(self, t: float) -> float:
        """A time of the call's clock on the wall clock."""
        return self.started + (t - self.t0)

    # ---- transcript sink (VoiceAgent) ---------------------------------------------------

    def caller_said(self, text: str, start: float, end: float) -> None:
        if self.transcript is not None:
            self.transcript.caller_said(text, start, end)

    def caller_retracted(self) -> None:
        if self.transcript is not None:
            self.transcript.caller_retracted()

    def agent_said(
        self, utterance: int, text: str, start: float | None, end: float | None, interrupted: bool
    ) -> None:
        if self.transcript is not None:
            self.transcript.agent_said(utterance, text, start, end, interrupted)

    def dtmf(self, digit: str, at: float) -> None:
        if self.transcript is not None:
            self.transcript.dtmf(digit, at)

    def message(self, text: str, at: float) -> None:
        if self.transcript is not None:
            self.transcript.message(text, at)

    def turn(
        self,
        utterance: int,
        user_text: str,
        agent_text: str,
        interrupted: bool,
        *,
        voice_to_voice_ms: int | None = None,
        stt_ms: int | None = None,
        brain_ms: int | None = None,
        tts_ms: int | None = None,
    ) -> None:
        """An agent utterance with its metrics; the same utterance again replaces it."""
        self.store.db.save_turn(
            TurnRow(
                self.call_id, utterance, time.time(), user_text, agent_text, interrupted,
                voice_to_voice_ms, stt_ms, brain_ms, tts_ms,
            )
        )  # fmt: skip

    # ---- events -------------------------------------------------------------------------

    def add_event(self, name: str, data: dict[str, Any], ts: float | None = None) -> None:
        if self.finished:
            return
        row = EventRow(self.call_id, next(self._seq), ts or time.time(), name, data)
        self.store.db.add_event(row)

    # ---- end ----------------------------------------------------------------------------

    async def finish(self, end_reason: str, ended: float) -> None:
        """Finalise the recording and the transcript, close the call's row. Idempotent.

        `ended` is on the call's clock. Everything is queued before the first await, so a
        cancelled caller (shutdown) still leaves complete files."""
        if self.finished:
            return
        self.finished = True
        self.store.forget(self)
        wall_end = self.wall(ended)
        rec, tr = self.recorder, self.transcript
        self.store.db.end_call(
            self.call_id,
            ended=wall_end,
            end_reason=end_reason,
            recording_path=str(rec.path) if rec is not None else None,
            transcript_path=str(tr.path) if tr is not None else None,
        )
        # Both queued before the first await: a cancelled caller still leaves both complete.
        closing = [
            tr.close_soon(wall_end, end_reason) if tr is not None else None,
            rec.close_soon() if rec is not None else None,
        ]
        for done in closing:
            if done is not None:
                with contextlib.suppress(Exception):  # logged where it failed
                    await asyncio.shield(asyncio.wrap_future(done))
        event(
            log,
            "store.call_saved",
            call_id=self.call_id,
            recording=str(rec.path) if rec is not None else None,
            recording_s=round(rec.duration, 3) if rec is not None else None,
            transcript=str(tr.path) if tr is not None else None,
            reason=end_reason,
        )


class Store:
    """Recordings, transcripts and the call database of one gateway."""

    def __init__(
        self,
        config: StoreConfig,
        db: CallDb,
        *,
        io: concurrent.futures.Executor | None = None,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        bus: Bus | None = None,
    ) -> None:
        """`clock` paces the heartbeat (default: the loop's), `wall` stamps it (tests); `bus`
        is where the calls' events are heard (default: the process-wide bus, which hears
        every `event()` and every gateway's bus)."""
        self.config = config
        self.db = db
        self.clock = clock or LoopClock()
        self.wall = wall
        self._heartbeat: asyncio.Task[None] | None = None
        self.recordings_dir = config.data_dir / "recordings"
        self.transcripts_dir = config.data_dir / "transcripts"
        for wanted, d in (
            (config.recording, self.recordings_dir),
            (config.transcripts, self.transcripts_dir),
        ):
            if wanted:
                d.mkdir(parents=True, exist_ok=True)
        self._own_io = io is None
        # File work (checkpoints, transcript rewrites) on one thread: it is disk-bound.
        self.io = CountedIo(
            io or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-io"),
            config.writer.high,
            config.writer.low,
        )
        self.sessions: dict[str, CallSession] = {}
        self._unsubscribe: Unsubscribe | None = None
        if config.events:
            bus = bus if bus is not None else default_bus()
            self._unsubscribe = bus.subscribe(None, self.on_event)
        self._closed = False

    @property
    def saturated(self) -> bool:
        """The database's queue or the files' is past its high-water mark (until back at the
        low one): the calls layer takes no new calls meanwhile, so records are never dropped
        for overload."""
        return self.db.saturated or self.io.saturated

    def on_event(self, ev: object) -> None:
        """File an event of a live session's call: the ones with a log line, INFO and up, from
        callbridge's loggers (what the events table received when it listened to logging)."""
        noted = as_noted(ev)
        if noted is None or noted.level < logging.INFO or not noted.call_id:
            return
        if noted.logger != "callbridge" and not noted.logger.startswith("callbridge."):
            return
        session = self.sessions.get(noted.call_id)
        if session is not None:
            data = {k: v for k, v in noted.fields.items() if k != "call_id"}
            session.add_event(noted.name, data, noted.at)

    def begin(self, *, call_id: str, info: LegInfo, agent: str, t0: float) -> CallSession:
        """A new call (answered, media about to flow): its row, files and session."""
        c = self.config
        recorder = None
        if c.recording:
            recorder = WavRecorder(
                self.recordings_dir / f"{call_id}.wav",
                self.io,
                checkpoint_ticks=round(c.checkpoint_s / _TICK_S),
                fsync=c.fsync,
            )
        session = CallSession(self, call_id=call_id, t0=t0, recorder=recorder, transcript=None)
        if c.transcripts:
            session.transcript = Transcript(
                self.transcripts_dir / f"{call_id}.json",
                call_id=call_id,
                t0=t0,
                started=session.started,
                io=self.io,
                fsync=c.fsync,
                write_empty=False,
            )
        local, remote = info.local_user, info.remote_uri
        inbound = info.direction == "inbound"
        self.db.insert_call(
            CallRow(
                id=call_id,
                transport=info.transport,
                direction=info.direction,
                from_uri=remote if inbound else local,
                to_uri=local if inbound else remote,
                agent=agent,
                started=session.started,
                answered=session.started,  # legs reach the calls layer answered
                recording_path=str(recorder.path) if recorder is not None else None,
                transcript_path=str(session.transcript.path) if session.transcript else None,
                ids={k: v for k, v in info.ids.items() if k != "call_id"},
            )
        )
        self.sessions[call_id] = session
        self._start_heartbeat()
        return session

    # ---- heartbeat ------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Stamp every live call with now: one statement (per 500 live calls)."""
        if self.sessions:
            self.db.touch_calls(list(self.sessions), self.wall())

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None and not self._heartbeat.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script recording by hand): no heartbeat
            return
        # A context of its own: not the one of the call whose begin() started it.
        beat = self._beat(self.clock.now() + HEARTBEAT_S)
        self._heartbeat = loop.create_task(beat, name="store-heartbeat", context=Context())

    async def _beat(self, at: float) -> None:
        # Runs while calls are live; the next call's begin() starts it again.
        while True:
            await self.clock.sleep_until(at)
            if self._closed or not self.sessions:
                return
            self.heartbeat()
            at = self.clock.now() + HEARTBEAT_S

    def forget(self, session: CallSession) -> None:
        self.sessions.pop(session.call_id, None)

    def recording_path(self, call_id: str) -> Path:
        return self.recordings_dir / f"{call_id}.wav"

    def transcript_path(self, call_id: str) -> Path:
        return self.transcripts_dir / f"{call_id}.json"

    async def aclose(self, deadline_s: float | None = None) -> None:
        """Finish live sessions (as "shutdown"), then write what is queued and close the
        database and the io thread. Within `deadline_s` (default: config.close_deadline_s)
        for the database: the calls whose writes are still queued then are logged
        (`store.unsaved`, with their ids)."""
        if self._closed:
            return
        self._closed = True
        deadline_s = self.config.close_deadline_s if deadline_s is None else deadline_s
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await session.finish("shutdown", session.t0 + (time.time() - session.started))
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.db.aclose(deadline_s)
        if self._own_io:
            # Nothing is queued any more (the sessions finished): this returns at once.
            self.io.shutdown(wait=False)


def open_db(
    url: str, data_dir: Path, limits: WriterLimits | None = None
) -> SqliteCallDb | PostgresCallDb:
    """The database of a `store.url`, opened and migrated. Blocking."""
    if url.startswith(("postgresql://", "postgres://")):
        # Imported here: libpq is loaded only by the gateways that use it.
        from callbridge.store.postgres import PostgresCallDb

        return PostgresCallDb(url, limits=limits)
    return SqliteCallDb(sqlite_path(url, data_dir), limits=limits)


def build_store(config: StoreConfig) -> Store:
    """The store for gateway.py: opens (and migrates) the database; calls left live by a
    previous process are closed as "lost" at their last sign of life (lost.py), their
    recordings' headers fixed. Blocking: call it at start-up."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_db(config.url, config.data_dir, config.writer)
    db.gateway = config.gateway_id
    lost = close_lost_calls(db, time.time(), "lost")
    store = Store(config, db)
    event(
        log,
        "store.ready",
        db=db.location,
        recording=config.recording,
        transcripts=config.transcripts,
        schema=db.version,
        lost_calls=len(lost),
    )
    return store
