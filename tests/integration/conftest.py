"""Fixtures of the in-process integration tests: an echo gateway on loopback and a phone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from callbridge.config.settings import load_settings
from callbridge.gateway import Gateway, build_gateway

from .phone import Phone


@pytest.fixture
async def gateway(tmp_path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    s = load_settings(environ={})
    s = replace(
        s,
        data_dir=str(tmp_path),
        default_agent="echo",  # these tests need no speech models
        shutdown_grace=3.0,
        sip=replace(s.sip, host="127.0.0.1", port=0),
        rtp=replace(s.rtp, port_min=43000, port_max=43200, timeout=1.0),
    )
    gw = build_gateway(s)
    await gw.start()
    yield gw
    await gw.stop()


@pytest.fixture
def phone() -> AsyncIterator[Phone]:  # type: ignore[misc]
    p = Phone()
    yield p
    p.close()
