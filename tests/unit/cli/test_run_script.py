"""`./scripts/run.sh` installs once, then starts without pip (so without a network): the install
runs again only when pyproject.toml changes. Driven against a stand-in virtualenv whose pip
fails, as pip does offline."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    real = Path(sys.executable).parent
    for name, body in {
        "python": f'exec "{sys.executable}" "$@"',
        "callbridge": f'exec "{real / "callbridge"}" "$@"',
        "pip": 'echo "pip: no network here" >&2; echo ran >> "$(dirname "$0")/../pip-ran"; exit 1',
    }.items():
        path = venv / "bin" / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return venv


def run(venv: Path) -> subprocess.CompletedProcess[str]:
    # The compiled media path is not this test's subject: no build (scripts/test.sh made one).
    env = {**os.environ, "VENV": str(venv), "CALLBRIDGE_NATIVE": "0"}
    return subprocess.run(
        [str(ROOT / "scripts" / "run.sh"), "--help"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_run_sh_starts_without_pip_once_installed(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    # Not installed yet (no stamp): it runs pip, which fails here, and stops.
    first = run(venv)
    assert first.returncode != 0 and (venv / "pip-ran").exists(), first.stderr
    # Installed (the stamp matches pyproject.toml): no pip, the gateway's command runs.
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".callbridge-installed").write_text(digest + "\n")
    (venv / "pip-ran").unlink()
    second = run(venv)
    assert second.returncode == 0, second.stderr
    assert "serve" in second.stdout and not (venv / "pip-ran").exists()
    # pyproject.toml changed since (another digest): it installs again.
    (venv / ".callbridge-installed").write_text("0" * 64 + "\n")
    assert run(venv).returncode != 0 and (venv / "pip-ran").exists()
