"""Fixtures for the peer tests: process registry (kill by PID at teardown), the callbridge
gateway, and the logs of every process attached to the report of a failed test."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest

from .peerlib.callbridge import CallbridgeProcess, GatewayConfig, start_gateway
from .peerlib.process import PORT_BLOCKS, ProcessRegistry

REGISTRY_KEY = pytest.StashKey[ProcessRegistry]()


def require_tools(*tools: str) -> None:
    """Fail (never skip) when a peer tool is missing: the suite is meaningless without it."""
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, (
        f"missing peer tools {missing}; install: apt-get install sip-tester baresip baresip-core "
        "sox libsox-fmt-all espeak-ng tshark"
    )


@pytest.fixture
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessRegistry]:
    reg = ProcessRegistry(tmp_path)
    request.node.stash[REGISTRY_KEY] = reg
    yield reg
    reg.stop_all()


GatewayFactory = Callable[..., CallbridgeProcess]


@pytest.fixture
def gateway_factory(registry: ProcessRegistry, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start `callbridge serve` instances; at teardown each gets SIGINT and must exit 0
    within the grace period without having logged a traceback."""
    started: list[CallbridgeProcess] = []

    def start(
        *, rtp_ports: int = 40, echo_delay_ms: int = 0, extra_env: Mapping[str, str] | None = None
    ) -> CallbridgeProcess:
        n = len(started)
        cfg = GatewayConfig.allocate(
            tmp_path / f"callbridge-data{n}",
            PORT_BLOCKS.take(rtp_ports),
            echo_delay_ms=echo_delay_ms,
            extra_env=dict(extra_env or {}),
        )
        gw = start_gateway(registry, cfg, name=f"callbridge{n}" if n else "callbridge")
        started.append(gw)
        return gw

    yield start

    problems = []
    for gw in started:
        was_running = gw.proc.running()
        rc = gw.shutdown()
        if was_running and (gw.proc.killed or rc != 0):
            problems.append(
                f"{gw.proc.name}: SIGINT shutdown "
                + ("needed SIGKILL" if gw.proc.killed else f"exited {rc}")
            )
        problems += [f"{gw.proc.name}: {line}" for line in gw.crash_evidence()]
    assert not problems, "callbridge teardown problems:\n" + "\n".join(problems)


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> CallbridgeProcess:
    """A running gateway for the SIP/RTP tests: default agent echo, so no speech models load
    (the voice-agent tests start theirs with gateway_factory and the product defaults)."""
    return gateway_factory(extra_env={"CALLBRIDGE_DEFAULT_AGENT": "echo"})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        reg = item.stash.get(REGISTRY_KEY, None)
        if reg is not None:
            for title, text in reg.log_sections():
                report.sections.append((f"peer log: {title}", text))
    return report
