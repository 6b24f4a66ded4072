"""Which agent a call's user part reaches."""

from __future__ import annotations

import pytest

from callbridge.calls.routing import Router
from callbridge.core.ports import LegInfo, Rejection


def router() -> Router:
    agents = {name: object for name in ("voice", "echo", "pipecat")}
    return Router(
        agents,  # type: ignore[arg-type]
        "voice",
        aliases={"alice": "echo", "+15550100": ""},
    )


@pytest.mark.parametrize(
    ("user", "agent"),
    [
        ("agent", "voice"),
        ("", "voice"),
        ("Echo", "echo"),
        ("pipecat", "pipecat"),
        ("alice", "echo"),  # a provider account's username -> its agent
        ("ALICE", "echo"),
        ("+15550100", "voice"),  # an account without an agent -> the default
    ],
)
def test_user_part_picks_the_agent(user: str, agent: str) -> None:
    assert router().resolve(LegInfo("sip", "inbound", local_user=user)) == agent


def test_unknown_user_is_not_found() -> None:
    with pytest.raises(Rejection) as exc:
        router().resolve(LegInfo("sip", "inbound", local_user="bob"))
    assert exc.value.kind == Rejection.NOT_FOUND
