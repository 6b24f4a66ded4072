"""Twilio webhooks and the media WebSocket upgrade through the ASGI app (starlette TestClient):
TwiML answers, and 403 with a reason in the log for a missing, wrong or uncheckable signature.
Requests are signed with the official package's RequestValidator."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callbridge.api.app import ApiConfig, create_app
from callbridge.api.twilio import TwilioWebConfig
from callbridge.core.asyncio_clock import LoopClock
from callbridge.core.ports import CallLeg, LegInfo, Rejection
from callbridge.transports.twilio.leg import TwilioLeg
from callbridge.transports.twilio.transport import TwilioTransport
from callbridge.twilio_streams.messages import Connected, Start, Stop, dumps
from callbridge.twilio_streams.signature import body_sha256

with warnings.catch_warnings():
    # starlette 1.x would rather drive its TestClient with httpx2; httpx works the same here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

TOKEN = "f" * 32
PUBLIC = "https://voice.example.com"
VALIDATOR = RequestValidator(TOKEN)
FORM = {"CallSid": "CA" + "1" * 32, "From": "+15550001111", "To": "+15552223333"}
SID = "MZ" + "3" * 32


class FakeCalls:
    """The calls layer as the transport sees it (LegAcceptor): runs each leg's media loop."""

    def __init__(self, reject: str | None = None) -> None:
        self.reject = reject
        self.admitted: list[LegInfo] = []
        self.legs: list[TwilioLeg] = []
        self.tasks: list[asyncio.Task[None]] = []

    def admit(self, info: LegInfo) -> None:
        if self.reject:
            raise Rejection(self.reject, "test")
        self.admitted.append(info)

    def start(self, leg: CallLeg) -> None:
        assert isinstance(leg, TwilioLeg)
        self.legs.append(leg)
        self.tasks.append(asyncio.get_running_loop().create_task(leg.run()))


def client(
    calls: FakeCalls | None = None,
    *,
    public_url: str = PUBLIC,
    auth_token: str = TOKEN,
    validate: bool = True,
    api_token: str = "",
) -> TestClient:
    transport = TwilioTransport(LoopClock(), calls or FakeCalls(), handshake_timeout=2)
    config = ApiConfig(
        api_token=api_token,
        twilio=TwilioWebConfig(
            public_url=public_url,
            auth_token=auth_token,
            validate=validate,
            sip_host="sip.example.com",
            sip_port=5080,
        ),
    )
    return TestClient(create_app(config, twilio=transport))


def signed(path: str, form: dict[str, str], url: str | None = None) -> dict[str, str]:
    return {"X-Twilio-Signature": VALIDATOR.compute_signature(url or PUBLIC + path, form)}


def post(c: TestClient, path: str, form: dict[str, str], headers: dict[str, str]) -> Any:
    return c.post(
        path,
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )


def rejections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.__dict__["fields"]["reason"]
        for r in caplog.records
        if r.msg == "twilio.signature_rejected"
    ]


def parse_twiml(text: str) -> ET.Element:
    return ET.fromstring(text.split("?>", 1)[1])


# ---- /twilio/voice -----------------------------------------------------------------------------


def test_voice_answers_with_connect_stream() -> None:
    with client() as c:
        r = post(c, "/twilio/voice?agent=echo", FORM, signed("/twilio/voice?agent=echo", FORM))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    root = parse_twiml(r.text)
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://voice.example.com/twilio/media"
    params = {p.get("name"): p.get("value") for p in stream.iter("Parameter")}
    assert params == {
        "agent": "echo",
        "direction": "inbound",
        "from": "+15550001111",
        "to": "+15552223333",
    }


def test_voice_default_agent_alias() -> None:
    with client() as c:
        r = post(c, "/twilio/voice", FORM, signed("/twilio/voice", FORM))
    params = {p.get("name"): p.get("value") for p in parse_twiml(r.text).iter("Parameter")}
    assert params["agent"] == "agent"


def test_signed_with_the_default_port_is_accepted() -> None:
    url = "https://voice.example.com:443/twilio/voice"
    with client() as c:
        r = post(c, "/twilio/voice", FORM, signed("", FORM, url=url))
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("headers_for", "form", "reason"),
    [
        (lambda: {}, FORM, "missing X-Twilio-Signature"),
        (lambda: signed("/twilio/voice", FORM), {**FORM, "From": "+19990000000"}, "mismatch"),
        # Signed for another URL (e.g. public_url misconfigured behind a proxy).
        (
            lambda: signed("", FORM, url="https://other.example.com/twilio/voice"),
            FORM,
            "mismatch",
        ),
    ],
)
def test_bad_signature_is_403_with_a_reason(
    caplog: pytest.LogCaptureFixture, headers_for: Any, form: dict[str, str], reason: str
) -> None:
    caplog.set_level(logging.INFO)
    with client() as c:
        r = post(c, "/twilio/voice", form, headers_for())
    assert r.status_code == 403
    (logged,) = rejections(caplog)
    assert reason in logged


def test_no_auth_token_configured_is_403_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with client(auth_token="") as c:
        r = post(c, "/twilio/voice", FORM, signed("/twilio/voice", FORM))
    assert r.status_code == 403
    (logged,) = rejections(caplog)
    assert "no auth token configured" in logged and "TWILIO_AUTH_TOKEN" in logged


def test_validation_can_be_switched_off() -> None:
    with client(validate=False, auth_token="") as c:
        r = post(c, "/twilio/voice", FORM, {})
    assert r.status_code == 200


def test_without_public_url_the_request_url_is_signed() -> None:
    with client(public_url="") as c:
        url = "http://testserver/twilio/voice"
        r = post(c, "/twilio/voice", FORM, signed("", FORM, url=url))
    assert r.status_code == 200
    stream = parse_twiml(r.text).find("Connect/Stream")
    assert stream is not None and stream.get("url") == "ws://testserver/twilio/media"


# ---- /twilio/sip and /twilio/status -------------------------------------------------------------


def test_sip_answers_with_dial_sip() -> None:
    with client() as c:
        r = post(c, "/twilio/sip?agent=echo", FORM, signed("/twilio/sip?agent=echo", FORM))
    assert r.status_code == 200
    sip = parse_twiml(r.text).find("Dial/Sip")
    assert sip is not None and sip.text == "sip:echo@sip.example.com:5080"


def test_sip_needs_a_signature_too() -> None:
    with client() as c:
        assert post(c, "/twilio/sip", FORM, {}).status_code == 403


def test_status_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    form = {**FORM, "CallStatus": "completed", "CallDuration": "42"}
    with client() as c:
        r = post(c, "/twilio/status", form, signed("/twilio/status", form))
    assert r.status_code == 204
    (rec,) = [r for r in caplog.records if r.msg == "twilio.status"]
    assert rec.__dict__["fields"]["status"] == "completed"
    assert rec.__dict__["fields"]["duration"] == "42"


def test_json_webhook_is_checked_by_its_body_hash(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    body = json.dumps({"CallSid": FORM["CallSid"], "CallStatus": "ringing"}).encode()
    path = f"/twilio/status?bodySHA256={body_sha256(body)}"
    headers = {
        "Content-Type": "application/json",
        "X-Twilio-Signature": VALIDATOR.compute_signature(PUBLIC + path, {}),
    }
    with client() as c:
        assert c.post(path, content=body, headers=headers).status_code == 204
        tampered = body.replace(b"ringing", b"busy")
        assert c.post(path, content=tampered, headers=headers).status_code == 403
    assert "bodySHA256" in rejections(caplog)[0]


# ---- the media WebSocket upgrade -----------------------------------------------------------------


def start_message(agent: str = "echo") -> str:
    return dumps(
        Start(
            1,
            SID,
            "AC" + "4" * 32,
            FORM["CallSid"],
            custom_parameters={"agent": agent, "from": "+15550001111", "direction": "inbound"},
        )
    )


def ws_signature(url: str = "wss://voice.example.com/twilio/media") -> dict[str, str]:
    return {"X-Twilio-Signature": VALIDATOR.compute_signature(url, {})}


def test_media_stream_signed_upgrade_becomes_a_leg() -> None:
    calls = FakeCalls()
    with client(calls) as c, c.websocket_connect("/twilio/media", headers=ws_signature()) as ws:
        ws.send_text(dumps(Connected()))
        ws.send_text(start_message())
        ws.send_text(dumps(Stop(2, SID, "AC" + "4" * 32, FORM["CallSid"])))
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_text()
        assert closed.value.code == 1000
    (info,) = calls.admitted
    assert (info.transport, info.direction, info.local_user) == ("twilio", "inbound", "echo")
    assert info.remote_uri == "+15550001111"
    assert info.ids["stream_sid"] == SID and info.ids["call_sid"] == FORM["CallSid"]
    assert calls.legs[0].end_reason == "twilio_stop"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing X-Twilio-Signature"),
        (ws_signature("wss://voice.example.com/twilio/other"), "mismatch"),
        (
            {"X-Twilio-Signature": VALIDATOR.compute_signature(PUBLIC + "/x", {"a": "b"})},
            "mismatch",
        ),
    ],
)
def test_media_stream_upgrade_refused_without_a_valid_signature(
    caplog: pytest.LogCaptureFixture, headers: dict[str, str], reason: str
) -> None:
    caplog.set_level(logging.INFO)
    calls = FakeCalls()
    with (
        client(calls) as c,
        pytest.raises(WebSocketDisconnect) as refused,
        c.websocket_connect("/twilio/media", headers=headers),
    ):
        pass  # pragma: no cover - refused before the accept
    assert refused.value.code == 1008  # closed before accept: the server answers 403
    assert reason in rejections(caplog)[0]
    assert calls.admitted == []


def test_media_stream_for_an_unknown_agent_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    calls = FakeCalls(reject=Rejection.NOT_FOUND)
    with client(calls) as c, c.websocket_connect("/twilio/media", headers=ws_signature()) as ws:
        ws.send_text(dumps(Connected()))
        ws.send_text(start_message("nobody"))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008
    assert [r for r in caplog.records if r.msg == "call.rejected"]
    assert calls.legs == []


def test_media_stream_must_start_with_start() -> None:
    with client() as c, c.websocket_connect("/twilio/media", headers=ws_signature()) as ws:
        ws.send_text('{"event": "media", "sequenceNumber": "1", "streamSid": "MZ1",'
                     ' "media": {"chunk": "1", "timestamp": "0", "payload": ""}}')  # fmt: skip
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008
