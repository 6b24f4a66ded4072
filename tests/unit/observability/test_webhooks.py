"""Webhooks: the signature and its verify helper, delivery to a real HTTP receiver on
loopback, retries with doubling backoff on failure, giving up, and the bounded queue."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.observability.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookConfig,
    WebhookSender,
    sign,
    verify,
)

from .receiver import WebhookReceiver

SECRET = "whsec-test"
NOW = 1_700_000_000.0


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # Golden: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec-test
    golden = "v1=fed7a1a6c799a6367d73724d76bc70c16678908a32a879cd1ded6565ac05cece"
    assert sign(SECRET, "1700000000", b'{"a":1}') == golden
    assert sign(SECRET, "1700000000", '{"a":1}') == golden  # str bodies are UTF-8


@given(st.binary(max_size=200), st.integers(0, 2**33))
def test_verify_round_trip(body: bytes, ts: int) -> None:
    signature = sign(SECRET, str(ts), body)
    assert verify(SECRET, str(ts), body, signature, now=ts)
    assert not verify("other", str(ts), body, signature, now=ts)
    assert not verify(SECRET, str(ts), body + b"x", signature, now=ts)
    assert not verify(SECRET, str(ts + 1), body, signature, now=ts)


def test_verify_tolerance_and_rotation() -> None:
    ts = str(int(NOW))
    good = sign(SECRET, ts, b"{}")
    assert verify(SECRET, ts, b"{}", good, now=NOW + 300)
    assert not verify(SECRET, ts, b"{}", good, now=NOW + 301)  # a replay
    assert not verify(SECRET, ts, b"{}", good, now=NOW - 301)
    assert verify(SECRET, ts, b"{}", good, tolerance=3600, now=NOW + 301)
    assert verify(SECRET, ts, b"{}", f"v1=00, {good}", now=NOW)  # rotation: several values
    assert not verify(SECRET, "soon", b"{}", good, now=NOW)


class Sleeps:
    """Records the backoff instead of waiting it (tests do not sleep)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_delivers_signed_json_and_retries_with_doubling_backoff() -> None:
    sleeps = Sleeps()
    async with WebhookReceiver([500, 503]) as rx:
        sender = WebhookSender(
            WebhookConfig(rx.url, SECRET, backoff=0.5, tries=5, timeout=2), sleep=sleeps
        )
        sender.start()
        ev = sender.emit("call.ended", {"call_id": "call-1", "reason": "rtp_timeout"})
        assert ev is not None
        got = await rx.wait_for(3)
        assert await sender.drain(5)
        await sender.aclose()
    assert sleeps.delays == [0.5, 1.0]
    assert (sender.delivered, sender.failed) == (1, 0)
    last = got[-1]
    assert last.path == "/hooks/callbridge"
    assert last.headers["content-type"] == "application/json"
    ts = last.headers[TIMESTAMP_HEADER.lower()]
    assert verify(SECRET, ts, last.body, last.headers[SIGNATURE_HEADER.lower()])
    doc = json.loads(last.body)
    assert doc["type"] == "call.ended" and doc["id"] == ev.id
    assert doc["data"] == {"call_id": "call-1", "reason": "rtp_timeout"}
    assert {d.body for d in got} == {last.body}  # every try carries the same event


async def test_gives_up_after_the_tries_and_goes_on_with_the_next_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeps = Sleeps()
    async with WebhookReceiver([500, 500, 500]) as rx:
        sender = WebhookSender(WebhookConfig(rx.url, SECRET, tries=3, backoff=0.1), sleep=sleeps)
        sender.start()
        sender.emit("call.started", {"call_id": "a"})
        sender.emit("call.ended", {"call_id": "a"})
        got = await rx.wait_for(4)
        assert await sender.drain(5)
        await sender.aclose()
    assert [d.json["type"] for d in got] == ["call.started"] * 3 + ["call.ended"]
    assert sleeps.delays == [0.1, 0.2]
    assert (sender.delivered, sender.failed) == (1, 1)
    assert any(r.getMessage() == "webhook.failed" for r in caplog.records)
    assert SECRET not in caplog.text


async def test_an_unreachable_receiver_is_a_failure_not_an_exception() -> None:
    async with WebhookReceiver() as rx:
        url = rx.url
    sender = WebhookSender(WebhookConfig(url, SECRET, tries=2, timeout=1), sleep=Sleeps())
    sender.start()
    sender.emit("call.started", {})
    assert await sender.drain(5)
    await sender.aclose()
    assert (sender.delivered, sender.failed) == (0, 1)


async def test_the_queue_is_bounded_and_emit_never_blocks() -> None:
    sender = WebhookSender(WebhookConfig("http://127.0.0.1:9/x", SECRET, queue_size=2))
    # Not started: nothing drains the queue.
    assert sender.emit("call.started", {}) is not None
    assert sender.emit("call.answered", {}) is not None
    assert sender.emit("call.ended", {}) is None
    assert (sender.pending, sender.dropped) == (2, 1)
    await sender.aclose()


def test_off_without_a_url() -> None:
    sender = WebhookSender(WebhookConfig("", SECRET))
    assert not sender.enabled
    assert sender.emit("call.started", {}) is None
