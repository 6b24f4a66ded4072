"""Acceptance 5: the 49 RFC 4475 torture messages, each sent as ONE UDP datagram to the
running gateway. Every message gets the answer the table below expects (or none), the
gateway stays up (an OPTIONS to 'agent' is answered 200 after every message), and no
INVITE transaction is left open (non-2xx finals are ACKed, 2xx get ACK+BYE, unanswered
INVITEs are CANCELled).

Each message is sent from its own socket and its responses are collected on that socket.
The one change made to the RFC's bytes: requests get `;rport` added to their top Via, right
after its sent-by (RFC 3581 §3, as any current UAC sends it), unless it already has one. The
gateway routes responses by RFC 3261 §18.2.2 + RFC 3581 §4 (received IP, then rport, else
the sent-by port, default 5060); the torture messages' sent-by hosts are fictitious, so
without rport every answer would go to 127.0.0.1:5060 and could not be observed. Responses
(bcast, bigcode, ...) and everything else stay byte-exact.

RFC 4475 reuses a few Via branches (cparam01/cparam02, escnull/regescrt, novelsc/unkscm
share branch, sent-by and method). Sent to one server within a transaction lifetime, the
second is rightly a retransmission of the first (RFC 3261 §17.2.3) and gets the first one's
response, so the messages are split into rounds without such repeats, one gateway each.

Expected answers: the unit test's table (tests/unit/sip/test_torture.py EXPECTED: the
status the UAS validation gives each message) is imported and enforced exactly on the wire.
Where it says None ("processed normally" or "dropped"), RFC_ALLOWED below decides: this
gateway serves only its agents ('agent', 'echo'), so a well-formed request to any other
user gets 404 (RFC 3261 §8.2.2.1), OPTIONS included (§11.2: "the same [response] that
would have been generated had the request been an INVITE"), and stray responses are
dropped. RFC_ALLOWED lists for every message what RFC 4475 and the §8.2 order (method
405/501 §8.2.1, then Request-URI 416/404 §8.2.2.1, Require 420 §8.2.2.3, content 415
§8.2.3) allow; a unit-table status outside it fails test_unit_table_agrees_with_the_rfc.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..unit.sip.test_torture import EXPECTED as UNIT_STATUS
from .conftest import GatewayFactory
from .peerlib.sipudp import (
    WAIT_FINAL_S,
    Response,
    ack_non_2xx,
    cancel_pending,
    end_accepted_call,
    options_ping,
    receive,
    split_rounds,
    top_via,
    udp_socket,
    with_rport,
)

pytestmark = pytest.mark.peer

TORTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "sip-torture"

WAIT_SILENCE_S = 1.0  # how long "no response" is observed
ACK_CHECK_S = 0.8  # > T1: a final response not stopped by our ACK would be retransmitted


@dataclass(frozen=True, slots=True)
class Expect:
    statuses: frozenset[int]  # acceptable final statuses; empty: must be dropped silently
    why: str
    silence_ok: bool = False  # no response at all is acceptable too


def _e(*codes: int, why: str, silence_ok: bool = False) -> Expect:
    return Expect(frozenset(codes), why, silence_ok)


_UNKNOWN_USER = "well-formed, to a user the gateway does not serve: 404 (§8.2.2.1"
_REGISTER = "REGISTER to a UA that is no registrar: 405 + Allow (§8.2.1; RFC 4475 §3.3.7)"
_STRAY = "a response matching no client transaction: discarded (RFC 3261 §18.1.2, §17.1.3)"

RFC_ALLOWED: dict[str, Expect] = {
    # 3.1.1 valid messages: must be parsed and processed
    "wsinv": _e(404, 481, why="valid INVITE with a To tag and no such dialog: 481 (§12.2.2), or 404 first (user vivekg)"),
    "intmeth": _e(405, 501, why="valid request with an unknown method: 501 (§21.5.2) or 405 (§8.2.1)"),
    "esc01": _e(404, why=_UNKNOWN_USER + "; user 'sips:user@example.com' escaped)"),
    "escnull": _e(405, why=_REGISTER + "; %00 in URIs must not break the parser"),
    "esc02": _e(405, 501, why="method RE%47IST%45R is not REGISTER (no unescaping of methods): unknown method"),
    "lwsdisp": _e(404, why=_UNKNOWN_USER + "/§11.2; OPTIONS)"),
    "longreq": _e(404, why=_UNKNOWN_USER + ")"),
    "dblreq": _e(405, why=_REGISTER + "; bytes after Content-Length (the 2nd request) are discarded (§18.3)"),
    "semiuri": _e(404, why=_UNKNOWN_USER + "/§11.2; user 'user;par=u%40example.net')"),
    "transports": _e(404, why=_UNKNOWN_USER + "/§11.2; OPTIONS)"),
    "mpart01": _e(405, 501, why="MESSAGE (RFC 3428) is not supported: 405 (§8.2.1), or 501 if not recognised"),
    "unreason": _e(why=_STRAY),
    "noreason": _e(why=_STRAY),
    # 3.1.2 invalid messages: 400 where a response can be formed, else dropped
    "badinv01": _e(400, why="extraneous ; and , in Via and Contact: 400 (RFC 4475 §3.1.2.1)"),
    "clerr": _e(400, why="Content-Length larger than the UDP payload: 400 (§18.3, RFC 4475 §3.1.2.2)"),
    "ncl": _e(400, why="negative Content-Length: an error, 400 (RFC 4475 §3.1.2.3)"),
    "scalar02": _e(400, why="overlarge CSeq / Max-Forwards / Expires: 400 (RFC 4475 §3.1.2.4)"),
    "scalarlg": _e(why="malformed (overlarge scalars) *response*: dropped (" + _STRAY + ")"),
    "quotbal": _e(400, why="unterminated quoted display name in To: 400 (RFC 4475 §3.1.2.6)"),
    "ltgtruri": _e(400, why="Request-URI in <>: 400 (RFC 4475 §3.1.2.7, §25.1)"),
    "lwsruri": _e(400, why="LWS inside the Request-URI: 400 (RFC 4475 §3.1.2.8)"),
    "lwsstart": _e(400, 404, why="multiple SP in the Request-Line: 400, or liberal -> unknown user 404 (RFC 4475 §3.1.2.9)"),
    "trws": _e(400, 404, why="SP after SIP-Version: 400, or liberal -> OPTIONS to unknown user 404 (RFC 4475 §3.1.2.10)"),
    "escruri": _e(400, 404, why="escaped headers in the Request-URI: 400, or liberal (ignore them) -> 404 (RFC 4475 §3.1.2.11)"),
    "baddate": _e(400, 404, why="non-GMT Date: may be rejected, better ignored -> unknown user 404 (RFC 4475 §3.1.2.12)"),
    "regbadct": _e(400, 405, why="Contact with URI headers outside <>: 400, or 405 for REGISTER first (§8.2.1; RFC 4475 §3.1.2.13)"),
    "badaspec": _e(400, 404, why="spaces inside <> in To: 400, or liberal -> OPTIONS to unknown user 404 (RFC 4475 §3.1.2.14)"),
    "baddn": _e(400, 404, why="unquoted display name with ',': 400, or liberal -> 404 (RFC 4475 §3.1.2.15)"),
    "badvers": _e(505, why="SIP/7.0: 505 Version Not Supported (RFC 4475 §3.1.2.16)"),
    "mismatch01": _e(400, why="CSeq method INVITE on an OPTIONS: 400 (RFC 4475 §3.1.2.17)"),
    "mismatch02": _e(400, 501, why="unknown method + CSeq mismatch: 501 preferred, 400 acceptable (RFC 4475 §3.1.2.18)"),
    "bigcode": _e(why="response code 4294967301: invalid response, dropped (RFC 4475 §3.1.2.19)"),
    # 3.2 transaction layer
    "badbranch": _e(400, 404, why="branch=z9hG4bK with no id: 400, or RFC 2543 matching -> OPTIONS 404 (RFC 4475 §3.2.1)"),
    # 3.3 application layer
    "insuf": _e(400, silence_ok=True, why="no To, From, Call-ID, Max-Forwards: 'ideally' 400 (RFC 4475 §3.3.1); unmatchable, so dropping is tolerated"),
    "unkscm": _e(416, why="Request-URI scheme nobodyKnowsThisScheme: 416 (§8.2.2.1, RFC 4475 §3.3.2)"),
    "novelsc": _e(416, 404, why="soap.beep: Request-URI: 416, or 404 if the scheme were served (RFC 4475 §3.3.3)"),
    "unksm2": _e(405, why=_REGISTER + "; isbn:/http:/name: URIs in headers must parse"),
    "bext01": _e(404, 420, why="Require: unknown option: 420 + Unsupported (§8.2.2.3), but 404 for the unknown user comes first in §8.2"),
    "invut": _e(404, 415, why="Content-Type application/unknownformat: 415 + Accept (§8.2.3), or 404 first (§8.2.2.1)"),
    "regaut01": _e(405, why="REGISTER with an unknown Authorization scheme, to a non-registrar: 405 (RFC 4475 §3.3.7)"),
    "multi01": _e(400, why="several To/From/Call-ID/CSeq: 400 (RFC 4475 §3.3.8)"),
    "mcl01": _e(400, why="two Content-Length values: 400 (RFC 4475 §3.3.9)"),
    "bcast": _e(why=_STRAY + "; never answered towards 255.255.255.255"),
    "zeromf": _e(404, why="Max-Forwards: 0 at an endpoint is processed normally (RFC 4475 §3.3.11): OPTIONS to unknown user 404"),
    "cparam01": _e(405, why=_REGISTER),
    "cparam02": _e(405, why=_REGISTER),
    "regescrt": _e(405, why=_REGISTER),
    "sdp01": _e(400, 404, 406, why="Accept without application/sdp: 406 or 400 (RFC 4475 §3.3.15), or 404 first"),
    # 3.4 backward compatibility
    "inv2543": _e(404, why="RFC 2543 INVITE (no branch cookie, no Max-Forwards) is processed: unknown user 404 (RFC 4475 §3.4.1)"),
}  # fmt: skip


def wire_expectation(name: str) -> Expect:
    """The unit table's status when it names one, else what RFC_ALLOWED allows."""
    status = UNIT_STATUS[name]
    rfc = RFC_ALLOWED[name]
    if status is None:
        return rfc
    return Expect(frozenset({status}), f"unit table: {status}; RFC: {rfc.why}")


EXPECTED: dict[str, Expect] = {name: wire_expectation(name) for name in RFC_ALLOWED}


@dataclass(eq=False)
class Outcome:
    name: str
    method: str
    responses: list[Response] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    after_ack: list[int] = field(default_factory=list)  # responses that arrived after our ACK

    @property
    def final(self) -> Response | None:
        return next((r for r in self.responses if r.status >= 200), None)


def run_message(gw: tuple[str, int], name: str, data: bytes) -> Outcome:
    first_line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    tokens = first_line.split()
    method = tokens[0] if tokens else ""
    out = Outcome(name, method)
    expect = EXPECTED[name]
    sent = with_rport(data)
    via = top_via(sent) or ""
    with udp_socket() as s:
        s.sendto(sent, gw)
        if expect.statuses:
            out.responses = receive(s, time.monotonic() + WAIT_FINAL_S, stop_when_final=True)
        else:
            out.responses = receive(s, time.monotonic() + WAIT_SILENCE_S, stop_when_final=False)
        if method == "INVITE" and len(tokens) > 1:
            ruri = tokens[1]
            final = out.final
            if final is not None and final.status >= 300:
                note = ack_non_2xx(s, gw, ruri, via, final)
                if note:
                    out.notes.append(note)
                else:
                    # Timer G would retransmit the final after T1 (500 ms) had the ACK not
                    # matched the server transaction (RFC 3261 §17.2.1).
                    late = receive(s, time.monotonic() + ACK_CHECK_S, stop_when_final=False)
                    out.after_ack = [r.status for r in late]
            elif final is not None:
                out.notes.append(end_accepted_call(s, gw, final))
            elif out.responses:
                out.notes.append(cancel_pending(s, gw, ruri, via, out.responses[-1]))
    return out


def check(outcome: Outcome) -> str | None:
    """None when the outcome matches EXPECTED, else a one-line description."""
    expect = EXPECTED[outcome.name]
    final = outcome.final
    got = "no response" if not outcome.responses else f"{[r.status for r in outcome.responses]}"
    if expect.silence_ok and not outcome.responses:
        return None
    if not expect.statuses:
        if outcome.responses:
            return f"{outcome.name}: expected no response, got {got} -- {expect.why}"
        return None
    want = sorted(expect.statuses)
    if final is None:
        return f"{outcome.name}: expected {want}, got {got} -- {expect.why}"
    if final.status not in expect.statuses:
        return (
            f"{outcome.name}: expected {want}, got {final.status} {final.reason!r} -- {expect.why}"
        )
    finals = {r.status for r in outcome.responses if r.status >= 200}
    if len(finals) > 1:
        return f"{outcome.name}: several different final responses {sorted(finals)}"
    if outcome.after_ack:
        return f"{outcome.name}: responses {outcome.after_ack} after our ACK (ACK not matched, §17.2.1)"
    return None


def test_torture_table_covers_the_corpus() -> None:
    names = sorted(p.stem for p in TORTURE_DIR.glob("*.dat"))
    assert len(names) == 49, names
    assert sorted(RFC_ALLOWED) == names
    assert sorted(UNIT_STATUS) == names


def test_unit_table_agrees_with_the_rfc() -> None:
    """Every status of the unit table is an answer RFC 4475 allows for that message; where
    the unit table leaves it to the application (None), only routing (404/481) or
    silence is expected on the wire."""
    wrong = [
        f"{name}: unit {status}, RFC allows {sorted(RFC_ALLOWED[name].statuses)}"
        for name, status in UNIT_STATUS.items()
        if status is not None and status not in RFC_ALLOWED[name].statuses
    ]
    assert not wrong, wrong
    left_to_routing = {n: RFC_ALLOWED[n].statuses for n, s in UNIT_STATUS.items() if s is None}
    assert all(codes <= {400, 404, 481} for codes in left_to_routing.values()), left_to_routing


def test_with_rport_touches_only_the_top_via() -> None:
    for path in sorted(TORTURE_DIR.glob("*.dat")):
        data = path.read_bytes()
        out = with_rport(data)
        if data.startswith(b"SIP/") or path.stem == "mpart01":  # mpart01 already has rport
            assert out == data, path.stem
            continue
        assert len(out) == len(data) + len(b";rport"), path.stem
        assert out.replace(b";rport", b"", 1) == data, path.stem
    wsinv = with_rport((TORTURE_DIR / "wsinv.dat").read_bytes())
    assert b"192.0.2.2;rport;branch=390skdjuw" in wsinv
    badinv = with_rport((TORTURE_DIR / "badinv01.dat").read_bytes())
    assert b"Via: SIP/2.0/UDP 192.0.2.15;rport;;,;,," in badinv
    lwsdisp = with_rport((TORTURE_DIR / "lwsdisp.dat").read_bytes())
    assert b"Via: SIP/2.0/UDP funky.example.com;rport;branch=z9hG4bKkdjuw" in lwsdisp
    assert top_via(wsinv) == "SIP  /   2.0 /UDP 192.0.2.2;rport;branch=390skdjuw"
    assert top_via(lwsdisp) == "SIP/2.0/UDP funky.example.com;rport;branch=z9hG4bKkdjuw"
    longreq = (TORTURE_DIR / "longreq.dat").read_bytes()
    assert top_via(longreq) == "SIP/2.0/TCP sip33.example.com"


def test_messages_are_split_where_rfc4475_reuses_a_transaction() -> None:
    messages = [(p.stem, p.read_bytes()) for p in sorted(TORTURE_DIR.glob("*.dat"))]
    rounds = split_rounds(messages)
    assert len(rounds) == 2
    assert sorted(n for n, _ in rounds[1]) == ["cparam02", "regescrt", "unkscm"]
    assert sum(len(r) for r in rounds) == 49


def test_rfc4475_torture_messages_over_udp(gateway_factory: GatewayFactory) -> None:
    messages = [(p.stem, p.read_bytes()) for p in sorted(TORTURE_DIR.glob("*.dat"))]
    outcomes: list[Outcome] = []
    problems: list[str] = []
    bad_messages = 0
    for round_no, batch in enumerate(split_rounds(messages)):
        gateway = gateway_factory()
        gw = gateway.sip_addr
        assert options_ping(gw, 0) == 200, "OPTIONS to agent before the torture run"
        for i, (name, data) in enumerate(batch, start=1):
            outcome = run_message(gw, name, data)
            outcomes.append(outcome)
            problem = check(outcome)
            if problem:
                problems.append(problem)
            alive = options_ping(gw, i)
            if alive != 200:
                problems.append(
                    f"after {name}: OPTIONS to agent got {alive} (gateway running: {gateway.proc.running()})"
                )
                break
        assert gateway.proc.running(), f"the gateway died during torture round {round_no}"
        bad_messages += len(gateway.events("sip.bad_message"))
        gateway.assert_no_crash()

    # dblreq: only the REGISTER may be answered; its trailing INVITE must be discarded (§18.3).
    dbl = next((o for o in outcomes if o.name == "dblreq"), None)
    if dbl is not None:
        cids = {r.get("call-id") for r in dbl.responses}
        if cids - {"dblreq.0ha0isndaksdj99sdfafnl3lk233412"}:
            problems.append(f"dblreq: the trailing INVITE was answered too (Call-IDs {cids})")

    outcomes.sort(key=lambda o: o.name)
    table = "\n".join(
        f"  {o.name:11} {o.method[:12]:12} -> {[r.status for r in o.responses] or 'none'}"
        + (f"  after ACK: {o.after_ack}" if o.after_ack else "")
        + (f"  ({'; '.join(o.notes)})" if o.notes else "")
        for o in outcomes
    )
    print("RFC 4475 over UDP:\n" + table)
    assert len(outcomes) == 49
    assert not problems, (
        f"{len(problems)} torture message(s) answered unexpectedly "
        f"({bad_messages} sip.bad_message events logged):\n  "
        + "\n  ".join(problems)
        + "\nall:\n"
        + table
    )
