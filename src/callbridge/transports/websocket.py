"""The little of a WebSocket a leg needs (Twilio Media Streams, Asterisk's chan_websocket):
the API shells adapt Starlette's socket to it, tests a fake."""

from __future__ import annotations

from typing import Protocol

from callbridge.core.errors import TransportError


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
