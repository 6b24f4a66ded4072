"""`callbridge serve --workers N`: the parent process. It owns the public SIP port (the
dispatcher), starts N gateway workers (`python -m callbridge serve --worker-index I`), starts
a crashed one again with backoff, and on SIGTERM or SIGINT passes the signal to every worker
(each drains or stops as a lone gateway does), keeps dispatching their in-dialog requests
meanwhile, and exits when the last one has. Each run makes a secret for the workers' internal
APIs and hands it to them in their environment, never on the command line or in a log."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field

from callbridge.api.forward import CLUSTER_APIS_ENV, CLUSTER_TOKEN_ENV
from callbridge.cluster.dispatcher import Dispatcher
from callbridge.cluster.plan import ClusterPlan, plan, worker_env
from callbridge.cluster.restart import RestartPolicy
from callbridge.config.schema import Settings
from callbridge.core.log import event

__all__ = ["Supervisor", "supervise", "watch_parent", "worker_argv"]

_OURS = (CLUSTER_TOKEN_ENV, CLUSTER_APIS_ENV)  # ours to set, whatever we inherited
CONFIG_ERROR = 2  # `callbridge` exits 2 on a bad setting (cli/main.py)

log = logging.getLogger("callbridge.cluster")


def worker_argv(config_file: str | None, index: int, the_plan: ClusterPlan) -> list[str]:
    """The command line of worker `index`: the same settings, its index, the plan's size and
    the advertised address (so both sides compute the same plan)."""
    config = ["--config", config_file] if config_file else []
    return [
        sys.executable, "-m", "callbridge", *config, "serve",
        "--workers", str(the_plan.count), "--worker-index", str(index),
        "--advertise", the_plan.advertised,
    ]  # fmt: skip


@dataclass(slots=True)
class Supervisor:
    settings: Settings
    plan: ClusterPlan
    config_file: str | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    dispatcher: Dispatcher | None = None
    procs: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    stopping: signal.Signals | None = None
    failed: bool = False  # a worker exited non-zero while stopping
    _events: asyncio.Queue[tuple[str, int, int]] = field(default_factory=asyncio.Queue)
    _ready_logged: bool = False
    _watches: set[asyncio.Task[None]] = field(default_factory=set)
    _getter: asyncio.Future[tuple[str, int, int]] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.dispatcher = Dispatcher(self.settings, self.plan)
        await self.dispatcher.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._events.put_nowait, ("signal", int(sig), 0))
        host, port = self.dispatcher.local_addr
        event(log, "cluster.starting", workers=self.plan.count, sip=f"{host}:{port}",
              worker_ports=",".join(str(p) for _, p in self.plan.workers))  # fmt: skip
        try:
            for i in range(self.plan.count):
                await self._start(i)
            while self.procs or self.stopping is None:
                await self._step()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if self._getter is not None:
                self._getter.cancel()
            for proc in self.procs.values():  # only on an unexpected error: no orphans
                if proc.returncode is None:
                    proc.kill()
            self.dispatcher.close()
        event(log, "cluster.stopped", failed=self.failed)
        return 1 if self.failed else 0

    async def _start(self, index: int) -> None:
        assert self.dispatcher is not None
        proc = await asyncio.create_subprocess_exec(
            *worker_argv(self.config_file, index, self.plan),
            env={
                **{k: v for k, v in os.environ.items() if k not in _OURS},
                **worker_env(self.settings, index, self.plan),
            },
            # its own session: a terminal's Ctrl-C reaches the supervisor only, which passes
            # it on once (a worker that got it twice would skip its drain)
            start_new_session=True,
        )
        self.procs[index] = proc
        now = asyncio.get_running_loop().time()
        self.policy.started(index, now)
        self.dispatcher.liveness.set_running(index, True)
        event(log, "cluster.worker_started", worker=index, pid=proc.pid,
              sip_port=self.plan.workers[index][1])  # fmt: skip
        # held until it ends: the loop keeps only weak references to tasks
        watch = asyncio.create_task(self._watch(index, proc))
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        status = await proc.wait()
        self._events.put_nowait(("exit", index, status))

    async def _step(self) -> None:
        assert self.dispatcher is not None
        loop = asyncio.get_running_loop()
        deadlines = [d for d in (self.policy.next_deadline(),) if d is not None]
        if not self._ready_logged:
            deadlines.append(loop.time() + 0.2)  # check readiness while workers load
        timeout = max(0.0, min(deadlines) - loop.time()) if deadlines else None
        # One getter kept across steps: cancelling a Queue.get() on a timeout (wait_for) can
        # lose the item it had just taken - here a worker's exit, never to be restarted.
        if self._getter is None:
            self._getter = asyncio.ensure_future(self._events.get())
        done, _ = await asyncio.wait({self._getter}, timeout=timeout)
        kind, a, b = "tick", 0, 0
        if done:
            kind, a, b = self._getter.result()
            self._getter = None
        now = loop.time()
        if kind == "signal":
            self._signal(signal.Signals(a))
        elif kind == "exit":
            self._exited(a, b, now)
        for index in self.policy.due(now):
            if self.stopping is None:
                await self._start(index)
        if not self._ready_logged and len(self.dispatcher.liveness.live(now)) == self.plan.count:
            self._ready_logged = True
            event(log, "cluster.ready", workers=self.plan.count,
                  call=f"sip:agent@{self.plan.advertised}:{self.plan.public[1]}")  # fmt: skip

    def _signal(self, sig: signal.Signals) -> None:
        assert self.dispatcher is not None
        first = self.stopping is None
        self.stopping = sig
        event(log, "cluster.stopping" if first else "cluster.stopping_now", signal=sig.name,
              workers=len(self.procs))  # fmt: skip
        for index, proc in self.procs.items():
            self.dispatcher.liveness.set_draining(index)  # new calls: 503 from here on
            if proc.returncode is None:
                proc.send_signal(sig)

    def _exited(self, index: int, status: int, now: float) -> None:
        assert self.dispatcher is not None
        self.procs.pop(index, None)
        self.dispatcher.liveness.set_running(index, False)
        if self.stopping is not None:
            self.failed = self.failed or status != 0
            event(log, "cluster.worker_exited", worker=index, status=status,
                  left=len(self.procs))  # fmt: skip
            return
        if status == CONFIG_ERROR:
            # A bad setting fails every worker the same way, at every restart: stop them all.
            event(log, "cluster.worker_exited", logging.ERROR, worker=index, status=status,
                  restart_in=None, fix="see the worker's 'bad setting' line above")  # fmt: skip
            self.failed = True
            self._signal(signal.SIGTERM)
            return
        again = self.policy.exited(index, now, status, stopping=False)
        level = logging.INFO if status == 0 else logging.ERROR
        event(log, "cluster.worker_exited", level, worker=index, status=status,
              restart_in=None if again is None else round(again - now, 2))  # fmt: skip
        if again is None and not self.procs:
            # Every worker ended by itself, cleanly: nothing is left to dispatch to.
            self.stopping = signal.SIGTERM


async def supervise(settings: Settings, count: int, config_file: str | None) -> int:
    the_plan = plan(settings, count, token=secrets.token_urlsafe(32))
    return await Supervisor(settings, the_plan, config_file).run()


async def watch_parent(parent: int) -> None:
    """In a worker: when the supervisor that started it is gone (killed with SIGKILL, so it
    could not pass a signal on), stop as on SIGTERM rather than run on unreachable. A pidfd
    (Linux 5.3+) turns readable when the process ends: no polling."""
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):
        return  # no pidfd here: the worker outlives a killed supervisor
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        if os.getppid() == parent:  # it may have ended before the pidfd was opened
            await gone.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    event(log, "cluster.supervisor_gone", logging.WARNING, parent=parent)
    os.kill(os.getpid(), signal.SIGTERM)
