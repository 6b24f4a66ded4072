#!/usr/bin/env bash
# One command: set up a virtualenv, install callbridge, and run the gateway with embedded defaults.
#   ./scripts/run.sh                 # SIP on 0.0.0.0:5060 (UDP), answers sip:agent@<host>
#   ./scripts/run.sh --config my.toml
# The install runs once (again only when pyproject.toml changes), so later starts need no network.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
STAMP="$VENV/.callbridge-installed"
WANT=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! "$VENV/bin/python" -c 'import callbridge' 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[native]"
  echo "$WANT" > "$STAMP"
fi
native_build || echo "callbridge: the media path runs interpreted (it could not be compiled: see above)" >&2
exec "$VENV/bin/callbridge" serve "$@"
