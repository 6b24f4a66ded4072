"""SIPp 3.6.1 as a UAC or UAS on loopback (recipes in the shared testbed README).

Each run gets its own working directory: the scenario is copied there and SIPp is
started from it, because SIPp resolves `play_pcap_audio="media.pcap"` against the
scenario's directory and then the current one, and writes its logs and CSVs there.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .process import LOOPBACK, ManagedProcess, ProcessRegistry, free_port, wait_udp_bound

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
BUNDLED = Path("/usr/share/sip-tester")  # g711a.pcap, dtmf_2833_*.pcap (Debian sip-tester)


def scenario(name: str) -> Path:
    path = SCENARIOS / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


@dataclass(eq=False)
class SippRun:
    """One SIPp process and the files it writes."""

    proc: ManagedProcess
    workdir: Path
    stats_path: Path
    errors_path: Path
    messages_path: Path
    sip_port: int
    media_port: int

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stats(self) -> SippStats:
        return parse_stats(self.stats_path)

    def soft_stop(self) -> None:
        """SIGUSR1: stop taking new calls, finish the current ones, exit."""
        self.proc.signal(signal.SIGUSR1)

    def describe(self) -> str:
        """Short diagnostics for assertion messages."""
        parts = [f"sipp {self.proc.name} rc={self.proc.returncode}"]
        if self.stats_path.exists():
            parts.append(self.stats().summary())
        errors = self.errors_path.read_text(errors="replace") if self.errors_path.exists() else ""
        if errors.strip():
            parts.append("errors:\n" + errors[-4000:])
        return "\n".join(parts)


def _start(
    registry: ProcessRegistry,
    name: str,
    scenario_file: Path,
    args: Sequence[str],
    *,
    sip_port: int,
    media_port: int,
    files: Mapping[str, Path] | None = None,
    local_ip: str = LOOPBACK,
) -> SippRun:
    workdir = registry.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(scenario_file, workdir / scenario_file.name)
    for dest, src in (files or {}).items():
        shutil.copy(src, workdir / dest)
    stats = workdir / "stats.csv"
    errors = workdir / "errors.log"
    messages = workdir / "messages.log"
    argv = [
        "sipp", *args,
        "-sf", scenario_file.name,
        "-i", local_ip, "-p", str(sip_port),
        "-mi", local_ip, "-mp", str(media_port),
        "-bind_local", "-ci", local_ip, "-cp", str(free_port()),
        "-nostdin",
        "-trace_stat", "-stf", stats.name, "-fd", "1",
        "-trace_err", "-error_file", errors.name,
        "-trace_msg", "-message_file", messages.name,
        "-trace_screen", "-screen_file", "screen.log",
    ]  # fmt: skip
    proc = registry.start(name, argv, cwd=workdir, stop_signal=signal.SIGTERM)
    registry.add_log(f"{name} errors.log", errors)
    registry.add_log(f"{name} messages.log", messages)
    registry.add_log(f"{name} screen.log (written at exit)", workdir / "screen.log")
    return SippRun(proc, workdir, stats, errors, messages, sip_port, media_port)


def start_uas(
    registry: ProcessRegistry,
    name: str,
    scenario_name: str,
    *,
    sip_port: int,
    media_port: int,
    calls: int = 1,
    timeout_s: int = 60,
    rtp_echo: bool = False,
    keys: Mapping[str, str] | None = None,
    files: Mapping[str, Path] | None = None,
    extra: Sequence[str] = (),
) -> SippRun:
    """A SIPp UAS; returns once its SIP socket is bound."""
    args: list[str] = ["-m", str(calls), "-timeout", f"{timeout_s}s", "-timeout_error"]
    if rtp_echo:
        args.append("-rtp_echo")
    for k, v in (keys or {}).items():
        args += ["-key", k, v]
    args += list(extra)
    run = _start(
        registry, name, scenario(scenario_name), args,
        sip_port=sip_port, media_port=media_port, files=files,
    )  # fmt: skip
    wait_udp_bound(sip_port, 10.0, f"SIPp {name} to bind UDP {sip_port}")
    return run


def start_uac(
    registry: ProcessRegistry,
    name: str,
    scenario_name: str,
    *,
    target: tuple[str, int],
    service: str,
    sip_port: int,
    media_port: int,
    calls: int = 1,
    rate: float | None = None,
    limit: int | None = None,
    hold_ms: int | None = None,
    timeout_s: int = 60,
    files: Mapping[str, Path] | None = None,
    extra: Sequence[str] = (),
    local_ip: str = LOOPBACK,
) -> SippRun:
    """A SIPp UAC calling sip:<service>@<target>. `hold_ms` is -d (a bare <pause/>).
    `local_ip` is the source address (any 127.0.0.0/8 address is this host on Linux)."""
    args: list[str] = [
        f"{target[0]}:{target[1]}", "-s", service,
        "-m", str(calls), "-timeout", f"{timeout_s}s", "-timeout_error",
    ]  # fmt: skip
    if rate is not None:
        args += ["-r", f"{rate:g}"]
    if limit is not None:
        args += ["-l", str(limit)]
    if hold_ms is not None:
        args += ["-d", str(hold_ms)]
    args += list(extra)
    return _start(
        registry, name, scenario(scenario_name), args,
        sip_port=sip_port, media_port=media_port, files=files, local_ip=local_ip,
    )  # fmt: skip


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class SippStats:
    """A -trace_stat CSV: ';'-separated, one row per -fd period; '(C)' columns are cumulative."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def last(self) -> dict[str, str]:
        if not self.rows:
            raise AssertionError("SIPp statistics file has no data rows")
        return dict(zip(self.header, self.rows[-1], strict=False))

    def counter(self, name: str) -> int:
        value = self.last.get(name)
        if value is None:
            raise KeyError(f"no column {name!r} in SIPp stats")
        return int(value)

    @property
    def peak_concurrent(self) -> int:
        col = self.header.index("CurrentCall")
        values = [int(r[col]) for r in self.rows if len(r) > col and r[col].isdigit()]
        return max(values, default=0)

    def failures(self) -> dict[str, int]:
        """Non-zero cumulative Failed* counters (the reason calls failed)."""
        out = {}
        for k, v in self.last.items():
            if k.startswith("Failed") and k.endswith("(C)") and v.isdigit() and int(v):
                out[k] = int(v)
        return out

    def summary(self) -> str:
        keys = ("TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)",
                "OutOfCallMsgs(C)", "DeadCallMsgs(C)", "ResponseTime1(C)", "CallLength(C)")  # fmt: skip
        last = self.last
        parts = [f"{k}={last[k]}" for k in keys if k in last]
        parts.append(f"peak CurrentCall={self.peak_concurrent}")
        parts += [f"{k}={v}" for k, v in self.failures().items()]
        return " ".join(parts)


def parse_stats(path: Path) -> SippStats:
    lines = [
        line.rstrip("\n") for line in path.read_text(errors="replace").splitlines() if line.strip()
    ]
    if not lines:
        raise AssertionError(f"empty SIPp statistics file {path}")
    header = tuple(c.strip() for c in lines[0].split(";"))
    rows = tuple(tuple(c.strip() for c in line.split(";")) for line in lines[1:])
    return SippStats(header, rows)
