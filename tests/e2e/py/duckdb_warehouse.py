"""ladu's warehouse as DuckDB tables with ladu's meaning, read from the committed Parquet files only.

`<table>_history` is every file of the newest manifest (Hive partition columns
as INTEGER); `<table>` the newest version of each record: latest extract date,
then sequence, commit and line, as DESIGN.md defines it.
"""
import json
import pathlib

import duckdb


def connect(root, threads=None, plain=False):
    """plain: `<table>` is every committed row, skipping the newest-version step (right only
    while no record has a second version; the SQL bench's strongest DuckDB baseline)."""
    root = pathlib.Path(root)
    manifest = max((root / "_ladu" / "manifest").glob("*.json"))
    tables = json.loads(manifest.read_text())["tables"]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for name, t in tables.items():
        files = [str(root / f["path"]) for f in t["files"]]
        parts = ", ".join(f"CAST({c} AS INTEGER) AS {c}" for c in t["partition_columns"])
        replace = f" REPLACE ({parts})" if parts else ""
        con.execute(
            f"CREATE VIEW {name}_history AS SELECT *{replace} FROM read_parquet({files!r}, hive_partitioning = true)")
        if plain:
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM {name}_history")
            continue
        con.execute(f"""CREATE VIEW {name} AS SELECT * EXCLUDE (__rank) FROM (
            SELECT *, row_number() OVER (PARTITION BY record_id
                ORDER BY _extract_date DESC, _extract_seq DESC, _commit DESC, _line DESC) AS __rank
            FROM {name}_history) WHERE __rank = 1""")
    return con
