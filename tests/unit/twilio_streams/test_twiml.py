"""TwiML: the documents parse as XML with Twilio's documented structure, and are the very
bytes the official package's VoiceResponse produces (acceptance 4)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse  # type: ignore[import-untyped]

from callbridge.twilio_streams.twiml import connect_stream, dial_sip

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def test_connect_stream_structure() -> None:
    doc = connect_stream(
        "wss://example.com/twilio/media", {"agent": "voice", "from": "+15551230000"}
    )
    assert doc.startswith(DECLARATION)
    root = ET.fromstring(doc.removeprefix(DECLARATION))
    assert root.tag == "Response"
    (connect,) = list(root)
    assert connect.tag == "Connect"
    (stream,) = list(connect)
    assert stream.tag == "Stream"
    assert stream.attrib == {"url": "wss://example.com/twilio/media"}
    params = [(p.tag, p.attrib) for p in stream]
    assert params == [
        ("Parameter", {"name": "agent", "value": "voice"}),
        ("Parameter", {"name": "from", "value": "+15551230000"}),
    ]


def test_connect_stream_matches_the_official_package() -> None:
    url = "wss://example.com/twilio/media?x=1&y=<2>"
    params = {"agent": 'say "hi" & <bye>', "direction": "inbound"}
    ours = connect_stream(url, params, name="s1", status_callback="https://e.com/cb?a=1&b=2")
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=url, name="s1", status_callback="https://e.com/cb?a=1&b=2")
    for key, value in params.items():
        stream.parameter(name=key, value=value)
    response.append(connect)
    assert ours == response.to_xml()
    # Escaped, and the values come back intact.
    root = ET.fromstring(ours.removeprefix(DECLARATION))
    assert [p.get("value") for p in root.iter("Parameter")] == list(params.values())
    assert root.find("Connect/Stream").get("url") == url  # type: ignore[union-attr]


def test_dial_sip_matches_the_official_package() -> None:
    uri = "sip:agent@sip.example.com:5060;transport=udp"
    ours = dial_sip(uri)
    response = VoiceResponse()
    dial = Dial()
    dial.sip(uri)
    response.append(dial)
    assert ours == response.to_xml()
    root = ET.fromstring(ours.removeprefix(DECLARATION))
    assert root.find("Dial/Sip").text == uri  # type: ignore[union-attr]


def test_dial_sip_escapes_and_takes_attributes() -> None:
    doc = dial_sip("sip:a&b@h", caller_id="+15550001111", timeout=20)
    assert "sip:a&amp;b@h" in doc
    root = ET.fromstring(doc.removeprefix(DECLARATION))
    dial = root.find("Dial")
    assert dial is not None and dial.attrib == {"callerId": "+15550001111", "timeout": "20"}
    response = VoiceResponse()
    official = Dial(caller_id="+15550001111", timeout=20)
    official.sip("sip:a&b@h")
    response.append(official)
    assert doc == response.to_xml()
