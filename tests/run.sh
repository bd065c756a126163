#!/usr/bin/env bash
# The test command (README, `.ci/run`): install what the tests need, then run every test.
#
# Installs, where missing: Debian's chromium (the open-data page in a real
# browser), systemd-analyze (the systemd units), psql (`ladu serve` through a
# real client), openssl (the server's test certificates) and SoftHSM2 (the key kept
# under a PKCS#11 token), with apt-get as root or
# through sudo; and the Python virtualenv the tests cross-check against
# (tests/python-env.sh). Then `cargo test`, with any arguments given here.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/systemd-analyze ] || missing+=(systemd)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v openssl >/dev/null || missing+=(openssl)
command -v softhsm2-util >/dev/null || missing+=(softhsm2)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  echo "tests/run.sh: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q "${missing[@]}" >/dev/null
fi

bash tests/python-env.sh >/dev/null

exec cargo test "$@"
