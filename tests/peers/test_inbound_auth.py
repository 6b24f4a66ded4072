"""Inbound digest auth per route and the source ACL, against SIPp as the caller.

The gateway (echo route) runs with `sip.auth_routes = "echo"`, `sip.auth_users =
"alice:s3cret"` and `sip.allow_from = "127.0.0.0/8"`. SIPp's INVITE is challenged (401; MD5 only,
which is what SIPp 3.6 answers), SIPp answers with -au/-ap credentials and the call goes through;
with a wrong password it gets 403 and no call starts. A second gateway allows only 10.0.0.0/8:
SIPp's INVITE from 127.0.0.1 gets 403 before any route is consulted.
"""

from __future__ import annotations

import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import start_uac

pytestmark = pytest.mark.peer

AUTH_ENV = {
    "CALLBRIDGE_DEFAULT_AGENT": "echo",
    "CALLBRIDGE_SIP_AUTH_ROUTES": "echo",
    "CALLBRIDGE_SIP_AUTH_USERS": "alice:s3cret, bob:other",
    "CALLBRIDGE_SIP_ALLOW_FROM": "127.0.0.0/8",
    # SIPp 3.6 answers only the first challenge, and only MD5 (our SHA-256 answer is checked
    # against our own client side in tests/unit/sip/test_digest_server.py).
    "CALLBRIDGE_SIP_AUTH_ALGORITHMS": "MD5",
}


def call(registry: ProcessRegistry, gw: object, name: str, password: str) -> int:
    sipp = start_uac(
        registry, name, "uac_auth.xml", target=gw.sip_addr, service="echo",  # type: ignore[attr-defined]
        sip_port=free_port(), media_port=PORT_BLOCKS.take(4)[0], timeout_s=20,
        extra=["-au", "alice", "-ap", password, "-d", "500"],
    )  # fmt: skip
    return sipp.wait(30)


def test_a_challenged_caller_with_the_password_gets_through(
    registry: ProcessRegistry, gateway_factory: GatewayFactory
) -> None:
    require_tools("sipp")
    gw = gateway_factory(extra_env=AUTH_ENV)
    assert call(registry, gw, "good", "s3cret") == 0
    challenged = gw.wait_for("call.challenged", timeout=5)[0]
    assert challenged["user"] == "echo" and challenged["stale"] is False
    started = gw.wait_for("call.started", timeout=5)[0]
    assert started["auth_user"] == "alice", started
    gw.wait_for("call.ended", timeout=5, call_id=started["call_id"])
    assert "s3cret" not in gw.stderr_tail()  # the password is never logged


def test_a_wrong_password_is_refused_and_starts_no_call(
    registry: ProcessRegistry, gateway_factory: GatewayFactory
) -> None:
    require_tools("sipp")
    gw = gateway_factory(extra_env=AUTH_ENV)
    assert call(registry, gw, "bad", "guess") == 0  # SIPp took the 403 path
    failed = gw.wait_for("call.auth_failed", timeout=5)[0]
    assert (failed["auth_user"], failed["reason"]) == ("alice", "wrong password"), failed
    assert gw.events("call.started") == []


def test_a_source_outside_allow_from_is_refused(
    registry: ProcessRegistry, gateway_factory: GatewayFactory
) -> None:
    require_tools("sipp")
    gw = gateway_factory(
        extra_env={"CALLBRIDGE_DEFAULT_AGENT": "echo", "CALLBRIDGE_SIP_ALLOW_FROM": "10.0.0.0/8"}
    )
    assert call(registry, gw, "stranger", "s3cret") == 0
    rejected = gw.wait_for("call.rejected", timeout=5)[0]
    assert rejected["status"] == 403 and "sip.allow_from" in rejected["reason"], rejected
    assert gw.events("call.challenged") == [] and gw.events("call.started") == []
