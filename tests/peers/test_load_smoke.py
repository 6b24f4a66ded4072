"""Issue 12: the load benchmark (bench/load.py) runs end to end at a small N.

`--smoke`: 5 echo calls for 5 s and 20 call setups/s for 3 s against a fresh gateway, SIPp
and tshark. This checks the harness works - every table row is there, no call failed, the
measurements came back - and asserts no timing (the machine may be busy)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_tools

pytestmark = pytest.mark.peer

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load.py"
NUM = r"(-|[\d.]+)"


def run_bench(*args: str) -> tuple[str, str]:
    """bench/load.py with `args`: (its stdout, a report for failed assertions); it exited 0."""
    done = subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = f"rc={done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    return done.stdout, report


def test_load_benchmark_smoke_run_prints_every_row(tmp_path: Path) -> None:
    require_tools("sipp", "tshark", "espeak-ng", "unshare")
    assert os.geteuid() == 0, "bench/load.py needs root (network namespace, raw sockets)"
    out, report = run_bench("--smoke", "--out", str(tmp_path / "load"))

    # concurrent calls: N ok failed gw_cpu% kids% cpuK%.. rss kids_rss jit_p99 jit_max rtp_in ...
    calls = re.search(r"^\s+5\s+(\d+)\s+(\d+)\s+([\d.]+)\s.*$", out, re.M)
    assert calls is not None, report
    assert calls.group(1) == "5" and calls.group(2) == "0", report
    cells = calls.group(0).split()
    assert "-" not in cells, f"a measurement is missing: {calls.group(0)}"
    header = re.search(r"^\s+N\s+ok\s+failed\s.*$", out, re.M)
    assert header is not None, report
    row = dict(zip(header.group(0).split(), cells, strict=True))
    rtp_in = int(row["rtp_in"])
    assert rtp_in >= 5 * 4 * 50 * 0.5, f"too few RTP packets counted: {rtp_in}"  # 5 calls, ~5 s
    assert row["gc>20ms"].isdigit(), row  # the collector's long pauses are counted

    # setup rate: cps calls ok failed retrans p50 p99 cpu save_err
    setup = re.search(rf"^\s+20\s+60\s+(\d+)\s+(\d+)\s+(\d+)\s+{NUM}\s+{NUM}\s", out, re.M)
    assert setup is not None, report
    assert setup.group(1) == "60" and setup.group(2) == "0", report
    assert setup.group(5) != "-", f"no INVITE->200 times: {report}"

    # the media-only estimate beside the measured cost, in the same run
    assert re.search(r"estimate \(media only\)\s+[\d.]+\s+\d+", out), report
    assert re.search(r"measured N=5\s+[\d.]+\s+\d+", out), report
    assert (tmp_path / "load" / "results.jsonl").is_file()


def test_load_benchmark_with_streaming_callers(tmp_path: Path) -> None:
    """`--callers stream`: the sampled calls (8) play a pcap and are captured, the other 4
    stream from SIPp's rtp_stream (a few threads and one port for them all, lighter on shared
    cores). Every call carries media both ways and the sampled ones are measured."""
    require_tools("sipp", "tshark", "unshare")
    out, report = run_bench(
        "--route", "echo", "--calls", "12", "--hold", "4", "--ramp", "1", "--cps", "",
        "--callers", "stream", "--out", str(tmp_path / "load"),
    )  # fmt: skip
    header = re.search(r"^\s+N\s+ok\s+failed\s.*$", out, re.M)
    calls = re.search(r"^\s+12\s+(\d+)\s+(\d+)\s+([\d.]+)\s.*$", out, re.M)
    assert header is not None and calls is not None, report
    row = dict(zip(header.group(0).split(), calls.group(0).split(), strict=True))
    assert (row["ok"], row["failed"]) == ("12", "0"), report
    assert int(row["rtp_in"]) >= 12 * 3 * 50 * 0.5, report  # every caller's audio reached us
    assert row["jit_p99ms"] != "-" and row["echo_p50"] != "-", row  # the sampled calls
    streamer = tmp_path / "load" / "calls-12" / "streamer"
    assert streamer.is_dir(), "no streaming callers ran"
