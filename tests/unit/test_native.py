"""callbridge.native: the compiled media path loads only from a build that matches the sources
and this interpreter; anything else runs interpreted, with the reason."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from callbridge import native


def fake_build(directory: Path, *, suffix: str | None = None) -> dict[str, object]:
    """A build directory as `cli/native.py build` leaves it, with empty files for libraries."""
    sfx = suffix or native.suffix()
    modules = {}
    for module in native.all_modules():
        file = module.replace(".", "/") + sfx
        (directory / file).parent.mkdir(parents=True, exist_ok=True)
        (directory / file).write_bytes(b"")
        modules[module] = {"sha256": native.digest(native.source_of(module)), "file": file}
    (directory / f"lib{sfx}").write_bytes(b"")
    manifest: dict[str, object] = {
        "suffix": sfx,
        "group": {"module": f"{native.GROUP}__mypyc", "file": f"lib{sfx}"},
        "modules": modules,
    }
    (directory / native.MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_a_build_that_matches_gives_every_module_and_the_group_library(tmp_path: Path) -> None:
    fake_build(tmp_path)
    files, reason = native.verify(tmp_path)
    assert reason == "compiled"
    assert set(files) == {*native.all_modules(), f"{native.GROUP}__mypyc"}
    assert files["callbridge.rtp.jitter"] == tmp_path / ("callbridge/rtp/jitter" + native.suffix())


def test_no_build_says_how_to_make_one(tmp_path: Path) -> None:
    files, reason = native.verify(tmp_path)
    assert not files and "python -m callbridge.cli.native build" in reason


def test_an_edited_source_runs_everything_interpreted(tmp_path: Path) -> None:
    manifest = fake_build(tmp_path)
    modules = manifest["modules"]
    assert isinstance(modules, dict)
    modules["callbridge.rtp.jitter"]["sha256"] = "0" * 64  # built from another jitter.py
    (tmp_path / native.MANIFEST).write_text(json.dumps(manifest))
    files, reason = native.verify(tmp_path)
    assert not files and reason.startswith("stale: jitter.py changed")


def test_a_build_for_another_interpreter_is_not_loaded(tmp_path: Path) -> None:
    fake_build(tmp_path, suffix=".cpython-310-x86_64-linux-gnu.so")
    files, reason = native.verify(tmp_path)
    assert not files and "another interpreter" in reason


def test_an_incomplete_build_is_not_loaded(tmp_path: Path) -> None:
    fake_build(tmp_path)
    (tmp_path / ("callbridge/rtp/session" + native.suffix())).unlink()
    files, reason = native.verify(tmp_path)
    assert not files and reason.startswith("incomplete build")


def test_a_build_of_another_module_list_is_not_loaded(tmp_path: Path) -> None:
    manifest = fake_build(tmp_path)
    modules = manifest["modules"]
    assert isinstance(modules, dict)
    del modules["callbridge.media.vad"]
    (tmp_path / native.MANIFEST).write_text(json.dumps(manifest))
    assert native.verify(tmp_path) == ({}, "built for another module list: rebuild")


def test_it_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    previous = native.status()
    monkeypatch.setenv("CALLBRIDGE_NATIVE", "0")
    try:
        assert native.install(tmp_path) == native.NativeStatus(False, "off (CALLBRIDGE_NATIVE=0)")
    finally:
        native._status = previous


def test_modules_imported_before_it_keep_it_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Once one of them is imported, loading a compiled twin of the others would mix the two."""
    import callbridge.rtp.jitter  # noqa: F401 - imported, whichever way

    monkeypatch.delenv("CALLBRIDGE_NATIVE", raising=False)
    previous = native.status()
    fake_build(tmp_path)
    finders = list(sys.meta_path)
    try:
        status = native.install(tmp_path)
        assert not status.native and status.reason.endswith("was imported before callbridge.native")
        assert sys.meta_path == finders
    finally:
        sys.meta_path[:] = finders
        native._status = previous


def test_the_media_path_runs_the_way_status_says() -> None:
    """With CALLBRIDGE_REQUIRE_NATIVE=1 (scripts/test.sh, so CI) the build must be loaded."""
    import callbridge.media.playout
    import callbridge.rtp.jitter

    status = native.status()
    if os.environ.get("CALLBRIDGE_REQUIRE_NATIVE") == "1":
        assert status.native, status.reason
    for module in (callbridge.rtp.jitter, callbridge.media.playout):
        compiled = str(module.__file__).endswith(native.suffix())
        assert compiled == status.native, (module.__name__, status)
    assert all(m in sys.modules for m in ("callbridge.rtp.jitter", "callbridge.media.playout"))


def test_a_damaged_manifest_runs_interpreted_and_says_so(tmp_path: Path) -> None:
    """It is read at `import callbridge`: a damaged build must not stop the gateway."""
    manifest = fake_build(tmp_path)
    del manifest["group"]
    (tmp_path / native.MANIFEST).write_text(json.dumps(manifest))
    files, reason = native.verify(tmp_path)
    assert not files and reason.startswith("unreadable manifest") and "group" in reason
    (tmp_path / native.MANIFEST).write_text("[1, 2]")
    files, reason = native.verify(tmp_path)
    assert not files and reason.startswith("unreadable manifest")
