#!/usr/bin/env bash
# `ladu serve` bench: the SQL bench's queries through the wire against `ladu sql`, concurrent
# clients (1, 8, 32) mixing those queries with small lookups, and a large result streamed to psycopg.
#
# usage: bash benches/serve_e2e.sh [INVOICE_ROWS]        (default 1000000; population 1M people)
#        LADU_BENCH_SECONDS=30 bash benches/serve_e2e.sh (seconds per concurrency level; default 20)
#        LADU_BENCH_REPEAT=5 bash benches/serve_e2e.sh   (rounds of the one-query comparison; medians)
# One release server with sql.memory_limit = 2GiB, on loopback, without TLS. Like with like:
# `ladu sql` is a process that opens a session per run, so its `SELECT 1` is timed too, and
# the query's own time is the difference; over the wire, connecting is timed apart from the query.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${1:-1000000}
people=1000000
seconds=${LADU_BENCH_SECONDS:-20}
rounds=${LADU_BENCH_REPEAT:-5}
work=${LADU_BENCH_DIR:-$root/target/bench-serve}/$rows
python=$(bash tests/python-env.sh bench)
cargo build --release --quiet
bin=$root/target/release/ladu
. benches/workspace.sh
bench_workspace "$work" "$bin"
cat >> "$work/config/ladu.toml" <<TOML
[sql]
memory_limit = "2GiB"
[serve]
max_connections = 40
service_user = "$(id -un)"
TOML
if [ ! -d "$work/warehouse" ]; then
  "$bin" sample-data --out "$work/inbox" --rows "$rows" --only treatment_invoices --invalid 0 >/dev/null
  "$bin" sample-data --out "$work/inbox" --rows "$people" --only population --invalid 0 >/dev/null
  "$bin" --config "$work/config/ladu.toml" -q ingest >/dev/null
  rm -rf "$work/inbox"
fi
password="bench password, not a secret"
rm -f "$work/config/users.toml"
echo "$password" | "$bin" --config "$work/config/ladu.toml" -q user add bench --role analyst --password-file - 2>/dev/null
mkdir -p "$work/queries"
split_bench_queries "$python" "$work/queries"
log=$work/serve.log
"$bin" --config "$work/config/ladu.toml" -q serve --listen 127.0.0.1:0 2> "$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 600); do grep -q "listening on" "$log" && break; sleep 0.1; done
port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$log" | cut -d: -f2)

echo "== each query $rounds times: through the wire (connect, then query) and ladu sql (a process each)"
timings=$work/timings.jsonl
: > "$timings"
for _ in $(seq "$rounds"); do
  "$python" benches/measure.py "ladu-sql:start" "$rows" -- "$bin" --config "$work/config/ladu.toml" -q sql \
    -c "SELECT 1" --format csv --output /dev/null | tee -a "$timings"
  for q in $(ls "$work/queries" | sort -V); do
    "$python" benches/measure.py "ladu-sql:${q%.sql}" "$rows" -- "$bin" --config "$work/config/ladu.toml" -q sql \
      --format csv --output /dev/null -f "$work/queries/$q" | tee -a "$timings"
  done
done
"$python" benches/serve_load.py "$port" "$server" bench "$password" queries "$work/queries" "$rounds" | tee -a "$timings"
"$python" benches/serve_load.py compare < "$timings"

# Before the load, so that the server's resident memory is what the streams themselves need.
echo "== a large result streamed to psycopg (single-row mode), then ten times as large"
"$python" benches/serve_load.py "$port" "$server" bench "$password" stream \
  "SELECT record_id, amount, care_type FROM treatment_invoices_history"
"$python" benches/serve_load.py "$port" "$server" bench "$password" stream \
  "SELECT record_id, amount, care_type, k FROM treatment_invoices_history, (VALUES (1), (2), (3), (4), (5), (6), (7), (8), (9), (10)) AS t(k)"

for clients in 1 8 32; do
  echo "== $clients client(s) for ${seconds}s: bench queries and lookups, 1 in 5 a bench query"
  "$python" benches/serve_load.py "$port" "$server" bench "$password" load "$clients" "$seconds" "$work/queries"
done

grep VmHWM "/proc/$server/status"
