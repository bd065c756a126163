"""Clients for the `ladu serve` bench (benches/serve_e2e.sh): psycopg 3 against a running server.

usage: serve_load.py PORT PID USER PASSWORD queries QUERY_DIR ROUNDS  each query ROUNDS times, timed after connecting
       serve_load.py PORT PID USER PASSWORD load CLIENTS SECONDS QUERY_DIR
       serve_load.py PORT PID USER PASSWORD stream SQL
       serve_load.py compare                  reads measure.py's `ladu-sql:*` lines and this script's
                                              `queries` lines on stdin; prints medians and ratios
PID is the server's: its resident memory is sampled while the clients run. Prints JSON lines.
"""
import json
import pathlib
import random
import statistics
import sys
import threading
import time

import psycopg


class Memory(threading.Thread):
    """Samples the server's resident memory every 50 ms; `peak_mib` is the largest seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self):
        while self.running:
            for line in open(f"/proc/{self.pid}/status"):
                if line.startswith("VmRSS:"):
                    self.peak = max(self.peak, int(line.split()[1]))
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.join()
        return self.peak / 1024


def connect(port, user, password):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="ladu",
                           autocommit=True)


def queries(query_dir):
    return sorted(((p.stem, p.read_text()) for p in pathlib.Path(query_dir).glob("q*.sql")),
                  key=lambda q: int(q[0][1:]))


def timed_queries(port, pid, user, password, query_dir, rounds):
    # `start` is SELECT 1: what every statement pays over the wire (planning, two audit entries, a round trip).
    for name, sql in ([("start", "SELECT 1")] + queries(query_dir)) * rounds:
        memory = Memory(pid)
        memory.start()
        start = time.perf_counter()
        conn = connect(port, user, password)
        connected = time.perf_counter()
        rows = len(conn.execute(sql).fetchall())
        done = time.perf_counter()
        conn.close()
        print(json.dumps({"query": name, "connect_s": connected - start, "query_s": done - connected,
                          "rows": rows, "server_peak_mib": memory.stop()}), flush=True)


def load(port, pid, user, password, clients, seconds, query_dir):
    """`clients` connections, each running the bench queries and small lookups in turn for `seconds`."""
    work = [sql for _, sql in queries(query_dir)]
    with connect(port, user, password) as c:
        ids = [r[0] for r in c.execute("SELECT record_id FROM treatment_invoices LIMIT 1000").fetchall()]
    lookup = "SELECT record_id, amount, care_type, start_date FROM treatment_invoices WHERE record_id = %s"
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(n):
        rnd = random.Random(n)
        try:
            conn = connect(port, user, password)
        except psycopg.Error as e:
            with lock:
                errors.append(str(e))
            return
        i = n
        while time.perf_counter() < deadline:
            # Four small lookups for each bench query, as analysts' sessions mix them.
            if i % 5 == 0:
                sql, params = work[(i // 5) % len(work)], None
            else:
                sql, params = lookup, (rnd.choice(ids),)
            start = time.perf_counter()
            try:
                conn.execute(sql, params).fetchall()
                with lock:
                    latencies.append(time.perf_counter() - start)
            except psycopg.Error as e:
                with lock:
                    errors.append(str(e))
            i += 1
        conn.close()

    memory = Memory(pid)
    memory.start()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
    print(json.dumps({"clients": clients, "statements": len(latencies), "per_s": len(latencies) / elapsed,
                      "p50_ms": pick(0.5) * 1000, "p99_ms": pick(0.99) * 1000, "errors": len(errors),
                      "first_error": errors[0] if errors else None, "server_peak_mib": memory.stop()}), flush=True)


def stream(port, pid, user, password, sql):
    """A large result streamed row by row (single-row mode: the client holds one row at a time)."""
    before = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")) / 1024
    memory = Memory(pid)
    memory.start()
    start = time.perf_counter()
    rows = 0
    with connect(port, user, password) as conn:
        for _ in conn.cursor().stream(sql):
            rows += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed,
                      "server_rss_before_mib": before, "server_peak_mib": memory.stop()}), flush=True)


def compare():
    """Per query: the median over the wire (query only) against `ladu sql`'s median less its `SELECT 1`."""
    wire, process = {}, {}
    for line in sys.stdin:
        r = json.loads(line)
        if "query" in r:
            wire.setdefault(r["query"], []).append(r["query_s"])
        elif r.get("name", "").startswith("ladu-sql:"):
            process.setdefault(r["name"].split(":", 1)[1], []).append(r["seconds"])
    start = statistics.median(process.pop("start"))
    wire_start = statistics.median(wire.pop("start"))
    print(f"SELECT 1: ladu sql {start * 1000:.1f} ms (a process and a session), "
          f"over the wire {wire_start * 1000:.1f} ms (after connecting); medians")
    print("query   ladu sql - SELECT 1   wire   wire - SELECT 1   wire / ladu sql   both less SELECT 1")
    totals = [0, 0, 0]
    for q in sorted(wire, key=lambda q: int(q[1:])):
        p, w = statistics.median(process[q]) - start, statistics.median(wire[q])
        totals = [totals[0] + p, totals[1] + w, totals[2] + w - wire_start]
        print(f"{q:5}   {p * 1000:15.1f} ms   {w * 1000:7.1f} ms   {(w - wire_start) * 1000:10.1f} ms"
              f"   {w / p:14.2f}x   {(w - wire_start) / p:17.2f}x")
    p, w, wq = totals
    print(f"all     {p * 1000:15.1f} ms   {w * 1000:7.1f} ms   {wq * 1000:10.1f} ms   {w / p:14.2f}x   {wq / p:17.2f}x")


def main():
    if sys.argv[1:] == ["compare"]:
        return compare()
    port, pid, user, password, what = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    args = sys.argv[6:]
    if what == "queries":
        timed_queries(port, pid, user, password, args[0], int(args[1]))
    elif what == "load":
        load(port, pid, user, password, int(args[0]), float(args[1]), args[2])
    elif what == "stream":
        stream(port, pid, user, password, args[0])
    else:
        raise SystemExit(f"unknown: {what}")


if __name__ == "__main__":
    main()
