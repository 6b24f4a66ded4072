# Shared by run.sh and test.sh: make .venv with callbridge installed. Sourced, not run.
# PYTHON may name the interpreter (default python3, which must be >= 3.11).
PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "$@" \
    || { as_root apt-get -o DPkg::Lock::Timeout=900 update -q && \
         as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "$@"; }
}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "callbridge needs Python >= 3.11 as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2; exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"; apt_install python3-venv && "$PYTHON" -m venv "$VENV"
  fi
fi
# The compiled media path (callbridge.native, about half the CPU per call): built when the
# sources changed since the last build. Needs a C compiler and the Python headers, installed
# here with apt-get when missing. Returns non-zero if it could not be built.
native_build() {
  [ "${CALLBRIDGE_NATIVE:-1}" = 0 ] && return 0  # turned off: nothing to build
  "$VENV/bin/python" -m callbridge.cli.native check >/dev/null 2>&1 && return 0
  if ! command -v gcc >/dev/null || ! "$VENV/bin/python" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
    echo "== installing a C compiler and the Python headers (Debian packages) for the compiled media path"
    apt_install gcc libc6-dev python3-dev || return 1
  fi
  echo "== compiling the media path (mypyc, about a minute)"
  "$VENV/bin/python" -m callbridge.cli.native build
}
