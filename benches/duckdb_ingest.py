"""DuckDB doing ladu's ingest job, as the comparison for benches/ingest_e2e.sh.

usage: duckdb_ingest.py CSV OUTDIR KEYHEX
Reads the invoices CSV, replaces the personal code and the record key with a keyed
SHA-256 (DuckDB has no HMAC: sha256(key || kind || value) stands in), parses dates
and amounts, and writes Hive-partitioned (year, month) zstd Parquet.
"""
import sys

import duckdb

csv, out, key = sys.argv[1:4]
con = duckdb.connect()
con.execute(f"""
copy (
    select
        sha256('{key}' || 'invoice_id:' || invoice_id)[1:32] as record_id,
        sha256('{key}' || 'isikukood:' || trim(isikukood))[1:32] as person_id,
        provider_regcode, provider_name, main_diagnosis, care_type,
        cast(replace(amount, ',', '.') as decimal(15, 2)) as amount,
        cast(start_date as date) as start_date,
        cast(end_date as date) as end_date,
        cast(submitted_date as date) as submitted_date,
        year(cast(start_date as date)) as year,
        month(cast(start_date as date)) as month
    from read_csv('{csv}', delim = ';', header = true, all_varchar = true)
) to '{out}' (format parquet, compression zstd, partition_by (year, month))
""")
