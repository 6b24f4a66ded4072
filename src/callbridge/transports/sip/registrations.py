"""The registering accounts' runner: the asyncio side of sip.registration's state machines.

It owns each account's next hop (resolved again after a failure: the provider may have
moved), its timer, the REGISTER transactions in flight, the status log lines and the
listeners (webhooks, metrics). The transport forwards the UA's RequestCompleted here and asks
for our public address towards a peer (learned from the registrar's answer, RFC 3581).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.net import Addr
from callbridge.sip.account import SipAccount
from callbridge.sip.message import SipRequest, SipResponse
from callbridge.sip.registration import (
    Action,
    Registration,
    RegistrationStatus,
    RegState,
    SendRegister,
    StatusChanged,
)
from callbridge.transports.background import Background
from callbridge.transports.sip.dns import SipResolver

__all__ = ["SendRequest", "SipRegistrations"]

log = logging.getLogger("callbridge.transports.sip.transport")

# Sends an out-of-dialog request in its own client transaction; returns the UA's handle.
SendRequest = Callable[[SipRequest, Addr], str]


@dataclass(eq=False)
class _Registrar:
    """One account's Registration with its next hop and its timer."""

    reg: Registration
    dest: Addr | None = None
    public_addr: Addr | None = None  # what the registrar saw of us (NAT), logged
    timer: asyncio.TimerHandle | None = None
    unregistered: asyncio.Future[None] | None = field(default=None, repr=False)


class SipRegistrations:
    def __init__(
        self,
        accounts: Sequence[SipAccount],
        *,
        clock: Clock,
        resolver: SipResolver,
        send: SendRequest,
        local_host_for: Callable[[str], str],
        local_port: int,
        user_agent: str,
        learn_address: bool,
    ) -> None:
        self.clock = clock
        self.resolver = resolver
        self._send = send
        self._local_host_for = local_host_for
        self._registrars = [
            _Registrar(Registration(a, local_port=local_port, user_agent=user_agent))
            for a in accounts
            if a.register
        ]
        for registrar in self._registrars:
            registrar.reg.learn_address = learn_address  # an explicit public address wins
        self._requests: dict[str, _Registrar] = {}  # UA request handle -> registrar
        self._background = Background(log, "sip.task_failed")
        self._closing = False
        # Called after the log line, with every status change.
        self.listeners: list[Callable[[RegistrationStatus], None]] = []

    def statuses(self) -> list[RegistrationStatus]:
        return [r.reg.status() for r in self._registrars]

    def public_host(self, peer_ip: str) -> str | None:
        """Behind NAT, a provider reaches us at the address its registrar saw (RFC 3581)."""
        for registrar in self._registrars:
            public = registrar.reg.public_addr
            if public is not None and registrar.dest is not None and registrar.dest[0] == peer_ip:
                return public[0]
        return None

    def start(self, local_port: int) -> None:
        """Register every account (our SIP port is known now: it may have been ephemeral)."""
        for registrar in self._registrars:
            registrar.reg.local_port = local_port
            self._background.spawn(self._register(registrar))

    def completed(self, handle: str, response: SipResponse | None) -> None:
        """The UA's RequestCompleted: a REGISTER's final response, or its timeout (None)."""
        registrar = self._requests.pop(handle, None)
        if registrar is None:
            return
        now = self.clock.now()
        reg = registrar.reg
        self._apply(
            registrar, reg.on_timeout(now) if response is None else reg.on_response(response, now)
        )

    async def shutdown(self, wait: float) -> None:
        """Remove every binding (expires=0, RFC 3261 §10.2.2), waiting at most `wait` seconds
        for the answers; then stop the timers and tasks."""
        self._closing = True
        unregistering = [self._unregister(r) for r in self._registrars]
        if unregistering:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await asyncio.gather(*unregistering)
        for registrar in self._registrars:
            self._apply(registrar, registrar.reg.abandon("no answer to the unREGISTER"))
            if registrar.timer is not None:
                registrar.timer.cancel()
        self._background.cancel()

    # ---- the state machines' shell ---------------------------------------------------------

    async def _register(self, registrar: _Registrar) -> None:
        """(Re)resolve the next hop, then register; a failure is retried by the core's timer."""
        reg = registrar.reg
        host, port = reg.account.hop
        try:
            dest = await self.resolver.resolve(host, port)
        except OSError as exc:
            if not self._closing:
                self._apply(registrar, reg.fail(self.clock.now(), f"cannot resolve {host}: {exc}"))
            return
        if self._closing:
            return
        registrar.dest = dest
        reg.local_host = self._local_host_for(dest[0])
        self._apply(registrar, reg.start(self.clock.now()))

    def _unregister(self, registrar: _Registrar) -> asyncio.Future[None]:
        """Send the unREGISTER; the future is done once the account is UNREGISTERED."""
        if registrar.timer is not None:
            registrar.timer.cancel()
            registrar.timer = None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        registrar.unregistered = done
        self._apply(registrar, registrar.reg.stop(self.clock.now()))
        return done

    def _apply(self, registrar: _Registrar, actions: list[Action]) -> None:
        public = registrar.reg.public_addr
        if public != registrar.public_addr:
            registrar.public_addr = public
            event(log, "sip.nat_detected" if public else "sip.nat_cleared",
                  account=registrar.reg.account.name,
                  local=f"{registrar.reg.local_host}:{registrar.reg.local_port}",
                  public=f"{public[0]}:{public[1]}" if public else "")  # fmt: skip
        for action in actions:
            match action:
                case SendRegister(request=request):
                    if registrar.dest is None:  # cannot happen: the core sends after start()
                        continue
                    self._requests[self._send(request, registrar.dest)] = registrar
                case StatusChanged(status=status):
                    self._log(status)
                    for listener in self.listeners:
                        try:
                            listener(status)
                        except Exception:
                            log.exception("sip.registration_listener_error")
                    done = registrar.unregistered
                    if status.state is RegState.UNREGISTERED and done and not done.done():
                        done.set_result(None)
        self._arm(registrar)

    def _arm(self, registrar: _Registrar) -> None:
        if registrar.timer is not None:
            registrar.timer.cancel()
            registrar.timer = None
        deadline = registrar.reg.next_deadline()
        if deadline is not None and not self._closing:
            delay = max(0.0, deadline - self.clock.now())
            registrar.timer = asyncio.get_running_loop().call_later(delay, self._due, registrar)

    def _due(self, registrar: _Registrar) -> None:
        registrar.timer = None
        if registrar.reg.state is RegState.FAILED:
            self._background.spawn(
                self._register(registrar)
            )  # resolve again: the provider may have moved
        else:
            self._apply(registrar, registrar.reg.poll(self.clock.now()))

    def _log(self, status: RegistrationStatus) -> None:
        level = logging.WARNING if status.state is RegState.FAILED else logging.INFO
        now = self.clock.now()
        event(
            log,
            "sip.registration",
            level,
            account=status.account,
            state=status.state.value,
            aor=status.aor,
            registrar=status.registrar,
            reason=status.reason,
            status=status.status,
            expires=status.expires,
            retry_in=None if status.retry_at is None else round(status.retry_at - now, 1),
        )
