"""The ARI controller: a Stasis app that bridges each call to an agent over externalMedia RTP.

callbridge.asterisk.ari has the events and requests (from Asterisk's ARI swagger). Here:
- the events WebSocket (`/ari/events?app=APP`, HTTP Basic with the ari.conf user; the
  password never reaches a log line or a URL) is kept up with reconnects, backing off from
  0.5 s to 30 s; every connect and every REST call has a deadline;
- StasisStart of a caller's channel (`Stasis(APP[,ROUTE])`): the calls layer admits the leg
  (ROUTE, else `route`), we answer, bind an RTP port, POST externalMedia (RTP over UDP to
  that port, `channelId` chosen by us so its own StasisStart is recognised), create a mixing
  bridge and add both channels. The caller's channel id, the external channel id, the bridge
  id and UNICASTRTP_LOCAL_ADDRESS/PORT go into the leg's ids, so every log line of the call
  and its record carry them;
- the end, on either side (StasisEnd/ChannelDestroyed/ChannelHangupRequest of either
  channel, our hang-up, an RTP timeout), deletes the external channel, the caller's channel
  (unless it left for the dialplan) and the bridge: nothing is left behind in Asterisk;
- ChannelDtmfReceived becomes DtmfDigit; the agent's transfer is `continue` into
  `transfer_context` at extension = the target (or `redirect` for a `TECH/resource` target).

Why RTP and not AudioSocket encapsulation for externalMedia: it works on every Asterisk
with externalMedia (16.6+; AudioSocket encapsulation came later), UNICASTRTP_LOCAL_* gives
the media address to correlate, and our RTP stack already conceals loss and latches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from callbridge.asterisk import ari
from callbridge.asterisk.errors import AriError
from callbridge.core.clock import Clock
from callbridge.core.errors import TransportError
from callbridge.core.events import TransferResult
from callbridge.core.http_responses import let_go
from callbridge.core.log import call_context, event, event_fields
from callbridge.core.ports import LegAcceptor, LegInfo, Rejection
from callbridge.rtp.jitter import JitterConfig
from callbridge.rtp.socket import NoFreePort, PortAllocator
from callbridge.transports.asterisk.ari_leg import AriLeg

__all__ = ["AriConfig", "AriController", "AriFailed"]

log = logging.getLogger("callbridge.transports.asterisk.ari")


class AriFailed(TransportError):
    """A REST call that did not get a 2xx (or no answer in time)."""

    def __init__(self, request: ari.AriRequest, status: int | None, detail: str = "") -> None:
        super().__init__(f"{request.method} {request.path}: {status or 'no answer'} {detail}")
        self.status = status


@dataclass(frozen=True, slots=True)
class AriConfig:
    url: str = "http://127.0.0.1:8088"
    username: str = ""
    password: str = field(default="", repr=False)
    app: str = "callbridge"
    route: str = ""
    rtp_host: str = "127.0.0.1"
    format: str = "ulaw"
    transfer_context: str = ""
    request_timeout: float = 5.0
    connect_timeout: float = 10.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    rtp_timeout: float = 30.0
    jitter: JitterConfig | None = None


@dataclass(slots=True)
class _Call:
    channel_id: str
    external_id: str
    bridge_id: str
    leg: AriLeg | None = None
    left_for_dialplan: bool = False  # continue/redirect: the caller's channel is not ours


class AriController:
    def __init__(
        self,
        config: AriConfig,
        clock: Clock,
        acceptor: LegAcceptor,
        ports: PortAllocator,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.acceptor = acceptor
        self.ports = ports
        self.accepting = True
        self.connected = asyncio.Event()
        self._http = http or httpx.AsyncClient(
            base_url=config.url,
            auth=(config.username, config.password),
            timeout=config.request_timeout,
        )
        self._calls: dict[str, _Call] = {}  # by caller channel id
        self._by_external: dict[str, _Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        # What logs show: never credentials, even ones written into the URL.
        parts = urlsplit(config.url)
        self._shown_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    @property
    def legs(self) -> list[AriLeg]:
        return [c.leg for c in self._calls.values() if c.leg is not None]

    # ---- REST ------------------------------------------------------------------------------

    async def request(self, req: ari.AriRequest) -> Any:
        """One REST call; its JSON body (None when empty). AriFailed unless 2xx in time."""
        try:
            response = await self._http.request(
                req.method,
                req.path,
                params=list(req.query),
                json=dict(req.body) if req.body is not None else None,
                timeout=self.config.request_timeout,
            )
        except httpx.HTTPError as exc:
            raise AriFailed(req, None, type(exc).__name__) from None
        let_go(response)  # read: no reference cycle left for a full collection
        if not 200 <= response.status_code < 300:
            raise AriFailed(req, response.status_code, response.text[:200])
        return response.json() if response.content else None

    async def _quietly(self, req: ari.AriRequest) -> None:
        """A clean-up request: 404 (already gone) and failures are logged, not raised."""
        try:
            await self.request(req)
        except AriFailed as exc:
            if exc.status != 404:
                event(log, "ari.cleanup_failed", logging.WARNING, request=str(exc))

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self.run(), name="ari-events")

    async def shutdown(self, grace: float) -> None:
        self.accepting = False
        legs = self.legs
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(leg.hangup("shutdown") for leg in legs))
                if self._tasks:
                    await asyncio.wait(self._tasks)
        for task in [*self._tasks, *([self._runner] if self._runner else [])]:
            task.cancel()
        pending = [*self._tasks, *([self._runner] if self._runner else [])]
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        await self._http.aclose()

    def _events_url(self) -> str:
        path, query = ari.events_path(self.config.app)
        base = self.config.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base.rstrip("/") + path + "?" + "&".join(f"{k}={v}" for k, v in query)

    async def run(self) -> None:
        """Keep the events WebSocket up until cancelled."""
        token = base64.b64encode(f"{self.config.username}:{self.config.password}".encode())
        headers = {"Authorization": "Basic " + token.decode()}
        backoff = self.config.backoff_min
        while True:
            try:
                async with connect(
                    self._events_url(),
                    additional_headers=headers,
                    subprotocols=[Subprotocol("ari")],
                    open_timeout=self.config.connect_timeout,
                    max_size=ari.MAX_EVENT_BYTES,
                ) as ws:
                    event(log, "ari.connected", url=self._shown_url, app=self.config.app)
                    self.connected.set()
                    backoff = self.config.backoff_min
                    async for message in ws:
                        self._on_message(message)
                reason = "closed by Asterisk"
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                reason = str(exc) or type(exc).__name__
            self.connected.clear()
            event(log, "ari.disconnected", logging.WARNING, url=self._shown_url, reason=reason,
                  retry_in=backoff)  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.backoff_max)

    # ---- events ----------------------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        try:
            ev = ari.parse_event(message)
        except AriError as exc:
            event(log, "ari.bad_event", logging.WARNING, error=str(exc))
            return
        match ev:
            case ari.StasisStart(channel=channel, args=args):
                if channel.id in self._by_external or channel.id.startswith("callbridge-"):
                    return  # our externalMedia channel entering the app
                self._spawn(self._setup(channel, args), f"ari-{channel.id}")
            case ari.ChannelDtmfReceived(channel=channel, digit=digit, duration_ms=ms):
                call = self._calls.get(channel.id)
                if call is not None and call.leg is not None:
                    call.leg.dtmf_received(digit, ms)
            case (
                ari.StasisEnd(channel=channel)
                | ari.ChannelDestroyed(channel=channel)
                | ari.ChannelHangupRequest(channel=channel)
            ):
                call = self._calls.get(channel.id) or self._by_external.get(channel.id)
                if call is not None and call.leg is not None:
                    reason = "transferred" if call.left_for_dialplan else "remote_hangup"
                    call.leg.finish(reason)
            case ari.UnknownEvent():
                pass

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _setup(self, channel: ari.Channel, args: tuple[str, ...]) -> None:
        route = args[0] if args else self.config.route
        info = LegInfo(
            transport="ari",
            direction="inbound",
            local_user=route,
            remote_uri=channel.caller.number or channel.name,
            ids={"ari_channel_id": channel.id, "ari_channel": channel.name},
        )
        try:
            if not self.accepting:
                raise Rejection(Rejection.UNAVAILABLE, "shutting down")
            self.acceptor.admit(info)
        except Rejection as rej:
            event(log, "call.rejected", transport="ari", ari_channel_id=channel.id, user=route,
                  reason=rej.kind)  # fmt: skip
            await self._quietly(ari.hangup(channel.id, "normal" if rej.kind == "not_found"
                                           else "congestion"))  # fmt: skip
            return
        tag = uuid.uuid4().hex[:12]
        call = _Call(channel.id, f"callbridge-{tag}-media", f"callbridge-{tag}")
        self._calls[channel.id] = call
        self._by_external[call.external_id] = call
        leg = AriLeg(info=info, control=self, clock=self.clock, ports=self.ports,
                     bind_host=self.config.rtp_host, format=self.config.format,
                     jitter=self.config.jitter, rtp_timeout=self.config.rtp_timeout)  # fmt: skip
        call.leg = leg
        try:
            await self._connect(call, leg, info)
        except (AriFailed, NoFreePort, OSError) as exc:
            event(log, "ari.setup_failed", logging.WARNING, ari_channel_id=channel.id,
                  error=str(exc))  # fmt: skip
            leg.finish("setup_failed")
            await self._cleanup(call)
            return
        if leg.ended:  # the caller hung up while we set up
            await self._cleanup(call)
            return
        self.acceptor.start(leg)
        call_id = info.ids.get("call_id", "")
        with call_context(call_id):
            keys = ("ari_channel_id", "ari_external_channel_id", "ari_bridge_id",
                    "unicastrtp_local_address", "unicastrtp_local_port", "rtp_local")  # fmt: skip
            event_fields(log, "ari.bridged", {k: info.ids[k] for k in keys if k in info.ids})
            try:
                await leg.wait_ended()
            finally:
                await self._cleanup(call)

    async def _connect(self, call: _Call, leg: AriLeg, info: LegInfo) -> None:
        cfg = self.config
        await self.request(ari.answer(call.channel_id))
        port = await leg.open_media()
        info.ids["rtp_local"] = f"{cfg.rtp_host}:{port}"
        body = await self.request(
            ari.external_media(
                cfg.app,
                f"{cfg.rtp_host}:{port}",
                cfg.format,
                channel_id=call.external_id,
                direction="both",
            )
        )
        external = ari.parse_channel(_json_text(body))
        info.ids["ari_external_channel_id"] = external.id
        remote = ari.unicast_rtp_address(external)
        if remote is None:
            raise AriFailed(ari.get_variable(external.id, "UNICASTRTP_LOCAL_PORT"), None,
                            "externalMedia gave no UNICASTRTP_LOCAL_ADDRESS/PORT")  # fmt: skip
        info.ids["unicastrtp_local_address"] = remote[0]
        info.ids["unicastrtp_local_port"] = str(remote[1])
        leg.connect_media(remote)
        await self.request(ari.create_bridge(call.bridge_id, "mixing"))
        info.ids["ari_bridge_id"] = call.bridge_id
        await self.request(ari.add_channel(call.bridge_id, call.channel_id, call.external_id))

    async def _cleanup(self, call: _Call) -> None:
        """Delete what the call made in Asterisk, whichever side ended it (404s are fine)."""
        if self._calls.get(call.channel_id) is not call:
            return  # already cleaned up
        del self._calls[call.channel_id]
        self._by_external.pop(call.external_id, None)
        if call.leg is not None:
            call.leg.finish("remote_hangup")
            call.leg.close_media()
        await self._quietly(ari.hangup(call.external_id))
        if not call.left_for_dialplan:
            await self._quietly(ari.hangup(call.channel_id))
        await self._quietly(ari.destroy_bridge(call.bridge_id))

    # ---- AriControl (the leg's requests) ---------------------------------------------------

    async def leg_hangup(self, leg: AriLeg, reason: str) -> None:
        call = self._calls.get(leg.info.ids.get("ari_channel_id", ""))
        if call is not None:
            await self._cleanup(call)

    async def leg_dtmf(self, leg: AriLeg, digits: str) -> None:
        channel = leg.info.ids.get("ari_channel_id", "")
        await self.request(
            ari.AriRequest("POST", f"{ari.ARI_PREFIX}/channels/{channel}/dtmf", (("dtmf", digits),))
        )

    async def leg_transfer(self, leg: AriLeg, target: str) -> TransferResult:
        call = self._calls.get(leg.info.ids.get("ari_channel_id", ""))
        if call is None:
            return TransferResult(ok=False, reason="the call has ended")
        if "/" in target:  # an endpoint (PJSIP/200): Asterisk redirects the channel
            req = ari.redirect(call.channel_id, target)
        elif self.config.transfer_context:
            req = ari.continue_in_dialplan(call.channel_id, self.config.transfer_context,
                                           target, 1)  # fmt: skip
        else:
            return TransferResult(ok=False, reason="ari.transfer_context is not set")
        event(log, "call.transfer", call_id=leg.info.ids.get("call_id"), stage="requested",
              target=target, context=self.config.transfer_context)  # fmt: skip
        call.left_for_dialplan = True
        try:
            await self.request(req)
        except AriFailed as exc:
            call.left_for_dialplan = False
            return TransferResult(ok=False, status=exc.status, reason=str(exc))
        leg.finish("transferred")
        return TransferResult(ok=True, reason="continued in the dialplan")


def _json_text(body: Any) -> str:
    if not isinstance(body, dict):
        raise AriFailed(ari.AriRequest("POST", "externalMedia"), None, "no channel in answer")
    return json.dumps(body)
