#!/usr/bin/env bash
# Makes (once) the Python virtualenv the tests cross-check with, and prints its python.
# Idempotent: reinstalls only when tests/requirements.txt changes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${LADU_TEST_VENV:-$root/.venv}
stamp=$venv/.requirements.sha256
want=$(sha256sum "$root/tests/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/tests/requirements.txt" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
