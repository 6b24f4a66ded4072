"""What metrics and webhooks hear: the calls layer's start/end hooks and registration changes.

Listeners run on the event loop inside the calls layer's hooks, so they only count and
enqueue: nothing here waits (webhook delivery is the sender's background task).
"""

from __future__ import annotations

from typing import Any

from callbridge.calls.manager import Call, CallManager
from callbridge.observability.metrics import Metrics
from callbridge.observability.webhooks import WebhookSender
from callbridge.sip.registration import RegistrationStatus
from callbridge.transports.sip import SipTransport

__all__ = ["call_summary", "connect_observers", "registration_summary"]


def call_summary(call: Call) -> dict[str, Any]:
    info = call.leg.info
    return {
        "call_id": call.id,
        "transport": info.transport,
        "direction": info.direction,
        "local_user": info.local_user,
        "remote_uri": info.remote_uri,
        "agent": call.agent_name,
        "ids": {k: v for k, v in info.ids.items() if k != "call_id"},
    }


def registration_summary(status: RegistrationStatus) -> dict[str, Any]:
    return {
        "account": status.account,
        "state": status.state.value,
        "aor": status.aor,
        "registrar": status.registrar,
        "reason": status.reason,
        "status": status.status,
        "expires": status.expires,
        "failures": status.failures,
    }


def connect_observers(
    calls: CallManager,
    sip: SipTransport | None,
    metrics: Metrics | None,
    webhooks: WebhookSender | None,
) -> None:
    def started(call: Call) -> None:
        if metrics is not None:
            metrics.call_started(call.leg.info.transport, call.leg.info.direction)
        if webhooks is not None:
            summary = call_summary(call)
            webhooks.emit("call.started", summary)
            # Legs reach the calls layer answered (inbound: our 200 OK; outbound: theirs).
            webhooks.emit("call.answered", summary)

    def ended(call: Call) -> None:
        reason = call.leg.end_reason or "unknown"
        stats = call.leg.stats()
        if metrics is not None:
            metrics.call_ended(reason, stats)
        if webhooks is None:
            return
        summary = call_summary(call)
        duration = None if call.ended is None else round(call.ended - call.started, 3)
        webhooks.emit("call.ended", {**summary, "reason": reason, "duration": duration, **stats})
        record = call.record
        if record is None:
            return
        # on_end runs after the store finalised both files: they are complete now.
        if record.transcript is not None and record.transcript.path.exists():
            webhooks.emit(
                "call.transcript", {"call_id": call.id, "path": str(record.transcript.path)}
            )
        if record.recorder is not None and record.recorder.path.exists():
            webhooks.emit(
                "recording.ready",
                {
                    "call_id": call.id,
                    "path": str(record.recorder.path),
                    "seconds": round(record.recorder.duration, 3),
                },
            )

    calls.on_start.append(started)
    calls.on_end.append(ended)
    if sip is None:
        return

    def registration(status: RegistrationStatus) -> None:
        if metrics is not None:
            metrics.registration_changed(status.account, status.state.value)
        if webhooks is not None:
            webhooks.emit("registration.changed", registration_summary(status))

    sip.on_registration.append(registration)
