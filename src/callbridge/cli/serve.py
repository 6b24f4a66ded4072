"""`callbridge serve`: run the gateway until SIGINT or SIGTERM, then stop it gracefully.

SIGTERM (what systemd and Kubernetes send) first drains when `drain_timeout` is set: no new
calls, live ones finish; SIGINT (Ctrl-C), or a second signal, stops at once."""

from __future__ import annotations

import asyncio
import logging
import signal

from callbridge.config.settings import Settings
from callbridge.core.log import event
from callbridge.gateway import Gateway, build_gateway
from callbridge.observability.heap import PAUSES, HeapKeeper, freeze_startup_heap

log = logging.getLogger("callbridge.serve")


async def until_signal() -> signal.Signals:
    """Until SIGINT or SIGTERM arrives (which one is returned); the handlers are removed
    again on the way out."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[signal.Signals] = loop.create_future()

    def caught(sig: signal.Signals) -> None:
        if not got.done():
            got.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, caught, sig)
    try:
        return await got
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve(settings: Settings, *, http_optional: bool = False) -> None:
    """`http_optional`: a cluster worker's internal API, which must not stop the worker."""
    gateway = build_gateway(settings)
    gateway.http_optional = http_optional
    await gateway.start()
    # What the process holds now lives as long as it does: no full collection during calls
    # walks it again (observability.heap). Then every long collection pause is reported.
    event(log, "gateway.heap_frozen", objects=freeze_startup_heap())
    PAUSES.install()
    # The same for what live calls hold, and a clean sweep whenever no call is up.
    keeper = asyncio.ensure_future(
        HeapKeeper(lambda: len(gateway.calls.calls), pauses=PAUSES).run()
    )
    try:
        sig = await until_signal()
        if sig is signal.SIGTERM and settings.drain_timeout > 0:
            await _drain(gateway, settings.drain_timeout)
    finally:
        keeper.cancel()
        PAUSES.uninstall()
        await gateway.stop()


async def _drain(gateway: Gateway, timeout: float) -> None:
    """The gateway's drain, cut short by another signal."""
    draining = asyncio.ensure_future(gateway.drain(timeout))
    interrupt = asyncio.ensure_future(until_signal())
    try:
        await asyncio.wait({draining, interrupt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (draining, interrupt):
            task.cancel()
        await asyncio.gather(draining, interrupt, return_exceptions=True)
