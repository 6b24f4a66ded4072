"""Voice agent, issue 3 acceptance 4: a brain that fails leads to an apology, not a crash.

The gateway runs with the OpenAI-compatible brain pointed at a real local HTTP server that
answers every chat completion with HTTP 500. SIPp calls `agent` (greeting off) with the
test's RTP endpoint; the caller asks twice. Each time the agent logs agent.brain_failed and
says its short apology (transcribed here), the call stays up until the caller hangs up
(SIPp exits 0 only if the gateway sent no BYE of its own), and the gateway logs no traceback.
"""

from __future__ import annotations

import time

import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import speech
from .peerlib.fake_llm import FailingLlmServer
from .peerlib.process import ProcessRegistry, free_port
from .peerlib.voice_caller import CallerMedia, start_voice_call, wait_for_quiet, wait_for_sound

pytestmark = pytest.mark.peer

QUESTION = "do you know what time it is"
APOLOGY_WORDS = {"sorry", "trouble", "answering", "again"}


def test_failing_brain_apologises_and_keeps_the_call(
    registry: ProcessRegistry, gateway_factory: GatewayFactory
) -> None:
    require_tools("sipp", "tshark")
    question = speech.piper_speech(QUESTION)
    with FailingLlmServer() as llm:
        gw = gateway_factory(
            extra_env={
                "CALLBRIDGE_AGENT_GREET": "false",
                "CALLBRIDGE_LLM_PROVIDER": "openai",
                "CALLBRIDGE_LLM_BASE_URL": llm.base_url,
                "CALLBRIDGE_LLM_MODEL": "fake-model",
                "CALLBRIDGE_LLM_API_KEY": "test-key",
                "CALLBRIDGE_LLM_TIMEOUT": "5",
            }
        )
        with CallerMedia(free_port()) as media:
            call = start_voice_call(registry, gw, media)
            call_id = call.call_id()
            apologies = []
            for n in (1, 2):  # the second round proves the call and the agent still work
                asked = media.play(question, at=time.time() + 0.3)
                gw.wait_for("agent.brain_failed", timeout=20, count=n, call_id=call_id)
                on = wait_for_sound(
                    media, after=asked + speech.duration(question), timeout=15,
                    what=f"apology {n}",
                )  # fmt: skip
                end = wait_for_quiet(
                    media, after=on, quiet_s=1.2, timeout=20, what=f"the end of apology {n}"
                )
                apologies.append((asked, on, end))
                assert not gw.events("call.ended", call_id=call_id), "the gateway ended the call"
            assert gw.proc.running(), gw.stderr_tail()
            rc = call.caller.hang_up()
            assert rc == 0, (
                f"the call did not end with the caller's BYE:\n{call.caller.sipp.describe()}"
            )
        ended = gw.wait_for("call.ended", timeout=10, call_id=call_id)
        chats = llm.chat_requests()
    assert not media.errors, media.errors
    assert ended[0].get("reason") == "remote_bye", ended[0]
    gw.assert_no_crash()
    assert gw.proc.running(), "the gateway process died"

    failed = gw.events("agent.brain_failed", call_id=call_id)
    assert len(failed) == 2, failed
    assert all("500" in str(f.get("error")) for f in failed), failed
    heard = gw.events("agent.heard", call_id=call_id)
    assert len(heard) == 2, heard
    # The brain really was asked: the caller's words went to the fake server.
    assert len(chats) >= 2, f"{len(chats)} chat requests reached the fake LLM server"
    body = chats[0].json()
    assert body.get("model") == "fake-model", body
    assert chats[0].headers.get("Authorization") == "Bearer test-key", chats[0].headers
    user_texts = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    assert heard[0]["text"] in user_texts, (heard[0], body)

    audio = call.audio()
    for n, (_asked, on, end) in enumerate(apologies, 1):
        frames = [f for f in audio.agent if on - 0.3 <= f.time <= end + 0.3]
        assert frames, f"apology {n} is not in the capture"
        text = speech.transcribe(speech.render(frames, on - 0.2, end + 0.3))
        print(f"apology {n}: {end - on:.2f} s, heard as {text!r}")
        assert len(APOLOGY_WORDS & set(speech.words(text))) >= 2, f"apology {n}: {text!r}"
        assert end - on < 8.0, f"apology {n} lasted {end - on:.1f} s: not a short apology"
    history = gw.wait_for("agent.history", timeout=5, call_id=call_id)[0]["messages"]
    roles = [m["role"] for m in history]
    assert roles == ["user", "assistant", "user", "assistant"], history
