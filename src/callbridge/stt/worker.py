"""The speech-recognition worker's loop: requests from the gateway in, replies out
(see worker_protocol for why recognition runs in its own process)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import BinaryIO

from callbridge.core.log import event
from callbridge.stt.base import Recognizer
from callbridge.stt.worker_protocol import (
    REQUEST,
    Op,
    ProtocolError,
    pack_reply,
    unpack_request_header,
)

log = logging.getLogger("callbridge.stt.worker")


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    """n bytes, or None at end of input (the gateway closed the pipe: time to go)."""
    chunks, left = [], n
    while left:
        data = stream.read(left)
        if not data:
            return None
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def serve(
    inp: BinaryIO,
    out: BinaryIO,
    make: Callable[[], Recognizer],
    transcribe: Callable[[bytes], str] | None = None,
) -> int:
    """Answer requests until the input ends; 0 then. A request that fails gets an error reply
    and the worker goes on; bytes that are not the protocol end it (exit status 2).
    `transcribe` decodes a whole utterance (Op.TRANSCRIBE); without it, a recognizer from
    `make` does, for that request only."""
    sessions: dict[int, Recognizer] = {}
    whole = transcribe if transcribe is not None else (lambda pcm: _once(make, pcm))
    try:
        while True:
            header = _read_exact(inp, REQUEST.size)
            if header is None:
                return 0
            op, session, length = unpack_request_header(header)
            payload = _read_exact(inp, length) if length else b""
            if payload is None:
                return 0
            try:
                if op is Op.TRANSCRIBE:
                    text = whole(payload)
                else:
                    text = _handle(sessions, make, op, session, payload)
                reply = pack_reply(True, text)
            except Exception as exc:  # the gateway decides what a failure means for the call
                reply = pack_reply(False, f"{type(exc).__name__}: {exc}")
            out.write(reply)
            out.flush()
    except ProtocolError as exc:
        event(log, "stt.worker_protocol_error", logging.ERROR, error=str(exc))
        return 2
    finally:
        for recognizer in sessions.values():
            recognizer.close()


def _once(make: Callable[[], Recognizer], pcm: bytes) -> str:
    recognizer = make()
    try:
        recognizer.start()
        recognizer.feed(pcm)
        return recognizer.finish().text
    finally:
        recognizer.close()


def _handle(
    sessions: dict[int, Recognizer],
    make: Callable[[], Recognizer],
    op: Op,
    session: int,
    payload: bytes,
) -> str:
    if op is Op.OPEN:
        if session in sessions:
            raise ValueError(f"session {session} is already open")
        sessions[session] = make()
        return ""
    recognizer = sessions.get(session)
    if recognizer is None:
        raise KeyError(f"no session {session} (the worker may have restarted)")
    if op is Op.START:
        recognizer.start()
        return ""
    if op is Op.FEED:
        partials = recognizer.feed(payload)
        return partials[-1].text if partials else ""
    if op is Op.FINISH:
        return recognizer.finish().text
    del sessions[session]
    recognizer.close()
    return ""
