"""Issue 4, acceptance 3: a SIP call handed to an external agent over the agent socket.

SIPp calls `sip:pipecat@` with the test's RTP endpoint (PCMU and RFC 4733 DTMF) as its media.
The gateway's config file routes `pipecat` to a `twilio-socket` agent: a separate process built
on Pipecat's `TwilioFrameSerializer` and WebSocket server transport, with an echo pipeline
(tests/peers/agents/pipecat_echo.py). callbridge connects to it, playing Twilio. Proven:
1. audio flows both ways: the caller hears its own speech back;
2. DTMF pressed by the caller (RFC 4733) arrives at the agent (the agent logs it);
3. the agent's `clear` stops playback: on `9` the agent sends a 6 s tone at once (as agents
   that forward a model's audio do), which callbridge buffers and plays in real time; a second
   into it the caller presses `#`, the agent interrupts (Pipecat sends `clear`), and the
   caller's last tone packet arrives within 300 ms of the clear.
The upgrade is signed with the route's secret: the `twilio` package's validator accepts it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from .conftest import GatewayFactory, require_tools
from .peerlib import audio, speech
from .peerlib.callbridge import python
from .peerlib.process import ManagedProcess, ProcessRegistry, free_port, wait_true, wait_until
from .peerlib.voice_caller import CallerMedia, start_voice_caller, wait_for_sound

pytestmark = pytest.mark.peer

HERE = Path(__file__).resolve().parent
AGENT = HERE / "agents" / "pipecat_echo.py"
SCENARIO = HERE / "agents" / "uac_external_media_dtmf.xml"
CLIP = HERE.parent / "fixtures" / "audio" / "agent_office.wav"  # 3.6 s of speech
SECRET = "shared-secret-for-the-upgrade"
TONE_PEAK = 5000  # the agent's tone peaks at ~9800; echoed silence at 0
MAX_CLEAR_TO_SILENCE_S = 0.300


class AgentLog:
    """The agent's JSON-lines stdout: {"t": time.time(), "event": ..., ...}."""

    def __init__(self, proc: ManagedProcess) -> None:
        self.proc = proc

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        out = []
        for line in self.proc.stdout_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == name and all(ev.get(k) == v for k, v in fields.items()):
                out.append(ev)
        return out

    def wait(
        self, name: str, timeout: float, count: int = 1, **fields: Any
    ) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            found = self.events(name, **fields)
            if len(found) >= count:
                return found
            assert self.proc.running(), f"the agent exited:\n{self.proc.stderr_text()[-3000:]}"
            return None

        return wait_until(check, timeout, f"{count} x {name} {fields or ''} from the agent")


def windowed_match(ref: audio.Pcm, test: audio.Pcm, offset: int) -> list[float]:
    """Sample-level correlation of each loud 200 ms window of `ref` with `test`, each at its
    best lag within 40 ms of `offset`: the whole of the caller's speech came back intact, not
    just its loudest second (audio.compare's fine check). A window of the echo that went dry
    for a tick (a 20 ms shift in it) scores ~0.5, unrelated speech ~0.2."""
    win, search = audio.RATE // 5, audio.RATE // 25
    ref_f, test_f = ref.astype(np.float64), test.astype(np.float64)
    out = []
    for start in range(0, len(ref) - win, win):
        seg = ref_f[start : start + win]
        if audio.dbfs(ref[start : start + win]) < -35:
            continue
        seg = seg - seg.mean()
        best = -1.0
        for lag in range(offset - search, offset + search + 1):
            t0 = start + lag
            if t0 < 0 or t0 + win > len(test_f):
                continue
            other = test_f[t0 : t0 + win] - test_f[t0 : t0 + win].mean()
            den = float(np.sqrt(np.dot(seg, seg) * np.dot(other, other)))
            if den > 0:
                best = max(best, float(np.dot(seg, other)) / den)
        out.append(best)
    return out


def test_sip_call_reaches_a_pipecat_agent_over_the_agent_socket(
    registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    require_tools("sipp")
    port = free_port()
    agent = AgentLog(
        registry.start(
            "pipecat-agent",
            [python(), str(AGENT), "--port", str(port)],
        )
    )
    agent.wait("listening", timeout=90)  # importing Pipecat takes a while on a busy box
    url = f"ws://127.0.0.1:{port}/media?tenant=acme"
    config = tmp_path / "callbridge.toml"
    config.write_text(
        "[agents.pipecat]\n"
        'kind = "twilio-socket"\n'
        f'url = "{url}"\n'
        'parameters = { tenant = "acme", greeting = "none" }\n'
        f'secret = "{SECRET}"\n'
    )
    gw = gateway_factory(
        extra_env={"CALLBRIDGE_DEFAULT_AGENT": "echo", "CALLBRIDGE_CONFIG": str(config)}
    )
    clip = audio.read_wav(CLIP)

    with CallerMedia(free_port()) as media:
        caller = start_voice_caller(
            registry, gw.sip_addr, media, service="pipecat", scenario=SCENARIO
        )
        started = gw.wait_for("call.started", timeout=10, sip_call_id=caller.sip_call_id)[0]
        assert started["agent"] == "pipecat", started
        call_id = started["call_id"]

        # ---- the handshake, as a Twilio app sees it
        start = agent.wait("start", timeout=10)[0]["message"]
        params = start["start"]["customParameters"]
        assert params["tenant"] == "acme" and params["greeting"] == "none", params
        assert params["call_id"] == call_id and params["to"] == "pipecat", params
        assert params["from"].startswith("sip:caller@"), params
        assert start["start"]["mediaFormat"] == {
            "encoding": "audio/x-mulaw",
            "sampleRate": 8000,
            "channels": 1,
        }
        upgrade = agent.events("client_connected")[0]
        signature = upgrade["headers"].get("X-Twilio-Signature", "")
        assert RequestValidator(SECRET).validate(url, {}, signature), upgrade["headers"]
        assert not RequestValidator("another-secret").validate(url, {}, signature)

        # ---- 1. audio both ways: the caller hears itself
        said = media.play(clip, at=time.time() + 0.3)
        said_end = said + speech.duration(clip)
        wait_for_sound(media, after=said, timeout=10, what="the echo of the caller's speech")
        heard_until = said_end + 1.0
        wait_true(lambda: time.time() >= heard_until, 15, "the echo to play out")
        echoed = speech.render(media.frames(), said, heard_until)  # judged after the call
        # The reference is what the caller really sent: its sender thread places the clip by
        # wall time, so a late wake-up on a busy box skips samples, which the echo carries.
        sent = np.concatenate([f.pcm for f in media.sent if said - 0.01 <= f.time <= said_end])

        # ---- 2. DTMF (RFC 4733) reaches the agent
        first = media.dtmf("1")
        media.dtmf("2", at=first + 0.4)
        got = agent.wait("dtmf", timeout=10, count=2)
        assert [e["digit"] for e in got] == ["1", "2"], got

        # ---- 3. the agent's clear stops playback
        nine = media.dtmf("9")
        tone_on = wait_for_sound(media, after=nine, timeout=10, what="the agent's tone")
        wait_true(lambda: time.time() >= tone_on + 1.0, 10, "a second of the tone")
        pressed = media.dtmf("#")
        clear = agent.wait("clear", timeout=10)[0]["t"]
        after = clear + 1.5
        wait_true(lambda: time.time() >= after, 10, "1.5 s after the clear")
        frames = media.frames()

        assert caller.hang_up() == 0, caller.sipp.describe()
    gw.wait_for("call.ended", timeout=10, call_id=call_id)
    assert not media.errors, media.errors

    sim = audio.compare(sent, echoed)
    windows = windowed_match(sent, echoed, round(sim.offset_s * audio.RATE))
    good = sum(c >= 0.9 for c in windows) / len(windows)
    print(
        f"echo through the Pipecat agent: {sim}; {100 * good:.0f}% of "
        f"{len(windows)} loud 200 ms windows match sample by sample (>= 0.9)"
    )
    assert sim.ok(min_env=0.8, min_fine=0.8), f"the caller did not hear itself: {sim}"
    assert good >= 0.8, f"the echo is not all the caller's audio: {sim}, windows {windows}"

    last_before = speech.last_loud_before(frames, clear, threshold_dbfs=-30)
    last_tone = speech.last_loud_before(frames, after, threshold_dbfs=-30)
    cleared = gw.wait_for("agent_socket.clear", timeout=5, call_id=call_id)[0]
    stop_s = (last_tone or 0.0) - clear
    print(
        f"tone heard {clear - tone_on:.3f} s before the agent's clear (# pressed "
        f"{1000 * (clear - pressed):.0f} ms before it); callbridge dropped "
        f"{cleared['dropped_samples'] / 8000:.3f} s of tone; the caller's last tone packet "
        f"came {1000 * stop_s:.0f} ms after the clear (max {1000 * MAX_CLEAR_TO_SILENCE_S:.0f})"
    )
    assert last_before is not None and clear - last_before < 0.1, (
        "the tone was not playing when the clear came: nothing to stop"
    )
    assert cleared["dropped_samples"] >= 2 * 8000, (
        f"callbridge held too little of the tone for the clear to matter: {cleared}"
    )
    assert last_tone is not None and stop_s <= MAX_CLEAR_TO_SILENCE_S, (
        f"the caller heard the tone {1000 * stop_s:.0f} ms after the clear"
    )

    # ---- the end: stop to the agent, the socket closed by callbridge
    stop = agent.wait("stop", timeout=10)[0]["message"]
    assert stop["streamSid"] == start["streamSid"]
    assert stop["stop"] == {
        "accountSid": start["start"]["accountSid"],
        "callSid": start["start"]["callSid"],
    }
    closed = gw.wait_for("agent_socket.closed", timeout=10, call_id=call_id)[0]
    assert closed["close_code"] == 1000, closed
    assert not closed.get("bad_messages"), closed
    ended = gw.wait_for("call.ended", timeout=5, call_id=call_id)[0]
    assert ended["reason"] == "remote_bye", ended  # the caller's BYE, nothing else
