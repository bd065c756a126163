"""Runs analyst queries in DuckDB over ladu's committed Parquet files and compares with ladu's CSV results.

usage: duckdb_compare.py WAREHOUSE DIR N
DIR holds q0.sql … q{N-1}.sql and ladu's results q0.csv …; DuckDB gets the
tables ladu shows (duckdb_warehouse.py). Prints {"mismatches": [...]} as JSON.
"""
import csv
import json
import math
import pathlib
import sys

from duckdb_warehouse import connect

root, folder, n = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
con = connect(root)


def norm(v):
    """Both engines' values as comparable text: numbers to 6 decimals, nulls empty."""
    if v is None or v == "":
        return ""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v).lower() if isinstance(v, bool) else str(v)
    if math.isnan(f):
        return "nan"
    return f"{round(f, 6):.6f}"


mismatches = []
for i in range(n):
    sql = (folder / f"q{i}.sql").read_text()
    duck = [[norm(v) for v in row] for row in con.execute(sql).fetchall()]
    with open(folder / f"q{i}.csv", newline="") as f:
        ours = [[norm(v) for v in row] for row in list(csv.reader(f))[1:]]
    if sorted(duck) != sorted(ours):
        mismatches.append({"query": sql, "duckdb": duck[:10], "ladu": ours[:10], "rows": [len(duck), len(ours)]})
print(json.dumps({"mismatches": mismatches}))
