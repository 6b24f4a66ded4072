"""Calls: one TaskGroup per call owns the leg's media task and the agent's task.

The manager is what transports hand new legs to (core.ports.LegAcceptor); it is also
where a call's lifetime is logged, so every transport gets the same call events, and,
when a store is set, recorded: the leg's media tap feeds the recording, the agent's
transcript sink the transcript and turns, and the call's row is closed at the end.

A call's record is never given up for being slow: while the store is saturated (its write
queue past the high-water mark) new calls are refused with 503 instead, so the backlog stays
bounded, and a save that takes long is logged and waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from callbridge.agents.voice import TranscriptSink
from callbridge.calls.routing import Router
from callbridge.core.bus import Bus, default_bus
from callbridge.core.call_events import (
    CallAnswered,
    CallEnded,
    CallInfo,
    CallStarted,
    RecordingReady,
    TranscriptReady,
)
from callbridge.core.clock import Clock
from callbridge.core.log import call_context, event, event_fields
from callbridge.core.ports import Agent, CallLeg, LegInfo, Rejection
from callbridge.store.service import CallSession, Store

log = logging.getLogger("callbridge.calls")

SAVE_SLOW_S = 10.0  # a call's files taking longer than this to finish are logged (not dropped)


@runtime_checkable
class Transcribed(Protocol):
    """An agent that reports what is said (VoiceAgent)."""

    def attach_transcript(self, sink: TranscriptSink) -> None: ...


@runtime_checkable
class Speaking(Protocol):
    """An agent that can be told what to say (VoiceAgent): POST /calls/{id}/say."""

    async def say(self, text: str, *, interrupt: bool = False) -> None: ...


@dataclass(slots=True)
class Call:
    id: str
    leg: CallLeg
    agent_name: str
    started: float
    ended: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    record: CallSession | None = field(default=None, repr=False)  # when a store is set
    agent: Agent | None = field(default=None, repr=False)


class CallManager:
    def __init__(
        self,
        router: Router,
        clock: Clock,
        max_calls: int = 1000,
        store: Store | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.router = router
        self.clock = clock
        self.max_calls = max_calls
        self.store = store  # recordings, transcripts, the call database; None: not recorded
        self.calls: dict[str, Call] = {}
        self.accepting = True
        self._seq = itertools.count(1)
        # Metrics, webhooks (and whoever else) hear the calls on the bus: CallStarted and
        # CallAnswered once the call's task exists; CallEnded, TranscriptReady, RecordingReady
        # once the recording and transcript are final, so a webhook can point at whole files.
        self.bus = bus if bus is not None else default_bus()
        # The same two moments for callers that want the Call object itself (CLI, tests);
        # a failing listener is logged, never raised.
        self.on_start: list[Callable[[Call], None]] = []
        self.on_end: list[Callable[[Call], None]] = []

    def refusal(self) -> Rejection | None:
        """Why a new call (coming in, or placed through the API) would be refused now; None
        when it would be taken."""
        if not self.accepting:
            return Rejection(Rejection.UNAVAILABLE, "shutting down")
        if len(self.calls) >= self.max_calls:
            return Rejection(Rejection.BUSY, "too many calls")
        if self.store is not None and self.store.saturated:
            # Back-pressure: the records of calls we take must be written; the store logs
            # when it saturates and drains (store.saturated / store.drained).
            return Rejection(Rejection.UNAVAILABLE, "call store saturated")
        return None

    def admit(self, info: LegInfo) -> None:
        refused = self.refusal()
        if refused is not None:
            raise refused
        self.router.resolve(info)

    def start(self, leg: CallLeg) -> None:
        self.start_call(leg)

    def start_call(
        self, leg: CallLeg, agent: Agent | None = None, agent_name: str | None = None
    ) -> Call:
        name = agent_name or self.router.resolve(leg.info)
        if agent is None:
            agent = self.router.agents[name]()
        call_id = f"call-{next(self._seq)}-{secrets.token_hex(3)}"
        leg.info.ids["call_id"] = call_id
        call = Call(call_id, leg, name, self.clock.now(), agent=agent)
        self.calls[call_id] = call
        if self.store is not None:
            call.record = self._record(call, agent)
        with call_context(call_id):
            # Tasks inherit the context, so every log line of this call carries its id.
            call.task = asyncio.get_running_loop().create_task(self._run(call, agent), name=call_id)
            now, summary = time.time(), call_info(call)
            self.bus.publish(CallStarted(summary, now))
            self.bus.publish(CallAnswered(summary, now))  # legs reach us answered
            _notify(self.on_start, call)
        return call

    def _record(self, call: Call, agent: Agent) -> CallSession | None:
        assert self.store is not None
        try:
            record = self.store.begin(
                call_id=call.id, info=call.leg.info, agent=call.agent_name, t0=call.started
            )
        except Exception:  # e.g. the disk is full: the call goes on, unrecorded
            log.exception("cannot record call %s", call.id)
            return None
        if record.tap is not None:
            call.leg.set_tap(record.tap)
        if isinstance(agent, Transcribed):
            agent.attach_transcript(record)
        return record

    async def _run(self, call: Call, agent: Agent) -> None:
        leg = call.leg
        info = leg.info
        started = {
            "direction": info.direction,
            "transport": info.transport,
            "agent": call.agent_name,
            "remote_uri": info.remote_uri,
        }
        started.update((k, v) for k, v in info.ids.items() if k != "call_id")
        event_fields(log, "call.started", started)
        try:
            async with asyncio.TaskGroup() as tg:
                media = tg.create_task(leg.run(), name=f"{call.id}-media")
                tg.create_task(self._agent(call, agent, media), name=f"{call.id}-agent")
        except* Exception as group:
            for exc in group.exceptions:
                log.error("call task failed", exc_info=exc)
            if not leg.ended:
                with contextlib.suppress(Exception):
                    await leg.hangup("error")
        finally:
            call.ended = self.clock.now()
            self.calls.pop(call.id, None)
            ended: dict[str, object] = {
                "reason": leg.end_reason or "unknown",
                "duration": round(call.ended - call.started, 3),
            }
            ended.update(leg.stats())
            event_fields(log, "call.ended", ended)
            if call.record is not None:
                await self._save(call, leg.end_reason or "unknown")
            for ev in _ended(call):
                self.bus.publish(ev)
            _notify(self.on_end, call)

    async def _save(self, call: Call, reason: str) -> None:
        """Finalise the recording and transcript before anyone hears the call ended.

        `finish` queues every write before its first await, so nothing here can lose the
        record: a slow disk only delays the end's announcement (logged after SAVE_SLOW_S;
        admission is shut meanwhile if the queues are that far behind). If this task is
        cancelled (shutdown), the finishing goes on in its own task."""
        assert call.record is not None and call.ended is not None
        call.leg.set_tap(None)
        finishing = asyncio.ensure_future(call.record.finish(reason, call.ended))
        slow = asyncio.ensure_future(self.clock.sleep_until(self.clock.now() + SAVE_SLOW_S))
        try:
            await asyncio.wait({finishing, slow}, return_when=asyncio.FIRST_COMPLETED)
            if not finishing.done():
                event(log, "call.save_slow", logging.WARNING, call_id=call.id,
                      waited_s=SAVE_SLOW_S)  # fmt: skip
                await asyncio.shield(finishing)
            finishing.result()
        except Exception:
            log.exception("saving call %s failed", call.id)
        finally:
            slow.cancel()

    async def _agent(self, call: Call, agent: Agent, media: asyncio.Task[None]) -> None:
        try:
            await agent.run(call.leg)
        finally:
            # An agent that returns while the call is up hangs up (its conversation is over).
            if not call.leg.ended:
                await call.leg.hangup("agent_done")

    async def drain(self, timeout: float) -> int:
        """Take no new calls; wait up to `timeout` seconds for the live ones to end by
        themselves. Returns how many are still up."""
        self.accepting = False
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        if tasks:
            # On the injected clock (tests drive it); waiting never cancels the calls.
            all_ended = asyncio.ensure_future(asyncio.wait(tasks))
            deadline = asyncio.ensure_future(self.clock.sleep_until(self.clock.now() + timeout))
            try:
                await asyncio.wait({all_ended, deadline}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                all_ended.cancel()
                deadline.cancel()
        return len(self.calls)

    async def shutdown(self, grace: float) -> None:
        self.accepting = False
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self.store is not None:
            await self.store.aclose()


def call_info(call: Call) -> CallInfo:
    """The call as webhooks and the API show it."""
    info = call.leg.info
    ids = {k: v for k, v in info.ids.items() if k != "call_id"}
    return CallInfo(
        call.id, info.transport, info.direction, info.local_user, info.remote_uri,
        call.agent_name, ids,
    )  # fmt: skip


def _ended(call: Call) -> list[CallEnded | TranscriptReady | RecordingReady]:
    """What is published when the call is over and its record final."""
    now = time.time()
    duration = round((call.ended or call.started) - call.started, 3)
    reason = call.leg.end_reason or "unknown"
    out: list[CallEnded | TranscriptReady | RecordingReady] = [
        CallEnded(call_info(call), now, reason, duration, call.leg.stats())
    ]
    record = call.record
    if record is None:
        return out
    # Files that failed to be written are not announced.
    if record.transcript is not None and record.transcript.path.exists():
        out.append(TranscriptReady(call.id, str(record.transcript.path), now))
    if record.recorder is not None and record.recorder.path.exists():
        seconds = round(record.recorder.duration, 3)
        out.append(RecordingReady(call.id, str(record.recorder.path), seconds, now))
    return out


def _notify(listeners: list[Callable[[Call], None]], call: Call) -> None:
    for listener in listeners:
        try:
            listener(call)
        except Exception:
            log.exception("call listener failed")
