"""Issue 5, acceptance 3: blind transfer. The agent's transfer tool sends REFER to a SIPp
transferee that accepts it (202) and reports NOTIFY 100 then NOTIFY 200 (sipfrag);
callbridge reports the transfer and ends its leg with BYE (RFC 5589 §6.1).

The real tool path runs in the real gateway: the voice agent's OpenAI-compatible brain is
pointed at a local fake LLM server whose first answer (the greeting turn) is only a tool call
transfer(target="sip:sales@127.0.0.1"). SIPp's scenario fails (non-zero exit) unless the
REFER, both NOTIFY answers and the BYE arrive in that order.
"""

from __future__ import annotations

import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib.fake_llm import FailingLlmServer
from .peerlib.process import LOOPBACK, ProcessRegistry, free_port
from .peerlib.sipp import scenario
from .peerlib.speech import wire_segments
from .peerlib.voice_caller import CallerMedia, start_voice_caller

pytestmark = pytest.mark.peer

TARGET = f"sip:sales@{LOOPBACK}"


def test_agent_transfer_tool_refers_the_caller_and_hangs_up(
    registry: ProcessRegistry, gateway_factory: GatewayFactory
) -> None:
    require_tools("sipp")
    with FailingLlmServer(tool_call=("transfer", {"target": TARGET})) as llm:
        gw = gateway_factory(
            extra_env={
                "CALLBRIDGE_AGENT_GREET": "true",
                "CALLBRIDGE_LLM_PROVIDER": "openai",
                "CALLBRIDGE_LLM_BASE_URL": llm.base_url,
                "CALLBRIDGE_LLM_MODEL": "fake-model",
                "CALLBRIDGE_LLM_API_KEY": "test-key",
                "CALLBRIDGE_LLM_TIMEOUT": "5",
            }
        )
        with CallerMedia(free_port()) as media:
            caller = start_voice_caller(
                registry, gw.sip_addr, media, name="transferee",
                scenario=scenario("uac_transfer.xml"), timeout_s=60,
            )  # fmt: skip
            rc = caller.sipp.wait(45)
            heard = media.frames()
        chats = llm.chat_requests()
    assert rc == 0, f"the transferee's scenario failed:\n{caller.sipp.describe()}"
    assert not media.errors, media.errors

    started = gw.wait_for("call.started", timeout=5, sip_call_id=caller.sip_call_id)
    call_id = started[0]["call_id"]
    ended = gw.wait_for("call.ended", timeout=10, call_id=call_id)
    assert ended[0].get("reason") == "transferred", ended[0]

    # callbridge reports the transfer: the SIP layer's progress and result, the agent's tool.
    transfer = gw.events("call.transfer", call_id=call_id)
    stages = [(e.get("stage"), e.get("status"), e.get("ok")) for e in transfer]
    assert stages == [("requested", None, None), ("progress", 100, None), ("result", 200, True)], (
        transfer
    )
    assert transfer[0].get("target") == TARGET
    agent = gw.wait_for("agent.transfer", timeout=5, call_id=call_id)
    assert agent[0].get("ok") is True and agent[0].get("target") == TARGET, agent

    # The REFER named the target the brain asked for.
    refer_to = (caller.sipp.workdir / "refer_to.txt").read_text().split()
    assert refer_to[:2] == [TARGET, "end"], refer_to
    # "Transferring you now." played to the caller before the REFER went out.
    refer_at = (caller.sipp.workdir / "refer_to.txt").stat().st_mtime
    before = wire_segments([f for f in heard if f.time <= refer_at])
    spoken = sum(s.length for s in before)
    assert spoken >= 0.6, f"only {spoken:.2f} s of agent speech before the REFER: {before}"

    # The brain really was asked, with the transfer tool on offer.
    assert chats, "no chat request reached the fake LLM server"
    tools = [t["function"]["name"] for t in chats[0].json().get("tools", [])]
    assert "transfer" in tools, tools
    gw.assert_no_crash()
    assert gw.proc.running(), "the gateway process died"
