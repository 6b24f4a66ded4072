"""The recognition worker's loop, on in-memory pipes with a scripted recognizer."""

from __future__ import annotations

import io
from typing import ClassVar

from callbridge.stt.base import Recognizer, Transcript
from callbridge.stt.worker import serve
from callbridge.stt.worker_protocol import REPLY, Op, pack_request, unpack_reply_header


class Scripted:
    """Hears the number of bytes fed; its final transcript says how many."""

    closed: ClassVar[list[Scripted]] = []

    def __init__(self) -> None:
        self.heard = 0

    def start(self) -> None:
        self.heard = 0

    def feed(self, pcm8k: bytes) -> list[Transcript]:
        self.heard += len(pcm8k)
        return [Transcript(f"{self.heard} so far", final=False)] if self.heard >= 4 else []

    def finish(self) -> Transcript:
        if self.heard == 3:
            raise RuntimeError("three bytes are bad luck")
        return Transcript(f"{self.heard} bytes", final=True)

    def close(self) -> None:
        Scripted.closed.append(self)


def make() -> Recognizer:
    return Scripted()


def replies(data: bytes) -> list[tuple[bool, str]]:
    out, i = [], 0
    while i < len(data):
        ok, n = unpack_reply_header(data[i : i + REPLY.size])
        i += REPLY.size
        out.append((ok, data[i : i + n].decode()))
        i += n
    return out


def run(*requests: bytes) -> tuple[int, list[tuple[bool, str]]]:
    out = io.BytesIO()
    status = serve(io.BytesIO(b"".join(requests)), out, make)
    return status, replies(out.getvalue())


def test_sessions_decode_independently_and_close_their_recognizers() -> None:
    Scripted.closed.clear()
    status, got = run(
        pack_request(Op.OPEN, 1),
        pack_request(Op.OPEN, 2),
        pack_request(Op.START, 1),
        pack_request(Op.FEED, 1, b"ab"),
        pack_request(Op.FEED, 2, b"abcde"),
        pack_request(Op.FEED, 1, b"cd"),
        pack_request(Op.FINISH, 1),
        pack_request(Op.FINISH, 2),
        pack_request(Op.CLOSE, 1),
    )
    assert status == 0
    assert got == [
        (True, ""),
        (True, ""),
        (True, ""),
        (True, ""),  # no partial yet
        (True, "5 so far"),
        (True, "4 so far"),
        (True, "4 bytes"),
        (True, "5 bytes"),
        (True, ""),
    ]
    assert len(Scripted.closed) == 2  # session 1 by CLOSE, session 2 when the input ended


def test_a_failing_request_gets_an_error_reply_and_the_worker_goes_on() -> None:
    status, got = run(
        pack_request(Op.FEED, 9, b"ab"),  # never opened
        pack_request(Op.OPEN, 1),
        pack_request(Op.OPEN, 1),
        pack_request(Op.FEED, 1, b"abc"),
        pack_request(Op.FINISH, 1),
        pack_request(Op.FEED, 1, b"a"),
        pack_request(Op.FINISH, 1),
    )
    assert status == 0
    assert got[0] == (False, "KeyError: 'no session 9 (the worker may have restarted)'")
    assert got[1] == (True, "")
    assert got[2] == (False, "ValueError: session 1 is already open")
    assert got[4] == (False, "RuntimeError: three bytes are bad luck")
    assert got[6] == (True, "4 bytes")


def test_bytes_that_are_not_the_protocol_end_the_worker() -> None:
    status, got = run(pack_request(Op.OPEN, 1), b"\x09" + bytes(8))
    assert (status, got) == (2, [(True, "")])


def test_a_request_cut_short_ends_the_worker_quietly() -> None:
    status, got = run(pack_request(Op.OPEN, 1), pack_request(Op.FEED, 1, b"abcd")[:-2])
    assert (status, got) == (0, [(True, "")])


def test_a_whole_utterance_is_transcribed_without_a_session() -> None:
    out = io.BytesIO()
    status = serve(
        io.BytesIO(
            pack_request(Op.TRANSCRIBE, 0, b"abcdef")
            + pack_request(Op.TRANSCRIBE, 0, b"")
            + pack_request(Op.TRANSCRIBE, 0, b"boom")
        ),
        out,
        make,
        lambda pcm: (
            (_ for _ in ()).throw(ValueError("boom")) if pcm == b"boom" else f"<{len(pcm)}>"
        ),
    )
    assert status == 0
    assert replies(out.getvalue()) == [(True, "<6>"), (True, "<0>"), (False, "ValueError: boom")]


def test_without_a_transcriber_a_fresh_recognizer_decodes_the_utterance() -> None:
    Scripted.closed.clear()
    status, got = run(
        pack_request(Op.TRANSCRIBE, 0, b"abcde"), pack_request(Op.TRANSCRIBE, 0, b"abc")
    )
    assert status == 0
    assert got == [(True, "5 bytes"), (False, "RuntimeError: three bytes are bad luck")]
    assert len(Scripted.closed) == 2  # nothing stays open
