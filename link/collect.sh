#!/usr/bin/env bash
# Writes link/symbol-order.txt: the functions a `ladu sql` start and the nightly job execute, found
# with valgrind's callgrind on the release binary. build.rs has the release build's linker place them
# together, so that a process maps the few pages that hold them rather than pages across all 135 MiB
# of code (the kernel maps code 64 KiB around each page a process touches).
#
# usage: bash link/collect.sh     (needs valgrind and nm; a release build, ~30 minutes from clean)
# Run it again after a change of dependencies or toolchain: their functions' names change with them
# (names it lists that the binary no longer has are passed over; the binary stays correct, only
# its memory grows back).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for tool in valgrind nm python3; do
  command -v "$tool" >/dev/null || { echo "link/collect.sh needs $tool" >&2; exit 2; }
done
cargo build --release --quiet
bin=$root/target/release/ladu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. benches/workspace.sh
bench_workspace "$work" "$bin"
"$bin" sample-data --out "$work/inbox" >/dev/null
# One callgrind profile per command, in the order their functions are listed: the start of a query
# session first (every `ladu sql` runs it), then the nightly job (ingest, statistics, open data).
grind() {
  local name=$1
  shift
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.callgrind" \
    "$bin" --config "$work/config/ladu.toml" -q "$@" >/dev/null 2>"$work/$name.log" ||
    { cat "$work/$name.log" >&2; exit 1; }
}
grind 2-run run
grind 1-sql sql -c "SELECT 1" --format csv --output /dev/null
nm --defined-only "$bin" > "$work/symbols"
python3 - "$work" > link/symbol-order.txt <<'PY'
import pathlib, re, sys
work = pathlib.Path(sys.argv[1])
# Functions of the binary's code (local or global), by their names as the linker knows them.
code = {p[2] for p in (l.split() for l in (work / "symbols").read_text().splitlines()) if len(p) == 3 and p[1] in "tTwW"}
seen = set()
for profile in sorted(work.glob("*.callgrind")):
    for line in profile.read_text(errors="replace").splitlines():
        m = re.match(r"c?fn=\(\d+\) (.+)$", line)
        if m:
            name = re.sub(r"'\d+$", "", m.group(1))  # callgrind's mark of a recursive call
            if name in code and name not in seen:
                seen.add(name)
                print(name)
PY
echo "link/symbol-order.txt: $(wc -l < link/symbol-order.txt) functions" >&2
