"""The AudioSocket server and the FastAGI hand-off on loopback: routing (listener default,
a registered UUID), the source ACL, refusals (garbage first, no UUID in time, the calls layer
saying no), and FastAGI's ANSWER / EXEC AudioSocket / HANGUP with the route from the URL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from callbridge.asterisk import agi
from callbridge.asterisk.audiosocket import (
    TO_ASTERISK,
    Audio,
    AudioSocketDecoder,
    Hangup,
    UuidFrame,
    encode,
)
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.ports import CallLeg, LegInfo, Rejection
from callbridge.sip.access import parse_networks
from callbridge.transports.asterisk.audiosocket import AudioSocketConfig, AudioSocketServer
from callbridge.transports.asterisk.audiosocket_leg import AudioSocketLeg
from callbridge.transports.asterisk.fastagi import FastAgiConfig, FastAgiServer, audiosocket_target

HOST = "127.0.0.1"


class Calls:
    """A LegAcceptor that runs each leg's media until the test ends it."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.admitted: list[LegInfo] = []
        self.legs: list[CallLeg] = []
        self.started = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def admit(self, info: LegInfo) -> None:
        self.admitted.append(info)
        if self.refuse:
            raise Rejection(self.refuse, "test")

    def start(self, leg: CallLeg) -> None:
        self.legs.append(leg)
        self._tasks.append(asyncio.create_task(leg.run()))
        self.started.set()


async def server(calls: Calls, **kw: object) -> AudioSocketServer:
    srv = AudioSocketServer(AudioSocketConfig(host=HOST, port=0, **kw), LoopClock(), calls)  # type: ignore[arg-type]
    await srv.start()
    return srv


async def read_all(reader: asyncio.StreamReader) -> list[object]:
    try:
        async with asyncio.timeout(2):
            data = await reader.read()
    except ConnectionResetError:  # closed with our bytes unread: closed all the same
        data = b""
    return list(AudioSocketDecoder(TO_ASTERISK).feed(data))


async def test_a_call_goes_to_the_listener_route_with_its_uuid() -> None:
    calls = Calls()
    srv = await server(calls, route="echo")
    call_uuid = uuid.uuid4()
    _, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(encode(UuidFrame(call_uuid)) + encode(Audio(bytes(320))))
    async with asyncio.timeout(2):
        await calls.started.wait()
    info = calls.admitted[0]
    assert (info.transport, info.local_user) == ("audiosocket", "echo")
    assert info.ids["audiosocket_uuid"] == str(call_uuid)
    writer.close()  # Asterisk hangs up
    leg = calls.legs[0]
    assert isinstance(leg, AudioSocketLeg)
    async with asyncio.timeout(2):
        await leg.wait_ended()
    assert leg.end_reason == "remote_hangup"
    await srv.shutdown(1)


async def test_a_registered_uuid_picks_its_route_once() -> None:
    calls = Calls()
    srv = await server(calls)
    call_uuid = uuid.uuid4()
    srv.register(call_uuid, "voice", agi_channel="PJSIP/100-1")
    for expected in ("voice", ""):
        _, writer = await asyncio.open_connection(HOST, srv.port)
        writer.write(encode(UuidFrame(call_uuid)))
        calls.started.clear()
        async with asyncio.timeout(2):
            await calls.started.wait()
        assert calls.admitted[-1].local_user == expected
        writer.close()
    assert calls.admitted[0].ids["agi_channel"] == "PJSIP/100-1"
    await srv.shutdown(1)


async def test_a_source_outside_allow_from_is_closed_without_a_call() -> None:
    calls = Calls()
    srv = await server(calls, allow_from=parse_networks("192.0.2.0/24"))
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(encode(UuidFrame(uuid.uuid4())))
    assert await read_all(reader) == []
    assert calls.admitted == []
    await srv.shutdown(1)


async def test_a_refused_call_gets_the_hangup_frame() -> None:
    calls = Calls(refuse=Rejection.NOT_FOUND)
    srv = await server(calls, route="nobody")
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(encode(UuidFrame(uuid.uuid4())))
    assert await read_all(reader) == [Hangup()]
    await srv.shutdown(1)


async def test_garbage_or_silence_before_the_uuid_is_refused() -> None:
    calls = Calls()
    srv = await server(calls, handshake_timeout=0.2)
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await read_all(reader) == []
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(encode(Audio(bytes(320))))  # audio first: not the protocol
    assert await read_all(reader) == []
    reader, writer = await asyncio.open_connection(HOST, srv.port)  # says nothing
    assert await read_all(reader) == []
    assert calls.admitted == []
    await srv.shutdown(1)


def test_the_audiosocket_target_for_exec() -> None:
    assert audiosocket_target("pbx-side:9000", "0.0.0.0", 9092, "10.0.0.5") == "pbx-side:9000"
    assert audiosocket_target("", "127.0.0.1", 9092, "127.0.0.1") == "127.0.0.1:9092"
    assert audiosocket_target("", "0.0.0.0", 9092, "10.0.0.5") == "10.0.0.5:9092"
    assert audiosocket_target("", "::", 9092, "2001:db8::1") == "[2001:db8::1]:9092"


async def test_fastagi_answers_and_hands_the_call_to_audiosocket_with_its_route() -> None:
    calls = Calls()
    audio = await server(calls)
    fast = FastAgiServer(FastAgiConfig(host=HOST, port=0), audio)
    await fast.start()
    reader, writer = await asyncio.open_connection(HOST, fast.port)
    env = [("agi_network", "yes"), ("agi_network_script", "voice?lang=en"),
           ("agi_request", f"agi://{HOST}/voice"), ("agi_channel", "PJSIP/alice-00000001"),
           ("agi_uniqueid", "1761234567.42"), ("agi_callerid", "4930123456")]  # fmt: skip
    writer.write(agi.format_environment(env))
    commands: list[list[str]] = []

    async def command() -> list[str]:
        async with asyncio.timeout(2):
            line = await reader.readline()
        words = agi.split_command(line.decode())
        commands.append(words)
        return words

    assert await command() == ["ANSWER"]
    writer.write(b"200 result=0\n")
    exec_words = await command()
    assert exec_words[:2] == ["EXEC", "AudioSocket"]
    call_uuid, target = exec_words[2].split(",")
    assert target == f"{HOST}:{audio.port}"
    # Asterisk's AudioSocket() connects with that UUID.
    _, as_writer = await asyncio.open_connection(HOST, audio.port)
    as_writer.write(encode(UuidFrame(uuid.UUID(call_uuid))))
    async with asyncio.timeout(2):
        await calls.started.wait()
    info = calls.admitted[0]
    assert info.local_user == "voice"
    assert info.ids["agi_channel"] == "PJSIP/alice-00000001"
    assert info.ids["agi_uniqueid"] == "1761234567.42"
    as_writer.close()  # the caller hangs up: AudioSocket() returns
    writer.write(b"200 result=0\n")
    assert await command() == ["HANGUP"]
    writer.write(b"200 result=1\n")
    async with asyncio.timeout(2):
        assert await reader.read() == b""  # the AGI session is closed
    await fast.shutdown(1)
    await audio.shutdown(1)


async def test_fastagi_refuses_a_broken_environment() -> None:
    audio = await server(Calls())
    fast = FastAgiServer(FastAgiConfig(host=HOST, port=0, handshake_timeout=0.5), audio)
    await fast.start()
    reader, writer = await asyncio.open_connection(HOST, fast.port)
    writer.write(b"not an agi line\n\n")
    async with asyncio.timeout(2):
        assert await reader.read() == b""
    with contextlib.suppress(ConnectionError):
        writer.close()
    await fast.shutdown(1)
    await audio.shutdown(1)
