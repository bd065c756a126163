#!/usr/bin/env bash
# Growth bench: does the nightly cost grow with the delivery, not with the warehouse?
#
# For each size (default 10M, 50M and 100M invoice rows, delivered in 10 weekly deliveries, plus
# 1M people), a nightly delivery of 200k invoices of which 1 % correct earlier invoices, in two
# scenarios: corrections of the last delivery's invoices (`recent`, as providers correct what they
# just sent) and of invoices anywhere in the warehouse (`anywhere`, the worst case for pruning).
# Each night runs on a hard-linked copy of the warehouse (ladu never changes a committed file in
# place, so the copy is safe and the original stays as it was), and is measured as:
#   commit-S       `ladu ingest` of the delivery: time and peak memory (the record step's own
#                  seconds are taken from its log line and printed below)
#   first-query-S  the first session after it: `SELECT count(*) FROM treatment_invoices`
#   full-recompute-S  the same session on the same copy once its manifest has no record, which
#                  finds the superseded rows by a pass over every record id, as sessions did before
# Then compaction: a warehouse of 365 daily deliveries of 10k invoices (every month's partition
# holds a file per delivery), `ladu compact`'s time and peak memory, and the SQL bench's queries
# before (`before`) and after (`ladu`) it. (Each day's patients are drawn from its own synthetic
# population, so the queries that join the population find few matches here.)
#
# usage: bash benches/growth_e2e.sh [INVOICE_ROWS...]     LADU_BENCH_REPEAT=N (rounds; medians)
#        LADU_BENCH_COMPACTION=0 skips the compaction part; LADU_BENCH_RECOMPUTE=0 the full recomputes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=$(bash tests/python-env.sh bench)
cargo build --release --quiet
bin=$root/target/release/ladu
. benches/workspace.sh
base=${LADU_BENCH_DIR:-$root/target/bench-growth}
sizes=${*:-10000000 50000000 100000000}
deliveries=10
night=200000
log=$base/log
mkdir -p "$base"
: > "$log"

# A warehouse of $1 invoice rows in $deliveries weekly deliveries, plus 1M people; built once.
build() {
  local rows=$1 work=$base/$1 per=$(($1 / deliveries))
  bench_workspace "$work" "$bin"
  [ -f "$work/built" ] && return
  rm -rf "$work/warehouse" "$work/inbox" "$work/audit"
  "$bin" sample-data --out "$work/inbox" --rows 1000000 --only population --invalid 0 >/dev/null
  for i in $(seq 0 $((deliveries - 1))); do
    "$bin" sample-data --out "$work/inbox" --rows "$per" --only treatment_invoices --invalid 0 --seed $((i + 1)) \
      --date "$(date -d "2024-01-07 + $((7 * i)) days" +%F)" --first-record $((i * per + 1)) >/dev/null
    "$bin" --config "$work/config/ladu.toml" -q ingest >/dev/null
    rm -rf "$work/inbox"
  done
  touch "$work/built"
}

# The nightly delivery for a warehouse of $1 rows, scenario $2, into folder $3.
nightly_delivery() {
  local rows=$1 scenario=$2 out=$3 per=$(($1 / deliveries))
  "$bin" sample-data --out "$out" --rows "$night" --only treatment_invoices --invalid 0 --seed 99 \
    --date 2024-03-20 --first-record $((rows + 1)) >/dev/null
  "$python" - "$out/treatment_invoices/treatment_invoices_20240320.csv" "$scenario" "$rows" "$per" <<'PY'
import random, sys
path, scenario, rows, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(7)
lines = open(path, encoding="utf-8").read().splitlines()
for i in range(1, len(lines), 100):
    # Every 100th invoice corrects an earlier one: of the last delivery, or of any.
    n = rng.randrange(rows - per, rows) + 1 if scenario == "recent" else rng.randrange(rows) + 1
    lines[i] = f"INV{n:09}" + lines[i][lines[i].index(";"):]
open(path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
PY
}

for rows in $sizes; do
  build "$rows"
  work=$base/$rows
  for _ in $(seq "${LADU_BENCH_REPEAT:-1}"); do
    for scenario in recent anywhere; do
      copy=$base/night
      rm -rf "$copy"
      bench_workspace "$copy" "$bin"
      cp "$work/ladu.key" "$copy/ladu.key"
      cp -al "$work/warehouse" "$copy/warehouse"
      nightly_delivery "$rows" "$scenario" "$copy/inbox"
      "$python" benches/measure.py "commit-$scenario" "$rows" -- "$bin" --config "$copy/config/ladu.toml" ingest \
        2>>"$log"
      q="SELECT count(*) FROM treatment_invoices"
      "$python" benches/measure.py "first-query-$scenario" "$rows" -- "$bin" --config "$copy/config/ladu.toml" -q sql \
        -c "$q" --format csv --output /dev/null
      if [ "${LADU_BENCH_RECOMPUTE:-1}" = 0 ]; then rm -rf "$copy"; continue; fi
      # The manifest as a warehouse written before commits recorded it: written anew (not in place).
      "$python" - "$copy/warehouse/_ladu/manifest" <<'PY'
import json, os, pathlib, sys
newest = max(pathlib.Path(sys.argv[1]).glob("*.json"))
m = json.loads(newest.read_text())
for t in m["tables"].values():
    t.pop("versions", None)
tmp = newest.with_suffix(".tmp")
tmp.write_text(json.dumps(m))
os.replace(tmp, newest)
PY
      "$python" benches/measure.py "full-recompute-$scenario" "$rows" -- "$bin" --config "$copy/config/ladu.toml" -q \
        sql -c "$q" --format csv --output /dev/null || echo "full recompute failed at $rows rows" >&2
      rm -rf "$copy"
    done
  done
done | tee "$base/growth.jsonl" | "$python" benches/measure.py --report
echo "the record step of each commit (seconds, from the ingest's log):"
grep -o 'table=treatment_invoices superseded=.*seconds=[0-9.]*' "$log" || true

[ "${LADU_BENCH_COMPACTION:-1}" = 0 ] && exit 0
work=$base/compaction
bench_workspace "$work" "$bin"
if [ ! -f "$work/built" ]; then
  rm -rf "$work/warehouse" "$work/inbox" "$work/audit"
  "$bin" sample-data --out "$work/inbox" --rows 10000 --only population --invalid 0 >/dev/null
  for i in $(seq 0 364); do
    "$bin" sample-data --out "$work/inbox" --rows 10000 --only treatment_invoices --invalid 0 --seed $((i + 1)) \
      --date "$(date -d "2023-01-01 + $i days" +%F)" --first-record $((i * 10000 + 1)) >/dev/null
  done
  "$bin" --config "$work/config/ladu.toml" -q ingest >/dev/null
  rm -rf "$work/inbox"
  touch "$work/built"
fi
split_bench_queries "$python" "$work/queries"
copy=$base/compacted
rm -rf "$copy"
bench_workspace "$copy" "$bin"
cp "$work/ladu.key" "$copy/ladu.key"
cp -al "$work/warehouse" "$copy/warehouse"
echo "files in the busiest partition before: $(ls "$copy/warehouse/treatment_invoices/year=2023/month=6" | wc -l)"
{
  "$python" benches/measure.py "compact" 3650000 -- "$bin" --config "$copy/config/ladu.toml" -q compact
} | "$python" benches/measure.py --report
echo "files in the busiest partition after: $(ls "$copy/warehouse/treatment_invoices/year=2023/month=6" | wc -l)"
for _ in $(seq "${LADU_BENCH_REPEAT:-1}"); do
  for q in $(ls "$work/queries" | sort -V); do
    name=${q%.sql}
    "$python" benches/measure.py "before:$name" 3650000 -- "$bin" --config "$work/config/ladu.toml" -q sql \
      --format csv --output /dev/null -f "$work/queries/$q"
    "$python" benches/measure.py "ladu:$name" 3650000 -- "$bin" --config "$copy/config/ladu.toml" -q sql \
      --format csv --output /dev/null -f "$work/queries/$q"
  done
done | "$python" benches/measure.py --report
