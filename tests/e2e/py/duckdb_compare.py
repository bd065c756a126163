"""Runs analyst queries in DuckDB over ladu's committed Parquet files and compares with ladu's CSV results.

usage: duckdb_compare.py WAREHOUSE DIR N
DIR holds q0.sql … q{N-1}.sql and ladu's results q0.csv …. DuckDB gets the same
tables ladu shows: `<table>_history` is every committed file of the newest
manifest, `<table>` the newest version of each record (latest extract date,
then sequence, commit and line). Prints {"mismatches": [...]} as JSON.
"""
import csv
import json
import math
import pathlib
import sys

import duckdb

root, folder, n = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
manifest = max((root / "_ladu" / "manifest").glob("*.json"))
tables = json.loads(manifest.read_text())["tables"]

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
for name, t in tables.items():
    files = [str(root / f["path"]) for f in t["files"]]
    parts = ", ".join(f"CAST({c} AS INTEGER) AS {c}" for c in t["partition_columns"])
    replace = f" REPLACE ({parts})" if parts else ""
    con.execute(f"CREATE VIEW {name}_history AS SELECT *{replace} FROM read_parquet({files!r}, hive_partitioning = true)")
    con.execute(f"""CREATE VIEW {name} AS SELECT * EXCLUDE (__rank) FROM (
        SELECT *, row_number() OVER (PARTITION BY record_id
            ORDER BY _extract_date DESC, _extract_seq DESC, _commit DESC, _line DESC) AS __rank
        FROM {name}_history) WHERE __rank = 1""")


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
