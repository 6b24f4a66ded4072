"""tshark capture on loopback, with marker packets instead of fixed sleeps, and RTP extraction.

tshark only records what arrives after "Capturing on", and packets still in flight
when it is interrupted can be missing from the file. Both ends are therefore
synchronised with marker datagrams sent to a sentinel port that is part of the
capture filter: tshark prints each packet's UDP destination port (-P -l -T fields),
so seeing the marker in its output proves everything sent before it was captured.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import Pcm, g711_decode
from .process import (
    LOOPBACK,
    DeadlineExceeded,
    ManagedProcess,
    ProcessRegistry,
    free_port,
    wait_true,
)

TSHARK_READ_TIMEOUT = 120.0


@dataclass(eq=False)
class Capture:
    """A running (then stopped) tshark on lo writing `path`."""

    proc: ManagedProcess
    path: Path
    sentinel_port: int
    _markers_sent: int = 0

    def _markers_seen(self) -> int:
        port = str(self.sentinel_port)
        return sum(1 for line in self.proc.stdout_text().splitlines() if line.strip() == port)

    def _send_marker(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOOPBACK, 0))
            s.sendto(b"callbridge-capture-marker", (LOOPBACK, self.sentinel_port))
        self._markers_sent += 1

    def _sync(self, timeout: float, what: str) -> None:
        """Send markers until tshark reports one more than before (bounded by `timeout`)."""
        before = self._markers_seen()

        def seen() -> bool:
            if not self.proc.running():
                raise AssertionError(f"tshark exited early:\n{self.proc.stderr_text()}")
            if self._markers_seen() > before:
                return True
            self._send_marker()
            return False

        wait_true(seen, timeout, what, interval=0.1)

    def stop(self, timeout: float = 15.0) -> Path:
        """Wait until everything sent so far is in the file, then stop tshark."""
        if self.proc.running():
            self._sync(timeout, "tshark to capture the end marker")
            self.proc.signal(signal.SIGINT)
            rc = self.proc.wait(timeout)
            if rc != 0:
                raise AssertionError(f"tshark exited {rc}:\n{self.proc.stderr_text()}")
        return self.path


def start_capture(registry: ProcessRegistry, name: str, bpf: str, timeout: float = 15.0) -> Capture:
    """Start tshark on lo with the BPF filter `bpf` (UDP only is typical) and wait until
    it demonstrably captures (a marker datagram shows up in its output)."""
    sentinel = free_port()
    path = registry.workdir / f"{name}.pcapng"
    argv = [
        "tshark", "-n", "-i", "lo",
        "-f", f"({bpf}) or (udp dst port {sentinel})",
        "-w", str(path), "-P", "-l", "-T", "fields", "-e", "udp.dstport",
    ]  # fmt: skip
    proc = registry.start(name, argv, stop_signal=signal.SIGINT)
    cap = Capture(proc=proc, path=path, sentinel_port=sentinel)
    wait_true(
        lambda: "Capturing on" in proc.stderr_text() or not proc.running(),
        timeout,
        "tshark to report 'Capturing on'",
    )
    cap._sync(timeout, "tshark to capture the start marker")
    return cap


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class RtpRecord:
    frame: int
    time: float  # epoch seconds
    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    seq: int
    timestamp: int
    pt: int
    marker: bool
    payload: bytes


_RTP_FIELDS = (
    "frame.number", "frame.time_epoch", "ip.src", "udp.srcport", "ip.dst", "udp.dstport",
    "rtp.ssrc", "rtp.seq", "rtp.timestamp", "rtp.p_type", "rtp.marker", "rtp.payload",
)  # fmt: skip


def _tshark_fields(pcap: Path, display_filter: str, fields: tuple[str, ...]) -> list[list[str]]:
    argv = ["tshark", "-n", "-r", str(pcap), "-o", "rtp.heuristic_rtp:TRUE", "-Y", display_filter,
            "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]  # fmt: skip
    for f in fields:
        argv += ["-e", f]
    try:
        out = subprocess.run(argv, check=True, capture_output=True, timeout=TSHARK_READ_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded(f"tshark -r {pcap} took more than {TSHARK_READ_TIMEOUT} s") from None
    rows = []
    for line in out.stdout.decode("utf-8", "replace").splitlines():
        cols = line.split("\t")
        rows.append(cols + [""] * (len(fields) - len(cols)))
    return rows


def _int(text: str) -> int:
    return int(text, 0) if text else -1


def read_rtp(pcap: Path, display_filter: str = "rtp") -> list[RtpRecord]:
    """RTP packets (heuristic decoding, any port) matching `display_filter`, capture order."""
    rows = _tshark_fields(pcap, f"rtp && ({display_filter})", _RTP_FIELDS)
    out = []
    for r in rows:
        out.append(
            RtpRecord(
                frame=_int(r[0]),
                time=float(r[1] or 0),
                src=r[2],
                sport=_int(r[3]),
                dst=r[4],
                dport=_int(r[5]),
                ssrc=_int(r[6]),
                seq=_int(r[7]),
                timestamp=_int(r[8]),
                pt=_int(r[9]),
                marker=r[10] in ("1", "True", "true"),
                payload=bytes.fromhex(r[11].replace(":", "")),
            )
        )
    return out


_EVENT_CHARS = "0123456789*#ABCD"


def read_dtmf(pcap: Path, display_filter: str = "udp") -> str:
    """RFC 4733 digits in a capture, one per event (SSRC, RTP timestamp), in order."""
    rows = _tshark_fields(
        pcap, f"rtpevent && ({display_filter})", ("rtp.ssrc", "rtp.timestamp", "rtpevent.event_id")
    )
    seen: set[tuple[str, str]] = set()
    digits = []
    for ssrc, ts, event in rows:
        if (ssrc, ts) in seen or not event:
            continue
        seen.add((ssrc, ts))
        ev = int(event, 0)
        digits.append(_EVENT_CHARS[ev] if ev < len(_EVENT_CHARS) else "?")
    return "".join(digits)


def rtp_to_pcm(records: list[RtpRecord], payload_type: int) -> Pcm:
    """Decode the G.711 payloads of one stream in capture order (no jitter handling:
    fine on loopback). Packets of other payload types (e.g. telephone-event) are skipped."""
    chunks = [g711_decode(r.payload, payload_type) for r in records if r.pt == payload_type]
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(chunks)
