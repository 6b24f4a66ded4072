"""Issue 5 acceptance 4: the recording of a real softphone's call.

baresip (speech as its microphone) calls the echo agent (echoing 400 ms late, so the two
voices are apart in time) on a gateway started with recording on (the default); tshark
captures both RTP directions. The recording must be a stereo WAV whose left channel is what
baresip sent and whose right channel is what the gateway sent (every loud frame verbatim, in
the tick it was sent), both on the recording's one timeline (the left lags the wire only by
the gateway's jitter buffer), and as long as the call's RTP (first to last packet) within
100 ms.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import audio, speech
from .peerlib.baresip import BaresipConfig, BaresipCtl, start_baresip
from .peerlib.capture import read_rtp, start_capture
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port, free_port_pair
from .peerlib.recording import place_samples, place_ticks, read_recording
from .peerlib.speech import TimedFrame

pytestmark = pytest.mark.peer

SPEECH = "Hello callbridge. This is baresip speaking. One two three four five."
CALL_SECONDS = 8.0
ECHO_DELAY_MS = 400


def stream(pcap: Path, display_filter: str) -> list[TimedFrame]:
    """One RTP direction of the capture, decoded (PCMU or PCMA, whichever was agreed)."""
    records = read_rtp(pcap, display_filter)
    pt = 0 if any(r.pt == 0 for r in records) else 8
    return speech.timed_frames(records, pt)


def test_recording_is_stereo_time_aligned_and_as_long_as_the_call(
    registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    require_tools("baresip", "espeak-ng", "sox", "tshark")
    gw = gateway_factory(
        echo_delay_ms=ECHO_DELAY_MS,
        extra_env={"CALLBRIDGE_DEFAULT_AGENT": "echo", "CALLBRIDGE_RECORDING_ENABLED": "true"},
    )
    ref = audio.read_wav(audio.synthesize_speech(SPEECH, tmp_path / "speech.wav"))
    mic_wav = audio.synthesize_speech(SPEECH, tmp_path / "mic.wav", pad_after_s=CALL_SECONDS + 30)
    sip_port = free_port_pair()
    ctrl_port = free_port()
    while ctrl_port in (sip_port, sip_port + 1):
        ctrl_port = free_port()
    bs_rtp = PORT_BLOCKS.take(20)
    cfg = BaresipConfig(
        confdir=tmp_path / "baresip", user="alice", sip_port=sip_port, ctrl_port=ctrl_port,
        rtp_range=bs_rtp, source_wav=mic_wav,
    )  # fmt: skip
    gw_lo, gw_hi = gw.config.rtp_range
    cap = start_capture(
        registry,
        "tshark",
        f"udp and (portrange {gw_lo}-{gw_hi} or portrange {bs_rtp[0]}-{bs_rtp[1]})",
    )
    bs = start_baresip(registry, "baresip", cfg, lifetime_s=int(CALL_SECONDS) + 40)
    ctl = BaresipCtl.connect(ctrl_port)
    try:
        ctl.command("dial", f"sip:echo@{gw.sip_addr[0]}:{gw.sip_addr[1]}")
        ctl.wait_event("CALL_ESTABLISHED", 10)
        ctl.hold(CALL_SECONDS)
        ctl.command("hangup")
        ctl.wait_event("CALL_CLOSED", 5)
        ctl.command("quit")
    finally:
        ctl.close()
    assert bs.wait(10) == 0, bs.stdout_text()[-3000:]

    call_id = str(gw.wait_for("call.started", timeout=2)[0]["call_id"])
    gw.wait_for("call.ended", timeout=5, call_id=call_id)
    saved = gw.wait_for("store.call_saved", timeout=5, call_id=call_id)[0]
    wav = gw.config.data_dir / "recordings" / f"{call_id}.wav"
    assert saved["recording"] == str(wav), saved
    pcap = cap.stop()
    in_range = "udp.{0}port >= {1} && udp.{0}port <= {2}"
    from_phone = stream(
        pcap, in_range.format("src", *bs_rtp) + " && " + in_range.format("dst", gw_lo, gw_hi)
    )
    from_gw = stream(
        pcap, in_range.format("src", gw_lo, gw_hi) + " && " + in_range.format("dst", *bs_rtp)
    )
    assert from_phone and from_gw, (len(from_phone), len(from_gw))

    rec = read_recording(wav)
    assert (rec.channels, rec.sample_width, rec.rate) == (2, 2, 8000), rec
    left, right = rec.left, rec.right

    # Both channels carry their speaker: the speech on the left, its echo ~400 ms later on
    # the right (by envelope, piece by piece: the jitter buffer may stretch the audio a little
    # mid-sentence when it adapts).
    said, echoed = audio.compare(ref, left), audio.compare(ref, right)
    said_p = audio.piecewise_env_corr(ref, left, said.offset_s)
    echoed_p = audio.piecewise_env_corr(ref, right, echoed.offset_s)
    print(f"speech vs left: {said} (pieces {said_p:.3f})\n"
          f"speech vs right: {echoed} (pieces {echoed_p:.3f})")  # fmt: skip
    assert said_p >= 0.9 and echoed_p >= 0.9, (said_p, echoed_p, said, echoed)
    # In whole samples: offsets are sample counts / 8000, and 0.42 - 0.02 is 0.39999... in floats.
    lag = round(echoed.offset_s - said.offset_s, 4)
    assert ECHO_DELAY_MS / 1000 <= lag < ECHO_DELAY_MS / 1000 + 0.2, (
        f"right lags left by {lag:.3f} s"
    )

    # The right channel is what the gateway sent, frame for frame, each in the tick it was
    # sent: that places the recording's start on the capture's clock.
    sent = place_ticks(from_gw, rec.right)
    rec_start = sent.start_estimate()
    off = [abs(d) for d in sent.delays(rec_start)]
    print(f"gateway's loud frames in the right channel: {len(sent.found)}/{sent.loud}, "
          f"off their tick by <= {1000 * max(off):.1f} ms")  # fmt: skip
    assert sent.share == 1.0 and max(off) < 0.01, (sent.share, max(off))
    # The left channel is what baresip sent, later than on the wire by the jitter buffer only.
    heard = place_samples(from_phone, rec.left)
    delays = heard.delays(rec_start)
    median = statistics.median(delays)
    print(f"baresip's loud frames in the left channel: {len(heard.found)}/{heard.loud}, "
          f"behind the wire by {1000 * median:.0f} ms (median), {1000 * max(delays):.0f} ms (max)")  # fmt: skip
    assert heard.share >= 0.8, heard.share  # the rest: around a splice of the jitter buffer
    assert min(delays) >= -0.005 and median <= 0.1 and max(delays) <= 0.2, (min(delays), median)

    # As long as the call: first to last RTP packet (either way), plus the last one's 20 ms.
    first = min(from_phone[0].time, from_gw[0].time)
    last = max(from_phone[-1].time, from_gw[-1].time)
    call_s = last - first + 0.02
    print(f"recording {rec.seconds:.3f} s, call on the wire {call_s:.3f} s, "
          f"starting {1000 * (rec_start - first):+.0f} ms from the first packet")  # fmt: skip
    assert abs(rec.seconds - call_s) <= 0.1, f"recording {rec.seconds:.3f} s, call {call_s:.3f} s"

    # The transcript of an echo call: complete and empty.
    doc = json.loads((gw.config.data_dir / "transcripts" / f"{call_id}.json").read_text())
    assert (doc["complete"], doc["end_reason"], doc["entries"]) == (True, "remote_bye", [])
