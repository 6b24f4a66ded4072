"""Issue 9, crash truth: a gateway killed with SIGKILL mid-call, then restarted on the same
store, tells the truth about the call.

SIPp calls the echo agent playing a tone; `KILL_AT_S` after the answer the test kills the
gateway (SIGKILL: no handler, no flush, no close; mid-way between two 200 ms checkpoints,
and 900 ms after a 1 s one) and notes the instant; after an outage of `OUTAGE_S` it starts
a new gateway on the same data directory and gateway id. The
call must be `lost` with `ended` within 0.5 s of the kill (not the restart, seconds later),
and the recording a valid WAV whose audio runs to within 0.3 s of the kill: its duration is
kill - answer. Every wait for something to happen is on a log line, the recording's header
or a process, each with a deadline. The two timed waits are the scenario's inputs, not
waits for an outcome: when the kill lands, and the outage (without
it the restart would follow the kill by a fraction of a second, too close to tell a
restart-time `ended` from the truth).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import struct
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import audio
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port, wait_until
from .peerlib.sipp import start_uac
from .peerlib.wav2pcap import wav_to_pcap

pytestmark = pytest.mark.peer

KILL_AT_S = 3.9  # after the answer
OUTAGE_S = 2.0  # from the kill to the restart
GATEWAY_ID = "crash-truth-gw"
TONE_HZ = 440.0


def recorded_seconds(wav: Path) -> float | None:
    """What the recording's header covers now (None before the file exists)."""
    try:
        with wav.open("rb") as f:
            head = f.read(44)
    except FileNotFoundError:
        return None
    if len(head) < 44:
        return None
    return float(struct.unpack("<I", head[40:44])[0]) / (8000 * 2 * 2)


def test_a_gateway_killed_mid_call_restarts_knowing_when_the_call_ended(
    registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    require_tools("sipp")
    env = {
        "CALLBRIDGE_DEFAULT_AGENT": "echo",
        "CALLBRIDGE_RECORDING_ENABLED": "true",
        "CALLBRIDGE_STORE_GATEWAY_ID": GATEWAY_ID,
    }
    gw = gateway_factory(extra_env=env)
    data_dir = gw.config.data_dir

    # The caller: SIPp plays 30 s of tone and would hold the call 60 s.
    t = np.arange(30 * 8000) / 8000
    tone = audio.write_wav(tmp_path / "tone.wav", (8000 * np.sin(2 * np.pi * TONE_HZ * t)))
    media = tmp_path / "media.pcap"
    wav_to_pcap(tone, media, codec="pcmu")
    uac_mp, _ = PORT_BLOCKS.take(8)
    uac = start_uac(
        registry, "uac", "uac_play.xml", target=gw.sip_addr, service="echo",
        sip_port=free_port(), media_port=uac_mp, hold_ms=60_000, timeout_s=90,
        files={"media.pcap": media},
    )  # fmt: skip

    started = gw.wait_for("call.started", timeout=20)[0]
    call_id = str(started["call_id"])
    wav = data_dir / "recordings" / f"{call_id}.wav"
    wait_until(  # the recording runs (and the gateway keeps up)
        lambda: True if (recorded_seconds(wav) or 0.0) >= KILL_AT_S - 1 else None,
        timeout=20,
        what=f"{KILL_AT_S - 1} s in the recording's header",
    )
    time.sleep(max(0.0, float(started["ts"]) + KILL_AT_S - time.time()))
    killed_at = time.time()
    os.kill(gw.proc.pid, signal.SIGKILL)
    assert gw.proc.wait(10) == -signal.SIGKILL
    uac.proc.stop(grace=5)  # its call's far end is gone: nothing more to see there

    # The outage, then the restart: the same store, the same gateway id (not the SIP port).
    time.sleep(max(0.0, killed_at + OUTAGE_S - time.time()))
    restart_at = time.time()
    again = gateway_factory(extra_env={**env, "CALLBRIDGE_DATA_DIR": str(data_dir)})
    lost = again.wait_for("store.call_lost", timeout=5, call_id=call_id)[0]
    print(f"lost call: {lost}")
    assert again.wait_for("store.ready", timeout=5)[0]["lost_calls"] == 1

    with sqlite3.connect(f"file:{data_dir / 'callbridge.db'}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT answered, ended, end_reason FROM calls WHERE id = ?", (call_id,)
        ).fetchone()
    assert row is not None, call_id
    answered, ended, reason = row
    print(
        f"answered {answered:.3f}, killed +{killed_at - answered:.3f} s, ended "
        f"{ended - killed_at:+.3f} s from the kill, restart +{restart_at - killed_at:.3f} s"
    )
    assert reason == "lost"
    assert abs(ended - killed_at) <= 0.5, (ended - killed_at, lost)
    assert lost["before_restart_s"] >= OUTAGE_S - 0.5, lost  # not the restart's "now"

    # The recording: a valid WAV (its header fixed up) of the call up to the kill.
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = w.getnframes()
        samples = np.frombuffer(w.readframes(frames), dtype="<i2").reshape(-1, 2)
    assert wav.stat().st_size == 44 + 4 * frames  # the header covers the whole file
    seconds = frames / 8000
    expected = killed_at - answered
    print(f"recording {seconds:.3f} s, kill - answer {expected:.3f} s")
    assert expected - 0.3 <= seconds <= expected + 0.05, (seconds, expected)
    # ... holding the caller's tone to its end (audio, not silence padding).
    tail = samples[-2000:, 0].astype(np.float64)  # the last 250 ms of the caller's side
    assert np.sqrt(np.mean(tail**2)) > 1000, "the recording's end is silent"
