"""POST /calls/{id}/say on a live SIP call: the caller hears the text in the agent's voice.

SIPp calls the voice agent (greeting off, so the line is quiet until told otherwise) with
the test's RTP endpoint as its media; the test asks the gateway's HTTP API to say a sentence
and transcribes what arrives at the phone. "Your package will arrive on Monday morning." came
through pocketsphinx with "package", "monday" and "morning" 4 of 4 times with piper's
variation on.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import speech
from .peerlib.process import ProcessRegistry, free_port
from .peerlib.voice_caller import CallerMedia, start_voice_caller, wait_for_quiet, wait_for_sound

pytestmark = pytest.mark.peer

SENTENCE = "Your package will arrive on Monday morning."


def test_the_api_makes_the_agent_say_a_sentence_to_the_caller(
    registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    require_tools("sipp")
    gw = gateway_factory(
        extra_env={"CALLBRIDGE_AGENT_GREET": "false", "CALLBRIDGE_HTTP_ENABLED": "true"}
    )
    api = f"http://127.0.0.1:{gw.config.http_port}"
    with CallerMedia(free_port()) as media:
        caller = start_voice_caller(registry, gw.sip_addr, media)
        call_id = str(
            gw.wait_for("call.started", timeout=5, sip_call_id=caller.sip_call_id)[0]["call_id"]
        )
        asked = time.time()
        r = httpx.post(f"{api}/calls/{call_id}/say", json={"text": SENTENCE}, timeout=5)
        assert r.status_code == 202, r.text
        assert r.json() == {"id": call_id, "text": SENTENCE, "interrupt": False}
        start = wait_for_sound(media, after=asked, timeout=10, what="the sentence")
        said = gw.wait_for("agent.said", timeout=10, call_id=call_id)[0]
        end = wait_for_quiet(media, after=start, quiet_s=1.0, timeout=15, what="its end")
        heard = speech.transcribe(speech.render(media.frames(), start - 0.1, end + 0.1))
        print(f"said {said['text']!r} {1000 * (start - asked):.0f} ms after the request; "
              f"heard as {heard!r}")  # fmt: skip
        assert said["text"] == SENTENCE
        assert {"package", "monday", "morning"} <= set(speech.words(heard)), heard
        assert caller.hang_up() == 0
    gw.wait_for("call.ended", timeout=5, call_id=call_id)
    # The agent said it: the call's transcript has it as the agent's words.
    r = httpx.get(f"{api}/calls/{call_id}", timeout=5)
    assert r.status_code == 200, r.text
    entries = r.json()["transcript"]["entries"]
    assert [
        e["text"] for e in entries if e.get("speaker", e.get("role")) in ("agent", "assistant")
    ] == [SENTENCE], entries
