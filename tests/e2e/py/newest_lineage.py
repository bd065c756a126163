"""The newest version of each record of a table, by DuckDB's window over all of its files (the table's history).

usage: newest_lineage.py TABLE_DIR -> JSON [[record_id, _commit, _extract_date, _extract_seq, _line], ...], sorted
Newest = latest extract date, then sequence, then commit, then line (DESIGN.md: newest delivery wins).
"""
import json
import sys

import duckdb

path = sys.argv[1] + "/**/*.parquet"
rows = duckdb.connect().execute(f"""
    select record_id, _commit, cast(_extract_date as varchar), _extract_seq, _line from (
        select *, row_number() over (
            partition by record_id
            order by _extract_date desc, _extract_seq desc, _commit desc, _line desc) as rank
        from read_parquet('{path}', hive_partitioning = true))
    where rank = 1
""").fetchall()
print(json.dumps(sorted([[str(v) for v in r] for r in rows])))
