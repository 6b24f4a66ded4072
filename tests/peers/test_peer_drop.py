"""Issue 5 acceptance 5 (the store's part): the caller's phone dies mid-call without a BYE.

SIPp calls the voice agent (greeting on) with the test's RTP endpoint as its media, asks the
time and hears the answer; then the endpoint goes silent (no RTP, no BYE). With
CALLBRIDGE_RTP_TIMEOUT=2 the gateway must end the call as rtp_timeout and leave a complete
recording (a valid stereo WAV as long as the call, the dead caller silent at its end) and a
complete transcript holding the turns so far; the database has the call and its turns. While
the call runs, the transcript is readable and a copy of the recording is a valid WAV.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import GatewayFactory, require_tools
from .peerlib import audio, speech
from .peerlib.process import ProcessRegistry, free_port, wait_until
from .peerlib.recording import place_samples, place_ticks, read_recording
from .peerlib.speech import TimedFrame
from .peerlib.voice_caller import CallerMedia, start_voice_caller, wait_for_speech_end

pytestmark = pytest.mark.peer

QUESTION = "do you know what time it is"  # heard word for word (test_voice_agent_answers.py)
RTP_TIMEOUT_S = 2.0


def stereo(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path)) as w:
        params = w.getparams()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return params, samples


def transcript(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_a_dead_peer_ends_the_call_with_recording_and_transcript_saved(
    registry: ProcessRegistry, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    require_tools("sipp")
    gw = gateway_factory(
        extra_env={
            "CALLBRIDGE_AGENT_GREET": "true",
            "CALLBRIDGE_RECORDING_ENABLED": "true",
            "CALLBRIDGE_RTP_TIMEOUT": str(RTP_TIMEOUT_S),
        }
    )
    data = gw.config.data_dir
    question = speech.piper_speech(QUESTION)
    with CallerMedia(free_port()) as media:
        caller = start_voice_caller(registry, gw.sip_addr, media)
        call_id = str(
            gw.wait_for("call.started", timeout=5, sip_call_id=caller.sip_call_id)[0]["call_id"]
        )
        wav = data / "recordings" / f"{call_id}.wav"
        json_path = data / "transcripts" / f"{call_id}.json"
        wait_for_speech_end(gw, media, call_id, utterance=1)  # the greeting
        asked = media.play(question)
        gw.wait_for("agent.heard", timeout=15, call_id=call_id)
        answer = wait_until(
            lambda: (
                [t for t in gw.events("agent.turn", call_id=call_id) if t["utterance"] > 1] or None
            ),
            20,
            "the answer",
        )[0]
        wait_for_speech_end(gw, media, call_id, utterance=answer["utterance"])

        # While the call runs: the transcript is readable, a copy of the recording is valid.
        live = transcript(json_path)
        assert live["complete"] is False and len(live["entries"]) >= 3, live
        snapshot = tmp_path / "mid-call.wav"
        shutil.copy(wav, snapshot)
        params, _ = stereo(snapshot)
        assert params.nchannels == 2 and params.nframes > 0, params

        dropped = time.time()
        media.stop()  # the phone dies: no more RTP, no BYE
        ended = gw.wait_for("call.ended", timeout=RTP_TIMEOUT_S + 10, call_id=call_id)[0]
    ended_after = time.time() - dropped
    assert ended["reason"] == "rtp_timeout", ended
    assert gw.events("call.rtp_timeout", call_id=call_id)
    assert RTP_TIMEOUT_S <= ended_after < RTP_TIMEOUT_S + 3, ended_after
    saved = gw.wait_for("store.call_saved", timeout=5, call_id=call_id)[0]
    assert saved["reason"] == "rtp_timeout", saved
    caller.sipp.wait(10)  # it answers the gateway's BYE (and counts the call as failed)

    # The recording: complete, as long as the call, both voices, the dead caller silent.
    params, _ = stereo(wav)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000), params
    assert wav.stat().st_size == 44 + 4 * params.nframes  # the header covers all of it
    rec = read_recording(wav)
    rec_s = rec.seconds
    assert abs(rec_s - float(ended["duration"])) <= 0.1, (rec_s, ended["duration"])
    # The agent's channel: what the phone received, each frame in the tick it was sent.
    agent = place_ticks(media.frames(), rec.right)
    assert agent.loud > 100 and agent.share >= 0.95, (agent.loud, agent.share)
    rec_start = agent.start_estimate()
    # The caller's: the question as the phone sent it, behind the wire by the jitter buffer
    # (which, on a busy machine, splices out a pitch period now and then: the frames around
    # a splice are altered, the rest are there sample for sample).
    window = (asked - 0.1, asked + speech.duration(question) + 0.3)
    question_frames = [
        TimedFrame.of(f.time, audio.ulaw_decode(audio.ulaw_encode(f.pcm)))
        for f in media.sent
        if window[0] <= f.time < window[1]
    ]
    caller = place_samples(question_frames, rec.left)
    delays = caller.delays(rec_start)
    print(f"recording {rec_s:.2f} s, call {ended['duration']} s; question frames in the left "
          f"channel {len(caller.found)}/{caller.loud}, {1000 * min(delays):.0f} to "
          f"{1000 * max(delays):.0f} ms behind the wire")  # fmt: skip
    # Sample-exact frames prove the left channel is the caller's own audio and give its
    # delay; how many survive depends on the jitter buffer's adaptation (30-100 % seen, less
    # on a loaded machine), so the content itself is checked by its envelope below.
    assert caller.found, caller.share
    assert min(delays) >= -0.005 and max(delays) <= 0.3, delays
    sent_question = audio.ulaw_decode(audio.ulaw_encode(question))
    said = audio.compare(sent_question, rec.left)
    pieces = audio.piecewise_env_corr(sent_question, rec.left, said.offset_s)
    assert pieces >= 0.9, (pieces, said)
    tail = rec.left[-int(0.9 * RTP_TIMEOUT_S * 8000) :]
    assert audio.dbfs(tail) < -60, f"the dead caller's last second: {audio.dbfs(tail):.1f} dBFS"

    # The transcript: complete, with the turns so far.
    doc = transcript(json_path)
    assert (doc["complete"], doc["end_reason"]) == (True, "rtp_timeout"), doc
    said = [(e["role"], e.get("utterance")) for e in doc["entries"] if e["kind"] == "speech"]
    assert said[0] == ("agent", 1) and ("agent", answer["utterance"]) in said, said
    asked = [e for e in doc["entries"] if e["role"] == "caller"]
    assert any("time" in speech.words(e["text"]) for e in asked), asked
    assert all(0 <= e["start"] <= e["end"] <= rec_s for e in doc["entries"]), doc["entries"]

    # The database: the call, closed with the reason, and its turns.
    with sqlite3.connect(data / "callbridge.db") as db:
        reason, rec_path = db.execute(
            "SELECT end_reason, recording_path FROM calls WHERE id = ?", (call_id,)
        ).fetchone()
        turns = db.execute(
            "SELECT utterance, user_text FROM turns WHERE call_id = ? ORDER BY utterance",
            (call_id,),
        ).fetchall()
        names = {r[0] for r in db.execute("SELECT name FROM events WHERE call_id = ?", (call_id,))}
    assert (reason, rec_path) == ("rtp_timeout", str(wav))
    assert [t[0] for t in turns] == [1, answer["utterance"]], turns
    assert "time" in speech.words(turns[1][1]), turns
    assert {"call.started", "agent.heard", "call.rtp_timeout", "call.ended"} <= names, names
