"""How a failed outbound call is reported: the result a person would name."""

from __future__ import annotations

import pytest

from callbridge.transports.sip.transport import CallFailed


@pytest.mark.parametrize(
    ("status", "reason", "result"),
    [
        (486, "Busy Here", "busy"),
        (600, "Busy Everywhere", "busy"),
        (408, "no answer", "no_answer"),
        (480, "Temporarily Unavailable", "no_answer"),
        (487, "Request Terminated", "no_answer"),
        (404, "Not Found", "rejected"),
        (403, "Forbidden", "rejected"),
        (603, "Decline", "rejected"),
        (488, "Not Acceptable Here", "rejected"),
        (None, "cannot resolve sip.example.invalid: ...", "unreachable"),
        (None, "bad target URI 'x'", "unreachable"),
        (503, "Service Unavailable", "failed"),
        (None, "authentication rejected", "failed"),
    ],
)
def test_result_names(status: int | None, reason: str, result: str) -> None:
    assert CallFailed(status, reason).result == result
