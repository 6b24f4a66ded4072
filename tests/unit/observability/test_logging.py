import asyncio
import io
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from callbridge.core.bus import Bus, default_bus
from callbridge.core.call_events import BargeIn, CallEnded, CallInfo, CallStarted, TurnMeasured
from callbridge.core.log import event_fields
from callbridge.core.ports import LegInfo
from callbridge.observability.logging import TextFormatter, call_context, event, setup_logging
from callbridge.observability.metrics import Metrics
from callbridge.store.service import StoreConfig, build_store


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


async def test_call_id_follows_tasks_created_in_the_call_context() -> None:
    buf = io.StringIO()
    setup_logging("json", "INFO", buf)
    log = logging.getLogger("t")

    async def inner() -> None:
        event(log, "inner.event", n=1)

    with call_context("call-7"):
        task = asyncio.get_running_loop().create_task(inner())
    event(log, "outside")
    await task
    lines = {d["msg"]: d for d in _lines(buf)}
    assert lines["inner.event"]["call_id"] == "call-7"
    assert lines["inner.event"]["n"] == 1
    assert "call_id" not in lines["outside"]


def test_text_format_carries_call_id_and_fields() -> None:
    buf = io.StringIO()
    setup_logging("text", "INFO", buf)
    with call_context("call-9"):
        event(logging.getLogger("t"), "call.dtmf", digit="5")
    out = buf.getvalue()
    assert "[call-9]" in out
    assert "digit=5" in out


def test_text_lines_are_coloured_only_for_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    record = logging.LogRecord("callbridge.x", logging.WARNING, __file__, 1, "sip.slow", None, None)
    record.fields = {"ms": 5}
    plain = TextFormatter().format(record)
    assert "\033[" not in plain and plain.endswith("WARNING callbridge.x sip.slow ms=5")
    tinted = TextFormatter(colour=True).format(record)
    assert "\033[33mWARNING\033[0m" in tinted and "\033[1msip.slow\033[0m" in tinted

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for no_color, expect in (("", True), ("1", False)):
        monkeypatch.setenv("NO_COLOR", no_color)
        setup_logging("text", stream=Tty())
        (handler,) = logging.getLogger().handlers
        formatter = handler.formatter
        assert isinstance(formatter, TextFormatter) and formatter.colour is expect
    setup_logging("text", stream=io.StringIO())
    assert logging.getLogger().handlers[0].formatter.colour is False  # type: ignore[union-attr]


async def test_log_level_warning_changes_what_is_printed_not_what_metrics_and_store_see(
    tmp_path: Path,
) -> None:
    """Issue 11: /metrics and the stored events are fed by the bus, not by logging; at
    log.level = WARNING only the printing changes."""
    buf = io.StringIO()
    setup_logging("json", "WARNING", buf)
    gateway = Bus(default_bus(), name="gateway")
    metrics = Metrics()
    metrics.install(gateway)
    store = build_store(StoreConfig(tmp_path, fsync=False, recording=False, transcripts=False))
    info = LegInfo("sip", "inbound", "agent", "sip:alice@example.com")
    session = store.begin(call_id="call-w", info=info, agent="voice", t0=0.0)
    try:
        with call_context("call-w"):
            event(logging.getLogger("callbridge.calls"), "call.dtmf", digit="5")
            # what the agents publish (they log nothing themselves any more)
            default_bus().publish(TurnMeasured("call-w", 1.0, 1, "Hi.", voice_to_voice_ms=480))
        default_bus().publish(BargeIn("call-w", 2.0, 1, 0.5, 150, 80, "Hi"))
        summary = CallInfo("call-w", "sip", "inbound", "agent", "sip:alice@example.com", "voice")
        gateway.publish(CallStarted(summary, 0.5))
        with call_context("call-w"):
            event(logging.getLogger("callbridge.calls"), "call.odd", logging.WARNING, why="x")
        event(logging.getLogger("callbridge.calls"), "gateway.odd", logging.WARNING)  # no call
        gateway.publish(CallEnded(summary, 3.0, "remote_bye", 2.5, {"lost": 2}))
        await session.finish("remote_bye", 3.0)
        await store.db.flush()
        stored = [(e.name, e.data) for e in await store.db.events("call-w")]
    finally:
        metrics.uninstall()
        await store.aclose()
        setup_logging("json", "INFO", io.StringIO())
    assert [d["msg"] for d in _lines(buf)] == ["call.odd", "gateway.odd"]  # INFO not printed
    assert stored == [
        ("call.dtmf", {"digit": "5"}),
        ("agent.turn", {"utterance": 1, "text": "Hi.", "voice_to_voice_ms": 480}),
        ("agent.barge_in", {"utterance": 1, "onset": 0.5, "decided_after_ms": 150,
                            "silenced_after_ms": 80, "heard": "Hi"}),
        ("call.odd", {"why": "x"}),
    ]  # fmt: skip
    text = metrics.render().decode()
    for line in (
        'callbridge_turn_latency_seconds_count{stage="voice_to_voice"} 1.0',
        "callbridge_barge_in_decision_seconds_count 1.0",
        'callbridge_calls_started_total{direction="inbound",transport="sip"} 1.0',
        'callbridge_calls_ended_total{reason="remote_bye"} 1.0',
        "callbridge_rtp_lost_packets_total 2.0",
    ):
        assert line in text, text


def _print_both_ways(fmt: str, old: Callable[[], None], new: Callable[[], None]) -> list[str]:
    """The lines printed by the old emit (event_fields on the agent's logger) and by the
    typed event's printer, timestamps removed."""
    lines = []
    for emit in (old, new):
        buf = io.StringIO()
        setup_logging(fmt, "INFO", buf)
        emit()
        lines.append(re.sub(r'^\d\d:\d\d:\d\d\.\d{3} |"ts":[\d.]+,', "", buf.getvalue()))
    setup_logging("json", "INFO", io.StringIO())
    return lines


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_typed_agent_events_print_the_same_lines_as_before_the_bus(fmt: str) -> None:
    turn = TurnMeasured("call-3", 1.0, 2, "It is noon.", voice_to_voice_ms=640, stt_final_ms=120,
                        brain_first_token_ms=300, tts_first_audio_ms=150)  # fmt: skip
    voice = logging.getLogger("callbridge.agents.voice")

    def old_turn() -> None:
        with call_context("call-3"):
            event_fields(voice, "agent.turn", turn.fields())

    def new_turn() -> None:
        with call_context("call-3"):
            default_bus().publish(turn)

    old, new = _print_both_ways(fmt, old_turn, new_turn)
    assert old == new and "agent.turn" in new and "call-3" in new
    assert "It is noon." in new and "640" in new

    # barge-in: published from the VAD pool, outside the call's context, naming its call
    barge = BargeIn("call-4", 2.0, 1, 3.25, 180, 90, "Good")
    conversation = logging.getLogger("callbridge.agents.conversation")
    old, new = _print_both_ways(
        fmt,
        lambda: event_fields(conversation, "agent.barge_in", barge.fields()),
        lambda: default_bus().publish(barge),
    )
    assert old == new and "agent.barge_in" in new and "call-4" in new
