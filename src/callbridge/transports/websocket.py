"""The little of a WebSocket a leg needs (Twilio Media Streams, Asterisk's chan_websocket):
the API shells adapt Starlette's socket to it, tests a fake. And what every per-call TCP
connection needs, asyncio being what it is: `free_closed_connections`."""

from __future__ import annotations

from asyncio import selector_events
from typing import Any, Protocol

from callbridge.core.errors import TransportError

__all__ = ["SocketClosed", "TextSocket", "free_closed_connections"]


def free_closed_connections() -> None:
    """asyncio's TCP transport keeps a bound method of itself (`_read_ready_cb`) once its
    connection is lost: a reference cycle per connection (a Media Streams or chan_websocket
    WebSocket, an AudioSocket, the HTTP requests of a browser call), left for a full garbage
    collection, a pause of every call. CPython drops it in close() from 3.12 on (gh-100348);
    this drops it for every such transport in the process however its connection ends
    (closed, aborted, lost). Idempotent; `build_gateway` installs it for the process."""
    cls: Any = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    lost = cls._call_connection_lost
    if getattr(lost, "frees_cycle", False):
        return

    def _call_connection_lost(self: Any, exc: BaseException | None) -> None:
        try:
            lost(self, exc)
        finally:
            self._read_ready_cb = None  # the reader was removed before: nothing calls it

    _call_connection_lost.frees_cycle = True  # type: ignore[attr-defined]
    cls._call_connection_lost = _call_connection_lost


class SocketClosed(TransportError):
    """The WebSocket is closed (by either side); its close code and reason when known."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"closed ({code}) {reason}".strip() if code is not None else "closed")
        self.code = code
        self.reason = reason


class TextSocket(Protocol):
    """The little of a WebSocket a leg needs: text frames both ways, and close."""

    async def send_text(self, text: str) -> None:
        """Raises SocketClosed once the socket is closed."""
        ...

    async def receive_text(self) -> str | bytes:
        """The next frame (bytes if it was a binary one, which the protocol does not allow);
        raises SocketClosed when the socket closes."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Idempotent."""
        ...
