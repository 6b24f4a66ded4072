import asyncio
import io
import json
import logging

import pytest

from callbridge.observability.logging import TextFormatter, call_context, event, setup_logging


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
    record.fields = {"ms": 5}  # type: ignore[attr-defined]
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


def test_log_level_warning_changes_what_is_printed_not_what_metrics_see() -> None:
    """Issue 11: /metrics (and the stored events) are fed by INFO events; turning the log
    level down to WARNING must not silence them."""
    from callbridge.observability.metrics import Metrics

    buf = io.StringIO()
    setup_logging("json", "WARNING", buf)
    metrics = Metrics()
    metrics.install()
    try:
        log = logging.getLogger("callbridge.agents.voice")
        event(log, "agent.turn", voice_to_voice_ms=480, stt_final_ms=60)
        event(log, "agent.barge_in", decided_after_ms=150, silenced_after_ms=80)
        event(log, "call.odd", logging.WARNING, why="printed")
    finally:
        metrics.uninstall()
        setup_logging("json", "INFO", io.StringIO())
    assert [d["msg"] for d in _lines(buf)] == ["call.odd"]  # INFO not printed
    text = metrics.render().decode()
    assert 'callbridge_turn_latency_seconds_count{stage="voice_to_voice"} 1.0' in text, text
    assert "callbridge_barge_in_decision_seconds_count 1.0" in text, text
