"""Issue 13 §4 tests 1 (the dashboard half) and 4 (the dashboard refuses unauthenticated
access off loopback): the built-in dashboard in real headless Chromium.

1. One Chromium, two tabs, a gateway with the product defaults (voice agent, greeting on):
   the softphone tab calls the agent with the softphone test's fake microphone (a WAV of the
   gateway's own piper voice asking "What time is it?" after the greeting); the dashboard tab,
   opened before the call, shows the call's row live (from GET /events, not polling), the
   greeting, the caller's question and the agent's answer as transcript lines, the turn's
   latency chart and the leg's jitter/loss stats; after the softphone hangs up, the same row
   is an ended call whose recording plays (the audio element has a duration, the waveform
   was decoded with WebAudio and drawn) and whose transcript lines seek the player.
2. Off loopback (HTTP on 0.0.0.0, so the API token is required): without a token the page
   shows the sign-in and /events answers 401; a wrong token is refused; the right one opens
   the stream, and it never appears in a URL the page requested.

Chromium runs only in a network namespace with nothing but `lo` (re-run inside one when the
test starts outside).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from callbridge.llm.demo import DEFAULT_GREETING

from .conftest import GatewayFactory, require_tools
from .peerlib import browser, speech
from .peerlib.process import wait_true, wait_until
from .test_browser_softphone import QUESTION, _netns_or_rerun, _start
from .test_voice_agent_answers import TIME_ANSWER

pytestmark = pytest.mark.peer

TOKEN = "dashboard-test-token"

_LINES_JS = """(callId) => {
  if (window.dashboard.selected !== callId) return null;
  return [...document.querySelectorAll('#transcript [data-testid=transcript-line]')].map((li) => ({
    role: li.dataset.role, final: li.dataset.final === 'true',
    text: li.querySelector('.text').textContent, start: li.dataset.start ?? null,
    interrupted: li.classList.contains('interrupted')}));
}"""

_ROW_JS = """(callId) => {
  const li = document.querySelector(`[data-testid=call-row][data-call-id="${callId}"]`);
  return li ? {live: li.dataset.live, list: li.parentElement.id, text: li.textContent} : null;
}"""

_RECORDING_JS = """() => {
  const a = document.querySelector('[data-testid=recording]');
  return {duration: a.duration, src: a.src, ready: a.readyState,
          drawn: window.dashboard.waveformDrawn, visible: !a.closest('[hidden]'),
          errors: window.dashboard.errors};
}"""


def _js(page: Any, fn: str, arg: Any = None) -> Any:
    return page.evaluate(fn, arg)


def _poll(page: Any, fn: str, arg: Any, timeout: float, what: str) -> Any:
    """A JS function's value once it is truthy (Playwright's wait_for_function evals a string,
    which the page's Content-Security-Policy forbids)."""
    return wait_until(lambda: _js(page, fn, arg) or None, timeout, what, interval=0.05)


def test_the_dashboard_shows_the_call_live_then_its_recording(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    if not _netns_or_rerun(request):
        return
    gw, web = _start(gateway_factory)
    greeting_s = speech.duration(speech.piper_speech(DEFAULT_GREETING))
    lead = greeting_s + 3.0
    wav = browser.mic_wav(tmp_path / "mic.wav", lead, browser.piper_48k(QUESTION), tail_s=60)
    with browser.softphone(web + "?raw=1", wav) as phone:
        dash = phone.page.context.new_page()
        console: list[str] = []
        dash.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        dash.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        failed: list[str] = []
        dash.on(
            "response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        dash.goto(web + "dashboard")
        _poll(dash, "() => window.dashboard.stream === 'live'", None, 10, "the event stream")
        assert dash.get_by_test_id("stream-status").inner_text().startswith("Live")
        # the pages link to each other
        assert dash.locator("nav a[href='/']").count() == 1
        assert phone.page.locator("nav a[href='/dashboard']").count() == 1

        phone.page.bring_to_front()
        phone.call("agent")
        phone.wait_connected()
        call_id = str(gw.wait_for("call.started", timeout=10)[0]["call_id"])

        # The row appears live in the dashboard, pushed by /events.
        row = _poll(dash, _ROW_JS, call_id, 10, "the call's row")
        assert (row["live"], row["list"]) == ("true", "live-calls"), row
        assert "webrtc" in row["text"] and "voice" in row["text"], row
        dash.locator(f"[data-testid=call-row][data-call-id='{call_id}'] button").click()

        turn = gw.wait_for(
            "agent.turn", lambda t: bool(TIME_ANSWER.match(t["text"])), timeout=lead + 25,
            call_id=call_id,
        )[0]  # fmt: skip
        heard = gw.events("agent.heard", call_id=call_id)[0]["text"]

        def conversation() -> list[dict[str, Any]] | None:
            lines = _js(dash, _LINES_JS, call_id) or []
            final = [(ln["role"], ln["text"]) for ln in lines if ln["final"]]
            ok = ("caller", heard) in final and ("agent", turn["text"]) in final
            return lines if ok else None

        lines = wait_until(conversation, 10, "the question and the answer in the dashboard")
        roles = [ln["role"] for ln in lines if ln["final"]]
        assert roles[:3] == ["agent", "caller", "agent"], lines  # greeting, question, answer
        assert "time" in speech.words(heard), heard
        # The answer's latency: a bar per part, voice-to-voice marked; the leg's stats.
        _poll(dash, "() => document.querySelectorAll('#latency rect.seg').length >= 4 && "
                    "document.querySelectorAll('#latency line.v2v').length >= 1",
              None, 10, "the latency chart")  # fmt: skip
        cells = _js(dash, "() => [...document.querySelectorAll('#latency tbody tr')]"
                          ".map((r) => [...r.cells].map((c) => c.textContent))")  # fmt: skip
        assert [str(turn["voice_to_voice_ms"])] in [row[1:2] for row in cells], cells
        _poll(dash, "() => document.querySelector('#stats dd[data-stat=jitter_ms]')", None, 10,
              "jitter in the stats")  # fmt: skip
        assert dash.locator("#stats dd[data-stat=rtp_packets_lost]").count() == 1

        phone.hang_up()
        gw.wait_for("call.ended", timeout=10, call_id=call_id)
        row = _poll(dash, "(id) => { const r = (" + _ROW_JS + ")(id); "
                          "return r && r.live === 'false' ? r : null; }",
                    call_id, 10, "the row to end")  # fmt: skip
        assert row["list"] == "history", row
        rec = _poll(dash, "() => { const r = (" + _RECORDING_JS + ")(); "
                          "return r.drawn && r.duration > 0 && r.visible ? r : null; }",
                    None, 20, "the recording and its waveform")  # fmt: skip
        assert rec["src"].startswith("blob:"), rec  # fetched with the header, not by URL
        ended_s = time.time()
        # The waveform has ink in both lanes (caller above, agent below).
        ink = _js(dash, """() => {
          const c = document.querySelector('[data-testid=waveform]');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const lanes = [0, 0];
          for (let i = 3; i < d.length; i += 4) if (d[i]) lanes[(i / 4 / c.width) < c.height / 2 ? 0 : 1]++;
          return lanes;
        }""")  # fmt: skip
        assert min(ink) > 100, ink
        # The stored transcript: each line seeks the player to where it was said.
        stored = _poll(dash, "(id) => { const l = (" + _LINES_JS + ")(id); "
                             "return l && l.length && l.every((x) => x.start !== null) ? l : null; }",
                       call_id, 10, "the stored transcript")  # fmt: skip
        question = next(ln for ln in stored if ln["role"] == "caller")
        assert float(question["start"]) > 1.0, stored
        dash.locator("#transcript [data-role=caller] button.seek").first.click()
        wait_true(
            lambda: abs(_js(dash, "() => document.querySelector('[data-testid=recording]')"
                                  ".currentTime") - float(question["start"])) < 1.5,
            5, "the player at the question",
        )  # fmt: skip
        assert rec["duration"] > float(question["start"]), (rec, question)
        state = _js(
            dash, "() => ({errors: window.dashboard.errors, events: window.dashboard.events})"
        )
    print(
        f"dashboard events {state['events']}; lines {stored}; recording {rec}; "
        f"ended -> recording shown {time.time() - ended_s:.2f} s"
    )
    assert not state["errors"], state
    assert not failed, failed
    assert not [m for m in console if m.startswith(("error", "pageerror"))], console
    gw.assert_no_crash()


def test_the_dashboard_off_loopback_needs_the_token(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    if not _netns_or_rerun(request):
        return
    require_tools("chromium")
    gw = gateway_factory(
        extra_env={
            "CALLBRIDGE_DEFAULT_AGENT": "echo",
            "CALLBRIDGE_HTTP_HOST": "0.0.0.0",  # off loopback: the API token is required
            "CALLBRIDGE_API_TOKEN": TOKEN,
        }
    )
    gw.wait_for("gateway.ready", timeout=30)
    base = f"http://127.0.0.1:{gw.config.http_port}/"
    wav = browser.mic_wav(tmp_path / "mic.wav", 0.5, browser.piper_48k("hello"), 10)
    with browser.softphone(base + "dashboard", wav) as dash:
        page = dash.page
        page.wait_for_selector("[data-testid=login]")
        assert page.locator("#login").is_visible()
        assert page.locator("#calls-panel").is_hidden()
        assert page.locator("label[for=token]").count() == 1
        probe = """async (auth) => {
          const r = await fetch('/events', auth ? {headers: {Authorization: auth}} : {});
          const out = {status: r.status, type: r.headers.get('content-type')};
          if (r.body) await r.body.cancel();
          return out;
        }"""
        assert page.evaluate(probe, None)["status"] == 401
        assert page.evaluate("async () => (await fetch('/calls')).status") == 401
        assert page.evaluate(f"async () => (await fetch('/events?token={TOKEN}')).status") == 401

        page.fill("#token", "not-the-token")
        page.get_by_test_id("login").click()
        wait_true(
            lambda: "not accepted" in page.locator("#login-error").inner_text(), 10,
            "the wrong token refused",
        )  # fmt: skip
        assert page.locator("#calls-panel").is_hidden()

        page.fill("#token", TOKEN)
        page.get_by_test_id("login").click()
        wait_true(lambda: page.evaluate("window.dashboard.stream") == "live", 10, "the stream")
        assert page.locator("#calls-panel").is_visible() and page.locator("#login").is_hidden()
        ok = page.evaluate(probe, f"Bearer {TOKEN}")
        assert (ok["status"], ok["type"].split(";")[0]) == (200, "text/event-stream"), ok
        urls = page.evaluate("() => performance.getEntriesByType('resource').map((e) => e.name)")
        leaked = [u for u in urls if TOKEN in u and "?token=" not in u]
        assert any(u.endswith("/events") for u in urls) and not leaked, urls
        assert re.search(r"No call", page.locator("#no-live").inner_text())
    gw.assert_no_crash()
