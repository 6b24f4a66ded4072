"""cluster/dispatcher.py over real loopback sockets: fake workers answer the OPTIONS probes
and INVITEs; the dispatcher forwards by the stateless rules and screens new calls."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from callbridge.cluster.dispatcher import Dispatcher
from callbridge.cluster.health import Liveness
from callbridge.cluster.plan import ClusterPlan
from callbridge.config.schema import Settings
from callbridge.sip.access import parse_networks
from callbridge.sip.message import SipRequest, SipResponse, make_response, parse

LOOP = "127.0.0.1"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOP, 0))
        return int(s.getsockname()[1])


class Peer(asyncio.DatagramProtocol):
    """A fake worker (answers OPTIONS with `options_status`, INVITE with 200) or a caller."""

    def __init__(self, options_status: int = 200) -> None:
        self.options_status = options_status
        self.got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        msg = parse(data)
        if isinstance(msg, SipRequest) and msg.method == "OPTIONS":
            assert self.transport is not None
            self.transport.sendto(bytes(make_response(msg, self.options_status)), addr)
            return
        self.got.put_nowait((data, (addr[0], addr[1])))
        PULSE.fire()

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


async def peer(options_status: int = 200) -> Peer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: Peer(options_status), local_addr=(LOOP, 0)
    )
    return proto


class Pulse:
    """Fired on every datagram handled anywhere in the rig: waiters re-check their condition
    then, instead of polling on a timer."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def fire(self) -> None:
        self.event.set()

    async def until(self, check: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.event.clear()
                await self.event.wait()


PULSE = Pulse()


class ObservedLiveness(Liveness):
    __slots__ = ()

    def answered(self, worker: int, status: int, now: float) -> None:
        super().answered(worker, status, now)
        PULSE.fire()


async def until(check: Callable[[], bool]) -> None:
    await PULSE.until(check)


Rig = tuple[Dispatcher, list[Peer], Peer]


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    statuses: tuple[int, ...] = getattr(request, "param", (200, 200))
    PULSE.event = asyncio.Event()  # this test's loop
    workers = [await peer(s) for s in statuses]
    port = free_udp_port()
    s = Settings()
    settings = replace(s, sip=replace(s.sip, host=LOOP, port=port, allow_from="127.0.0.0/8"))
    plan = ClusterPlan(len(workers), (LOOP, port), LOOP, tuple((LOOP, w.port) for w in workers))
    d = Dispatcher(settings, plan)
    d.liveness = ObservedLiveness(len(workers))
    await d.start()
    for i in range(len(workers)):
        d.liveness.set_running(i, True)
    caller = await peer()
    yield d, workers, caller
    d.close()
    for p in (*workers, caller):
        assert p.transport is not None
        p.transport.close()


def invite(call_id: str, caller: Peer) -> bytes:
    return (
        f"INVITE sip:echo@{LOOP} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOP}:{caller.port};branch=z9hG4bK{call_id};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:c@{LOOP}>;tag=f{call_id}\r\nTo: <sip:echo@{LOOP}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{LOOP}:{caller.port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_calls_reach_both_workers_and_answers_come_back(rig: Rig) -> None:
    d, workers, caller = rig
    await until(lambda: d.liveness.live(d.now()) == (0, 1))
    assert caller.transport is not None
    for i in range(12):
        caller.transport.sendto(invite(f"call{i}", caller), d.local_addr)
    await until(lambda: sum(w.got.qsize() for w in workers) == 12)
    seen = {0: 0, 1: 0}
    for index, worker in enumerate(workers):
        while not worker.got.empty():
            data, source = worker.got.get_nowait()
            assert source[1] == d.local_addr[1]  # everything arrives from the public port
            req = parse(data)
            assert isinstance(req, SipRequest)
            assert f";cbw={index};" in (req.headers.get("Record-Route") or "")
            seen[index] += 1
            # the worker answers to the top Via: the dispatcher
            assert worker.transport is not None
            answer = make_response(req, 200, to_tag="w", record_route=True)
            worker.transport.sendto(bytes(answer), source)
            data, _ = await asyncio.wait_for(caller.got.get(), 3)
            resp = parse(data)
            assert isinstance(resp, SipResponse) and resp.status == 200
            assert len(resp.vias) == 1 and resp.call_id == req.call_id
    assert seen[0] >= 2 and seen[1] >= 2, seen
    assert d.counters["to_worker_0"] + d.counters["to_worker_1"] == 12


@pytest.mark.parametrize("rig", [(503, 200)], indirect=True)
async def test_a_worker_answering_503_gets_no_new_calls(rig: Rig) -> None:
    d, workers, caller = rig
    await until(lambda: d.liveness.live(d.now()) == (1,))
    assert caller.transport is not None
    for i in range(6):
        caller.transport.sendto(invite(f"c{i}", caller), d.local_addr)
    for _ in range(6):
        await asyncio.wait_for(workers[1].got.get(), 3)
    assert workers[0].got.empty()


async def test_no_live_worker_means_503_from_the_dispatcher(rig: Rig) -> None:
    d, _, caller = rig
    await until(lambda: len(d.liveness.live(d.now())) == 2)
    d.liveness.set_draining(0)
    d.liveness.set_draining(1)
    assert caller.transport is not None
    caller.transport.sendto(invite("late", caller), d.local_addr)
    data, _ = await asyncio.wait_for(caller.got.get(), 3)
    resp = parse(data)
    assert isinstance(resp, SipResponse) and resp.status == 503
    assert resp.headers.get("Retry-After") == "5"


async def test_sources_outside_allow_from_get_403_at_the_dispatcher(rig: Rig) -> None:
    d, workers, caller = rig
    await until(lambda: len(d.liveness.live(d.now())) == 2)
    d.policy = replace(d.policy, allow_from=parse_networks("10.0.0.0/8"))
    assert caller.transport is not None
    caller.transport.sendto(invite("outsider", caller), d.local_addr)
    data, _ = await asyncio.wait_for(caller.got.get(), 3)
    resp = parse(data)
    assert isinstance(resp, SipResponse) and resp.status == 403
    assert all(w.got.empty() for w in workers)
