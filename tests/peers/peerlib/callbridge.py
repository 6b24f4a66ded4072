"""The callbridge process under test: the ONE place that knows its command line and env.

The gateway logs JSON lines on stderr ({"ts", "level", "logger", "msg", "call_id"?, ...});
tests wait for those events (`wait_for`) instead of sleeping. Non-JSON stderr lines
are kept too: a Python traceback printed by a crash is one of them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .process import LOOPBACK, DeadlineExceeded, ManagedProcess, ProcessRegistry, free_port

# --------------------------------------------------------------------------- command + env


def python() -> str:
    """The interpreter that has callbridge installed (override: CALLBRIDGE_TEST_PYTHON)."""
    return os.environ.get("CALLBRIDGE_TEST_PYTHON", sys.executable)


def serve_argv() -> list[str]:
    return [python(), "-m", "callbridge", "serve"]


def call_argv(uri: str, agent: str, duration_s: float) -> list[str]:
    return [
        python(),
        "-m",
        "callbridge",
        "call",
        uri,
        "--agent",
        agent,
        "--duration",
        f"{duration_s:g}",
    ]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    sip_port: int
    http_port: int
    rtp_range: tuple[int, int]
    data_dir: Path
    echo_delay_ms: int = 0
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def allocate(cls, data_dir: Path, rtp_range: tuple[int, int], **kw: Any) -> GatewayConfig:
        return cls(
            sip_port=free_port(),
            http_port=free_port(),
            rtp_range=rtp_range,
            data_dir=data_dir,
            **kw,
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Only the test's own settings: drop any CALLBRIDGE_* from the caller's shell, but
        # for how the process runs: the test interpreter, the compiled media path on or off.
        keep = ("CALLBRIDGE_TEST_PYTHON", "CALLBRIDGE_NATIVE", "CALLBRIDGE_NATIVE_DIR")
        for key in [k for k in env if k.startswith("CALLBRIDGE_") and k not in keep]:
            del env[key]
        env.update(
            {
                "CALLBRIDGE_SIP_HOST": LOOPBACK,
                "CALLBRIDGE_SIP_PORT": str(self.sip_port),
                "CALLBRIDGE_HTTP_PORT": str(self.http_port),
                "CALLBRIDGE_DATA_DIR": str(self.data_dir),
                "CALLBRIDGE_LOG_FORMAT": "json",
                "CALLBRIDGE_RTP_PORT_MIN": str(self.rtp_range[0]),
                "CALLBRIDGE_RTP_PORT_MAX": str(self.rtp_range[1]),
                "CALLBRIDGE_ECHO_DELAY_MS": str(self.echo_delay_ms),
                "PYTHONUNBUFFERED": "1",
                "PYTHONFAULTHANDLER": "1",
            }
        )
        env.update(self.extra_env)
        return env


# --------------------------------------------------------------------------- JSON log


Event = dict[str, Any]


@dataclass(eq=False)
class JsonLog:
    """Incrementally parsed JSON-lines log file (the process keeps appending to it)."""

    path: Path
    records: list[Event] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)  # not JSON objects
    _offset: int = 0
    _partial: bytes = b""

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                self.other_lines.append(line)
                continue
            if isinstance(obj, dict):
                self.records.append(obj)
            else:
                self.other_lines.append(line)


def _matches(ev: Event, msg: str | None, fields: Mapping[str, Any]) -> bool:
    if msg is not None and ev.get("msg") != msg:
        return False
    return all(ev.get(k) == v for k, v in fields.items())


@dataclass(eq=False)
class CallbridgeProcess:
    """A running `callbridge serve` / `callbridge call` with its parsed log."""

    proc: ManagedProcess
    config: GatewayConfig
    log: JsonLog

    @property
    def sip_addr(self) -> tuple[str, int]:
        return LOOPBACK, self.config.sip_port

    def events(self, msg: str | None = None, **fields: Any) -> list[Event]:
        """Logged events so far, filtered by "msg" and exact field values."""
        self.log.poll()
        return [ev for ev in self.log.records if _matches(ev, msg, fields)]

    def wait_for(
        self,
        msg: str,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float = 10.0,
        count: int = 1,
        **fields: Any,
    ) -> list[Event]:
        """Wait until at least `count` matching events were logged; returns all matches.
        Fails early if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            found = [ev for ev in self.events(msg, **fields) if predicate is None or predicate(ev)]
            if len(found) >= count:
                return found
            if not self.proc.running():
                self.log.poll()
                found = [
                    ev for ev in self.events(msg, **fields) if predicate is None or predicate(ev)
                ]
                if len(found) >= count:
                    return found
                raise AssertionError(
                    f"callbridge exited ({self.proc.returncode}) before logging {count} x {msg!r} "
                    f"{fields or ''} (got {len(found)}):\n{self.stderr_tail()}"
                )
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"callbridge did not log {count} x {msg!r} {fields or ''} within {timeout} s "
                    f"(got {len(found)}):\n{self.stderr_tail()}"
                )
            time.sleep(0.02)

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(self.proc.stderr_text().splitlines()[-lines:])

    def crash_evidence(self) -> list[str]:
        """Log lines that show an unhandled exception (a traceback) anywhere in stderr/stdout."""
        self.log.poll()
        out = []
        for text in (self.proc.stderr_text(), self.proc.stdout_text()):
            for line in text.splitlines():
                if "Traceback (most recent call last)" in line or "Fatal Python error" in line:
                    out.append(line[:2000])
        return out

    def assert_no_crash(self) -> None:
        evidence = self.crash_evidence()
        assert not evidence, "callbridge logged a traceback:\n" + "\n".join(evidence)

    def wait_exit(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self.log.poll()
        return rc

    def shutdown(self, grace: float = 15.0) -> int:
        """SIGINT (graceful shutdown), wait `grace` s, then SIGKILL. Returns the exit code."""
        rc = self.proc.stop(grace=grace, sig=signal.SIGINT)
        self.log.poll()
        return rc


def _start(
    registry: ProcessRegistry, name: str, argv: list[str], config: GatewayConfig
) -> CallbridgeProcess:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    proc = registry.start(name, argv, env=config.env(), stop_signal=signal.SIGINT)
    return CallbridgeProcess(proc=proc, config=config, log=JsonLog(proc.stderr_path))


def start_gateway(
    registry: ProcessRegistry,
    config: GatewayConfig,
    name: str = "callbridge",
    timeout: float = 60.0,
    argv: list[str] | None = None,
) -> CallbridgeProcess:
    """`callbridge serve` (or `argv`, for harness self-tests), returned once it logged
    sip.listening on the configured port. The deadline is generous: loading the piper voice
    takes 8-10 s on an idle 2-core machine and over 20 s on a busy one."""
    gw = _start(registry, name, argv or serve_argv(), config)
    try:
        ready = gw.wait_for("sip.listening", timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"callbridge serve did not start: {exc}") from None
    port = ready[0].get("port", config.sip_port)
    assert int(port) == config.sip_port, f"listening on {port}, configured {config.sip_port}"
    return gw


def start_outbound_call(
    registry: ProcessRegistry,
    config: GatewayConfig,
    uri: str,
    *,
    agent: str = "echo",
    duration_s: float = 8.0,
    name: str = "callbridge-call",
    extra: Sequence[str] = (),
) -> CallbridgeProcess:
    """`callbridge call URI --agent A --duration D [extra]`; does not wait (use wait_exit)."""
    return _start(registry, name, [*call_argv(uri, agent, duration_s), *extra], config)


__all__ = [
    "CallbridgeProcess",
    "DeadlineExceeded",
    "Event",
    "GatewayConfig",
    "JsonLog",
    "call_argv",
    "serve_argv",
    "start_gateway",
    "start_outbound_call",
]
