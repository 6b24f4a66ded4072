"""WebRTC benchmark: mouth-to-ear through the echo route from a real browser, and the gateway's
CPU per WebRTC call (Opus) beside per SIP call (G.711), in one run.

    .venv/bin/python bench/webrtc.py [--bursts 27] [--m2e-calls 3] [--calls 10,20] [--hold 20]
                                     [--ramp 5] [--codecs opus[,pcmu]] [--out DIR]
    .venv/bin/python bench/webrtc.py --smoke    # 3 bursts; N=2 for 5 s per transport

Runs as root: it re-runs itself inside `unshare --net` (only `lo`: Chromium cannot reach
anything, nothing leaves the machine).

1. Mouth-to-ear. Debian's Chromium (headless, Playwright, peerlib/browser.py's flags) opens a
   page of this benchmark at the gateway's origin (Playwright fulfils that one request, so the
   page's `POST /webrtc/offer` is same-origin). Its "microphone" is WebAudio: a 1 kHz tone
   gated into 100 ms bursts scheduled on the AudioContext clock, into a
   MediaStreamDestination; it calls `echo`, and an AudioWorklet on the received stream
   timestamps each returned burst's first loud sample. Delay = detection - emission, both on
   the AudioContext clock (sample-accurate; performance.now() read on the main thread would
   add its scheduling jitter). It covers the page's WebAudio -> WebRTC capture, Opus both
   ways, the gateway, Chromium's jitter buffer and its WebRTC -> WebAudio path; not a sound
   card's own latency. The bursts are spread over --m2e-calls calls (a standing delay is per
   call). SIP, same gateway: peerlib's RTP endpoint (voice_caller.CallerMedia, PCMU, called
   by SIPp) sends the same bursts; delay = arrival of the first loud echoed sample - its send
   time: wire to wire, no caller jitter buffer or playout, so a floor, not mouth-to-ear.
2. CPU per call. Per transport and N, a fresh gateway (echo route, no recording, no greeting),
   idle for a few seconds, then N WebRTC calls from aiortc clients in this process (each sends
   looped espeak-ng speech and consumes what comes back) or N SIPp calls playing the same
   speech as a PCMU pcap. Over the hold, when all N are up: the gateway's CPU (% of one core,
   /proc; children apart), (CPU - idle) / N, its RSS, the packets/s each call delivered (the
   load was there), and this process's own CPU (the aiortc clients), for context.

Exit status 1 when a step could not be measured, a call failed, or fewer than 20 bursts (1
with --smoke) came back on a path. No timing is asserted: this is an instrument, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load import ProcMon, fmt, make_media, pct  # noqa: E402
from tests.peers.peerlib import audio, browser, speech  # noqa: E402
from tests.peers.peerlib.callbridge import (  # noqa: E402
    CallbridgeProcess,
    GatewayConfig,
    start_gateway,
)
from tests.peers.peerlib.process import ProcessRegistry, free_port  # noqa: E402
from tests.peers.peerlib.sipp import parse_stats, start_uac  # noqa: E402
from tests.peers.peerlib.voice_caller import CallerMedia, start_voice_caller  # noqa: E402

BURST_HZ = 1000.0  # inside the 8 kHz pipeline's band
BURST_S = 0.1
PERIOD_S = 1.0  # longer than any round trip seen: each echo pairs with its own burst
LOUD = 0.05  # |sample| (full scale 1.0) that counts as a returned burst (bursts are 0.5)
CLIENT_RATE = 48000
IDLE_S = 4.0  # the gateway's CPU with no call, before each step's calls
RTP_BASE = 6000  # the gateway's RTP range (a private namespace: nothing else is there)
UAC_MEDIA_PORT = 30000  # SIPp's [auto_media_port]: call k uses 30000 + 4 * (k - 1)

# ---------------------------------------------------------------------------- the gateway


def gateway_env() -> dict[str, str]:
    return {
        "CALLBRIDGE_DEFAULT_AGENT": "echo",
        "CALLBRIDGE_AGENT_GREET": "false",
        "CALLBRIDGE_RECORDING_ENABLED": "false",
        "CALLBRIDGE_RECORDING_TRANSCRIPTS": "false",
        "CALLBRIDGE_HTTP_ENABLED": "true",  # both transports: the same gateway config
        "CALLBRIDGE_LOG_LEVEL": "INFO",
        "CALLBRIDGE_LIMITS_TRUSTED": "127.0.0.0/8",  # every caller is one loopback address
        "CALLBRIDGE_LIMITS_CALLS_PER_SECOND": "0",
    }


@contextlib.contextmanager
def gateway(reg: ProcessRegistry, work: Path, rtp_ports: int) -> Iterator[CallbridgeProcess]:
    cfg = GatewayConfig(
        sip_port=free_port(),
        http_port=free_port(),
        rtp_range=(RTP_BASE, RTP_BASE + rtp_ports),  # below PORT_BLOCKS' and SIPp's ports
        data_dir=work / "gateway-data",
        extra_env=gateway_env(),
    )
    gw = start_gateway(reg, cfg, name="gateway", timeout=180)
    try:
        gw.wait_for("gateway.ready", timeout=60)
        yield gw
    finally:
        gw.shutdown(grace=30)


# ---------------------------------------------------------------------------- browser page

_WORKLET = """
class Detector extends AudioWorkletProcessor {
  constructor() { super(); this.last = -1e12; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) for (let i = 0; i < ch.length; i++) {
      const at = currentFrame + i;
      if (Math.abs(ch[i]) > %(loud)s && at - this.last > sampleRate * %(refractory)s) {
        this.last = at;
        this.port.postMessage(at / sampleRate);
      }
    }
    return true;
  }
}
registerProcessor('detector', Detector);
"""

_PAGE = """<!doctype html><meta charset="utf-8"><title>m2e</title><script>
const R = (window.m2e = {state: 'new', emitted: [], detected: [], errors: []});
const WORKLET = %(worklet)s;
async function call(route) {
  try {
    const ctx = (R.ctx = new AudioContext({sampleRate: 48000}));
    await ctx.resume();
    const url = URL.createObjectURL(new Blob([WORKLET], {type: 'application/javascript'}));
    await ctx.audioWorklet.addModule(url);
    const det = new AudioWorkletNode(ctx, 'detector');
    det.port.onmessage = (e) => R.detected.push(e.data);
    const mute = ctx.createGain(); mute.gain.value = 0;
    det.connect(mute).connect(ctx.destination);  // pulled by the graph: it runs every quantum
    const osc = ctx.createOscillator(); osc.frequency.value = %(hz)s;
    const gate = (R.gate = ctx.createGain()); gate.gain.value = 0;
    const mic = ctx.createMediaStreamDestination();
    osc.connect(gate).connect(mic); osc.start();
    const pc = (R.pc = new RTCPeerConnection({iceServers: []}));
    pc.addTrack(mic.stream.getAudioTracks()[0], mic.stream);
    pc.ontrack = (e) => {
      const stream = e.streams[0] || new MediaStream([e.track]);
      // Chromium feeds a remote track to WebAudio only while a media element plays it.
      const el = (R.el = new Audio()); el.muted = true; el.srcObject = stream; el.play();
      (R.src = ctx.createMediaStreamSource(stream)).connect(det);
    };
    pc.onconnectionstatechange = () => { R.state = pc.connectionState; };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((ok) => {  // non-trickle, as the gateway expects
      if (pc.iceGatheringState === 'complete') return ok();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok();
      setTimeout(ok, 3000);
    });
    const r = await fetch('/webrtc/offer', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({sdp: pc.localDescription.sdp, type: 'offer', route})});
    if (!r.ok) throw new Error('offer: ' + r.status + ' ' + (await r.text()));
    const answer = await r.json();
    R.session = answer.session;
    await pc.setRemoteDescription({type: 'answer', sdp: answer.sdp});
  } catch (e) { R.errors.push(String(e)); R.state = 'error'; }
}
function bursts(n, period, len) {  // on the context clock, from half a second from now
  const t0 = R.ctx.currentTime + 0.5, g = R.gate.gain;
  for (let k = 0; k < n; k++) {
    const t = t0 + k * period;
    g.setValueAtTime(0, t); g.linearRampToValueAtTime(0.5, t + 0.002);
    g.setValueAtTime(0.5, t + len); g.linearRampToValueAtTime(0, t + len + 0.002);
    R.emitted.push(t);
  }
  return t0 + n * period;
}
async function stats() {
  const out = {};
  (await R.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') out.inbound = s;
    if (s.type === 'codec') (out.codecs = out.codecs || []).push(s.mimeType);
  });
  return out;
}
async function hangup() {
  R.pc.close();
  if (R.session) await fetch('/webrtc/hangup', {method: 'POST', body: JSON.stringify({session: R.session})});
}
</script>"""


def page_html() -> str:
    worklet = _WORKLET % {"loud": LOUD, "refractory": BURST_S * 3}
    return _PAGE % {"worklet": json.dumps(worklet), "hz": BURST_HZ}


def pair_delays(emitted: Sequence[float], detected: Sequence[float]) -> list[float]:
    """Per burst, ms from its emission to the first detection within its period."""
    out = []
    for t in emitted:
        hits = [d for d in detected if t <= d < t + PERIOD_S]
        if hits:
            out.append(1000 * (hits[0] - t))
    return out


def browser_call(page: Any, url: str, n: int, console: list[str]) -> dict[str, Any]:
    """One call of the page to echo, `n` bursts: per burst delay (ms), the page's jitter buffer."""
    page.goto(url)
    page.evaluate("call('echo')")
    deadline = time.monotonic() + 20
    while (state := page.evaluate("m2e.state")) not in ("connected", "error"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if state != "connected":
        raise RuntimeError(f"browser call: {state} {page.evaluate('m2e.errors')} {console[-5:]}")
    end = float(page.evaluate(f"bursts({n}, {PERIOD_S}, {BURST_S})"))
    while float(page.evaluate("m2e.ctx.currentTime")) < end + PERIOD_S:
        time.sleep(0.1)
    emitted, detected = page.evaluate("[m2e.emitted, m2e.detected]")
    inbound = page.evaluate("stats()").get("inbound", {})
    page.evaluate("hangup()")
    jb = None
    if inbound.get("jitterBufferEmittedCount"):
        jb = 1000 * inbound["jitterBufferDelay"] / inbound["jitterBufferEmittedCount"]
    return {"delays": pair_delays(emitted, detected), "bursts": len(emitted), "jb_ms": jb}


def browser_m2e(gw: CallbridgeProcess, work: Path, calls: int, n: int) -> list[dict[str, Any]]:
    """`calls` calls one after the other from one Chromium, `n` bursts each."""
    from playwright.sync_api import Route, sync_playwright

    origin = f"http://127.0.0.1:{gw.config.http_port}"
    silent = audio.write_wav(work / "silence.wav", np.zeros(8000, np.int16))
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=browser.CHROMIUM, headless=True,
                args=browser.chromium_args(silent), ignore_default_args=["--mute-audio"],
            )  # fmt: skip
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                console: list[str] = []
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))

                def serve(route: Route) -> None:
                    route.fulfill(status=200, content_type="text/html", body=page_html())

                page.route(origin + "/bench-m2e", serve)
                return [browser_call(page, origin + "/bench-m2e", n, console) for _ in range(calls)]
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def sip_call(reg: ProcessRegistry, gw: CallbridgeProcess, n: int, k: int) -> dict[str, Any]:
    rate = audio.RATE
    t = np.arange(round(BURST_S * rate)) / rate
    burst = (0.5 * 32767 * np.sin(2 * np.pi * BURST_HZ * t)).astype(np.int16)
    with CallerMedia(free_port()) as media:
        caller = start_voice_caller(reg, gw.sip_addr, media, service="echo", name=f"sip-m2e{k}")
        t0 = time.time() + 0.5
        emitted = [media.play(burst, at=t0 + i * PERIOD_S) for i in range(n)]
        time.sleep(max(0.0, t0 + n * PERIOD_S + PERIOD_S - time.time()))
        frames = media.frames()
        caller.hang_up()
    detected = []
    for f in frames:  # each received frame's samples are timed from its arrival
        loud = np.flatnonzero(np.abs(f.pcm.astype(np.int32)) > LOUD * 32768)
        if len(loud):
            detected.append(f.time + loud[0] / rate)
    detected = [d for i, d in enumerate(detected) if i == 0 or d - detected[i - 1] > BURST_S * 3]
    return {"delays": pair_delays(emitted, detected), "bursts": len(emitted), "jb_ms": None}


def m2e_step(work: Path, calls: int, bursts: int) -> list[dict[str, Any]]:
    step = work / "m2e"
    step.mkdir()
    reg = ProcessRegistry(step)
    per_call = -(-bursts // calls)
    rows = []
    try:
        with gateway(reg, step, 40) as gw:
            for path, codec in (("browser -> webrtc echo -> browser", "opus"), ("SIP RTP echo, wire to wire", "PCMU")):  # fmt: skip
                row: dict[str, Any] = {"kind": "m2e", "path": path, "codec": codec, "load1": os.getloadavg()[0]}  # fmt: skip
                try:
                    if codec == "opus":
                        row["calls"] = browser_m2e(gw, step, calls, per_call)
                    else:
                        row["calls"] = [sip_call(reg, gw, per_call, k) for k in range(calls)]
                except Exception as exc:  # the other path is still measured
                    row["error"] = str(exc)[:400]
                rows.append(row)
            gw.assert_no_crash()
    finally:
        reg.stop_all()
    return rows


# ---------------------------------------------------------------------------- aiortc callers


def loopback_only() -> None:
    """aioice skips 127.0.0.1 when gathering, and `lo` is all this namespace has."""
    import aioice.ice

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    aioice.ice.get_host_addresses = host_addresses


@dataclass(eq=False)
class Client:
    pc: Any
    frames_in: int = 0
    loud_in: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # connected or failed


def speech_track(pcm48: np.ndarray, offset: int) -> Any:
    import av
    from aiortc.mediastreams import MediaStreamTrack

    class LoopTrack(MediaStreamTrack):
        """The speech, looped, 20 ms frames paced in real time (a microphone)."""

        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.t0: float | None = None

        async def recv(self) -> av.AudioFrame:
            loop = asyncio.get_running_loop()
            self.t0 = loop.time() if self.t0 is None else self.t0
            await asyncio.sleep(max(0.0, self.t0 + self.n / CLIENT_RATE - loop.time()))
            i = (offset + self.n) % (len(pcm48) - 960)
            frame = av.AudioFrame.from_ndarray(pcm48[i : i + 960].reshape(1, -1), format="s16", layout="mono")  # fmt: skip
            frame.sample_rate, frame.pts = CLIENT_RATE, self.n
            frame.time_base = fractions.Fraction(1, CLIENT_RATE)
            self.n += 960
            return frame

    return LoopTrack()


async def open_call(http: Any, base: str, pcm48: np.ndarray, k: int, codec: str) -> Client:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client = Client(pc)
    tr = pc.addTransceiver(speech_track(pcm48, k * 7919), direction="sendrecv")
    caps = RTCRtpSender.getCapabilities("audio")
    tr.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == f"audio/{codec}"])

    async def consume(track: Any) -> None:
        with contextlib.suppress(Exception):  # MediaStreamError at the end
            while True:
                f = await track.recv()
                client.frames_in += 1
                if np.max(np.abs(f.to_ndarray())) > 1000:
                    client.loud_in += 1

    pc.on("track", lambda track: client.tasks.append(asyncio.ensure_future(consume(track))))

    @pc.on("connectionstatechange")
    def settle() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            client.settled.set()

    await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": pc.localDescription.sdp, "type": "offer", "route": "echo"}
    for _ in range(20):  # 503 while the gateway's loop is late from the previous setups
        r = await http.post(base + "/webrtc/offer", json=body)
        if r.status_code not in (429, 503):
            break
        await asyncio.sleep(0.5)
    r.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=r.json()["sdp"], type="answer"))
    return client


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def webrtc_calls(gw: CallbridgeProcess, a: argparse.Namespace, n: int, codec: str, pcm48: np.ndarray) -> dict[str, Any]:  # fmt: skip
    import httpx

    base = f"http://127.0.0.1:{gw.config.http_port}"
    async with httpx.AsyncClient(timeout=30) as http:
        clients: list[Client] = []
        try:
            for k in range(n):
                clients.append(await open_call(http, base, pcm48, k, codec))
                await asyncio.sleep(a.ramp / n)
            async with asyncio.timeout(30):
                for c in clients:
                    await c.settled.wait()
            t0, c0 = time.time(), self_cpu()
            await asyncio.sleep(a.hold)
            t1, c1 = time.time(), self_cpu()
        finally:
            for c in clients:
                await c.pc.close()
                for t in c.tasks:
                    t.cancel()
    ok = [c for c in clients if c.loud_in > 10]
    return {"t0": t0, "t1": t1, "ok": len(ok), "failed": n - len(ok),
            "clients_cpu": 100 * (c1 - c0) / (t1 - t0)}  # fmt: skip


def cpu_step(a: argparse.Namespace, work: Path, transport: str, n: int, *, media: Path, pcm48: np.ndarray) -> dict[str, Any]:  # fmt: skip
    step = work / f"cpu-{transport.replace('/', '-')}-{n}"
    step.mkdir()
    reg = ProcessRegistry(step)
    row: dict[str, Any] = {"kind": "cpu", "transport": transport, "n": n, "load1": os.getloadavg()[0]}  # fmt: skip
    try:
        with gateway(reg, step, 4 * n + 40) as gw:
            mon = ProcMon(gw.proc.pid)
            mon.start()
            idle0 = time.time()
            time.sleep(IDLE_S)  # the gateway with no call: its timers, HTTP, the SIP socket
            row["idle_cpu"] = mon.summary(idle0, time.time()).get("gw_cpu")
            if transport == "sip":
                t0 = time.time()
                uac = start_uac(
                    reg, "uac", "uac_play.xml", target=gw.sip_addr, service="echo",
                    sip_port=free_port(), media_port=UAC_MEDIA_PORT, calls=n,
                    rate=max(1.0, n / a.ramp), limit=n, hold_ms=int((a.ramp + a.hold) * 1000),
                    timeout_s=int(2 * a.ramp + a.hold + 60), files={"media.pcap": media},
                )  # fmt: skip
                uac.wait(2 * a.ramp + a.hold + 90)
                stats = parse_stats(uac.stats_path)
                ok = stats.counter("SuccessfulCall(C)")
                res = {"t0": t0 + a.ramp + 1, "t1": t0 + a.ramp + a.hold - 1, "ok": ok,
                       "failed": n - ok, "clients_cpu": None}  # fmt: skip
            else:
                res = asyncio.run(webrtc_calls(gw, a, n, transport.split("/")[1], pcm48))
                res["t0"], res["t1"] = res["t0"] + 1, res["t1"] - 1
            mon.stop()
            gw.wait_for("call.ended", timeout=30, count=len(gw.events("call.started")))
            row.update(res)
            row.update(mon.summary(res["t0"], res["t1"]))
            row["started"] = len(gw.events("call.started"))
            # packets/s each call delivered to the gateway (50 expected): was the load there?
            rates = [
                (e.get("rtp_in") or e.get("rtp_packets_in") or 0) / e["duration"]
                for e in gw.events("call.ended")
                if e.get("duration")
            ]
            row["in_pps"] = sum(rates) / len(rates) if rates else None
            gw.assert_no_crash()
        return row
    finally:
        reg.stop_all()


# ---------------------------------------------------------------------------- tables


def print_tables(rows: list[dict[str, Any]]) -> None:
    print(f"\n== mouth-to-ear via the echo route: {BURST_S * 1000:.0f} ms bursts of {BURST_HZ:g} Hz, one per {PERIOD_S:g} s")  # fmt: skip
    print(f"{'path':<34} {'codec':<6} {'bursts':>6} {'heard':>5} {'p50ms':>6} {'p95ms':>6} {'max_ms':>6} {'page_jb':>7} {'load1':>5}  per-call p50")  # fmt: skip
    for r in (r for r in rows if r["kind"] == "m2e"):
        calls = r.get("calls", [])
        d = [x for c in calls for x in c["delays"]]
        jbs = [c["jb_ms"] for c in calls if c["jb_ms"] is not None]
        per_call = "/".join(fmt(pct(c["delays"], 0.5), ".0f") for c in calls)
        print(f"{r['path']:<34} {r['codec']:<6} {sum(c['bursts'] for c in calls):>6} {len(d):>5} "
              f"{fmt(pct(d, 0.5)):>6} {fmt(pct(d, 0.95)):>6} {fmt(max(d) if d else None):>6} "
              f"{fmt(max(jbs) if jbs else None):>7} {fmt(r.get('load1'), '.2f'):>5}  {per_call}")  # fmt: skip
    print("\n== gateway CPU (echo route, % of one core) with no call (idle) and all N calls up; per call = (cpu - idle) / N")  # fmt: skip
    print(f"{'transport':<12} {'N':>4} {'ok':>4} {'failed':>6} {'idle%':>5} {'cpu%':>6} {'cpu%/call':>9} {'kids%':>6} {'rss_MB':>7} {'in_pps':>6} {'clients%':>8} {'load1':>5}")  # fmt: skip
    for r in (r for r in rows if r["kind"] == "cpu"):
        per = None
        if r.get("gw_cpu") is not None and r.get("idle_cpu") is not None:
            per = (r["gw_cpu"] - r["idle_cpu"]) / r["n"]
        print(f"{r['transport']:<12} {r['n']:>4} {fmt(r.get('ok')):>4} {fmt(r.get('failed')):>6} "
              f"{fmt(r.get('idle_cpu')):>5} {fmt(r.get('gw_cpu')):>6} {fmt(per, '.2f'):>9} {fmt(r.get('kids_cpu')):>6} "
              f"{fmt(r.get('gw_rss_mb')):>7} {fmt(r.get('in_pps')):>6} {fmt(r.get('clients_cpu')):>8} {fmt(r.get('load1'), '.2f'):>5}")  # fmt: skip


# ---------------------------------------------------------------------------- main


def reexec_in_netns() -> None:
    if os.environ.get("_CB_WEBRTC_NETNS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("bench/webrtc.py runs as root (unshare --net)")
    env = {**os.environ, "_CB_WEBRTC_NETNS": "1"}
    os.execvpe("unshare", ["unshare", "--net", sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--bursts", type=int, default=27, help="bursts per mouth-to-ear path")
    ap.add_argument("--m2e-calls", type=int, default=3, help="calls the bursts are spread over")
    ap.add_argument("--calls", default="10,20", help="concurrent calls per CPU step")
    ap.add_argument("--hold", type=float, default=20.0, help="seconds all N calls are up")
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds to place the N calls")
    ap.add_argument("--codecs", default="opus", help="WebRTC codecs to measure: opus,pcmu")
    ap.add_argument("--out", type=Path, default=None, help="keep raw files here")
    ap.add_argument("--smoke", action="store_true", help="3 bursts; N=2 for 5 s")
    a = ap.parse_args(argv)
    if a.smoke:
        a.bursts, a.m2e_calls, a.calls, a.hold, a.ramp, a.codecs = 3, 1, "2", 5.0, 1.0, "opus"
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    for tool in ("sipp", "espeak-ng", browser.CHROMIUM):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (scripts/test.sh installs the peers)")
    reexec_in_netns()
    os.environ.setdefault("CALLBRIDGE_TEST_PYTHON", sys.executable)
    loopback_only()
    work = a.out or Path(tempfile.mkdtemp(prefix="cb-webrtc-"))
    work.mkdir(parents=True, exist_ok=True)
    media = make_media("speech", 2 * a.ramp + a.hold + 2, work)
    pcm48 = speech.to_pcm(speech._resample(audio.read_wav(work / "speech.wav") / 32768, audio.RATE, CLIENT_RATE))  # fmt: skip
    print(f"-- mouth-to-ear, {a.bursts} bursts per path ...", flush=True)
    rows = m2e_step(work, a.m2e_calls, a.bursts)
    steps = [(t, int(n)) for n in a.calls.split(",") if n for t in ("sip", *(f"webrtc/{c}" for c in a.codecs.split(",") if c))]  # fmt: skip
    for transport, n in steps:
        print(f"-- {n} concurrent {transport} calls for {a.hold:g} s ...", flush=True)
        try:
            rows.append(cpu_step(a, work, transport, n, media=media, pcm48=pcm48))
        except Exception as exc:  # one step's failure is reported, the others still run
            rows.append({"kind": "cpu", "transport": transport, "n": n, "error": str(exc)[:400]})
    (work / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print_tables(rows)
    problems = [f"{r['kind']} {r.get('path') or r.get('transport')}: {r['error']}" for r in rows if "error" in r]  # fmt: skip
    for r in rows:
        heard = sum(len(c["delays"]) for c in r.get("calls", []))
        if r["kind"] == "m2e" and "error" not in r and heard < (1 if a.smoke else 20):
            problems.append(f"m2e {r['path']}: only {heard} bursts came back")
        if r["kind"] == "cpu" and "error" not in r and (r.get("gw_cpu") is None or r.get("failed")):
            problems.append(f"cpu {r['transport']} N={r['n']}: {r.get('failed')} calls failed or no CPU sample")  # fmt: skip
    for p in problems:
        print(f"PROBLEM: {p}")
    if a.out is None and not problems:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"raw files: {work}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
