#!/usr/bin/env bash
# SQL bench: the analyst queries of benches/sql_queries.sql, in ladu (release) and in DuckDB,
# on the same warehouse built from generated treatment_invoices and population extracts.
#
# usage: bash benches/sql_e2e.sh [INVOICE_ROWS]        (default 10000000; population 1M people)
#        LADU_BENCH_REPEAT=3 bash benches/sql_e2e.sh   (rounds; medians)
# Both read the same committed Parquet files with the same meaning: `<table>` is the newest
# version of each record. DuckDB finds it at query time; ladu keeps, per warehouse version, which rows
# are superseded (the first session after a commit finds them, timed as ladu:first-session). As
# the strongest baseline, `duckdb-plain` reads the files as plain tables, skipping that step (the
# same answers here, where no record has a second version). Both get the machine's cores.
# Prints wall time and peak resident memory of each query in each, and the ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${1:-10000000}
people=1000000
work=${LADU_BENCH_DIR:-$root/target/bench-sql}/$rows
python=$(bash tests/python-env.sh bench)
cargo build --release --quiet
bin=$root/target/release/ladu
. benches/workspace.sh
bench_workspace "$work" "$bin"
mkdir -p "$work/queries"
if [ ! -d "$work/warehouse" ]; then
  # The invoices draw their patients from the same million people the population lists (same seed).
  "$bin" sample-data --out "$work/inbox" --rows "$rows" --only treatment_invoices --invalid 0 >/dev/null
  "$bin" sample-data --out "$work/inbox" --rows "$people" --only population --invalid 0 >/dev/null
  "$bin" --config "$work/config/ladu.toml" -q ingest >/dev/null
  rm -rf "$work/inbox"
fi
# The first session after a commit finds the superseded rows once and keeps the answer (as the nightly run would);
# the kept answer is removed first, so that this is timed on every run.
rm -rf "$work/warehouse/_ladu/superseded"
"$python" benches/measure.py "ladu:first-session" "$rows" -- "$bin" --config "$work/config/ladu.toml" -q sql \
  -c "SELECT 1" --output /dev/null --format csv
threads=$(nproc)
# Split the statements into one file each.
split_bench_queries "$python" "$work/queries"
for _ in $(seq "${LADU_BENCH_REPEAT:-1}"); do
  for q in $(ls "$work/queries" | sort -V); do
    name=${q%.sql}
    "$python" benches/measure.py "ladu:$name" "$rows" -- "$bin" --config "$work/config/ladu.toml" -q sql \
      --format csv --output /dev/null -f "$work/queries/$q"
    "$python" benches/measure.py "duckdb:$name" "$rows" -- "$python" benches/duckdb_sql.py "$work/warehouse" \
      "$work/queries/$q" "$threads"
    "$python" benches/measure.py "duckdb-plain:$name" "$rows" -- "$python" benches/duckdb_sql.py "$work/warehouse" \
      "$work/queries/$q" "$threads" plain
  done
done | "$python" benches/measure.py --report
