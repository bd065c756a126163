#!/usr/bin/env bash
# Release and subject-access bench, on the SQL bench's warehouse (benches/sql_e2e.sh builds it).
#
# usage: bash benches/release_e2e.sh [INVOICE_ROWS]       (default 10000000)
#        LADU_BENCH_REPEAT=3 bash benches/release_e2e.sh  (rounds; medians)
# Times, each as its own process with its peak memory, in the same run:
#   sql-parquet  the release query through `ladu sql --format parquet` (no release pseudonyms, no checks)
#   release      the same query through `ladu release`: release pseudonyms beneath the query, the
#                Parquet read back for the CSV, the risk measure and ladu's record of the pseudonyms
#   subject      `ladu subject`: every table and history searched for one person, and every release
#   report       `ladu report processing`
# rows/s counts the invoices released (for subject and report: the invoices searched or counted).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${1:-10000000}
work=${LADU_BENCH_DIR:-$root/target/bench-sql}/$rows
[ -d "$work/warehouse" ] || { echo "run benches/sql_e2e.sh $rows first: it builds the warehouse" >&2; exit 2; }
python=$(bash tests/python-env.sh bench)
cargo build --release --quiet
bin=$root/target/release/ladu
. benches/workspace.sh
bench_workspace "$work" "$bin"
config="$work/config/ladu.toml"
out=$work/release-out
query=$out.sql
cat > "$query" <<'SQL'
-- every invoice with its patient's sex and birth year
select i.person_id, i.record_id, i.care_type, i.main_diagnosis, i.amount, i.start_date, p.sex, p.birth_year
from treatment_invoices i join population p on p.person_id = i.person_id
SQL
code=$out.code
echo 38001010009 > "$code"
for _ in $(seq "${LADU_BENCH_REPEAT:-1}"); do
  rm -rf "$out" "$out.parquet"
  "$python" benches/measure.py sql-parquet "$rows" -- "$bin" --config "$config" -q sql --format parquet \
    --output "$out.parquet" -f "$query"
  "$python" benches/measure.py release "$rows" -- "$bin" --config "$config" -q release --recipient tai \
    --query "$query" --out "$out" --accept-risk "bench"
  "$python" benches/measure.py subject "$rows" -- "$bin" --config "$config" -q subject --isikukood-file "$code"
  "$python" benches/measure.py report "$rows" -- "$bin" --config "$config" -q report processing
done | "$python" benches/measure.py --report
rm -rf "$out" "$out.parquet"
