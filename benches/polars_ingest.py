"""Polars with no pseudonymisation at all, as a calibration for benches/ingest_e2e.sh.

usage: polars_ingest.py CSV OUTDIR
Reads the invoices CSV as strings (streaming), parses dates and amounts, and writes
Hive-partitioned (year, month) zstd Parquet. It does no hashing, no validation and no
line accounting, so it bounds what a Polars-based ingest can reach on this machine.
"""
import sys

import polars as pl

csv, out = sys.argv[1:3]
date = lambda c: pl.col(c).str.to_date("%Y-%m-%d")
(
    pl.scan_csv(csv, separator=";", infer_schema=False)
    .with_columns(
        date("start_date"),
        date("end_date"),
        date("submitted_date"),
        pl.col("amount").str.replace(",", ".").cast(pl.Decimal(15, 2)),
    )
    .with_columns(year=pl.col("start_date").dt.year(), month=pl.col("start_date").dt.month())
    .sink_parquet(pl.PartitionBy(out, key=["year", "month"]), compression="zstd", mkdir=True)
)
