#!/usr/bin/env bash
# One command: set up a virtualenv, install callbridge, and run the gateway with embedded defaults.
#   ./scripts/run.sh                 # SIP on 0.0.0.0:5060 (UDP), answers sip:agent@<host>
#   ./scripts/run.sh --config my.toml
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
"$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT"
exec "$VENV/bin/callbridge" serve "$@"
