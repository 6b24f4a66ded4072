"""`/sip` on the HTTP server (api/sip_ws.py): RFC 7118 §4.1's subprotocol check, one SIP
message per WebSocket message (text or binary), the frame bound, the API token not asked of it;
and random frames (hypothesis) that never take the SIP side down."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from callbridge.api.app import ApiConfig, create_app
from callbridge.api.sip_ws import sip_ws_routes
from callbridge.core.asyncio_clock import FakeClock
from callbridge.transports.sip.transport import SipTransport, SipTransportConfig
from callbridge.transports.sip.ws_flow import MAX_FRAME_BYTES

from .test_sip_ws import OFFER, Acceptor, Media, request, settle

OPTIONS = request("OPTIONS", "sip:127.0.0.1")


def app(sip: SipTransport | None, token: str = "") -> Starlette:
    return create_app(ApiConfig(api_token=token), extra_routes=sip_ws_routes(sip))


def sip() -> SipTransport:
    return SipTransport(SipTransportConfig(host="127.0.0.1", port=5099), FakeClock(), Acceptor())


@pytest.mark.parametrize("protocols", [None, ["xmpp"], ["SIP "]])
def test_a_websocket_without_the_sip_subprotocol_is_refused(protocols: list[str] | None) -> None:
    client = TestClient(app(sip()))
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/sip", subprotocols=protocols or []),
    ):
        pass
    assert refused.value.code == 1002


def test_sip_subprotocol_is_accepted_and_text_or_binary_messages_are_sip() -> None:
    t = sip()
    client = TestClient(app(t, token="secret"))  # the API token is not asked of /sip
    with client.websocket_connect("/sip", subprotocols=["sip"]) as ws:
        assert ws.accepted_subprotocol == "sip"
        ws.send_text(OPTIONS.decode())
        assert ws.receive_text().startswith("SIP/2.0 200 OK\r\n")
        ws.send_bytes(request("OPTIONS", "sip:127.0.0.1", n=2))
        assert ws.receive_text().startswith("SIP/2.0 200 OK\r\n")
        ws.send_text("INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/WS a.invalid;branch=z9hG4bK1\r\n\r\n")
        assert ws.receive_text().startswith("SIP/2.0 400 ")
        assert len(t.ws.flows) == 1
    assert len(t.ws.flows) == 0  # the connection's end is the flow's


def test_an_oversized_frame_closes_the_connection() -> None:
    t = sip()
    client = TestClient(app(t))
    with client.websocket_connect("/sip", subprotocols=["sip"]) as ws:
        ws.send_bytes(b"X" * (MAX_FRAME_BYTES + 1))
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()
    assert len(t.ws.flows) == 0


def test_without_a_sip_transport_the_handshake_is_refused() -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        TestClient(app(None)).websocket_connect("/sip", subprotocols=["sip"]),
    ):
        pass
    assert refused.value.code == 1013


# ---- random frames ---------------------------------------------------------------------------

_INVITE = request("INVITE", body=OFFER)


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(data: bytes, at: int, junk: bytes, cut: bool) -> bytes:
        at %= len(data)
        return data[:at] + junk if cut else data[:at] + junk + data[at + len(junk) :]

    return st.builds(
        mutate,
        st.sampled_from([_INVITE, OPTIONS, request("REGISTER", "sip:127.0.0.1"), request("BYE")]),
        st.integers(0, 10_000),
        st.binary(max_size=20),
        st.booleans(),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.one_of(st.binary(max_size=300), _mutations()), max_size=5))
def test_random_frames_never_take_the_sip_side_down(frames: list[bytes]) -> None:
    async def run() -> None:
        t = sip()
        media = Media()
        t.ws.media = media
        flow, bystander = t.ws.open_flow(("127.0.0.1", 1)), t.ws.open_flow(("127.0.0.1", 2))
        for frame in frames:
            t.ws.message(frame, flow)
        await settle()
        assert bystander.outbox.empty()  # nothing leaks to another connection
        t.ws.message(request("OPTIONS", "sip:127.0.0.1", n=99), flow)  # still serving
        last = None
        while not flow.outbox.empty():
            last = flow.outbox.get_nowait()
        assert last is not None and last.startswith(b"SIP/2.0 200 OK"), last
        t.ws.close_flow(flow)
        await settle()
        assert not t.ws.calls
        for session in media.sessions:
            assert session.hung_up  # a call the junk made ends with its connection

    asyncio.run(run())


def test_wss_needs_both_the_certificate_and_its_key() -> None:
    from callbridge.config.settings import load_settings
    from callbridge.core.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_settings(environ={"CALLBRIDGE_HTTP_TLS_CERT": "/etc/cert.pem"})
    assert exc.value.field == "http.tls_key" and "CALLBRIDGE_HTTP_TLS_KEY" in str(exc.value)
    both = {"CALLBRIDGE_HTTP_TLS_CERT": "c.pem", "CALLBRIDGE_HTTP_TLS_KEY": "k.pem"}
    assert load_settings(environ=both).http.tls_key == "k.pem"
