"""The gateway <-> recognition worker wire: golden bytes, round trips, rejects."""

from __future__ import annotations

import pytest

from callbridge.stt.worker_protocol import (
    MAX_PAYLOAD,
    REPLY,
    REQUEST,
    Op,
    ProtocolError,
    pack_reply,
    pack_request,
    unpack_reply_header,
    unpack_request_header,
)


def test_golden_request_and_reply_bytes() -> None:
    assert pack_request(Op.FEED, 7, b"\x01\x02") == bytes.fromhex("03 00000007 00000002 0102")
    assert pack_request(Op.OPEN, 0xFFFFFFFF) == bytes.fromhex("01 ffffffff 00000000")
    assert pack_reply(True, "hé") == bytes.fromhex("00 00000003") + "hé".encode()
    assert pack_reply(False, "") == bytes.fromhex("01 00000000")


@pytest.mark.parametrize("op", list(Op))
def test_request_round_trip(op: Op) -> None:
    data = pack_request(op, 42, b"x" * 320)
    assert unpack_request_header(data[: REQUEST.size]) == (op, 42, 320)
    assert data[REQUEST.size :] == b"x" * 320


@pytest.mark.parametrize(("ok", "text"), [(True, "what time is it"), (False, "KeyError: 3")])
def test_reply_round_trip(ok: bool, text: str) -> None:
    data = pack_reply(ok, text)
    assert unpack_reply_header(data[: REPLY.size]) == (ok, len(text.encode()))


def test_rejects_what_is_not_the_protocol() -> None:
    with pytest.raises(ProtocolError, match="unknown op 9"):
        unpack_request_header(bytes.fromhex("09 00000001 00000000"))
    with pytest.raises(ProtocolError, match="exceeds"):
        unpack_request_header(REQUEST.pack(Op.FEED, 1, MAX_PAYLOAD + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        pack_request(Op.FEED, 1, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ProtocolError, match="bad reply header"):
        unpack_reply_header(REPLY.pack(2, 0))
    with pytest.raises(ProtocolError, match="bad reply header"):
        unpack_reply_header(b"Hello")  # e.g. a stray print on the worker's stdout


def test_a_whole_utterance_request_is_op_6() -> None:
    assert pack_request(Op.TRANSCRIBE, 0, b"\x01\x02") == bytes.fromhex("06 00000000 00000002 0102")
    assert unpack_request_header(bytes.fromhex("06 00000000 00000002")) == (Op.TRANSCRIBE, 0, 2)
