#!/usr/bin/env bash
# End-to-end ingest bench: ladu (release) vs DuckDB on the same generated treatment_invoices.
#
# usage: bash benches/ingest_e2e.sh [ROWS...]     (default: 1000000 10000000)
#        LADU_BENCH_REPEAT=3 bash benches/ingest_e2e.sh 10000000   (rounds of all three; medians)
# For each size: generates the extract, ingests it with the release build into a fresh
# warehouse, and has DuckDB do the equivalent job (read the CSV, keyed SHA-256 of the
# personal code and the record key, write the same Hive-partitioned zstd Parquet).
# As a calibration of the machine it also times Polars (Python) converting the same CSV
# to partitioned Parquet with no hashing and no validation at all.
# Prints rows/s, peak resident memory (getrusage of each child) and the ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000)
work=${LADU_BENCH_DIR:-$root/target/bench-e2e}
python=$(bash tests/python-env.sh bench)
cargo build --release --quiet
bin=$root/target/release/ladu
. benches/workspace.sh
mkdir -p "$work"
for rows in "${sizes[@]}"; do
  dir=$work/$rows
  bench_workspace "$dir" "$bin"
  csv=$dir/inbox/treatment_invoices/treatment_invoices_20240331.csv
  [ -f "$csv" ] || "$bin" sample-data --out "$dir/inbox" --rows "$rows" --only treatment_invoices --invalid 0 >/dev/null
  # Rounds of all three, so that a slower spell of the machine hits each alike.
  for _ in $(seq "${LADU_BENCH_REPEAT:-1}"); do
    rm -rf "$dir/warehouse" "$dir/outbox" "$dir/audit" "$dir/duckdb" "$dir/polars"
    "$python" benches/measure.py ladu "$rows" -- "$bin" --config "$dir/config/ladu.toml" -q ingest
    "$python" benches/measure.py duckdb "$rows" -- "$python" benches/duckdb_ingest.py "$csv" "$dir/duckdb" "$(cat "$dir/ladu.key")"
    "$python" benches/measure.py polars "$rows" -- "$python" benches/polars_ingest.py "$csv" "$dir/polars"
  done
done | "$python" benches/measure.py --report
