"""`serve --workers N`: the other workers' live calls on worker 0's dashboard.

Only worker 0 serves the public API and the dashboard; each call's live events (its start and
end, leg statistics, partial and final transcript lines, turns, barge-ins) are published on
the bus of the worker that holds it. So worker 0 reads every other worker's own event stream
(`GET /events` on its internal API, loopback, with the cluster's token: api/forward.py) and
hands those events on to its dashboard's streams as if they were its own.

A relay runs only while someone watches worker 0's dashboard (EventHub starts and stops it):
with nobody watching, the workers stream nothing. Each worker's stream begins with a snapshot
of its live calls; the relay keeps that list (and applies each start, end and statistics to
it), so a browser that connects later gets every worker's live calls in its own first
snapshot. When the stream breaks (the worker restarts, or dropped us for reading too slowly)
the relay reconnects with a pause that doubles up to RETRY_MAX_S; the new snapshot is
compared with what it had: calls gone meanwhile are reported ended (the page then reads how
from the shared database), new ones started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from callbridge.core.log import event

if TYPE_CHECKING:
    import httpx

__all__ = ["RETRY_MAX_S", "RETRY_S", "Emit", "WorkerRelay"]

log = logging.getLogger("callbridge.api.dashboard")

RETRY_S = 0.5
RETRY_MAX_S = 10.0
# Our own hub's frames are one JSON line each, far below this; a longer line is not one.
MAX_LINE = 1 << 20

# (an event as the stream sends it, whether to keep it for replay)
Emit = Callable[[dict[str, Any], bool], None]


class WorkerRelay:
    """One other worker's dashboard events, into worker 0's hub."""

    def __init__(
        self,
        gateway_id: str,
        base_url: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.url = f"{base_url}/events"
        self._token = token  # a secret: never logged
        self._transport = transport
        # The worker's live calls as its snapshot entries ({"call_id", "call", "started",
        # "stats"}), in the order they started.
        self.calls: dict[str, dict[str, Any]] = {}
        self.connected = asyncio.Event()  # set while a stream is open (tests, logs)
        self.breaks = 0  # streams that broke or could not open
        self.last_break = ""
        self.broke = asyncio.Event()  # set at each break (tests clear it to await the next)

    def live(self) -> list[dict[str, Any]]:
        return list(self.calls.values())

    async def run(self, emit: Emit) -> None:
        """Relay until cancelled, reconnecting after every break."""
        import httpx

        from callbridge.core.http_responses import let_go

        pause = RETRY_S
        headers = {"authorization": f"Bearer {self._token}", "accept": "text/event-stream"}
        # No read timeout: the worker sends a keep-alive every 15 s and its events as they come.
        timeout = httpx.Timeout(5.0, read=None)
        async with httpx.AsyncClient(
            transport=self._transport, timeout=timeout, trust_env=False
        ) as client:
            while True:
                failure = ""
                try:
                    async with client.stream("GET", self.url, headers=headers) as response:
                        try:
                            if response.status_code != 200:
                                failure = f"status {response.status_code}"
                            else:
                                self.connected.set()
                                pause = RETRY_S
                                await self._read(response, emit)
                                failure = "the stream ended"
                        finally:
                            self.connected.clear()
                            await response.aclose()
                            let_go(response)
                except httpx.HTTPError as exc:
                    failure = type(exc).__name__
                event(log, "dashboard.relay_broken", logging.WARNING, worker=self.gateway_id,
                      reason=failure, retry_s=pause)  # fmt: skip
                self.breaks += 1
                self.last_break = failure
                self.broke.set()
                await asyncio.sleep(pause)
                pause = min(2 * pause, RETRY_MAX_S)

    async def _read(self, response: httpx.Response, emit: Emit) -> None:
        data = ""
        async for line in response.aiter_lines():
            if len(line) > MAX_LINE:
                return  # not our hub's stream: reconnect
            if line.startswith("data:"):
                data += line[5:].lstrip(" ")
            elif not line and data:
                frame, data = data, ""
                with contextlib.suppress(ValueError):
                    ev = json.loads(frame)
                    if isinstance(ev, dict) and not self._apply(ev, emit):
                        return

    def _apply(self, ev: dict[str, Any], emit: Emit) -> bool:
        """Keep the list of live calls and hand the event on; False: reconnect."""
        kind = ev.get("type")
        call_id = ev.get("call_id")
        if kind == "snapshot":
            self._resync(ev.get("calls") or [], emit)
            return True
        if kind == "dropped":  # we fell behind; a fresh stream starts with a snapshot
            return False
        if not isinstance(call_id, str):
            return True
        if kind == "call.started":
            self.calls[call_id] = {"call_id": call_id, "call": ev.get("call") or {},
                                   "started": ev.get("at"), "stats": {}}  # fmt: skip
        elif kind == "call.ended":
            self.calls.pop(call_id, None)
        elif kind == "call.stats":
            known = self.calls.get(call_id)
            if known is not None:
                known["stats"] = ev.get("stats") or {}
            emit(ev, False)  # the next ones replace them: not kept for replay
            return True
        emit(ev, True)
        return True

    def _resync(self, calls: list[Any], emit: Emit) -> None:
        fresh = {c["call_id"]: c for c in calls if isinstance(c, dict) and "call_id" in c}
        now = time.time()
        for call_id in [c for c in self.calls if c not in fresh]:
            gone = self.calls.pop(call_id)
            # It ended while the stream was down: how, the page reads from the database.
            emit({"type": "call.ended", "call_id": call_id, "at": now, "reason": "",
                  "stats": gone.get("stats") or {}}, True)  # fmt: skip
        for call_id, entry in fresh.items():
            if call_id not in self.calls:
                emit({"type": "call.started", "call_id": call_id, "at": entry.get("started"),
                      "call": entry.get("call") or {}}, True)  # fmt: skip
        self.calls = fresh

    def reset(self) -> None:
        """Nobody watches any more: forget the calls (the next stream's snapshot brings them)."""
        self.calls = {}
