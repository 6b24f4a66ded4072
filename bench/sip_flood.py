"""What an INVITE flood does to live calls, with the SIP guard on and off (issue 9).

Run: .venv/bin/python bench/sip_flood.py [--calls 10] [--rate 1000] [--seconds 10]

For each scenario it starts `callbridge serve` (echo route), places `--calls` SIPp calls with
RTP both ways from 127.0.0.1, and after they are up floods the SIP port from other loopback
addresses (tests/peers/peerlib/flooder.py, its own process). It prints one row per scenario:

- live calls: the worst and mean share of caller frames concealed or lost (the gateway's own
  jitter-buffer counters, `call.ended`), and the worst share of frames sent back (rtp_out /
  rtp_in; below 100 % means the gateway skipped sends);
- the gateway: CPU seconds used during the flood (/proc), RSS before and after, calls the
  flood got admitted, bans;
- the flooder: answers by status and INVITEs that got none.

Scenarios: no flood (the baseline, same run and machine); one source with the defaults; 200
sources with the defaults (only the global limits and the load check can act); one source
with every limit off (the behaviour before issue 9). Run it inside a network namespace
(`unshare -n`, `ip link set lo up`) or on an idle loopback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.peers.peerlib import audio
from tests.peers.peerlib.callbridge import GatewayConfig, start_gateway
from tests.peers.peerlib.process import PORT_BLOCKS, ProcessRegistry, free_port
from tests.peers.peerlib.sipp import start_uac
from tests.peers.peerlib.wav2pcap import wav_to_pcap

FLOODER = Path(__file__).resolve().parents[1] / "tests" / "peers" / "peerlib" / "flooder.py"
LIMITS_OFF = {
    "CALLBRIDGE_LIMITS_CALLS_PER_SECOND": "0",
    "CALLBRIDGE_LIMITS_CALLS_PER_SECOND_PER_SOURCE": "0",
    "CALLBRIDGE_LIMITS_REQUESTS_PER_SECOND_PER_SOURCE": "0",
    "CALLBRIDGE_LIMITS_MAX_LOOP_LAG_MS": "0",
    "CALLBRIDGE_LIMITS_MAX_UNCONFIRMED": "0",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    sources: int  # 0 = no flood
    env: dict[str, str]


SCENARIOS = (
    Scenario("no flood (baseline)", 0, {}),
    Scenario("1 source, limits on", 1, {}),
    Scenario("200 sources, limits on", 200, {}),
    Scenario("1 source, limits off", 1, LIMITS_OFF),
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def rss_mib(pid: int) -> float:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(m.group(1)) / 1024 if m else 0.0


def run(scenario: Scenario, args: argparse.Namespace, media: Path, tmp: Path) -> dict[str, str]:
    registry = ProcessRegistry(tmp / scenario.name.replace(" ", "_").replace(",", ""))
    try:
        cfg = GatewayConfig.allocate(
            registry.workdir / "data", PORT_BLOCKS.take(600),  # 300 calls: enough to show damage
            extra_env={"CALLBRIDGE_DEFAULT_AGENT": "echo", **scenario.env},
        )  # fmt: skip
        gw = start_gateway(registry, cfg)
        hold_ms = int((args.seconds + 8) * 1000)
        live = start_uac(
            registry, "live", "uac_play.xml", target=gw.sip_addr, service="echo",
            sip_port=free_port(), media_port=PORT_BLOCKS.take(4 * args.calls + 8)[0],
            calls=args.calls, rate=10, limit=args.calls, hold_ms=hold_ms,
            timeout_s=int(hold_ms / 1000) + 60, files={"media.pcap": media},
        )  # fmt: skip
        started = gw.wait_for("call.started", timeout=30, count=args.calls)
        live_ids = {ev["call_id"] for ev in started}
        rss_before = rss_mib(gw.proc.pid)
        cpu0, t0 = cpu_seconds(gw.proc.pid), time.monotonic()
        report: dict[str, object] = {"sent": 0, "answers": {}}
        if scenario.sources:
            flooder = registry.start("flooder", [
                sys.executable, str(FLOODER), f"{gw.sip_addr[0]}:{gw.sip_addr[1]}",
                "--source", "127.0.1.1", "--sources", str(scenario.sources),
                "--rate", str(args.rate), "--seconds", str(args.seconds), "--user", "echo",
            ])  # fmt: skip
            flooder.wait(args.seconds + 30)
            report = json.loads(flooder.stdout_text().strip().splitlines()[-1])
        else:
            time.sleep(args.seconds)  # the baseline: the same stretch of the calls, no flood
        cpu = cpu_seconds(gw.proc.pid) - cpu0
        elapsed = time.monotonic() - t0
        rss_after = rss_mib(gw.proc.pid)
        live.wait(hold_ms / 1000 + 60)
        ended = gw.wait_for(
            "call.ended", lambda ev: ev["call_id"] in live_ids, timeout=120, count=len(live_ids)
        )
        damage, sent_back = [], []
        for ev in ended:
            rtp_in = max(1, int(ev.get("rtp_in", 0)))
            damage.append((int(ev.get("concealed", 0)) + int(ev.get("lost", 0))) / rtp_in)
            sent_back.append(int(ev.get("rtp_out", 0)) / rtp_in)
        flood_calls = [
            ev for ev in gw.events("call.started") if not str(ev.get("remote_addr", "")).startswith("127.0.0.1:")
        ]  # fmt: skip
        answers = report["answers"]
        assert isinstance(answers, dict)
        answered = sum(int(v) for k, v in answers.items() if k != "100")
        return {
            "scenario": scenario.name,
            "damage max %": f"{100 * max(damage):.2f}",
            "damage mean %": f"{100 * sum(damage) / len(damage):.2f}",
            "sent back min %": f"{100 * min(sent_back):.1f}",
            "gw CPU %": f"{100 * cpu / elapsed:.0f}",
            "RSS MiB before/after": f"{rss_before:.0f}/{rss_after:.0f}",
            "flood calls": str(len(flood_calls)),
            "bans": str(len(gw.events("sip.source_banned"))),
            "503s": str(answers.get("503", 0)),
            "unanswered": str(max(0, int(report["sent"]) - answered - len(flood_calls))),  # type: ignore[call-overload]
        }
    finally:
        registry.stop_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--only", help="run only scenarios whose name contains this")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cb-flood-") as tmp_name:
        tmp = Path(tmp_name)
        speech = audio.synthesize_speech(
            "Live call audio during the flood. The quick brown fox jumps over the lazy dog.",
            tmp / "speech.wav", repeat=int(args.seconds) + 12,
        )  # fmt: skip
        media = tmp / "media.pcap"
        wav_to_pcap(speech, media, codec="pcmu")
        rows = []
        for scenario in SCENARIOS:
            if not args.only or args.only in scenario.name:
                rows.append(run(scenario, args, media, tmp))
                print(rows[-1], flush=True)
    print(f"\n{args.calls} live echo calls; flood {args.rate:g} INVITE/s for {args.seconds:g} s")
    cols = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(cols, widths, strict=True)))


if __name__ == "__main__":
    main()
