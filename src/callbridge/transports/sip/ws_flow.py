"""SIP over WebSocket (RFC 7118): each WebSocket connection is a flow (RFC 5626 §3) of the SIP
transport, and the user agent sees it as one more peer address.

The sans-IO user agent speaks datagrams to addresses. A WebSocket peer has no address we could
send to: its Via and Contact hosts are `*.invalid` names (RFC 7118 §5.2 lets a client invent
them), so nothing may be resolved or sent there; everything for it must go back over the socket
it came on (§5: the connection is the only way to reach it). So each connection gets a pseudo
address, `(<unique>.flow.invalid, <its TCP port>)`, which the UA takes as the source of what
came in on it; `FlowEndpoint` (the UDP endpoint's shell, one send path for both) delivers every
datagram for such an address to that connection instead of the UDP socket. The UA stays as it
is: responses go to the request's source (RFC 3581, stamped as `received`), in-dialog requests
of a UAS without a route set go to the INVITE's source.

On the way out to a flow, `for_flow` adapts what the UA wrote for UDP (RFC 7118 §5.2, §5.4):
our Via says `SIP/2.0/WS` (`WSS` over TLS), our Contact carries `;transport=ws`, and the
`received` we stamped on the peer's Via (the pseudo host) becomes its real IP address.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from callbridge.core.clock import Clock
from callbridge.core.log import event
from callbridge.core.net import Addr
from callbridge.sip.endpoint import EventHandler, SipEndpoint
from callbridge.sip.headers import SipParseError
from callbridge.sip.message import SipRequest, SipResponse, parse
from callbridge.sip.overload import Guard, Verdict
from callbridge.sip.transaction import replace_top_via
from callbridge.sip.ua import Datagram, Output, UserAgent
from callbridge.sip.uri import NameAddr, UriParseError

__all__ = [
    "FLOW_SUFFIX",
    "MAX_FRAME_BYTES",
    "Flow",
    "FlowEndpoint",
    "Flows",
    "for_flow",
    "is_flow_addr",
]

log = logging.getLogger("callbridge.transports.sip.ws")

FLOW_SUFFIX = ".flow.invalid"  # RFC 6761 §6.4: .invalid never resolves; no UDP peer has it
# One SIP message per WebSocket message (RFC 7118 §4.2); the parser's own bound (a UDP
# datagram's size) is the frame's.
MAX_FRAME_BYTES = 65535
OUTBOX_DEPTH = 256  # messages queued for a peer that does not read: past this the flow closes


def is_flow_addr(addr: Addr) -> bool:
    return addr[0].endswith(FLOW_SUFFIX)


@dataclass(slots=True, eq=False)
class Flow:
    """One WebSocket connection: its pseudo address for the UA, the peer's real one for ACLs,
    bans and logs, and what waits to be written to it."""

    addr: Addr  # the pseudo address the UA knows the peer by
    remote: Addr  # the TCP peer (IP, port)
    secure: bool  # wss: our Via says WSS
    outbox: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(OUTBOX_DEPTH))
    closed: bool = False

    @property
    def label(self) -> str:
        return f"{self.remote[0]}:{self.remote[1]}"

    def send(self, data: bytes) -> bool:
        """Queue one message for the socket's writer; False when the flow is closed or its
        peer stopped reading (the flow is closed then: a SIP peer that does not read is gone)."""
        if self.closed:
            return False
        try:
            self.outbox.put_nowait(data)
        except asyncio.QueueFull:
            event(log, "sip.ws_outbox_full", logging.WARNING, remote=self.label)
            self.close()
            return False
        return True

    def close(self) -> None:
        """Ask the writer to close the socket (the reader then reports the end to `Flows`)."""
        if self.closed:
            return
        self.closed = True
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait(None)


class Flows:
    """The open WebSocket flows by pseudo address; listeners hear each one close."""

    def __init__(self) -> None:
        self._flows: dict[str, Flow] = {}  # by pseudo host: unique per flow
        self._numbers = itertools.count(1)
        self._secret = secrets.token_hex(3)  # names of one run never match another's
        self.on_close: list[Callable[[Flow], None]] = []

    def __len__(self) -> int:
        return len(self._flows)

    def open(self, remote: Addr, *, secure: bool = False) -> Flow:
        host = f"ws{next(self._numbers)}-{self._secret}{FLOW_SUFFIX}"
        flow = Flow((host, remote[1]), remote, secure)
        self._flows[host] = flow
        return flow

    def get(self, addr: Addr) -> Flow | None:
        return self._flows.get(addr[0]) if is_flow_addr(addr) else None

    def real(self, addr: Addr) -> Addr:
        """The real peer behind an address (itself for a UDP peer)."""
        flow = self.get(addr)
        return flow.remote if flow is not None else addr

    def closed(self, flow: Flow) -> None:
        """The connection is gone: forget it and tell the listeners (dialogs, bindings)."""
        flow.close()
        if self._flows.pop(flow.addr[0], None) is None:
            return
        for listener in self.on_close:
            try:
                listener(flow)
            except Exception:
                log.exception("sip.ws_close_listener_failed")

    def all(self) -> list[Flow]:
        return list(self._flows.values())


# ---- what the UA wrote for UDP, adapted for a flow ------------------------------------------


def _with_ws_transport(value: str) -> str:
    """RFC 7118 §5.4: a Contact (ours) reachable over this flow says `;transport=ws`."""
    try:
        addr = NameAddr.parse(value)
        uri = addr.sip_uri
    except (SipParseError, UriParseError, ValueError):
        return value
    if uri.host.endswith(".invalid") or uri.has_param("transport"):
        return value
    return str(NameAddr(uri.with_params(transport="ws"), addr.display_name, addr.params))


def for_flow(data: bytes, flow: Flow) -> bytes:
    """A message the UA addressed to `flow`, as it goes on the WebSocket (see the module
    docstring). What cannot be parsed goes out as it is (it is ours: it always parses)."""
    try:
        message = parse(data)
    except SipParseError:
        return data
    headers = message.headers
    if isinstance(message, SipRequest):
        # RFC 7118 §5.2: the Via of a request sent over WebSocket says WS (WSS over TLS).
        vias = message.vias
        if vias and vias[0].transport == "UDP":
            top = vias[0]
            ws = type(top)("WSS" if flow.secure else "WS", top.host, top.port, top.params)
            headers = replace_top_via(headers, [ws, *vias[1:]])
    else:
        vias = message.vias
        if vias and vias[0].param("received") == flow.addr[0]:
            # RFC 3261 §18.2.1: `received` is the source IP; ours was a name for the flow.
            fixed = vias[0].with_params(received=flow.remote[0])
            headers = replace_top_via(headers, [fixed, *vias[1:]])
    contacts = headers.get_all("Contact")
    if contacts and not (isinstance(message, SipResponse) and message.cseq.method == "REGISTER"):
        headers = headers.remove("Contact")
        for value in contacts:
            headers = headers.add("Contact", _with_ws_transport(value))
    if headers is message.headers:
        return data
    if isinstance(message, SipRequest):
        return bytes(SipRequest(message.method, message.uri, headers, message.body))
    return bytes(SipResponse(message.status, message.reason, headers, message.body))


# ---- the endpoint: one send path for UDP and flows ------------------------------------------

RequestHook = Callable[[SipRequest, Flow], bool]


class FlowEndpoint(SipEndpoint):
    """The UDP endpoint, plus WebSocket flows: datagrams for a flow's pseudo address go to its
    socket, messages from a flow go to the UA with that address as their source."""

    def __init__(
        self,
        ua: UserAgent,
        clock: Clock,
        on_event: EventHandler,
        guard: Guard | None,
        flows: Flows,
    ) -> None:
        super().__init__(ua, clock, on_event, guard)
        self.flows = flows
        # Requests the UA does not take (REGISTER): True = handled (answered on the flow).
        self.intercept: RequestHook | None = None

    def _dispatch(self, outputs: list[Output]) -> None:
        rest: list[Output] = []
        for out in outputs:
            if isinstance(out, Datagram) and is_flow_addr(out.addr):
                flow = self.flows.get(out.addr)
                if flow is not None:  # closed meanwhile: nowhere to send it (RFC 7118 §5)
                    flow.send(for_flow(out.data, flow))
            else:
                rest.append(out)
        super()._dispatch(rest)

    def from_flow(self, data: bytes, flow: Flow) -> None:
        """One WebSocket message from `flow` (RFC 7118 §4.2: one SIP message each)."""
        guard = self.guard
        now = self.clock.now()
        if guard is not None:
            # The real address: a banned source is banned on every transport.
            verdict, _ = guard.datagram(flow.remote[0], now, len(data))
            if verdict is Verdict.DROP:
                if guard.new_bans:
                    self.report_bans()
                return
        try:
            if (
                self.intercept is not None
                and data.startswith(b"REGISTER ")
                and self._taken(data, flow)
            ):
                return
            outputs = self.ua.receive(data, flow.addr, now)
        except Exception:  # never let one message take the endpoint down
            log.exception("sip.internal_error", extra={"fields": {"source": flow.label}})
            return
        if self.ua.bad_messages:
            event(log, "sip.bad_message", logging.WARNING, source=flow.label, size=len(data),
                  transport="ws")  # fmt: skip
            self.ua.bad_messages = 0
        if guard is not None and guard.new_bans:
            self.report_bans()
        self._dispatch(outputs)

    def _taken(self, data: bytes, flow: Flow) -> bool:
        """Whether the intercept answered this REGISTER (a malformed one goes to the UA,
        which answers 400 or drops it)."""
        try:
            message = parse(data)
        except SipParseError:
            return False
        return (
            isinstance(message, SipRequest)
            and self.intercept is not None
            and self.intercept(message, flow)
        )

    def send_to_flow(self, message: SipResponse | SipRequest, flow: Flow) -> None:
        """A message built outside the UA (the registrar's answers)."""
        flow.send(bytes(message))
