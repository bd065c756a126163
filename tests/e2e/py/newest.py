"""The newest version of each record of a table, computed with DuckDB from ladu's Parquet.

usage: newest.py TABLE_DIR -> {"versions": N, "current": [row, ...]}
Newest = latest extract date, then sequence, then commit, then line (DESIGN.md: newest delivery wins).
"""
import json
import sys

import duckdb

path = sys.argv[1] + "/**/*.parquet"
con = duckdb.connect()
versions = con.execute(f"select count(*) from read_parquet('{path}', hive_partitioning = true)").fetchone()[0]
rows = con.execute(f"""
    with versions as (
        select *, row_number() over (
            partition by record_id
            order by _extract_date desc, _extract_seq desc, _commit desc, _line desc) as rank
        from read_parquet('{path}', hive_partitioning = true)
    )
    select record_id, person_id, cast(amount as varchar) as amount from versions where rank = 1
""").fetchall()
print(json.dumps({"versions": versions, "current": [dict(zip(["record_id", "person_id", "amount"], r)) for r in rows]}))
