"""Media Streams messages: Twilio's documented examples parse to the right values and dump back
to exactly the documented JSON (same keys, same order, strings where Twilio uses strings)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.twilio_streams.messages import (
    Clear,
    Connected,
    Dtmf,
    Mark,
    MarkOut,
    Media,
    MediaFormat,
    MediaOut,
    Message,
    MessageError,
    Start,
    Stop,
    UnknownEvent,
    dumps,
    parse,
    parse_from_app,
    parse_from_twilio,
    to_json,
)

GOLDEN = Path(__file__).parent / "golden"
SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
ACCOUNT = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
CALL = "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
PAYLOAD = bytes(range(0x7F, 0xFF)) + bytes(range(0x20))


def golden(name: str) -> str:
    return (GOLDEN / f"{name}.json").read_text()


def keys_in_order(obj: Any) -> Any:
    """The object's structure with key order kept (dict equality ignores order)."""
    if isinstance(obj, dict):
        return [(k, keys_in_order(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [keys_in_order(v) for v in obj]
    return obj


EXPECTED: dict[str, Message] = {
    "from_twilio_connected": Connected("Call", "1.0.0"),
    "from_twilio_start": Start(
        sequence_number=1,
        stream_sid=SID,
        account_sid=ACCOUNT,
        call_sid=CALL,
        tracks=("inbound",),
        media_format=MediaFormat("audio/x-mulaw", 8000, 1),
        custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
    ),
    "from_twilio_media_outbound_track": Media(3, SID, "outbound", 1, 5, PAYLOAD),
    "from_twilio_media_inbound_track": Media(4, SID, "inbound", 2, 5, PAYLOAD),
    "from_twilio_stop": Stop(5, SID, ACCOUNT, CALL),
    "from_twilio_dtmf": Dtmf(5, SID, "1", "inbound_track"),
    "from_twilio_mark": Mark(4, SID, "my label"),
    "to_twilio_media": MediaOut(SID, PAYLOAD),
    "to_twilio_mark": MarkOut(SID, "my label"),
    "to_twilio_clear": Clear(SID),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_documented_examples_parse(name: str) -> None:
    sender = "twilio" if name.startswith("from_twilio") else "app"
    assert parse(golden(name), sender=sender) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dumps_is_exactly_the_documented_shape(name: str) -> None:
    documented = json.loads(golden(name))
    dumped = json.loads(dumps(EXPECTED[name]))
    assert dumped == documented
    assert keys_in_order(dumped) == keys_in_order(documented)


def test_counters_are_strings_and_format_numbers_are_numbers() -> None:
    start = json.loads(dumps(EXPECTED["from_twilio_start"]))
    assert start["sequenceNumber"] == "1"
    assert start["start"]["mediaFormat"]["sampleRate"] == 8000
    media = json.loads(dumps(EXPECTED["from_twilio_media_inbound_track"]))["media"]
    assert (media["chunk"], media["timestamp"]) == ("2", "5")


def test_every_message_but_connected_carries_the_stream_sid() -> None:
    for name, msg in EXPECTED.items():
        obj = to_json(msg)
        assert ("streamSid" in obj) == (name != "from_twilio_connected"), name


def test_the_same_event_name_differs_by_direction() -> None:
    # What the app sends has no sequenceNumber: as "from Twilio" it is malformed.
    with pytest.raises(MessageError, match="sequenceNumber"):
        parse_from_twilio(golden("to_twilio_media"))
    # A Twilio message read as the app's is understood by its shared fields.
    assert parse_from_app(golden("from_twilio_mark")) == MarkOut(SID, "my label")
    with pytest.raises(UnknownEvent):
        parse_from_app(golden("from_twilio_start"))


def test_numbers_are_accepted_where_twilio_sends_strings() -> None:
    text = json.dumps(
        {
            "event": "media",
            "sequenceNumber": 7,
            "media": {"track": "inbound", "chunk": 6, "timestamp": 100, "payload": ""},
            "streamSid": SID,
        }
    )
    assert parse_from_twilio(text) == Media(7, SID, "inbound", 6, 100, b"")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b'{"event": "media"}', "binary"),
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"no": "event"}', "event"),
        ('{"event": "media", "sequenceNumber": "1", "streamSid": "MZ1"}', "media must be"),
        (
            '{"event": "media", "sequenceNumber": "1", "streamSid": "MZ1",'
            ' "media": {"chunk": "1", "timestamp": "0", "payload": "@@@"}}',
            "base64",
        ),
        (
            '{"event": "media", "sequenceNumber": "1", "streamSid": "MZ1",'
            ' "media": {"chunk": "-1", "timestamp": "0", "payload": ""}}',
            "media.chunk",
        ),
        ('{"event": "mark", "sequenceNumber": "x", "streamSid": "MZ1"}', "sequenceNumber"),
        ('{"event": "mark", "sequenceNumber": "1", "streamSid": ""}', "streamSid"),
        ('{"event": "mark", "sequenceNumber": "1", "streamSid": "MZ1", "mark": {}}', "mark.name"),
        (
            '{"event": "dtmf", "sequenceNumber": "1", "streamSid": "MZ1", "dtmf": {"digit": "12"}}',
            "dtmf.digit",
        ),
        ('{"event": "stop", "sequenceNumber": "1", "streamSid": "MZ1", "stop": []}', "stop"),
        (
            '{"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",'
            ' "start": {"accountSid": "AC", "callSid": "CA", "streamSid": "MZ2"}}',
            "differs",
        ),
        (
            '{"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",'
            ' "start": {"accountSid": "AC", "callSid": "CA", "customParameters": {"a": 1}}}',
            "customParameters",
        ),
    ],
)
def test_malformed_input_names_the_problem(text: str | bytes, words: str) -> None:
    with pytest.raises(MessageError, match=words):
        parse_from_twilio(text)


def test_unknown_event_is_its_own_error() -> None:
    with pytest.raises(UnknownEvent) as exc:
        parse_from_twilio('{"event": "stream-error", "streamSid": "MZ1"}')
    assert exc.value.event == "stream-error"


_sids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
_texts = st.text(st.characters(codec="utf-8"), max_size=40)
_counts = st.integers(min_value=0, max_value=2**40)
_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Connected, _texts, _texts),
    st.builds(
        Start,
        _counts,
        _sids,
        _texts,
        _texts,
        st.lists(_texts, max_size=3).map(tuple),
        st.builds(MediaFormat, _texts, st.integers(0, 96000), st.integers(0, 8)),
        st.dictionaries(_texts, _texts, max_size=4),
    ),
    st.builds(Media, _counts, _sids, _texts, _counts, _counts, st.binary(max_size=400)),
    st.builds(Dtmf, _counts, _sids, st.sampled_from(sorted("0123456789*#ABCD")), _texts),
    st.builds(Mark, _counts, _sids, _texts),
    st.builds(Stop, _counts, _sids, _texts, _texts),
    st.builds(MediaOut, _sids, st.binary(max_size=400)),
    st.builds(MarkOut, _sids, _texts),
    st.builds(Clear, _sids),
)


@given(_messages)
def test_round_trip(msg: Message) -> None:
    sender = "app" if isinstance(msg, MediaOut | MarkOut | Clear) else "twilio"
    assert parse(dumps(msg), sender=sender) == msg


def test_payload_is_base64_on_the_wire_only() -> None:
    wire = json.loads(dumps(MediaOut(SID, b"\xff" * 160)))
    assert base64.b64decode(wire["media"]["payload"]) == b"\xff" * 160
