"""cluster/supervisor.py with stand-in workers (small Python scripts instead of gateways):
a crashing worker is started again with backoff, a signal is passed on to every worker and
the supervisor exits when they have, with 0 when they all exited cleanly."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from callbridge.cluster import supervisor as sup_module
from callbridge.cluster.plan import ClusterPlan, plan
from callbridge.cluster.restart import RestartPolicy
from callbridge.cluster.supervisor import Supervisor, worker_argv
from callbridge.config.schema import Settings

# Crashes (exit 3) on its first two runs, then runs until SIGTERM and exits with `final`.
WORKER = """
import pathlib, signal, socket, sys, time
runs = pathlib.Path(sys.argv[1]); index = sys.argv[2]; final = int(sys.argv[3])
n = runs.joinpath(index).read_text().count("x") if runs.joinpath(index).exists() else 0
with runs.joinpath(index).open("a") as f:
    f.write("x")
if n < 2:
    sys.exit(3)
# A flag, not sys.exit() in the handler: a handler's exception that lands in a finalizer
# (the socket's) is swallowed, and the worker would never exit.
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.sendto(index.encode(), ("127.0.0.1", int(sys.argv[4])))
sock.close()
while not stop:
    time.sleep(0.02)
sys.exit(final)
"""


class Observed(Supervisor):
    """Fires an event at every worker start, so the test waits on facts, not on time."""

    started_count: dict[int, int]
    changed: asyncio.Event

    async def _start(self, index: int) -> None:
        await Supervisor._start(self, index)
        self.started_count[index] = self.started_count.get(index, 0) + 1
        self.changed.set()


def settings_on_free_port() -> Settings:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    base = Settings()
    return replace(base, sip=replace(base.sip, host="127.0.0.1", port=port))


async def run_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, final: int
) -> tuple[int, Observed]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)

    def fake_argv(config_file: str | None, index: int, the_plan: ClusterPlan) -> list[str]:
        return [sys.executable, str(script), str(tmp_path), str(index), str(final), str(up_port)]

    up: set[str] = set()
    up_event = asyncio.Event()

    class Ups(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
            up.add(data.decode())
            up_event.set()

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Ups, local_addr=("127.0.0.1", 0)
    )
    up_port = transport.get_extra_info("sockname")[1]
    monkeypatch.setattr(sup_module, "worker_argv", fake_argv)
    s = settings_on_free_port()
    supervisor = Observed(s, plan(s, 2, advertised="127.0.0.1"))
    supervisor.policy = RestartPolicy(first_delay=0.02, max_delay=0.05)
    supervisor.started_count = {}
    supervisor.changed = asyncio.Event()
    task = asyncio.create_task(supervisor.run())
    async with asyncio.timeout(10):
        # two crashes each, then a third run that stays up
        while supervisor.started_count != {0: 3, 1: 3}:
            supervisor.changed.clear()
            await supervisor.changed.wait()
        while up != {"0", "1"}:  # the third runs installed their SIGTERM handler
            up_event.clear()
            await up_event.wait()
        supervisor._events.put_nowait(("signal", int(signal.SIGTERM), 0))
        status = await task
    transport.close()
    return status, supervisor


async def test_crashed_workers_are_restarted_and_sigterm_stops_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, supervisor = await run_cluster(tmp_path, monkeypatch, final=0)
    assert status == 0
    assert supervisor.procs == {}
    assert supervisor.stopping is signal.SIGTERM
    # the backoff doubled between the two crashes of each worker
    assert all(state.failures == 2 for state in supervisor.policy.workers.values())


async def test_a_worker_failing_its_shutdown_makes_the_exit_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _ = await run_cluster(tmp_path, monkeypatch, final=5)
    assert status == 1


def test_worker_argv_carries_the_plan() -> None:
    s = settings_on_free_port()
    p = plan(s, 3, advertised="192.0.2.7")
    argv = worker_argv("/etc/cb.toml", 2, p)
    assert argv[1:] == [
        "-m", "callbridge", "--config", "/etc/cb.toml", "serve",
        "--workers", "3", "--worker-index", "2", "--advertise", "192.0.2.7",
    ]  # fmt: skip
    assert "--config" not in worker_argv(None, 0, p)


async def test_a_bad_setting_stops_the_cluster_instead_of_restarting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`callbridge` exits 2 on a bad setting: every restart would fail the same way."""

    def fake_argv(config_file: str | None, index: int, the_plan: ClusterPlan) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit(2)"]

    monkeypatch.setattr(sup_module, "worker_argv", fake_argv)
    s = settings_on_free_port()
    supervisor = Observed(s, plan(s, 2, advertised="127.0.0.1"))
    supervisor.started_count = {}
    supervisor.changed = asyncio.Event()
    async with asyncio.timeout(10):
        assert await supervisor.run() == 1
    assert supervisor.started_count == {0: 1, 1: 1}
    assert supervisor.policy.next_deadline() is None
