"""The event bus: dispatch by type (and the catch-all) in subscription order, a failing
subscriber isolated and logged once per kind of failure, unsubscribe (also mid-dispatch), a
gateway bus under the process-wide one; `event()` always publishes a Noted; the typed events'
log-line projection (golden)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.core.bus import Bus, default_bus
from callbridge.core.call_events import (
    BargeIn,
    CallEnded,
    CallInfo,
    Noted,
    RegistrationChanged,
    TurnMeasured,
    as_noted,
)
from callbridge.core.log import call_context, event, event_fields


@dataclass(frozen=True, slots=True)
class Base:
    n: int


@dataclass(frozen=True, slots=True)
class Child(Base):
    pass


@dataclass(frozen=True, slots=True)
class Other:
    n: int


def recorder(seen: list[tuple[str, object]], tag: str) -> Callable[[object], None]:
    return lambda ev: seen.append((tag, ev))


def test_dispatch_by_type_and_catch_all_in_subscription_order() -> None:
    bus = Bus()
    seen: list[tuple[str, object]] = []
    bus.subscribe(None, recorder(seen, "all-1"))
    bus.subscribe(Base, recorder(seen, "base"))
    bus.subscribe(Child, recorder(seen, "child"))
    bus.subscribe(Other, recorder(seen, "other"))
    bus.subscribe(None, recorder(seen, "all-2"))
    bus.publish(Child(1))
    bus.publish(Base(2))
    bus.publish(Other(3))
    bus.publish("anything")
    assert seen == [
        ("all-1", Child(1)), ("base", Child(1)), ("child", Child(1)), ("all-2", Child(1)),
        ("all-1", Base(2)), ("base", Base(2)), ("all-2", Base(2)),
        ("all-1", Other(3)), ("other", Other(3)), ("all-2", Other(3)),
        ("all-1", "anything"), ("all-2", "anything"),
    ]  # fmt: skip


def test_a_failing_subscriber_breaks_nobody_and_is_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus(name="t")
    seen: list[int] = []
    failures = iter([ValueError("a"), ValueError("b"), KeyError("c")])

    def bad(ev: Base) -> None:
        raise next(failures)

    bus.subscribe(Base, lambda ev: seen.append(ev.n))
    bus.subscribe(Base, bad)
    bus.subscribe(Base, lambda ev: seen.append(-ev.n))
    with caplog.at_level(logging.ERROR, logger="callbridge.bus"):
        for n in (1, 2, 3):
            bus.publish(Base(n))  # never raises
    assert seen == [1, -1, 2, -2, 3, -3]
    assert bus.failures == 3
    logged = [r for r in caplog.records if r.name == "callbridge.bus"]
    assert [r.exc_info[1].args for r in logged if r.exc_info and r.exc_info[1]] == [("a",), ("c",)]


def test_unsubscribe_is_idempotent_and_takes_effect_mid_dispatch() -> None:
    bus = Bus()
    seen: list[str] = []
    stop_b: list[Callable[[], None]] = []

    def a(ev: object) -> None:
        seen.append("a")
        stop_b[0]()  # b is after a in this very dispatch: it must not run
        bus.subscribe(None, lambda ev: seen.append("late"))  # joins from the next event

    stop_a = bus.subscribe(None, a)
    stop_b.append(bus.subscribe(None, lambda ev: seen.append("b")))
    bus.publish(1)
    assert seen == ["a"]
    stop_a()
    stop_a()
    stop_b[0]()
    bus.publish(2)
    assert seen == ["a", "late"]
    assert bus.subscribers == 1


def test_a_gateway_bus_forwards_to_the_process_bus_not_back() -> None:
    process = Bus(name="process")
    gw_a, gw_b = Bus(process, name="a"), Bus(process, name="b")
    seen: list[tuple[str, object]] = []
    process.subscribe(None, recorder(seen, "process"))
    gw_a.subscribe(None, recorder(seen, "a"))
    gw_b.subscribe(None, recorder(seen, "b"))
    gw_a.publish(1)
    process.publish(2)
    assert seen == [("a", 1), ("process", 1), ("process", 2)]
    assert gw_a.root is process and process.root is process
    assert default_bus().root is default_bus()


def _append(heard: list[int], key: int) -> Callable[[object], None]:
    return lambda ev: heard.append(key)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=40))
def test_publish_reaches_exactly_the_live_subscribers_in_order(
    ops: list[tuple[bool, int]],
) -> None:
    """A random run of subscribes and unsubscribes: each event reaches the subscriptions
    alive at that moment, in the order they were made."""
    bus = Bus()
    live: list[int] = []
    stops: dict[int, Callable[[], None]] = {}
    heard: list[int] = []
    made = 0
    for subscribe, pick in ops:
        if subscribe or not live:
            key = made
            made += 1
            stops[key] = bus.subscribe(None, _append(heard, key))
            live.append(key)
        else:
            key = live.pop(pick % len(live))
            stops[key]()
        heard.clear()
        bus.publish(object())
        assert heard == live


def test_event_always_publishes_a_noted_whatever_the_level() -> None:
    seen: list[Noted] = []
    logger = logging.getLogger("callbridge.test.bus")
    logger.setLevel(logging.ERROR)  # nothing below ERROR is logged...
    stop = default_bus().subscribe(Noted, seen.append)
    try:
        with call_context("call-1"):
            event(logger, "call.dtmf", digit="5")
        event(logger, "agent.barge_in", call_id="call-2", utterance=1)  # named: outside a call
        event_fields(logger, "call.ended", {"reason": "bye"}, logging.DEBUG)
        event(logger, "no.call")
    finally:
        stop()
        logger.setLevel(logging.NOTSET)
    assert seen == [  # ...and everything is published
        Noted("call.dtmf", {"digit": "5"}, "call-1", "callbridge.test.bus", logging.INFO),
        Noted("agent.barge_in", {"call_id": "call-2", "utterance": 1}, "call-2",
              "callbridge.test.bus"),
        Noted("call.ended", {"reason": "bye"}, None, "callbridge.test.bus", logging.DEBUG),
        Noted("no.call", {}, None, "callbridge.test.bus"),
    ]  # fmt: skip


def test_the_typed_events_log_lines_keep_the_old_names_and_fields() -> None:
    turn = TurnMeasured("call-1", 1.5, 2, "Hello.", voice_to_voice_ms=640, stt_final_ms=120)
    noted = as_noted(turn)
    assert noted == Noted(
        "agent.turn",
        {"utterance": 2, "text": "Hello.", "voice_to_voice_ms": 640, "stt_final_ms": 120},
        "call-1",
        "callbridge.agents.voice",
        at=1.5,
    )
    assert list(noted.fields) == ["utterance", "text", "voice_to_voice_ms", "stt_final_ms"]
    barge = BargeIn(None, 2.0, 3, 12.345, 180, 90, "Sorry, I")
    fields = {"call_id": None, "utterance": 3, "onset": 12.345, "decided_after_ms": 180,
              "silenced_after_ms": 90, "heard": "Sorry, I"}  # fmt: skip
    assert as_noted(barge) == Noted(
        "agent.barge_in", fields, None, "callbridge.agents.conversation", at=2.0
    )
    info = CallInfo("call-1", "sip", "inbound", "agent", "sip:a@b", "echo", {"sip_call_id": "x"})
    for silent in (
        CallEnded(info, 3.0, "bye", 1.0),
        RegistrationChanged("trunk", "registered", "sip:a@b", "sip:b", "", 200, 3600, 0, 1.0),
        "not an event",
    ):
        assert as_noted(silent) is None
    plain = Noted("call.dtmf", {"digit": "1"})
    assert as_noted(plain) is plain
