"""The ARI controller against the ARI double (tests/peers/peerlib/asterisk.py, from Asterisk's
swagger and resource_channels.c) on loopback: the exact REST calls of a call's set-up and of
its clean-up whichever side ends it, the correlation ids on the leg, DTMF, the transfer as
`continue`, a refused route, and reconnecting after the events socket drops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.events import DtmfDigit
from callbridge.core.ports import CallLeg, LegInfo, Rejection
from callbridge.rtp.socket import PortAllocator
from callbridge.transports.asterisk.ari import AriConfig, AriController
from callbridge.transports.asterisk.ari_leg import AriLeg
from tests.peers.peerlib.asterisk import AriDouble

CALLER = "1761234567.1"


class Calls:
    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.legs: list[CallLeg] = []
        self.started = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def admit(self, info: LegInfo) -> None:
        if self.refuse:
            raise Rejection(self.refuse)

    def start(self, leg: CallLeg) -> None:
        leg.info.ids["call_id"] = "call-1-abc"
        self.legs.append(leg)
        self.tasks.append(asyncio.create_task(leg.run()))
        self.started.set()


class Setup:
    def __init__(self, double: AriDouble, ctl: AriController, calls: Calls) -> None:
        self.double, self.ctl, self.calls = double, ctl, calls

    def rest(self) -> list[tuple[str, str]]:
        return [(c.method, c.path) for c in self.double.calls]

    async def call(self) -> AriLeg:
        await self.double.start_call(CALLER, "4930123456")
        async with asyncio.timeout(3):
            await self.calls.started.wait()
        leg = self.calls.legs[-1]
        assert isinstance(leg, AriLeg)
        return leg

    async def until(self, check: Callable[[], object], what: str) -> None:
        for _ in range(300):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def started(refuse: str | None = None) -> AsyncIterator[Setup]:
    calls = Calls(refuse)
    double = AriDouble()
    await double.start()
    ctl = AriController(
        AriConfig(url=double.base_url, username="callbridge", password="secret",
                  transfer_context="operators", backoff_min=0.05),
        LoopClock(), calls, PortAllocator(42000, 42100),
    )  # fmt: skip
    ctl.start()
    async with asyncio.timeout(3):
        await ctl.connected.wait()
    try:
        yield Setup(double, ctl, calls)
    finally:
        await ctl.shutdown(1)
        await double.close()


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    async with started() as s:
        yield s


def external_id(s: Setup) -> str:
    return next(c.query["channelId"] for c in s.double.calls if c.path.endswith("externalMedia"))


async def test_stasis_start_answers_bridges_external_media_and_correlates(setup: Setup) -> None:
    leg = await setup.call()
    ext = external_id(setup)
    bridge = leg.info.ids["ari_bridge_id"]
    assert setup.rest() == [
        ("POST", f"/ari/channels/{CALLER}/answer"),
        ("POST", "/ari/channels/externalMedia"),
        ("POST", f"/ari/bridges/{bridge}"),
        ("POST", f"/ari/bridges/{bridge}/addChannel"),
    ]
    em = setup.double.calls[1].query
    port = leg.socket.port
    assert em == {"app": "callbridge", "external_host": f"127.0.0.1:{port}", "format": "ulaw",
                  "encapsulation": "rtp", "transport": "udp", "direction": "both",
                  "channelId": ext}  # fmt: skip
    assert setup.double.calls[2].query == {"type": "mixing"}
    assert setup.double.calls[3].query == {"channel": f"{CALLER},{ext}"}
    ids = leg.info.ids
    assert ids["ari_channel_id"] == CALLER and ids["ari_external_channel_id"] == ext
    assert (ids["unicastrtp_local_address"], ids["unicastrtp_local_port"]) == ("127.0.0.1", "17432")
    assert ids["rtp_local"] == f"127.0.0.1:{port}"
    assert leg.info.remote_uri == "4930123456" and leg.info.transport == "ari"
    assert leg.session is not None and leg.session.remote == ("127.0.0.1", 17432)


async def test_the_caller_hanging_up_cleans_up_both_channels_and_the_bridge(setup: Setup) -> None:
    leg = await setup.call()
    ext, bridge = external_id(setup), leg.info.ids["ari_bridge_id"]
    await setup.double.caller_hangs_up(CALLER)
    async with asyncio.timeout(3):
        await leg.wait_ended()
    await setup.until(lambda: len(setup.double.calls) >= 7, "clean-up")
    assert leg.end_reason == "remote_hangup"
    assert setup.rest()[4:] == [
        ("DELETE", f"/ari/channels/{ext}"),
        ("DELETE", f"/ari/channels/{CALLER}"),  # already gone: 404, and that is fine
        ("DELETE", f"/ari/bridges/{bridge}"),
    ]
    assert setup.double.bridges == {} and ext not in setup.double.channels


async def test_our_hangup_deletes_the_callers_channel_too(setup: Setup) -> None:
    leg = await setup.call()
    await leg.hangup("agent_done")
    assert leg.end_reason == "agent_done"
    assert setup.double.channels == {} and setup.double.bridges == {}


async def test_dtmf_events_reach_the_agent(setup: Setup) -> None:
    leg = await setup.call()
    received: list[object] = []

    async def read() -> None:
        async for item in leg.inputs():
            if isinstance(item, DtmfDigit):
                received.append(item)

    reader = asyncio.create_task(read())
    await setup.double.dtmf(CALLER, "7", 140)
    await setup.until(lambda: received, "the digit")
    assert received == [DtmfDigit("7", 140)]
    await leg.hangup()
    await reader


async def test_transfer_continues_in_the_configured_context(setup: Setup) -> None:
    leg = await setup.call()
    result = await leg.transfer("200")
    assert result.ok
    cont = [c for c in setup.double.calls if c.path.endswith("/continue")]
    assert cont[0].path == f"/ari/channels/{CALLER}/continue"
    assert cont[0].query == {"context": "operators", "extension": "200", "priority": "1"}
    async with asyncio.timeout(3):
        await leg.wait_ended()
    assert leg.end_reason == "transferred"
    await setup.until(lambda: not setup.double.bridges, "the bridge to go")
    # The caller's channel left for the dialplan: it is not hung up.
    assert ("DELETE", f"/ari/channels/{CALLER}") not in setup.rest()


async def test_a_refused_route_is_hung_up_without_media() -> None:
    async with started(refuse=Rejection.NOT_FOUND) as setup:
        await setup.double.start_call(CALLER)
        await setup.until(lambda: setup.double.calls, "the hang-up")
        assert setup.rest() == [("DELETE", f"/ari/channels/{CALLER}")]
        assert setup.double.calls[0].query == {"reason": "normal"}


async def test_the_events_socket_reconnects_after_a_drop(setup: Setup) -> None:
    for _, writer in list(setup.double._sockets):
        writer.close()
    await setup.until(lambda: not setup.ctl.connected.is_set(), "the drop")
    async with asyncio.timeout(3):
        await setup.ctl.connected.wait()
    leg = await setup.call()  # calls work again
    await leg.hangup()
