"""`callbridge serve`: run the gateway until SIGINT or SIGTERM, then stop it gracefully."""

from __future__ import annotations

import asyncio
import signal

from callbridge.app import build_gateway
from callbridge.config.settings import Settings


async def until_signal() -> None:
    """Until SIGINT or SIGTERM arrives; the handlers are removed again on the way out."""
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
        await until_signal()
    finally:
        await gateway.stop()
