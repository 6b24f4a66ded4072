"""Seeds and one total-and-bounded check per Asterisk parser, shared by test_fuzz.py (hypothesis)
and bench/fuzz_parsers.py (the long run). A check returns True (accepted) or False (the
parser's own error); a property failing on accepted input raises AssertionError explicitly."""

from __future__ import annotations

import contextlib
from pathlib import Path

from callbridge.asterisk import agi, ari, audiosocket, chan_websocket
from callbridge.asterisk.errors import AgiError, AriError, AudioSocketError, ChanWebSocketError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "asterisk"


def _files(pattern: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(FIXTURES.glob(pattern))]


def audiosocket_seeds() -> list[bytes]:
    return _files("audiosocket-*.bin")


def chan_websocket_seeds() -> list[bytes]:
    return _files("chanws-*")


def agi_seeds() -> list[bytes]:
    replies = (
        b"200 result=1\n200 result=0 (timeout) endpos=1234\n520-Invalid\nusage\n520 End\nHANGUP\n"
    )
    return [*_files("agi-*.txt"), replies]


def ari_seeds() -> list[bytes]:
    return _files("ari-*.json")


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def check_audiosocket(data: bytes) -> bool:
    """Both directions' decoders, fed whole and in pieces: same frames, bounded buffer."""
    accepted = False
    for accept in (audiosocket.FROM_ASTERISK, audiosocket.TO_ASTERISK):
        whole = audiosocket.AudioSocketDecoder(accept)
        try:
            frames = whole.feed(data)
        except AudioSocketError:
            continue
        accepted = True
        _require(whole.buffered <= 3 + audiosocket.MAX_PAYLOAD_BYTES, "buffer unbounded")
        pieces = audiosocket.AudioSocketDecoder(accept)
        step = 7 if len(data) <= 4096 else 1021  # small pieces on small inputs keep it fast
        again = [f for i in range(0, len(data), step) for f in pieces.feed(data[i : i + step])]
        _require(again == frames, "chunking changed the frames")
        for frame in frames:
            if isinstance(frame, audiosocket.Audio | audiosocket.Dtmf | audiosocket.UuidFrame):
                redo = audiosocket.AudioSocketDecoder(accept).feed(audiosocket.encode(frame))
                _require(redo == [frame], "round trip failed")
    return accepted


def check_chan_websocket(data: bytes) -> bool:
    accepted = False
    for fmt in ("plain-text", "json"):
        try:
            event = chan_websocket.parse_event(data, fmt)
        except ChanWebSocketError:
            pass
        else:
            accepted = True
            if not isinstance(event, chan_websocket.UnknownEvent):
                text = chan_websocket.format_event(event, fmt)
                again = chan_websocket.parse_event(text, fmt)
                _require(again == event, f"event round trip failed: {event!r}")
        with contextlib.suppress(ChanWebSocketError):
            chan_websocket.parse_command(data, fmt)
    return accepted


def check_agi(data: bytes) -> bool:
    parser = agi.AgiRequestParser()
    accepted = False
    try:
        request = parser.feed(data)
        if request is not None:
            _ = (request.route, request.params, request.args, request.uniqueid)
        accepted = True
    except AgiError:
        pass
    try:
        agi.AgiReplyReader().feed(data)
        accepted = True
    except AgiError:
        pass
    agi.split_command(data.decode("utf-8", "replace"))
    return accepted


def check_ari(data: bytes) -> bool:
    try:
        event = ari.parse_event(data)
    except AriError:
        pass
    else:
        _require(isinstance(event, ari.Event), "not an event")
        return True
    try:
        ari.unicast_rtp_address(ari.parse_channel(data))
    except AriError:
        return False
    return True
