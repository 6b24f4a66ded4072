"""The built-in single-box dispatcher's forwarding rules: a stateless proxy (RFC 3261 §16.11)
in front of N gateway workers on one machine. Sans-IO: datagram in, one decision out.

- A new request (no dialog yet: INVITE, OPTIONS, MESSAGE, ...) goes to the worker chosen by a
  hash over its Call-ID among the workers taking new calls (rendezvous hashing: a worker that
  leaves the set moves only its own share; with every worker live it is a plain hash over the
  Call-ID, the rule of Kamailio's dispatcher algorithm 0). The INVITE's retransmissions,
  its CANCEL and the ACK of a failure carry the same Call-ID and meet the same worker: the
  choice for each recent Call-ID is remembered (the last RECENT_CALL_IDS), so they meet it
  even when the set of workers taking new calls changed in between (an overloaded worker
  answering its probe with 503). Without that, a retransmitted INVITE became a second call on
  another worker, both ended by the RTP timeout: seen under overload in the load bench.
- We Record-Route every dialog-creating request with the worker's index and the caller's From
  tag (`ftag`, as Kamailio's rr module does) in our URI, so the whole dialog passes the public
  port and reaches the worker that owns it, whether that worker still takes new calls or not.
  The ftag tells the direction without state: the caller's requests carry it as From tag.
- Responses: our Via is popped and the response goes to the next Via's received/rport.

Not here: DNS (a next hop must be an IP literal, which is all a worker or a caller's Contact
on a phone network gives us), TCP/TLS, and transaction state (no 100 Trying, no failover of
an INVITE that a worker refuses: the worker's 503 goes back to the caller).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callbridge.sip.grammar import split_list
from callbridge.sip.headers import Headers, SipParseError, Via, header_key
from callbridge.sip.message import (
    MAGIC_COOKIE,
    SipRequest,
    SipResponse,
    make_response,
    new_tag,
    parse,
)
from callbridge.sip.uri import NameAddr, SipUri, UriParseError
from callbridge.sip.validation import reject_malformed

__all__ = [
    "BRANCH_PREFIX",
    "PROBE_PREFIX",
    "Addr",
    "Decision",
    "Drop",
    "Forward",
    "ProbeAnswer",
    "ProxyConfig",
    "Reply",
    "Screen",
    "StatelessProxy",
    "pick_worker",
    "probe_request",
]

Addr = tuple[str, int]

# Our branches: the cookie (§8.1.1.7), then a marker so that a response we did not send
# (a top Via that merely names our address) is not mistaken for ours.
BRANCH_PREFIX = MAGIC_COOKIE + "cbd"
PROBE_PREFIX = MAGIC_COOKIE + "cbp"
WORKER_PARAM = "cbw"
DEFAULT_MAX_FORWARDS = 70  # §8.1.1.6
# Call-IDs whose worker is remembered: at 300 new calls a second, the last ~100 s, past any
# INVITE's retransmissions (Timer B, 32 s); ~150 bytes each.
RECENT_CALL_IDS = 32_768


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    host: str  # our address as callers and workers reach it: written into Via and Record-Route
    port: int
    workers: tuple[Addr, ...]  # each worker's SIP address; the index is the worker's number
    retry_after: int = 5  # seconds, in the 503 when no worker takes new calls


@dataclass(frozen=True, slots=True)
class Forward:
    """Send `data` to `addr`. `worker` is the worker a request goes to (None: a response, or
    a request on its way from a worker to the caller)."""

    data: bytes
    addr: Addr
    worker: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A response of our own (400, 403, 483, 503) to the request's sender."""

    data: bytes
    addr: Addr
    status: int


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """A worker answered one of our OPTIONS health probes."""

    worker: int
    status: int


Decision = Forward | Reply | Drop | ProbeAnswer
# Looks at a new request from outside before it is forwarded: a status to refuse it with
# (403 for a source outside sip.allow_from; 0 drops it unanswered), or None to let it through.
Screen = Callable[[SipRequest, Addr], int | None]


def pick_worker(call_id: str, live: Sequence[int]) -> int | None:
    """The worker for a new request: the live worker with the highest hash of (worker,
    Call-ID). Stable across processes and runs (no salted `hash()`)."""
    best: int | None = None
    best_score = -1
    for worker in live:
        digest = hashlib.blake2b(f"{worker}:{call_id}".encode(), digest_size=8).digest()
        score = int.from_bytes(digest, "big")
        if score > best_score:
            best, best_score = worker, score
    return best


def probe_request(config: ProxyConfig, worker: int, seq: int) -> bytes:
    """An OPTIONS health probe of one worker (what Kamailio's ds_probing does); its answer
    comes back to us and `StatelessProxy.handle` reports it as a ProbeAnswer."""
    host, port = config.workers[worker]
    us = f"{config.host}:{config.port}"
    headers = Headers(
        (
            ("Via", f"SIP/2.0/UDP {us};branch={PROBE_PREFIX}{worker}x{seq};rport"),
            ("Max-Forwards", "1"),
            ("From", f"<sip:dispatcher@{us}>;tag=cbprobe{worker}"),
            ("To", f"<sip:{host}:{port}>"),
            ("Call-ID", f"cbprobe-{worker}-{seq}@{config.host}"),
            ("CSeq", f"{seq % 0x7FFFFFFF + 1} OPTIONS"),
            ("Content-Length", "0"),
        )
    )
    return bytes(SipRequest("OPTIONS", f"sip:{host}:{port}", headers))


class StatelessProxy:
    def __init__(
        self, config: ProxyConfig, screen: Screen | None = None, *, recent: int = RECENT_CALL_IDS
    ) -> None:
        self.config = config
        self.screen = screen
        # Call-ID -> the worker its first request went to, oldest first (bounded).
        self._recent: dict[str, int] = {}
        self._recent_max = recent

    def handle(self, data: bytes, source: Addr, live: Sequence[int]) -> Decision:
        """One datagram from `source`; `live` are the workers taking new calls. Total: a
        malformed datagram is a 400 or a Drop, never an exception."""
        try:
            message = parse(data)
        except SipParseError as exc:
            answer = reject_malformed(data, exc)
            if answer is None:
                return Drop(f"malformed: {exc.reason}")
            return self._reply(answer, source)
        try:
            if isinstance(message, SipResponse):
                return self._response(message)
            return self._request(message, source, live)
        except (SipParseError, UriParseError, ValueError) as exc:
            return Drop(f"malformed: {exc}")

    # ---- requests --------------------------------------------------------------------

    def _request(self, req: SipRequest, source: Addr, live: Sequence[int]) -> Decision:
        method = req.method.upper()
        vias = req.vias
        req.call_id  # noqa: B018  (a request without one cannot be routed; raises)
        max_forwards = req.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            # §16.3 step 2 (an ACK is never answered, §17.1.1.3)
            return self._refuse(req, 483, source)
        routes = req.headers.get_all("Route")
        ours = self._our_route(routes[0]) if routes else None
        if ours is not None:
            routes = routes[1:]  # §16.4: a loose route naming us is ours to remove
        record_route: str | None = None
        worker: int | None
        if ours is not None and ours.param(WORKER_PARAM) is not None:
            worker = self._worker_param(ours)
            ftag = ours.param("ftag")
            if worker is None:
                return Drop("Record-Route names no worker of ours")
            if ftag is None or ftag == (req.from_.tag or ""):
                dest = self.config.workers[worker]  # the caller's side: to the dialog's owner
            else:
                # The worker's side (its BYE, re-INVITE...): to the next Route or the target.
                worker = None
                hop = _hop(routes[0], route=True) if routes else _hop(req.uri, route=False)
                if hop is None:
                    return Drop("next hop is not an IP address (no DNS here)")
                dest = hop
        else:
            worker = self._worker_of_uri(req.uri)
            if worker is None:
                in_dialog = req.to.tag is not None
                if not in_dialog and method != "ACK" and self.screen is not None:
                    status = self.screen(req, source)
                    if status == 0:
                        return Drop("refused silently (a source just banned)")
                    if status is not None:
                        return self._refuse(req, status, source)
                worker = self._recent.get(req.call_id)
                if worker is None:
                    worker = pick_worker(req.call_id, live)
                    if worker is not None:
                        self._remember(req.call_id, worker)
                if worker is None:
                    if method == "ACK":
                        return Drop("no live worker")
                    return self._refuse(
                        req, 503, source, [("Retry-After", str(self.config.retry_after))]
                    )
                if not in_dialog and method in ("INVITE", "SUBSCRIBE", "REFER"):
                    record_route = self._record_route(worker, req.from_.tag)
            dest = self.config.workers[worker]
        headers = _stamp_received(req.headers, vias[0], source)
        headers = headers.add("Via", self._via(req, vias[0]), first=True)
        headers = headers.set(
            "Max-Forwards",
            str(DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1),
        )
        headers = headers.remove("Route")
        for value in routes:
            headers = headers.add("Route", value)
        if record_route is not None:
            headers = headers.add("Record-Route", record_route, first=True)
        out = SipRequest(req.method, req.uri, headers, req.body, req.version)
        return Forward(bytes(out), dest, worker)

    def _remember(self, call_id: str, worker: int) -> None:
        recent = self._recent
        recent[call_id] = worker
        if len(recent) > self._recent_max:
            del recent[next(iter(recent))]  # the oldest

    def _via(self, req: SipRequest, top: Via) -> str:
        """Our Via, its branch derived from the request's (§16.11): a retransmission, and the
        CANCEL of an INVITE, get the same branch, so the worker's transaction layer matches
        them; a new request gets a new one."""
        branch = top.branch
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            key = f"{branch}|{top.sent_by}"
        else:  # RFC 2543 peer: what identifies its transaction (§16.11)
            key = "|".join(
                (
                    req.to.tag or "",
                    req.from_.tag or "",
                    req.call_id,
                    req.uri,
                    str(top),
                    str(req.cseq.number),
                )
            )
        digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=10)
        c = self.config
        return f"SIP/2.0/UDP {c.host}:{c.port};branch={BRANCH_PREFIX}{digest.hexdigest()};rport"

    def _record_route(self, worker: int, from_tag: str | None) -> str:
        c = self.config
        ftag = f";ftag={from_tag}" if from_tag else ""
        return f"<sip:{c.host}:{c.port};lr;{WORKER_PARAM}={worker}{ftag}>"

    def _our_route(self, value: str) -> SipUri | None:
        uri = NameAddr.parse(value).uri
        if not isinstance(uri, SipUri):
            return None
        port = uri.port if uri.port is not None else 5060
        if uri.host.lower() == self.config.host.lower() and port == self.config.port:
            return uri
        return None

    def _worker_param(self, uri: SipUri) -> int | None:
        raw = uri.param(WORKER_PARAM) or ""
        if raw.isascii() and raw.isdigit() and int(raw) < len(self.config.workers):
            return int(raw)
        return None

    def _worker_of_uri(self, uri: str) -> int | None:
        """An in-dialog request without our Route whose target is a worker's own address
        (a caller that ignored Record-Route): to that worker."""
        try:
            parsed = SipUri.parse(uri)
        except UriParseError:
            return None
        port = parsed.port if parsed.port is not None else 5060
        for i, (host, wport) in enumerate(self.config.workers):
            if port == wport and parsed.host.strip("[]") == host:
                return i
        return None

    def _refuse(
        self,
        req: SipRequest,
        status: int,
        source: Addr,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Decision:
        if req.method.upper() == "ACK":
            return Drop(f"ACK not answered ({status})")
        return self._reply(make_response(req, status, to_tag=new_tag(), headers=headers), source)

    def _reply(self, response: SipResponse, source: Addr) -> Reply:
        # §18.2.2 with RFC 3581: to the address and port the request came from.
        return Reply(bytes(response), source, response.status)

    # ---- responses -------------------------------------------------------------------

    def _response(self, resp: SipResponse) -> Decision:
        vias = resp.vias
        top = vias[0]
        branch = top.branch or ""
        if top.sent_by != (self.config.host, self.config.port):
            return Drop("response with a top Via not ours")
        if branch.startswith(PROBE_PREFIX):
            worker_text = branch[len(PROBE_PREFIX) :].split("x", 1)[0]
            if worker_text.isdigit() and int(worker_text) < len(self.config.workers):
                return ProbeAnswer(int(worker_text), resp.status)
            return Drop("probe answer for no worker of ours")
        if not branch.startswith(BRANCH_PREFIX):
            return Drop("response with a top Via not ours")
        if len(vias) < 2:
            return Drop("response with no Via after ours")
        dest = _response_addr(vias[1])
        if dest is None:
            return Drop("next Via is not an IP address (no DNS here)")
        out = SipResponse(resp.status, resp.reason, _pop_via(resp.headers), resp.body, resp.version)
        return Forward(bytes(out), dest)


# ---- header surgery ----------------------------------------------------------------------


def _first_via_index(headers: Headers) -> int:
    for i, (name, _) in enumerate(headers.items):
        if header_key(name) == "via":
            return i
    raise SipParseError("Missing Via header")


def _replace_top_via(headers: Headers, new_top: str | None) -> Headers:
    """Replace (or, with None, remove) the first Via element, which may share a line with
    others ("Via: a, b")."""
    i = _first_via_index(headers)
    name, value = headers.items[i]
    rest = split_list(value)[1:]
    parts = ([new_top] if new_top is not None else []) + rest
    items = list(headers.items)
    if parts:
        items[i] = (name, ", ".join(parts))
    else:
        del items[i]
    return Headers(tuple(items))


def _pop_via(headers: Headers) -> Headers:
    return _replace_top_via(headers, None)


def _stamp_received(headers: Headers, top: Via, source: Addr) -> Headers:
    """§18.2.1 and RFC 3581 §4: where the request really came from, so that its responses
    get back through a NAT."""
    changes: dict[str, str | None] = {}
    if top.host.strip("[]") != source[0]:
        changes["received"] = source[0]
    if top.param("rport") is not None:  # "" for the bare flag: the client asks for it
        changes["received"] = source[0]  # RFC 3581 §4: received always comes with rport
        changes["rport"] = str(source[1])
    if not changes:
        return headers
    return _replace_top_via(headers, str(top.with_params(**changes)))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _hop(target: str, *, route: bool) -> Addr | None:
    """The address of a Route value (name-addr) or a Request-URI, without DNS (§16.6
    step 7); None when it names a host rather than an IP address."""
    uri = NameAddr.parse(target).uri if route else SipUri.parse(target)
    if not isinstance(uri, SipUri):
        return None
    host = uri.param("maddr") or uri.host
    if not _is_ip(host):
        return None
    return host.strip("[]"), uri.port if uri.port is not None else 5060


def _response_addr(via: Via) -> Addr | None:
    """§18.2.2 and RFC 3581 §4: received (else sent-by host), rport (else sent-by port)."""
    host = via.param("received") or via.host
    if not _is_ip(host):
        return None
    rport = via.param("rport")
    port = int(rport) if rport else via.sent_by[1]
    return host.strip("[]"), port
