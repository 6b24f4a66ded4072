"""Issue 13 §4 tests 2 and 4: SIP over WebSocket (RFC 7118) with the two web SIP stacks people
use, SIP.js 0.21.2 and JsSIP 3.13.8 (vendored bundles, tests/peers/webphones/README.md), in
Debian's headless Chromium (peerlib/browser.py's recipe), and a raw WebSocket peer.

2. Each stack's page REGISTERs at ws://127.0.0.1:<http>/sip with digest (`sip.auth_users`
   alice; both stacks answer MD5 only, hence `auth_algorithms = "MD5"`), calls sip:echo@
   (also challenged: `auth_routes = "echo"`) and hears its own audio back: the fake microphone
   plays a sequence of tones, the page captures what arrives with WebAudio, and the same tone
   sequence, in order, must be in it. Then it hangs up (BYE from the page); the call record
   says transport `ws` and carries the WebRTC leg's stats.
4. Bad input: a WebSocket without the `sip` subprotocol is refused at the handshake; garbage
   and malformed SIP get a 400 on the socket or are dropped, and the gateway keeps serving
   (an OPTIONS on the same socket is answered, a new connection registers).
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import browser
from .peerlib.callbridge import CallbridgeProcess
from .peerlib.process import free_port, wait_true

pytestmark = pytest.mark.peer

WEBPHONES = Path(__file__).parent / "webphones"
USER, PASSWORD = "alice", "s3cret"
SIP_WS_ENV = {
    "CALLBRIDGE_DEFAULT_AGENT": "echo",
    "CALLBRIDGE_SIP_AUTH_USERS": f"{USER}:{PASSWORD}, bob:other",
    "CALLBRIDGE_SIP_AUTH_ROUTES": "echo",
    "CALLBRIDGE_SIP_ALLOW_FROM": "127.0.0.0/8",
    # SIP.js 0.21 and JsSIP 3.13 answer only the first challenge, and only if it is MD5.
    "CALLBRIDGE_SIP_AUTH_ALGORITHMS": "MD5",
}
TONES_HZ = (450, 750, 1050, 1350, 1650)  # under 4 kHz: the pipeline is 8 kHz in the middle
TONE_S = 0.4
LEAD_S = 1.5


def _netns_or_rerun(request: pytest.FixtureRequest) -> bool:
    """True: run here. False: it ran (and passed) in a private network namespace."""
    if browser.in_private_netns():
        return True
    assert not os.environ.get(browser.NETNS_ENV), "unshare gave a namespace with more than lo"
    require_tools("unshare", "ip")
    rc, out = browser.run_in_private_netns(request.node.nodeid)
    print(out)
    assert rc == 0, f"the test failed inside its network namespace:\n{out}"
    return False


# ---------------------------------------------------------------------------- the microphone


def tone_wav(path: Path) -> Path:
    """Silence, then each tone of TONES_HZ for TONE_S, then a long silence (Chromium loops the
    file: the tail keeps the sequence from coming round again during the test)."""
    rate = browser.MIC_RATE
    t = np.arange(round(TONE_S * rate)) / rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # no clicks between tones
    tones = [0.3 * np.sin(2 * np.pi * f * t) * fade for f in TONES_HZ]
    pcm = np.concatenate([np.zeros(round(LEAD_S * rate)), *tones, np.zeros(60 * rate)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((pcm * 32767).astype("<i2").tobytes())
    return path


def tone_sequence(pcm: npt.NDArray[np.float64], rate: int, window_s: float = 0.05) -> list[int]:
    """The dominant frequency of each loud window, runs of the same tone merged: what a tone
    sequence sounds like after codecs, resampling and jitter buffers."""
    n = round(window_s * rate)
    out: list[int] = []
    run: list[int] = []
    for i in range(0, len(pcm) - n, n):
        x = pcm[i : i + n]
        if np.sqrt(np.mean(x**2)) < 0.01:
            run = []
            continue
        spectrum = np.abs(np.fft.rfft(x * np.hanning(n)))
        f = round(float(np.argmax(spectrum)) * rate / n)
        tone = min(TONES_HZ, key=lambda h: abs(h - f))
        if abs(tone - f) > 60:
            run = []
            continue
        run.append(tone)
        # A tone counts once it held for three windows (150 ms): no codec transient does.
        if len(run) >= 3 and run[-3:] == [tone] * 3 and (not out or out[-1] != tone):
            out.append(tone)
    return out


# ---------------------------------------------------------------------------- the page


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """The web phone page on its own origin (http://127.0.0.1 is a secure context)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM), for wss://."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@contextmanager
def webphone(url: str, fake_wav: Path, tls: bool = False) -> Iterator[tuple[Any, list[str]]]:
    from playwright.sync_api import sync_playwright

    assert browser.in_private_netns(), "Chromium runs only in a network namespace with only lo"
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=browser.CHROMIUM,
            headless=True,
            # wss:// to our self-signed certificate
            args=browser.chromium_args(fake_wav) + (["--ignore-certificate-errors"] if tls else []),
            ignore_default_args=["--mute-audio"],
        )
        try:
            page = chromium.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(url)
            yield page, console
        finally:
            chromium.close()


def _phone(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate(
            "({state: phone.state, registered: phone.registered, errors: phone.errors, "
            "events: phone.events.slice(-8), chunks: phone.chunks.length})"
        )
    )


def _wait_phone(page: Any, console: list[str], predicate: str, timeout: float, what: str) -> None:
    def check() -> bool:
        return bool(page.evaluate(predicate))

    try:
        wait_true(check, timeout, what, interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_phone(page)} console {console[-10:]}") from None


def _received(page: Any) -> tuple[npt.NDArray[np.float64], int]:
    data = base64.b64decode(page.evaluate("phone.takeAudio()"))
    rate = int(page.evaluate("phone.rate"))
    return np.frombuffer(data, "<i2").astype(np.float64) / 32768, rate


def _call_echo_and_hear_it(
    stack: str, gw: CallbridgeProcess, site: str, tmp_path: Path, hangup_by: str, tls: bool
) -> dict[str, Any]:
    http_port = gw.config.http_port
    scheme = "https" if tls else "http"
    api = f"{scheme}://127.0.0.1:{http_port}"
    transport = "wss" if tls else "ws"
    ws = f"{transport}://127.0.0.1:{http_port}/sip"
    query = f"stack={stack}&ws={ws}&domain=127.0.0.1&user={USER}&password={PASSWORD}"
    wav = tone_wav(tmp_path / "tones.wav")
    with webphone(f"{site}/phone.html?{query}", wav, tls) as (page, console):
        page.evaluate("phone.start()")
        _wait_phone(page, console, "() => phone.registered", 15, f"{stack} to register")
        registered = gw.wait_for("sip.ws_registered", timeout=5, aor=USER)[0]
        assert registered["auth_user"] == USER, registered

        page.evaluate("phone.call('sip:echo@127.0.0.1')")
        _wait_phone(page, console, "() => phone.state === 'established'", 20, f"{stack}'s call")
        started = gw.wait_for("call.started", timeout=10)[0]
        call_id = str(started["call_id"])
        assert (started["transport"], started["agent"]) == (transport, "echo"), started
        assert started.get("auth_user") == USER, started

        # The tones come back: the whole sequence, in order, in what the page received.
        deadline = time.monotonic() + 15
        heard: list[int] = []
        while time.monotonic() < deadline:
            time.sleep(0.5)
            pcm, rate = _received(page)
            heard = tone_sequence(pcm, rate)
            if heard == list(TONES_HZ):
                break
        live = httpx.get(f"{api}/calls/{call_id}", timeout=5, verify=False).json()
        page_stats = page.evaluate(
            """async () => { const out = {};
               (await phone.pc.getStats()).forEach((s) => {
                 if (s.type === 'inbound-rtp' && s.kind === 'audio') out.inbound = s; });
               return out; }"""
        )
        if hangup_by == "page":  # the phone's BYE
            page.evaluate("phone.hangup()")
        else:  # ours: the agent's side hangs up, the phone gets a BYE over its WebSocket
            r = httpx.post(f"{api}/calls/{call_id}/hangup", timeout=5, verify=False)
            assert r.status_code == 202, r.text
        _wait_phone(page, console, "() => phone.state === 'ended'", 10, f"{stack} to hang up")
        ended = gw.wait_for("call.ended", timeout=10, call_id=call_id)[0]
        page.evaluate("phone.stop()")
        gw.wait_for("sip.ws_closed", timeout=10)
        errors = page.evaluate("phone.errors")
    stored = httpx.get(f"{api}/calls/{call_id}", timeout=5, verify=False).json()
    print(
        f"{stack}: tones heard {heard}\nlive record {live}\npage inbound {page_stats}\n"
        f"call.ended {ended}"
    )
    assert heard == list(TONES_HZ), f"{stack} did not hear its tones back: {heard}"
    assert live["transport"] == transport and live["legs"][0]["transport"] == transport, live
    stats = live["legs"][0]["stats"]
    assert stats["rtp_packets_in"] > 50 and stats["bytes_in"] > 5000, stats
    assert page_stats["inbound"]["bytesReceived"] > 5000, page_stats
    reason = "remote_bye" if hangup_by == "page" else "api"
    assert ended["reason"] == reason, ended
    assert ended["rtp_packets_in"] > 50 and "jitter_ms" in ended, ended
    assert stored["transport"] == transport and stored["end_reason"] == reason, stored
    if hangup_by == "gateway":
        assert gw.events("sip.ws_call_hangup", reason="api"), "no BYE went to the phone"
    assert not errors, errors
    return ended


# Each stack hangs up one way: SIP.js sends the BYE, JsSIP gets ours; and SIP.js over wss://.
@pytest.mark.parametrize(
    ("stack", "hangup_by", "tls"),
    [("sipjs", "page", False), ("jssip", "gateway", False), ("sipjs", "page", True)],
    ids=["sipjs-ws", "jssip-ws", "sipjs-wss"],
)
def test_web_phone_registers_calls_echo_and_hears_itself(
    stack: str,
    hangup_by: str,
    tls: bool,
    request: pytest.FixtureRequest,
    gateway_factory: GatewayFactory,
    tmp_path: Path,
) -> None:
    if not _netns_or_rerun(request):
        return
    require_tools("chromium")
    env = dict(SIP_WS_ENV)
    if tls:
        require_tools("openssl")
        cert, key = self_signed(tmp_path)
        env.update({"CALLBRIDGE_HTTP_TLS_CERT": str(cert), "CALLBRIDGE_HTTP_TLS_KEY": str(key)})
    gw = gateway_factory(extra_env=env)
    ready = gw.wait_for("gateway.ready", timeout=60)[0]
    assert ready["sip_ws"] == f"{'wss' if tls else 'ws'}://127.0.0.1:{gw.config.http_port}/sip"
    with static_server(WEBPHONES) as site:
        _call_echo_and_hear_it(stack, gw, site, tmp_path, hangup_by, tls)
    if tls:
        assert gw.events("sip.ws_open", secure=True), "the flow was not a wss:// one"
    assert gw.events("call.challenged", user="echo"), "the INVITE was not challenged"
    gw.assert_no_crash()


# ---------------------------------------------------------------------------- raw WebSocket

OPTIONS = (
    "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/WS raw.invalid;branch=z9hG4bK{n}\r\n"
    "Max-Forwards: 70\r\nTo: <sip:127.0.0.1>\r\nFrom: <sip:raw@raw.invalid>;tag=r{n}\r\n"
    "Call-ID: raw{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
# A request line and transaction headers, but a CSeq that is not one: 400 (RFC 3261 §8.2).
BAD_CSEQ = (
    "INVITE sip:echo@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/WS raw.invalid;branch=z9hG4bKbad1\r\n"
    "Max-Forwards: 70\r\nTo: <sip:echo@127.0.0.1>\r\nFrom: <sip:raw@raw.invalid>;tag=b1\r\n"
    "Call-ID: bad1\r\nCSeq: banana INVITE\r\nContact: <sip:raw@raw.invalid;transport=ws>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_raw_websocket_subprotocol_garbage_and_the_gateway_keeps_serving(
    gateway_factory: GatewayFactory,
) -> None:
    import asyncio

    import websockets
    from websockets.exceptions import InvalidStatus

    gw = gateway_factory(extra_env=SIP_WS_ENV)
    gw.wait_for("gateway.ready", timeout=60)
    url = f"ws://127.0.0.1:{gw.config.http_port}/sip"

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        # RFC 7118 §4.1: no `sip` subprotocol, no connection.
        for protocols in (None, ["xmpp"]):
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(url, subprotocols=protocols):  # type: ignore[arg-type]
                    pass
            out.setdefault("refused", []).append(refused.value.response.status_code)
        async with websockets.connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            out["subprotocol"] = ws.subprotocol
            for junk in (b"\x00\xff" * 100, "HELLO WORLD\r\n\r\n", "\r\n\r\n", "SIP/2.0 999"):
                await ws.send(junk)
            await ws.send(BAD_CSEQ)
            replies = []
            await ws.send(OPTIONS.format(n=1))
            while True:  # the 400 (if any) comes first, then the OPTIONS answer
                reply = str(await asyncio.wait_for(ws.recv(), 5))
                replies.append(reply.split("\r\n", 1)[0])
                if "CSeq: 1 OPTIONS" in reply:
                    break
            out["replies"] = replies
            await ws.send(b"X" * 70000)  # over the frame bound: the connection closes
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        async with websockets.connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send(OPTIONS.format(n=2))
            out["after"] = str(await asyncio.wait_for(ws.recv(), 5)).split("\r\n", 1)[0]
        return out

    out = asyncio.run(scenario())
    print(out)
    assert out["refused"] == [403, 403], out
    assert out["subprotocol"] == "sip", out
    # The garbage is dropped (nothing to answer it by); the bad CSeq gets its 400.
    assert len(out["replies"]) == 2, out
    assert out["replies"][0].startswith("SIP/2.0 400 Malformed CSeq"), out
    assert out["replies"][1] == "SIP/2.0 200 OK", out
    assert out["after"] == "SIP/2.0 200 OK", out
    assert gw.events("sip.ws_refused"), "the refused handshakes were not logged"
    assert gw.events("sip.bad_message", transport="ws"), "the garbage was not counted"
    gw.assert_no_crash()


def _invite(offer: str, n: int, route: str = "agent") -> str:
    return (
        f"INVITE sip:{route}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/WS raw.invalid;branch=z9hG4bKinv{n}\r\n"
        f"Max-Forwards: 70\r\nTo: <sip:{route}@127.0.0.1>\r\n"
        f"From: <sip:raw@raw.invalid>;tag=i{n}\r\nCall-ID: inv{n}\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:raw@raw.invalid;transport=ws>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(offer.encode())}\r\n\r\n{offer}"
    )


def _cancel(n: int, route: str = "agent") -> str:
    return (
        f"CANCEL sip:{route}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/WS raw.invalid;branch=z9hG4bKinv{n}\r\n"
        f"Max-Forwards: 70\r\nTo: <sip:{route}@127.0.0.1>\r\n"
        f"From: <sip:raw@raw.invalid>;tag=i{n}\r\nCall-ID: inv{n}\r\nCSeq: 1 CANCEL\r\n"
        "Content-Length: 0\r\n\r\n"
    )


def test_cancel_before_the_answer_ends_the_half_made_webrtc_session(
    gateway_factory: GatewayFactory,
) -> None:
    """A real WebRTC offer (aiortc in the test: ICE candidates, DTLS fingerprint, a=setup,
    rtcp-mux) over a raw WebSocket, CANCELled at once: 487, no call starts, the gateway's half
    -made peer connection is closed, and the next INVITE is answered with a WebRTC answer."""
    import asyncio

    import websockets
    from aiortc import RTCConfiguration, RTCPeerConnection

    from callbridge.transports.webrtc.transport import allow_loopback_candidates

    gw = gateway_factory(extra_env={"CALLBRIDGE_DEFAULT_AGENT": "echo"})
    gw.wait_for("gateway.ready", timeout=60)
    url = f"ws://127.0.0.1:{gw.config.http_port}/sip"

    # Like Chromium with --allow-loopback-in-peer-connection: offer 127.0.0.1 (in a network
    # namespace with only lo there is no other address to offer).
    allow_loopback_candidates()

    async def scenario() -> dict[str, Any]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        out: dict[str, Any] = {"offer": offer}
        try:
            async with websockets.connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
                await ws.send(_invite(offer, 1))
                await ws.send(_cancel(1))
                got: list[str] = []
                while not any(" 487 " in g for g in got):
                    got.append(str(await asyncio.wait_for(ws.recv(), 10)).split("\r\n", 1)[0])
                out["cancelled"] = got
                await ws.send(_invite(offer, 2))
                while True:
                    reply = str(await asyncio.wait_for(ws.recv(), 10))
                    if "Call-ID: inv2" in reply and reply.startswith("SIP/2.0 200"):
                        out["answer"] = reply
                        break
        finally:
            await pc.close()
        return out

    out = asyncio.run(scenario())
    print(out["cancelled"], out["answer"][:2000])
    assert out["cancelled"][0] == "SIP/2.0 100 Trying", out["cancelled"]
    assert "SIP/2.0 487 Request Terminated" in out["cancelled"], out["cancelled"]
    body = out["answer"].split("\r\n\r\n", 1)[1]
    # The 200's SDP is aiortc's WebRTC answer: DTLS-SRTP, ICE, a=setup, rtcp-mux.
    for needle in ("UDP/TLS/RTP/SAVPF", "a=fingerprint:sha-256", "a=ice-ufrag:", "a=setup:active",
                   "a=rtcp-mux", "a=candidate:"):  # fmt: skip
        assert needle in body, (needle, body)
    assert "transport=ws" in out["answer"].split("Contact:", 1)[1].split("\r\n", 1)[0]
    # No call started for the cancelled INVITE; the second INVITE's call never connects media
    # (nobody answers ICE here) and ends with our BYE when ICE gives up or the socket closes.
    started = [e for e in gw.events("call.started") if e.get("sip_call_id") == "inv1"]
    assert not started, started
    gw.wait_for("sip.ws_closed", timeout=10)
    gw.assert_no_crash()
