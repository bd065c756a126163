"""A digest of a warehouse's contents (every table, every row, every column), read with pyarrow.

usage: digest.py WAREHOUSE -> JSON {table folder: {"rows": N, "sha256": ...}}
Rows are sorted, so the digest depends on the data, not on file or row-group order.
"""
import hashlib
import json
import pathlib
import sys

import pyarrow.dataset as ds

root = pathlib.Path(sys.argv[1])
out = {}
tables = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
# Statistics live one level down, one table per folder: stats/<name>/.
tables = [s for t in tables for s in (sorted(t.iterdir()) if t.name == "stats" else [t])]
for table in tables:
    t = ds.dataset(table, format="parquet", partitioning="hive").to_table()
    cols = sorted(t.column_names)
    rows = sorted(json.dumps([r[c] for c in cols], default=str) for r in t.to_pylist())
    h = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    out[str(table.relative_to(root))] = {"rows": t.num_rows, "sha256": h}
print(json.dumps(out, indent=1, sort_keys=True))
