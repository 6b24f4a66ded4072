import asyncio
import io
import json
import logging

from callbridge.observability.logging import call_context, event, setup_logging


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
