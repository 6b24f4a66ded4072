"""The softphone's HTTP side (api/softphone.py through api/app.py): the page and its assets
are served (open, with a strict Content-Security-Policy), `/webrtc/*` is behind the API
token when one is set, offers are validated and mapped to statuses, hang-up ends a session,
and the static files ship with the package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from callbridge.api.app import ApiConfig, create_app
from callbridge.api.softphone import STATIC_DIR, webrtc_routes
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.ports import CallLeg, LegInfo, Rejection
from callbridge.transports.webrtc.transport import BadOffer, WebRtcConfig, WebRtcTransport

OFFER = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


class Acceptor:
    def __init__(self) -> None:
        self.admitted: list[LegInfo] = []

    def admit(self, info: LegInfo) -> None:
        if info.local_user == "busy":
            raise Rejection(Rejection.BUSY, "full")
        self.admitted.append(info)

    def start(self, leg: CallLeg) -> None:  # pragma: no cover - never connected here
        raise AssertionError("no media in these tests")


class FakePeer:
    codec = "opus"

    def __init__(self) -> None:
        self.closed = False
        import asyncio

        self.connected = asyncio.Event()  # never set: the session waits, then is dropped

        class _Pc:
            connectionState = "new"

        self.pc = _Pc()

    async def close(self) -> None:
        self.closed = True


async def fake_negotiate(sdp: str, config: WebRtcConfig) -> tuple[Any, Any, str]:
    if "m=audio" not in sdp:
        raise BadOffer("the offer has no audio")
    return None, FakePeer(), "v=0\r\nanswer\r\n"


def app(token: str = "", transport: WebRtcTransport | None = None) -> Any:
    return create_app(
        ApiConfig(api_token=token),
        extra_routes=webrtc_routes(transport, ["agent", "echo", "sales"]),
    )


@pytest.fixture
async def transport() -> AsyncIterator[WebRtcTransport]:
    t = WebRtcTransport(
        LoopClock(), Acceptor(), WebRtcConfig(connect_timeout=30), negotiate_fn=fake_negotiate
    )
    yield t
    await t.shutdown(1)


def client(application: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t")


async def test_the_page_and_its_assets_are_served_with_a_strict_policy() -> None:
    async with client(app()) as c:
        page = await c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'data-testid="hangup"' in page.text and "<script src=" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        for asset, kind in (("softphone.js", "javascript"), ("softphone.css", "css")):
            r = await c.get(f"/app/{asset}")
            assert r.status_code == 200 and kind in r.headers["content-type"], asset
        assert (await c.get("/app/../app.py")).status_code == 404
        routes = (await c.get("/webrtc/routes")).json()
    assert routes == {"routes": ["agent", "echo", "sales"], "webrtc": False}


def test_the_page_has_no_inline_script_or_external_url() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    js = (STATIC_DIR / "softphone.js").read_text()
    assert "<script>" not in html and "http://" not in html and "https://" not in html
    assert "http://" not in js and "https://" not in js  # no CDN: works offline
    assert 'data-testid="hangup"' in html and '"call-" + route' in js


async def test_with_a_token_the_page_is_open_and_webrtc_needs_it(
    transport: WebRtcTransport,
) -> None:
    async with client(app("s3cret", transport)) as c:
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/app/softphone.js")).status_code == 200
        for method, path in (
            ("GET", "/webrtc/routes"),
            ("POST", "/webrtc/offer"),
            ("POST", "/webrtc/hangup"),
        ):
            r = await c.request(method, path, json={"sdp": OFFER, "type": "offer"})
            assert r.status_code == 401, (method, path)
        ok = await c.get("/webrtc/routes", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["webrtc"] is True


async def test_offers_are_checked_and_answered(transport: WebRtcTransport) -> None:
    async with client(app(transport=transport)) as c:
        bad = [
            b"not json",
            b"[1]",
            b'{"sdp": 1, "type": "offer"}',
            b'{"sdp": "v=0", "type": "answer"}',
            b"x" * 70000,
        ]
        for body in bad:
            r = await c.post("/webrtc/offer", content=body)
            assert r.status_code == 400 and "error" in r.json(), body[:30]
        r = await c.post("/webrtc/offer", json={"sdp": OFFER, "type": "offer", "route": "nope"})
        assert r.status_code == 404
        r = await c.post("/webrtc/offer", json={"sdp": "v=0\r\n", "type": "offer"})
        assert r.status_code == 400 and "no audio" in r.json()["error"]
        r = await c.post("/webrtc/offer", json={"sdp": OFFER, "type": "offer", "route": "echo"})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["type"] == "answer" and answer["sdp"].startswith("v=0")
        session = answer["session"]
        assert session in transport.sessions
        info = transport.sessions[session].info
        assert (info.transport, info.local_user, info.ids["codec"]) == ("webrtc", "echo", "opus")
        r = await c.post("/webrtc/hangup", json={"session": session})
        assert r.status_code == 204
        assert (await c.post("/webrtc/hangup", json={"session": "nope"})).status_code == 404
        assert (await c.post("/webrtc/hangup", content=b"{}")).status_code == 400


async def test_busy_and_no_webrtc() -> None:
    t = WebRtcTransport(LoopClock(), Acceptor(), negotiate_fn=fake_negotiate)
    application = create_app(ApiConfig(), extra_routes=webrtc_routes(t, ["busy"]))
    async with client(application) as c:
        r = await c.post("/webrtc/offer", json={"sdp": OFFER, "type": "offer", "route": "busy"})
        assert r.status_code == 429
    async with client(app()) as c:
        r = await c.post("/webrtc/offer", json={"sdp": OFFER, "type": "offer"})
        assert r.status_code == 503


def test_static_files_ship_with_the_package() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    assert "web/static/*" in data["tool"]["setuptools"]["package-data"]["callbridge"]
    assert {p.name for p in STATIC_DIR.iterdir()} >= {"index.html", "softphone.js", "softphone.css"}
    assert any(d.startswith("aiortc") for d in data["project"]["dependencies"])
