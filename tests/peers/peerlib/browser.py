"""Debian's Chromium, headless, driven by Python Playwright, on the gateway's softphone page.

The recipe is the shared testbed's WebRTC probe (testbed/webrtc: drive_playwright.py,
run_in_netns.sh), which worked on this machine:
- Chromium is /usr/bin/chromium (apt), given to Playwright as `executable_path`; never
  `playwright install` (no browser downloads);
- it runs only inside a network namespace that has nothing but `lo`: even with background
  networking off, Chromium resolves Google hosts at start-up. A test that finds itself
  outside one re-runs itself inside `unshare --net` (`run_in_private_netns`);
- `--allow-loopback-in-peer-connection` so Chromium offers 127.0.0.1 candidates (the gateway
  adds 127.0.0.1 to its own, transports/webrtc/transport.py), the mDNS hiding of local addresses off;
- the microphone is a WAV file (16-bit PCM mono; Chromium loops it from getUserMedia on);
  Playwright's default `--mute-audio` is dropped, so the remote audio really plays out and
  WebAudio sees it.

What the page received is measured in the page: its level meters' analysers sampled every
5 ms (local = the microphone before sending, remote = what arrived), `getStats()`, and a
MediaRecorder on the remote stream (WebM/Opus, decoded here with PyAV).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import speech
from .audio import Pcm
from .process import wait_true

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NETNS_ENV = "CALLBRIDGE_TEST_IN_NETNS"
MIC_RATE = 48000
LOUD = 0.01  # page RMS (full scale 1.0) above this is sound: -40 dBFS


def in_private_netns() -> bool:
    """Only `lo` is here: nothing Chromium does can leave the machine."""
    # /proc/self/net is this process's namespace (/sys/class/net is the mounter's).
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return {line.split(":", 1)[0].strip() for line in lines} == {"lo"}


def run_in_private_netns(nodeid: str, timeout: float = 600) -> tuple[int, str]:
    """Run one test (pytest node id) again inside a new network namespace with only `lo`
    up; its exit code and output. Needs root or unprivileged user namespaces."""
    unshare = ["unshare", "--net"] if os.getuid() == 0 else ["unshare", "-rn"]
    script = 'ip link set lo up && exec "$0" -m pytest -p no:cacheprovider -q -s "$1"'
    env = {**os.environ, NETNS_ENV: "1"}
    proc = subprocess.run(
        [*unshare, "sh", "-c", script, sys.executable, nodeid],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return proc.returncode, proc.stdout[-12000:] + proc.stderr[-4000:]


def chromium_args(fake_wav: Path) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--allow-loopback-in-peer-connection",
    ]


# ---------------------------------------------------------------------------- the microphone


def piper_48k(text: str, peak_dbfs: float = -6.0) -> npt.NDArray[np.int16]:
    """`text` in the gateway's own piper voice at 48 kHz (its native 22.05 kHz resampled),
    the voice's random variation off, so each run speaks the same audio."""
    from piper import SynthesisConfig

    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(speech._piper().synthesize(text, cfg))
    x = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    y = speech._resample(x, int(chunks[0].sample_rate), MIC_RATE)
    y *= 10 ** (peak_dbfs / 20) / max(1e-9, float(np.max(np.abs(y))))
    return speech.to_pcm(y)


def mic_wav(path: Path, lead_s: float, speech_48k: npt.NDArray[np.int16], tail_s: float) -> Path:
    """The fake microphone: `lead_s` of silence, the speech, `tail_s` of silence (Chromium
    loops the file: the tail keeps the speech from coming round again during the test)."""
    import wave

    pcm = np.concatenate(
        [
            np.zeros(round(lead_s * MIC_RATE), np.int16),
            speech_48k,
            np.zeros(round(tail_s * MIC_RATE), np.int16),
        ]
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


# ---------------------------------------------------------------------------- the page

_PROBE_JS = """() => {
  const sp = window.softphone;
  const probe = (window.probe = {timeline: [], rec: [], recStart: null});
  const bufs = {};
  const rms = (an) => {
    if (!an) return 0;
    const b = bufs[an.fftSize] || (bufs[an.fftSize] = new Float32Array(an.fftSize));
    an.getFloatTimeDomainData(b);
    let s = 0; for (const v of b) s += v * v;
    return Math.sqrt(s / b.length);
  };
  // 5 ms steps over a 1024-sample (21 ms) window: the level of the last frame or so.
  probe.timer = setInterval(() => {
    probe.timeline.push([performance.timeOrigin + performance.now(),
                         rms(sp.analyser_local), rms(sp.analyser_remote)]);
  }, 5);
}"""

_RECORD_JS = """() => {
  const probe = window.probe, sp = window.softphone;
  const rec = new MediaRecorder(sp.remoteStream, {mimeType: 'audio/webm;codecs=opus'});
  probe.recorder = rec;
  rec.ondataavailable = (e) => { if (e.data.size) probe.rec.push(e.data); };
  rec.start(250);
  probe.recStart = performance.timeOrigin + performance.now();
}"""

_STOP_RECORDING_JS = """async () => {
  const probe = window.probe;
  const rec = probe.recorder;
  if (!rec) return null;
  const stopped = new Promise((r) => (rec.onstop = r));
  rec.stop();
  await stopped;
  const blob = new Blob(probe.rec, {type: 'audio/webm'});
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}"""

_STATS_JS = """async () => {
  const pc = window.softphone.pc;
  if (!pc) return null;
  const out = {};
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') out.inbound = s;
    if (s.type === 'outbound-rtp' && s.kind === 'audio') out.outbound = s;
    if (s.type === 'codec') (out.codecs = out.codecs || []).push(s.mimeType);
  });
  return out;
}"""


@dataclass(frozen=True, slots=True)
class Level:
    t: float  # wall clock, s (the page's performance.timeOrigin + now())
    local: float
    remote: float


@dataclass
class Softphone:
    """The softphone page in one Chromium, with the probe installed."""

    page: Any
    console: list[str]

    def call(self, route: str) -> float:
        """Click "Call <route>"; the wall-clock time of the click."""
        self.page.get_by_test_id(f"call-{route}").click()
        return time.time()

    def wait_js(self, predicate: str, timeout: float, what: str) -> None:
        """Poll a JS function until it returns true. (Playwright's wait_for_function evals a
        string, which the page's Content-Security-Policy rightly forbids.)"""
        wait_true(lambda: bool(self.page.evaluate(predicate)), timeout, what, interval=0.05)

    def wait_connected(self, timeout: float = 20.0) -> None:
        self.wait_js(
            "() => window.softphone.state === 'connected' && !!window.softphone.remoteStream",
            timeout,
            f"the call to connect ({self.console[-5:]})",
        )
        self.page.evaluate(_PROBE_JS)

    def start_recording(self) -> float:
        self.page.evaluate(_RECORD_JS)
        return float(self.page.evaluate("window.probe.recStart")) / 1000

    def stop_recording(self) -> Pcm:
        """What the page received since start_recording(), as 8 kHz PCM16."""
        data = self.page.evaluate(_STOP_RECORDING_JS)
        assert data, "nothing was recorded"
        return decode_webm(base64.b64decode(data))

    def levels(self) -> list[Level]:
        rows = self.page.evaluate("window.probe ? window.probe.timeline : []")
        return [Level(t / 1000, a, b) for t, a, b in rows]

    def stats(self) -> dict[str, Any]:
        return dict(self.page.evaluate(_STATS_JS) or {})

    def state(self) -> dict[str, Any]:
        return dict(
            self.page.evaluate(
                "({state: softphone.state, endReason: softphone.endReason, "
                "errors: softphone.errors, session: softphone.session, "
                "status: document.getElementById('status').textContent})"
            )
        )

    def hang_up(self) -> None:
        self.page.get_by_test_id("hangup").click()
        self.wait_js("() => window.softphone.state === 'ended'", 5, "the page to hang up")


@contextmanager
def softphone(url: str, fake_wav: Path) -> Iterator[Softphone]:
    """Chromium on `url` with `fake_wav` as its microphone; closed at the end."""
    from playwright.sync_api import sync_playwright

    assert in_private_netns(), "Chromium runs only in a network namespace with only lo"
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=chromium_args(fake_wav),
                ignore_default_args=["--mute-audio"],
            )
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                console: list[str] = []
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.goto(url)
                yield Softphone(page, console)
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def decode_webm(data: bytes) -> Pcm:
    """A MediaRecorder's WebM/Opus as 8 kHz mono PCM16 (PyAV, which aiortc brings)."""
    import av

    out: list[npt.NDArray[np.float32]] = []
    rate = MIC_RATE
    with av.open(io.BytesIO(data), format="webm") as container:
        for frame in container.decode(audio=0):
            arr = frame.to_ndarray()
            rate = frame.sample_rate
            mono = (
                arr[0] if frame.format.is_planar else arr.reshape(-1)[:: len(frame.layout.channels)]
            )
            if mono.dtype == np.int16:
                out.append(mono.astype(np.float32) / 32768)
            else:
                out.append(mono.astype(np.float32))
    if not out:
        return np.zeros(0, np.int16)
    x = np.concatenate(out)
    return speech.to_pcm(speech._resample(x, rate, speech.RATE))


# ---------------------------------------------------------------------------- analysis


def sound_segments(
    levels: list[Level], which: str, min_gap_s: float = 0.25, min_len_s: float = 0.1
) -> list[speech.Segment]:
    """Runs of sound (level > LOUD) in `which` ("local" or "remote"), gaps shorter than
    `min_gap_s` bridged, runs shorter than `min_len_s` dropped. Times are wall clock."""
    segs: list[speech.Segment] = []
    start = last = None
    for lv in levels:
        loud = getattr(lv, which) > LOUD
        if loud:
            if start is None or (last is not None and lv.t - last > min_gap_s):
                if start is not None and last is not None and last - start >= min_len_s:
                    segs.append(speech.Segment(start, last))
                start = lv.t
            last = lv.t
    if start is not None and last is not None and last - start >= min_len_s:
        segs.append(speech.Segment(start, last))
    return segs
