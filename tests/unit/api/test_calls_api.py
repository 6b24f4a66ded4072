"""The REST API for real: two gateways in this process on loopback (uvicorn, SIP, RTP). The
API gateway places a call to the other's echo agent with POST /calls, lists, inspects, sends
DTMF, hangs up, serves the recording and the metrics; its webhooks reach a local receiver.
Also: the token on every route, the start-up refusal without one, validation errors, and
the OpenAPI document covering every route."""

from __future__ import annotations

import asyncio
import io
import logging
import wave
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from callbridge.calls.manager import Call
from callbridge.config.settings import Settings, load_settings
from callbridge.core.errors import ConfigError
from callbridge.gateway import Gateway, build_gateway
from callbridge.observability.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

from ..observability.receiver import WebhookReceiver

TOKEN = "api-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "hook-secret"


def settings(data: Path, *, http: bool, webhook_url: str = "") -> Settings:
    s = load_settings(environ={})
    return replace(
        s,
        data_dir=str(data),
        default_agent="echo",
        api_token=TOKEN,
        shutdown_grace=2.0,
        sip=replace(s.sip, host="127.0.0.1", port=0),
        http=replace(s.http, port=0, enabled="true" if http else "false"),
        webhooks=replace(s.webhooks, url=webhook_url, secret=SECRET if webhook_url else ""),
    )


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
async def pair(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """(api, callee): the API gateway and an echo gateway it can call."""
    logging.getLogger("callbridge").setLevel(logging.INFO)
    api = build_gateway(settings(tmp_path / "api", http=True, webhook_url=receiver.url))
    callee = build_gateway(settings(tmp_path / "callee", http=False))
    await api.start()
    await callee.start()
    try:
        yield api, callee
    finally:
        await api.stop()
        await callee.stop()


def client(gw: Gateway) -> httpx.AsyncClient:
    assert gw.http is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http.port}", headers=AUTH)


def ended_future(gw: Gateway) -> asyncio.Future[Call]:
    fut: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    gw.calls.on_end.append(lambda call: None if fut.done() else fut.set_result(call))
    return fut


async def test_originate_list_inspect_dtmf_hangup_recording_metrics_webhooks(
    pair: tuple[Gateway, Gateway], receiver: WebhookReceiver
) -> None:
    api, callee = pair
    host, port = callee.sip.local_addr
    ended = ended_future(api)
    async with client(api) as c:
        placed = await c.post("/calls", json={"to": f"sip:echo@{host}:{port}"})
        assert placed.status_code == 202, placed.text
        call_id = placed.json()["id"]

        live = (await c.get("/calls", params={"live": "true"})).json()["calls"]
        assert [item["id"] for item in live] == [call_id]
        assert live[0]["direction"] == "outbound" and live[0]["live"] is True
        assert (await c.get("/calls", params={"live": "false"})).json() == {"calls": []}

        detail = (await c.get(f"/calls/{call_id}")).json()
        assert detail["id"] == call_id and detail["legs"][0]["transport"] == "sip"
        assert detail["legs"][0]["ids"]["sip_call_id"]

        sent = await c.post(f"/calls/{call_id}/dtmf", json={"digits": "12#"})
        assert sent.status_code == 202, sent.text

        # /say needs an agent that speaks text (the voice agent: tests/peers/test_say.py).
        for body, field in (({"text": " "}, "text"), ({"text": "x" * 2001}, "text"),
                            ({"text": "hi", "interrupt": "yes"}, "interrupt")):  # fmt: skip
            r = await c.post(f"/calls/{call_id}/say", json=body)
            assert (r.status_code, r.json()["field"]) == (422, field), r.text
        r = await c.post(f"/calls/{call_id}/say", json={"text": "hello"})
        assert r.status_code == 409 and "echo" in r.json()["error"], r.text

        hung = await c.post(f"/calls/{call_id}/hangup")
        assert hung.status_code == 202
        call = await asyncio.wait_for(ended, 10)
        assert call.id == call_id and call.leg.end_reason == "api"

        gone = await c.post(f"/calls/{call_id}/hangup")
        assert gone.status_code == 409, gone.text
        over = (await c.get("/calls", params={"live": "false"})).json()["calls"]
        assert [item["id"] for item in over] == [call_id]
        assert over[0]["end_reason"] == "api"

        detail = (await c.get(f"/calls/{call_id}")).json()
        assert detail["ended"] is not None
        assert "call.started" in {e["name"] for e in detail["events"]}
        assert detail["transcript"] is not None  # written even for the echo agent

        wav = await c.get(f"/calls/{call_id}/recording")
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(wav.content)) as w:
            assert (w.getnchannels(), w.getframerate()) == (2, 8000)

        text = (await c.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ended_by = {
        s.labels["reason"]: s.value
        for s in families["callbridge_calls_ended"].samples
        if s.name.endswith("_total")
    }
    assert ended_by == {"api": 1}
    assert families["callbridge_active_calls"].samples[0].value == 0

    hook = await receiver.wait_for_type("call.ended")
    assert hook.json["data"]["call_id"] == call_id and hook.json["data"]["reason"] == "api"
    assert verify(
        SECRET, hook.headers[TIMESTAMP_HEADER.lower()], hook.body,
        hook.headers[SIGNATURE_HEADER.lower()],
    )  # fmt: skip
    await receiver.wait_for_type("recording.ready")
    types = [d.json["type"] for d in receiver.deliveries]
    assert types[:2] == ["call.started", "call.answered"]


async def test_a_refused_call_reports_the_sip_status(pair: tuple[Gateway, Gateway]) -> None:
    api, callee = pair
    host, port = callee.sip.local_addr
    async with client(api) as c:
        refused = await c.post("/calls", json={"to": f"sip:nobody@{host}:{port}"})
    assert refused.status_code == 502, refused.text
    assert (refused.json()["sip_status"], refused.json()["result"]) == (404, "rejected")


async def test_an_unanswered_call_gives_up_at_its_ring_timeout(tmp_path: Path) -> None:
    """A far end that never answers (a socket that swallows the INVITE): 504, no_answer."""
    import socket

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        gw = build_gateway(settings(tmp_path, http=True))
        await gw.start()
        try:
            async with client(gw) as c:
                target = f"sip:nobody@127.0.0.1:{sink.getsockname()[1]}"
                r = await c.post("/calls", json={"to": target, "ring_timeout": 1.5}, timeout=10)
                assert r.status_code == 504, r.text
                assert r.json()["result"] == "no_answer", r.text
                for bad in (0, 601, "10", True):
                    r = await c.post("/calls", json={"to": target, "ring_timeout": bad})
                    assert (r.status_code, r.json()["field"]) == (422, "ring_timeout"), r.text
        finally:
            await gw.stop()
    finally:
        sink.close()


async def test_validation_errors_name_the_field(pair: tuple[Gateway, Gateway]) -> None:
    api, _ = pair
    async with client(api) as c:
        r = await c.post("/calls", content=b"not json")
        assert r.status_code == 400
        r = await c.post("/calls", json=["to"])
        assert r.status_code == 400
        r = await c.post("/calls", json={})
        assert (r.status_code, r.json()["field"]) == (422, "to")
        r = await c.post("/calls", json={"to": 5})
        assert (r.status_code, r.json()["field"]) == (422, "to")
        r = await c.post("/calls", json={"to": "sip:a@127.0.0.1", "agent": "nope"})
        assert (r.status_code, r.json()["field"]) == (422, "agent")
        r = await c.post("/calls", json={"to": "sip:a@127.0.0.1", "account": "nope"})
        assert (r.status_code, r.json()["field"]) == (422, "account")
        r = await c.post("/calls", json={"to": "not a uri"})
        assert (r.status_code, r.json()["field"]) == (422, "to")
        r = await c.post("/calls", json={"to": "sip:a@127.0.0.1", "listen": "yes"})
        assert (r.status_code, r.json()["field"]) == (422, "listen")
        # This machine has no sound card: nothing is dialled, and the answer says why.
        r = await c.post("/calls", json={"to": "sip:a@127.0.0.1", "listen": True})
        assert (r.status_code, r.json()["field"]) == (409, "listen"), r.text
        assert "no audio device" in r.json()["error"]
        r = await c.get("/calls", params={"live": "maybe"})
        assert (r.status_code, r.json()["field"]) == (422, "live")
        r = await c.get("/calls", params={"limit": "0"})
        assert (r.status_code, r.json()["field"]) == (422, "limit")
        for method, path in (
            ("GET", "/calls/call-x"),
            ("GET", "/calls/call-x/recording"),
            ("POST", "/calls/call-x/hangup"),
            ("POST", "/calls/call-x/transfer"),
            ("POST", "/calls/call-x/say"),
        ):
            r = await c.request(method, path, json={"target": "sip:x@127.0.0.1"})
            assert r.status_code == 404, (path, r.text)
            assert "error" in r.json()
        assert (await c.get("/registrations")).json() == {"registrations": []}


async def test_every_route_but_healthz_and_twilio_needs_the_token(
    pair: tuple[Gateway, Gateway],
) -> None:
    api, _ = pair
    assert api.http is not None
    app = api.http.app
    routes = [r for r in app.routes if isinstance(r, Route)]  # type: ignore[attr-defined]
    checked = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.http.port}") as c:
        for route in routes:
            # open: health, Twilio's (signed), the softphone and dashboard pages (what they
            # call needs the token: /webrtc/*, /events)
            if route.path in ("/healthz", "/", "/dashboard") or route.path.startswith("/twilio/"):
                continue
            path = route.path.replace("{call_id}", "call-x")
            for method in route.methods or ():
                if method == "HEAD":
                    continue
                r = await c.request(method, path)
                assert r.status_code == 401, (method, path, r.status_code)
                wrong = await c.request(method, path, headers={"Authorization": "Bearer no"})
                assert wrong.status_code == 401, (method, path)
                checked += 1
    assert checked >= 11


async def test_openapi_document_describes_every_route(pair: tuple[Gateway, Gateway]) -> None:
    api, _ = pair
    assert api.http is not None
    async with client(api) as c:
        r = await c.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    app = api.http.app
    for route in app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, Route) or route.path.startswith("/twilio/"):
            continue
        assert route.path in doc["paths"], route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][route.path], (method, route.path)


def test_start_up_refuses_a_public_api_without_a_token() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={"CALLBRIDGE_HTTP_HOST": "0.0.0.0"})
    assert refused.value.args and "api_token" in str(refused.value)
    assert "CALLBRIDGE_API_TOKEN" in str(refused.value)
    ok = load_settings(environ={"CALLBRIDGE_HTTP_HOST": "0.0.0.0", "CALLBRIDGE_API_TOKEN": "t"})
    assert ok.http.host == "0.0.0.0"


def test_webhook_settings_need_a_secret_which_is_never_shown() -> None:
    with pytest.raises(ConfigError, match=r"webhooks\.secret"):
        load_settings(environ={"CALLBRIDGE_WEBHOOKS_URL": "http://127.0.0.1:9/h"})
    s = load_settings(
        environ={
            "CALLBRIDGE_WEBHOOKS_URL": "http://127.0.0.1:9/h/",
            "CALLBRIDGE_WEBHOOKS_SECRET": "s3",
        }
    )
    assert (s.webhooks.url, s.webhooks.secret) == ("http://127.0.0.1:9/h/", "s3")
    assert "s3" not in repr(s.webhooks)
    with pytest.raises(ConfigError, match=r"webhooks\.url"):
        load_settings(
            environ={"CALLBRIDGE_WEBHOOKS_URL": "ftp://x", "CALLBRIDGE_WEBHOOKS_SECRET": "s"}
        )


async def test_placing_a_call_is_refused_like_an_incoming_one(
    pair: tuple[Gateway, Gateway],
) -> None:
    """The API's calls go through the same admission: a saturated store (its writes behind)
    or a draining gateway answers 503 and dials nothing."""
    api, _ = pair
    store = api.calls.store
    assert store is not None
    async with client(api) as c:
        store.io.saturated = True
        try:
            r = await c.post("/calls", json={"to": "sip:echo@127.0.0.1:9"})
            assert (r.status_code, r.json()["error"]) == (503, "call store saturated"), r.text
        finally:
            store.io.saturated = False
        api.calls.accepting = False
        r = await c.post("/calls", json={"to": "sip:echo@127.0.0.1:9"})
        assert (r.status_code, r.json()["error"]) == (503, "shutting down"), r.text
