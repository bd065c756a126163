#!/usr/bin/env bash
# Data lifecycle bench: what removing rows past their period and rotating the key cost.
#
# A warehouse of N invoice rows (default 10M) in 10 deliveries dated over the year to yesterday,
# plus 1M people, built once. On a hard-linked copy of it (ladu never changes a committed file
# in place), each measured for wall time and peak memory:
#   expire-dry   `ladu expire --dry-run` with `retention = { months = 6, by = "start_date" }`
#   expire       `ladu expire` (the removal's commit and the statistics computed again)
#   rekey        `ladu rekey --new-key` on the warehouse (every table rewritten, then statistics)
#   rekey-alone  the same with a queries folder that holds no statistic: the rotation's own cost
# Rows per second are the warehouse's rows over the time.
#
# usage: bash benches/lifecycle_e2e.sh [INVOICE_ROWS]     LADU_BENCH_REPEAT=N (rounds; medians)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=$(bash tests/python-env.sh bench)
cargo build --release --quiet
bin=$root/target/release/ladu
. benches/workspace.sh
base=${LADU_BENCH_DIR:-$root/target/bench-lifecycle}
rows=${1:-10000000}
deliveries=10
work=$base/$rows
mkdir -p "$base"

bench_workspace "$work" "$bin"
if [ ! -f "$work/built" ]; then
  rm -rf "$work/warehouse" "$work/inbox" "$work/audit"
  per=$((rows / deliveries))
  "$bin" sample-data --out "$work/inbox" --rows 1000000 --only population --invalid 0 >/dev/null
  for i in $(seq 0 $((deliveries - 1))); do
    # Each delivery's invoices start within the year before its date: together, two years.
    "$bin" sample-data --out "$work/inbox" --rows "$per" --only treatment_invoices --invalid 0 --seed $((i + 1)) \
      --date "$(date -d "yesterday - $((36 * (deliveries - 1 - i))) days" +%F)" --first-record $((i * per + 1)) >/dev/null
    "$bin" --config "$work/config/ladu.toml" -q ingest >/dev/null
    rm -rf "$work/inbox"
  done
  touch "$work/built"
fi
total=$((rows + 1000000))

# A hard-linked copy of the warehouse in a workspace of its own, with the invoices' retention.
fresh() {
  local copy=$base/copy
  rm -rf "$copy"
  bench_workspace "$copy" "$bin"
  cp "$work/ladu.key" "$copy/ladu.key"
  cp -al "$work/warehouse" "$copy/warehouse"
  sed -i 's/^sort_by = \["person_id"\]$/&\nretention = { months = 6, by = "start_date" }/' \
    "$copy/config/sources/treatment_invoices.toml"
  echo "$copy"
}

for _ in $(seq "${LADU_BENCH_REPEAT:-1}"); do
  copy=$(fresh)
  "$python" benches/measure.py "expire-dry" "$total" -- "$bin" --config "$copy/config/ladu.toml" -q expire --dry-run
  "$python" benches/measure.py "expire" "$total" -- "$bin" --config "$copy/config/ladu.toml" -q expire
  "$bin" --config "$copy/config/ladu.toml" -q sql --format csv \
    -c "SELECT count(*) AS invoice_versions_left FROM treatment_invoices_history" >&2
  copy=$(fresh)
  "$bin" keygen --out "$copy/k2.key" 2>/dev/null
  "$python" benches/measure.py "rekey" "$total" -- "$bin" --config "$copy/config/ladu.toml" -q rekey --new-key "$copy/k2.key"
  copy=$(fresh)
  mkdir -p "$copy/queries/views" "$copy/queries/statistics"
  sed -i "s|^queries = .*|queries = \"../queries\"|" "$copy/config/ladu.toml"
  "$bin" keygen --out "$copy/k2.key" 2>/dev/null
  "$python" benches/measure.py "rekey-alone" "$total" -- "$bin" --config "$copy/config/ladu.toml" -q rekey --new-key "$copy/k2.key"
done | tee "$base/lifecycle.jsonl" | "$python" benches/measure.py --report
rm -rf "$base/copy"
