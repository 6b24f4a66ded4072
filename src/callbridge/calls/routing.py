"""Which agent answers a call: the user part of the address picks it.

The names are the built-in agents (`voice`, `echo`) and the configured `[agents.NAME]` routes
(e.g. an external agent over the agent socket); `agent` (or no user part) is the default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from callbridge.core.ports import Agent, LegInfo, Rejection

AgentFactory = Callable[[], Agent]


@dataclass(frozen=True, slots=True)
class Router:
    """`agent` is an alias of the configured default; other names must be registered agents
    (matched without case: SIP user parts are case-sensitive, but phones and people are not)."""

    agents: Mapping[str, AgentFactory]
    default: str
    # other user parts that reach an agent: a provider account's username -> its agent
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default not in self.agents:
            raise ValueError(f"default agent {self.default!r} is not one of {sorted(self.agents)}")

    def resolve(self, info: LegInfo) -> str:
        user = info.local_user.lower()
        if user in ("agent", ""):
            return self.default
        if user in self.agents:
            return user
        for key in (info.local_user, user):
            if key in self.aliases:
                return self.aliases[key] or self.default
        raise Rejection(Rejection.NOT_FOUND, f"no agent named {info.local_user!r}")
