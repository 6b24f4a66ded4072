"""HTTP and WebSocket limits (issue 9, D6/D7): request bodies over the limit get 413 before
they are read whole, deeply nested JSON gets 400 (not a RecursionError's 500), errors echo
clipped values only; a Twilio media message over the size limit closes its stream with 1009,
through the ASGI app and through a real uvicorn (whose own frame limit refuses it first),
at idle-level CPU cost."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from callbridge.api.app import ApiConfig, create_app
from callbridge.api.calls import MAX_DTMF_DIGITS, CallsApi
from callbridge.api.limits import MAX_JSON_DEPTH, BodyLimit, clip, json_depth
from callbridge.api.server import HttpServer
from callbridge.api.twilio import TwilioWebConfig
from callbridge.config.settings import load_settings
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.errors import ConfigError
from callbridge.core.ports import CallLeg, LegInfo
from callbridge.gateway import Gateway, build_gateway
from callbridge.transports.twilio.leg import TwilioLeg, TwilioLegConfig
from callbridge.transports.twilio.transport import TwilioTransport
from callbridge.twilio_streams.messages import Connected, Media, Start, dumps

with warnings.catch_warnings():
    # starlette 1.x would rather drive its TestClient with httpx2; httpx works the same here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

TOKEN = "api-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIB = 1 << 20
SID = "MZ" + "3" * 32
CALL_SID = "CA" + "1" * 32


def gateway(tmp_path: Path, **http: Any) -> Gateway:
    s = load_settings(environ={})
    return build_gateway(
        replace(
            s,
            data_dir=str(tmp_path),
            default_agent="echo",
            api_token=TOKEN,
            sip=replace(s.sip, host="127.0.0.1", port=0),
            http=replace(s.http, port=0, enabled="true", **http),
        )
    )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's real ASGI app (every route, every middleware), in process."""
    gw = gateway(tmp_path)
    assert gw.http is not None
    transport = httpx.ASGITransport(app=gw.http.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=AUTH) as c:
        yield c


# ---- request bodies ------------------------------------------------------------------------------


async def test_a_10_mb_body_gets_413_and_is_not_echoed(api: httpx.AsyncClient) -> None:
    body = b'{"to": "' + b"x" * (10 * MIB) + b'"}'
    r = await api.post("/calls", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": f"the request body is over the limit of {MIB} bytes"}
    assert len(r.content) < 200


async def test_a_chunked_body_is_counted_and_cut_off(api: httpx.AsyncClient) -> None:
    """No Content-Length to refuse early: the count stops the read just past the limit."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 10 * MIB:
            sent += 64 * 1024
            yield b"[" * (64 * 1024)

    r = await api.post("/calls", content=chunks())
    assert r.status_code == 413
    assert sent <= MIB + 64 * 1024  # read one chunk past the limit, never the rest


async def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    reads = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        raise AssertionError("the app must not run")

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/calls",
        "headers": [(b"content-length", str(10 * MIB).encode())],
    }
    await BodyLimit(app, max_bytes=MIB)(scope, receive, send)
    assert reads == 0
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"a":' * 100_000, b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)],
    ids=["100k-arrays", "100k-objects", "one-too-deep"],
)
async def test_deep_json_gets_400_with_a_clear_message(api: httpx.AsyncClient, body: bytes) -> None:
    r = await api.post("/calls", content=body)
    assert r.status_code == 400
    assert r.json() == {"error": f"the body's JSON nests deeper than {MAX_JSON_DEPTH} levels"}


async def test_json_within_the_depth_and_brackets_in_strings_are_fine(
    api: httpx.AsyncClient,
) -> None:
    deep_ok = {
        "to": "sip:a@b",
        "x": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)),
    }
    brackets = {"to": "sip:a@b", "agent": "[" * 10_000}
    r = await api.post("/calls", json=deep_ok | {"ring_timeout": 0})
    assert r.status_code == 422 and r.json()["field"] == "ring_timeout"
    r = await api.post("/calls", json=brackets)
    assert r.status_code == 422 and r.json()["field"] == "agent"


async def test_bad_bodies_are_400(api: httpx.AsyncClient) -> None:
    for body in (b"{not json", b"\xff\xfe{}", b"[1, 2]"):
        r = await api.post("/calls", content=body)
        assert r.status_code == 400, body
        assert len(r.content) < 200


async def test_a_422_echoes_a_clipped_value(api: httpx.AsyncClient) -> None:
    r = await api.post("/calls", json={"to": "sip:a@b", "agent": "A" * 500_000})
    assert r.status_code == 422
    message = r.json()["error"]
    assert "A" * 200 + "... (500000 characters)" in message
    assert len(r.content) < 1000


async def test_a_404_echoes_a_clipped_call_id(api: httpx.AsyncClient) -> None:
    r = await api.get("/calls/" + "c" * 5000)
    assert r.status_code == 404
    assert len(r.content) < 400


async def test_dtmf_digits_are_bounded() -> None:
    class Calls:  # the little of a CallManager the route touches: one live call
        def __init__(self) -> None:
            self.store = None
            self.calls = {"c1": type("Call", (), {"id": "c1"})()}

    app = Starlette(routes=CallsApi(Calls()).routes())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        r = await c.post("/calls/c1/dtmf", json={"digits": "1" * (MAX_DTMF_DIGITS + 1)})
    assert r.status_code == 422
    assert r.json() == {"error": f"digits: at most {MAX_DTMF_DIGITS} at a time", "field": "digits"}


async def test_twilio_webhooks_are_bounded_before_the_signature_check(
    api: httpx.AsyncClient,
) -> None:
    r = await api.post("/twilio/voice", content=b"a=" + b"b" * (2 * MIB))
    assert r.status_code == 413


async def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    gw = gateway(tmp_path, max_body_bytes=4096)
    assert gw.http is not None
    transport = httpx.ASGITransport(app=gw.http.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=AUTH) as c:
        r = await c.post("/calls", json={"to": "sip:a@b", "x": "y" * 5000})
        assert r.status_code == 413
        assert "4096" in r.json()["error"]
        r = await c.post("/calls", json={"to": "sip:a@b", "ring_timeout": 0, "x": "y" * 3000})
        assert r.status_code == 422


async def test_read_json_takes_the_configured_limit_not_the_default(tmp_path: Path) -> None:
    gw = gateway(tmp_path, max_body_bytes=2 * MIB)
    assert gw.http is not None
    transport = httpx.ASGITransport(app=gw.http.app)
    body = json.dumps({"to": "sip:a@b", "ring_timeout": 0, "x": "y" * (3 * MIB // 2)}).encode()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=AUTH) as c:
        r = await c.post("/calls", content=chunks())
    assert r.status_code == 422 and r.json()["field"] == "ring_timeout"


def test_settings_validate_and_read_the_environment() -> None:
    s = load_settings(
        environ={
            "CALLBRIDGE_HTTP_MAX_BODY_BYTES": "2048",
            "CALLBRIDGE_TWILIO_MAX_MESSAGE_BYTES": "4096",
        }
    )
    assert (s.http.max_body_bytes, s.twilio.max_message_bytes) == (2048, 4096)
    defaults = load_settings(environ={})
    assert (defaults.http.max_body_bytes, defaults.twilio.max_message_bytes) == (MIB, 65536)
    with pytest.raises(ConfigError, match=r"http\.max_body_bytes"):
        load_settings(environ={"CALLBRIDGE_HTTP_MAX_BODY_BYTES": "0"})
    with pytest.raises(ConfigError, match=r"twilio\.max_message_bytes"):
        load_settings(environ={"CALLBRIDGE_TWILIO_MAX_MESSAGE_BYTES": "64k"})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ aé\n'),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(_json)
def test_json_depth_matches_the_parsed_structure(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        assert json_depth(text.encode("utf-8")) == _depth(value)


def test_json_depth_of_a_megabyte_is_cheap() -> None:
    body = b"[]," * (MIB // 3)
    before = time.process_time()
    assert json_depth(body) == 1
    assert json_depth(b"[" * MIB) == MIB
    assert time.process_time() - before < 0.2


def test_clip() -> None:
    assert clip("short") == "short"
    assert clip("x" * 201) == "x" * 200 + "... (201 characters)"


# ---- the same through a real uvicorn -------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    config = ApiConfig(twilio=TwilioWebConfig(validate=False))
    http = HttpServer(create_app(config), "127.0.0.1", 0)
    await http.start()
    yield http
    await http.stop()


async def test_uvicorn_answers_413_while_the_client_is_still_sending(
    server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx streams 10 MiB with its Content-Length; the server (same loop) refuses at the
    headers, while the upload has barely begun, and discards the rest as it comes."""
    caplog.set_level(logging.INFO)
    total, sent = 10 * MIB, 0
    sent_at_refusal: int | None = None

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent, sent_at_refusal
        while sent < total:
            refused = any(r.msg == "http.body_too_large" for r in caplog.records)
            if refused and sent_at_refusal is None:
                sent_at_refusal = sent
            sent += 64 * 1024
            yield b"b" * (64 * 1024)

    url = f"http://127.0.0.1:{server.port}/twilio/voice"
    headers = {"content-length": str(total), "content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient() as c:
        r = await c.post(url, content=body(), headers=headers)
    assert r.status_code == 413
    assert sent_at_refusal is not None and sent_at_refusal < MIB, sent_at_refusal


async def test_uvicorn_413_arrives_before_the_body_is_sent(server: HttpServer) -> None:
    """A raw client sends the headers and 64 KiB of a 10 MiB body, then only reads."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" % (10 * MIB)
        )
        writer.write(b"a" * 65536)
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 ")


async def test_uvicorn_counts_a_chunked_body(server: HttpServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"b" * (64 * 1024)

    async with httpx.AsyncClient() as c:
        r = await c.post(f"http://127.0.0.1:{server.port}/twilio/sip", content=body())
    assert r.status_code == 413


# ---- the Twilio media WebSocket ----------------------------------------------------------------


class Calls:
    """The calls layer as the transport sees it: admits everything, runs each leg."""

    def __init__(self) -> None:
        self.legs: list[TwilioLeg] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()

    def admit(self, info: LegInfo) -> None:
        pass

    def start(self, leg: CallLeg) -> None:
        assert isinstance(leg, TwilioLeg)
        self.legs.append(leg)
        self.tasks.append(asyncio.get_running_loop().create_task(leg.run()))
        self.started.set()


def handshake() -> list[str]:
    start = Start(1, SID, "AC" + "4" * 32, CALL_SID, custom_parameters={"agent": "echo"})
    return [dumps(Connected()), dumps(start)]


def media(n: int, payload: bytes) -> str:
    return dumps(Media(n + 2, SID, "inbound", n + 1, 20 * n, payload))


def huge_media() -> str:
    return media(0, b"\xff" * 786_000)  # ~1 MB of JSON: 98 s of audio in one message


def media_client(calls: Calls) -> TestClient:
    # A short media timeout: were the limit broken, the test would fail in 2 s, not hang.
    config = TwilioLegConfig(media_timeout=2.0)
    transport = TwilioTransport(LoopClock(), calls, config, handshake_timeout=2)
    api = ApiConfig(twilio=TwilioWebConfig(validate=False))
    return TestClient(create_app(api, twilio=transport))


def stream_limit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__["fields"] for r in caplog.records if r.msg == "twilio.stream_limit"]


def test_a_1_mb_media_frame_closes_the_stream_with_1009(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    calls = Calls()
    frame = huge_media()
    assert len(frame) > 1_000_000
    with media_client(calls) as c, c.websocket_connect("/twilio/media") as ws:
        for text in handshake():
            ws.send_text(text)
        ws.send_text(media(0, b"\xff" * 160))
        before = time.process_time()
        ws.send_text(frame)
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_text()
        spent = time.process_time() - before
    assert closed.value.code == 1009
    assert closed.value.reason == f"message too big: {len(frame)} bytes, limit 65536"
    (leg,) = calls.legs
    assert leg.end_reason == "message_too_big"
    assert leg.stats()["frames_in"] == 1
    assert len(stream_limit_lines(caplog)) == 1
    assert spent < 0.2, spent


def test_a_1_mb_message_in_the_handshake_is_refused_with_1009() -> None:
    calls = Calls()
    with media_client(calls) as c, c.websocket_connect("/twilio/media") as ws:
        ws.send_text(dumps(Connected()))
        ws.send_text(huge_media())
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1009
    assert closed.value.reason.startswith("message too big")
    assert calls.legs == []


async def test_uvicorn_refuses_a_1_mb_frame_before_buffering_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    calls = Calls()
    transport = TwilioTransport(LoopClock(), calls, handshake_timeout=2)
    app = create_app(ApiConfig(twilio=TwilioWebConfig(validate=False)), twilio=transport)
    http = HttpServer(app, "127.0.0.1", 0)  # ws_max_size: the stream's limit, 64 KiB
    await http.start()
    try:
        url = f"ws://127.0.0.1:{http.port}/twilio/media"
        frame = huge_media()
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            for text in handshake():
                await ws.send(text)
            async with asyncio.timeout(5):
                await calls.started.wait()
            before = time.process_time()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.send(frame)
                async with asyncio.timeout(5):
                    await ws.recv()
            async with asyncio.timeout(5):
                await asyncio.gather(*calls.tasks)
            spent = time.process_time() - before
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        assert "65536" in closed.value.rcvd.reason
        (leg,) = calls.legs
        assert leg.end_reason == "message_too_big"
        (line,) = stream_limit_lines(caplog)
        assert line["code"] == 1009
        assert spent < 0.2, spent
    finally:
        await http.stop()
