"""`callbridge call --listen` with early media: a SIPp UAS answers 183 Session Progress with
SDP, plays a 440 Hz tone (a ringback, an announcement) for 2 s, and answers 2.5 s later,
sending nothing after. The caller's "speakers" are ALSA's file plugin (peerlib/alsa.py): the tone must be in what they played,
and it can only have come before the answer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from .conftest import require_tools
from .peerlib import speech
from .peerlib.alsa import file_device
from .peerlib.callbridge import GatewayConfig, start_outbound_call
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import start_uas
from .peerlib.wav2pcap import wav_to_pcap

pytestmark = pytest.mark.peer


def test_early_media_reaches_the_speakers_before_the_answer(
    registry: ProcessRegistry, tmp_path: Path
) -> None:
    require_tools("sipp")
    tone = (6000 * np.sin(2 * math.pi * 440 * np.arange(16000) / 8000)).astype(np.int16)
    media = tmp_path / "media.pcap"
    wav_to_pcap(speech.save(tmp_path / "tone.wav", tone), media, codec="pcmu")
    mic, speakers = tmp_path / "mic.raw", tmp_path / "speakers.raw"
    mic.write_bytes(bytes(2 * 8000 * 30))  # the person listening says nothing
    device = file_device(tmp_path, mic, speakers)

    uas_sip = free_port()
    uas_mp, _ = PORT_BLOCKS.take(8)
    uas = start_uas(
        registry, "uas", "uas_early_media.xml", sip_port=uas_sip, media_port=uas_mp,
        timeout_s=60, files={"media.pcap": media},
    )  # fmt: skip
    cfg = GatewayConfig.allocate(tmp_path / "callbridge-data", PORT_BLOCKS.take(40))
    cfg.extra_env["HOME"] = str(tmp_path)
    cb = start_outbound_call(
        registry, cfg, f"sip:ringback@127.0.0.1:{uas_sip}", duration_s=2.0,
        extra=["--listen", device],
    )  # fmt: skip
    rc = cb.wait_exit(30)
    cb.assert_no_crash()
    assert rc == 0, cb.stderr_tail()
    assert uas.wait(10) == 0, uas.describe()

    progress = cb.events("call.progress")
    assert [p["status"] for p in progress] == [183] and progress[0]["early_media"], progress
    started = cb.events("call.started")
    assert len(started) == 1 and started[0]["agent"] == "listen", started
    stopped = cb.events("listen.stopped")
    assert len(stopped) == 1, cb.stderr_tail()
    played = np.frombuffer(speakers.read_bytes(), "<i2").astype(np.float64)
    loud = np.abs(played) > 1000
    # About 2 s of tone (µ-law, through the jitter buffer): all of it before the answer, since
    # the UAS sends nothing after its 200 OK.
    assert 1.5 * 8000 <= loud.sum() <= 2.2 * 8000, loud.sum() / 8000
    first = int(np.argmax(loud))
    segment = played[first : first + 8000]
    peak_hz = np.argmax(np.abs(np.fft.rfft(segment))) * 8000 / len(segment)
    assert abs(peak_hz - 440) < 5, peak_hz
    assert float(progress[0]["ts"]) < float(started[0]["ts"])
