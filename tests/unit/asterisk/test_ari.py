"""ARI events and REST requests against the swagger in rest-api/api-docs (see SOURCES.md)."""

from __future__ import annotations

import pytest

from callbridge.asterisk import ari
from callbridge.asterisk.ari import (
    AriError,
    AriRequest,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    StasisEnd,
    StasisStart,
    UnknownEvent,
)

from .fuzz_targets import FIXTURES


def golden(name: str) -> bytes:
    return (FIXTURES / f"ari-{name}.json").read_bytes()


def test_stasis_start() -> None:
    event = ari.parse_event(golden("stasis-start"))
    assert isinstance(event, StasisStart)
    assert event.application == "callbridge" and event.args == ("sales", "de")
    assert event.channel.id == "1761234567.40" and event.channel.state == "Ring"
    assert event.channel.caller.number == "4930123456"
    assert event.channel.dialplan.context == "from-trunk" and event.channel.dialplan.priority == 3
    assert event.asterisk_id == "02:42:ac:11:00:02" and event.replace_channel is None


def test_external_channel_and_its_rtp_address() -> None:
    event = ari.parse_event(golden("stasis-start-external"))
    assert isinstance(event, StasisStart)
    assert ari.unicast_rtp_address(event.channel) == ("127.0.0.1", 17432)
    channel = ari.parse_channel(golden("external-media-response"))
    assert channel.id == "cb-ext-1761234567.40"
    assert ari.unicast_rtp_address(channel) == ("127.0.0.1", 17432)
    assert channel.variable("UNICASTRTP_LOCAL_PORT") == "17432"


def test_other_events() -> None:
    dtmf = ari.parse_event(golden("channel-dtmf-received"))
    assert isinstance(dtmf, ChannelDtmfReceived) and (dtmf.digit, dtmf.duration_ms) == ("7", 120)
    hang = ari.parse_event(golden("channel-hangup-request"))
    assert isinstance(hang, ChannelHangupRequest) and (hang.cause, hang.soft) == (16, True)
    end = ari.parse_event(golden("stasis-end"))
    assert isinstance(end, StasisEnd) and end.channel.id == "1761234567.40"
    gone = ari.parse_event(golden("channel-destroyed"))
    assert isinstance(gone, ChannelDestroyed) and gone.cause_txt == "Normal Clearing"


def test_minimal_and_unknown_events() -> None:
    minimal = '{"type":"ChannelHangupRequest","application":"a","channel":{"id":"1","name":"n","state":"Up"}}'
    event = ari.parse_event(minimal)
    assert isinstance(event, ChannelHangupRequest) and event.cause is None
    other = ari.parse_event('{"type":"ChannelVarset","application":"a","channel":{"id":"9"}}')
    assert other == UnknownEvent("ChannelVarset", "a", "9")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"type":5}',
        b'{"type":"StasisStart","application":"a"}',
        b'{"type":"StasisStart","application":"a","channel":{"id":"1","name":"n"}}',
        b'{"type":"StasisStart","application":"a","args":"x","channel":{"id":"1","name":"n","state":"Up"}}',
        b'{"type":"ChannelDtmfReceived","application":"a","digit":"Z","duration_ms":1,"channel":{"id":"1","name":"n","state":"Up"}}',
        b'{"type":"ChannelDestroyed","application":"a","cause":'
        + b"9" * 400
        + b',"cause_txt":"x","channel":{"id":"1","name":"n","state":"Up"}}',
        b'{"type":"StasisEnd","application":"a","channel":{"id":"1","name":"n","state":"Up","channelvars":{"A":1}}}',
        b"[" * 5000 + b"]" * 5000,
        b"\xff",
        b'{"a":"' + b"x" * (ari.MAX_EVENT_BYTES + 1) + b'"}',
    ],
)
def test_bad_events_raise_own_error(data: bytes) -> None:
    with pytest.raises(AriError):
        ari.parse_event(data)


def test_requests() -> None:
    assert ari.answer("1761234567.40") == AriRequest("POST", "/ari/channels/1761234567.40/answer")
    assert ari.hangup("1.2") == AriRequest("DELETE", "/ari/channels/1.2")
    assert ari.hangup("1.2", "normal").query == (("reason", "normal"),)
    assert ari.continue_in_dialplan("1.2", "agents", "200", 1) == AriRequest(
        "POST",
        "/ari/channels/1.2/continue",
        (("context", "agents"), ("extension", "200"), ("priority", "1")),
    )
    assert ari.redirect("1.2", "PJSIP/200").query == (("endpoint", "PJSIP/200"),)
    assert ari.get_variable("1.2", "UNICASTRTP_LOCAL_PORT").method == "GET"
    assert ari.create_bridge() == AriRequest("POST", "/ari/bridges", (("type", "mixing"),))
    assert ari.create_bridge("b 1").path == "/ari/bridges/b%201"
    assert ari.add_channel("b1", "1.2", "cb-ext") == AriRequest(
        "POST", "/ari/bridges/b1/addChannel", (("channel", "1.2,cb-ext"),)
    )
    assert ari.remove_channel("b1", "1.2").path == "/ari/bridges/b1/removeChannel"
    assert ari.destroy_bridge("b1") == AriRequest("DELETE", "/ari/bridges/b1")
    assert ari.events_path("callbridge") == ("/ari/events", (("app", "callbridge"),))
    assert ari.answer("a/b").path == "/ari/channels/a%2Fb/answer"


def test_external_media_requests() -> None:
    rtp = ari.external_media("callbridge", "127.0.0.1:40000", "ulaw", channel_id="cb-ext-1")
    assert rtp.method == "POST" and rtp.path == "/ari/channels/externalMedia"
    assert dict(rtp.query) == {
        "app": "callbridge", "external_host": "127.0.0.1:40000", "format": "ulaw",
        "encapsulation": "rtp", "transport": "udp", "channelId": "cb-ext-1",
    }  # fmt: skip
    sock = ari.external_media(
        "callbridge", "127.0.0.1:9092", "slin16", encapsulation="audiosocket", transport="tcp",
        data="40325ec2-5efd-4bd3-805f-53576e581d13", variables={"CB_ROUTE": "sales"},
    )  # fmt: skip
    assert dict(sock.query)["data"].startswith("40325ec2") and sock.body == {
        "variables": {"CB_ROUTE": "sales"}
    }
    ws = ari.external_media(
        "callbridge",
        "",
        "ulaw",
        encapsulation="none",
        transport="websocket",
        connection_type="server",
    )
    assert "external_host" not in dict(ws.query)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"encapsulation": "audiosocket", "transport": "tcp"}, "data can not be empty"),
        ({"transport": "tcp"}, "transport must be 'udp' for rtp encapsulation"),
        ({"transport": "websocket"}, "encapsulation must be 'none'"),
        ({"connection_type": "server"}, "'server' connection_type"),
        ({"direction": "sideways"}, "Invalid direction"),
    ],
)
def test_external_media_refuses_what_asterisk_answers_400(
    kwargs: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        ari.external_media("callbridge", "127.0.0.1:40000", "ulaw", **kwargs)  # type: ignore[arg-type]
    assert (
        ari.external_media_problem({"app": "a", "external_host": "nohost", "format": "ulaw"})
        is not None
    )
    assert (
        ari.external_media_problem({"app": "a", "external_host": "h:1", "format": ""})
        == "format cannot be empty"
    )
