"""The media path compiled to C with mypyc, when it has been built: the same source, about half
the CPU per call.

Every call costs the RTP session, jitter buffer, concealment, playout queue and, for the voice
agent, the VAD stream and turn detectors on each 20 ms frame, and that per-frame Python is most
of a gateway's CPU (issue 12's profiles). mypyc compiles these typed, sans-IO modules as they
are; nothing else changes.

    python -m callbridge.cli.native build    # compile NATIVE_MODULES into build/native/
    python -m callbridge.cli.native check    # exit 0 if the build matches the sources

`build` needs mypy (mypyc comes with it: the `native` extra), setuptools, a C compiler and the
Python headers; `scripts/run.sh` and `scripts/test.sh` run it when the sources changed. At
import of `callbridge`, `install()` puts a finder first on `sys.meta_path` that loads the
compiled modules from build/native/, and only when every one of them was built from the source
now on disk by this Python: an edited source, another interpreter or a missing build runs all
of them interpreted (never a stale binary, never a mix: compiled modules call each other
directly). `CALLBRIDGE_NATIVE=0` turns it off; `status()` says which way this process runs.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = [
    "C_MODULES",
    "DEFAULT_DIR",
    "GROUP",
    "MANIFEST",
    "NATIVE_MODULES",
    "NativeStatus",
    "all_modules",
    "build_dir",
    "digest",
    "install",
    "source_of",
    "status",
    "suffix",
    "verify",
]

# The per-frame modules, typed (mypy --strict), which tests never patch: the sans-IO cores, and
# the shells that run them every 20 ms per call (the RTP socket, the media clock, a leg's core,
# the SIP leg, the echo agent). No closures in them: a compiled closure's environment and its
# functions point at each other, a reference cycle per call (test_call_garbage.py finds it).
NATIVE_MODULES: tuple[str, ...] = (
    "callbridge.agents.echo",
    "callbridge.audio.g711",
    "callbridge.audio.plc",
    "callbridge.core.frames",
    "callbridge.media.bargein",
    "callbridge.media.listening",
    "callbridge.media.listening_actions",
    "callbridge.media.noise_floor",
    "callbridge.media.playout",
    "callbridge.media.turns",
    "callbridge.media.vad",
    "callbridge.rtp.dtmf",
    "callbridge.rtp.jitter",
    "callbridge.rtp.jitter_config",
    "callbridge.rtp.packet",
    "callbridge.rtp.playout_clock",
    "callbridge.rtp.rtcp_packets",
    "callbridge.rtp.rtcp_stats",
    "callbridge.rtp.sample_timeline",
    "callbridge.rtp.sender",
    "callbridge.rtp.session",
    "callbridge.rtp.socket",
    "callbridge.transports.leg_core",
    "callbridge.transports.media_clock",
    "callbridge.transports.sip.leg",
)
# Written in C (no Python source): what the interpreter cannot do cheaply, such as one system
# call for a whole RTP drain (rtp/_udp.c). Their Python users fall back when they are absent.
C_MODULES: tuple[str, ...] = (
    "callbridge.audio._g711",
    "callbridge.audio._pcm",
    "callbridge.rtp._udp",
)
GROUP = "callbridge_native"  # mypyc's shared library for the group: GROUP + "__mypyc"
MANIFEST = "manifest.json"
SRC = Path(__file__).resolve().parent.parent  # the directory that holds `callbridge/`
DEFAULT_DIR = SRC.parent / "build" / "native"


@dataclass(frozen=True, slots=True)
class NativeStatus:
    native: bool
    reason: str  # why not (or "compiled"), for the start-up log and `callbridge doctor`
    modules: int = 0

    @property
    def summary(self) -> str:
        return "compiled" if self.native else f"interpreted ({self.reason})"


_status = NativeStatus(False, "not installed")


def build_dir() -> Path:
    """Where the build is: build/native/ beside src/, or $CALLBRIDGE_NATIVE_DIR."""
    return Path(os.environ.get("CALLBRIDGE_NATIVE_DIR", DEFAULT_DIR))


def status() -> NativeStatus:
    return _status


def source_of(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".c" if module in C_MODULES else ".py")


def all_modules() -> tuple[str, ...]:
    """Every module a build holds: the mypyc-compiled ones and the C ones."""
    return NATIVE_MODULES + C_MODULES


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def suffix() -> str:
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def verify(directory: Path) -> tuple[dict[str, Path], str]:
    """The compiled file of every module (and the group library) if the build in `directory`
    matches this interpreter and the sources; else ({}, why not). Never raises: it runs at
    `import callbridge`, and a damaged build must not stop the gateway."""
    try:
        return _verify(directory)
    except FileNotFoundError:
        return {}, f"not built (python -m callbridge.cli.native build writes {directory})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"unreadable manifest in {directory}: {exc!r}"


def _verify(directory: Path) -> tuple[dict[str, Path], str]:
    manifest = json.loads((directory / MANIFEST).read_text())
    if manifest.get("suffix") != suffix():
        return {}, f"built for another interpreter ({manifest.get('suffix')}, not {suffix()})"
    built: dict[str, dict[str, str]] = manifest.get("modules", {})
    if sorted(built) != sorted(all_modules()):
        return {}, "built for another module list: rebuild"
    files: dict[str, Path] = {}
    for module, entry in built.items():
        source = source_of(module)
        try:
            if digest(source) != entry["sha256"]:
                return {}, f"stale: {source.name} changed since the build (rebuild)"
        except OSError:
            return {}, f"stale: {source} is missing"
        files[module] = directory / entry["file"]
    files[manifest["group"]["module"]] = directory / manifest["group"]["file"]
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        return {}, f"incomplete build: {missing[0]} is missing"
    return files, "compiled"


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, str(file), loader=loader)


def install(directory: Path | None = None) -> NativeStatus:
    """Load NATIVE_MODULES compiled from now on, if the build matches (see the module doc)."""
    global _status  # noqa: PLW0603 - one status per process, set once at import
    if os.environ.get("CALLBRIDGE_NATIVE", "1") == "0":
        _status = NativeStatus(False, "off (CALLBRIDGE_NATIVE=0)")
        return _status
    directory = directory or build_dir()
    files, reason = verify(directory)
    if not files:
        _status = NativeStatus(False, reason)
        return _status
    already = [m for m in NATIVE_MODULES if m in sys.modules]
    if already:  # imported interpreted before us: mixing is not safe
        _status = NativeStatus(False, f"{already[0]} was imported before callbridge.native")
        return _status
    sys.meta_path.insert(0, _Finder(files))
    _status = NativeStatus(True, reason, len(all_modules()))
    return _status
