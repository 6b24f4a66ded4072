"""Asyncio shell around the sans-IO UserAgent: one UDP socket, one timer, no protocol logic.

Events from the core are handed to `on_event` synchronously, in order; the handler calls
back into the API methods here (which send at once) and starts tasks for anything slow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.sip.ua import Output, SendDatagram, UserAgent

log = logging.getLogger("callbridge.sip")

EventHandler = Callable[[Output], None]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.endpoint._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: not fatal
        log.debug("sip socket error: %s", exc)


class SipEndpoint:
    def __init__(self, ua: UserAgent, clock: Clock, on_event: EventHandler) -> None:
        self.ua = ua
        self.clock = clock
        self.on_event = on_event
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
        self._dispatch(outputs)

    def _dispatch(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, SendDatagram):
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
