"""Build the compiled media path (callbridge.native): mypyc over NATIVE_MODULES, and the C of
C_MODULES.

    python -m callbridge.cli.native build [directory]   # compile into build/native/
    python -m callbridge.cli.native check [directory]   # exit 0 if the build matches the sources

Needs mypy (mypyc comes with it; the `native` extra), setuptools, a C compiler and the Python
headers. The manifest is written last, so an interrupted build is never taken for a good one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from callbridge import native

_SETUP = """
import sys
from mypyc.build import mypycify
from setuptools import Extension, setup

paths, lib, tmp = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
c_modules = [m.split("=", 1) for m in sys.argv[4].split(",") if m]
setup(
    name="callbridge-native",
    ext_modules=mypycify(paths, opt_level="3", group_name={group!r})
    + [Extension(name, [path], extra_compile_args=["-O2"]) for name, path in c_modules],
    script_args=["build_ext", "--build-lib", lib, "--build-temp", tmp, "--quiet"],
)
"""


def build(directory: Path | None = None) -> Path:
    """Compile native.NATIVE_MODULES into `directory` (replacing what was there) and write its
    manifest last, so an interrupted build is never taken for a good one."""
    directory = directory or native.build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / native.MANIFEST).unlink(missing_ok=True)
    digests = {m: native.digest(native.source_of(m)) for m in native.all_modules()}
    paths = ",".join(str(native.source_of(m)) for m in native.NATIVE_MODULES)
    c_modules = ",".join(f"{m}={native.source_of(m)}" for m in native.C_MODULES)
    with tempfile.TemporaryDirectory(prefix="callbridge-native-") as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _SETUP.format(group=native.GROUP),
                paths,
                str(directory),
                tmp,
                c_modules,
            ],
            # mypyc's C sources and mypy's cache go to the scratch directory, not the tree
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode:
        raise RuntimeError(f"mypyc build failed:\n{(done.stdout + done.stderr)[-3000:]}")
    suffix = native.suffix()
    group_file = next(directory.glob(f"{native.GROUP}__mypyc*{suffix}"), None)
    if group_file is None:
        raise RuntimeError(f"mypyc built no {native.GROUP}__mypyc library in {directory}")
    modules = {}
    for module in native.all_modules():
        file = Path(*module.split(".")).with_suffix("").as_posix() + suffix
        if not (directory / file).is_file():
            raise RuntimeError(f"mypyc built no {file} in {directory}")
        modules[module] = {"sha256": digests[module], "file": file}
    manifest = {
        "suffix": suffix,
        "python": sys.version,
        "group": {"module": f"{native.GROUP}__mypyc", "file": group_file.name},
        "modules": modules,
    }
    (directory / native.MANIFEST).write_text(json.dumps(manifest, indent=1))
    return directory


def check(directory: Path | None = None) -> tuple[bool, str]:
    files, reason = native.verify(directory or native.build_dir())
    return bool(files), reason


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "check"
    directory = Path(args[1]) if len(args) > 1 else native.build_dir()
    if command == "build":
        try:
            build(directory)
        except (RuntimeError, OSError) as exc:
            print(f"callbridge.native: {exc}", file=sys.stderr)
            return 1
        print(f"callbridge.native: {len(native.all_modules())} modules compiled into {directory}")
        return 0
    if command == "check":
        ok, reason = check(directory)
        print(f"callbridge.native: {reason}")
        return 0 if ok else 1
    print("usage: python -m callbridge.cli.native build|check [directory]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
