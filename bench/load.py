"""Load benchmark: concurrent calls at rising N, call setups at rising rate, one table.

    .venv/bin/python bench/load.py [--route echo|agent] [--media speech|noise|silence]
                                   [--calls 50,100,200] [--hold 30] [--ramp 10]
                                   [--cps 50,100,200] [--cps-secs 10] [--out DIR]
                                   [--workers N] [--churn K] [--callers pcap|stream]
    .venv/bin/python bench/load.py --smoke    # 5 echo calls for 5 s, 20 cps for 3 s

Runs as root: it re-runs itself inside `unshare --net` (loopback only, nothing leaves the
machine). Per step it starts a fresh gateway (`python -m callbridge serve`, recording off,
greeting off) and SIPp (G.711 both ways from a pcap; the setup-rate steps send no media), and
reports per N: the gateway's CPU (% of one core, from /proc; its child processes apart) and
each core's load, RSS, the send jitter p99 of the gateway's RTP to a sample of two calls (a
tshark capture on lo) beside SIPp's own, on the echo route the gateway-added latency of those
calls (caller packet -> the echoed packet with the same payload), the calls whose jitter buffer
deepened (inserted audio), the concealed/lost frames from the gateway's own `call.ended`
counters, and how late the media clock's passes started (`media.lateness`, logged by each
worker at its stop: the 100 ms periods with a pass 20 ms late or more, the worst p99 and
max); per rate: failures, retransmissions and INVITE->200 p50/p99 (SIPp -trace_rtt).
The last table puts bench/media_path.py's media-only estimate beside the measured cost.
Raw files stay in --out. Exit status 1 when a step could not be measured or, with --smoke,
when any call failed. No timing is asserted: this is an instrument, not a test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.peers.peerlib import audio  # noqa: E402
from tests.peers.peerlib.callbridge import (  # noqa: E402
    CallbridgeProcess,
    GatewayConfig,
    JsonLog,
    serve_argv,
    start_gateway,
)
from tests.peers.peerlib.process import (  # noqa: E402
    LOOPBACK,
    ManagedProcess,
    ProcessRegistry,
    free_port,
)
from tests.peers.peerlib.sipp import SippRun, parse_stats, start_uac  # noqa: E402
from tests.peers.peerlib.wav2pcap import wav_to_pcap  # noqa: E402

from callbridge import native  # noqa: E402
from callbridge.audio.g711 import ulaw_encode  # noqa: E402

UAC_MEDIA_PORT = 30000  # SIPp's [auto_media_port]: call k uses 30000 + 4 * (k - 1)
STREAM_MEDIA_PORT = 28000  # --callers stream: every streamed call's RTP, both ways
SAMPLE_CALLS = 8  # calls whose RTP from the gateway tshark captures
ECHO_WINDOW = 2.0  # s: a caller frame's echo is looked for this long after it was sent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SPEECH = (
    "The quick brown fox jumps over the lazy dog near the river bank. "
    "Our train leaves from platform four, so please keep your ticket ready."
)

# ---------------------------------------------------------------------------- /proc sampling


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime + stime ticks, rss pages)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[21])


def _descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _proc_stat(int(name))) is not None:
            kids.setdefault(st[0], []).append(int(name))
    out, todo = [], [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cores() -> list[tuple[int, int]]:
    """Per core (busy, total) jiffies from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]  # idle + iowait
            out.append((sum(v) - idle, sum(v)))
    return out


@dataclass(eq=False)
class ProcMon:
    """Samples the gateway (and its descendants) once a second in a thread."""

    pid: int
    rows: list[dict[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        prev: dict[int, int] = {}
        prev_cores = _cores()
        t_prev = time.monotonic()
        while not self._stop.wait(1.0):
            now = time.monotonic()
            gw = _proc_stat(self.pid)
            if gw is None:
                return
            cur = {self.pid: gw[1]}
            kids_cpu = kids_rss = 0.0
            for p in _descendants(self.pid):
                if (st := _proc_stat(p)) is not None:
                    cur[p] = st[1]
                    kids_cpu += st[1] - prev.get(p, st[1])
                    kids_rss += st[2]
            cores = _cores()
            scale = 100.0 / TICK / (now - t_prev)
            if prev:
                row = {
                    "t": time.time(),
                    "gw_cpu": (gw[1] - prev[self.pid]) * scale,
                    "kids_cpu": kids_cpu * scale,
                    "gw_rss_mb": gw[2] * PAGE / 2**20,
                    "kids_rss_mb": kids_rss * PAGE / 2**20,
                }
                for i, ((b1, t1), (b0, t0)) in enumerate(zip(cores, prev_cores, strict=False)):
                    row[f"cpu{i}"] = 100.0 * (b1 - b0) / max(1, t1 - t0)
                self.rows.append(row)
            prev, prev_cores, t_prev = cur, cores, now

    def summary(self, t0: float, t1: float) -> dict[str, float]:
        """Means over [t0, t1] (epoch s; all rows when none fall in it), maxima for RSS."""
        win = [r for r in self.rows if t0 <= r["t"] <= t1] or self.rows
        if not win:
            return {}
        out = {k: statistics.mean(r[k] for r in win) for k in win[0] if k.startswith("cpu")}
        out["gw_cpu"] = statistics.mean(r["gw_cpu"] for r in win)
        out["kids_cpu"] = statistics.mean(r["kids_cpu"] for r in win)
        out["gw_rss_mb"] = max(r["gw_rss_mb"] for r in self.rows)
        out["kids_rss_mb"] = max(r["kids_rss_mb"] for r in self.rows)
        return out


# ---------------------------------------------------------------------------- helpers


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q * (len(s) - 1))))]


def make_media(kind: str, seconds: float, work: Path) -> Path:
    """The callers' audio as a one-stream PCMU pcap of `seconds` (SIPp play_pcap_audio), and
    beside it the same as raw PCMU (`.ulaw`, SIPp rtp_stream)."""
    n = int(seconds * audio.RATE)
    if kind == "speech":
        wav = audio.synthesize_speech(SPEECH, work / "speech.wav", pad_after_s=0.5)
        one = audio.read_wav(wav)
        pcm = np.tile(one, n // len(one) + 1)[:n]
    elif kind == "noise":  # about -60 dBFS: the VAD runs on it, no turn starts
        rng = np.random.default_rng(7)
        x = np.convolve(rng.normal(0, 1, n + 7), np.ones(8) / 8, mode="valid")
        pcm = np.round(x / np.sqrt(np.mean(x**2)) * 32767 * 10 ** (-60 / 20)).astype(np.int16)
    elif kind == "silence":
        pcm = np.zeros(n, np.int16)
    else:
        raise SystemExit(f"unknown media {kind!r}")
    wav = audio.write_wav(work / f"{kind}.wav", pcm)
    (work / f"{kind}.ulaw").write_bytes(ulaw_encode(np.asarray(pcm, "<i2").tobytes()))
    out = work / f"{kind}.pcap"
    wav_to_pcap(wav, out, codec="pcmu", tail_ms=0)
    return out


def gateway_env(route: str) -> dict[str, str]:
    return {
        "CALLBRIDGE_DEFAULT_AGENT": "echo" if route == "echo" else "voice",
        "CALLBRIDGE_AGENT_GREET": "false",
        "CALLBRIDGE_RECORDING_ENABLED": "false",
        "CALLBRIDGE_RECORDING_TRANSCRIPTS": "false",
        "CALLBRIDGE_HTTP_ENABLED": "false",
        "CALLBRIDGE_LOG_LEVEL": "INFO",
        # SIPp is one source address for every call: no per-source limits on it
        "CALLBRIDGE_LIMITS_TRUSTED": "127.0.0.0/8",
        "CALLBRIDGE_LIMITS_CALLS_PER_SECOND": "0",
    }


@contextlib.contextmanager
def gateway(
    reg: ProcessRegistry, work: Path, name: str, route: str, rtp_ports: int, *, workers: int = 1
) -> Iterator[CallbridgeProcess]:
    """`workers` > 1: `serve --workers N` (the supervisor's descendants are the workers: their
    CPU and RSS are in the kids_* columns); each worker gets a whole `rtp_ports` range, as
    the hash over Call-IDs does not split the calls exactly in N."""
    cfg = GatewayConfig(
        sip_port=5060,
        http_port=free_port(),
        rtp_range=(10000, 10000 + rtp_ports * workers),
        data_dir=work / f"{name}-data",
        extra_env=gateway_env(route),
    )
    if workers > 1:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [*serve_argv(), "--workers", str(workers)]
        proc = reg.start(name, argv, env=cfg.env(), stop_signal=signal.SIGINT)
        gw = CallbridgeProcess(proc=proc, config=cfg, log=JsonLog(proc.stderr_path))
        gw.wait_for("cluster.ready", timeout=180)
    else:
        gw = start_gateway(reg, cfg, name=name, timeout=180)
    try:
        yield gw
    finally:
        gw.shutdown(grace=30)


def sink(reg: ProcessRegistry, calls: int) -> ManagedProcess:
    """The callers' RTP and RTCP ports bound (bench/rtp_sink.py): SIPp's pcap play binds none,
    and the gateway's every packet to a closed port cost it an ICMP error in its own sendto."""
    script = str(Path(__file__).resolve().parent / "rtp_sink.py")
    proc = reg.start(
        "sink", [sys.executable, script, LOOPBACK, str(UAC_MEDIA_PORT), str(calls), "4"]
    )
    deadline = time.monotonic() + 30
    while "sink ready" not in proc.stderr_text():
        if time.monotonic() > deadline or not proc.running():
            raise RuntimeError(f"the RTP sink did not start: {proc.stderr_text()[-500:]}")
        time.sleep(0.05)
    return proc


def capture(
    reg: ProcessRegistry, work: Path, name: str, ports: tuple[int, int]
) -> tuple[ManagedProcess, Path]:
    """tshark on lo for the sampled callers' RTP, both ways (to and from their ports)."""
    out = work / f"{name}.pcapng"
    proc = reg.start(
        name,
        [
            "tshark",
            "-i",
            "lo",
            "-f",
            f"udp and portrange {ports[0]}-{ports[1]}",
            "-w",
            str(out),
        ],
    )
    deadline = time.monotonic() + 15
    while "Capturing on" not in proc.stderr_text():
        if time.monotonic() > deadline or not proc.running():
            raise RuntimeError(f"tshark did not start: {proc.stderr_text()[-500:]}")
        time.sleep(0.05)
    return proc, out


def send_jitter(pcap: Path, ports: tuple[int, int]) -> dict[str, float | int | None]:
    """Per stream, |arrival delta - 20 ms| between consecutive packets: p99 and max (ms), for
    the gateway's RTP to the sampled callers and, apart, the callers' RTP to the gateway (SIPp's
    own pacing: when it is late, the gateway conceals through no fault of its own). On the
    echo route also the gateway-added latency: the time from a caller packet to the gateway's
    packet carrying the same payload back (the echo has no delay of its own by default, and
    G.711 decodes and encodes back to the same bytes), over payloads that occur once."""
    done = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.time_epoch",
         "-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.payload"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    streams: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and int(parts[1]) % 2 == 0 and int(parts[2]) % 2 == 0:  # not RTCP
            # the RTP payload: after the 12-byte header (SIPp and the gateway add no CSRC)
            streams.setdefault((parts[1], parts[2]), []).append((float(parts[0]), parts[3][24:]))
    dev: dict[bool, list[float]] = {True: [], False: []}  # True: sent by the gateway
    for (_, dst), packets in streams.items():
        to_caller = ports[0] <= int(dst) <= ports[1]
        times = [t for t, _ in packets]
        dev[to_caller] += [abs((b - a) * 1000 - 20.0) for a, b in itertools.pairwise(times)]
    sent, heard = dev[True], dev[False]
    return {
        "sampled_streams": len(streams),
        "sampled_packets": sum(len(t) for t in streams.values()),
        "send_jitter_p99_ms": pct(sent, 0.99),
        "send_jitter_max_ms": max(sent) if sent else None,
        "caller_jitter_p99_ms": pct(heard, 0.99),
        **echo_latency(streams, ports),
    }


def _unique_payloads(packets: list[tuple[float, str]]) -> dict[str, float]:
    """Payload -> when, for the payloads that occur once and are not near-constant (silence)."""
    seen = collections.Counter(p for _, p in packets)
    return {p: t for t, p in packets if seen[p] == 1 and len(set(p)) > 4}


def echo_latency(
    streams: dict[tuple[str, str], list[tuple[float, str]]], ports: tuple[int, int]
) -> dict[str, float | int | None]:
    """Caller packet -> the gateway's packet with the same payload, per sampled call (ms).
    Only a copy within ECHO_WINDOW counts: speech repeats, and a frame whose own echo was
    altered (concealed, or a payload that is unique on one side only) would otherwise match
    the echo of the same words seconds later."""
    delays: list[float] = []
    for (src, dst), heard in streams.items():
        if ports[0] <= int(dst) <= ports[1]:
            continue  # the gateway's streams are matched from their caller's side
        sent_at = _unique_payloads(heard)
        echoed_at = _unique_payloads(streams.get((dst, src), []))
        delays += [
            1000 * (echoed_at[p] - t)
            for p, t in sent_at.items()
            if p in echoed_at and 0 <= echoed_at[p] - t < ECHO_WINDOW
        ]
    return {
        "echo_matched": len(delays),
        "echo_p50_ms": pct(delays, 0.50),
        "echo_p99_ms": pct(delays, 0.99),
    }


def ended_stats(gw: CallbridgeProcess) -> dict[str, Any]:
    ended = gw.events("call.ended")
    rtp_in = sum(int(e.get("rtp_in", 0)) for e in ended)
    concealed = sum(int(e.get("concealed", 0)) for e in ended)
    return {
        "calls_started": len(gw.events("call.started")),
        "calls_ended": len(ended),
        "rtp_in": rtp_in,
        "rtp_out": sum(int(e.get("rtp_out", 0)) for e in ended),
        "concealed": concealed,
        "lost": sum(int(e.get("lost", 0)) for e in ended),
        "late": sum(int(e.get("late", 0)) for e in ended),
        "concealed_pct": 100.0 * concealed / rtp_in if rtp_in else None,
        # the jitter buffer deepening: delay a call carries until a pause lets it go
        "calls_inserted": sum(1 for e in ended if float(e.get("inserted_ms", 0)) > 0),
        "save_failed": len([e for e in gw.events() if "sav" in str(e.get("msg", "")).lower()
                            and e.get("level") in ("WARNING", "ERROR")]),
    }  # fmt: skip


def gc_pauses(gw: CallbridgeProcess) -> dict[str, Any]:
    """The collector's long pauses (`gc.pause`, >= 20 ms) the gateway logged while calls ran:
    each one stops every call's media on that worker."""
    pauses = [float(e.get("ms", 0)) for e in gw.events("gc.pause")]
    return {"gc_pauses": len(pauses), "gc_max_ms": max(pauses, default=0.0)}


def media_lateness(gw: CallbridgeProcess) -> dict[str, Any]:
    """How late the media clock's passes started over the step (`media.lateness`, one line
    per process at its stop, from a sample every 100 ms): the periods with a pass 20 ms late
    or more (every call's audio late by a tick), summed over the workers, and the worst p99
    and maximum of any worker."""
    lines = gw.events("media.lateness")
    if not lines:
        return {}
    return {
        "late_20ms": sum(int(e.get("late_20ms", 0)) for e in lines),
        "late_p99_ms": max(float(e.get("p99_ms", 0)) for e in lines),
        "late_max_ms": max(float(e.get("max_ms", 0)) for e in lines),
    }


def sipp_summary(runs: Sequence[SippRun]) -> dict[str, Any]:
    """The callers' counts, summed over the SIPp instances of a step."""
    out: dict[str, Any] = {"created": 0, "ok": 0, "failed": 0, "retrans": 0, "peak": 0}
    rtt: list[float] = []
    for run in runs:
        stats = parse_stats(run.stats_path)
        out["created"] += stats.counter("TotalCallCreated")
        out["ok"] += stats.counter("SuccessfulCall(C)")
        out["failed"] += stats.counter("FailedCall(C)")
        out["retrans"] += stats.counter("Retransmissions(C)")
        out["peak"] += stats.peak_concurrent
        for path in run.workdir.glob("*_rtt.csv"):
            for line in path.read_text().splitlines():
                parts = line.split(";")
                with contextlib.suppress(IndexError, ValueError):
                    rtt.append(float(parts[1]))
    out["inv200_p50_ms"] = pct(rtt, 0.5)
    out["inv200_p99_ms"] = pct(rtt, 0.99)
    return out


# ---------------------------------------------------------------------------- steps


def calls_step(a: argparse.Namespace, work: Path, n: int, media: Path) -> dict[str, Any]:
    step = work / f"calls-{n}"
    step.mkdir()
    reg = ProcessRegistry(step)
    load1 = os.getloadavg()[0]  # other work on the machine skews every figure: say so
    try:
        with gateway(reg, step, "gateway", a.route, 4 * n + 100, workers=a.workers) as gw:
            mon = ProcMon(gw.proc.pid)
            mon.start()
            # The pcap callers: every call, or with --callers stream only the sampled ones
            # (the rest stream from one SIPp port). With churn, the sampled calls are the
            # first of the second round: they live while the first round's calls end and the
            # third round's start.
            streamed = a.callers == "stream"
            played = min(SAMPLE_CALLS, n) if streamed else n
            first = UAC_MEDIA_PORT + (4 * played if a.churn > 1 else 0)
            sample = (first, first + 4 * SAMPLE_CALLS - 1)
            tshark, pcap = capture(reg, step, "tshark", sample)
            sink(reg, played * a.churn)
            span = a.ramp + a.churn * a.hold  # SIPp keeps n up, placing a new call as one ends
            service = "echo" if a.route == "echo" else "agent"
            t0 = time.time()
            uacs = [
                start_uac(
                    reg, "uac", "uac_play.xml", target=gw.sip_addr, service=service,
                    sip_port=free_port(), media_port=UAC_MEDIA_PORT, calls=played * a.churn,
                    rate=max(1.0, played / max(a.ramp, 0.001)), limit=played,
                    hold_ms=int(a.hold * 1000), timeout_s=int(span + 60),
                    files={"media.pcap": media}, extra=["-rp", "1000"],
                )
            ]  # fmt: skip
            if n > played:
                uacs.append(start_uac(
                    reg, "streamer", "uac_stream.xml", target=gw.sip_addr, service=service,
                    sip_port=free_port(), media_port=STREAM_MEDIA_PORT,
                    calls=(n - played) * a.churn,
                    rate=max(1.0, (n - played) / max(a.ramp, 0.001)), limit=n - played,
                    hold_ms=int(a.hold * 1000), timeout_s=int(span + 60),
                    files={"media.ulaw": media.with_suffix(".ulaw")}, extra=["-rp", "1000"],
                ))  # fmt: skip
            rc = max(uac.wait(span + 90) for uac in uacs)
            time.sleep(1.0)  # tshark: the last packets reach the file
            tshark.stop(sig=signal.SIGINT)
            mon.stop()
            (step / "procmon.json").write_text(json.dumps(mon.rows))
            gw.wait_for("call.ended", timeout=30, count=min(n, len(gw.events("call.started"))))
            row: dict[str, Any] = {"kind": "calls", "n": n, "route": a.route, "sipp_rc": rc}
            row["load1_before"] = load1
            row["churn"] = a.churn
            row.update(sipp_summary(uacs))
            # All n up: from the end of the ramp until the last round's first call ends.
            row.update(mon.summary(t0 + a.ramp + 1, t0 + a.churn * a.hold - 1))
            row.update(ended_stats(gw))
            row.update(gc_pauses(gw))
            gw.proc.stop(grace=30)  # a stopping gateway (each worker) logs `media.lateness`
            row.update(media_lateness(gw))
        row.update(send_jitter(pcap, sample))
        return row
    finally:
        reg.stop_all()


def setup_step(a: argparse.Namespace, work: Path, cps: int) -> dict[str, Any]:
    step = work / f"setup-{cps}"
    step.mkdir()
    reg = ProcessRegistry(step)
    calls = int(cps * a.cps_secs)
    load1 = os.getloadavg()[0]
    try:
        with gateway(reg, step, "gateway", "echo", 4 * cps * 3 + 100, workers=a.workers) as gw:
            mon = ProcMon(gw.proc.pid)
            mon.start()
            t0 = time.time()
            uac = start_uac(
                reg, "uac", "uac_nomedia.xml", target=gw.sip_addr, service="echo",
                sip_port=free_port(), media_port=UAC_MEDIA_PORT, calls=calls, rate=cps,
                hold_ms=1000, timeout_s=int(a.cps_secs + 60),
                extra=["-rp", "1000", "-trace_rtt", "-rtt_freq", "1"],
            )  # fmt: skip
            rc = uac.wait(a.cps_secs + 90)
            mon.stop()
            row: dict[str, Any] = {"kind": "setup", "cps": cps, "calls": calls, "sipp_rc": rc}
            row["load1_before"] = load1
            row.update(sipp_summary([uac]))
            row.update(mon.summary(t0 + 1, t0 + a.cps_secs))
            row["save_failed"] = ended_stats(gw)["save_failed"]
        return row
    finally:
        reg.stop_all()


def media_path_estimate() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "media_path.py"), "--frames", "1000"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    m = re.search(r"media CPU per call: ([\d.]+)% of a core -> ~(\d+) calls", done.stdout)
    if m is None:
        return {"kind": "estimate", "error": (done.stdout + done.stderr)[-300:]}
    return {"kind": "estimate", "est_pct_per_call": float(m.group(1)), "est_calls_per_core": int(m.group(2))}  # fmt: skip


# ---------------------------------------------------------------------------- table


def fmt(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def print_table(rows: list[dict[str, Any]], a: argparse.Namespace) -> None:
    calls = [r for r in rows if r["kind"] == "calls"]
    setups = [r for r in rows if r["kind"] == "setup"]
    est = next((r for r in rows if r["kind"] == "estimate"), {})
    ncores = len(_cores())
    cores = " ".join(f"{'cpu' + str(i) + '%':>6}" for i in range(ncores))
    print(
        f"\n== concurrent calls: route {a.route}, media {a.media}, hold {a.hold:g} s, ramp {a.ramp:g} s"
        + (f", churn {a.churn} rounds (N kept up, a new call as one ends)" if a.churn > 1 else "")
    )
    print(f"{'N':>5} {'ok':>5} {'failed':>6} {'gw_cpu%':>7} {'kids%':>6} {cores} {'rss_MB':>7} "
          f"{'kidsMB':>7} {'jit_p99ms':>9} {'jit_max':>7} {'sipp_p99':>8} {'echo_p50':>8} {'echo_p99':>8} {'deepened':>8} {'rtp_in':>8} {'conceal':>7} {'conc%':>6} {'lost':>5} {'gc>20ms':>7} {'gc_max':>6} {'late>20':>7} {'late99':>6} {'latemax':>7} {'load1':>5}")  # fmt: skip
    for r in calls:
        per_core = " ".join(f"{fmt(r.get(f'cpu{i}')):>6}" for i in range(ncores))
        print(f"{r['n']:>5} {fmt(r.get('ok')):>5} {fmt(r.get('failed')):>6} {fmt(r.get('gw_cpu')):>7} "
              f"{fmt(r.get('kids_cpu')):>6} {per_core} {fmt(r.get('gw_rss_mb')):>7} "
              f"{fmt(r.get('kids_rss_mb')):>7} {fmt(r.get('send_jitter_p99_ms'), '.2f'):>9} "
              f"{fmt(r.get('send_jitter_max_ms'), '.1f'):>7} "
              f"{fmt(r.get('caller_jitter_p99_ms'), '.2f'):>8} {fmt(r.get('echo_p50_ms')):>8} "
              f"{fmt(r.get('echo_p99_ms')):>8} {fmt(r.get('calls_inserted')):>8} {fmt(r.get('rtp_in')):>8} "
              f"{fmt(r.get('concealed')):>7} {fmt(r.get('concealed_pct'), '.3f'):>6} {fmt(r.get('lost')):>5} "
              f"{fmt(r.get('gc_pauses')):>7} {fmt(r.get('gc_max_ms')):>6} "
              f"{fmt(r.get('late_20ms')):>7} {fmt(r.get('late_p99_ms')):>6} "
              f"{fmt(r.get('late_max_ms')):>7} {fmt(r.get('load1_before'), '.2f'):>5}")  # fmt: skip
    print("\n== call setup rate: INVITE -> 200 -> ACK -> 1 s -> BYE, no media")
    print(f"{'cps':>5} {'calls':>6} {'ok':>6} {'failed':>6} {'retrans':>7} {'inv200_p50':>10} "
          f"{'inv200_p99':>10} {'gw_cpu%':>7} {'save_err':>8} {'load1':>5}")  # fmt: skip
    for r in setups:
        print(f"{r['cps']:>5} {r['calls']:>6} {fmt(r.get('ok')):>6} {fmt(r.get('failed')):>6} "
              f"{fmt(r.get('retrans')):>7} {fmt(r.get('inv200_p50_ms')):>10} "
              f"{fmt(r.get('inv200_p99_ms')):>10} {fmt(r.get('gw_cpu')):>7} {fmt(r.get('save_failed')):>8} "
              f"{fmt(r.get('load1_before'), '.2f'):>5}")  # fmt: skip
    print("\n== media path: bench/media_path.py estimate vs measured (gateway process only)")
    print(f"{'source':>22} {'%core/call':>10} {'calls/core':>10}")
    if "est_pct_per_call" in est:
        print(f"{'estimate (media only)':>22} {est['est_pct_per_call']:>10.2f} {est['est_calls_per_core']:>10}")  # fmt: skip
    else:
        print(f"{'estimate (media only)':>22} {'-':>10} {'-':>10}  {est.get('error', '')}")
    for r in calls:
        if r.get("gw_cpu") and r.get("n"):
            per = r["gw_cpu"] / r["n"]
            print(f"{'measured N=' + str(r['n']):>22} {per:>10.2f} {int(100 / per) if per else 0:>10}")  # fmt: skip


# ---------------------------------------------------------------------------- main


def stop_on_sigterm() -> None:
    """SIGTERM (`timeout`, a CI runner giving up) ends the run as Ctrl-C does: through the
    `finally` blocks that stop the gateway, SIPp and the capture. Its default action would kill
    this process alone and leave a whole gateway cluster running, orphaned, using the cores
    the next run measures."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def reexec_in_netns() -> None:
    if os.environ.get("_CB_LOAD_NETNS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("bench/load.py runs as root (unshare --net, tshark, SIPp raw sockets)")
    env = {**os.environ, "_CB_LOAD_NETNS": "1"}
    argv = ["unshare", "--net", sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    os.execvpe("unshare", argv, env)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--route", choices=("echo", "agent"), default="echo")
    ap.add_argument("--media", choices=("speech", "noise", "silence"), default="speech")
    ap.add_argument("--calls", default="50,100,200", help="concurrent calls per step")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds each call lasts")
    ap.add_argument("--ramp", type=float, default=10.0, help="seconds to place all N calls")
    ap.add_argument(
        "--churn", type=int, default=1,
        help="rounds of N calls per step: SIPp keeps N up and places a new call as one ends "
        "(N/hold setups per second at steady state); the sampled calls are the second round's",
    )  # fmt: skip
    ap.add_argument("--cps", default="50,100,200", help="call setups per second per step")
    ap.add_argument("--cps-secs", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=None, help="keep raw files here")
    ap.add_argument("--smoke", action="store_true", help="N=5 echo for 5 s, 20 cps for 3 s")
    ap.add_argument(
        "--workers", type=int, default=1, help="gateway processes: `serve --workers N` (default 1)"
    )
    ap.add_argument(
        "--callers", choices=("pcap", "stream"), default="pcap",
        help="pcap: SIPp plays a pcap per call (a thread and a raw socket each); stream: the "
        "sampled calls so, every other one from SIPp's rtp_stream (a few threads and one port "
        "for them all: lighter on the shared cores)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    if a.smoke:
        a.route, a.calls, a.hold, a.ramp, a.cps, a.cps_secs = "echo", "5", 5.0, 1.0, "20", 3.0
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    for tool in ("sipp", "tshark", "espeak-ng"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (scripts/test.sh installs the peers)")
    reexec_in_netns()
    stop_on_sigterm()
    os.environ.setdefault("CALLBRIDGE_TEST_PYTHON", sys.executable)
    work = a.out or Path(tempfile.mkdtemp(prefix="cb-load-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.churn < 1:
        raise SystemExit("--churn: at least 1 (one round of N calls, no churn)")
    media = make_media(a.media, a.hold + a.ramp + 2, work)
    # The gateway inherits CALLBRIDGE_NATIVE (peerlib keeps it): it runs as this process does.
    print(f"-- media path: {native.status().summary}")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for n in (int(x) for x in a.calls.split(",") if x):
        print(f"-- {n} concurrent {a.route} calls ...", flush=True)
        try:
            rows.append(calls_step(a, work, n, media))
        except Exception as exc:  # one step's failure is reported, the others still run
            problems.append(f"calls N={n}: {exc}")
            rows.append({"kind": "calls", "n": n, "error": str(exc)[:300]})
    for cps in (int(x) for x in a.cps.split(",") if x):
        print(f"-- {cps} call setups/s for {a.cps_secs:g} s ...", flush=True)
        try:
            rows.append(setup_step(a, work, cps))
        except Exception as exc:
            problems.append(f"setup {cps} cps: {exc}")
            rows.append({"kind": "setup", "cps": cps, "calls": 0, "error": str(exc)[:300]})
    rows.append(media_path_estimate())
    (work / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print_table(rows, a)
    for r in rows:
        if "error" in r:
            problems.append(f"{r['kind']}: {r['error']}")
        if a.smoke and (r.get("failed") or (r["kind"] == "calls" and r.get("ok") != r.get("n"))):
            problems.append(f"{r['kind']} {r.get('n') or r.get('cps')}: calls failed")
    for p in problems:
        print(f"PROBLEM: {p}")
    if a.out is None and not problems:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"raw files: {work}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
