"""A release folder read by pyarrow and Python's csv: do its files agree with each other and with release.json?

usage: release_files.py DIR
Prints the release pseudonyms of its `person_id` column, one per line.
"""
import csv
import hashlib
import json
import pathlib
import sys

import pyarrow.parquet as pq

d = pathlib.Path(sys.argv[1])
meta = json.loads((d / "release.json").read_text())
for f in meta["files"]:
    data = (d / f["name"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == f["sha256"], f["name"]
    assert len(data) == f["bytes"], f["name"]
table = pq.read_table(d / "data.parquet")
assert table.num_rows == meta["rows"], (table.num_rows, meta["rows"])
assert table.column_names == [c["name"] for c in meta["columns"]]
rows = list(csv.DictReader(open(d / "data.csv", newline="")))
assert len(rows) == meta["rows"]
from_parquet = [str(v) if v is not None else "" for v in table.column("person_id").to_pylist()]
assert [r["person_id"] for r in rows] == from_parquet
assert "key" not in json.dumps(meta).replace("key_fingerprint", "")
print("\n".join(sorted(set(v for v in from_parquet if v))))
