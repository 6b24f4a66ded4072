"""The one clock. All time is monotonic seconds from a Clock; never wall time in the media path.

This module is sans-IO: implementations that need the event loop live in `asyncio_clock.py`.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once now() >= deadline; yields to the event loop once even if already past."""
        ...
