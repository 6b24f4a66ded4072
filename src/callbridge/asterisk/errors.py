"""The Asterisk protocols' error classes: one per protocol, all under AsteriskProtocolError."""

from __future__ import annotations

from callbridge.core.errors import ProtocolError


class AsteriskProtocolError(ProtocolError, ValueError):
    """Bytes or text from an Asterisk peer that are not the protocol."""


class AudioSocketError(AsteriskProtocolError):
    """An AudioSocket stream that is not AudioSocket framing (the stream is then unusable)."""


class ChanWebSocketError(AsteriskProtocolError):
    """A chan_websocket control message that cannot be parsed."""


class AgiError(AsteriskProtocolError):
    """A FastAGI environment block or reply line that cannot be parsed."""


class AriError(AsteriskProtocolError):
    """An ARI event or response body that is not what the ARI swagger documents."""
