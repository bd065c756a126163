"""A digest of a warehouse's committed contents (every table, every row, every column), read with pyarrow.

usage: digest.py WAREHOUSE -> JSON {table folder: {"rows": N, "sha256": ...}}
Only the files the newest manifest lists are read: what ladu's readers see, whatever a killed
writer left beside them for the next one to tidy. Rows are sorted, so the digest depends on the
data, not on file or row-group order.
"""
import hashlib
import json
import pathlib
import sys

import pyarrow.dataset as ds

root = pathlib.Path(sys.argv[1])
manifests = sorted((root / "_ladu" / "manifest").glob("*.json"))
files = {}
if manifests:
    for table in json.loads(manifests[-1].read_text())["tables"].values():
        for f in table["files"]:
            parts = pathlib.PurePosixPath(f["path"]).parts
            # Statistics live one level down, one table per folder: stats/<name>/.
            folder = "/".join(parts[:2]) if parts[0] == "stats" else parts[0]
            files.setdefault(folder, []).append(str(root / f["path"]))
out = {}
for folder in sorted(files):
    t = ds.dataset(files[folder], format="parquet", partitioning="hive",
                   partition_base_dir=str(root / folder)).to_table()
    cols = sorted(t.column_names)
    rows = sorted(json.dumps([r[c] for c in cols], default=str) for r in t.to_pylist())
    h = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    out[folder] = {"rows": t.num_rows, "sha256": h}
print(json.dumps(out, indent=1, sort_keys=True))
