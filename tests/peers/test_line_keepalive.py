"""Issue 10 acceptance 3: the line never goes quiet. While a call is up and not on hold, the
gateway sends an RTP packet every 20 ms even when the agent has nothing to say (carriers, SBCs
and PBXs end calls on media inactivity; NAT bindings close). The caller here sends no media at
all and the agent stays silent (echo: nothing to echo; the voice agent: greeting off, nothing
heard); tshark counts what reaches the caller's media port, second by second over 10 s."""

from __future__ import annotations

import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib.capture import read_rtp, start_capture
from .peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from .peerlib.sipp import start_uac

pytestmark = pytest.mark.peer

HOLD_MS = 13_000
WINDOW_S = 10


@pytest.mark.parametrize(
    ("route", "env"),
    [
        ("echo", {"CALLBRIDGE_DEFAULT_AGENT": "echo"}),
        ("agent", {"CALLBRIDGE_AGENT_GREET": "false"}),
    ],
)
def test_the_gateway_sends_a_packet_every_20_ms_while_the_agent_is_silent(
    route: str, env: dict[str, str], registry: ProcessRegistry, gateway_factory: GatewayFactory
) -> None:
    require_tools("sipp", "tshark")
    gateway = gateway_factory(extra_env=env)
    media_port = PORT_BLOCKS.take(8)[0]
    capture = start_capture(registry, "rtp", f"udp and dst port {media_port}")
    caller = start_uac(
        registry, "caller", "uac_silent.xml", target=gateway.sip_addr, service=route,
        sip_port=free_port(), media_port=media_port, hold_ms=HOLD_MS, timeout_s=40,
    )  # fmt: skip
    assert caller.wait(HOLD_MS / 1000 + 30) == 0, caller.describe()
    packets = read_rtp(capture.stop(), f"udp.dstport == {media_port}")
    assert packets, "no RTP reached the caller"
    start = packets[0].time + 1.0  # the first second holds call set-up
    per_second = [
        sum(1 for p in packets if start + i <= p.time < start + i + 1) for i in range(WINDOW_S)
    ]
    print(f"{route}: RTP packets per second from the gateway: {per_second}")
    assert min(per_second) >= 49, per_second
    assert {p.pt for p in packets} == {0}  # PCMU silence, not a codec the caller did not offer
    gateway.wait_for("call.ended", timeout=10)
    gateway.assert_no_crash()
