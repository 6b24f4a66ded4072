"""Composition root: settings -> concrete parts -> a running gateway. The only reader of settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from callbridge.agents.echo import EchoAgent
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.config.settings import Settings
from callbridge.core.clocks import LoopClock
from callbridge.core.log import event
from callbridge.rtp.jitter import JitterConfig
from callbridge.sip.timers import TimerSettings
from callbridge.transports.sip import CallFailed, SipTransport, SipTransportConfig

log = logging.getLogger("callbridge")


@dataclass(slots=True)
class Gateway:
    settings: Settings
    calls: CallManager
    sip: SipTransport

    async def start(self) -> None:
        # Before the loop gets busy: a one-off directory creation, not a per-call operation.
        Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        await self.sip.start()

    async def stop(self) -> None:
        """Graceful: refuse new calls (503), BYE the live ones, wait a bounded time, close."""
        event(log, "gateway.stopping", live_calls=len(self.calls.calls))
        self.calls.accepting = False
        self.sip.stop_accepting()
        await self.sip.shutdown(self.settings.shutdown_grace)
        await self.calls.shutdown(self.settings.shutdown_grace)
        event(log, "gateway.stopped")


def build_gateway(settings: Settings) -> Gateway:
    clock = LoopClock()
    agents = {"echo": lambda: EchoAgent(settings.echo.delay_ms)}
    router = Router(agents, settings.default_agent)
    calls = CallManager(router, clock)
    s = settings.sip
    config = SipTransportConfig(
        host=s.host,
        port=s.port,
        public_host=s.public_host,
        rtp_port_min=settings.rtp.port_min,
        rtp_port_max=settings.rtp.port_max,
        rtp_timeout=settings.rtp.timeout,
        jitter=JitterConfig(
            min_delay=settings.rtp.jitter_min_ms / 1000, max_delay=settings.rtp.jitter_max_ms / 1000
        ),
        codecs=tuple(c.strip().upper() for c in settings.rtp.codecs.split(",")),
        user_agent=s.user_agent,
        timers=TimerSettings(t1=s.t1, t2=s.t2, t4=s.t4),
    )
    sip = SipTransport(config, clock, calls)
    return Gateway(settings, calls, sip)


async def _until_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve(settings: Settings) -> None:
    gateway = build_gateway(settings)
    await gateway.start()
    try:
        await _until_signal()
    finally:
        await gateway.stop()


async def place_call(
    settings: Settings, target: str, agent_name: str, duration: float | None
) -> int:
    """`callbridge call`: start the gateway, place one call with an agent, wait for it to end."""
    gateway = build_gateway(settings)
    await gateway.start()
    ended: asyncio.Future[Call] = asyncio.get_running_loop().create_future()

    def on_end(call: Call) -> None:
        if not ended.done():
            ended.set_result(call)

    gateway.calls.on_end.append(on_end)
    signals = asyncio.ensure_future(_until_signal())
    try:
        try:
            leg = await gateway.sip.call(target)
        except CallFailed as exc:
            event(
                log,
                "call.failed",
                logging.ERROR,
                target=target,
                status=exc.status,
                reason=exc.reason,
            )
            return 1
        gateway.calls.start_call(leg, agent_name=agent_name)
        waits: set[asyncio.Future[object]] = {ended, signals}  # type: ignore[arg-type]
        if duration is not None:
            waits.add(asyncio.ensure_future(asyncio.sleep(duration)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not leg.ended:
            await leg.hangup("local")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await ended
        return 0
    finally:
        signals.cancel()
        await gateway.stop()
