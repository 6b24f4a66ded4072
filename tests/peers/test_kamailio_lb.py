"""Issue 12 acceptance: Kamailio (deploy/kamailio/kamailio.cfg, as shipped) in front of two
callbridge gateway workers (separate processes, SIP ports and RTP ranges) that share one
PostgreSQL call database. 40 SIPp echo calls through Kamailio spread over both workers by the
hash over the Call-ID; every call succeeds, each dialog stays on the worker that answered it,
and the shared database lists all 40 calls with the two gateway ids. A worker drained mid-run
keeps its calls and gets no new ones."""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from ..unit.store.conftest import postgres, postgres_url  # noqa: F401  (fixtures)
from .conftest import GatewayFactory, require_tools
from .peerlib.callbridge import CallbridgeProcess
from .peerlib.process import (
    LOOPBACK,
    PORT_BLOCKS,
    ManagedProcess,
    ProcessRegistry,
    free_port,
    wait_udp_bound,
    wait_until,
)
from .peerlib.sipp import start_uac

pytestmark = pytest.mark.peer

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
CALLS = 40
MIN_PER_WORKER = 10
HOLD_MS = 3000
RATE = 10  # calls/s: all 40 placed in 4 s, up to ~30 at once
WORKERS = ("gw-a", "gw-b")


@dataclass(eq=False)
class Kamailio:
    proc: ManagedProcess
    port: int
    ctl: str  # kamcmd's -s argument

    def destinations(self) -> dict[str, str]:
        """dispatcher.list as {"sip:HOST:PORT": FLAGS} (AP = active+probing, IP = inactive)."""
        out = subprocess.run(
            ["kamcmd", "-s", self.ctl, "dispatcher.list"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        found: dict[str, str] = {}
        uri = None
        for line in out.stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["URI:"]:
                uri = parts[1]
            elif parts[:1] == ["FLAGS:"] and uri is not None:
                found[uri] = parts[1]
        return found


def start_kamailio(registry: ProcessRegistry, workdir: Path, workers: list[int]) -> Kamailio:
    """deploy/kamailio/kamailio.cfg unchanged; the ports come in through its environment
    settings (LB_LISTEN, DS_LIST, CTL_SOCK; probes every second so the test waits less)."""
    run = workdir / "kamailio-run"
    run.mkdir(parents=True, exist_ok=True)
    ds_list = workdir / "dispatcher.list"
    ds_list.write_text(
        "# setid destination flags priority\n"
        + "".join(f"1 sip:{LOOPBACK}:{p} 0 0\n" for p in workers)
    )
    port = free_port()
    ctl = f"unix:{run / 'kamailio_ctl'}"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LB_LISTEN": f"udp:{LOOPBACK}:{port}",
        "DS_LIST": str(ds_list),
        "CTL_SOCK": ctl,
        "DS_PING_S": "1",
    }
    check = subprocess.run(
        ["kamailio", "-c", "-f", str(KAMAILIO_CFG)],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert check.returncode == 0, f"kamailio -c failed:\n{check.stdout}{check.stderr}"
    # -DD: stays our child (no daemon); -E: logs on stderr; -Y: runtime dir; -m/-M: memory MB
    proc = registry.start(
        "kamailio",
        ["kamailio", "-f", str(KAMAILIO_CFG), "-DD", "-E", "-Y", str(run),
         "-P", str(run / "kamailio.pid"), "-m", "64", "-M", "8"],
        env=env,
    )  # fmt: skip
    wait_udp_bound(port, 15.0, "Kamailio to bind its SIP port")
    return Kamailio(proc, port, ctl)


def start_workers(
    gateway_factory: GatewayFactory, db_url: str, extra: dict[str, str] | None = None
) -> list[CallbridgeProcess]:
    common = {
        **(extra or {}),
        "CALLBRIDGE_DEFAULT_AGENT": "echo",
        "CALLBRIDGE_STORE_URL": db_url,
        # every call reaches the workers from Kamailio's one address
        "CALLBRIDGE_LIMITS_TRUSTED": "127.0.0.0/8",
        "CALLBRIDGE_RECORDING_ENABLED": "false",
    }
    return [
        gateway_factory(
            rtp_ports=4 * CALLS + 40, extra_env={**common, "CALLBRIDGE_STORE_GATEWAY_ID": name}
        )
        for name in WORKERS
    ]


def test_kamailio_spreads_calls_over_two_workers_sharing_one_database(
    registry: ProcessRegistry,
    gateway_factory: GatewayFactory,
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    require_tools("sipp", "kamailio", "kamcmd")
    workers = start_workers(gateway_factory, postgres_url)
    by_port = {gw.config.sip_port: name for gw, name in zip(workers, WORKERS, strict=True)}
    lb = start_kamailio(registry, tmp_path, list(by_port))
    # both workers answer the OPTIONS probes before the first call
    wait_until(
        lambda: True if sorted(lb.destinations().values()) == ["AP", "AP"] else None,
        15.0,
        f"both workers active in Kamailio's dispatcher (got {lb.destinations()})",
    )

    uac_mp, _ = PORT_BLOCKS.take(4 * CALLS + 8)
    uac = start_uac(
        registry, "uac", "uac_via_proxy.xml", target=(LOOPBACK, lb.port), service="echo",
        sip_port=free_port(), media_port=uac_mp, calls=CALLS, rate=RATE, limit=CALLS,
        hold_ms=HOLD_MS, timeout_s=60, extra=["-trace_logs", "-log_file", "answers.log"],
    )  # fmt: skip
    rc = uac.wait(75)
    stats = uac.stats()
    assert rc == 0, uac.describe()
    assert stats.counter("SuccessfulCall(C)") == CALLS, stats.summary()
    assert stats.counter("FailedCall(C)") == 0, stats.summary()

    # Which worker answered each call, as the caller saw it (the Contact of the 200)...
    answered: dict[str, str] = {}
    record_routed = 0
    for line in (uac.workdir / "answers.log").read_text().splitlines():
        m = re.match(r"(\S+@\S+) (\d+) \S+ ?(;lr)?", line)
        if m:
            answered[m.group(1)] = by_port[int(m.group(2))]
            record_routed += m.group(3) is not None
    assert len(answered) == CALLS, f"{len(answered)} answers logged"
    spread = collections.Counter(answered.values())
    print(f"spread: {dict(spread)}; 200s carrying Kamailio's Record-Route: {record_routed}/{CALLS}")
    assert all(spread[w] >= MIN_PER_WORKER for w in WORKERS), f"spread over workers: {spread}"

    # ... is where the whole dialog ran: the same worker started the call and got its BYE.
    for gw, name in zip(workers, WORKERS, strict=True):
        mine = {sip for sip, w in answered.items() if w == name}
        started = gw.wait_for("call.started", timeout=10, count=len(mine))
        ended = gw.wait_for("call.ended", timeout=15, count=len(mine))
        assert {ev.get("sip_call_id") for ev in started} == mine, name
        assert len(ended) == len(mine), name
        reasons = collections.Counter(ev.get("reason") for ev in ended)
        assert reasons == {"remote_bye": len(mine)}, f"{name}: {reasons}"
        for ev in ended:
            assert int(ev.get("rtp_in", 0)) > 0 and int(ev.get("rtp_out", 0)) > 0, ev
        gw.assert_no_crash()

    # The shared database lists every call, each under the worker that took it.
    def stored() -> list[tuple[str, str, str]] | None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT gateway, ids, end_reason FROM calls WHERE ended IS NOT NULL"
            ).fetchall()
        return (
            [(g, json.loads(i).get("sip_call_id", ""), r) for g, i, r in rows]
            if len(rows) >= CALLS
            else None
        )

    rows = wait_until(stored, 15.0, f"{CALLS} ended calls in the shared database")
    assert len(rows) == CALLS, rows
    assert {sip: g for g, sip, _ in rows} == answered
    assert {g for g, _, _ in rows} == set(WORKERS)
    assert {r for _, _, r in rows} == {"remote_bye"}
    assert "LB: worker DOWN" not in lb.proc.stderr_text()


def test_a_draining_worker_keeps_its_calls_and_gets_no_new_ones(
    registry: ProcessRegistry,
    gateway_factory: GatewayFactory,
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """SIGTERM with drain_timeout set: gw-a answers OPTIONS (and INVITE) with 503, Kamailio
    marks it inactive, its live calls end normally, every new call lands on gw-b, gw-a exits
    once its calls are over, and the shared database lists every call."""
    require_tools("sipp", "kamailio", "kamcmd")
    workers = start_workers(gateway_factory, postgres_url, {"CALLBRIDGE_DRAIN_TIMEOUT": "60"})
    by_port = {gw.config.sip_port: name for gw, name in zip(workers, WORKERS, strict=True)}
    port_of = {name: port for port, name in by_port.items()}
    lb = start_kamailio(registry, tmp_path, list(by_port))
    wait_until(
        lambda: True if sorted(lb.destinations().values()) == ["AP", "AP"] else None,
        15.0,
        f"both workers active in Kamailio's dispatcher (got {lb.destinations()})",
    )
    gw_a, gw_b = workers
    first_mp, _ = PORT_BLOCKS.take(4 * 10 + 8)
    first = start_uac(
        registry, "uac-live", "uac_via_proxy.xml", target=(LOOPBACK, lb.port), service="echo",
        sip_port=free_port(), media_port=first_mp, calls=10, rate=10, limit=10,
        hold_ms=8000, timeout_s=60, extra=["-trace_logs", "-log_file", "answers.log"],
    )  # fmt: skip
    live_on_a = gw_a.wait_for("call.started", timeout=10)  # gw-a has live calls
    gw_b.wait_for("call.started", timeout=10)
    gw_a.proc.signal(signal.SIGTERM)
    gw_a.wait_for("gateway.draining", timeout=5)
    wait_until(
        lambda: (
            True if lb.destinations().get(f"sip:{LOOPBACK}:{port_of['gw-a']}") == "IP" else None
        ),
        10.0,
        f"Kamailio marks the draining worker inactive (got {lb.destinations()})",
    )
    second_mp, _ = PORT_BLOCKS.take(4 * 10 + 8)
    second = start_uac(
        registry, "uac-new", "uac_via_proxy.xml", target=(LOOPBACK, lb.port), service="echo",
        sip_port=free_port(), media_port=second_mp, calls=10, rate=10, limit=10,
        hold_ms=1000, timeout_s=40, extra=["-trace_logs", "-log_file", "answers.log"],
    )  # fmt: skip
    for run in (second, first):
        assert run.wait(75) == 0, run.describe()
        assert run.stats().counter("SuccessfulCall(C)") == 10, run.stats().summary()
    new_answers = [
        by_port[int(m.group(1))]
        for line in (second.workdir / "answers.log").read_text().splitlines()
        if (m := re.match(r"\S+@\S+ (\d+)", line))
    ]
    assert new_answers == ["gw-b"] * 10, f"new calls answered by {new_answers}"
    # gw-a's calls were not cut off: they ended by the caller's BYE, then gw-a stopped.
    assert gw_a.proc.wait(30) == 0
    ended_a = gw_a.events("call.ended")
    assert len(ended_a) >= len(live_on_a)
    assert {ev.get("reason") for ev in ended_a} == {"remote_bye"}
    assert [ev.get("live_calls") for ev in gw_a.events("gateway.drained")] == [0]

    def stored() -> int | None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            (n,) = conn.execute("SELECT count(*) FROM calls WHERE ended IS NOT NULL").fetchone()
        return n if n >= 20 else None

    assert wait_until(stored, 15.0, "20 ended calls in the shared database") == 20
