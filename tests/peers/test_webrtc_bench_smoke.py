"""Issue 13 §5: the WebRTC benchmark (bench/webrtc.py) runs end to end at a small size.

`--smoke`: one round of 3 bursts browser -> echo -> browser (headless Chromium) and over SIP,
then 2 SIP and 2 WebRTC (aiortc, Opus) echo calls for 5 s, each on a fresh gateway. This
checks the harness works - every table row is there, the bursts came back, no call failed,
the CPU was sampled - and asserts no timing (the machine may be busy)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_tools

pytestmark = pytest.mark.peer

BENCH = Path(__file__).resolve().parents[2] / "bench" / "webrtc.py"
NUM = r"[\d.]+"


def test_webrtc_benchmark_smoke_run_prints_every_row(tmp_path: Path) -> None:
    require_tools("sipp", "espeak-ng", "unshare", "chromium")
    assert os.geteuid() == 0, "bench/webrtc.py needs root (network namespace)"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--out", str(tmp_path / "webrtc")],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    out = done.stdout
    report = f"rc={done.returncode}\n{out}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    assert "PROBLEM" not in out, report

    # mouth-to-ear: path codec bursts heard p50 p95 max page_jb load1 per-call-p50
    for path, codec in (("browser -> webrtc echo -> browser", "opus"), ("SIP RTP echo", "PCMU")):
        row = re.search(
            rf"^{re.escape(path)}.*?\s{codec}\s+3\s+(\d)\s+({NUM})\s+({NUM})\s+({NUM})\s", out, re.M
        )
        assert row is not None, f"no mouth-to-ear row for {path}:\n{report}"
        assert int(row.group(1)) >= 1, f"no burst came back on {path}:\n{report}"
        assert float(row.group(2)) > 0, report

    # CPU: transport N ok failed idle% cpu% cpu%/call kids% rss in_pps clients% load1
    for transport in ("sip", "webrtc/opus"):
        row = re.search(
            rf"^{re.escape(transport)}\s+2\s+2\s+0\s+{NUM}\s+({NUM})\s+({NUM})\s+{NUM}\s+({NUM})\s+({NUM})\s",
            out,
            re.M,
        )
        assert row is not None, f"no CPU row for {transport} with 2 calls ok:\n{report}"
        assert float(row.group(1)) > 0 and float(row.group(3)) > 10, report  # CPU used, RSS MB
        assert float(row.group(4)) > 10, f"the calls carried no media (packets/s):\n{report}"
    assert (tmp_path / "webrtc" / "results.jsonl").is_file()
