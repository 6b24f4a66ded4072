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
