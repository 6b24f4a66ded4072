"""FastAGI environment, commands and replies as res_agi.c writes and reads them."""

from __future__ import annotations

import uuid

import pytest

from callbridge.asterisk.agi import (
    MAX_ENV_LINES,
    MAX_LINE_BYTES,
    AgiError,
    AgiHangup,
    AgiReply,
    AgiReplyReader,
    AgiRequest,
    AgiRequestParser,
    format_command,
    format_environment,
    parse_reply,
    split_command,
)

from .fuzz_targets import FIXTURES

GOLDEN = (FIXTURES / "agi-fastagi-request.txt").read_bytes()


def test_golden_request() -> None:
    parser = AgiRequestParser()
    request = parser.feed(GOLDEN + b"200 result=0\n")
    assert request is not None
    assert request.network and request.script == "sales?lang=de"
    assert request.route == "sales" and request.params == (("lang", "de"),)
    assert request.uniqueid == "1761234567.40" and request.channel == "PJSIP/trunk-00000007"
    assert request.callerid == "4930123456" and request.get("agi_accountcode") == ""
    assert request.args == ("first", "second arg")
    assert request.env[0] == ("agi_network", "yes")
    assert parser.rest == b"200 result=0\n"
    assert format_environment(request.env) == GOLDEN


def test_request_byte_by_byte() -> None:
    parser = AgiRequestParser()
    results = [parser.feed(GOLDEN[i : i + 1]) for i in range(len(GOLDEN))]
    assert all(r is None for r in results[:-1]) and isinstance(results[-1], AgiRequest)


@pytest.mark.parametrize(
    "data",
    [
        b"\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"agi_x " + b"y" * 10 + b"\n\n",
        b"agi_request: " + b"x" * (MAX_LINE_BYTES + 1),
        b"agi_arg_1: x\n" * (MAX_ENV_LINES + 1),
    ],
)
def test_bad_requests(data: bytes) -> None:
    with pytest.raises(AgiError):
        AgiRequestParser().feed(data)


def test_commands_quote_like_parse_args() -> None:
    call = uuid.UUID("40325ec2-5efd-4bd3-805f-53576e581d13")
    assert format_command("ANSWER") == b"ANSWER\n"
    assert format_command("HANGUP") == b"HANGUP\n"
    line = format_command("EXEC", "AudioSocket", f"{call},127.0.0.1:9092")
    assert line == b"EXEC AudioSocket 40325ec2-5efd-4bd3-805f-53576e581d13,127.0.0.1:9092\n"
    tricky = ["SET", "VARIABLE", "GREETING", 'say "hi" \\ there', ""]
    assert split_command(format_command(*tricky).decode()) == tricky
    with pytest.raises(ValueError):
        format_command("EXEC", "x\ny")


def test_split_command_matches_the_c_parser() -> None:
    assert split_command('EXEC Dial "PJSIP/a b"') == ["EXEC", "Dial", "PJSIP/a b"]
    assert split_command('a"b c"d  e\\ f') == ["ab cd", "e f"]
    assert len(split_command("x " * 300)) == 127


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("200 result=0", AgiReply(200, 0)),
        ("200 result=1\n", AgiReply(200, 1)),
        ("200 result=-1", AgiReply(200, -1)),
        ("200 result=0 (timeout)", AgiReply(200, 0, "timeout")),
        ("200 result=1 (some value)", AgiReply(200, 1, "some value")),
        ("200 result=49 (dtmf) endpos=12000", AgiReply(200, 49, "dtmf", (("endpos", "12000"),))),
        ("510 Invalid or unknown command", AgiReply(510, text="Invalid or unknown command")),
        ("HANGUP", AgiHangup()),
    ],
)
def test_replies(line: str, reply: object) -> None:
    assert parse_reply(line) == reply


def test_reply_ok() -> None:
    assert AgiReply(200, 0).ok and not AgiReply(200, -1).ok and not AgiReply(510).ok


@pytest.mark.parametrize(
    "line", ["", "OK", "200", "200 result=", "200 result=abc", "2000 result=1", "200 foo=1"]
)
def test_bad_replies(line: str) -> None:
    with pytest.raises(AgiError):
        parse_reply(line)


def test_reply_reader_with_usage_block() -> None:
    reader = AgiReplyReader()
    data = (
        b"200 result=1\n520-Invalid command syntax.  Proper usage follows:\n"
        b" Usage: EXEC <application> <options>\n520 End of proper usage.\nHANGUP\n200 res"
    )
    out = reader.feed(data)
    assert out[0] == AgiReply(200, 1)
    assert isinstance(out[1], AgiReply) and out[1].code == 520 and "Usage: EXEC" in out[1].text
    assert out[2] == AgiHangup()
    assert reader.feed(b"ult=0\n") == [AgiReply(200, 0)]


def test_reply_reader_bounded() -> None:
    with pytest.raises(AgiError):
        AgiReplyReader().feed(b"2" * (MAX_LINE_BYTES + 10))
    with pytest.raises(AgiError):
        AgiReplyReader().feed(b"520-x\n" + b"line\n" * 100)
