"""Asterisk's own media and control protocols as sans-IO cores (layer L2, beside sip/rtp/sdp).

- `audiosocket`: the AudioSocket TCP framing (app_audiosocket, chan_audiosocket).
- `chan_websocket`: chan_websocket's control messages (Asterisk 22.6+/23), plain-text or JSON.
- `agi`: FastAGI request environment, commands and replies.
- `ari`: typed ARI events and REST request tuples (no HTTP client here).

Every module was written from Asterisk's sources at commit
f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9 (github.com/asterisk/asterisk, 2026-08-06); each cites
the file and line it follows. Parsers are total and bounded: any input gives a value or the
module's own error (a `ProtocolError` and a `ValueError`). Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from callbridge.asterisk.errors import AsteriskProtocolError

ASTERISK_COMMIT = "f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9"

__all__ = ["ASTERISK_COMMIT", "AsteriskProtocolError"]
