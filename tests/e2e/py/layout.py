"""Checks the Parquet layout of one warehouse table against DESIGN.md, with pyarrow.

usage: layout.py TABLE_DIR MAX_ROW_GROUP_ROWS SORT_COLUMN
Every file: zstd on every column, column and offset indexes (the page index),
row groups of at most MAX rows, each sorted by SORT_COLUMN and declaring it,
no Hive partition column inside the file, and the per-delivery columns with
one value and distinct line numbers (a file holds one delivery). Prints a
JSON summary.
"""
import json
import pathlib
import sys

import pyarrow.parquet as pq

table, limit, sort_col = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
files = sorted(table.rglob("*.parquet"))
assert files, f"no Parquet files under {table}"
groups = 0
for f in files:
    pf = pq.ParquetFile(f)
    md = pf.metadata
    names = md.schema.names
    assert "year" not in names and "month" not in names, f"{f}: partition column inside the file"
    idx = names.index(sort_col)
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        groups += 1
        assert rg.num_rows <= limit, f"{f}: row group {g} has {rg.num_rows} rows"
        assert [s.column_index for s in rg.sorting_columns] == [idx], f"{f}: sorting_columns {rg.sorting_columns}"
        for c in range(rg.num_columns):
            col = rg.column(c)
            assert col.compression == "ZSTD", f"{f}: {col.path_in_schema} is {col.compression}"
            assert col.has_column_index and col.has_offset_index, f"{f}: {col.path_in_schema} has no page index"
        values = pf.read_row_group(g, columns=[sort_col]).column(0).to_pylist()
        assert values == sorted(values), f"{f}: row group {g} is not sorted by {sort_col}"
    meta = pf.read(columns=["_extract_date", "_extract_seq", "_commit"])
    for name in meta.column_names:
        distinct = set(meta.column(name).to_pylist())
        assert len(distinct) == 1 and None not in distinct, f"{f}: {name} holds {sorted(map(str, distinct))[:5]}"
    lines = pf.read(columns=["_line"]).column(0).to_pylist()
    assert len(set(lines)) == len(lines) and min(lines) >= 2, f"{f}: line numbers repeat or include the header"
print(json.dumps({"files": len(files), "row_groups": groups}))
