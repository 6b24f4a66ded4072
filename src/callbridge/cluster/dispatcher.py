"""The built-in dispatcher's socket: the public SIP port of `serve --workers N`. Every
decision is sip/stateless_proxy.py's; this shell reads datagrams, asks it, sends, probes the
workers every second and applies the checks that need a caller's real address (the workers
see only ours): sip.allow_from and the accounts' allow_from (403), the per-source limits and
bans of the SIP guard (docs/security.md)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import replace
from typing import Any

from callbridge.cluster.health import Liveness
from callbridge.cluster.plan import ClusterPlan
from callbridge.config.schema import Settings
from callbridge.config.sip_admission import guard_config, inbound_policy
from callbridge.core.log import event
from callbridge.sip.access import parse_networks
from callbridge.sip.message import SipRequest
from callbridge.sip.overload import Guard, Verdict
from callbridge.sip.stateless_proxy import (
    Addr,
    Drop,
    Forward,
    ProbeAnswer,
    ProxyConfig,
    Reply,
    StatelessProxy,
    probe_request,
)

__all__ = ["Dispatcher"]

log = logging.getLogger("callbridge.cluster")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: Dispatcher) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.owner.datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: a worker not up yet
        log.debug("dispatcher socket error: %s", exc)


class Dispatcher:
    def __init__(self, settings: Settings, plan: ClusterPlan) -> None:
        self.plan = plan
        self.liveness = Liveness(plan.count)
        self.proxy = StatelessProxy(
            ProxyConfig(plan.advertised, plan.public[1], plan.workers, settings.limits.retry_after),
            screen=self._screen,
        )
        self.policy = inbound_policy(settings)
        worker_nets = parse_networks(
            ", ".join(sorted({"127.0.0.0/8", *(f"{h}/32" for h, _ in plan.workers)}))
        )
        base = guard_config(settings)
        # Only what needs the caller's address; the workers apply the global limits.
        self.guard = Guard(
            replace(
                base,
                max_calls=0,
                max_unconfirmed=0,
                calls_per_second=0,
                max_loop_lag=0,
                trusted=base.trusted + worker_nets,
            )
        )
        self.counters: Counter[str] = Counter()  # forwarded_to_N, replied_NNN, dropped
        self._transport: asyncio.DatagramTransport | None = None
        self._prober: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=self.plan.public
        )
        self._transport = transport
        self._prober = asyncio.create_task(self._probe_loop())

    def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def local_addr(self) -> Addr:
        assert self._transport is not None
        sock = self._transport.get_extra_info("sockname")
        return sock[0], sock[1]

    def datagram(self, data: bytes, source: Addr) -> None:
        now = self.now()
        verdict, ban = self.guard.datagram(source[0], now, len(data))
        if ban is not None:
            event(log, "sip.source_banned", logging.WARNING, source=ban.source, cause=ban.cause,
                  detail=ban.detail, seconds=round(ban.until - now))  # fmt: skip
        if verdict is Verdict.DROP:
            return
        try:
            decision = self.proxy.handle(data, source, self.liveness.live(now))
        except Exception:  # never let one datagram take the public port down
            log.exception("dispatcher.internal_error", extra={"fields": {"source": source[0]}})
            return
        match decision:
            case Forward(data=out, addr=addr, worker=worker):
                self._send(out, addr)
                self.counters["forwarded" if worker is None else f"to_worker_{worker}"] += 1
            case Reply(data=out, addr=addr, status=status):
                self._send(out, addr)
                self.counters[f"replied_{status}"] += 1
            case ProbeAnswer(worker=worker, status=status):
                before = worker in self.liveness.live(now)
                self.liveness.answered(worker, status, now)
                if before != (worker in self.liveness.live(now)):
                    event(log, "dispatcher.worker_" + ("up" if not before else "down"),
                          worker=worker, status=status)  # fmt: skip
            case Drop(reason=reason):
                self.counters["dropped"] += 1
                log.debug("dispatcher dropped a datagram from %s: %s", source[0], reason)

    def _screen(self, req: SipRequest, source: Addr) -> int | None:
        if req.method.upper() != "INVITE":
            return None
        try:
            user = req.request_uri.user or ""
        except ValueError:
            user = ""
        reason = self.policy.refusal(user, source[0])
        if reason is not None:
            event(log, "call.rejected", sip_call_id=req.call_id, user=user, status=403,
                  reason=reason)  # fmt: skip
            return 403
        refusal = self.guard.admit_call(source[0], 0, self.now())
        if refusal is not None:
            return refusal.status  # 0: a source just banned, dropped silently
        return None

    def _send(self, data: bytes, addr: Addr) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    async def _probe_loop(self) -> None:
        c = self.proxy.config
        while True:
            now = self.now()
            for worker, seq in self.liveness.probes_due(now):
                self._send(probe_request(c, worker, seq), c.workers[worker])
            await asyncio.sleep(max(0.05, self.liveness.next_deadline() - self.now()))
