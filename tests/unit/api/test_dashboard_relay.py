"""The other workers' calls on worker 0's dashboard (api/dashboard_relay.py): over real HTTP
(uvicorn on loopback), worker 0's hub reads a worker's own /events with the cluster token
while someone watches, hands its events on, keeps its live calls for later snapshots, and
stops reading when nobody watches; after a break, the new snapshot is compared with what it
had."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from callbridge.api.app import ApiConfig, create_app
from callbridge.api.dashboard import EventHub, dashboard_routes
from callbridge.api.dashboard_relay import WorkerRelay
from callbridge.api.server import HttpServer
from callbridge.core.bus import Bus
from callbridge.core.call_events import CallEnded, CallInfo, CallStarted, TranscriptLine

from .test_dashboard import data_of

CLUSTER_TOKEN = "cluster-secret"
INFO = CallInfo("call-on-w1", "sip", "inbound", "agent", "sip:alice@example.com", "voice", {})


class Worker:
    """Worker 1: its own hub behind its internal API (the cluster token)."""

    def __init__(self, stats: dict[str, Any]) -> None:
        root = Bus(name="root")
        self.bus = Bus(root, name="w1")
        self.live: list[dict[str, Any]] = []
        self.stats = stats
        self.hub = EventHub(self.bus, lambda: self.live, stats_every=0.05, keepalive=0.2)
        self.hub.install()
        app = create_app(
            ApiConfig(api_token=CLUSTER_TOKEN), extra_routes=dashboard_routes(self.hub)
        )
        self.server = HttpServer(app, "127.0.0.1", 0)

    def start_call(self) -> None:
        self.live.append({"call_id": INFO.call_id, "call": INFO.summary(), "started": 1.0,
                          "stats": self.stats})  # fmt: skip
        self.bus.publish(CallStarted(INFO, 1.0))

    def end_call(self) -> None:
        self.live.clear()
        self.bus.publish(CallEnded(INFO, 9.0, "remote_bye", 8.0, self.stats))


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    w = Worker({"jitter_ms": 3.5, "lost": 0})
    await w.server.start()
    try:
        yield w
    finally:
        w.hub.close()
        await w.server.stop()


async def next_data(client: Any, kind: str) -> dict[str, Any]:
    """The next frame of `kind` queued for a hub client (others skipped)."""
    while True:
        frame = await asyncio.wait_for(client.queue.get(), 5)
        assert frame is not None, "the stream ended"
        data = data_of(frame)
        if data["type"] == kind:
            return data


async def test_worker_0s_dashboard_shows_another_workers_call_while_someone_watches(
    worker: Worker,
) -> None:
    base = f"http://127.0.0.1:{worker.server.port}"
    relay = WorkerRelay("box/w1", base, CLUSTER_TOKEN)
    hub = EventHub(Bus(name="w0"))
    hub.relays = [relay]
    assert worker.hub.clients == 0  # nobody watches worker 0: nothing is read
    watcher = hub.connect()
    assert watcher is not None
    assert (await next_data(watcher, "snapshot"))["calls"] == []
    await asyncio.wait_for(relay.connected.wait(), 5)
    assert worker.hub.clients == 1

    worker.start_call()
    started = await next_data(watcher, "call.started")
    assert started["call_id"] == INFO.call_id and started["call"] == INFO.summary()
    worker.bus.root.publish(TranscriptLine(INFO.call_id, 2.0, "caller", "what time is it"))
    line = await next_data(watcher, "transcript.line")
    assert line["text"] == "what time is it"
    frame = await asyncio.wait_for(watcher.queue.get(), 5)  # the worker's periodic stats
    assert frame is not None and "id:" not in frame, frame  # not kept for replay
    assert data_of(frame) | {"at": 0} == {"type": "call.stats", "call_id": INFO.call_id,
                                          "at": 0, "stats": worker.stats}  # fmt: skip

    # Someone who opens the dashboard now gets worker 1's call in the first snapshot.
    late = hub.connect()
    assert late is not None
    [entry] = (await next_data(late, "snapshot"))["calls"]
    assert (entry["call_id"], entry["call"], entry["stats"]) == (
        INFO.call_id,
        INFO.summary(),
        worker.stats,
    )

    worker.end_call()
    ended = await next_data(watcher, "call.ended")
    assert (ended["call_id"], ended["reason"]) == (INFO.call_id, "remote_bye")
    assert relay.live() == []

    # Nobody watches any more: the relay stops.
    tasks = list(hub._relaying)
    hub.disconnect(watcher)
    hub.disconnect(late)
    done, _ = await asyncio.wait(tasks, timeout=5)
    assert done == set(tasks) and all(t.cancelled() for t in tasks)
    assert not relay.connected.is_set()
    hub.close()


async def test_a_relay_refused_by_the_worker_relays_nothing_and_retries(worker: Worker) -> None:
    base = f"http://127.0.0.1:{worker.server.port}"
    relay = WorkerRelay("box/w1", base, "not-the-cluster-token")
    events: list[dict[str, Any]] = []
    task = asyncio.ensure_future(relay.run(lambda ev, keep: events.append(ev)))
    try:
        worker.start_call()
        for tries in (1, 2):  # refused, then refused again after the pause
            await asyncio.wait_for(relay.broke.wait(), 5)
            relay.broke.clear()
            assert (relay.breaks, relay.last_break) == (tries, "status 401")
            assert not relay.connected.is_set()
        assert events == [] and relay.live() == []
    finally:
        task.cancel()


def test_after_a_break_the_new_snapshot_is_compared_with_what_was_known() -> None:
    relay = WorkerRelay("box/w1", "http://127.0.0.1:9", CLUSTER_TOKEN)
    out: list[tuple[str, str, bool]] = []

    def emit(ev: dict[str, Any], keep: bool) -> None:
        out.append((ev["type"], ev["call_id"], keep))

    def entry(call_id: str) -> dict[str, Any]:
        return {"call_id": call_id, "call": {"call_id": call_id}, "started": 1.0, "stats": {}}

    assert relay._apply({"type": "snapshot", "calls": [entry("a"), entry("b")]}, emit)
    assert out == [("call.started", "a", True), ("call.started", "b", True)]
    out.clear()
    # the stream broke; meanwhile a ended and c started
    assert relay._apply({"type": "snapshot", "calls": [entry("b"), entry("c")]}, emit)
    assert out == [("call.ended", "a", True), ("call.started", "c", True)]
    assert [c["call_id"] for c in relay.live()] == ["b", "c"]
    out.clear()
    assert not relay._apply({"type": "dropped", "reason": "too slow"}, emit)  # reconnect
    assert relay._apply({"type": "call.stats", "call_id": "zz", "stats": {}}, emit)
    assert out == [("call.stats", "zz", False)]
    relay.reset()
    assert relay.live() == []
