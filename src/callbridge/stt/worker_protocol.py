"""The wire between the gateway and its speech-recognition worker processes (sans-IO).

pocketsphinx's Python binding holds the GIL while it decodes (its `process_raw` has no
`nogil` section): run in the gateway's process, every 100 ms of caller speech stalled the
event loop, and with it every call's media tick, for 20-50 ms, and re-decoding a whole turn
stalled it for hundreds. So recognition runs in worker processes, which this protocol talks to
over their stdin and stdout: one request, then its reply, at a time.

Two ways to use a worker: a session per call (OPEN, START, FEED..., FINISH, CLOSE: a streaming
recognizer such as pocketsphinx keeps its decoder's state in the worker between requests), or
TRANSCRIBE, which carries a whole utterance and leaves nothing behind (Whisper: the gateway
buffers the turn's PCM, and any idle worker can decode it, so the pool is sized by concurrent
turns, not by calls).

Request: op (u8), session (u32), payload length (u32), payload.
Reply: status (u8: 0 ok, 1 error), text length (u32), text (UTF-8: a partial or final
transcript, "" for none, or the error's description).
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from callbridge.core import errors

REQUEST: Final = struct.Struct("!BII")
REPLY: Final = struct.Struct("!BI")
MAX_PAYLOAD: Final = 16 * 1024 * 1024  # 17 minutes of 8 kHz audio: far beyond any turn


class Op(enum.IntEnum):
    OPEN = 1  # a recognizer for a new session (a call)
    START = 2  # begin an utterance
    FEED = 3  # PCM16 8 kHz audio; replies with a changed partial transcript or ""
    FINISH = 4  # end the utterance; replies with its final transcript
    CLOSE = 5  # the session is over: its decoder goes back to the worker's pool
    TRANSCRIBE = 6  # a whole utterance's PCM16 8 kHz audio (no session); replies with its text


class ProtocolError(errors.ProtocolError, ValueError):
    """Bytes that are not this protocol (a worker or gateway of another version, or a bug)."""


def pack_request(op: Op, session: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return REQUEST.pack(op, session, len(payload)) + payload


def unpack_request_header(header: bytes) -> tuple[Op, int, int]:
    """(op, session, payload length) from REQUEST.size bytes."""
    op, session, length = REQUEST.unpack(header)
    try:
        kind = Op(op)
    except ValueError:
        raise ProtocolError(f"unknown op {op}") from None
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return kind, session, length


def pack_reply(ok: bool, text: str) -> bytes:
    data = text.encode("utf-8")
    return REPLY.pack(0 if ok else 1, len(data)) + data


def unpack_reply_header(header: bytes) -> tuple[bool, int]:
    """(ok, text length) from REPLY.size bytes."""
    status, length = REPLY.unpack(header)
    if status not in (0, 1) or length > MAX_PAYLOAD:
        raise ProtocolError(f"bad reply header (status {status}, length {length})")
    return status == 0, length
