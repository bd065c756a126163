#!/usr/bin/env bash
# Cluster bench: the SQL bench's ten queries (benches/sql_queries.sql) through `ladu sql` with a
# scheduler and two executors on this machine (`[cluster]`), against the same `ladu sql` without one,
# on the same warehouse (release build), at each size given: 1M, 10M and 30M invoice rows by default.
#
# usage: bash benches/cluster_e2e.sh [INVOICE_ROWS...]
#        LADU_BENCH_REPEAT=3 bash benches/cluster_e2e.sh 10000000   (rounds; medians)
# On one machine the cluster cannot be faster: this measures its overhead (planning on the
# scheduler, stages, shuffle files, results over Flight). Each side's `SELECT 1` (process and
# session; for the cluster, a job) is timed in every round and subtracted. The executors get one
# slot each (two cores in all, as local queries get) and a pool of `cluster.executor_memory_limit`;
# their peak resident memory (VmHWM) is read before they stop. In the report, `ladu` is the
# cluster and `local` this host, so its time ratio is the cluster's overhead (cluster / local);
# the cluster's memory there is the client process's alone, the executors' is printed after.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=$(bash tests/python-env.sh bench)
cargo build --release --quiet
bin=$root/target/release/ladu
. benches/workspace.sh
limit=${LADU_BENCH_EXECUTOR_MEMORY:-4GiB}
free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000 30000000)
for rows in "${sizes[@]}"; do
  work=${LADU_BENCH_DIR:-$root/target/bench-cluster}/$rows
  bench_workspace "$work" "$bin"
  bench_sql_warehouse "$work" "$bin" "$rows" 1000000
  sched=$(free_port)
  cp "$work/config/ladu.toml" "$work/config/cluster.toml"
  printf '\n[cluster]\nscheduler = "df://127.0.0.1:%s"\nexecutor_memory_limit = "%s"\n' "$sched" "$limit" >> "$work/config/cluster.toml"
  "$bin" --config "$work/config/cluster.toml" -q cluster scheduler --listen "127.0.0.1:$sched" 2>"$work/scheduler.log" &
  pids=($!)
  wait_port "$sched"
  for i in 1 2; do
    port=$(free_port)
    "$bin" --config "$work/config/cluster.toml" -q cluster executor --listen "127.0.0.1:$port" --slots 1 \
      --work-dir "$work/executor$i" 2>"$work/executor$i.log" &
    pids+=($!)
    wait_port "$port"
  done
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
  rm -rf "$work/queries"
  split_bench_queries "$python" "$work/queries"
  echo "SELECT 1" > "$work/queries/start.sql"
  for _ in $(seq "${LADU_BENCH_REPEAT:-1}"); do
    for q in start.sql $(ls "$work/queries" | grep -v '^start' | sort -V); do
      name=${q%.sql}
      for side in local ladu; do
        config=$work/config/ladu.toml
        [ "$side" = ladu ] && config=$work/config/cluster.toml
        "$python" benches/measure.py "$side:$name" "$rows" -- "$bin" --config "$config" -q sql \
          --format csv --output /dev/null -f "$work/queries/$q"
      done
    done
  done | "$python" benches/measure.py --report
  for i in 1 2; do
    echo "executor $i: peak $(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/${pids[$i]}/status") (pool $limit)"
  done
  kill -TERM "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  trap - EXIT
done
