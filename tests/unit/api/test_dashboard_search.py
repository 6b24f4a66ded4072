"""The dashboard's call history search: `list_calls(q=...)` on SQLite and PostgreSQL (the
store's `db` fixture runs each test on both) and `GET /calls?q=` of a real gateway, whose
/events stream shows the call live, its stats, its end and its recording."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.gateway import Gateway, build_gateway
from callbridge.store.db import SEARCH_WINDOW, CallRow, TurnRow, WorkerCallDb, like_pattern
from tests.unit.store.conftest import backend, db, postgres, postgres_url  # noqa: F401

from .test_calls_api import AUTH, client, settings

Db = WorkerCallDb[Any]


def row(n: int, started: float, frm: str, agent: str = "voice") -> CallRow:
    return CallRow(f"call-{n}", "sip", "inbound", frm, "agent", agent, started)


def turn(n: int, utterance: int, user: str, agent: str) -> TurnRow:
    return TurnRow(f"call-{n}", utterance, 0.0, user, agent, False)


def test_a_query_is_a_literal_substring_pattern() -> None:
    assert like_pattern("Bob") == "%bob%"
    assert like_pattern("50%_off!") == "%50!%!_off!!%"


async def test_search_by_caller_agent_or_words_any_case(db: Db) -> None:  # noqa: F811
    db.insert_call(row(1, 100.0, "sip:Alice@example.com"))
    db.insert_call(row(2, 200.0, "sip:bob@example.com", agent="echo"))
    db.insert_call(row(3, 300.0, "sip:carol@example.com"))
    db.insert_call(row(4, 400.0, "sip:dave@example.com"))
    db.save_turn(turn(3, 1, "", "Hello! How can I help?"))
    db.save_turn(turn(3, 2, "What TIME is it?", "It is ten past four."))
    db.save_turn(turn(4, 1, "100% sure", "ok"))
    db.end_call("call-1", ended=150.0, end_reason="remote_bye", recording_path=None,
                transcript_path=None)  # fmt: skip

    async def ids(q: str | None, **kw: Any) -> list[str]:
        return [c.id for c in await db.list_calls(q=q, **kw)]

    assert await ids("alice") == ["call-1"]  # the from URI, any case
    assert await ids("ECHO") == ["call-2"]  # the agent
    assert await ids("time was") == []  # not a phrase anyone said
    assert await ids("what time") == ["call-3"]  # the caller's words
    assert await ids("ten past") == ["call-3"]  # the agent's
    assert await ids("example.com") == ["call-4", "call-3", "call-2", "call-1"]  # newest first
    assert await ids("example.com", limit=2) == ["call-4", "call-3"]
    assert await ids("example.com", live=False) == ["call-1"]
    assert await ids("example.com", live=True) == ["call-4", "call-3", "call-2"]
    # wildcards are literal: "%" finds the turn that says it, "_" nothing
    assert await ids("%") == ["call-4"]
    assert await ids("_") == []
    assert await ids("") == ["call-4", "call-3", "call-2", "call-1"]  # no query: everything
    assert await ids(None) == ["call-4", "call-3", "call-2", "call-1"]


async def test_search_reads_only_the_newest_window_of_calls(db: Db) -> None:  # noqa: F811
    db.insert_call(row(0, 0.0, "sip:needle@old.example"))
    for n in range(1, SEARCH_WINDOW + 1):
        db.insert_call(row(n, float(n), f"sip:caller{n}@example.com"))
    await db.flush()
    assert [c.id for c in await db.list_calls(q="caller1@")] == ["call-1"]
    assert await db.list_calls(q="needle") == []  # older than the window: bounded cost
    assert [c.id for c in await db.list_calls(limit=1)] == [f"call-{SEARCH_WINDOW}"]


# ---- a real gateway ------------------------------------------------------------------------


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Gateway]]:
    api = build_gateway(settings(tmp_path / "api", http=True))
    callee = build_gateway(settings(tmp_path / "callee", http=False))
    assert api.events is not None and callee.events is None  # HTTP off: no stream
    api.events.stats_every = 0.1
    await api.start()
    await callee.start()
    try:
        yield api, callee
    finally:
        await api.stop()
        await callee.stop()


class Stream:
    """What an /events stream said so far; `until` wakes on each new event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._new = asyncio.Event()

    async def read(self, c: httpx.AsyncClient) -> None:
        async with c.stream("GET", "/events") as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))
                    self._new.set()

    async def until(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self._new.clear()
                await self._new.wait()


async def test_a_gateway_streams_a_call_and_finds_it_in_the_history(
    pair: tuple[Gateway, Gateway],
) -> None:
    api, callee = pair
    host, port = callee.sip.local_addr
    stream = Stream()
    seen = stream.events
    async with client(api) as c, httpx.AsyncClient(base_url=str(c.base_url), headers=AUTH,
                                                   timeout=None) as s:  # fmt: skip
        reader = asyncio.create_task(stream.read(s))
        await stream.until(lambda: bool(seen))  # the snapshot
        assert seen[0] == {"type": "snapshot", "at": seen[0]["at"], "calls": []}
        placed = await c.post("/calls", json={"to": f"sip:echo@{host}:{port}"})
        assert placed.status_code == 202, placed.text
        call_id = placed.json()["id"]

        def types() -> list[str]:
            return [e["type"] for e in seen if e.get("call_id") == call_id]

        await stream.until(lambda: "call.stats" in types())  # pushed while it is live
        stats = next(e for e in seen if e["type"] == "call.stats")["stats"]
        assert "jitter_ms" in stats and "lost" in stats, stats
        live = (await c.get("/calls", params={"q": "ECHO@"})).json()["calls"]
        assert [item["id"] for item in live] == [call_id]  # live: from the calls layer
        assert (await c.post(f"/calls/{call_id}/hangup")).status_code == 202
        await stream.until(lambda: "recording.ready" in types())
        started = next(e for e in seen if e["type"] == "call.started")
        ended = next(e for e in seen if e["type"] == "call.ended")
        assert started["call"]["remote_uri"].startswith("sip:echo@"), started
        assert ended["reason"] == "api" and ended["stats"]["rtp_in"] > 0, ended
        assert types().index("call.started") < types().index("call.ended")

        found = (await c.get("/calls", params={"q": "echo@", "live": "false"})).json()["calls"]
        assert [item["id"] for item in found] == [call_id] and found[0]["recording"]
        assert (await c.get("/calls", params={"q": "nobody"})).json() == {"calls": []}
        r = await c.get("/calls", params={"q": "x" * 101})
        assert (r.status_code, r.json()["field"]) == (422, "q")
        reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)


async def test_stopping_the_gateway_ends_the_streams_at_once(tmp_path: Path) -> None:
    gw = build_gateway(replace(settings(tmp_path, http=True), shutdown_grace=1.0))
    await gw.start()
    stream = Stream()
    async with client(gw) as c:
        reader = asyncio.create_task(stream.read(c))
        await stream.until(lambda: bool(stream.events))  # the snapshot
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await gw.stop()
        await asyncio.wait_for(reader, 2)  # the stream ended: it did not wait to be cut
    assert loop.time() - t0 < 2.5
