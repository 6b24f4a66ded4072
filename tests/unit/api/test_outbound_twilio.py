"""`callbridge call --via twilio`: the REST request goes out through the official `twilio`
package (only its HTTP client is replaced), carries <Connect><Stream> TwiML, and the call runs
once Twilio (here: the test) opens the media stream that TwiML names."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest
from twilio.http import HttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]

from callbridge import gateway
from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.cli.place_call import place_call
from callbridge.config.settings import Settings, load_settings
from callbridge.core.errors import ConfigError

from .twilio_peer import FakeTwilioStream

ACCOUNT = "AC" + "8" * 32
TOKEN = "b" * 32
CALL_SID = "CA" + "9" * 32
PUBLIC = "https://voice.example.com"


class RecordingHttpClient(HttpClient):  # type: ignore[misc]
    """twilio's HTTP hook: records each request and answers like the Calls resource."""

    def __init__(self, status: int = 201) -> None:
        super().__init__(logger=None, is_async=False)
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self.got_request = threading.Event()

    def request(self, method: str, uri: str, **kwargs: Any) -> Response:
        self.requests.append({"method": method, "uri": uri, **kwargs})
        self.got_request.set()
        if self.status >= 400:
            body = {"code": 21211, "message": "Invalid 'To' Phone Number", "status": self.status}
            return Response(self.status, json.dumps(body))
        return Response(
            self.status,
            json.dumps({"sid": CALL_SID, "account_sid": ACCOUNT, "status": "queued"}),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings(tmp_path: object, http_port: int) -> Settings:
    s = load_settings(environ={})
    return replace(
        s,
        data_dir=str(tmp_path),
        default_agent="echo",
        public_url=PUBLIC,
        shutdown_grace=2.0,
        sip=replace(s.sip, host="127.0.0.1", port=0),
        http=replace(s.http, port=http_port),
        twilio=replace(s.twilio, account_sid=ACCOUNT, auth_token=TOKEN, from_number="+15550009999"),
    )


async def wait_request(client: RecordingHttpClient) -> dict[str, Any]:
    assert await asyncio.to_thread(client.got_request.wait, 10), "no REST request"
    return client.requests[0]


async def test_call_via_twilio(tmp_path: object) -> None:
    port = free_port()
    client = RecordingHttpClient()
    placing = asyncio.create_task(
        place_call(
            settings(tmp_path, port),
            "+15557654321",
            "echo",
            None,
            via="twilio",
            twilio_http_client=client,
        )
    )
    request = await wait_request(client)
    assert request["method"] == "POST"
    assert request["uri"] == f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
    assert request["auth"] == (ACCOUNT, TOKEN)
    data = request["data"]
    assert (data["To"], data["From"]) == ("+15557654321", "+15550009999")
    root = ET.fromstring(data["Twiml"].split("?>", 1)[1])
    stream = root.find("Connect/Stream")
    assert stream is not None
    stream_url = stream.get("url")
    assert stream_url == "wss://voice.example.com/twilio/media"
    params = {p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter")}
    assert params == {
        "agent": "echo",
        "direction": "outbound",
        "from": "+15550009999",
        "to": "+15557654321",
    }

    # Twilio connects the answered call's media to the public URL (a proxy forwards it here)
    # and signs the upgrade over that URL.
    tone = ulaw_encode((5000 * np.sin(np.arange(160 * 10) * 0.3)).astype("<i2").tobytes())
    twilio = FakeTwilioStream(
        f"ws://127.0.0.1:{port}/twilio/media",
        signed_url=stream_url,
        auth_token=TOKEN,
        call_sid=CALL_SID,
        params=params,
    )
    async with twilio:
        await twilio.send_audio([tone[i : i + 160] for i in range(0, len(tone), 160)])
        # The echo agent sends back what it heard (0x7F and 0xFF are both µ-law zero).
        assert ulaw_decode(await twilio.collect(len(tone))) == ulaw_decode(tone)
        await twilio.stop()
        await twilio.wait_closed()
    assert await asyncio.wait_for(placing, 10) == 0


async def test_refused_call_fails_cleanly(tmp_path: object) -> None:
    client = RecordingHttpClient(status=400)
    rc = await place_call(
        settings(tmp_path, free_port()),
        "+1555",
        "echo",
        None,
        via="twilio",
        twilio_http_client=client,
    )
    assert rc == 1
    assert len(client.requests) == 1


async def test_unanswered_call_is_ended_over_rest(tmp_path: object) -> None:
    client = RecordingHttpClient()
    rc = await place_call(
        settings(tmp_path, free_port()),
        "+15557654321",
        "echo",
        None,
        via="twilio",
        twilio_http_client=client,
        answer_timeout=0.2,
    )
    assert rc == 1
    hangup = client.requests[1]
    assert hangup["uri"].endswith(f"/Calls/{CALL_SID}.json")
    assert hangup["data"]["Status"] == "completed"


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("twilio.account_sid", {"account_sid": ""}),
        ("twilio.auth_token", {"auth_token": ""}),
        ("twilio.from_number", {"from_number": ""}),
    ],
)
async def test_missing_twilio_settings_are_named(
    tmp_path: object, field: str, change: dict[str, str]
) -> None:
    s = settings(tmp_path, 0)
    s = replace(s, twilio=replace(s.twilio, **change))
    with pytest.raises(ConfigError) as exc:
        await place_call(s, "+15557654321", "echo", None, via="twilio")
    assert exc.value.field == field


async def test_public_url_is_required(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="CALLBRIDGE_PUBLIC_URL"):
        await place_call(
            replace(settings(tmp_path, 0), public_url=""), "+1555", "echo", None, via="twilio"
        )


async def test_post_calls_via_twilio(tmp_path: object) -> None:
    """POST /calls with `via: twilio`: the same REST request and TwiML; the API answers with
    the call's id once Twilio's media stream is connected; refusals keep Twilio's status."""
    port = free_port()
    client = RecordingHttpClient()
    gw = gateway.build_gateway(settings(tmp_path, port), http=True, twilio_http_client=client)
    await gw.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            posting = asyncio.create_task(
                api.post("/calls", json={"to": "+15557654321", "via": "twilio"}, timeout=15)
            )
            request = await wait_request(client)
            assert request["data"]["To"] == "+15557654321"
            root = ET.fromstring(request["data"]["Twiml"].split("?>", 1)[1])
            stream = root.find("Connect/Stream")
            assert stream is not None
            params = {p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter")}
            assert params["agent"] == "echo"  # the default route's agent
            twilio = FakeTwilioStream(
                f"ws://127.0.0.1:{port}/twilio/media",
                signed_url=str(stream.get("url")),
                auth_token=TOKEN,
                call_sid=CALL_SID,
                params=params,
            )
            async with twilio:
                placed = await asyncio.wait_for(posting, 10)
                assert placed.status_code == 202, placed.text
                call_id = placed.json()["id"]
                detail = (await api.get(f"/calls/{call_id}")).json()
                assert detail["legs"][0]["transport"] == "twilio", detail
                await twilio.stop()
                await twilio.wait_closed()

            for body, field in (
                ({"to": "+1555", "via": "carrier-pigeon"}, "via"),
                ({"to": "+1555", "via": "twilio", "account": "trunk"}, "account"),
            ):
                r = await api.post("/calls", json=body)
                assert (r.status_code, r.json()["field"]) == (422, field), r.text
            client.status = 400
            r = await api.post("/calls", json={"to": "+1555", "via": "twilio"})
            assert r.status_code == 502, r.text
            assert r.json()["twilio_status"] == 400 and "Invalid" in r.json()["error"], r.text
    finally:
        await gw.stop()


async def test_post_calls_via_twilio_without_its_settings_names_them(tmp_path: object) -> None:
    port = free_port()
    s = settings(tmp_path, port)
    gw = gateway.build_gateway(replace(s, twilio=replace(s.twilio, from_number="")), http=True)
    await gw.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            r = await api.post("/calls", json={"to": "+15557654321", "via": "twilio"})
        assert (r.status_code, r.json()["field"]) == (422, "via"), r.text
        assert "twilio.from_number" in r.json()["error"], r.text
    finally:
        await gw.stop()
