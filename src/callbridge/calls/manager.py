"""Calls: one TaskGroup per call owns the leg's media task and the agent's task.

The manager is what transports hand new legs to (core.ports.LegAcceptor); it is also
where a call's lifetime is logged, so every transport gets the same call events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from callbridge.calls.routing import Router
from callbridge.core.clock import Clock
from callbridge.core.log import call_context, event_fields
from callbridge.core.ports import Agent, CallLeg, LegInfo, Rejection

log = logging.getLogger("callbridge.calls")


class MediaLeg(CallLeg, Protocol):
    """A leg whose media loop the call owns (every transport's legs are this)."""

    async def run(self) -> None: ...

    def stats(self) -> dict[str, int | float]: ...

    @property
    def end_reason(self) -> str: ...


@dataclass(slots=True)
class Call:
    id: str
    leg: MediaLeg
    agent_name: str
    started: float
    ended: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class CallManager:
    def __init__(self, router: Router, clock: Clock, max_calls: int = 1000) -> None:
        self.router = router
        self.clock = clock
        self.max_calls = max_calls
        self.calls: dict[str, Call] = {}
        self.accepting = True
        self._seq = itertools.count(1)
        self.on_end: list[Callable[[Call], None]] = []

    def admit(self, info: LegInfo) -> None:
        if not self.accepting:
            raise Rejection(Rejection.UNAVAILABLE, "shutting down")
        if len(self.calls) >= self.max_calls:
            raise Rejection(Rejection.BUSY, "too many calls")
        self.router.resolve(info)

    def start(self, leg: CallLeg) -> None:
        self.start_call(leg)  # type: ignore[arg-type]

    def start_call(
        self, leg: MediaLeg, agent: Agent | None = None, agent_name: str | None = None
    ) -> Call:
        name = agent_name or self.router.resolve(leg.info)
        if agent is None:
            agent = self.router.agents[name]()
        call_id = f"call-{next(self._seq)}-{secrets.token_hex(3)}"
        leg.info.ids["call_id"] = call_id
        call = Call(call_id, leg, name, self.clock.now())
        self.calls[call_id] = call
        with call_context(call_id):
            # Tasks inherit the context, so every log line of this call carries its id.
            call.task = asyncio.get_running_loop().create_task(self._run(call, agent), name=call_id)
        return call

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
            for cb in self.on_end:
                cb(call)

    async def _agent(self, call: Call, agent: Agent, media: asyncio.Task[None]) -> None:
        try:
            await agent.run(call.leg)
        finally:
            # An agent that returns while the call is up hangs up (its conversation is over).
            if not call.leg.ended:
                await call.leg.hangup("agent_done")

    async def shutdown(self, grace: float) -> None:
        self.accepting = False
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
