"""In-process gateways for the integration tests: echo agent, loopback SIP on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from callbridge.config.settings import Settings, load_settings
from callbridge.gateway import Gateway, build_gateway


def echo_settings(data_dir: Path, rtp: tuple[int, int], **sip: Any) -> Settings:
    """Defaults, the echo agent as the default route, SIP on 127.0.0.1 (port 0 unless
    given), RTP in `rtp` (each test its own range, so tests cannot collide)."""
    s = load_settings(environ={})
    return replace(
        s, data_dir=str(data_dir), default_agent="echo",
        sip=replace(s.sip, **{"host": "127.0.0.1", "port": 0, **sip}),
        rtp=replace(s.rtp, port_min=rtp[0], port_max=rtp[1]),
    )  # fmt: skip


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    gw = build_gateway(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
