"""The Asterisk test peers against tiny loopback servers built on the codecs (no Asterisk)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import websockets
from websockets.asyncio.server import ServerConnection, serve

from callbridge.asterisk import ari, audiosocket, chan_websocket
from callbridge.asterisk.audiosocket import Audio, AudioSocketDecoder, Dtmf, Hangup, UuidFrame
from tests.peers.peerlib.asterisk import AriDouble, AudioSocketAsterisk, ChanWebSocketAsterisk

TIMEOUT = 5.0
PCM_100MS = bytes(range(256)) * 6 + bytes(64)  # 1600 bytes: five 20 ms slin frames


async def test_audiosocket_peer_against_an_echo_server() -> None:
    seen: list[object] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = AudioSocketDecoder()
        while data := await reader.read(4096):
            for frame in decoder.feed(data):
                seen.append(frame)
                if isinstance(frame, Audio):
                    writer.write(audiosocket.encode(frame))
                elif frame == Dtmf("#"):
                    writer.write(audiosocket.encode(Hangup()))
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    call = uuid.UUID("40325ec2-5efd-4bd3-805f-53576e581d13")
    peer = AudioSocketAsterisk("127.0.0.1", port, call)
    await peer.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await peer.stream(PCM_100MS)
    assert loop.time() - started >= 0.075  # paced: frame i leaves at i * 20 ms
    await peer.send_dtmf("#")
    await asyncio.wait_for(peer.ended.wait(), TIMEOUT)
    assert peer.end_reason == "hangup frame"
    assert seen[0] == UuidFrame(call) and seen[-1] == Dtmf("#")
    assert peer.received_pcm() == PCM_100MS
    times = [a.at for a in peer.received if isinstance(a.frame, Audio)]
    assert len(times) == 5 and times[-1] - times[0] >= 0.06
    server.close()
    await server.wait_closed()


async def test_audiosocket_peer_ends_the_call_on_a_frame_asterisk_refuses() -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(19)
        writer.write(audiosocket.encode(Dtmf("1")))  # Asterisk reads only audio and hangup
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(bad, "127.0.0.1", 0)
    peer = AudioSocketAsterisk("127.0.0.1", server.sockets[0].getsockname()[1])
    await peer.connect()
    await asyncio.wait_for(peer.ended.wait(), TIMEOUT)
    assert peer.end_reason.startswith("protocol error")
    server.close()
    await server.wait_closed()


async def test_chan_websocket_peer_queue_xoff_flush_and_status() -> None:
    got: list[str | bytes] = []
    release = asyncio.Event()

    async def app(ws: ServerConnection) -> None:
        start = chan_websocket.parse_event(await ws.recv())
        assert isinstance(start, chan_websocket.MediaStart)
        size = start.optimal_frame_size
        await ws.send(b"\x7f" * (size * 950 + 17))  # 19 s of audio plus a partial frame
        async for message in ws:
            got.append(message)
            if isinstance(message, str) and message.startswith("MEDIA_XOFF"):
                await ws.send(chan_websocket.format_command(chan_websocket.FlushMedia()))
                await ws.send(chan_websocket.format_command(chan_websocket.GetStatus()))
            if isinstance(message, str) and message.startswith("STATUS"):
                await ws.send(b"\x01" * size * 3)
                await ws.send(chan_websocket.format_command(chan_websocket.MarkMedia("t1")))
            if isinstance(message, str) and message.startswith("MEDIA_MARK_PROCESSED"):
                release.set()

    async with serve(app, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        peer = ChanWebSocketAsterisk(f"ws://127.0.0.1:{port}/media")
        await peer.connect()
        await peer.send_dtmf("5")
        await asyncio.wait_for(release.wait(), TIMEOUT)
        await peer.hangup()
    texts = [m for m in got if isinstance(m, str)]
    assert texts[0] == "DTMF_END digit:5 channel_id:1761234567.42"
    assert "MEDIA_XOFF" in texts
    status = chan_websocket.parse_event(next(t for t in texts if t.startswith("STATUS")))
    assert isinstance(status, chan_websocket.Status) and status.queue_length == 0  # flushed
    assert texts[-1] == "MEDIA_MARK_PROCESSED t1"
    assert peer.events_sent[0].startswith("MEDIA_START connection_id:media_connection1")
    # the mark is processed only after the three frames queued before it were played
    assert [bytes(a.frame)[:1] for a in peer.played[-3:]] == [b"\x01"] * 3  # type: ignore[call-overload]
    assert all(len(a.frame) == 160 for a in peer.played)  # type: ignore[arg-type]
    assert len(peer.played) < 100  # FLUSH_MEDIA dropped the 19 s backlog at once


async def test_ari_double_records_rest_calls_and_pushes_events() -> None:
    double = AriDouble(rtp_address=("127.0.0.1", 17432))
    await double.start()
    events_path, query = ari.events_path("callbridge")
    url = f"ws://127.0.0.1:{double.port}{events_path}?app=callbridge&api_key=callbridge:secret"
    async with websockets.connect(url, subprotocols=[websockets.Subprotocol("ari")]) as events:
        assert events.subprotocol == "ari" and query == (("app", "callbridge"),)
        await double.start_call("1761234567.40", "4930123456", "sales")
        start = ari.parse_event(await asyncio.wait_for(events.recv(), TIMEOUT))
        assert isinstance(start, ari.StasisStart) and start.args == ("sales",)
        caller = start.channel.id
        auth = httpx.BasicAuth("callbridge", "secret")
        async with httpx.AsyncClient(base_url=double.base_url, auth=auth) as http:

            async def call(request: ari.AriRequest) -> httpx.Response:
                return await http.request(
                    request.method, request.path, params=list(request.query), json=request.body
                )

            assert (await call(ari.answer(caller))).status_code == 204
            media = await call(
                ari.external_media("callbridge", "127.0.0.1:40000", "ulaw", channel_id="cb-ext-1")
            )
            external = ari.parse_channel(media.content)
            assert ari.unicast_rtp_address(external) == ("127.0.0.1", 17432)
            ext_start = ari.parse_event(await asyncio.wait_for(events.recv(), TIMEOUT))
            assert isinstance(ext_start, ari.StasisStart) and ext_start.channel.id == "cb-ext-1"
            bridge = (await call(ari.create_bridge())).json()
            assert (
                await call(ari.add_channel(bridge["id"], caller, "cb-ext-1"))
            ).status_code == 204
            bad = await call(
                ari.AriRequest(
                    "POST",
                    "/ari/channels/externalMedia",
                    (("app", "callbridge"), ("format", "ulaw")),
                )
            )
            assert bad.status_code == 400 and "external_host is required" in bad.json()["message"]
            assert (
                await http.post("/ari/channels/x/answer", auth=httpx.BasicAuth("a", "b"))
            ).status_code == 401
            await double.dtmf(caller, "7")
            dtmf = ari.parse_event(await asyncio.wait_for(events.recv(), TIMEOUT))
            assert isinstance(dtmf, ari.ChannelDtmfReceived) and dtmf.digit == "7"
            assert (await call(ari.hangup("cb-ext-1"))).status_code == 204
            kinds = [
                json.loads(await asyncio.wait_for(events.recv(), TIMEOUT))["type"] for _ in range(2)
            ]
            assert kinds == ["StasisEnd", "ChannelDestroyed"]
    assert [(c.method, c.path) for c in double.calls] == [
        ("POST", "/ari/channels/1761234567.40/answer"),
        ("POST", "/ari/channels/externalMedia"),
        ("POST", "/ari/bridges"),
        ("POST", f"/ari/bridges/{bridge['id']}/addChannel"),
        ("POST", "/ari/channels/externalMedia"),
        ("DELETE", "/ari/channels/cb-ext-1"),
    ]
    assert double.calls[1].query["external_host"] == "127.0.0.1:40000"
    assert double.bridges[bridge["id"]] == [caller, "cb-ext-1"]
    await double.close()
