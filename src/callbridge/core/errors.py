"""Errors shared across layers."""

from __future__ import annotations


class CallbridgeError(Exception):
    """Base of callbridge's own errors."""


class ConfigError(CallbridgeError):
    """A setting is invalid. The message names the field and what is allowed."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class CallEnded(CallbridgeError):
    """Raised to a task that uses a leg after the call ended."""
