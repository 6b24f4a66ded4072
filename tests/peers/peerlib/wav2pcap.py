"""WAV -> pcap holding ONE RTP stream, for SIPp's play_pcap_audio (from the shared testbed).

One SSRC, continuous sequence numbers and timestamps, G.711 in `ptime` frames (PCMU
pt 0 or PCMA pt 8, encoded here in numpy), a marker bit at each talkspurt start, and
optional RFC 4733 telephone-events: by default after the audio, or from `dtmf_at`
seconds on (the event packets then replace audio frames). SIPp rewrites the
addresses and ports when it replays the file.

    python -m tests.peers.peerlib.wav2pcap IN.wav OUT.pcap [--codec pcmu|pcma] [--dtmf 12#]
"""

from __future__ import annotations

import argparse
import random
import struct
from dataclasses import dataclass
from pathlib import Path

from .audio import alaw_encode, read_wav, ulaw_encode

EVENTS = {**{str(i): i for i in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


@dataclass(frozen=True, slots=True)
class PcapInfo:
    packets: int
    seconds: float
    ssrc: int
    payload_type: int


def _ip_checksum(header: bytes) -> int:
    s: int = sum(struct.unpack("!10H", header))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def _frame(udp_payload: bytes, sport: int = 40000, dport: int = 40002) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(udp_payload), 0) + udp_payload
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0xB8, 20 + len(udp), 0, 0, 64, 17, 0,
                      bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))  # fmt: skip
    iph = iph[:10] + struct.pack("!H", _ip_checksum(iph)) + iph[12:]
    eth = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + iph + udp


def wav_to_pcap(
    wav: Path,
    out: Path,
    *,
    codec: str = "pcmu",
    ptime: int = 20,
    dtmf: str = "",
    dtmf_at: float | None = None,
    dtmf_ms: int = 160,
    dtmf_gap_ms: int = 100,
    te_pt: int = 101,
    tail_ms: int = 500,
) -> PcapInfo:
    if codec not in ("pcmu", "pcma"):
        raise ValueError(codec)
    pcm = read_wav(wav)
    audio = ulaw_encode(pcm) if codec == "pcmu" else alaw_encode(pcm)
    pt = 0 if codec == "pcmu" else 8
    silence = b"\xff" if codec == "pcmu" else b"\xd5"
    spf = 8 * ptime  # samples (= bytes) per frame at 8 kHz
    # A timeline of ptime slots: ("a", frame) audio | ("e", digit, k) k-th event update |
    # ("end", digit, n) final event packet, sent 3 times (RFC 4733 §2.5.1.4).
    slots: list[tuple[str, bytes | str, int]] = [
        ("a", audio[i : i + spf].ljust(spf, silence), 0) for i in range(0, len(audio), spf)
    ]
    if dtmf:
        ev_frames = max(1, dtmf_ms // ptime)
        gap = max(1, dtmf_gap_ms // ptime)
        dtmf_slots: list[tuple[str, bytes | str, int]] = []
        for d in dtmf:
            dtmf_slots += [("e", d, k + 1) for k in range(ev_frames)]
            dtmf_slots += [("end", d, ev_frames)] * 3
            dtmf_slots += [("a", silence * spf, 0)] * gap
        at = len(slots) if dtmf_at is None else int(dtmf_at * 1000 / ptime)
        slots += [("a", silence * spf, 0)] * max(0, at + len(dtmf_slots) - len(slots))
        slots[at : at + len(dtmf_slots)] = dtmf_slots
    slots += [("a", silence * spf, 0)] * (tail_ms // ptime)

    ssrc = random.getrandbits(32)
    seq = random.getrandbits(15)
    ts0 = random.getrandbits(31)
    pkts: list[tuple[float, bytes]] = []
    ev_ts = 0
    marker_next = True
    for i, (kind, data, k) in enumerate(slots):
        ts = (ts0 + i * spf) & 0xFFFFFFFF
        t = i * ptime / 1000.0
        if kind == "a":
            assert isinstance(data, bytes)
            hdr = struct.pack(
                "!BBHII", 0x80, (0x80 if marker_next else 0) | pt, seq & 0xFFFF, ts, ssrc
            )
            pkts.append((t, hdr + data))
            marker_next = False
        elif kind == "e":
            assert isinstance(data, str)
            if k == 1:
                ev_ts = ts
            hdr = struct.pack(
                "!BBHII", 0x80, (0x80 if k == 1 else 0) | te_pt, seq & 0xFFFF, ev_ts, ssrc
            )
            pkts.append((t, hdr + struct.pack("!BBH", EVENTS[data], 10, k * spf)))
        else:
            assert isinstance(data, str)
            hdr = struct.pack("!BBHII", 0x80, te_pt, seq & 0xFFFF, ev_ts, ssrc)
            pkts.append((t, hdr + struct.pack("!BBH", EVENTS[data], 0x80 | 10, k * spf)))
            marker_next = True  # the next audio packet starts a new talkspurt
        seq += 1
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        base = 1_700_000_000
        for t, rtp in pkts:
            fr = _frame(rtp)
            sec = int(t)
            usec = round((t - sec) * 1e6)
            f.write(struct.pack("<IIII", base + sec, usec, len(fr), len(fr)) + fr)
    return PcapInfo(
        packets=len(pkts), seconds=len(slots) * ptime / 1000, ssrc=ssrc, payload_type=pt
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("wav", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--codec", choices=["pcmu", "pcma"], default="pcmu")
    ap.add_argument("--ptime", type=int, default=20)
    ap.add_argument("--dtmf", default="")
    ap.add_argument("--dtmf-at", type=float, default=None)
    a = ap.parse_args()
    info = wav_to_pcap(a.wav, a.out, codec=a.codec, ptime=a.ptime, dtmf=a.dtmf, dtmf_at=a.dtmf_at)
    print(f"wav2pcap: {a.wav} -> {a.out}: {info}")


if __name__ == "__main__":
    main()
