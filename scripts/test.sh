#!/usr/bin/env bash
# One command: install the real test peers and Python test deps, then run every check:
# ruff, mypy --strict, import-layer contracts, unit tests and peer tests (SIPp, baresip).
# Peer tests run inside a private network namespace (only loopback) when the kernel allows it.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
PEERS="sip-tester baresip baresip-core sox libsox-fmt-all espeak-ng tshark iproute2 xxd util-linux procps postgresql libportaudio2 kamailio chromium openssl"
missing=0
for bin in sipp baresip sox espeak-ng tshark ip xxd unshare kamailio chromium openssl; do command -v "$bin" >/dev/null || missing=1; done
# the store's tests start a throwaway PostgreSQL server (initdb, pg_ctl are not on PATH)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1
# `callbridge call --listen` is tested through PortAudio (sounddevice loads it at run time)
ldconfig -p | grep -q 'libportaudio\.so\.2' || missing=1
if [ "$missing" = 1 ]; then
  echo "== installing test peers (Debian packages)"
  apt_install $PEERS
fi
echo "== installing callbridge + test dependencies"
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test,peers,native]"
# The tests run the compiled media path, as users do (test_native fails if it is not loaded)...
native_build
export CALLBRIDGE_REQUIRE_NATIVE=1
export PATH="$VENV/bin:$PATH"
echo "== ruff";          ruff check src tests bench && ruff format --check src tests bench
echo "== mypy --strict"; mypy
echo "== import contracts"; lint-imports
echo "== pytest: the media path interpreted (where no compiler was available)"
CALLBRIDGE_NATIVE=0 CALLBRIDGE_REQUIRE_NATIVE=0 python -m pytest -q -p no:cacheprovider tests/unit/rtp tests/unit/media tests/unit/audio tests/unit/test_native.py tests/unit/transports/test_media_clock.py tests/unit/transports/test_sip_leg.py tests/unit/transports/test_leg_base.py tests/unit/agents/test_echo.py tests/unit/core/test_frames.py
echo "== pytest"
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  exec unshare --net sh -c 'ip link set lo up && exec python -m pytest "$@"' pytest "$@"
fi
exec python -m pytest "$@"
