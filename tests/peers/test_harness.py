"""Self-tests of the peer harness, without callbridge: real peers talking to each other,
the G.711 codec against sox, and the positive/negative controls of the audio comparison.
If these fail, the acceptance tests cannot be trusted either way."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import require_tools
from .peerlib import audio
from .peerlib.baresip import BaresipConfig, BaresipCtl, start_baresip
from .peerlib.callbridge import GatewayConfig, start_gateway
from .peerlib.capture import read_dtmf, read_rtp, rtp_to_pcm, start_capture
from .peerlib.process import (
    PORT_BLOCKS,
    DeadlineExceeded,
    ProcessRegistry,
    free_port,
    free_port_pair,
)
from .peerlib.sipp import BUNDLED, start_uac, start_uas
from .peerlib.wav2pcap import wav_to_pcap

pytestmark = pytest.mark.peer

SENTENCE_A = "Testing one two three. The quick brown fox jumps over the lazy dog."
SENTENCE_B = "Bob here. This is the answering side, playing a different sentence for the check."


def bundled_reference() -> audio.Pcm:
    """The PCMA audio of SIPp's bundled g711a.pcap, decoded through the capture path."""
    return rtp_to_pcm(read_rtp(BUNDLED / "g711a.pcap", "rtp.p_type == 8"), 8)


def test_g711_decoder_matches_sox(tmp_path: Path) -> None:
    require_tools("sox")
    codes = bytes(range(256))
    for enc, decode in (("al", audio.alaw_decode), ("ul", audio.ulaw_decode)):
        raw = tmp_path / f"codes.{enc}"
        raw.write_bytes(codes)
        out = tmp_path / f"codes-{enc}.wav"
        audio.sox(
            "-t",
            enc,
            "-r",
            "8000",
            "-c",
            "1",
            str(raw),
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(out),
        )
        assert np.array_equal(audio.read_wav(out), decode(codes)), enc


def test_g711_encoder_is_the_inverse_of_the_decoder() -> None:
    codes = bytes(range(256))
    # Every code maps to a level that encodes back to the same code, except A-law/µ-law's
    # two zeros (+0/-0), which both decode to 0 (µ-law: 0x7F and 0xFF).
    for enc, dec in (
        (audio.alaw_encode, audio.alaw_decode),
        (audio.ulaw_encode, audio.ulaw_decode),
    ):
        again = enc(dec(codes))
        assert np.array_equal(dec(again), dec(codes))
        assert sum(a != b for a, b in zip(again, codes, strict=True)) <= 1


def test_similarity_positive_control_g711_loopback(tmp_path: Path) -> None:
    """Speech -> PCMU RTP (wav2pcap) -> tshark -> decoded PCM, delayed by 0.3 s: >= 0.8."""
    require_tools("espeak-ng", "sox", "tshark")
    ref_wav = audio.synthesize_speech(SENTENCE_A, tmp_path / "a.wav")
    ref = audio.read_wav(ref_wav)
    pcap = tmp_path / "a.pcap"
    info = wav_to_pcap(ref_wav, pcap, codec="pcmu")
    records = read_rtp(pcap)
    assert len(records) == info.packets
    assert {r.pt for r in records} == {0}
    decoded = rtp_to_pcm(records, 0)
    delayed = np.concatenate([np.zeros(2400, dtype=np.int16), decoded])
    sim = audio.compare(ref, delayed)
    assert sim.ok(), sim
    assert sim.env_corr > 0.95 and sim.fine_corr is not None and sim.fine_corr > 0.95, sim
    assert abs(sim.offset_s - 0.3) < 0.002, sim


def test_similarity_negative_control_different_speech(tmp_path: Path) -> None:
    require_tools("espeak-ng", "sox")
    a = audio.read_wav(audio.synthesize_speech(SENTENCE_A, tmp_path / "a.wav"))
    b = audio.read_wav(
        audio.synthesize_speech(SENTENCE_B, tmp_path / "b.wav", voice="en-gb", speed=160, pitch=70)
    )
    sim = audio.compare(a, b)
    assert not sim.ok(), sim
    assert sim.env_corr < 0.5, sim
    assert sim.fine_corr is not None and sim.fine_corr < 0.5, sim
    # silence contains nothing either
    silence = audio.compare(a, np.zeros(len(a) * 2, dtype=np.int16))
    assert not silence.ok(), silence


def _stretched(x: audio.Pcm, points: list[int], samples: int) -> audio.Pcm:
    """X with `samples` repeated at each point, as a jitter buffer growing mid-sentence does."""
    parts, prev = [], 0
    for p in points:
        parts += [x[prev:p], x[p - samples : p]]
        prev = p
    return np.concatenate([*parts, x[prev:]])


def test_piecewise_similarity_tolerates_a_stretch_but_not_other_speech(tmp_path: Path) -> None:
    """80 ms added across a sentence (four 20 ms repeats) sinks the whole-sentence envelope
    correlation, not the piecewise one; different speech stays far below either way."""
    require_tools("espeak-ng", "sox")
    a = audio.read_wav(audio.synthesize_speech(SENTENCE_A, tmp_path / "a.wav"))
    b = audio.read_wav(
        audio.synthesize_speech(SENTENCE_B, tmp_path / "b.wav", voice="en-gb", speed=160, pitch=70)
    )
    pad = np.zeros(8000, dtype=np.int16)
    n = len(a)
    warped = np.concatenate([pad, _stretched(a, [n // 5, 2 * n // 5, 3 * n // 5, 4 * n // 5], 160)])
    whole = audio.compare(a, warped)
    assert whole.env_corr < 0.9, whole
    assert audio.piecewise_env_corr(a, warped, whole.offset_s) >= 0.95
    other = np.concatenate([pad, b, pad])
    for offset in (audio.compare(a, other).offset_s, 1.0):
        assert audio.piecewise_env_corr(a, other, offset) < 0.7


def test_sipp_uac_to_sipp_uas_echo_with_dtmf(registry: ProcessRegistry) -> None:
    """Recipe 01: SIPp UAC (bundled PCMA pcap + RFC 4733 1 2 #) -> SIPp UAS -rtp_echo.
    The echoed audio must correlate with the bundled pcap, digits must be on the wire."""
    require_tools("sipp", "tshark")
    uas_sip, uac_sip = free_port(), free_port()
    uas_mp, _ = PORT_BLOCKS.take(4)
    uac_mp, _ = PORT_BLOCKS.take(8)
    cap = start_capture(
        registry,
        "tshark",
        f"udp and (port {uas_sip} or port {uac_sip} or portrange {uas_mp}-{uas_mp + 3} "
        f"or portrange {uac_mp}-{uac_mp + 7})",
    )
    uas = start_uas(
        registry, "uas", "uas_echo.xml", sip_port=uas_sip, media_port=uas_mp,
        rtp_echo=True, keys={"name": "uas"}, timeout_s=40,
    )  # fmt: skip
    uac = start_uac(
        registry, "uac", "uac_pcap_dtmf.xml", target=("127.0.0.1", uas_sip), service="echo",
        sip_port=uac_sip, media_port=uac_mp, timeout_s=40,
    )  # fmt: skip
    assert uac.wait(45) == 0, uac.describe()
    assert uas.wait(10) == 0, uas.describe()
    pcap = cap.stop()

    sent = read_rtp(pcap, f"udp.dstport == {uas_mp} && rtp.p_type == 8")
    echoed = read_rtp(pcap, f"udp.srcport == {uas_mp} && rtp.p_type == 8")
    assert len(sent) == 236 and len(echoed) == 236, (len(sent), len(echoed))
    assert read_dtmf(pcap, f"udp.dstport == {uas_mp}") == "12#"
    sim = audio.compare(bundled_reference(), rtp_to_pcm(echoed, 8))
    assert sim.ok(), sim
    assert uac.stats().counter("SuccessfulCall(C)") == 1
    assert uac.stats().counter("Retransmissions(C)") == 0


def test_sipp_uac_plays_wav2pcap_media(registry: ProcessRegistry, tmp_path: Path) -> None:
    """uac_play.xml with a wav2pcap-built media.pcap (PCMU + DTMF 47) to SIPp UAS -rtp_echo."""
    require_tools("sipp", "tshark", "espeak-ng", "sox")
    wav = audio.synthesize_speech(SENTENCE_B, tmp_path / "speech.wav")
    media = tmp_path / "media.pcap"
    wav_to_pcap(wav, media, codec="pcmu", dtmf="47")
    uas_sip, uac_sip = free_port(), free_port()
    uas_mp, _ = PORT_BLOCKS.take(4)
    uac_mp, _ = PORT_BLOCKS.take(8)
    cap = start_capture(
        registry, "tshark", f"udp and (port {uas_sip} or portrange {uas_mp}-{uas_mp + 3})"
    )
    uas = start_uas(
        registry, "uas", "uas_echo.xml", sip_port=uas_sip, media_port=uas_mp,
        rtp_echo=True, keys={"name": "uas"}, timeout_s=40,
    )  # fmt: skip
    uac = start_uac(
        registry, "uac", "uac_play.xml", target=("127.0.0.1", uas_sip), service="echo",
        sip_port=uac_sip, media_port=uac_mp, hold_ms=int(len(audio.read_wav(wav)) / 8) + 2500,
        timeout_s=40, files={"media.pcap": media},
    )  # fmt: skip
    assert uac.wait(45) == 0, uac.describe()
    assert uas.wait(10) == 0, uas.describe()
    pcap = cap.stop()
    echoed = read_rtp(pcap, f"udp.srcport == {uas_mp}")
    assert read_dtmf(pcap, f"udp.srcport == {uas_mp}") == "47"
    sim = audio.compare(audio.read_wav(wav), rtp_to_pcm(echoed, 0))
    assert sim.ok(), sim


def test_baresip_to_sipp_uas_echo_recording(registry: ProcessRegistry, tmp_path: Path) -> None:
    """baresip (aufile speech) dials SIPp UAS -rtp_echo over ctrl_tcp; its -dec.wav
    recording must contain its own speech (the echo). Validates the baresip harness."""
    require_tools("sipp", "baresip", "espeak-ng", "sox")
    ref_wav = audio.synthesize_speech(SENTENCE_A, tmp_path / "ref.wav")
    src_wav = audio.synthesize_speech(SENTENCE_A, tmp_path / "src.wav", pad_after_s=40)
    uas_sip = free_port()
    uas_mp, _ = PORT_BLOCKS.take(4)
    bs_sip, bs_ctrl = free_port_pair(), free_port()
    while bs_ctrl in (bs_sip, bs_sip + 1):
        bs_ctrl = free_port()
    cfg = BaresipConfig(
        confdir=tmp_path / "baresip", user="alice", sip_port=bs_sip, ctrl_port=bs_ctrl,
        rtp_range=PORT_BLOCKS.take(20), source_wav=src_wav,
    )  # fmt: skip
    uas = start_uas(
        registry, "uas", "uas_echo.xml", sip_port=uas_sip, media_port=uas_mp,
        rtp_echo=True, keys={"name": "uas"}, timeout_s=40,
    )  # fmt: skip
    bs = start_baresip(registry, "baresip", cfg, lifetime_s=40)
    ctl = BaresipCtl.connect(bs_ctrl)
    try:
        ctl.command("dial", f"sip:echo@127.0.0.1:{uas_sip}")
        ctl.wait_event("CALL_ESTABLISHED", 10)
        # Hold the call for the length of the speech (+1 s); it must stay up meanwhile.
        hold = len(audio.read_wav(ref_wav)) / 8000 + 1.0
        ctl.hold(hold)
        ctl.command("hangup")
        ctl.wait_event("CALL_CLOSED", 5)
        ctl.command("quit")
    finally:
        ctl.close()
    assert bs.wait(10) == 0, bs.stdout_text()[-3000:]
    assert uas.wait(10) == 0, uas.describe()
    recs = cfg.recordings("dec")
    assert len(recs) == 1, recs
    sim = audio.compare(audio.read_wav(ref_wav), audio.read_wav(recs[0]))
    assert sim.ok(), sim


def test_tools_report_versions() -> None:
    """The peers are the Debian builds the recipes were verified with."""
    require_tools("sipp", "baresip", "tshark", "sox", "espeak-ng")
    sipp_v = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10)
    assert "SIPp v3.6" in sipp_v.stdout + sipp_v.stderr
    tshark_v = subprocess.run(["tshark", "-v"], capture_output=True, text=True, timeout=10)
    assert "TShark" in tshark_v.stdout


FAKE_GATEWAY = r"""
import json, os, signal, sys, time
def log(**kw):
    sys.stderr.write(json.dumps({"ts": time.time(), "level": "INFO", "logger": "fake", **kw}) + "\n")
    sys.stderr.flush()
def on_int(signum, frame):
    sys.stderr.write("Traceback (most recent call last):\n  File 'x'\nRuntimeError: boom\n")
    sys.exit(3)
signal.signal(signal.SIGINT, on_int)
log(msg="sip.listening", host="127.0.0.1", port=int(os.environ["CALLBRIDGE_SIP_PORT"]))
sys.stderr.write("not json\n")
log(msg="call.started", call_id="c1", direction="inbound")
log(msg="call.dtmf", call_id="c1", digit="5")
while True:
    time.sleep(0.05)
"""


def test_gateway_fixture_against_a_fake_process(registry: ProcessRegistry, tmp_path: Path) -> None:
    """The callbridge fixture's log parsing, waits, crash detection and SIGINT handling,
    against a stand-in process that logs like the gateway and crashes on SIGINT."""
    cfg = GatewayConfig.allocate(tmp_path / "data", PORT_BLOCKS.take(4))
    env_keys = set(cfg.env())
    assert {"CALLBRIDGE_SIP_PORT", "CALLBRIDGE_RTP_PORT_MIN", "CALLBRIDGE_LOG_FORMAT"} <= env_keys
    gw = start_gateway(registry, cfg, argv=[sys.executable, "-c", FAKE_GATEWAY])
    assert gw.wait_for("call.started", lambda ev: ev["direction"] == "inbound", timeout=5)
    assert [ev["digit"] for ev in gw.events("call.dtmf", call_id="c1")] == ["5"]
    assert gw.log.other_lines == ["not json"]
    assert gw.events("call.ended") == []
    with pytest.raises(DeadlineExceeded):
        gw.wait_for("call.ended", timeout=0.3)
    assert gw.crash_evidence() == []
    assert gw.shutdown(grace=5) == 3
    assert not gw.proc.killed
    assert gw.crash_evidence(), "the traceback printed on SIGINT must be detected"
    # A wait on an exited process fails at once instead of running into its deadline.
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="exited"):
        gw.wait_for("call.ended", timeout=30)
    assert time.monotonic() - t0 < 5


def test_port_blocks_do_not_overlap() -> None:
    blocks = [PORT_BLOCKS.take(n) for n in (4, 40, 7, 200)]
    spans = sorted(blocks)
    for (_, last), (first, _) in itertools.pairwise(spans):
        assert last < first, spans
    assert all(first % 2 == 0 and last - first + 1 >= 4 for first, last in blocks)
