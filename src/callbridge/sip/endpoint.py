"""Asyncio shell around the sans-IO UserAgent: one UDP socket, one timer, no protocol logic.

Events from the core are handed to `on_event` synchronously, in order; the handler calls
back into the API methods here (which send at once) and starts tasks for anything slow.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.sip.overload import Guard, Verdict
from callbridge.sip.ua import Datagram, Output, UserAgent

log = logging.getLogger("callbridge.sip")

EventHandler = Callable[[Output], None]
# A receive buffer that absorbs a burst while the loop is busy (the kernel caps SO_RCVBUF at
# net.core.rmem_max; SO_RCVBUFFORCE, allowed to root, goes past it).
RECEIVE_BUFFER = 4 * 1024 * 1024


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.endpoint._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: not fatal
        log.debug("sip socket error: %s", exc)


class SipEndpoint:
    def __init__(
        self, ua: UserAgent, clock: Clock, on_event: EventHandler, guard: Guard | None = None
    ) -> None:
        self.ua = ua
        self.clock = clock
        self.on_event = on_event
        self.guard = guard
        self.receive_buffer = 0  # bytes, as the kernel granted it
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.local_addr: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )
        self._transport = transport
        sock = transport.get_extra_info("sockname")
        self.local_addr = (sock[0], sock[1])
        self.receive_buffer = _grow_receive_buffer(transport.get_extra_info("socket"))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # The API: every call runs the core and flushes its outputs.
    def run(self, fn: Callable[[float], list[Output]]) -> None:
        self._dispatch(fn(self.clock.now()))

    def _datagram(self, data: bytes, source: tuple[str, int]) -> None:
        guard = self.guard
        if guard is not None:
            # Before parsing: a banned source costs one lookup per datagram.
            verdict, _ = guard.datagram(source[0], self.clock.now(), len(data))
            if verdict is Verdict.DROP:
                if guard.new_bans:
                    self.report_bans()
                return
        try:
            outputs = self.ua.receive(data, source, self.clock.now())
        except Exception:  # never let one datagram take the endpoint down
            log.exception(
                "sip.internal_error", extra={"fields": {"source": f"{source[0]}:{source[1]}"}}
            )
            return
        if self.ua.bad_messages:
            event(
                log,
                "sip.bad_message",
                logging.WARNING,
                source=f"{source[0]}:{source[1]}",
                size=len(data),
            )
            self.ua.bad_messages = 0
        if guard is not None and guard.new_bans:
            self.report_bans()
        self._dispatch(outputs)

    def report_bans(self) -> None:
        """One WARNING per ban (what fail2ban would act on); nothing per dropped datagram."""
        if self.guard is None:
            return
        now = self.clock.now()
        for ban in self.guard.take_bans():
            event(log, "sip.source_banned", logging.WARNING, source=ban.source, cause=ban.cause,
                  detail=ban.detail, seconds=round(ban.until - now))  # fmt: skip

    def _dispatch(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Datagram):
                if self._transport is not None:
                    self._transport.sendto(out.data, out.addr)
            else:
                try:
                    self.on_event(out)
                except Exception:
                    log.exception("sip.handler_error")
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.ua.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - self.clock.now())
            self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self._dispatch(self.ua.poll(self.clock.now()))


def _grow_receive_buffer(sock: socket.socket | None) -> int:
    if sock is None:
        return 0
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
            break
        except OSError:
            continue
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
