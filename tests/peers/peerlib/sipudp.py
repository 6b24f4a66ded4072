"""A tiny raw SIP-over-UDP client for the torture test: send arbitrary bytes, read
responses, and close what a request opened (ACK, BYE, CANCEL) with hand-built messages.
Deliberately independent of callbridge's own SIP code."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .process import LOOPBACK

WAIT_FINAL_S = 2.0  # an answer on loopback takes milliseconds

_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "l": "content-length",
            "m": "contact", "c": "content-type", "e": "content-encoding", "k": "supported"}  # fmt: skip


_TOP_VIA = re.compile(
    rb"^(?:via|v)[ \t]*:\s*SIP\s*/\s*[^/\s]+\s*/\s*[^\s;,/]+\s+(?:\[[^\]]*\]|[^\s;,:]+)(?:\s*:\s*\d+)?",
    re.IGNORECASE | re.MULTILINE,
)


def with_rport(data: bytes) -> bytes:
    """The request with `;rport` after its top Via's sent-by, unless it has one already.

    RFC 3581 §3/§4: the response then goes to the source address and port; without it an
    RFC 3261 §18.2.2 server answers the sent-by port (default 5060), which for the
    fictitious hosts of the torture messages means 127.0.0.1:5060, never our socket."""
    if data.startswith(b"SIP/"):
        return data
    head_end = data.find(b"\r\n\r\n")
    head_end = len(data) if head_end < 0 else head_end
    first_eol = data.find(b"\r\n")
    m = _TOP_VIA.search(data, first_eol + 2, head_end)
    if m is None:
        return data
    line_end = data.find(b"\r\n", m.end())
    if b"rport" in data[m.end() : line_end].lower():
        return data
    return data[: m.end()] + b";rport" + data[m.end() :]


def top_via(data: bytes) -> str | None:
    """The first via-parm of the request's top Via, unfolded (an ACK or CANCEL must carry
    exactly this value, RFC 3261 §17.1.1.3 / §9.1)."""
    first_eol = data.find(b"\r\n")
    head_end = data.find(b"\r\n\r\n")
    head_end = len(data) if head_end < 0 else head_end
    m = _TOP_VIA.search(data, first_eol + 2, head_end)
    if m is None:
        return None
    start = data.index(b":", m.start()) + 1
    end = start
    while True:  # the header ends at a CRLF not followed by folding whitespace
        end = data.find(b"\r\n", end)
        if end < 0 or end >= head_end or data[end + 2 : end + 3] not in (b" ", b"\t"):
            break
        end += 2
    value = re.sub(rb"\r\n[ \t]+", b" ", data[start : head_end if end < 0 else end])
    return value.split(b",", 1)[0].strip().decode("utf-8", "replace")


_BRANCH = re.compile(rb"branch\s*=\s*([^\s;,]+)", re.IGNORECASE)


def transaction_key(data: bytes) -> tuple[bytes, ...] | None:
    """(method, top Via sent-by, branch) as a server matches it (RFC 3261 §17.2.3);
    None for responses."""
    if data.startswith(b"SIP/"):
        return None
    first_eol = data.find(b"\r\n")
    head_end = data.find(b"\r\n\r\n")
    m = _TOP_VIA.search(data, first_eol + 2, len(data) if head_end < 0 else head_end)
    if m is None:
        return (data[:first_eol],)
    sent_by = m.group(0).split()[-1].lower()
    branch = _BRANCH.search(data, m.end(), data.find(b"\r\n", m.end()))
    return (data.split(None, 1)[0], sent_by, branch.group(1) if branch else b"")


def split_rounds(messages: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    """Greedy rounds in which no transaction key repeats."""
    keys: list[set[tuple[bytes, ...]]] = []
    rounds: list[list[tuple[str, bytes]]] = []
    for name, data in messages:
        key = transaction_key(data)
        n = next((i for i, ks in enumerate(keys) if key is None or key not in ks), len(rounds))
        if n == len(rounds):
            keys.append(set())
            rounds.append([])
        if key is not None:
            keys[n].add(key)
        rounds[n].append((name, data))
    return rounds


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # (lower-case long name, value), unfolded
    raw: bytes

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def parse_response(data: bytes) -> Response | None:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].upper().startswith("SIP/") or not parts[1].isdigit():
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
        elif ":" in line:
            name, value = line.split(":", 1)
            key = name.strip().lower()
            headers.append((_COMPACT.get(key, key), value.strip()))
    return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", tuple(headers), data)


@contextlib.contextmanager
def udp_socket() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((LOOPBACK, 0))
        yield s
    finally:
        s.close()


def receive(sock: socket.socket, until: float, stop_when_final: bool) -> list[Response]:
    out: list[Response] = []
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return out
        sock.settimeout(left)
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return out
        resp = parse_response(data)
        if resp is not None:
            out.append(resp)
            if stop_when_final and resp.status >= 200:
                return out


def _request(lines: list[str]) -> bytes:
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


def _cseq_number(resp: Response) -> str | None:
    cseq = resp.get("cseq")
    return cseq.split()[0] if cseq else None


def ack_non_2xx(
    sock: socket.socket, gw: tuple[str, int], ruri: str, via: str, final: Response
) -> str | None:
    """RFC 3261 §17.1.1.3: the request's Request-URI and top Via, the response's To tag."""
    frm, to, cid, num = (
        final.get("from"),
        final.get("to"),
        final.get("call-id"),
        _cseq_number(final),
    )
    if not (frm and to and cid and num):
        return "final response lacks From/To/Call-ID/CSeq: no ACK sent"
    top_via = via
    sock.sendto(
        _request([f"ACK {ruri} SIP/2.0", f"Via: {top_via}", "Max-Forwards: 70", f"From: {frm}",
                  f"To: {to}", f"Call-ID: {cid}", f"CSeq: {num} ACK"]),
        gw,
    )  # fmt: skip
    return None


def end_accepted_call(sock: socket.socket, gw: tuple[str, int], final: Response) -> str:
    """A 2xx to an INVITE that should not have been accepted: ACK and BYE it (§13.2.2.4)."""
    contact = final.get("contact") or ""
    target = contact[contact.find("<") + 1 : contact.find(">")] if "<" in contact else contact
    frm, to, cid, num = (
        final.get("from"),
        final.get("to"),
        final.get("call-id"),
        _cseq_number(final),
    )
    port = sock.getsockname()[1]
    for method, n in (("ACK", num), ("BYE", str(int(num or 0) + 1))):
        sock.sendto(
            _request([f"{method} {target} SIP/2.0",
                      f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-torture-{method}-{os.getpid()}",
                      "Max-Forwards: 70", f"From: {frm}", f"To: {to}", f"Call-ID: {cid}", f"CSeq: {n} {method}"]),
            gw,
        )  # fmt: skip
    bye = receive(sock, time.monotonic() + WAIT_FINAL_S, stop_when_final=False)
    return f"answered 2xx: ACK+BYE sent, BYE got {[r.status for r in bye]}"


def cancel_pending(
    sock: socket.socket, gw: tuple[str, int], ruri: str, via: str, prov: Response
) -> str:
    """No final answer to an INVITE: CANCEL it (§9.1) and ACK the 487."""
    frm, to, cid, num = prov.get("from"), prov.get("to"), prov.get("call-id"), _cseq_number(prov)
    if not (frm and to and cid and num):
        return "provisional response lacks headers: cannot CANCEL"
    to_no_tag = to.split(";tag=")[0]
    sock.sendto(
        _request([f"CANCEL {ruri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
                  f"From: {frm}", f"To: {to_no_tag}", f"Call-ID: {cid}", f"CSeq: {num} CANCEL"]),
        gw,
    )  # fmt: skip
    got = receive(sock, time.monotonic() + WAIT_FINAL_S, stop_when_final=False)
    invite_final = next(
        (r for r in got if r.status >= 300 and (r.get("cseq") or "").endswith("INVITE")), None
    )
    if invite_final is not None:
        ack_non_2xx(sock, gw, ruri, via, invite_final)
    return f"no final answer: CANCEL sent, got {[r.status for r in got]}"


def options_ping(gw: tuple[str, int], n: int) -> int | None:
    """OPTIONS sip:agent@gateway; returns the final status (None: no answer in 2 s)."""
    with udp_socket() as s:
        port = s.getsockname()[1]
        s.sendto(
            _request([f"OPTIONS sip:agent@{gw[0]}:{gw[1]} SIP/2.0",
                      f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-probe-{os.getpid()}-{n}",
                      "Max-Forwards: 70", f"From: <sip:probe@{LOOPBACK}>;tag=probe{n}",
                      f"To: <sip:agent@{gw[0]}:{gw[1]}>", f"Call-ID: probe-{n}-{os.getpid()}@{LOOPBACK}",
                      "CSeq: 1 OPTIONS", "Accept: application/sdp"]),
            gw,
        )  # fmt: skip
        got = receive(s, time.monotonic() + WAIT_FINAL_S, stop_when_final=True)
    return next((r.status for r in got if r.status >= 200), None)
