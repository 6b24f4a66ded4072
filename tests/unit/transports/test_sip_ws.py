"""SIP over WebSocket in the SIP transport (transports/sip/ws_*.py, webrtc_calls.py) on fake
sockets: each connection a flow with a pseudo address, what the UA sends for it goes to its
socket (adapted: Via WS, Contact ;transport=ws, `received` the real IP), REGISTER with digest
and ACLs, INVITE with a WebRTC offer -> the injected media -> 180/200 with its answer, BYE
either way, CANCEL before the answer, and a closed connection ending its calls and bindings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.errors import TransportError
from callbridge.core.ports import CallLeg, LegInfo, Rejection
from callbridge.sip.access import InboundPolicy, parse_networks
from callbridge.sip.digest import DigestClient, parse_challenge
from callbridge.sip.digest_server import DigestServer
from callbridge.sip.message import SipRequest, SipResponse, parse
from callbridge.sip.overload import GuardConfig
from callbridge.transports.sip.transport import SipTransport, SipTransportConfig
from callbridge.transports.sip.ws_flow import FLOW_SUFFIX, Flow, Flows, for_flow, is_flow_addr

REMOTE = ("127.0.0.1", 50123)
OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
ANSWER = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


class Acceptor:
    def admit(self, info: LegInfo) -> None:
        if info.local_user not in ("echo", "agent", ""):
            raise Rejection(Rejection.NOT_FOUND, "no such route")

    def start(self, leg: CallLeg) -> None:  # pragma: no cover - legs come from the media
        raise AssertionError("the SIP transport starts no leg of its own for WS calls")


class Session:
    def __init__(self) -> None:
        self.answer_sdp = ANSWER
        self.done = asyncio.Event()
        self.hung_up: list[str] = []
        self.reason = "agent_hangup"

    async def wait_ended(self) -> str:
        await self.done.wait()
        return self.reason

    async def hang_up(self, reason: str) -> None:
        self.hung_up.append(reason)
        self.reason = reason
        self.done.set()


class Media:
    def __init__(self) -> None:
        self.offers: list[tuple[str, LegInfo]] = []
        self.sessions: list[Session] = []
        self.gate: asyncio.Event | None = None  # hold answers back (CANCEL tests)
        self.fail: Exception | None = None

    async def answer(self, offer_sdp: str, info: LegInfo) -> Session:
        self.offers.append((offer_sdp, info))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        session = Session()
        self.sessions.append(session)
        return session


def transport(
    *,
    users: dict[str, str] | None = None,
    allow: str = "",
    auth_routes: str = "",
    guard: GuardConfig | None = None,
) -> SipTransport:
    config = SipTransportConfig(
        host="127.0.0.1",
        port=5099,
        inbound=InboundPolicy(
            allow_from=parse_networks(allow),
            auth_routes=frozenset(r for r in auth_routes.split(",") if r),
        ),
        auth=DigestServer("test", users, algorithms=("MD5",)) if users else None,
        guard=guard or GuardConfig(),
    )
    return SipTransport(config, FakeClock(), Acceptor())


def drain(flow: Flow) -> list[SipRequest | SipResponse]:
    out = []
    while not flow.outbox.empty():
        data = flow.outbox.get_nowait()
        if data is not None:
            out.append(parse(data))
    return out


def statuses(messages: list[SipRequest | SipResponse]) -> list[int]:
    return [m.status for m in messages if isinstance(m, SipResponse)]


def request(
    method: str,
    uri: str = "sip:echo@127.0.0.1",
    *,
    n: int = 1,
    cseq: int = 1,
    extra: Callable[[], str] | str = "",
    body: str = "",
    to_tag: str = "",
    branch: str = "",
) -> bytes:
    extra_text = extra() if callable(extra) else extra
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK{branch or f'{method}{n}{cseq}'}\r\n"
        f"Max-Forwards: 70\r\nTo: {to}\r\nFrom: <sip:alice@127.0.0.1>;tag=ft{n}\r\n"
        f"Call-ID: call{n}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:k3l2@df7jal23ls0d.invalid;transport=ws>;expires=300\r\n"
        f"{extra_text}{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


# ---- flows ----------------------------------------------------------------------------------


def test_each_flow_has_its_own_unresolvable_address_and_its_real_peer() -> None:
    flows = Flows()
    a, b = flows.open(REMOTE), flows.open(("10.0.0.9", 4000), secure=True)
    assert a.addr != b.addr and is_flow_addr(a.addr) and a.addr[0].endswith(FLOW_SUFFIX)
    assert not is_flow_addr(("127.0.0.1", 5060))
    assert flows.get(a.addr) is a and flows.real(b.addr) == ("10.0.0.9", 4000)
    assert flows.real(("192.0.2.1", 5060)) == ("192.0.2.1", 5060)
    closed: list[Flow] = []
    flows.on_close.append(closed.append)
    flows.closed(a)
    flows.closed(a)  # twice: told once
    assert closed == [a] and flows.get(a.addr) is None and a.closed and len(flows) == 1


def test_a_flow_that_stops_reading_is_closed_not_buffered_without_end() -> None:
    flow = Flows().open(REMOTE)
    sent = [flow.send(b"x") for _ in range(300)]
    assert sent.count(True) == 256 and flow.closed
    assert not flow.send(b"y")


def test_for_flow_says_ws_in_our_via_and_contact_and_the_real_ip_as_received() -> None:
    flow = Flows().open(REMOTE)
    bye = (
        b"BYE sip:k3l2@df7jal23ls0d.invalid;transport=ws SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKx;rport\r\n"
        b"To: <sip:alice@127.0.0.1>;tag=a\r\nFrom: <sip:echo@127.0.0.1>;tag=b\r\n"
        b"Call-ID: c\r\nCSeq: 2 BYE\r\nContact: <sip:echo@127.0.0.1:5099>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    out = parse(for_flow(bye, flow))
    assert isinstance(out, SipRequest)
    assert str(out.vias[0]).startswith("SIP/2.0/WS 127.0.0.1:5099;branch=z9hG4bKx")
    assert out.headers.get("Contact") == "<sip:echo@127.0.0.1:5099;transport=ws>"
    secure = Flows().open(REMOTE, secure=True)
    assert parse(for_flow(bye, secure)).vias[0].transport == "WSS"
    ok = (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/WSS x.invalid;branch=z9hG4bKy;received={flow.addr[0]}\r\n"
        "To: <sip:echo@127.0.0.1>;tag=b\r\nFrom: <sip:alice@127.0.0.1>;tag=a\r\n"
        "Call-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:echo@127.0.0.1:5099>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    resp = parse(for_flow(ok, flow))
    assert resp.vias[0].param("received") == "127.0.0.1"
    assert resp.headers.get("Contact") == "<sip:echo@127.0.0.1:5099;transport=ws>"
    assert for_flow(b"not sip", flow) == b"not sip"


# ---- the endpoint: routing, malformed input ---------------------------------------------------


async def test_options_over_a_flow_is_answered_on_that_flow_and_udp_gets_nothing() -> None:
    t = transport()
    udp: list[tuple[bytes, object]] = []

    class Udp:
        def sendto(self, data: bytes, addr: object) -> None:
            udp.append((data, addr))

        def close(self) -> None:
            pass

    t.endpoint._transport = Udp()  # type: ignore[assignment]
    a, b = t.ws.open_flow(REMOTE), t.ws.open_flow(("127.0.0.1", 50124))
    t.ws.message(request("OPTIONS", "sip:127.0.0.1"), a)
    (resp,) = drain(a)
    assert isinstance(resp, SipResponse) and resp.status == 200
    assert resp.vias[0].param("received") == "127.0.0.1"  # never the pseudo host
    assert drain(b) == [] and udp == []
    t.endpoint.run(lambda now: t.ua.request(parse(request("OPTIONS")), ("192.0.2.7", 5060), now)[1])  # type: ignore[arg-type]
    assert len(udp) == 1 and udp[0][1] == ("192.0.2.7", 5060)
    t.endpoint.close()


@pytest.mark.parametrize(
    ("frame", "answered"),
    [
        (b"", False),
        (b"\r\n\r\n", False),  # RFC 5626 §3.5.1 keep-alive
        (b"\x00\xff\xfe garbage", False),
        (b"HELLO WORLD\r\n\r\n", False),
        (request("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"), True),
        (request("REGISTER").replace(b"CSeq: 1 REGISTER", b"CSeq: x"), True),
    ],
)
async def test_malformed_frames_get_400_on_the_socket_or_are_dropped(
    frame: bytes, answered: bool
) -> None:
    t = transport()
    flow = t.ws.open_flow(REMOTE)
    t.ws.message(frame, flow)
    got = []  # the 400 copies the bad CSeq: read its status line only
    while not flow.outbox.empty():
        data = flow.outbox.get_nowait()
        assert data is not None
        got.append(data.split(b"\r\n", 1)[0])
    assert [g.startswith(b"SIP/2.0 400 ") for g in got] == ([True] if answered else []), got
    t.ws.message(request("OPTIONS", "sip:127.0.0.1", n=9), flow)  # still serving
    assert statuses(drain(flow)) == [200]


async def test_a_banned_source_is_dropped_on_its_flows_too() -> None:
    t = transport(guard=GuardConfig(pike_rate=20))
    flow = t.ws.open_flow(("203.0.113.5", 999))
    for i in range(200):  # over the per-source request rate: banned
        t.ws.message(request("OPTIONS", "sip:127.0.0.1", n=i), flow)
    drain(flow)
    t.ws.message(request("OPTIONS", "sip:127.0.0.1", n=500), flow)
    assert drain(flow) == []


# ---- REGISTER -------------------------------------------------------------------------------


def _authorized(challenge_resp: SipResponse, user: str, password: str) -> str:
    challenge = parse_challenge(challenge_resp.headers.get_all("WWW-Authenticate")[0])
    auth = DigestClient(user, password).authorize(challenge, "REGISTER", "sip:127.0.0.1")
    return f"Authorization: {auth.value}\r\n"


async def test_register_is_challenged_then_bound_to_its_flow_and_dropped_when_it_closes() -> None:
    t = transport(users={"alice": "s3cret"})
    flow = t.ws.open_flow(REMOTE)
    t.ws.message(_register_to("alice"), flow)
    (challenge,) = drain(flow)
    assert isinstance(challenge, SipResponse) and challenge.status == 401
    t.ws.message(_register_to("alice", _authorized(challenge, "alice", "s3cret"), 2), flow)
    (ok,) = drain(flow)
    assert isinstance(ok, SipResponse) and ok.status == 200, ok
    assert ok.headers.get("Contact") == "<sip:k3l2@df7jal23ls0d.invalid;transport=ws>;expires=300"
    (binding,) = t.ws.registrar.bindings()
    assert (binding.aor_user, binding.auth_user) == ("alice", "alice")
    t.ws.close_flow(flow)
    assert t.ws.registrar.bindings() == []


def _register_to(user: str, extra: str = "", cseq: int = 1) -> bytes:
    raw = request("REGISTER", "sip:127.0.0.1", cseq=cseq, extra=extra)
    return raw.replace(b"To: <sip:127.0.0.1>", f"To: <sip:{user}@127.0.0.1>".encode())


async def test_register_refusals_wrong_password_other_user_acl() -> None:
    t = transport(users={"alice": "s3cret", "bob": "other"})
    flow = t.ws.open_flow(REMOTE)
    t.ws.message(_register_to("alice"), flow)
    (challenge,) = drain(flow)
    assert isinstance(challenge, SipResponse)
    t.ws.message(_register_to("alice", _authorized(challenge, "alice", "wrong"), 2), flow)
    assert statuses(drain(flow)) == [403]
    # bob's password is right, but alice's address-of-record is not bob's to claim
    t.ws.message(_register_to("alice", _authorized(challenge, "bob", "other"), 3), flow)
    assert statuses(drain(flow)) == [403]
    acl = transport(allow="10.0.0.0/8")
    far = acl.ws.open_flow(REMOTE)
    acl.ws.message(_register_to("alice"), far)
    assert statuses(drain(far)) == [403]


async def test_register_without_users_binds_and_expires_zero_unbinds() -> None:
    t = transport()
    flow = t.ws.open_flow(REMOTE)
    t.ws.message(_register_to("carol"), flow)
    assert statuses(drain(flow)) == [200] and len(t.ws.registrar.bindings()) == 1
    t.ws.message(_register_to("carol", cseq=2).replace(b"expires=300", b"expires=0"), flow)
    (ok,) = drain(flow)
    assert isinstance(ok, SipResponse) and ok.status == 200 and "Contact" not in ok.headers
    assert t.ws.registrar.bindings() == []


# ---- calls ----------------------------------------------------------------------------------


async def _invite(
    t: SipTransport, media: Media, flow: Flow, n: int = 1, user: str = "echo"
) -> None:
    t.ws.media = media
    t.ws.message(request("INVITE", f"sip:{user}@127.0.0.1", n=n, body=OFFER), flow)
    await settle()


async def test_invite_over_a_flow_gets_a_webrtc_answer_and_a_ws_leg() -> None:
    t, media = transport(), Media()
    flow = t.ws.open_flow(REMOTE)
    await _invite(t, media, flow)
    msgs = drain(flow)
    assert statuses(msgs) == [100, 180, 200]
    ok = msgs[-1]
    assert ok.body.decode() == ANSWER and ok.content_type == "application/sdp"
    assert ok.headers.get("Contact") == "<sip:echo@127.0.0.1:5099;transport=ws>"
    ((offer, info),) = media.offers
    assert offer == OFFER and (info.transport, info.local_user) == ("ws", "echo")
    assert info.ids["remote_addr"] == "127.0.0.1:50123" and info.ids["sip_call_id"] == "call1"
    assert len(t.ws.calls) == 1


async def test_bye_from_the_phone_ends_the_media_session() -> None:
    t, media = transport(), Media()
    flow = t.ws.open_flow(REMOTE)
    await _invite(t, media, flow)
    tag = drain(flow)[-1].to.tag or ""
    t.ws.message(request("ACK", to_tag=tag, branch="ack1"), flow)
    t.ws.message(request("BYE", cseq=2, to_tag=tag), flow)
    await settle()
    assert statuses(drain(flow)) == [200]
    assert media.sessions[0].hung_up == ["remote_bye"] and len(t.ws.calls) == 0


async def test_our_side_ending_sends_bye_over_the_flow() -> None:
    t, media = transport(), Media()
    flow = t.ws.open_flow(REMOTE)
    await _invite(t, media, flow)
    tag = drain(flow)[-1].to.tag or ""
    t.ws.message(request("ACK", to_tag=tag, branch="ack1"), flow)
    media.sessions[0].done.set()  # the agent hung up
    await settle()
    (bye,) = drain(flow)
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert str(bye.vias[0]).startswith("SIP/2.0/WS ")
    assert len(t.ws.calls) == 0


async def test_a_closed_connection_ends_its_calls_remote_hangup() -> None:
    t, media = transport(), Media()
    flow, other = t.ws.open_flow(REMOTE), t.ws.open_flow(("127.0.0.1", 50200))
    await _invite(t, media, flow, n=1)
    await _invite(t, media, other, n=2)
    t.ws.close_flow(flow)
    await settle()
    assert media.sessions[0].hung_up == ["remote_hangup"]
    assert media.sessions[1].hung_up == []
    assert len(t.ws.calls) == 1  # the other flow's call goes on
    assert drain(flow) == []  # the closed flow's BYE went nowhere


async def test_cancel_before_the_answer_gets_487_and_closes_the_half_made_session() -> None:
    t, media = transport(), Media()
    media.gate = asyncio.Event()
    flow = t.ws.open_flow(REMOTE)
    await _invite(t, media, flow)
    t.ws.message(request("CANCEL", branch="INVITE11"), flow)
    await settle()
    media.gate.set()
    await settle()
    assert sorted(statuses(drain(flow))) == [100, 200, 487]
    assert media.sessions[0].hung_up == ["cancelled"] and len(t.ws.calls) == 0


@pytest.mark.parametrize(
    ("user", "fail", "status"),
    [
        ("nobody", None, 404),
        ("echo", TransportError("not WebRTC audio"), 488),
        ("echo", RuntimeError("boom"), 500),
    ],
)
async def test_invite_refusals_map_to_statuses(
    user: str, fail: Exception | None, status: int
) -> None:
    t, media = transport(), Media()
    media.fail = fail
    flow = t.ws.open_flow(REMOTE)
    if user == "nobody":

        async def reject(offer_sdp: str, info: LegInfo) -> Session:
            raise Rejection(Rejection.NOT_FOUND, "no such route")

        media.answer = reject  # type: ignore[method-assign]
    await _invite(t, media, flow, user=user)
    assert statuses(drain(flow))[-1] == status
    assert len(t.ws.calls) == 0


async def test_invite_needs_digest_where_the_route_does_and_media_must_be_on() -> None:
    t, media = transport(users={"alice": "s3cret"}, auth_routes="echo"), Media()
    flow = t.ws.open_flow(REMOTE)
    await _invite(t, media, flow)
    assert statuses(drain(flow))[-1] == 401 and media.offers == []
    off = transport()
    flow2 = off.ws.open_flow(REMOTE)
    off.ws.message(request("INVITE", body=OFFER), flow2)
    await settle()
    assert statuses(drain(flow2))[-1] == 488
