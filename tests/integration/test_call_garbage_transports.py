"""A finished call leaves nothing for the cycle collector, on every transport besides SIP.

test_call_garbage.py proves it for SIP calls; here the same check (the collector off, three
calls run to their end, then a collection must find nothing) for the other ways a call
reaches an agent, each driven in this process by a client of its real protocol: Twilio
Media Streams (a Twilio double on the signed media WebSocket), Asterisk's AudioSocket (TCP),
chan_websocket (WebSocket) and ARI externalMedia (the ARI double, RTP sent from here), the
agent socket (SIP calls to a route whose agent is a local Media Streams app) and the
browser's WebRTC (aiortc as the browser, through POST /webrtc/offer). The clients are kept
referenced until the collection: only the gateway's side of the calls is judged.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from callbridge.audio.g711 import ulaw_encode
from callbridge.calls.manager import Call
from callbridge.config.settings import AgentRoute, Settings
from callbridge.core.frames import FRAME_SAMPLES
from callbridge.gateway import Gateway
from callbridge.rtp.packet import RtpPacket
from callbridge.transports.webrtc import transport as webrtc
from tests.peers.peerlib.asterisk import AriDouble, AudioSocketAsterisk, ChanWebSocketAsterisk
from tests.unit.api.twilio_peer import FakeTwilioStream
from tests.unit.transports.test_webrtc import Browser

from .gateways import echo_settings, running
from .test_call_garbage import collector_off, cyclic_garbage
from .test_loopback_call import ProbeAgent

CALLS = 3
FRAMES = 10  # 200 ms of the caller's audio per call
DEADLINE = 20.0  # seconds for one call, end to end
TOKEN = "t" * 32


def settings(data_dir: Path, rtp: tuple[int, int], *, http: bool = False) -> Settings:
    """echo_settings, with the HTTP server on a free port or off (never a fixed port)."""
    s = echo_settings(data_dir, rtp)
    return replace(s, http=replace(s.http, port=0, enabled="true" if http else "false"))


def speech() -> bytes:
    """What the callers say: a 350 Hz tone, PCM16 at 8 kHz."""
    t = np.arange(FRAMES * FRAME_SAMPLES) / 8000
    return (6000 * np.sin(2 * np.pi * 350 * t)).astype("<i2").tobytes()


class Ended:
    """The gateway's calls as they end."""

    def __init__(self, gw: Gateway) -> None:
        self._queue: asyncio.Queue[Call] = asyncio.Queue()
        gw.calls.on_end.append(self._queue.put_nowait)

    async def next(self) -> dict[str, int | float]:
        """The next call's leg stats, once its task is over (no reference to it is kept)."""
        call = await self._queue.get()
        assert call.task is not None
        await call.task
        return call.leg.stats()


async def until(check: Callable[[], bool]) -> None:
    """Teardown that no task or event reports (a connection's protocol object letting go):
    looked at on every turn of the loop, within the caller's deadline."""
    while not check():  # noqa: ASYNC110
        await asyncio.sleep(0)


async def http_idle(gw: Gateway) -> None:
    """The HTTP server is done with every request and connection (their ASGI tasks too)."""
    assert gw.http is not None and gw.http._server is not None
    state = gw.http._server.server_state
    if state.tasks:
        await asyncio.wait(set(state.tasks))
    await until(lambda: not state.connections and not state.tasks)


def assert_nothing_cyclic() -> None:
    garbage = cyclic_garbage()
    assert not garbage, f"objects of ended calls in reference cycles: {garbage.most_common()}"


# ---- Twilio Media Streams -------------------------------------------------------------------


async def test_twilio_media_streams(tmp_path: Path) -> None:
    s = settings(tmp_path, (45000, 45100), http=True)
    s = replace(s, twilio=replace(s.twilio, auth_token=TOKEN))
    spoken = ulaw_encode(speech())
    frames = [spoken[i : i + 160] for i in range(0, len(spoken), 160)]
    async with running(s) as gw:
        assert gw.http is not None
        url = f"ws://127.0.0.1:{gw.http.port}/twilio/media"
        ended, clients = Ended(gw), []
        with collector_off():
            for n in range(CALLS):
                twilio = FakeTwilioStream(url, signed_url=url, auth_token=TOKEN,
                                          call_sid=f"CA{n:032x}", params={"agent": "echo"})  # fmt: skip
                clients.append(twilio)
                async with asyncio.timeout(DEADLINE):
                    async with twilio:
                        await twilio.send_audio(frames)
                        await twilio.collect(len(spoken))  # the echo agent answered
                        await twilio.stop()
                        assert await twilio.wait_closed() == 1000
                    assert (await ended.next())["frames_in"] >= FRAMES
                    await http_idle(gw)
            assert_nothing_cyclic()


# ---- Asterisk: AudioSocket, chan_websocket, ARI externalMedia -------------------------------


async def test_asterisk_audiosocket(tmp_path: Path) -> None:
    s = settings(tmp_path, (45100, 45200))
    s = replace(s, audiosocket=replace(s.audiosocket, enabled=True, host="127.0.0.1", port=0))
    async with running(s) as gw:
        assert gw.asterisk is not None and gw.asterisk.audiosocket is not None
        server = gw.asterisk.audiosocket
        ended, clients = Ended(gw), []
        with collector_off():
            for _ in range(CALLS):
                asterisk = AudioSocketAsterisk("127.0.0.1", server.port)
                clients.append(asterisk)
                async with asyncio.timeout(DEADLINE):
                    await asterisk.connect()
                    await asterisk.stream(speech())
                    await asterisk.hangup()  # Asterisk closes the socket
                    assert (await ended.next())["frames_in"] >= FRAMES
                    if server._tasks:  # the connection's handler, which outlives the call
                        await asyncio.wait(set(server._tasks))
            assert_nothing_cyclic()


async def test_asterisk_chan_websocket(tmp_path: Path) -> None:
    s = settings(tmp_path, (45200, 45300), http=True)
    s = replace(s, chan_websocket=replace(s.chan_websocket, enabled=True))
    async with running(s) as gw:
        assert gw.http is not None
        url = f"ws://127.0.0.1:{gw.http.port}/asterisk/media?agent=echo"
        ended, clients = Ended(gw), []
        with collector_off():
            for n in range(CALLS):
                asterisk = ChanWebSocketAsterisk(url, channel_id=f"1761234567.{n}")
                clients.append(asterisk)
                async with asyncio.timeout(DEADLINE):
                    await asterisk.connect()
                    await asterisk.stream(ulaw_encode(speech()))
                    await asterisk.hangup()
                    assert (await ended.next())["frames_in"] >= FRAMES
                    await http_idle(gw)
            assert_nothing_cyclic()


async def test_asterisk_ari_external_media(tmp_path: Path) -> None:
    double = AriDouble()
    await double.start()
    s = settings(tmp_path, (45300, 45400))
    s = replace(s, ari=replace(s.ari, enabled=True, url=double.base_url,
                               username=double.username, password=double.password))  # fmt: skip
    payload = ulaw_encode(speech())
    unicast_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # Asterisk's UnicastRTP
    unicast_rtp.bind(("127.0.0.1", 0))
    try:
        async with running(s) as gw:
            assert gw.asterisk is not None and gw.asterisk.ari is not None
            ari = gw.asterisk.ari
            ended, bridged = Ended(gw), asyncio.Queue[str]()
            gw.calls.on_start.append(lambda c: bridged.put_nowait(c.leg.info.ids["rtp_local"]))
            with collector_off():
                async with asyncio.timeout(DEADLINE):
                    await ari.connected.wait()
                for n in range(CALLS):
                    channel = f"1761234567.{n}"
                    async with asyncio.timeout(DEADLINE):
                        await double.start_call(channel)
                        host, port = (await bridged.get()).split(":")
                        for i in range(FRAMES):  # the caller's audio, 20 ms a packet
                            chunk = payload[i * 160 : (i + 1) * 160]
                            packet = RtpPacket(0, i, i * 160, 0x1000 + n, chunk, marker=i == 0)
                            unicast_rtp.sendto(bytes(packet), (host, int(port)))
                        await double.caller_hangs_up(channel)
                        assert (await ended.next())["rtp_in"] >= 1
                        if ari._tasks:  # the call's clean-up in ARI, after it ended
                            await asyncio.wait(set(ari._tasks))
                gw.calls.on_start.clear()
                assert_nothing_cyclic()
    finally:
        unicast_rtp.close()
        await double.close()


# ---- the agent socket: SIP calls to a route whose agent is a remote Media Streams app ---------


class EchoApp:
    """An agent written for Twilio Media Streams: says back what it hears."""

    def __init__(self) -> None:
        self.connections: list[ServerConnection] = []
        self.media = 0

    async def handler(self, conn: ServerConnection) -> None:
        self.connections.append(conn)
        try:
            async for text in conn:
                msg = json.loads(text)
                if msg["event"] == "media":
                    self.media += 1
                    out = {"event": "media", "streamSid": msg["streamSid"],
                           "media": {"payload": msg["media"]["payload"]}}  # fmt: skip
                    await conn.send(json.dumps(out))
        except ConnectionClosed:
            pass


@asynccontextmanager
async def echo_app() -> AsyncIterator[tuple[EchoApp, str]]:
    app = EchoApp()
    async with serve(app.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield app, f"ws://127.0.0.1:{port}/media"


async def test_agent_socket(tmp_path: Path) -> None:
    async with echo_app() as (app, url):
        s = settings(tmp_path / "a", (45400, 45500))
        s = replace(s, agents={"bot": AgentRoute("bot", url=url)})
        async with (
            running(s) as gw,
            running(settings(tmp_path / "b", (45500, 45600))) as phone,
        ):
            host, port = gw.sip.local_addr
            ended = Ended(gw)
            with collector_off():
                for _ in range(CALLS):
                    async with asyncio.timeout(DEADLINE):
                        leg = await phone.sip.call(f"sip:bot@{host}:{port}")
                        probe = ProbeAgent(frames=FRAMES)  # plays, then hangs up
                        call = phone.calls.start_call(leg, agent=probe, agent_name="probe")
                        assert call.task is not None
                        await call.task
                        await ended.next()
                        await asyncio.gather(*(c.wait_closed() for c in app.connections))
                del leg, probe, call
                assert app.media > 0
                assert_nothing_cyclic()


# ---- the browser: WebRTC through POST /webrtc/offer ---------------------------------------


class Heard(list[Any]):
    """A browser's heard frames; `enough` is set once there are `n`."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.enough = asyncio.Event()

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) >= self.n:
            self.enough.set()


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ends gather 127.0.0.1 and nothing else: no packet leaves loopback."""
    monkeypatch.setattr(webrtc, "_original_host_addresses", lambda **kw: [])
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda **kw: ["127.0.0.1"])


@pytest.mark.usefixtures("loopback_only")
async def test_webrtc(tmp_path: Path) -> None:
    async with running(settings(tmp_path, (45600, 45700), http=True)) as gw:
        assert gw.http is not None and gw.webrtc is not None
        base, sessions = f"http://127.0.0.1:{gw.http.port}", gw.webrtc.sessions
        ended, kept = Ended(gw), []  # kept: the clients' objects (httpx's own cycles)
        with collector_off():
            for _ in range(CALLS):
                heard = Heard(FRAMES)
                browser = Browser(("audio/PCMU",), heard=heard)
                async with asyncio.timeout(DEADLINE), httpx.AsyncClient(base_url=base) as http:
                    offer = {"sdp": await browser.offer(), "type": "offer", "route": "echo"}
                    offered = await http.post("/webrtc/offer", json=offer)
                    answer = offered.json()
                    session = sessions[answer["session"]].task
                    await browser.answer(answer["sdp"])
                    await heard.enough.wait()  # the echo agent's audio reaches the page
                    hangup = await http.post("/webrtc/hangup", json={"session": answer["session"]})
                    assert hangup.status_code == 204
                    assert (await ended.next())["frames_in"] >= 1
                    assert session is not None
                    await session
                    await browser.pc.close()
                kept += [browser, http, offered, hangup]
                async with asyncio.timeout(DEADLINE):
                    await http_idle(gw)  # the page's connection closed with its client
            del session
            assert_nothing_cyclic()
