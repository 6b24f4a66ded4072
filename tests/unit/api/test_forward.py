"""api/forward.py: worker 0's API hands live-call actions on another worker's call (by the
gateway id its row carries in the shared database) to that worker's internal API, and returns
the answer unchanged; 503 naming the worker when it does not answer; never forwarded twice;
a lone gateway (no forwarding) answers as before."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from callbridge.agents.echo import EchoAgent
from callbridge.api.app import ApiConfig, create_app
from callbridge.api.calls import CallsApi
from callbridge.api.forward import (
    CLUSTER_APIS_ENV,
    CLUSTER_TOKEN_ENV,
    FORWARDED_HEADER,
    Forwarding,
    encode_apis,
    live_gateway,
)
from callbridge.api.server import HttpServer
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.bus import Bus
from callbridge.store.rows import CallRow
from callbridge.store.service import Store, StoreConfig, build_store

PUBLIC = "public-token"
SECRET = "cluster-secret"
W1 = "http://127.0.0.1:9"  # never dialled: the mock transport answers
AUTH = {"Authorization": f"Bearer {PUBLIC}"}

Handler = Callable[[httpx.Request], Any]


def row(call_id: str, *, ended: float | None = None) -> CallRow:
    return CallRow(
        call_id, "sip", "inbound", "sip:a@x", "sip:echo@y", "echo", 1.0, 1.0, ended,
        "remote_bye" if ended else None, ids={"sip_call_id": call_id},
    )  # fmt: skip


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A shared database as worker 0 sees it: calls written by w1, w0 and another machine."""
    st = build_store(
        StoreConfig(tmp_path, fsync=False, recording=False, transcripts=False, gateway_id="box/w0")
    )
    for gateway, r in (
        ("box/w1", row("call-w1")),
        ("box/w1", row("call-w1-ended", ended=2.0)),
        ("other/w1", row("call-elsewhere")),
        ("box/w0", row("call-w0-lost")),  # a live row of our own that we do not hold
    ):
        st.db.gateway = gateway  # type: ignore[attr-defined]
        st.db.insert_call(r)
    st.db.gateway = "box/w0"  # type: ignore[attr-defined]
    await st.db.flush()
    try:
        yield st
    finally:
        await st.aclose()


def manager(store: Store) -> CallManager:
    router = Router({"echo": EchoAgent}, "echo")
    return CallManager(router, LoopClock(), store=store, bus=Bus(name="test"))


class Worker1:
    """The mock of worker 1's internal API: records what reached it, answers `reply`."""

    def __init__(self, reply: Handler | None = None) -> None:
        self.seen: list[httpx.Request] = []
        self.reply = reply or (lambda r: httpx.Response(202, json={"from": "w1"}))

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.seen.append(request)
        answer = self.reply(request)
        if asyncio.iscoroutine(answer):
            answer = await answer
        return cast(httpx.Response, answer)


def api_client(
    calls: CallManager, forwarding: Forwarding | None, token: str = PUBLIC
) -> httpx.AsyncClient:
    app = create_app(
        ApiConfig(api_token=token),
        calls=calls,
        extra_routes=CallsApi(calls, forwarding=forwarding).routes(),
    )
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://w0",
        headers={"Authorization": f"Bearer {token}"},
    )


def forwarding(worker: Worker1, **kw: Any) -> Forwarding:
    return Forwarding({"box/w1": W1}, SECRET, transport=httpx.MockTransport(worker), **kw)


async def test_hangup_of_worker_1s_call_is_forwarded_and_its_answer_returned(store: Store) -> None:
    w1 = Worker1(lambda r: httpx.Response(202, json={"id": "call-w1", "status": "hanging_up"}))
    async with api_client(manager(store), forwarding(w1)) as c:
        r = await c.post("/calls/call-w1/hangup", params={"why": "a b"})
    assert (r.status_code, r.json()) == (202, {"id": "call-w1", "status": "hanging_up"})
    [sent] = w1.seen
    assert sent.method == "POST"
    assert str(sent.url) == f"{W1}/calls/call-w1/hangup?why=a+b"
    # the cluster's secret, never the caller's public token
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.headers[FORWARDED_HEADER] == "1"


@pytest.mark.parametrize(
    ("action", "body", "status", "answer"),
    [
        ("dtmf", {"digits": "12#"}, 202, {"id": "call-w1", "digits": "12#"}),
        ("say", {"text": "hello", "interrupt": True}, 409, {"error": "echo does not speak"}),
        ("transfer", {"target": "sip:bob@z"}, 502, {"ok": False, "reason": "486 Busy Here"}),
        ("dtmf", {"digits": "xyz"}, 422, {"error": "digits may only hold", "field": "digits"}),
    ],
)
async def test_every_action_carries_its_body_and_gets_the_workers_status_and_body(
    store: Store, action: str, body: dict[str, Any], status: int, answer: dict[str, Any]
) -> None:
    w1 = Worker1(lambda r: httpx.Response(status, json=answer))
    async with api_client(manager(store), forwarding(w1)) as c:
        r = await c.post(f"/calls/call-w1/{action}", json=body)
    assert (r.status_code, r.json()) == (status, answer)
    [sent] = w1.seen
    assert sent.url.path == f"/calls/call-w1/{action}"
    assert json.loads(sent.content) == body
    assert sent.headers["content-type"] == "application/json"


async def test_get_call_of_a_live_call_elsewhere_is_the_workers_with_live_stats(
    store: Store,
) -> None:
    detail = {"id": "call-w1", "legs": [{"stats": {"rtp_in": 50}}]}
    w1 = Worker1(lambda r: httpx.Response(200, json=detail))
    async with api_client(manager(store), forwarding(w1)) as c:
        r = await c.get("/calls/call-w1")
        assert (r.status_code, r.json()) == (200, detail)
        assert [s.method for s in w1.seen] == ["GET"]
        # an ended call is the database's: answered here, as before
        ended = await c.get("/calls/call-w1-ended")
        assert ended.status_code == 200 and ended.json()["legs"][0]["ended"] is True
        assert (await c.get("/calls/nope")).status_code == 404
    assert len(w1.seen) == 1


@pytest.mark.parametrize(
    "call_id",
    ["call-w1-ended", "call-elsewhere", "call-w0-lost", "nope"],
)
async def test_what_is_not_a_live_call_of_a_known_worker_is_answered_here(
    store: Store, call_id: str
) -> None:
    """Ended, another machine's gateway in the shared database, our own lost row, unknown."""
    w1 = Worker1()
    async with api_client(manager(store), forwarding(w1)) as c:
        r = await c.post(f"/calls/{call_id}/hangup")
    assert r.status_code == (404 if call_id == "nope" else 409), r.text
    assert w1.seen == []


async def test_a_forwarded_request_is_never_forwarded_again(store: Store) -> None:
    w1 = Worker1()
    async with api_client(manager(store), forwarding(w1)) as c:
        r = await c.post("/calls/call-w1/hangup", headers={FORWARDED_HEADER: "1"})
    assert r.status_code == 409 and "has ended" in r.json()["error"]
    assert w1.seen == []


async def test_a_call_this_worker_holds_is_acted_on_here(store: Store) -> None:
    calls = manager(store)
    hung: list[str] = []
    done = asyncio.Event()

    async def hangup(reason: str) -> None:
        hung.append(reason)
        done.set()

    calls.calls["call-w1"] = cast(
        Call, SimpleNamespace(id="call-w1", leg=SimpleNamespace(hangup=hangup))
    )
    w1 = Worker1()
    async with api_client(calls, forwarding(w1)) as c:
        r = await c.post("/calls/call-w1/hangup")
        await asyncio.wait_for(done.wait(), 2)  # the hang-up task the handler started
    assert r.status_code == 202 and hung == ["api"]
    assert w1.seen == []


async def test_a_lone_gateway_does_not_forward(store: Store) -> None:
    async with api_client(manager(store), None) as c:
        r = await c.post("/calls/call-w1/hangup")
    assert r.status_code == 409


def _connect_refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize(
    ("reply", "says"),
    [(_connect_refused, "did not answer (ConnectError)"), (_read_timeout, "within 5 s")],
)
async def test_a_worker_that_does_not_answer_is_503_naming_it(
    store: Store, reply: Handler, says: str
) -> None:
    async with api_client(manager(store), forwarding(Worker1(reply))) as c:
        r = await c.post("/calls/call-w1/hangup")
    assert r.status_code == 503
    body = r.json()
    assert body["worker"] == "w1"
    assert "worker w1 (box/w1)" in body["error"] and says in body["error"]


async def test_the_deadline_covers_the_whole_exchange(store: Store) -> None:
    never: asyncio.Future[httpx.Response] = asyncio.get_running_loop().create_future()

    async def hang(request: httpx.Request) -> httpx.Response:
        return await never

    async with api_client(manager(store), forwarding(Worker1(hang), deadline=0.05)) as c:
        r = await c.post("/calls/call-w1/hangup")
    assert r.status_code == 503 and "within 0.05 s" in r.json()["error"]


async def test_a_worker_refusing_the_cluster_token_is_502_not_the_callers_401(
    store: Store,
) -> None:
    w1 = Worker1(lambda r: httpx.Response(401, json={"error": "missing or wrong bearer token"}))
    async with api_client(manager(store), forwarding(w1)) as c:
        r = await c.post("/calls/call-w1/hangup")
    assert r.status_code == 502 and "refused the cluster's token" in r.json()["error"]


async def test_over_real_http_the_internal_api_takes_the_secret_and_answers_as_itself(
    store: Store,
) -> None:
    """Worker 1's app behind uvicorn on loopback with the cluster's secret as its token:
    worker 0's forward gets in; worker 1 does not hold the call (its row is live), so it
    answers 409 as a lone gateway would, and does not forward it anywhere."""
    w1_calls = manager(store)
    w1_app = create_app(
        ApiConfig(api_token=SECRET), calls=w1_calls, extra_routes=CallsApi(w1_calls).routes()
    )
    server = HttpServer(w1_app, "127.0.0.1", 0)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as direct:
            assert (await direct.post("/calls/call-w1/hangup")).status_code == 401
        for token, status in ((SECRET, 409), ("wrong", 502)):
            fw = Forwarding({"box/w1": base}, token)
            async with api_client(manager(store), fw) as c:
                r = await c.post("/calls/call-w1/hangup")
            assert r.status_code == status, r.text
    finally:
        await server.stop()


async def test_nothing_listening_is_503(store: Store) -> None:
    probe = HttpServer(create_app(ApiConfig()), "127.0.0.1", 0)
    await probe.start()
    port = probe.port
    await probe.stop()  # the port is free again: connection refused
    fw = Forwarding({"box/w1": f"http://127.0.0.1:{port}"}, SECRET)
    async with api_client(manager(store), fw) as c:
        r = await c.post("/calls/call-w1/dtmf", json={"digits": "1"})
    assert r.status_code == 503 and r.json()["worker"] == "w1"


async def test_live_gateway_reads_the_row_of_a_live_call(store: Store) -> None:
    assert await live_gateway(store.db, "call-w1") == "box/w1"
    assert await live_gateway(store.db, "call-w1-ended") is None
    assert await live_gateway(store.db, "nope") is None


def test_forwarding_from_the_environment() -> None:
    apis = {"box/w1": "http://127.0.0.1:8082", "box/w2": "http://127.0.0.1:8083"}
    env = {CLUSTER_TOKEN_ENV: SECRET, CLUSTER_APIS_ENV: encode_apis(apis)}
    fw = Forwarding.from_environ(env)
    assert fw is not None and dict(fw.apis) == apis and fw.token == SECRET
    assert SECRET not in repr(fw)
    for broken in (
        {},
        {CLUSTER_TOKEN_ENV: SECRET},  # workers 1..N-1: the secret only
        {CLUSTER_APIS_ENV: env[CLUSTER_APIS_ENV]},
        {**env, CLUSTER_APIS_ENV: "not json"},
        {**env, CLUSTER_APIS_ENV: "[1, 2]"},
        {**env, CLUSTER_APIS_ENV: "{}"},
    ):
        assert Forwarding.from_environ(broken) is None, broken
