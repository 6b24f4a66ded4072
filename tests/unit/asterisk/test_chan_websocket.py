"""chan_websocket control messages against chan_websocket.c's own printers (see SOURCES.md)."""

from __future__ import annotations

import json

import pytest

from callbridge.asterisk.chan_websocket import (
    MAX_COMMAND_BYTES,
    OPTIMAL_FRAME_SIZES,
    Answer,
    ChanWebSocketError,
    ContinueMedia,
    DtmfEnd,
    EventError,
    FlushMedia,
    GetStatus,
    Hangup,
    MarkMedia,
    MediaMarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    PauseMedia,
    ReportQueueDrained,
    SetMediaDirection,
    StartMediaBuffering,
    Status,
    StopMediaBuffering,
    UnknownEvent,
    format_command,
    format_event,
    parse_command,
    parse_event,
)

from .fuzz_targets import FIXTURES


def golden(name: str) -> str:
    return (FIXTURES / f"chanws-{name}").read_text()


def test_media_start_plain_is_byte_exact() -> None:
    text = golden("media-start.txt")
    event = parse_event(text)
    assert event == MediaStart(
        connection_id="media_connection1",
        channel="WebSocket/media_connection1/0x7f3c2c004a10",
        channel_id="1761234567.42",
        format="ulaw",
        optimal_frame_size=160,
        ptime=20,
    )
    assert format_event(event) == text
    assert OPTIMAL_FRAME_SIZES["ulaw"] == event.optimal_frame_size


def test_media_start_json() -> None:
    event = parse_event(golden("media-start.json"), "json")
    assert isinstance(event, MediaStart)
    assert (event.format, event.optimal_frame_size, event.ptime) == ("slin16", 640, 20)
    assert dict(event.channel_variables)["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] == "640"
    assert OPTIMAL_FRAME_SIZES["slin16"] == 640
    assert parse_event(format_event(event, "json"), "json") == event
    assert json.loads(format_event(event, "json")) == json.loads(golden("media-start.json"))


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("dtmf-end.txt", "plain-text", DtmfEnd("5", "1761234567.42")),
        ("dtmf-end.json", "json", DtmfEnd("#", "1761234567.42")),
        ("status.txt", "plain-text", Status("1761234567.42", 912, 800, 900, True, False, False)),
        ("status.json", "json", Status("1761234567.42", 912, 800, 900, True, False, False)),
        (
            "error.txt",
            "plain-text",
            EventError("1761234567.42", "FLUSH_MEDIA not supported in passthrough mode"),
        ),
        ("xoff.txt", "plain-text", MediaXoff()),
        ("xon.json", "json", MediaXon("1761234567.42")),
        ("mark-processed.txt", "plain-text", MediaMarkProcessed("turn-3")),
    ],
)
def test_golden_events(name: str, fmt: str, expected: object) -> None:
    text = golden(name)
    assert parse_event(text, fmt) == expected  # type: ignore[arg-type]
    if fmt == "plain-text":
        assert format_event(expected, fmt) == text  # type: ignore[arg-type]
    else:
        assert json.loads(format_event(expected, fmt)) == json.loads(text)  # type: ignore[arg-type]


def test_error_text_keeps_spaces_and_bytes_are_accepted() -> None:
    event = parse_event(
        b"ERROR channel_id:1.2 error_text:'sideways' is not a valid direction for SET_MEDIA_DIRECTION.\n"
    )
    assert event == EventError(
        "1.2", "'sideways' is not a valid direction for SET_MEDIA_DIRECTION."
    )


def test_unknown_events_pass_through() -> None:
    assert parse_event("MEDIA_SOMETHING_NEW a:b") == UnknownEvent(
        "MEDIA_SOMETHING_NEW", "MEDIA_SOMETHING_NEW a:b"
    )
    assert isinstance(parse_event('{"event":"NEW_THING"}', "json"), UnknownEvent)


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("", "plain-text"),
        ("MEDIA_START connection_id:x", "plain-text"),
        (
            "MEDIA_START connection_id:a channel:b channel_id:c format:ulaw optimal_frame_size:99999999999 ptime:20",
            "plain-text",
        ),
        ("DTMF_END digit:55 channel_id:1", "plain-text"),
        (
            "STATUS channel_id:1 queue_length:1 xon_level:1 xoff_level:1 queue_full:yes bulk_media:false media_paused:false",
            "plain-text",
        ),
        ("MEDIA_XON extra", "plain-text"),
        ("ERROR channel_id:1", "plain-text"),
        ("[1]", "json"),
        ('{"event":1}', "json"),
        ('{"event":"MEDIA_START"}', "json"),
        ("[" * 100 + "]" * 100, "json"),
        ('{"event":"STATUS","queue_length":' + "9" * 5000 + "}", "json"),
        ('{"event":"DTMF_END","digit":NaN}', "json"),
        ("x" * 70000, "plain-text"),
        (b"\xff\xfe", "plain-text"),
    ],
)
def test_bad_events_raise_own_error(text: str | bytes, fmt: str) -> None:
    with pytest.raises(ChanWebSocketError):
        parse_event(text, fmt)  # type: ignore[arg-type]


COMMANDS = [
    (Answer(), "ANSWER"),
    (Hangup(), "HANGUP"),
    (StartMediaBuffering(), "START_MEDIA_BUFFERING"),
    (StopMediaBuffering("tts-1"), "STOP_MEDIA_BUFFERING tts-1"),
    (StopMediaBuffering(), "STOP_MEDIA_BUFFERING"),
    (MarkMedia("turn-3"), "MARK_MEDIA turn-3"),
    (FlushMedia(), "FLUSH_MEDIA"),
    (ReportQueueDrained(), "REPORT_QUEUE_DRAINED"),
    (GetStatus(), "GET_STATUS"),
    (PauseMedia(), "PAUSE_MEDIA"),
    (ContinueMedia(), "CONTINUE_MEDIA"),
]


@pytest.mark.parametrize(("command", "text"), COMMANDS)
def test_commands_plain_and_json(command: object, text: str) -> None:
    assert format_command(command) == text  # type: ignore[arg-type]
    assert parse_command(text) == command
    assert parse_command(f"  {text}\r\n") == command  # Asterisk strips (ast_strip)
    js = format_command(command, "json")  # type: ignore[arg-type]
    assert json.loads(js)["command"] == text.split(maxsplit=1)[0]
    assert parse_command(js, "json") == command


def test_set_media_direction_is_json_only() -> None:
    with pytest.raises(ValueError, match="JSON"):
        format_command(SetMediaDirection("in"))
    text = format_command(SetMediaDirection("in"), "json")
    assert parse_command(text, "json") == SetMediaDirection("in")
    with pytest.raises(ChanWebSocketError):
        parse_command('{"command":"SET_MEDIA_DIRECTION","direction":"up"}', "json")


def test_what_asterisk_ignores() -> None:
    assert parse_command("") is None
    assert parse_command("FLUSH_MEDIA" + " " * MAX_COMMAND_BYTES) is None  # over 128: ignored
    assert parse_command("DTMF 5") is None  # no DTMF command towards Asterisk
    with pytest.raises(ValueError, match="128"):
        format_command(MarkMedia("x" * 130))
