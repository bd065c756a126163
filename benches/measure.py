"""Runs a command, measuring wall time and peak resident memory of it and its children.

usage: measure.py NAME ROWS -- COMMAND...   prints one JSON line
       measure.py --report                  reads those lines on stdin, prints every run, then the
                                            median of repeated runs and the ratios of the medians
NAME is a tool (ladu, duckdb, polars), or TOOL:QUERY for the SQL bench, whose report
compares ladu with DuckDB query by query.
"""
import json
import math
import resource
import statistics
import subprocess
import sys
import time

def report_queries(runs):
    """Per query: median seconds and peak of ladu and the others, and ladu's ratios.

    Where a tool's `start` query (SELECT 1: the process, the session, DuckDB's import and views)
    was run, its median is subtracted from that tool's times, so that the ratios compare the
    queries themselves; the geometric mean and the worst ratio close each comparison.
    """
    by = {}
    for r in runs:
        tool, query = r["name"].split(":", 1)
        by.setdefault(query, {}).setdefault(tool, []).append(r)
        print(f"{tool:12} {query:12} {r['seconds']:8.2f} s  peak {r['peak_mib']:7.0f} MiB")
    print(f"median of each ({runs[0]['rows']} rows):")
    starts = {t: statistics.median(r["seconds"] for r in rs) for t, rs in by.pop("start", {}).items()}
    for tool, s in sorted(starts.items()):
        print(f"start of {tool} (SELECT 1, subtracted below): {s:.3f} s")
    for other in sorted({t for ts in by.values() for t in ts} - {"ladu"}):
        print(f"ladu vs {other}:")
        print("query          ladu s   other s  time ratio   ladu MiB  other MiB  memory ratio")
        ratios = []
        for query, tools in by.items():
            med = {t: (statistics.median(r["seconds"] for r in rs) - starts.get(t, 0.0),
                       statistics.median(r["peak_mib"] for r in rs))
                   for t, rs in tools.items()}
            if "ladu" in med and other in med:
                (ls, lm), (ds, dm) = med["ladu"], med[other]
                # A query faster than its tool's start jitter counts as a millisecond.
                ratio = max(ls, 0.001) / max(ds, 0.001)
                ratios.append((ratio, query))
                print(f"{query:12} {ls:8.3f} {ds:9.3f} {ratio:10.2f}x {lm:10.0f} {dm:10.0f} {lm / dm:12.2f}x")
        if ratios:
            geomean = math.exp(sum(math.log(r) for r, _ in ratios) / len(ratios))
            worst = max(ratios)
            print(f"{len(ratios)} queries: geometric mean {geomean:.2f}x, worst {worst[0]:.2f}x ({worst[1]})")


if sys.argv[1] == "--report":
    runs = [json.loads(l) for l in sys.stdin if l.startswith("{")]
    if runs and ":" in runs[0]["name"]:
        report_queries(runs)
        sys.exit(0)
    by = {}
    for r in runs:
        by.setdefault(r["rows"], {}).setdefault(r["name"], []).append(r)
        print(f"{r['name']:8} {r['rows']:>10} rows  {r['seconds']:8.2f} s  {r['rows_per_s']/1e6:6.2f} M rows/s  peak {r['peak_mib']:7.0f} MiB")
    print("median of each:")
    for rows, tools in by.items():
        med = {}
        for name, rs in tools.items():
            med[name] = {"rows_per_s": statistics.median(r["rows_per_s"] for r in rs),
                         "peak_mib": statistics.median(r["peak_mib"] for r in rs)}
            print(f"{name:8} {rows:>10} rows  {med[name]['rows_per_s']/1e6:6.2f} M rows/s  peak {med[name]['peak_mib']:7.0f} MiB  ({len(rs)} runs)")
        for other in ("duckdb", "polars"):
            if "ladu" in med and other in med:
                print(f"{rows:>10} rows: ladu/{other} throughput ratio {med['ladu']['rows_per_s'] / med[other]['rows_per_s']:.2f}x, "
                      f"memory ratio {med['ladu']['peak_mib'] / med[other]['peak_mib']:.2f}x")
    sys.exit(0)

name, rows = sys.argv[1], int(sys.argv[2])
cmd = sys.argv[sys.argv.index("--") + 1:]
start = time.perf_counter()
proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
seconds = time.perf_counter() - start
if proc.returncode not in (0,):
    sys.exit(f"{name} failed with exit code {proc.returncode}")
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"name": name, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "peak_mib": peak_kib / 1024}))
