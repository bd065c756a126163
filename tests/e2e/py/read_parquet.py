"""Reads one Parquet file with pyarrow and prints its row count and column types as JSON.

usage: read_parquet.py FILE
"""
import json
import sys

import pyarrow.parquet as pq

t = pq.read_table(sys.argv[1])
print(json.dumps({"rows": t.num_rows, "columns": {f.name: str(f.type) for f in t.schema}}))
