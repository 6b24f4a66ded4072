"""Two in-process gateways on loopback: B calls A's echo agent over real UDP sockets.

Not the proof against real peers (tests/peers/ is); this catches wiring mistakes fast.
Waits are on events with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import numpy as np

from callbridge.calls.manager import Call
from callbridge.config.settings import Settings, load_settings
from callbridge.core.errors import CallEnded
from callbridge.core.frames import FRAME_SAMPLES, AudioFrame
from callbridge.core.ports import CallLeg
from callbridge.gateway import build_gateway


def settings(tmp: str, rtp_base: int) -> Settings:
    s = load_settings(environ={})
    return replace(
        s,
        data_dir=tmp,
        default_agent="echo",  # these tests need no speech models
        sip=replace(s.sip, host="127.0.0.1", port=0),
        rtp=replace(s.rtp, port_min=rtp_base, port_max=rtp_base + 100),
    )


class ProbeAgent:
    """Plays a known signal, records what comes back, sends DTMF, then hangs up."""

    def __init__(self, frames: int, digits: str = "") -> None:
        rng = np.random.default_rng(7)
        # Band-limited noise bursts: a signal whose delayed copy is easy to find.
        sig = rng.normal(0, 4000, frames * FRAME_SAMPLES)
        sig[(np.arange(sig.size) // 1600) % 2 == 1] *= 0.05
        self.sent = np.clip(sig, -32768, 32767).astype("<i2")
        self.heard: list[np.ndarray] = []
        self.digits = digits

    async def run(self, leg: CallLeg) -> None:
        async def listen() -> None:
            async for item in leg.inputs():
                if isinstance(item, AudioFrame):
                    self.heard.append(np.frombuffer(item.pcm, "<i2"))

        listener = asyncio.create_task(listen())
        try:
            # DTMF goes out at once, ahead of queued audio (control never waits behind audio),
            # so send it before the signal to keep the signal contiguous.
            if self.digits:
                await leg.send_dtmf(self.digits)
            for i in range(0, self.sent.size, FRAME_SAMPLES):
                await leg.play(AudioFrame(self.sent[i : i + FRAME_SAMPLES].tobytes()))
            # Let the echo of the tail come back: 25 more frames of silence.
            for _ in range(25):
                await leg.play(AudioFrame.silence())
        except CallEnded:
            pass
        await leg.hangup("done")
        await listener


# The echo of the DTMF period is silence, so find the signal by correlation rather than at 0.
async def test_call_echo_agent_over_loopback(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    a = build_gateway(settings(str(tmp_path / "a"), 41000))
    b = build_gateway(settings(str(tmp_path / "b"), 42000))
    await a.start()
    await b.start()
    try:
        host, port = a.sip.local_addr
        ended_a: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        a.calls.on_end.append(lambda c: ended_a.done() or ended_a.set_result(c))
        ended_b: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        b.calls.on_end.append(lambda c: ended_b.done() or ended_b.set_result(c))
        async with asyncio.timeout(20):
            leg = await b.sip.call(f"sip:echo@{host}:{port}")
            probe = ProbeAgent(frames=100, digits="12#")
            b.calls.start_call(leg, agent=probe, agent_name="probe")
            await ended_b
            call_a = await ended_a
        assert call_a.leg.end_reason == "remote_bye"
        heard = np.concatenate(probe.heard).astype(float)
        sent = probe.sent.astype(float)
        # Find the echo delay by cross-correlation, then compare sample by sample.
        corr = np.correlate(heard, sent[:4000], mode="valid")
        lag = int(np.argmax(corr))
        seg = heard[lag : lag + sent.size]
        n = min(seg.size, sent.size)
        r = np.corrcoef(seg[:n], sent[:n])[0, 1]
        assert r > 0.95, (lag, r)
        assert 0 <= lag < 8000 * 1.5  # after ~0.6 s of DTMF, the signal comes back at once
        digits = [
            rec.__dict__["fields"]["digit"] for rec in caplog.records if rec.msg == "call.dtmf"
        ]
        assert digits == ["1", "2", "#"]
    finally:
        await b.stop()
        await a.stop()
