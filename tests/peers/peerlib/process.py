"""Child processes for the peer tests: own session, stopped by PID, logs on disk, deadlines.

Every wait in the peer suite goes through `wait_until` (poll with a deadline) or a
subprocess wait with a timeout: never a bare sleep whose length decides the outcome.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


class DeadlineExceeded(AssertionError):
    """A bounded wait ran out. An AssertionError so pytest reports it as a test failure."""


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02
) -> T:
    """Poll `check` until it returns something other than None, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def wait_true(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    wait_until(lambda: True if check() else None, timeout, what, interval)


# --------------------------------------------------------------------------- processes


@dataclass(eq=False)
class ManagedProcess:
    """A started child. `stop()` signals only this PID (then its own process group)."""

    name: str
    argv: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    cwd: Path
    stdout_path: Path
    stderr_path: Path
    stop_signal: int = signal.SIGTERM
    killed: bool = False  # True when stop() had to fall back to SIGKILL

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeadlineExceeded(
                f"{self.name} (pid {self.pid}) still running after {timeout:.1f} s"
            ) from None

    def signal(self, sig: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, grace: float = 10.0, sig: int | None = None) -> int:
        """Signal the process, wait up to `grace` s, then SIGKILL its process group."""
        if self.running():
            self.signal(self.stop_signal if sig is None else sig)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self._kill_group()
                self.popen.wait(timeout=10)
        # Children it left behind share its process group (we started it in a new session,
        # so the group id is this PID): e.g. tshark's dumpcap.
        self._kill_group()
        rc = self.popen.returncode
        assert rc is not None
        return rc

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def stdout_text(self) -> str:
        return _read_text(self.stdout_path)

    def stderr_text(self) -> str:
        return _read_text(self.stderr_path)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def tail(text: str, max_chars: int = 20000) -> str:
    if len(text) <= max_chars:
        return text
    return f"[... {len(text) - max_chars} chars cut ...]\n" + text[-max_chars:]


@dataclass(eq=False)
class ProcessRegistry:
    """Starts processes for one test and stops all of them (by PID) at teardown."""

    workdir: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    extra_logs: list[tuple[str, Path]] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> ManagedProcess:
        if any(p.name == name for p in self.processes):
            raise ValueError(f"duplicate process name {name!r}")
        cwd = cwd or self.workdir
        cwd.mkdir(parents=True, exist_ok=True)
        out_path = self.workdir / f"{name}.stdout"
        err_path = self.workdir / f"{name}.stderr"
        full_env = dict(os.environ if env is None else env)
        with out_path.open("wb") as out, err_path.open("wb") as err:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        proc = ManagedProcess(
            name=name,
            argv=tuple(argv),
            popen=popen,
            cwd=cwd,
            stdout_path=out_path,
            stderr_path=err_path,
            stop_signal=stop_signal,
        )
        self.processes.append(proc)
        return proc

    def add_log(self, title: str, path: Path) -> None:
        self.extra_logs.append((title, path))

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def log_sections(self) -> Iterator[tuple[str, str]]:
        for proc in self.processes:
            state = "running" if proc.running() else f"exit {proc.returncode}"
            head = f"$ {' '.join(proc.argv)}\n(pid {proc.pid}, {state})\n"
            for label, path in (("stdout", proc.stdout_path), ("stderr", proc.stderr_path)):
                text = _read_text(path)
                if text:
                    yield f"{proc.name} {label}", head + tail(text)
        for title, path in self.extra_logs:
            text = _read_text(path)
            if text:
                yield title, tail(text)


# --------------------------------------------------------------------------- ports


def _proc_net_ports(kind: str, listen_only: bool) -> set[int]:
    ports: set[int] = set()
    for name in (kind, kind + "6"):
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 4:
                continue
            # /proc/net/{udp,tcp}: "sl local_address rem_address st ...", ADDR:PORT in hex, st 0A = LISTEN
            if listen_only and parts[3] != "0A":
                continue
            ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def udp_port_bound(port: int) -> bool:
    """Whether some socket has UDP `port` bound (read from /proc, never by binding it)."""
    return port in _proc_net_ports("udp", listen_only=False)


def tcp_port_listening(port: int) -> bool:
    return port in _proc_net_ports("tcp", listen_only=True)


def wait_udp_bound(port: int, timeout: float, what: str = "") -> None:
    wait_true(lambda: udp_port_bound(port), timeout, what or f"UDP port {port} to be bound")


def wait_tcp_listening(port: int, timeout: float, what: str = "") -> None:
    wait_true(lambda: tcp_port_listening(port), timeout, what or f"TCP port {port} to listen")


def _can_bind(port: int, kind: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free on both UDP and TCP (the kernel picks it: bind port 0)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if _can_bind(port, socket.SOCK_STREAM, LOOPBACK) and not udp_port_bound(port):
            return port
    raise RuntimeError("no free port found")


def free_port_pair() -> int:
    """A port p with p and p + 1 free (baresip binds SIP on UDP/TCP p and TLS p + 1)."""
    for _ in range(100):
        port = free_port()
        if (
            port < 65535
            and _can_bind(port + 1, socket.SOCK_STREAM, LOOPBACK)
            and not udp_port_bound(port + 1)
        ):
            return port
    raise RuntimeError("no free port pair found")


class PortBlocks:
    """Non-overlapping blocks of UDP ports for RTP ranges, below the ephemeral range.

    Blocks are handed out once per pytest session from a random start, and each port
    is checked free (on 0.0.0.0, since baresip binds RTP there) before the block is used.
    """

    def __init__(self) -> None:
        lo, _hi = _ephemeral_range()
        self._low = 10000
        self._high = min(lo, 32768)
        self._next = self._low + random.randrange(0, (self._high - self._low) // 2, 2)
        self._lock = threading.Lock()

    def take(self, size: int) -> tuple[int, int]:
        """(first, last) inclusive, `size` ports, first one even (RTP convention)."""
        with self._lock:
            for _ in range(200):
                first = self._next + (self._next % 2)
                last = first + size - 1
                if last >= self._high:
                    self._next = self._low
                    continue
                self._next = last + 1
                if all(_can_bind(p, socket.SOCK_DGRAM, "0.0.0.0") for p in range(first, last + 1)):
                    return first, last
        raise RuntimeError(f"no free block of {size} UDP ports")


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


PORT_BLOCKS = PortBlocks()
