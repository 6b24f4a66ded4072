"""Webhooks: call and registration events POSTed as signed JSON, off the call's path.

Each event is one JSON object `{"id", "type", "created", "data"}`, POSTed with
`X-Callbridge-Timestamp: <unix seconds>` and
`X-Callbridge-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. Binding the
timestamp into the MAC lets a receiver refuse replays older than a tolerance (`verify`).

The events are the bus's (core.bus): `install(bus)` subscribes, `webhook_of()` maps a typed
event to its webhook type and data. `emit()` never waits: events go into a bounded queue (full: the event is dropped and logged,
a slow receiver must not grow memory or hold a call); one background task delivers them in
order, each with a timeout, retried with exponential backoff on a network error or a non-2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from callbridge.core.bus import Bus, Unsubscribe
from callbridge.core.call_events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    RecordingReady,
    RegistrationChanged,
    TranscriptReady,
)
from callbridge.core.http_responses import let_go
from callbridge.core.log import event

__all__ = [
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookConfig",
    "WebhookEvent",
    "WebhookSender",
    "sign",
    "verify",
    "webhook_of",
]

log = logging.getLogger("callbridge.webhooks")

TIMESTAMP_HEADER = "X-Callbridge-Timestamp"
SIGNATURE_HEADER = "X-Callbridge-Signature"
EVENT_TYPES = (
    "call.started",
    "call.answered",
    "call.ended",
    "call.transcript",
    "recording.ready",
    "registration.changed",
)


def webhook_of(ev: object) -> tuple[str, dict[str, Any]] | None:
    """The webhook (type, data) of a bus event; None for the events that have none."""
    match ev:
        case CallStarted():
            return "call.started", ev.call.summary()
        case CallAnswered():
            return "call.answered", ev.call.summary()
        case CallEnded():
            data = {**ev.call.summary(), "reason": ev.reason, "duration": ev.duration}
            return "call.ended", {**data, **ev.stats}
        case TranscriptReady():
            return "call.transcript", {"call_id": ev.call_id, "path": ev.path}
        case RecordingReady():
            data = {"call_id": ev.call_id, "path": ev.path, "seconds": ev.seconds}
            return "recording.ready", data
        case RegistrationChanged():
            return "registration.changed", ev.summary()
        case _:
            return None


def sign(secret: str, timestamp: str, body: bytes | str) -> str:
    """The `X-Callbridge-Signature` value: `v1=` + hex HMAC-SHA256 over `"<timestamp>.<body>"`."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + raw, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes | str,
    signature: str,
    tolerance: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """Check a delivery: the signature matches and the timestamp is within `tolerance` seconds
    of `now` (default: the wall clock). `signature` may list several comma-separated values
    (e.g. during a secret rotation); any `v1=` match passes. Use the raw request body."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(
        hmac.compare_digest(expected, candidate.strip()) for candidate in signature.split(",")
    )


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str = ""  # "" = webhooks off
    secret: str = field(default="", repr=False)  # never logged
    tries: int = 5
    backoff: float = 0.5  # seconds before the 2nd try, doubling after each failure
    timeout: float = 5.0  # per try
    queue_size: int = 1000


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    type: str
    created: float  # Unix seconds
    data: Mapping[str, Any]

    def body(self) -> bytes:
        doc = {"id": self.id, "type": self.type, "created": self.created, "data": self.data}
        return json.dumps(doc, separators=(",", ":"), default=str).encode("utf-8")


class WebhookSender:
    """Delivers events to one URL from a background task (`start()` / `aclose()`)."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._client = client
        self._own_client = client is None
        self._sleep = sleep
        self._wall = wall
        self._queue: asyncio.Queue[WebhookEvent] = asyncio.Queue(maxsize=config.queue_size)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.config.url)

    def install(self, bus: Bus) -> Unsubscribe:
        """Send the webhook events published on `bus` (a gateway's: only its calls)."""
        return bus.subscribe(None, self.on_event)

    def on_event(self, ev: object) -> None:
        # Subscribers run on the publisher's thread: the calls layer and the SIP transport
        # publish on the event loop, which the queue needs.
        hook = webhook_of(ev)
        if hook is not None:
            self.emit(*hook)

    def start(self) -> None:
        if not self.enabled or self._task is not None:
            return
        if self._client is None:
            self._client = httpx.AsyncClient()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhooks")

    def emit(self, type_: str, data: Mapping[str, Any]) -> WebhookEvent | None:
        """Queue an event; never blocks. Returns it, or None when off or the queue is full."""
        if not self.enabled:
            return None
        ev = WebhookEvent(f"evt_{secrets.token_hex(8)}", type_, round(self._wall(), 3), data)
        try:
            self._queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.dropped += 1
            event(log, "webhook.dropped", logging.WARNING, type=type_, reason="queue full")
            return None
        return ev

    async def _run(self) -> None:
        while True:
            ev = await self._queue.get()
            try:
                await self._deliver(ev)
            except Exception:  # never let one event stop the deliveries
                log.exception("webhook delivery crashed")
            finally:
                self._queue.task_done()

    async def _deliver(self, ev: WebhookEvent) -> bool:
        assert self._client is not None
        c = self.config
        body = ev.body()
        delay = c.backoff
        error = ""
        for attempt in range(1, c.tries + 1):
            timestamp = str(int(self._wall()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "callbridge-webhooks",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(c.secret, timestamp, body),
            }
            try:
                response = await self._client.post(
                    c.url, content=body, headers=headers, timeout=c.timeout
                )
                let_go(response)  # read: no reference cycle left for a full collection
                if 200 <= response.status_code < 300:
                    self.delivered += 1
                    event(log, "webhook.delivered", type=ev.type, id=ev.id, attempt=attempt)
                    return True
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < c.tries:
                event(
                    log, "webhook.retry", logging.WARNING,
                    type=ev.type, id=ev.id, attempt=attempt, error=error, retry_in=delay,
                )  # fmt: skip
                await self._sleep(delay)
                delay *= 2
        self.failed += 1
        event(
            log, "webhook.failed", logging.ERROR,
            type=ev.type, id=ev.id, tries=c.tries, error=error,
        )  # fmt: skip
        return False

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) until everything queued so far is delivered or given up."""
        if self._task is None:
            return self._queue.empty()
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def aclose(self, grace: float = 2.0) -> None:
        """Deliver what is queued within `grace` seconds, then stop."""
        if self._task is not None:
            await self.drain(grace)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()
