"""The dashboard's event stream (api/dashboard.py): each bus event as the JSON the page reads
(golden), the hub's routing (this gateway's calls only, agents' events from the root bus),
a slow client dropped without holding up the publisher, resuming with Last-Event-ID, and
over real HTTP (uvicorn on loopback): the token guard on /events (never a token in the URL),
the open page with its Content-Security-Policy, the SSE framing, the client limit."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from callbridge.api.app import ApiConfig, create_app
from callbridge.api.dashboard import EventHub, dashboard_routes, event_json
from callbridge.api.server import HttpServer
from callbridge.api.softphone import webrtc_routes
from callbridge.core.bus import Bus
from callbridge.core.call_events import (
    BargeIn,
    CallAnswered,
    CallEnded,
    CallInfo,
    CallStarted,
    Noted,
    RecordingReady,
    RegistrationChanged,
    TranscriptLine,
    TranscriptPartial,
    TranscriptReady,
    TranscriptRetracted,
    TurnMeasured,
)

TOKEN = "dash-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INFO = CallInfo("call-1-abc", "webrtc", "inbound", "agent", "webrtc:127.0.0.1:5000", "voice",
                {"webrtc_session": "s1"})  # fmt: skip


def frames(hub_client: Any) -> list[dict[str, Any]]:
    """The JSON of every frame queued for a client (None: the end of its stream)."""
    out = []
    q: asyncio.Queue[str | None] = hub_client.queue
    while not q.empty():
        frame = q.get_nowait()
        out.append({"end": True} if frame is None else data_of(frame))
    return out


def data_of(frame: str) -> dict[str, Any]:
    lines = [line for line in frame.split("\n") if line.startswith("data: ")]
    assert len(lines) == 1, frame
    return dict(json.loads(lines[0][6:]))


# ---- event -> JSON ------------------------------------------------------------------------


def test_each_event_becomes_the_json_the_page_reads() -> None:
    summary = INFO.summary()
    golden: list[tuple[object, dict[str, Any] | None]] = [
        (CallStarted(INFO, 10.0),
         {"type": "call.started", "call_id": "call-1-abc", "at": 10.0, "call": summary}),
        (CallAnswered(INFO, 10.5), {"type": "call.answered", "call_id": "call-1-abc", "at": 10.5}),
        (CallEnded(INFO, 20.0, "remote_bye", 9.5, {"jitter_ms": 3.25, "lost": 2}),
         {"type": "call.ended", "call_id": "call-1-abc", "at": 20.0, "call": summary,
          "reason": "remote_bye", "duration": 9.5, "stats": {"jitter_ms": 3.25, "lost": 2}}),
        (RecordingReady("call-1-abc", "/data/recordings/call-1-abc.wav", 9.4, 20.1),
         {"type": "recording.ready", "call_id": "call-1-abc", "at": 20.1, "seconds": 9.4}),
        (TranscriptReady("call-1-abc", "/data/transcripts/call-1-abc.json", 20.1),
         {"type": "transcript.ready", "call_id": "call-1-abc", "at": 20.1}),
        (TurnMeasured("call-1-abc", 12.0, 2, "It is ten.", voice_to_voice_ms=900,
                      stt_final_ms=200, brain_first_token_ms=300, tts_first_audio_ms=150),
         {"type": "turn", "call_id": "call-1-abc", "at": 12.0, "utterance": 2,
          "text": "It is ten.", "voice_to_voice_ms": 900, "stt_ms": 200, "brain_ms": 300,
          "tts_ms": 150}),
        (TurnMeasured("call-1-abc", 11.0, 1, "Hello!"),
         {"type": "turn", "call_id": "call-1-abc", "at": 11.0, "utterance": 1, "text": "Hello!",
          "voice_to_voice_ms": None, "stt_ms": None, "brain_ms": None, "tts_ms": None}),
        (BargeIn("call-1-abc", 13.0, 3, 55.5, 180, 60, "Sure, the"),
         {"type": "barge_in", "call_id": "call-1-abc", "at": 13.0, "utterance": 3,
          "decided_after_ms": 180, "silenced_after_ms": 60, "heard": "Sure, the"}),
        (TranscriptPartial("call-1-abc", 14.0, "what ti"),
         {"type": "transcript.partial", "call_id": "call-1-abc", "at": 14.0, "text": "what ti",
          "active": True}),
        (TranscriptLine("call-1-abc", 15.0, "caller", "what time is it"),
         {"type": "transcript.line", "call_id": "call-1-abc", "at": 15.0, "role": "caller",
          "text": "what time is it", "utterance": None, "interrupted": False, "said": ""}),
        (TranscriptLine("call-1-abc", 16.0, "agent", "Sure, the", 3, True, "Sure, the time is."),
         {"type": "transcript.line", "call_id": "call-1-abc", "at": 16.0, "role": "agent",
          "text": "Sure, the", "utterance": 3, "interrupted": True,
          "said": "Sure, the time is."}),
        (TranscriptRetracted("call-1-abc", 17.0),
         {"type": "transcript.retracted", "call_id": "call-1-abc", "at": 17.0}),
        # not streamed: the log's generic events, registrations (no call), anything else
        (Noted("agent.heard", {"text": "hi"}, "call-1-abc"), None),
        (RegistrationChanged("a", "registered", "sip:a@x", "sip:x", "", 200, 300, 0, 1.0), None),
        (object(), None),
    ]  # fmt: skip
    for ev, expected in golden:
        assert event_json(ev) == expected, ev
        if expected is not None:
            assert json.loads(json.dumps(expected)) == expected  # plain JSON


# ---- the hub ------------------------------------------------------------------------------


def buses() -> tuple[Bus, Bus]:
    """(root, gateway): a gateway's bus under its own root, as gateway.py builds them."""
    root = Bus(name="root")
    return root, Bus(root, name="gateway")


async def test_the_hub_streams_this_gateways_calls_with_the_agents_events_from_the_root() -> None:
    root, gw = buses()
    other = Bus(root, name="other-gateway")
    hub = EventHub(gw)
    hub.install()
    client = hub.connect()
    assert client is not None
    assert [f["type"] for f in frames(client)] == ["snapshot"]

    gw.publish(CallStarted(INFO, 1.0))
    root.publish(TranscriptLine("call-1-abc", 2.0, "caller", "hello"))  # the agents publish here
    root.publish(TranscriptLine("call-9-zzz", 2.0, "caller", "not ours"))  # another gateway's
    other.publish(CallStarted(CallInfo("call-9-zzz", "sip", "inbound", "a", "b", "echo"), 2.0))
    gw.publish(TurnMeasured("call-1-abc", 3.0, 1, "Hi"))  # reaches the root too: once
    root.publish(Noted("agent.heard", {"text": "hello"}, "call-1-abc"))
    gw.publish(CallEnded(INFO, 4.0, "remote_bye", 3.0, {"lost": 0}))
    root.publish(BargeIn("call-1-abc", 4.5, 2, 1.0, 100, 40, "late but ours"))  # still known

    got = frames(client)
    assert [(f["type"], f["call_id"]) for f in got] == [
        ("call.started", "call-1-abc"),
        ("transcript.line", "call-1-abc"),
        ("turn", "call-1-abc"),
        ("call.ended", "call-1-abc"),
        ("barge_in", "call-1-abc"),
    ]
    hub.close()
    assert frames(client) == [{"end": True}]
    root.publish(TranscriptLine("call-1-abc", 5.0, "caller", "after close"))
    assert root.subscribers == 0 and gw.subscribers == 0


async def test_a_slow_client_is_dropped_and_never_holds_up_the_publisher() -> None:
    _, gw = buses()
    hub = EventHub(gw, queue_size=8)
    hub.install()
    slow, fast = hub.connect(), hub.connect()
    assert slow is not None and fast is not None
    received: list[dict[str, Any]] = frames(fast)
    gw.publish(CallStarted(INFO, 0.0))
    for i in range(50):
        # publish() is synchronous: it returns with every queue served or dropped
        gw.publish(TranscriptReady("call-1-abc", "/t", float(i)))
        received += frames(fast)  # this one keeps up
    assert slow.dropped and not fast.dropped and hub.dropped == 1 and hub.clients == 1
    assert frames(slow) == [{"type": "dropped", "reason": "too slow"}, {"end": True}]
    assert len([f for f in received if f["type"] == "transcript.ready"]) == 50
    # the dropped stream reconnects where it left off or with a snapshot: never a gap
    again = hub.connect(last_id=3)
    assert again is not None and [f["type"] for f in frames(again)] == ["snapshot"]
    hub.close()


async def test_a_client_resumes_with_last_event_id_from_the_history() -> None:
    _, gw = buses()
    live = [{"call_id": "call-1-abc", "call": INFO.summary(), "started": 1.0, "stats": {}}]
    hub = EventHub(gw, lambda: live, history=4, queue_size=16)
    hub.install()
    first = hub.connect()
    assert first is not None
    snap = frames(first)[0]
    assert snap["type"] == "snapshot" and snap["calls"] == live
    gw.publish(CallStarted(INFO, 1.0))
    for i in range(3):
        gw.publish(TranscriptReady("call-1-abc", "/t", float(i)))
    # ids 1..4; a client that saw 2 gets 3 and 4
    resumed = hub.connect(last_id=2)
    assert resumed is not None
    assert [f["at"] for f in frames(resumed)] == [1.0, 2.0]
    up_to_date = hub.connect(last_id=4)
    assert up_to_date is not None and frames(up_to_date) == []
    for i in range(4):
        gw.publish(TranscriptReady("call-1-abc", "/t", float(10 + i)))
    # 2 is gone from a history of 4 (5..8 kept): a snapshot instead of a silent gap
    late = hub.connect(last_id=2)
    assert late is not None and [f["type"] for f in frames(late)] == ["snapshot"]
    future = hub.connect(last_id=999)  # a gateway that restarted: ids began again
    assert future is not None and [f["type"] for f in frames(future)] == ["snapshot"]
    hub.close()


async def test_events_from_another_thread_reach_the_streams_on_the_loop() -> None:
    root, gw = buses()
    hub = EventHub(gw)
    hub.install()
    client = hub.connect()
    assert client is not None
    frames(client)
    gw.publish(CallStarted(INFO, 1.0))
    worker = threading.Thread(target=lambda: root.publish(TranscriptPartial("call-1-abc", 2, "")))
    worker.start()
    worker.join()
    frame = await asyncio.wait_for(client.queue.get(), 2)
    frame = await asyncio.wait_for(client.queue.get(), 2)  # the first was call.started
    assert frame is not None and data_of(frame)["type"] == "transcript.partial"
    hub.close()


async def test_live_calls_stats_are_pushed_while_someone_watches() -> None:
    _, gw = buses()
    stats = {"jitter_ms": 4.5, "lost": 1}
    live = [{"call_id": "call-1-abc", "call": INFO.summary(), "started": 1.0, "stats": stats}]
    hub = EventHub(gw, lambda: live, stats_every=0.02)
    client = hub.connect()
    assert client is not None
    frames(client)
    frame = await asyncio.wait_for(client.queue.get(), 2)
    assert frame is not None and "id:" not in frame  # not numbered: not replayed either
    assert data_of(frame) | {"at": 0} == {"type": "call.stats", "call_id": "call-1-abc",
                                          "at": 0, "stats": stats}  # fmt: skip
    hub.disconnect(client)
    assert hub._ticker is None  # nobody watches: no work
    hub.close()


def test_bad_hub_settings_are_refused() -> None:
    _, gw = buses()
    for kw in ({"queue_size": 1}, {"max_clients": 0}, {"stats_every": 0}, {"history": -1}):
        with pytest.raises(ValueError):
            EventHub(gw, **kw)  # type: ignore[arg-type]


# ---- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, EventHub, Bus]]:
    """A token-guarded app with the dashboard routes, served on loopback."""
    _, gw = buses()
    hub = EventHub(gw, max_clients=2, keepalive=0.2)
    hub.install()
    routes = [*dashboard_routes(hub), *webrtc_routes(None, ["agent"])]  # webrtc: the assets
    server = HttpServer(create_app(ApiConfig(api_token=TOKEN), extra_routes=routes), "127.0.0.1", 0)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", hub, gw
    finally:
        hub.close()
        await server.stop()


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """(id, data) of each event of a stream (comments and retry lines skipped)."""
    block: list[str] = []
    async for line in response.aiter_lines():
        if line:
            block.append(line)
            continue
        ids = [b[4:] for b in block if b.startswith("id: ")]
        data = [b[6:] for b in block if b.startswith("data: ")]
        block = []
        if data:
            yield (ids[0] if ids else None), json.loads("".join(data))


async def test_events_need_the_token_and_never_take_it_from_the_url(
    served: tuple[str, EventHub, Bus],
) -> None:
    base, hub, _ = served
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/events")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        for params in ({"token": TOKEN}, {"access_token": TOKEN}, {"api_token": TOKEN}):
            r = await c.get("/events", params=params)
            assert r.status_code == 401, params
        r = await c.get("/events", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        # The page and its assets are open (they hold no data) and locked down.
        page = await c.get("/dashboard")
        assert page.status_code == 200 and 'data-testid="login"' in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp, csp
        assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        for asset in ("dashboard.js", "dashboard-media.js", "dashboard.css"):
            r = await c.get(f"/app/{asset}")
            assert r.status_code == 200 and len(r.content) > 500, asset
    assert hub.clients == 0


async def test_the_stream_over_http_snapshot_then_events_then_the_end(
    served: tuple[str, EventHub, Bus],
) -> None:
    base, hub, gw = served
    async with (
        httpx.AsyncClient(base_url=base, headers=AUTH, timeout=5) as c,
        c.stream("GET", "/events") as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        events = sse(r)
        first_id, snap = await anext(events)
        assert snap["type"] == "snapshot" and snap["calls"] == [] and first_id == "0"
        assert hub.clients == 1
        gw.publish(CallStarted(INFO, 1.0))
        gw.publish(TranscriptLine("call-1-abc", 2.0, "agent", "two\nlines </script>", 1))
        got = [await anext(events), await anext(events)]
        assert [(i, d["type"]) for i, d in got] == [("1", "call.started"), ("2", "transcript.line")]
        assert got[1][1]["text"] == "two\nlines </script>"
        # a third stream is one too many (max_clients=2)
        async with c.stream("GET", "/events") as second:
            assert second.status_code == 200
            refused = await c.get("/events")
            assert refused.status_code == 503, refused.text
        hub.close()  # the gateway stopping: every stream ends
        rest = [d async for _, d in events]
        assert rest == []
    assert hub.clients == 0  # its stream left the hub before it ended


async def test_a_reconnecting_stream_gets_what_it_missed(
    served: tuple[str, EventHub, Bus],
) -> None:
    base, _, gw = served
    gw.publish(CallStarted(INFO, 1.0))
    gw.publish(CallEnded(INFO, 2.0, "remote_bye", 1.0, {"jitter_ms": 2.0, "lost": 0}))
    gw.publish(RecordingReady("call-1-abc", "/r.wav", 1.0, 2.0))
    headers = {**AUTH, "Last-Event-ID": "1"}
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=5) as c,
        c.stream("GET", "/events") as r,
    ):
        events = sse(r)
        got = [await anext(events), await anext(events)]
    assert [(i, d["type"]) for i, d in got] == [("2", "call.ended"), ("3", "recording.ready")]
    assert got[0][1]["stats"] == {"jitter_ms": 2.0, "lost": 0}
