"""Acceptance 1 (issue 5): registration against a SIPp registrar that challenges with 401.

An in-process SIP transport with two accounts on the same registrar: one with the right
password registers (SIPp's verifyauth checks the digest), is granted a short expiry, refreshes
(with valid credentials again) and unregisters on shutdown; the other, with a wrong password,
is re-challenged with the same nonce and reported as failed without looping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from callbridge.core.asyncio_clock import LoopClock
from callbridge.sip.registration import RegState, SipAccount
from callbridge.transports.sip.transport import SipTransport, SipTransportConfig

from .conftest import require_tools
from .peerlib.inprocess import NoCalls, Records, recording, wait_for
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import start_uas

pytestmark = pytest.mark.peer

GRANT_S = 4  # the registrar grants 4 s, so the refresh comes after 2 s
PASSWORD = "s3cret-pass"
WRONG = "not-the-password"


@pytest.fixture
def records() -> Iterator[Records]:
    with recording() as handler:
        yield handler


async def test_register_refresh_unregister_and_wrong_password(
    registry: ProcessRegistry, records: Records
) -> None:
    require_tools("sipp")
    registrar_port = free_port()
    registrar = start_uas(
        registry, "registrar", "registrar_digest.xml", sip_port=registrar_port,
        media_port=PORT_BLOCKS.take(2)[0], calls=2, timeout_s=30,
        keys={"user": "alice", "password": PASSWORD, "grant": str(GRANT_S)},
    )  # fmt: skip
    where = f"127.0.0.1:{registrar_port}"
    good = SipAccount("provider", where, "alice", PASSWORD, domain="callbridge.test")
    bad = SipAccount("typo", where, "alice", WRONG, domain="callbridge.test")
    rtp_lo, rtp_hi = PORT_BLOCKS.take(4)
    transport = SipTransport(
        SipTransportConfig(
            host="127.0.0.1", port=0, rtp_port_min=rtp_lo, rtp_port_max=rtp_hi,
            accounts=(good, bad),
        ),
        LoopClock(),
        NoCalls(),
    )  # fmt: skip
    seen: list[RegState] = []
    transport.on_registration.append(lambda status: seen.append(status.state))
    await transport.start()
    try:
        # Registered, then refreshed before the 4 s binding ran out.
        def refreshed() -> list[dict[str, Any]] | None:
            done = records.events("sip.registration", account="provider", state="registered")
            return done if len(done) >= 2 else None

        ok = await wait_for(refreshed, GRANT_S * 3, "the registration and its refresh")
        assert [e["expires"] for e in ok[:2]] == [GRANT_S, GRANT_S]
        failed = await wait_for(
            lambda: records.events("sip.registration", account="typo", state="failed") or None,
            10, "the wrong password to be reported",
        )  # fmt: skip
        assert failed[0]["reason"] == "authentication rejected (401 Unauthorized)", failed
        assert failed[0]["status"] == 401 and failed[0]["retry_in"] >= 20, failed
        states = {s.account: s for s in transport.registrations()}
        assert states["provider"].state is RegState.REGISTERED
        assert states["provider"].expires == GRANT_S
        assert states["typo"].state is RegState.FAILED
        assert states["typo"].reason.startswith("authentication rejected")
    finally:
        await transport.shutdown(grace=3.0)

    # Shutdown removed the binding: the registrar saw Contact ;expires=0 and answered 200.
    assert records.events("sip.registration", account="provider", state="unregistered"), (
        records.text()
    )
    assert [e["state"] for e in records.events("sip.registration", account="provider")][-2:] == [
        "unregistering",
        "unregistered",
    ]
    assert records.events("sip.registration", account="provider", state="failed") == []
    assert len(seen) == len(records.events("sip.registration"))  # listeners see every change
    # The registrar's scenario ran to its end for both accounts; nothing arrived out of turn
    # (a third REGISTER from the wrong-password account would be an out-of-call message).
    rc = await asyncio.to_thread(registrar.wait, 10)
    assert rc == 0, registrar.describe()
    stats = registrar.stats()
    assert stats.counter("SuccessfulCall(C)") == 2, registrar.describe()
    assert stats.counter("FailedCall(C)") == 0, registrar.describe()
    assert stats.counter("OutOfCallMsgs(C)") == 0, registrar.describe()
    messages = registrar.messages_path.read_text(errors="replace")
    # 2 REGISTERs from the wrong password account, 4+ from the right one (401, 200, refresh,
    # unregister), all in two Call-IDs.
    assert messages.count("REGISTER sip:callbridge.test SIP/2.0") >= 6, messages[-3000:]
    # The password is never logged.
    assert not [
        r for r in records.records if PASSWORD in r.getMessage() + str(getattr(r, "fields", ""))
    ]
