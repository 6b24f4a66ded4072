"""Wiring of the listeners that are not the calls layer's business: webhooks hear a gateway's
bus, and SIP registration changes are published on it (metrics subscribe in Gateway.start).

Also the JSON shapes of a call and a registration, as the API shows them (the same the
webhooks send: core.call_events).
"""

from __future__ import annotations

import time
from typing import Any

from callbridge.calls.manager import Call, CallManager, call_info
from callbridge.core.bus import Bus
from callbridge.core.call_events import RegistrationChanged
from callbridge.observability.webhooks import WebhookSender
from callbridge.sip.registration import RegistrationStatus
from callbridge.transports.sip.transport import SipTransport

__all__ = ["call_summary", "connect_observers", "registration_event", "registration_summary"]


def call_summary(call: Call) -> dict[str, Any]:
    return call_info(call).summary()


def registration_event(status: RegistrationStatus) -> RegistrationChanged:
    return RegistrationChanged(
        account=status.account,
        state=status.state.value,
        aor=status.aor,
        registrar=status.registrar,
        reason=status.reason,
        status=status.status,
        expires=status.expires,
        failures=status.failures,
        at=time.time(),
    )


def registration_summary(status: RegistrationStatus) -> dict[str, Any]:
    return registration_event(status).summary()


def connect_observers(
    calls: CallManager, sip: SipTransport | None, webhooks: WebhookSender | None
) -> Bus:
    """Webhooks on the calls layer's bus; the SIP transport's registration changes published
    there (its hook runs on the event loop). Returns that bus."""
    bus = calls.bus
    if webhooks is not None:
        webhooks.install(bus)
    if sip is not None:
        sip.on_registration.append(lambda status: bus.publish(registration_event(status)))
    return bus
