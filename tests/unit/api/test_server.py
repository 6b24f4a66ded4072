"""The gateway's HTTP server for real (uvicorn in the gateway's loop, real sockets): health,
bearer token, the signed media WebSocket end to end through the CallManager and the echo
agent, a real HTTP 403 on an unsigned upgrade, and a busy port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import numpy as np
import pytest
import websockets

from callbridge.api.server import HttpServer
from callbridge.audio.g711 import ulaw_encode
from callbridge.calls.manager import Call
from callbridge.config.settings import Settings, load_settings
from callbridge.gateway import Gateway, build_gateway

from .twilio_peer import FakeTwilioStream

TOKEN = "a" * 32
API_TOKEN = "api-secret"


def settings(tmp_path: object) -> Settings:
    s = load_settings(environ={})
    return replace(
        s,
        data_dir=str(tmp_path),
        default_agent="echo",
        api_token=API_TOKEN,
        shutdown_grace=2.0,
        sip=replace(s.sip, host="127.0.0.1", port=0),
        http=replace(s.http, port=0, enabled="true"),
        twilio=replace(s.twilio, auth_token=TOKEN),
    )


@pytest.fixture
async def gateway(tmp_path: object) -> AsyncIterator[Gateway]:
    gw = build_gateway(settings(tmp_path))
    await gw.start()
    yield gw
    await gw.stop()


def base(gw: Gateway) -> str:
    assert gw.http is not None
    return f"http://127.0.0.1:{gw.http.port}"


async def test_health_and_token(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=base(gateway)) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        denied = await c.get("/status")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
        wrong = await c.get("/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await c.get("/status", headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert ok.status_code == 200
        assert ok.json()["live_calls"] == 0
        # Twilio's routes take Twilio's signature, never the API token.
        twilio = await c.post(
            "/twilio/voice", headers={"Authorization": f"Bearer {API_TOKEN}"}, data={}
        )
        assert twilio.status_code == 403


async def test_unsigned_media_upgrade_gets_http_403(gateway: Gateway) -> None:
    url = base(gateway).replace("http", "ws") + "/twilio/media"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url)
    assert refused.value.response.status_code == 403


async def test_a_twilio_call_runs_end_to_end(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ended_call: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
    gateway.calls.on_end.append(lambda c: None if ended_call.done() else ended_call.set_result(c))
    url = base(gateway).replace("http", "ws") + "/twilio/media"
    t = np.arange(160 * 50) / 8000
    spoken = ulaw_encode((6000 * np.sin(2 * np.pi * 350 * t)).astype("<i2").tobytes())
    frames = [spoken[i : i + 160] for i in range(0, len(spoken), 160)]
    twilio = FakeTwilioStream(
        url,
        signed_url=url,  # no public_url configured: the URL as the server sees it
        auth_token=TOKEN,
        call_sid="CA" + "7" * 32,
        params={"agent": "echo", "from": "+15550001111"},
    )
    async with twilio:
        await twilio.send_audio(frames)
        echoed = await twilio.collect(len(spoken))
        assert gateway.twilio is not None and len(gateway.twilio.legs) == 1
        await twilio.stop()
        assert await twilio.wait_closed() == 1000
    call = await asyncio.wait_for(ended_call, 5)
    assert call.leg.end_reason == "twilio_stop"
    # G.711 codes survive decode/encode: the echo agent sent back exactly what it heard.
    assert echoed[: len(spoken)] == spoken
    events = [m["event"] for m in twilio.received]
    assert events.count("mark") >= len(frames) // 5
    assert all(m.get("streamSid") == twilio.stream_sid for m in twilio.received)
    ended = [r for r in caplog.records if r.msg == "call.ended"]
    assert ended and ended[0].__dict__["fields"]["reason"] == "twilio_stop"
    started = next(r for r in caplog.records if r.msg == "call.started").__dict__["fields"]
    assert (started["transport"], started["agent"]) == ("twilio", "echo")
    assert started["call_sid"] == twilio.call_sid


async def test_busy_port_fails_start() -> None:
    async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
        pass

    first = HttpServer(app, "127.0.0.1", 0)  # type: ignore[arg-type]
    await first.start()
    try:
        second = HttpServer(app, "127.0.0.1", first.port)  # type: ignore[arg-type]
        with pytest.raises(OSError):
            await second.start()
    finally:
        await first.stop()


async def test_http_is_on_by_default_on_loopback_and_off_when_switched_off(
    tmp_path: object,
) -> None:
    s = load_settings(environ={})
    default = build_gateway(replace(s, data_dir=str(tmp_path)))
    assert default.http is not None and default.webrtc is not None  # the softphone page
    off = replace(s, data_dir=str(tmp_path), http=replace(s.http, enabled="false"))
    assert build_gateway(off).http is None
    with_url = replace(s, public_url="https://voice.example.com")
    assert build_gateway(with_url).http is not None
    assert build_gateway(replace(with_url, http=replace(s.http, enabled="false"))).http is None
