"""The event bus: layers publish typed events, logging, metrics, the store and webhooks listen.

Synchronous and sans-IO: `publish` calls each matching subscriber in the publisher's thread
and context (so a handler sees the call id of the call that published), in the order they
subscribed, and returns when all have run. A subscriber that raises is logged (once per kind
of failure, so an event that fires on every packet cannot flood the log) and skipped: it never
breaks the publisher nor the other subscribers.

Dispatch is by type: `subscribe(CallEnded, h)` hears CallEnded and its subclasses,
`subscribe(None, h)` hears everything.

One process-wide bus (`default_bus()`) carries what layers without collaborators publish
(every `core.log.event()`, the agents' turn and barge-in measurements). An object that already
takes collaborators takes a `bus` too: a gateway gives its calls layer a bus of its own whose
parent is the process-wide one, so its metrics and webhooks hear only its own calls while the
process-wide listeners (log printer, call store) still hear everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["Bus", "Unsubscribe", "default_bus"]

log = logging.getLogger("callbridge.bus")

E = TypeVar("E")

Unsubscribe = Callable[[], None]


class _Subscription:
    __slots__ = ("active", "event_type", "failed", "handler")

    def __init__(self, event_type: type[Any] | None, handler: Callable[[Any], None]) -> None:
        self.event_type = event_type
        self.handler = handler
        self.active = True
        self.failed: set[type[BaseException]] = set()  # kinds already logged


class Bus:
    def __init__(self, parent: Bus | None = None, *, name: str = "bus") -> None:
        """`parent`: a bus that also hears everything published here (after this one's
        subscribers), e.g. the process-wide bus above a gateway's."""
        self.parent = parent
        self.name = name
        self.failures = 0  # subscriber exceptions, logged or not
        self._subs: list[_Subscription] = []
        # type -> its subscribers, in order; rebuilt lazily after any (un)subscribe
        self._routes: dict[type[Any], tuple[_Subscription, ...]] = {}

    @property
    def root(self) -> Bus:
        """The top of the parent chain: where everything published below ends up."""
        bus = self
        while bus.parent is not None:
            bus = bus.parent
        return bus

    @overload
    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> Unsubscribe: ...

    @overload
    def subscribe(self, event_type: None, handler: Callable[[object], None]) -> Unsubscribe: ...

    def subscribe(
        self, event_type: type[Any] | None, handler: Callable[[Any], None]
    ) -> Unsubscribe:
        """Call `handler(event)` for each published event of `event_type` (None: all).
        Returns the function that ends the subscription (idempotent)."""
        sub = _Subscription(event_type, handler)
        self._subs = [*self._subs, sub]
        self._routes = {}

        def unsubscribe() -> None:
            # An event being dispatched right now skips it from here on.
            sub.active = False
            if sub in self._subs:
                self._subs = [s for s in self._subs if s is not sub]
                self._routes = {}

        return unsubscribe

    def publish(self, event: object) -> None:
        """Deliver `event` to every matching subscriber, then to the parent bus. Never raises
        a subscriber's exception."""
        kind = type(event)
        routes = self._routes
        subs = routes.get(kind)
        if subs is None:
            # Lists are replaced, never mutated: a snapshot is safe to iterate while a
            # handler subscribes or unsubscribes (or another thread does).
            subs = tuple(
                s for s in self._subs if s.event_type is None or issubclass(kind, s.event_type)
            )
            routes[kind] = subs
        for sub in subs:
            if not sub.active:
                continue
            try:
                sub.handler(event)
            except Exception as exc:
                self._failed(sub, event, exc)
        if self.parent is not None:
            self.parent.publish(event)

    def _failed(self, sub: _Subscription, event: object, exc: Exception) -> None:
        self.failures += 1
        if type(exc) in sub.failed:
            return
        sub.failed.add(type(exc))
        log.error(
            "bus %s: subscriber %r failed on %s (further %s from it not logged)",
            self.name, sub.handler, type(event).__name__, type(exc).__name__,
            exc_info=exc,
        )  # fmt: skip

    @property
    def subscribers(self) -> int:
        return len(self._subs)


_PROCESS = Bus(name="process")


def default_bus() -> Bus:
    """The process-wide bus."""
    return _PROCESS
