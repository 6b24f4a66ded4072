"""WebRTC as a transport: a browser's SDP offer -> an aiortc peer connection -> a WebRtcLeg.

Signalling is the web layer's (api/softphone.py: `POST /webrtc/offer`); this module answers
an offer (non-trickle: every local candidate is gathered before the answer goes back, as the
page sends its offer only once its own gathering completed), waits for the connection
(ICE, then DTLS-SRTP with rtcp-mux, RFC 8829 / RFC 8834), then hands the leg to the calls
layer, so the greeting starts when the browser can hear it. The peer connection itself (its
outbound track, data channel and events, as the leg's MediaPeer) is peer.py's.

Codecs: Opus at 48 kHz first, then G.711 (PCMU, PCMA); not G.722 (the pipeline is 8 kHz).
ICE servers come from settings only: aiortc's own default (a public STUN server) is never
used, so nothing external is contacted unless configured.

Loopback: aioice never gathers 127.0.0.1 (its host-address list skips it), so a browser on
the same machine that offers only loopback candidates (a network namespace with only `lo`,
or Chromium's --allow-loopback-in-peer-connection) could never be reached. We add
127.0.0.1 to aioice's host addresses; elsewhere it is one more candidate no remote pairs
with. (Found in the shared testbed's WebRTC probe, testbed/webrtc/server.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)

from callbridge.core.clock import Clock
from callbridge.core.errors import TransportError
from callbridge.core.log import event
from callbridge.core.ports import LegAcceptor, LegInfo, Rejection
from callbridge.transports.webrtc.leg import WebRtcLeg, WebRtcLegConfig
from callbridge.transports.webrtc.peer import AiortcPeer, OutboundTrack
from callbridge.transports.webrtc.receive_buffer import make_shallow

__all__ = [
    "BadOffer",
    "WebRtcConfig",
    "WebRtcTransport",
    "allow_loopback_candidates",
    "negotiate",
    "parse_ice_servers",
]

log = logging.getLogger("callbridge.transports.webrtc.transport")

MAX_OFFER_CHARS = 64 * 1024  # a browser's audio offer is a few kB
_CODECS = ("audio/opus", "audio/PCMU", "audio/PCMA")  # our preference order
_ICE_URL = re.compile(r"^(stun|turn|turns):[^\s,]+$")


class BadOffer(TransportError):
    """The offer cannot be answered (not SDP, no audio, no common codec)."""


@dataclass(frozen=True, slots=True)
class WebRtcConfig:
    ice_servers: tuple[str, ...] = ()  # stun:/turn: URLs; () = host candidates only
    ice_username: str = ""  # for turn: URLs
    ice_credential: str = field(default="", repr=False)
    connect_timeout: float = 15.0  # offer answered -> connected, or the session is dropped
    queue_frames: int = 2  # agent frames queued in the peer (40 ms): what a flush still plays
    leg: WebRtcLegConfig = WebRtcLegConfig()


def parse_ice_servers(urls: str) -> tuple[str, ...]:
    """`[webrtc] ice_servers`: a comma list of stun:/turn:/turns: URLs (RFC 7064, RFC 7065).
    Raises ValueError naming the first one that is not."""
    out = tuple(u.strip() for u in urls.split(",") if u.strip())
    for url in out:
        if not _ICE_URL.match(url):
            raise ValueError(f"not a stun:, turn: or turns: URL: {url!r}")
    return out


def _ice_servers(config: WebRtcConfig) -> list[RTCIceServer]:
    servers = []
    for url in config.ice_servers:
        if url.startswith("stun:"):
            servers.append(RTCIceServer(urls=url))
        else:
            servers.append(
                RTCIceServer(
                    urls=url, username=config.ice_username, credential=config.ice_credential
                )
            )
    return servers


_original_host_addresses = aioice.ice.get_host_addresses


def _with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _original_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    if use_ipv4 and "127.0.0.1" not in addresses:
        addresses.append("127.0.0.1")
    return addresses


def allow_loopback_candidates() -> None:
    """Gather 127.0.0.1 as a host candidate too (see the module docstring). Idempotent."""
    aioice.ice.get_host_addresses = _with_loopback


# ---- negotiation -------------------------------------------------------------------------


def _negotiated_codec(sdp: str) -> str:
    """The first payload type of the answer's audio line, by its rtpmap name."""
    pts: list[str] = []
    names: dict[str, str] = {}
    for line in sdp.splitlines():
        if line.startswith("m=audio "):
            pts = line.split()[3:]
        elif line.startswith("a=rtpmap:"):
            pt, _, rest = line[len("a=rtpmap:") :].partition(" ")
            names[pt] = rest.split("/")[0]
    if not pts or pts[0] not in names:
        raise BadOffer("the answer has no audio codec")
    return names[pts[0]]


async def negotiate(
    offer_sdp: str, config: WebRtcConfig
) -> tuple[RTCPeerConnection, AiortcPeer, str]:
    """Answer a browser's offer: (peer connection, the leg's peer, answer SDP). Gathering
    completes inside setLocalDescription, so the answer carries every candidate."""
    if len(offer_sdp) > MAX_OFFER_CHARS:
        raise BadOffer("offer too large")
    if "m=audio" not in offer_sdp:
        raise BadOffer("the offer has no audio")
    # iceServers=[] always: aiortc's default (None) is a public STUN server.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=_ice_servers(config)))
    # Our first preference decides the rate; corrected below from what was agreed.
    outbound = OutboundTrack(48000, config.queue_frames)
    peer = AiortcPeer(pc, outbound, "opus")  # its handlers must see the offer's track event
    try:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BadOffer(f"not an SDP offer aiortc can take: {exc}") from None
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise BadOffer("the offer has no audio")
        make_shallow(audio[0].receiver)  # 60 ms less delay (receive_buffer.py)
        caps = RTCRtpReceiver.getCapabilities("audio")
        assert caps is not None
        preferred = [c for name in _CODECS for c in caps.codecs if c.mimeType == name]
        audio[0].setCodecPreferences(preferred)
        audio[0].sender.replaceTrack(outbound)
        audio[0].direction = "sendrecv"
        try:
            answer = await pc.createAnswer()
        except ValueError as exc:  # e.g. no common codec
            raise BadOffer(str(exc)) from None
        await pc.setLocalDescription(answer)
        codec = _negotiated_codec(pc.localDescription.sdp)
        if codec.lower() not in ("opus", "pcmu", "pcma"):
            raise BadOffer(f"codec {codec} was agreed; want Opus or G.711")
        outbound.rate = 48000 if codec.lower() == "opus" else 8000
        outbound._time_base = fractions.Fraction(1, outbound.rate)
        peer._codec = "opus" if codec.lower() == "opus" else codec.upper()
        return pc, peer, pc.localDescription.sdp
    except BaseException:
        await pc.close()
        raise


# ---- the transport -----------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    id: str
    peer: AiortcPeer
    info: LegInfo
    leg: WebRtcLeg | None = None
    task: asyncio.Task[None] | None = None


class WebRtcTransport:
    """Offers in, legs out; the live sessions by their id (the page's hang-up names one)."""

    def __init__(
        self,
        clock: Clock,
        acceptor: LegAcceptor,
        config: WebRtcConfig | None = None,
        *,
        negotiate_fn: Callable[[str, WebRtcConfig], Any] = negotiate,
    ) -> None:
        self.clock = clock
        self.acceptor = acceptor
        self.config = config or WebRtcConfig()
        self.accepting = True
        self.sessions: dict[str, _Session] = {}
        self._negotiate = negotiate_fn
        allow_loopback_candidates()

    @property
    def legs(self) -> list[WebRtcLeg]:
        return [s.leg for s in self.sessions.values() if s.leg is not None]

    def stop_accepting(self) -> None:
        self.accepting = False

    async def offer(
        self, sdp: str, route: str, remote: str = "", info: LegInfo | None = None
    ) -> tuple[str, str]:
        """Answer an offer for `route`: (session id, answer SDP). The leg reaches the calls
        layer once connected. Raises Rejection (no such route, busy) or BadOffer. `info`:
        the leg's identity when another signalling carries the offer (SIP over WebSocket)."""
        session_id = secrets.token_urlsafe(12)
        info = info or LegInfo(
            transport="webrtc",
            direction="inbound",
            local_user=route,
            remote_uri=f"webrtc:{remote}" if remote else "webrtc:",
            ids={**({"remote_addr": remote} if remote else {})},
        )
        info.ids["webrtc_session"] = session_id
        if not self.accepting:
            raise Rejection(Rejection.UNAVAILABLE, "shutting down")
        self.acceptor.admit(info)  # before the costly part: ICE gathering, DTLS
        _, peer, answer = await self._negotiate(sdp, self.config)
        info.ids["codec"] = peer.codec
        session = _Session(session_id, peer, info)
        self.sessions[session_id] = session
        session.task = asyncio.get_running_loop().create_task(
            self._serve(session), name=f"webrtc-{session_id}"
        )
        event(log, "webrtc.offer", session=session_id, route=route, remote=remote,
              codec=peer.codec)  # fmt: skip
        return session_id, answer

    async def _serve(self, session: _Session) -> None:
        peer = session.peer
        try:
            try:
                async with asyncio.timeout(self.config.connect_timeout):
                    await peer.connected.wait()
            except TimeoutError:
                pass
            if peer.pc.connectionState != "connected" or not self.accepting:
                event(log, "webrtc.not_connected", logging.WARNING, session=session.id,
                      state=peer.pc.connectionState)  # fmt: skip
                return
            leg = WebRtcLeg(peer, self.clock, session.info, self.config.leg)
            session.leg = leg
            try:
                self.acceptor.start(leg)
            except Rejection as rej:  # the route went away (or we filled up) meanwhile
                event(log, "call.rejected", transport="webrtc", session=session.id,
                      reason=rej.kind)  # fmt: skip
                return
            await leg.wait_ended()
        finally:
            self.sessions.pop(session.id, None)
            if session.leg is not None:
                session.leg.request_hangup("error")  # no-op when it ended normally
                await session.leg.aclose()
            else:
                await peer.close()

    async def hangup(self, session_id: str, reason: str = "remote_bye") -> bool:
        """The page hung up: end its call (`remote_bye`). False: no such session."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        if session.leg is not None:
            session.leg.core.finish(reason)
            await session.leg.aclose()
        else:
            await session.peer.close()
        return True

    async def shutdown(self, grace: float) -> None:
        """Hang up every live session and wait (bounded) for them to end."""
        self.stop_accepting()
        sessions = list(self.sessions.values())
        for s in sessions:
            if s.leg is not None:
                s.leg.request_hangup("shutdown")
            else:
                await s.peer.close()
        tasks = [s.task for s in sessions if s.task is not None]
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*tasks, return_exceptions=True)
