#!/usr/bin/env bash
# Makes (once) the Python virtualenv the tests cross-check with, and prints its python.
# Idempotent: reinstalls only when the requirements change.
#
# usage: python-env.sh            the tests' venv (.venv, tests/requirements.txt)
#        python-env.sh bench      the benchmarks' venv (.venv-bench, benches/requirements.txt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = bench ]; then
  venv=$root/.venv-bench
  requirements=$root/benches/requirements.txt
else
  venv=${LADU_TEST_VENV:-$root/.venv}
  requirements=$root/tests/requirements.txt
fi
stamp=$venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
