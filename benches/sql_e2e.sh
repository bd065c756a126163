#!/usr/bin/env bash
# SQL bench: the analyst queries of benches/sql_queries.sql (q1–q10) and the SQL suite of
# benches/sql_suite.sql (s1–s34), in ladu (release) and in DuckDB, on the same warehouse built from
# generated extracts: invoices, the population they draw from, prescriptions, sick leave, ambulance calls.
#
# usage: bash benches/sql_e2e.sh [INVOICE_ROWS]        (default 10000000; population 1M people)
#        LADU_BENCH_REPEAT=3 bash benches/sql_e2e.sh   (rounds; medians)
#        LADU_BENCH_QUERIES=suite bash benches/sql_e2e.sh  (bench, suite or all; default all)
#        LADU_BENCH_ONLY="q6 s23" bash benches/sql_e2e.sh  (only these of them)
# Both read the same committed Parquet files with the same meaning: `<table>` is the newest
# version of each record. DuckDB finds it at query time; ladu's commits record which rows they
# supersede, and sessions read that record (the first session, timed as ladu:first-session). As
# the strongest baseline, `duckdb-plain` reads the files as plain tables, skipping that step (the
# same answers here, where no record has a second version). Both get the machine's cores.
# Each side's start (a `SELECT 1`: ladu's process and session; DuckDB's Python, import and views)
# is timed before every query and its median subtracted in the report, which gives the geometric mean and the worst ratio.
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
bench_sql_warehouse "$work" "$bin" "$rows" "$people"
# The first session reads what the commits recorded (a warehouse built before they did is upgraded by its next commit).
"$python" benches/measure.py "ladu:first-session" "$rows" -- "$bin" --config "$work/config/ladu.toml" -q sql \
  -c "SELECT 1" --output /dev/null --format csv
threads=$(nproc)
# Split the statements into one file each; `start` is each side's SELECT 1.
rm -f "$work/queries/"*.sql
case ${LADU_BENCH_QUERIES:-all} in
  bench) split_bench_queries "$python" "$work/queries" ;;
  suite) split_bench_queries "$python" "$work/queries" benches/sql_suite.sql ;;
  *) split_bench_queries "$python" "$work/queries"; split_bench_queries "$python" "$work/queries" benches/sql_suite.sql ;;
esac
echo "SELECT 1" > "$work/queries/start.sql"
# Each query follows a `start` of its own, so that the start subtracted is measured all through the
# round (a start measured once, at the round's top after the last round's largest queries, came out
# 10-20 ms slower for DuckDB than its quickest queries).
for _ in $(seq "${LADU_BENCH_REPEAT:-1}"); do
  queries=$(ls "$work/queries" | grep -v '^start' | sort -V)
  if [ -n "${LADU_BENCH_ONLY:-}" ]; then
    queries=$(for q in $queries; do if [[ " $LADU_BENCH_ONLY " == *" ${q%.sql} "* ]]; then echo "$q"; fi; done)
  fi
  for q in $(echo "$queries" | sed 's/^/start.sql /'); do
    name=${q%.sql}
    "$python" benches/measure.py "ladu:$name" "$rows" -- "$bin" --config "$work/config/ladu.toml" -q sql \
      --format csv --output /dev/null -f "$work/queries/$q"
    "$python" benches/measure.py "duckdb:$name" "$rows" -- "$python" benches/duckdb_sql.py "$work/warehouse" \
      "$work/queries/$q" "$threads"
    "$python" benches/measure.py "duckdb-plain:$name" "$rows" -- "$python" benches/duckdb_sql.py "$work/warehouse" \
      "$work/queries/$q" "$threads" plain
  done
done | "$python" benches/measure.py --report
