"""Prometheus metrics of one gateway: calls, turn latencies, barge-in, RTP quality, registrations.

Each `Metrics` owns its registry (no process-global state: two gateways in one process, as in
the tests, do not collide). Everything counted arrives as typed events on the bus (core.bus):
the calls layer's CallStarted / CallEnded / RegistrationChanged on its gateway's bus, the
agents' TurnMeasured / BargeIn on the process-wide bus they publish on, so neither layer
depends on metrics and the log level cannot silence them. Live values (active calls,
registration states) are read when scraped, so they can never drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from callbridge.core.bus import Bus, Unsubscribe, default_bus
from callbridge.core.call_events import (
    BargeIn,
    CallEnded,
    CallEvent,
    CallStarted,
    RegistrationChanged,
    TurnMeasured,
)
from callbridge.observability.heap import PAUSES

__all__ = ["CONTENT_TYPE", "REGISTRATION_STATES", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

REGISTRATION_STATES = ("unregistered", "registering", "registered", "failed", "unregistering")

# Seconds. Turn latencies of a phone agent live between ~100 ms and a few seconds.
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_JITTER_BUCKETS_MS = (1, 2, 5, 10, 20, 30, 50, 100, 200)
_MEDIA_LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(
        self,
        *,
        active_calls: Callable[[], int] | None = None,
        registrations: Callable[[], Iterable[tuple[str, str]]] | None = None,
        sip_guard: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """`active_calls`, `registrations` ((account, state) pairs) and the SIP guard's
        counters are read at scrape time."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if sip_guard is not None:
            r.register(_GuardCollector(sip_guard))
        r.register(_GcCollector())
        self._registrations = registrations
        self.active_calls = Gauge("callbridge_active_calls", "Calls in progress", registry=r)
        if active_calls is not None:
            self.active_calls.set_function(lambda: float(active_calls()))
        self.calls_started = Counter(
            "callbridge_calls_started", "Calls started", ["transport", "direction"], registry=r
        )
        self.calls_ended = Counter(
            "callbridge_calls_ended", "Calls ended, by end reason", ["reason"], registry=r
        )
        self.turn_latency = Histogram(
            "callbridge_turn_latency_seconds",
            "Agent turn latency by stage (voice_to_voice, stt, brain, tts)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_in = Histogram(
            "callbridge_barge_in_decision_seconds",
            "From the caller's speech onset over the agent to the barge-in decision",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_in_silenced = Histogram(
            "callbridge_barge_in_silenced_seconds",
            "From the caller's speech onset to the agent going silent (playout held)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rtp_lost = Counter(
            "callbridge_rtp_lost_packets", "RTP packets lost (RFC 3550 §6.4.1), summed at call end",
            registry=r,
        )  # fmt: skip
        self.rtp_late = Counter(
            "callbridge_rtp_late_frames", "Frames that arrived too late for the jitter buffer",
            registry=r,
        )  # fmt: skip
        self.rtp_concealed = Counter(
            "callbridge_rtp_concealed_frames", "Frames concealed (PLC) for missing audio",
            registry=r,
        )  # fmt: skip
        self.rtp_jitter = Histogram(
            "callbridge_rtp_jitter_ms",
            "Interarrival jitter per call at its end (RFC 3550 §6.4.1), milliseconds",
            buckets=_JITTER_BUCKETS_MS,
            registry=r,
        )
        self.media_lateness = Histogram(
            "callbridge_media_lateness_seconds",
            "How late the media clock's passes started, the latest of each 100 ms: every "
            "call's audio is that late (over 0.02 the process is saturated)",
            buckets=_MEDIA_LATENESS_BUCKETS,
            registry=r,
        )
        self.registration = Gauge(
            "callbridge_registration_state",
            "1 for each account's current registration state, 0 for the others",
            ["account", "state"],
            registry=r,
        )
        self._subscriptions: list[Unsubscribe] = []

    # ---- reports from the calls layer --------------------------------------------------------

    def call_started(self, transport: str, direction: str) -> None:
        self.calls_started.labels(transport, direction).inc()

    def call_ended(self, reason: str, stats: Mapping[str, int | float]) -> None:
        self.calls_ended.labels(reason or "unknown").inc()
        if "lost" in stats:
            self.rtp_lost.inc(max(0, stats["lost"]))
        late = stats.get("late", stats.get("payloads_late"))
        if late is not None:
            self.rtp_late.inc(max(0, late))
        concealed = stats.get("concealed", stats.get("frames_concealed"))
        if concealed is not None:
            self.rtp_concealed.inc(max(0, concealed))
        if "jitter_ms" in stats and stats.get("rtp_in", 0):
            self.rtp_jitter.observe(stats["jitter_ms"])

    def registration_changed(self, account: str, state: str) -> None:
        for s in REGISTRATION_STATES:
            self.registration.labels(account, s).set(1.0 if s == state else 0.0)

    # ---- the bus ------------------------------------------------------------------------------

    def on_event(self, ev: CallEvent) -> None:
        match ev:
            case CallStarted():
                self.call_started(ev.call.transport, ev.call.direction)
            case CallEnded():
                self.call_ended(ev.reason, ev.stats)
            case RegistrationChanged():
                self.registration_changed(ev.account, ev.state)
            case TurnMeasured():
                for stage, ms in (
                    ("voice_to_voice", ev.voice_to_voice_ms),
                    ("stt", ev.stt_final_ms),
                    ("brain", ev.brain_first_token_ms),
                    ("tts", ev.tts_first_audio_ms),
                ):
                    if ms is not None:
                        self.turn_latency.labels(stage).observe(max(0.0, ms / 1000))
            case BargeIn():
                self.barge_in.observe(max(0.0, ev.decided_after_ms / 1000))
                self.barge_in_silenced.observe(max(0.0, ev.silenced_after_ms / 1000))
            case _:
                pass

    def install(self, bus: Bus | None = None) -> None:
        """Listen: to the calls layer on `bus` (a gateway's; default: the process-wide bus),
        to the agents at its root, where they publish (a gateway's bus forwards its own
        events there too, so nothing is counted twice)."""
        calls = bus if bus is not None else default_bus()
        self.uninstall()
        self._subscriptions = [
            *(calls.subscribe(t, self.on_event) for t in _CALL_EVENTS),
            *(calls.root.subscribe(t, self.on_event) for t in _AGENT_EVENTS),
        ]

    def uninstall(self) -> None:
        for unsubscribe in self._subscriptions:
            unsubscribe()
        self._subscriptions = []

    # ---- exposition ----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        if self._registrations is not None:
            for account, state in self._registrations():
                self.registration_changed(account, state)
        return generate_latest(self.registry)


_CALL_EVENTS = (CallStarted, CallEnded, RegistrationChanged)
_AGENT_EVENTS = (TurnMeasured, BargeIn)

# The SIP guard's counters (sip/overload.py) -> one metric family each, read when scraped.
_GUARD_FAMILIES = {
    "callbridge_sip_calls_admitted": ("New calls admitted by the limits", ("admitted",)),
    "callbridge_sip_calls_refused": (
        "New calls refused with 503 (by limit)",
        ("rejected_max_calls", "rejected_max_unconfirmed", "rejected_overload",
         "rejected_calls_per_second",
         "rejected_calls_per_second_per_source"),
    ),
    "callbridge_sip_datagrams_dropped": ("SIP datagrams dropped from banned sources", ("dropped_banned",)),
    "callbridge_sip_bans": ("Sources banned (by cause: flood, auth)", ("bans_flood", "bans_auth")),
    "callbridge_sip_auth_failures": ("Failed digest answers", ("auth_failures",)),
}  # fmt: skip


class _GuardCollector(Collector):
    def __init__(self, counters: Callable[[], Mapping[str, int]]) -> None:
        self.counters = counters

    def collect(self) -> Iterable[Metric]:
        values = self.counters()
        for name, (doc, keys) in _GUARD_FAMILIES.items():
            if len(keys) == 1:
                yield CounterMetricFamily(name, doc, value=values.get(keys[0], 0))
                continue
            label = "limit" if name.endswith("refused") else "cause"
            family = CounterMetricFamily(name, doc, labels=[label])
            for key in keys:
                family.add_metric([key.split("_", 1)[1]], values.get(key, 0))
            yield family


class _GcCollector(Collector):
    """The garbage collector's long pauses (observability.heap): each one stalled every call."""

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "callbridge_gc_long_pauses",
            "Garbage collections that stopped the process for 20 ms or more",
            value=PAUSES.long_pauses,
        )
        yield GaugeMetricFamily(
            "callbridge_gc_longest_pause_seconds",
            "The longest garbage collection pause so far",
            value=PAUSES.longest,
        )
