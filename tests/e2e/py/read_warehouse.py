"""Reads ladu's warehouse with pyarrow, independently of ladu, and prints a JSON summary.

usage: read_warehouse.py WAREHOUSE
For each table folder: row count, column names and Arrow types (Hive partition
columns included), the partition values seen, and every row as a dict
(timestamps as ISO text), so tests can compare contents.
"""
import json
import pathlib
import sys

import pyarrow.dataset as ds

root = pathlib.Path(sys.argv[1])
out = {}
for table in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
    dataset = ds.dataset(table, format="parquet", partitioning="hive")
    t = dataset.to_table()
    rows = t.to_pylist()
    parts = sorted({tuple((k, r[k]) for k in ("year", "month") if k in r) for r in rows})
    out[table.name] = {
        "rows": t.num_rows,
        "files": len(dataset.files),
        "columns": {f.name: str(f.type) for f in t.schema},
        "partitions": [dict(p) for p in parts],
        "data": rows,
    }
print(json.dumps(out, default=str, ensure_ascii=False))
