"""The live dashboard: its page at `/dashboard` and the event stream it reads, `GET /events`.

`/events` is Server-Sent Events (text/event-stream): each event of the gateway's calls is one
`data:` line of JSON (`type`, `call_id`, `at` in Unix seconds, its fields; event_json below)
with an `id:`; a client that reconnects with `Last-Event-ID` gets what it missed (from a
bounded history) or, when that is gone, a fresh `snapshot` of the live calls, which is also
the first event of every new stream. While anyone watches, each live call's leg counters
(jitter buffer, loss) come as `call.stats` every `stats_every` seconds: pushed, not polled.

The events are the typed ones of the bus (core.call_events): the calls layer's on the
gateway's bus, the agents' (turns, barge-ins, transcript lines) at its root, where they are
published, kept when they belong to one of this gateway's calls.

Each client has a bounded queue that the bus handler only ever `put_nowait`s into: a client
that falls `queue_size` events behind is dropped (its stream ends with a `dropped` event and
the page reconnects), so a slow browser never holds up a call. The number of clients is
bounded too (`max_clients`, then 503).

Off loopback /events needs the API token like any API route (api/app.py guard). The page
reads the stream with fetch(), which sends `Authorization: Bearer` from the token the
sign-in form keeps in sessionStorage. EventSource cannot send a header, and its ways around
that are worse: the token in the URL ends up in access logs, proxies and history; a second,
short-lived credential minted by a POST is another secret to store, expire and guard. What
EventSource would add, reconnection, is a few lines in the page. (EventSource and curl still
work against a gateway without a token.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from callbridge.api.dashboard_relay import WorkerRelay
from callbridge.api.softphone import PAGE_HEADERS, STATIC_DIR
from callbridge.calls.manager import CallManager, call_info
from callbridge.core.bus import Bus, Unsubscribe
from callbridge.core.call_events import (
    BargeIn,
    CallAnswered,
    CallEnded,
    CallStarted,
    RecordingReady,
    TranscriptLine,
    TranscriptPartial,
    TranscriptReady,
    TranscriptRetracted,
    TurnMeasured,
)
from callbridge.core.log import event

__all__ = ["DASHBOARD_PATH", "EventHub", "Snapshot", "dashboard_routes", "event_hub", "event_json"]

log = logging.getLogger("callbridge.api.dashboard")

DASHBOARD_PATH = "/dashboard"
# The live calls, each {"call_id", "call" (CallInfo.summary()), "started", "stats"}.
Snapshot = Callable[[], list[dict[str, Any]]]

_CALL_EVENTS = (CallStarted, CallAnswered, CallEnded, RecordingReady, TranscriptReady)
_AGENT_EVENTS = (TurnMeasured, BargeIn, TranscriptPartial, TranscriptLine, TranscriptRetracted)
_KNOWN_CALLS = 4096  # this gateway's call ids remembered (live, then the latest ended)
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_json(ev: object) -> dict[str, Any] | None:
    """An event as the stream sends it; None for the events it does not carry. Server paths
    (recordings, transcripts) stay out: the page reads them through the API."""
    match ev:
        case CallStarted(call=call, at=at):
            return {"type": "call.started", "call_id": call.call_id, "at": at,
                    "call": call.summary()}  # fmt: skip
        case CallAnswered(call=call, at=at):
            return {"type": "call.answered", "call_id": call.call_id, "at": at}
        case CallEnded(call=call, at=at):
            return {"type": "call.ended", "call_id": call.call_id, "at": at,
                    "call": call.summary(), "reason": ev.reason, "duration": ev.duration,
                    "stats": dict(ev.stats)}  # fmt: skip
        case RecordingReady(call_id=call_id, at=at):
            return {"type": "recording.ready", "call_id": call_id, "at": at,
                    "seconds": ev.seconds}  # fmt: skip
        case TranscriptReady(call_id=call_id, at=at):
            return {"type": "transcript.ready", "call_id": call_id, "at": at}
        case TurnMeasured(call_id=call_id, at=at):
            # voice-to-voice and three of its parts; the page shows the rest as end of turn
            return {"type": "turn", "call_id": call_id, "at": at, "utterance": ev.utterance,
                    "text": ev.text, "voice_to_voice_ms": ev.voice_to_voice_ms,
                    "stt_ms": ev.stt_final_ms, "brain_ms": ev.brain_first_token_ms,
                    "tts_ms": ev.tts_first_audio_ms}  # fmt: skip
        case BargeIn(call_id=call_id, at=at):
            return {"type": "barge_in", "call_id": call_id, "at": at, "utterance": ev.utterance,
                    "decided_after_ms": ev.decided_after_ms,
                    "silenced_after_ms": ev.silenced_after_ms, "heard": ev.heard}  # fmt: skip
        case TranscriptPartial(call_id=call_id, at=at):
            return {"type": "transcript.partial", "call_id": call_id, "at": at,
                    "text": ev.text, "active": ev.active}  # fmt: skip
        case TranscriptLine(call_id=call_id, at=at):
            return {"type": "transcript.line", "call_id": call_id, "at": at, "role": ev.role,
                    "text": ev.text, "utterance": ev.utterance,
                    "interrupted": ev.interrupted, "said": ev.said}  # fmt: skip
        case TranscriptRetracted(call_id=call_id, at=at):
            return {"type": "transcript.retracted", "call_id": call_id, "at": at}
        case _:
            return None


def _frame(data: dict[str, Any], seq: int | None) -> str:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    # One data line: json.dumps escapes every newline inside strings.
    return (f"id: {seq}\n" if seq is not None else "") + f"data: {body}\n\n"


class _Client:
    __slots__ = ("dropped", "queue")

    def __init__(self, size: int) -> None:
        # frames; None ends the stream
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(size)
        self.dropped = False


class EventHub:
    """Fans the gateway's call events out to the /events streams (on the event loop)."""

    def __init__(
        self,
        bus: Bus,
        live: Snapshot = list,
        *,
        queue_size: int = 256,
        history: int = 512,
        max_clients: int = 32,
        stats_every: float = 2.0,
        keepalive: float = 15.0,
    ) -> None:
        """`bus`: the gateway's (calls layer's) bus; `live`: the live calls, for snapshots
        and the periodic stats."""
        if queue_size < 2 or history < 0 or max_clients < 1 or stats_every <= 0:
            raise ValueError("queue_size >= 2, history >= 0, max_clients >= 1, stats_every > 0")
        self.bus = bus
        self.live = live
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.stats_every = stats_every
        self.keepalive = keepalive
        self.dropped = 0  # clients dropped for falling behind
        self.closed = False
        self._clients: set[_Client] = set()
        self._history: deque[tuple[int, str]] = deque(maxlen=history)
        self._seq = 0
        self._mine: OrderedDict[str, None] = OrderedDict()  # this gateway's call ids
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: list[Unsubscribe] = []
        self._ticker: asyncio.Task[None] | None = None
        # serve --workers, worker 0: the other workers' events (api/dashboard_relay.py),
        # relayed while anyone watches.
        self.relays: list[WorkerRelay] = []
        self._relaying: list[asyncio.Task[None]] = []

    # ---- the bus side ---------------------------------------------------------------------

    def install(self) -> None:
        """Listen on the bus (idempotent)."""
        if self._subs or self.closed:
            return
        root = self.bus.root
        self._subs = [
            *(self.bus.subscribe(t, self._on_call) for t in _CALL_EVENTS),
            *(root.subscribe(t, self._on_agent) for t in _AGENT_EVENTS),
        ]

    def _on_call(self, ev: object) -> None:
        if isinstance(ev, CallStarted):
            # before the root hears this call's agent events (a bus calls its own
            # subscribers before its parent's)
            self._mine[ev.call_id] = None
            while len(self._mine) > _KNOWN_CALLS:
                self._mine.popitem(last=False)
        self._emit(ev)

    def _on_agent(self, ev: object) -> None:
        if getattr(ev, "call_id", None) in self._mine:
            self._emit(ev)

    def _emit(self, ev: object) -> None:
        data = event_json(ev)
        if data is None:
            return
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._fanout(data)
        else:  # published from another thread (a worker pool): the queues are the loop's
            loop.call_soon_threadsafe(self._fanout, data)

    def _fanout(self, data: dict[str, Any], *, keep: bool = True) -> None:
        """`keep`: numbered and kept for replay; stats are not (the next ones replace them)."""
        seq = None
        if keep:
            self._seq += 1
            seq = self._seq
        frame = _frame(data, seq)
        if seq is not None:
            self._history.append((seq, frame))
        for client in list(self._clients):
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: _Client) -> None:
        self._clients.discard(client)
        client.dropped = True
        self.dropped += 1
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(_frame({"type": "dropped", "reason": "too slow"}, None))
        client.queue.put_nowait(None)
        event(log, "dashboard.client_dropped", logging.WARNING, queue=self.queue_size)
        self._maybe_stop_ticker()

    # ---- the stream side ------------------------------------------------------------------

    @property
    def clients(self) -> int:
        return len(self._clients)

    def connect(self, last_id: int | None = None) -> _Client | None:
        """A new stream's queue (None: too many, or closed), primed with what it missed since
        `last_id` or with a snapshot. On the event loop."""
        if self.closed or len(self._clients) >= self.max_clients:
            return None
        self._loop = asyncio.get_running_loop()
        client = _Client(self.queue_size)
        missed = self._missed(last_id)
        if missed is None:
            calls = self._snapshot()
            snap = {"type": "snapshot", "at": time.time(), "calls": calls}
            client.queue.put_nowait(_frame(snap, self._seq))
        else:
            for frame in missed:
                client.queue.put_nowait(frame)
        self._clients.add(client)
        if self._ticker is None:
            self._ticker = self._loop.create_task(self._tick(), name="dashboard-stats")
            self._relaying = [
                self._loop.create_task(relay.run(self.relayed), name="dashboard-relay")
                for relay in self.relays
            ]
        return client

    def relayed(self, data: dict[str, Any], keep: bool) -> None:
        """An event of another worker's call (api/dashboard_relay.py), on the event loop."""
        if not self.closed:
            self._fanout(data, keep=keep)

    def _missed(self, last_id: int | None) -> list[str] | None:
        """The frames after `last_id`, or None when they cannot all be replayed."""
        if last_id is None or last_id > self._seq:
            return None  # new, or from before a restart (ids begin again)
        if last_id == self._seq:
            return []
        if not self._history or self._history[0][0] > last_id + 1:
            return None  # some are gone from the history
        missed = [frame for seq, frame in self._history if seq > last_id]
        return missed if len(missed) <= self.queue_size // 2 else None

    def _snapshot(self) -> list[dict[str, Any]]:
        """Every live call: this gateway's and the other workers' (as their streams said)."""
        return [*self._own(), *(c for relay in self.relays for c in relay.live())]

    def _own(self) -> list[dict[str, Any]]:
        try:
            return self.live()
        except Exception:
            log.exception("dashboard snapshot failed")
            return []

    def disconnect(self, client: _Client) -> None:
        self._clients.discard(client)
        self._maybe_stop_ticker()

    def _maybe_stop_ticker(self) -> None:
        if not self._clients and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
            for task in self._relaying:  # nobody watches: the workers stream nothing
                task.cancel()
            self._relaying = []
            for relay in self.relays:
                relay.reset()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.stats_every)
            for call in self._own():  # each other worker streams its own calls' stats
                self._fanout(
                    {"type": "call.stats", "call_id": call["call_id"], "at": time.time(),
                     "stats": call["stats"]},
                    keep=False,
                )  # fmt: skip

    def close(self) -> None:
        """Stop listening and end every stream (before the HTTP server stops: an open
        stream would hold its graceful shutdown until the timeout)."""
        self.closed = True
        for unsubscribe in self._subs:
            unsubscribe()
        self._subs = []
        for client in list(self._clients):
            self._clients.discard(client)
            try:
                client.queue.put_nowait(None)
            except asyncio.QueueFull:
                client.queue.get_nowait()
                client.queue.put_nowait(None)
        self._maybe_stop_ticker()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def event_hub(calls: CallManager, **kwargs: Any) -> EventHub:
    """The hub of a gateway's calls layer (its bus and its live calls)."""

    def live() -> list[dict[str, Any]]:
        wall, now = time.time(), calls.clock.now()
        out = []
        for call in list(calls.calls.values()):
            try:
                stats = dict(call.leg.stats())
            except Exception:  # a leg that cannot count right now still shows
                stats = {}
            out.append(
                {
                    "call_id": call.id,
                    "call": call_info(call).summary(),
                    "started": round(wall - (now - call.started), 3),
                    "stats": stats,
                }
            )
        return out

    return EventHub(calls.bus, live, **kwargs)


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


def dashboard_routes(hub: EventHub | None) -> list[BaseRoute]:
    """The page (open: it holds no data, like the softphone's) and the stream (API token)."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "dashboard.html", headers=PAGE_HEADERS)

    async def events(request: Request) -> Response:
        client = hub.connect(_last_event_id(request)) if hub is not None else None
        if hub is None or client is None:
            reason = (
                "no event stream here" if hub is None
                else "shutting down" if hub.closed
                else "too many event streams"
            )  # fmt: skip
            return JSONResponse({"error": reason}, status_code=503)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        async with asyncio.timeout(hub.keepalive):
                            frame = await client.queue.get()
                    except TimeoutError:
                        yield ": keep-alive\n\n"  # finds a dead connection; proxies stay open
                        continue
                    if frame is None:
                        return
                    yield frame
            finally:
                hub.disconnect(client)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=_STREAM_HEADERS)

    return [
        Route(DASHBOARD_PATH, page, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
    ]
