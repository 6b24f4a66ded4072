"""Issue 12 §3-4: `callbridge serve --workers 2` - one command, a supervisor with the built-in
SIP dispatcher on the public port and two gateway workers sharing one PostgreSQL database.
40 SIPp echo calls to the public port spread over both workers (each takes at least 10,
by the hash over the Call-ID) and all succeed, every dialog staying on its worker through the
dispatcher's Record-Route; GET /calls on the one public HTTP endpoint lists the calls of both.
SIGTERM to the supervisor while calls are up drains: the live calls finish normally, new calls
get 503, the supervisor exits 0 once both workers have.
Live-call actions on worker 0's public API reach the worker that holds the call: worker 1
serves its API on loopback (http.port + 2, the run's secret as its token), worker 0 forwards
a hangup (and GET /calls/{id}) of worker 1's calls there (issue 12, api/forward.py), and
the dashboard's event stream on worker 0 carries worker 1's calls too (api/dashboard_relay.py)."""

from __future__ import annotations

import collections
import json
import re
import signal
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from ..unit.store.conftest import postgres, postgres_url  # noqa: F401  (fixtures)
from .conftest import require_tools
from .peerlib.audio import write_wav
from .peerlib.callbridge import (
    CallbridgeProcess,
    GatewayConfig,
    JsonLog,
    serve_argv,
)
from .peerlib.process import (
    LOOPBACK,
    PORT_BLOCKS,
    ProcessRegistry,
    free_port,
    tcp_port_listening,
    udp_port_bound,
    wait_true,
    wait_until,
)
from .peerlib.sipp import start_uac
from .peerlib.wav2pcap import wav_to_pcap

pytestmark = pytest.mark.peer

CALLS = 40
MIN_PER_WORKER = 10


def three_free_ports() -> int:
    """p with p, p+1, p+2 free: the dispatcher and the two workers' SIP ports."""
    for _ in range(100):
        port = free_port()
        if port + 2 < 65536 and not any(udp_port_bound(port + i) for i in (1, 2)):
            return port
    raise RuntimeError("no three free ports in a row")


def http_port_for_two() -> int:
    """p with p free and p + 2 not listening: the public API and worker 1's internal one."""
    for _ in range(100):
        port = free_port()
        if port + 2 < 65536 and not tcp_port_listening(port + 2):
            return port
    raise RuntimeError("no free HTTP port with a free one 2 above it")


def start_cluster(
    registry: ProcessRegistry,
    tmp_path: Path,
    db_url: str,
    rtp_ports: int,
    extra_env: Mapping[str, str] | None = None,
    http_port: int | None = None,
) -> CallbridgeProcess:
    config = GatewayConfig(
        sip_port=three_free_ports(),
        http_port=http_port if http_port is not None else http_port_for_two(),
        rtp_range=PORT_BLOCKS.take(rtp_ports),
        data_dir=tmp_path / "data",
        extra_env={
            "CALLBRIDGE_DEFAULT_AGENT": "echo",
            "CALLBRIDGE_STORE_URL": db_url,
            "CALLBRIDGE_RECORDING_ENABLED": "false",
            "CALLBRIDGE_DRAIN_TIMEOUT": "60",
            "CALLBRIDGE_STORE_GATEWAY_ID": "box",
            **(extra_env or {}),
        },
    )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    proc = registry.start(
        "callbridge-workers",
        [*serve_argv(), "--workers", "2"],
        env=config.env(),
        stop_signal=signal.SIGINT,
    )
    gw = CallbridgeProcess(proc=proc, config=config, log=JsonLog(proc.stderr_path))
    gw.wait_for("cluster.ready", timeout=60)  # both workers answer the dispatcher's probes
    return gw


class EventStream:
    """GET /events read in a thread, as the dashboard page reads it: each event's JSON."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(url, dict(headers)), daemon=True)
        self._thread.start()

    def _read(self, url: str, headers: dict[str, str]) -> None:
        timeout = httpx.Timeout(5.0, read=60.0)  # the stream sends a keep-alive every 15 s
        with httpx.stream("GET", url, headers=headers, timeout=timeout) as r:
            for line in r.iter_lines():  # ends when the gateway stops
                if line.startswith("data: "):
                    with self._lock:
                        self.events.append(json.loads(line[6:]))

    def ids(self, kind: str) -> set[str]:
        with self._lock:
            return {e["call_id"] for e in self.events if e["type"] == kind}

    def snapshot(self) -> list[dict[str, Any]] | None:
        with self._lock:
            return next((e["calls"] for e in self.events if e["type"] == "snapshot"), None)


def worker_of(port: int, gw: CallbridgeProcess) -> str:
    return {gw.config.sip_port + 1: "w0", gw.config.sip_port + 2: "w1"}[port]


def stored_calls(db_url: str) -> list[tuple[str, str]]:
    """(gateway id, SIP Call-ID) of every ended call in the shared database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT gateway, ids FROM calls WHERE ended IS NOT NULL").fetchall()
    return [(g, json.loads(i).get("sip_call_id", "")) for g, i in rows]


def test_serve_workers_spreads_40_calls_over_two_workers(
    registry: ProcessRegistry,
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    require_tools("sipp")
    gw = start_cluster(registry, tmp_path, postgres_url, rtp_ports=4 * CALLS + 40)
    uac_mp, _ = PORT_BLOCKS.take(4 * CALLS + 8)
    uac_sip_port = free_port()
    uac = start_uac(
        registry, "uac", "uac_via_proxy.xml", target=(LOOPBACK, gw.config.sip_port),
        service="echo", sip_port=uac_sip_port, media_port=uac_mp, calls=CALLS, rate=10,
        limit=CALLS, hold_ms=3000, timeout_s=60,
        extra=["-trace_logs", "-log_file", "answers.log"],
    )  # fmt: skip
    assert uac.wait(75) == 0, uac.describe()
    stats = uac.stats()
    assert stats.counter("SuccessfulCall(C)") == CALLS, stats.summary()
    assert stats.counter("FailedCall(C)") == 0, stats.summary()

    # Which worker answered (the port in the 200's Contact), and the dispatcher's
    # Record-Route on every 200: ACK and BYE went through the public port.
    answered: dict[str, str] = {}
    for line in (uac.workdir / "answers.log").read_text().splitlines():
        m = re.match(r"(\S+@\S+) (\d+) \S+ ?(;lr)?", line)
        if m:
            answered[m.group(1)] = worker_of(int(m.group(2)), gw)
            assert m.group(3) == ";lr", line
    assert len(answered) == CALLS
    spread = collections.Counter(answered.values())
    print(f"spread: {dict(spread)}")
    assert all(spread[w] >= MIN_PER_WORKER for w in ("w0", "w1")), spread

    # The shared database: every call under the worker that answered it, ended by the
    # caller's BYE (which therefore reached the right worker).
    rows = wait_until(
        lambda: r if len(r := stored_calls(postgres_url)) >= CALLS else None,
        15.0,
        f"{CALLS} ended calls in the shared database",
    )
    assert {sip: g for g, sip in rows} == {sip: f"box/{w}" for sip, w in answered.items()}
    ended = gw.events("call.ended")
    assert len(ended) == CALLS
    assert {ev.get("reason") for ev in ended} == {"remote_bye"}
    # the workers' own logs (one stream, each line tagged) tell the same spread
    assert collections.Counter(f"w{ev.get('worker')}" for ev in ended) == spread
    assert all(int(ev.get("rtp_in", 0)) > 0 and int(ev.get("rtp_out", 0)) > 0 for ev in ended)

    # One public HTTP endpoint (worker 0) lists the calls of both workers.
    listed = httpx.get(
        f"http://{LOOPBACK}:{gw.config.http_port}/calls", params={"limit": "100"}, timeout=10
    ).json()["calls"]
    assert {c["ids"]["sip_call_id"] for c in listed} == set(answered)
    # Each record names the caller (SIPp's port, from the Via below the dispatcher's), not
    # the dispatcher it came through.
    caller = f"{LOOPBACK}:{uac_sip_port}"
    assert {c["ids"]["remote_addr"] for c in listed} == {caller}, listed[0]["ids"]
    assert {c["ids"]["via_proxy"] for c in listed} == {f"127.0.0.1:{gw.config.sip_port}"}
    gw.assert_no_crash()


def invite(port: int, call_id: str, sip_port: int) -> bytes:
    return (
        f"INVITE sip:echo@{LOOPBACK}:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK{call_id};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{LOOPBACK}>;tag=t{call_id}\r\n"
        f"To: <sip:echo@{LOOPBACK}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:probe@{LOOPBACK}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_sigterm_drains_both_workers_live_calls_finish_new_calls_get_503(
    registry: ProcessRegistry,
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    require_tools("sipp")
    gw = start_cluster(registry, tmp_path, postgres_url, rtp_ports=120)
    mp, _ = PORT_BLOCKS.take(4 * 12 + 8)
    live = start_uac(
        registry, "uac-live", "uac_via_proxy.xml", target=(LOOPBACK, gw.config.sip_port),
        service="echo", sip_port=free_port(), media_port=mp, calls=12, rate=20, limit=12,
        hold_ms=6000, timeout_s=60, extra=["-trace_logs", "-log_file", "answers.log"],
    )  # fmt: skip
    gw.wait_for("call.started", timeout=15, count=12)  # all 12 up, on both workers

    # The public HTTP endpoint (worker 0) lists the live calls of both workers.
    def live_listed() -> list[dict[str, object]] | None:
        calls = httpx.get(
            f"http://{LOOPBACK}:{gw.config.http_port}/calls",
            params={"live": "true", "limit": "100"},
            timeout=10,
        ).json()["calls"]
        return calls if len(calls) >= 12 else None

    assert len(wait_until(live_listed, 10.0, "12 live calls in GET /calls")) == 12
    gw.proc.signal(signal.SIGTERM)
    gw.wait_for("cluster.stopping", timeout=5)
    gw.wait_for("gateway.draining", timeout=5, count=2)

    # New calls: 503 with Retry-After, from the dispatcher (no worker takes new calls).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(5)
        for i in range(5):
            s.sendto(invite(s.getsockname()[1], f"late{i}", gw.config.sip_port),
                     (LOOPBACK, gw.config.sip_port))  # fmt: skip
            answer = s.recv(65535).decode()
            assert answer.startswith("SIP/2.0 503 "), answer
            assert "Retry-After:" in answer

    # The live calls were not cut off: the callers hung up, the workers drained and exited,
    # then the supervisor, with 0.
    assert live.wait(60) == 0, live.describe()
    assert live.stats().counter("SuccessfulCall(C)") == 12, live.stats().summary()
    assert gw.wait_exit(30) == 0
    ended = gw.events("call.ended")
    assert len(ended) == 12 and {ev.get("reason") for ev in ended} == {"remote_bye"}
    assert [ev.get("live_calls") for ev in gw.events("gateway.drained")] == [0, 0]
    exits = gw.events("cluster.worker_exited")
    assert sorted((ev.get("worker"), ev.get("status")) for ev in exits) == [(0, 0), (1, 0)]
    workers = collections.Counter(g for g, _ in stored_calls(postgres_url))
    assert set(workers) == {"box/w0", "box/w1"}, workers  # both had calls to drain
    gw.assert_no_crash()


def live_gateways(db_url: str) -> dict[str, str]:
    """Call id -> gateway id of every live call in the shared database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, gateway FROM calls WHERE ended IS NULL").fetchall()
    return {str(i): str(g) for i, g in rows}


def end_reasons(db_url: str) -> dict[str, str | None]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, end_reason FROM calls WHERE ended IS NOT NULL").fetchall()
    return {str(i): r for i, r in rows}


def test_worker_0s_api_hangs_up_worker_1s_calls(
    registry: ProcessRegistry,
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """16 calls over both workers; through the one public API (with its own token): GET a
    call of worker 1 (its live leg stats, which only worker 1 has), hang it up (it ends with
    the API's reason on worker 1), then hang up every other call the same way. SIPp waits
    for our BYEs, so every call ends by the API, on both workers."""
    require_tools("sipp")
    calls = 16  # all 16 on worker 0 by the Call-ID hash: 1 run in 65536
    public = {"Authorization": "Bearer public-token"}
    gw = start_cluster(
        registry, tmp_path, postgres_url, rtp_ports=4 * calls + 40,
        extra_env={"CALLBRIDGE_API_TOKEN": "public-token"},
    )  # fmt: skip
    api = f"http://{LOOPBACK}:{gw.config.http_port}"
    internal = gw.config.http_port + 2
    # worker 1's internal API: loopback, its own port, not open to the public token
    listening = gw.wait_for("http.listening", timeout=10, count=2)
    assert sorted((ev.get("worker"), ev.get("host"), ev.get("port")) for ev in listening) == [
        (0, LOOPBACK, gw.config.http_port),
        (1, "127.0.0.1", internal),
    ]
    refused = httpx.post(f"http://127.0.0.1:{internal}/calls/x/hangup", headers=public, timeout=5)
    assert refused.status_code == 401
    # the dashboard, open before the calls come
    dashboard = EventStream(f"{api}/events", public)
    assert wait_until(dashboard.snapshot, 10.0, "the dashboard's first snapshot") == []

    t = np.arange(8000 * 40) / 8000  # 40 s of a 440 Hz tone: RTP flows while we act
    wav = write_wav(tmp_path / "tone.wav", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    media = tmp_path / "media.pcap"
    wav_to_pcap(wav, media, codec="pcmu")
    mp, _ = PORT_BLOCKS.take(4 * calls + 8)
    uac = start_uac(
        registry, "uac", "uac_play_wait_bye.xml", target=(LOOPBACK, gw.config.sip_port),
        service="echo", sip_port=free_port(), media_port=mp, calls=calls, rate=20,
        limit=calls, timeout_s=90, files={"media.pcap": media},
        extra=["-recv_timeout", "60000"],
    )  # fmt: skip
    gw.wait_for("call.started", timeout=15, count=calls)

    def all_listed() -> list[str] | None:
        listed = httpx.get(
            f"{api}/calls", params={"live": "true", "limit": "100"}, headers=public, timeout=10
        ).json()["calls"]
        return [c["id"] for c in listed] if len(listed) == calls else None

    ids = wait_until(all_listed, 10.0, f"{calls} live calls in GET /calls")
    gateways = live_gateways(postgres_url)
    on_w1 = [i for i in ids if gateways[i] == "box/w1"]
    on_w0 = [i for i in ids if gateways[i] == "box/w0"]
    assert on_w1 and on_w0 and len(on_w0) + len(on_w1) == calls, gateways
    first = on_w1[0]
    # the dashboard on worker 0 shows every call live, worker 1's with its leg statistics
    wait_true(
        lambda: dashboard.ids("call.started") >= set(ids), 10.0, "every call on the dashboard"
    )
    wait_true(lambda: bool(dashboard.ids("call.stats") & set(on_w1)), 10.0, "worker 1's stats")

    # GET of worker 1's call: its live leg, statistics and all, as only worker 1 knows it
    detail = httpx.get(f"{api}/calls/{first}", headers=public, timeout=10)
    assert detail.status_code == 200, detail.text
    leg = detail.json()["legs"][0]
    assert leg["ended"] is False and "stats" in leg, leg

    hung = httpx.post(f"{api}/calls/{first}/hangup", headers=public, timeout=10)
    assert (hung.status_code, hung.json()) == (202, {"id": first, "status": "hanging_up"})
    [ended] = gw.wait_for("call.ended", timeout=10, call_id=first)
    assert (ended.get("reason"), ended.get("worker")) == ("api", 1)
    reasons = wait_until(
        lambda: r if first in (r := end_reasons(postgres_url)) else None, 10.0, "the row ended"
    )
    assert reasons[first] == "api"
    again = httpx.post(f"{api}/calls/{first}/hangup", headers=public, timeout=10)
    assert again.status_code == 409, again.text  # ended: answered by worker 0 from the database

    # every other call, on either worker, the same way
    for call_id in [*on_w1[1:], *on_w0]:
        r = httpx.post(f"{api}/calls/{call_id}/hangup", headers=public, timeout=10)
        assert r.status_code == 202, (call_id, r.text)
    gw.wait_for("call.ended", timeout=15, count=calls)
    ended_all = gw.events("call.ended")
    assert {ev.get("reason") for ev in ended_all} == {"api"}
    assert collections.Counter(ev.get("worker") for ev in ended_all) == {
        0: len(on_w0),
        1: len(on_w1),
    }
    wait_true(lambda: dashboard.ids("call.ended") >= set(ids), 10.0, "every call ended on it")
    # SIPp got our BYE for every call and answered it: each one a success for it
    assert uac.wait(30) == 0, uac.describe()
    assert uac.stats().counter("SuccessfulCall(C)") == calls, uac.stats().summary()
    gw.assert_no_crash()


def test_a_busy_internal_api_port_costs_the_forwarding_not_the_worker(
    registry: ProcessRegistry,
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Worker 1's internal API port (http.port + 2) is taken: worker 1 starts without it and
    says which port and what to do (it used to exit and be restarted into the same busy port,
    again and again); both workers take calls; an action on worker 1's live call through the
    public API gets a 503 that names worker 1; the calls end normally."""
    require_tools("sipp")
    calls = 16  # all 16 on worker 0 by the Call-ID hash: 1 run in 65536
    public = {"Authorization": "Bearer public-token"}
    http_port = http_port_for_two()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", http_port + 2))
        squatter.listen()
        gw = start_cluster(
            registry, tmp_path, postgres_url, rtp_ports=4 * calls + 40, http_port=http_port,
            extra_env={"CALLBRIDGE_API_TOKEN": "public-token"},
        )  # fmt: skip
        [busy] = gw.wait_for("http.unavailable", timeout=10)
        assert (busy.get("worker"), busy.get("port")) == (1, http_port + 2), busy
        assert f"free 127.0.0.1:{http_port + 2}" in str(busy.get("fix")), busy

        media = tmp_path / "media.pcap"
        t = np.arange(8000 * 20) / 8000
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        wav_to_pcap(write_wav(tmp_path / "tone.wav", tone), media, codec="pcmu")
        mp, _ = PORT_BLOCKS.take(4 * calls + 8)
        uac = start_uac(
            registry, "uac", "uac_play.xml", target=(LOOPBACK, gw.config.sip_port),
            service="echo", sip_port=free_port(), media_port=mp, calls=calls, rate=20,
            limit=calls, hold_ms=12000, timeout_s=60, files={"media.pcap": media},
        )  # fmt: skip
        gw.wait_for("call.started", timeout=15, count=calls)
        gateways = wait_until(
            lambda: g if len(g := live_gateways(postgres_url)) == calls else None,
            10.0,
            f"{calls} live calls in the database",
        )
        on_w1 = [i for i, g in gateways.items() if g == "box/w1"]
        assert on_w1 and len(on_w1) < calls, gateways
        api = f"http://{LOOPBACK}:{gw.config.http_port}"
        refused = httpx.post(f"{api}/calls/{on_w1[0]}/hangup", headers=public, timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.json()["worker"] == "w1", refused.text  # whatever holds its port
        assert uac.wait(40) == 0, uac.describe()  # every call, on both workers, ran its course
        ended = gw.wait_for("call.ended", timeout=15, count=calls)
        assert {ev.get("reason") for ev in ended} == {"remote_bye"}, ended
        assert not gw.events("cluster.worker_exited"), "a worker stopped"
