"""`callbridge call --listen`: the call on this machine's audio device, for real through
PortAudio and ALSA.

This machine has no sound card, which is the first case: a clear message and nothing dialled.
For the second, ALSA's own `file` plugin is the device (tests/peers/peerlib/alsa.py): the
microphone reads a tone from a file, the speakers write to another. It has no clock (ALSA's
null device underneath), so the bridge's own 20 ms grid paces it. The far end is an echo
gateway: the tone goes out, comes back, and only then lands in the speaker file.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callbridge.gateway import Gateway
from tests.peers.peerlib.alsa import file_device

from .gateways import echo_settings, running


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(home: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    env.update({
        "HOME": str(home), "CALLBRIDGE_DATA_DIR": str(data), "CALLBRIDGE_SIP_HOST": "127.0.0.1",
        "CALLBRIDGE_SIP_PORT": str(free_port()), "CALLBRIDGE_RTP_PORT_MIN": "44000",
        "CALLBRIDGE_RTP_PORT_MAX": "44100", "CALLBRIDGE_DEFAULT_AGENT": "echo",
        "CALLBRIDGE_RECORDING_ENABLED": "false",
    })  # fmt: skip
    return env


@pytest.fixture
async def echo(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running(echo_settings(tmp_path / "echo", (44200, 44300))) as gw:
        yield gw


async def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbridge", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_without_an_audio_device_nothing_is_dialled(tmp_path: Path, echo: Gateway) -> None:
    host, port = echo.sip.local_addr
    rc, out = await run_cli(
        cli_env(tmp_path, tmp_path / "data"), "call", f"sip:echo@{host}:{port}", "--listen"
    )
    assert rc == 2, out
    assert "no audio device to listen with (this machine has none)" in out, out
    assert "--listen DEVICE" in out
    assert "sip.listening" not in out and echo.calls.calls == {}  # no gateway, no INVITE


async def test_the_call_goes_through_the_device_both_ways(tmp_path: Path, echo: Gateway) -> None:
    tone = (6000 * np.sin(2 * math.pi * 440 * np.arange(8000 * 20) / 8000)).astype("<i2")
    mic, speakers = tmp_path / "mic.raw", tmp_path / "speakers.raw"
    mic.write_bytes(tone.tobytes())
    device = file_device(tmp_path, mic, speakers)
    host, port = echo.sip.local_addr
    rc, out = await run_cli(
        cli_env(tmp_path, tmp_path / "data"),
        "call", f"sip:echo@{host}:{port}", "--listen", device, "--duration", "3",
    )  # fmt: skip
    assert rc == 0, out
    assert "listen.started" in out and "listen.stopped" in out, out
    heard = np.frombuffer(speakers.read_bytes(), "<i2").astype(np.float64)
    # The speakers got the call's audio: the tone the microphone sent, echoed back (µ-law
    # both ways), about 2.5 s of it; frames of silence before the echo arrived.
    loud = heard[np.abs(heard) > 1000]
    assert len(loud) > 8000, len(loud)
    spectrum = np.abs(np.fft.rfft(heard[-8000:] if len(heard) >= 8000 else heard))
    peak_hz = np.argmax(spectrum) * 8000 / (2 * (len(spectrum) - 1))
    assert abs(peak_hz - 440) < 10, peak_hz
