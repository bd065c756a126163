"""Runs one query of benches/sql_queries.sql in DuckDB over ladu's warehouse (the SQL bench's reference).

usage: duckdb_sql.py WAREHOUSE QUERY_FILE THREADS [plain]
With `plain`, tables are read as plain files, without finding each record's newest version.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "e2e" / "py"))
from duckdb_warehouse import connect  # noqa: E402

con = connect(sys.argv[1], threads=int(sys.argv[3]), plain=sys.argv[4:] == ["plain"])
con.execute(pathlib.Path(sys.argv[2]).read_text()).fetchall()
