"""The listeners on the bus: a call through the real CallManager reaches metrics, the store's
events table and the webhooks (typed events on the gateway's bus, Noted and the agents'
events on the process-wide bus); the webhook payload of every typed event (golden: the JSON
the webhooks sent before the bus)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callbridge.agents.echo import EchoAgent
from callbridge.api.observers import connect_observers, registration_summary
from callbridge.calls.manager import Call, CallManager
from callbridge.calls.routing import Router
from callbridge.core.bus import Bus, default_bus
from callbridge.core.call_events import (
    BargeIn,
    CallAnswered,
    CallEnded,
    CallInfo,
    CallStarted,
    Noted,
    RecordingReady,
    RegistrationChanged,
    TranscriptReady,
    TurnMeasured,
)
from callbridge.core.ports import LegInfo
from callbridge.observability.metrics import Metrics
from callbridge.observability.webhooks import WebhookConfig, WebhookSender, webhook_of
from callbridge.sip.registration import RegistrationStatus, RegState
from callbridge.store.service import StoreConfig, build_store
from callbridge.testing import FakeClock, FakeLeg, drive

from .receiver import WebhookReceiver

INFO = CallInfo("call-1", "sip", "inbound", "agent", "sip:alice@example.com", "echo",
                {"sip_call_id": "abc@host"})  # fmt: skip
SUMMARY = {"call_id": "call-1", "transport": "sip", "direction": "inbound", "local_user": "agent",
           "remote_uri": "sip:alice@example.com", "agent": "echo",
           "ids": {"sip_call_id": "abc@host"}}  # fmt: skip


def test_the_webhook_of_each_typed_event() -> None:
    ended = CallEnded(INFO, 9.0, "rtp_timeout", 12.5, {"rtp_in": 600, "lost": 3})
    assert webhook_of(CallStarted(INFO, 1.0)) == ("call.started", SUMMARY)
    assert webhook_of(CallAnswered(INFO, 1.0)) == ("call.answered", SUMMARY)
    assert webhook_of(ended) == (
        "call.ended",
        {**SUMMARY, "reason": "rtp_timeout", "duration": 12.5, "rtp_in": 600, "lost": 3},
    )
    assert webhook_of(TranscriptReady("call-1", "/d/t.json", 9.0)) == (
        "call.transcript", {"call_id": "call-1", "path": "/d/t.json"},
    )  # fmt: skip
    assert webhook_of(RecordingReady("call-1", "/d/r.wav", 12.48, 9.0)) == (
        "recording.ready", {"call_id": "call-1", "path": "/d/r.wav", "seconds": 12.48},
    )  # fmt: skip
    status = RegistrationStatus("trunk", RegState.REGISTERED, "sip:a@b", "sip:b:5060",
                                status=200, expires=3600)  # fmt: skip
    reg = RegistrationChanged("trunk", "registered", "sip:a@b", "sip:b:5060", "", 200, 3600, 0, 1.0)
    assert webhook_of(reg) == ("registration.changed", registration_summary(status))
    assert registration_summary(status) == {
        "account": "trunk", "state": "registered", "aor": "sip:a@b", "registrar": "sip:b:5060",
        "reason": "", "status": 200, "expires": 3600, "failures": 0,
    }  # fmt: skip
    for none in (
        TurnMeasured("call-1", 1.0, 1, "hi"),
        BargeIn("call-1", 1.0, 1, 0.5, 1, 1, ""),
        Noted("call.dtmf", {}),
    ):
        assert webhook_of(none) is None


async def test_a_call_reaches_metrics_store_and_webhooks(tmp_path: Path) -> None:
    clock = FakeClock()
    gateway = Bus(default_bus(), name="gateway")
    store = build_store(StoreConfig(tmp_path, fsync=False))  # on the process-wide bus
    calls = CallManager(Router({"echo": EchoAgent}, "echo"), clock, store=store, bus=gateway)
    metrics = Metrics(active_calls=lambda: len(calls.calls))
    metrics.install(gateway)
    heard: list[str] = []
    gateway.subscribe(None, lambda ev: heard.append(type(ev).__name__))
    other = Bus(default_bus(), name="other gateway")  # its calls are not ours
    ended: asyncio.Future[Call] = asyncio.get_running_loop().create_future()

    def on_end(call: Call) -> None:
        heard.append("on_end")
        ended.set_result(call)

    calls.on_end.append(on_end)
    info = LegInfo("sip", "inbound", "echo", "sip:alice@example.com", {"sip_call_id": "abc@host"})
    leg = FakeLeg(clock, info=info)
    async with WebhookReceiver() as rx:
        webhooks = WebhookSender(WebhookConfig(rx.url, "s3cret"))
        connect_observers(calls, None, webhooks)
        webhooks.start()
        try:
            call = calls.start_call(leg)

            async def talk() -> Call:
                while leg.ticks < 10:
                    await clock.sleep_until(clock.now() + 0.02)
                # the agents publish on the process-wide bus, naming the call
                default_bus().publish(TurnMeasured(call.id, 1.0, 1, "Hi.", voice_to_voice_ms=500))
                other.publish(CallEnded(INFO, 1.0, "other", 1.0))
                leg.end("remote_bye")
                return await ended

            await drive(clock, talk())
            await rx.wait_for(5)
            assert await webhooks.drain(5)
            await store.db.flush()
            rows = await store.db.events(call.id)
        finally:
            metrics.uninstall()
            await webhooks.aclose()
            await calls.shutdown(1.0)  # closes the store (and its subscription)

    # the bus: start, answer; the end and the files once saved, before on_end listeners
    # (the agents' events are on the process-wide bus, above the gateway's)
    assert heard == ["CallStarted", "CallAnswered", "CallEnded", "TranscriptReady",
                     "RecordingReady", "on_end"]  # fmt: skip
    # metrics
    text = metrics.render().decode()
    for line in (
        'callbridge_calls_started_total{direction="inbound",transport="sip"} 1.0',
        'callbridge_calls_ended_total{reason="remote_bye"} 1.0',
        'callbridge_turn_latency_seconds_count{stage="voice_to_voice"} 1.0',
    ):
        assert line in text, text
    assert 'reason="other"' not in text
    # the store's events table: the calls layer's Noted and the agent's typed event
    names = [r.name for r in rows]
    assert names[0] == "call.started" and names[-1] == "call.ended", names
    turn = next(r for r in rows if r.name == "agent.turn")
    assert turn.data == {"utterance": 1, "text": "Hi.", "voice_to_voice_ms": 500}
    # webhooks, in order, with the payloads of before
    docs = [d.json for d in rx.deliveries]
    assert [d["type"] for d in docs] == ["call.started", "call.answered", "call.ended",
                                         "call.transcript", "recording.ready"]  # fmt: skip
    summary = {**SUMMARY, "call_id": call.id, "local_user": "echo"}
    assert docs[0]["data"] == docs[1]["data"] == summary
    end = docs[2]["data"]
    assert end == {**summary, "reason": "remote_bye", "duration": end["duration"],
                   **leg.stats()}  # fmt: skip
    assert list(end)[:9] == [*summary, "reason", "duration"]
    assert docs[4]["data"]["path"] == str(tmp_path / "recordings" / f"{call.id}.wav")
