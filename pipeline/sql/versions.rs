//! Which rows of a table a newer version of their record supersedes: computed once per warehouse version, then kept.
//!
//! `<table>` shows the newest version of each record (DESIGN.md). Finding the
//! superseded rows takes a pass over every record id of the table, too much
//! to repeat in every query; corrections are rare, so the answer is usually
//! "none", and `<table>` is then every committed row at the cost of a plain
//! scan. The answer for warehouse version N is kept in
//! `_ladu/superseded/<N>/<table>.parquet`: one row per superseded row (its
//! `_commit`, `_extract_date`, `_extract_seq`, `_line`), or a null `_line`
//! for a delivery every row of which is superseded (as a weekly full snapshot
//! is by the next one). The first session after a commit computes and writes
//! it (aside, then linked into place); a session that cannot write, such as
//! one on a read-only copy, keeps it in memory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::prelude::SessionContext;
use parquet::errors::ParquetError;

use super::tables::{RECORD_ID, VERSION_RANK, version_rank};
use crate::durable::{Durable, Place};

/// Folder of the kept answers under the warehouse's `_ladu/`.
pub const DIR: &str = "superseded";
const DELIVERY: [&str; 3] = ["_commit", "_extract_date", "_extract_seq"];
const LINE: &str = "_line";

/// A delivery: its commit, extract date (days since 1970) and sequence number.
type DeliveryKey = (i64, i32, i32);

/// The superseded rows of one table.
#[derive(Debug, Default)]
pub struct Superseded {
    /// Deliveries every row of which is superseded.
    pub deliveries: BTreeSet<DeliveryKey>,
    /// Other superseded rows: `_commit`, `_extract_date`, `_extract_seq`, `_line`.
    pub rows: Vec<RecordBatch>,
}

impl Superseded {
    pub fn row_count(&self) -> usize {
        self.rows.iter().map(RecordBatch::num_rows).sum()
    }

    /// `history` without the superseded rows: the newest version of each record.
    pub fn remove_from(&self, history: LogicalPlan) -> DfResult<LogicalPlan> {
        let mut plan = LogicalPlanBuilder::from(history);
        if !self.deliveries.is_empty() {
            let superseded = self
                .deliveries
                .iter()
                .map(|(c, d, s)| {
                    col(DELIVERY[0])
                        .eq(lit(*c))
                        .and(col(DELIVERY[1]).eq(lit(ScalarValue::Date32(Some(*d)))))
                        .and(col(DELIVERY[2]).eq(lit(*s)))
                })
                .reduce(Expr::or)
                .expect("not empty");
            plan = plan.filter(!superseded)?;
        }
        if self.row_count() > 0 {
            let rows = MemTable::try_new(row_schema(), vec![self.rows.clone()])?;
            let rows = LogicalPlanBuilder::scan(
                "superseded",
                datafusion::datasource::provider_as_source(Arc::new(rows)),
                None,
            )?
            .build()?;
            let key: Vec<&str> = DELIVERY.iter().copied().chain([LINE]).collect();
            plan = plan.join(rows, JoinType::LeftAnti, (key.clone(), key), None)?;
        }
        plan.build()
    }
}

fn row_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(DELIVERY[0], DataType::Int64, false),
        Field::new(DELIVERY[1], DataType::Date32, false),
        Field::new(DELIVERY[2], DataType::Int32, false),
        Field::new(LINE, DataType::Int64, true),
    ]))
}

fn file(root: &Path, version: u64, table: &str) -> PathBuf {
    root.join(crate::warehouse::META_DIR).join(DIR).join(format!("{version:010}")).join(format!("{table}.parquet"))
}

/// The superseded rows of `table` at warehouse `version`: kept, or computed from `history` (and kept if possible).
pub async fn load_or_compute(
    ctx: &SessionContext,
    root: &Path,
    version: u64,
    table: &str,
    history: Arc<dyn TableProvider>,
) -> DfResult<Superseded> {
    let path = file(root, version, table);
    match read(&path) {
        Ok(Some(s)) => return Ok(s),
        Ok(None) => {}
        Err(e) => tracing::warn!("ignoring {}: {e}; computing it again", path.display()),
    }
    let started = std::time::Instant::now();
    let s = compute(ctx, history).await?;
    tracing::debug!(
        "{table}: {} superseded rows and {} superseded deliveries, found in {:.2}s",
        s.row_count(),
        s.deliveries.len(),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = write(&path, &s) {
        tracing::debug!("cannot keep {} ({e}); this session keeps it in memory", path.display());
    }
    Ok(s)
}

async fn compute(ctx: &SessionContext, history: Arc<dyn TableProvider>) -> DfResult<Superseded> {
    let h = ctx.read_table(history)?;
    // Records with more than one version: usually none, and this one pass over record ids ends it.
    let repeated = h
        .clone()
        .aggregate(vec![col(RECORD_ID)], vec![count(lit(1)).alias("versions")])?
        .filter(col("versions").gt(lit(1i64)))?
        .select(vec![col(RECORD_ID)])?
        .collect()
        .await?;
    if repeated.iter().all(|b| b.num_rows() == 0) {
        return Ok(Superseded::default());
    }
    let key: Vec<&str> = DELIVERY.iter().copied().chain([LINE]).collect();
    let rows = h
        .clone()
        .join(ctx.read_batches(repeated)?, JoinType::LeftSemi, &[RECORD_ID], &[RECORD_ID], None)?
        .window(vec![version_rank()?])?
        .filter(col(VERSION_RANK).gt(lit(1u64)))?
        .select_columns(&key)?
        .collect()
        .await?;
    // A delivery all of whose rows are superseded is kept as one entry, not row by row.
    let totals =
        h.aggregate(DELIVERY.iter().map(|c| col(*c)).collect(), vec![count(lit(1)).alias("rows")])?.collect().await?;
    let mut superseded_per_delivery = std::collections::HashMap::<DeliveryKey, i64>::new();
    for b in &rows {
        for i in 0..b.num_rows() {
            *superseded_per_delivery.entry(delivery_key(b, i)).or_default() += 1;
        }
    }
    let mut deliveries = BTreeSet::new();
    for b in &totals {
        let n = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let d = delivery_key(b, i);
            if superseded_per_delivery.get(&d) == Some(&n.value(i)) {
                deliveries.insert(d);
            }
        }
    }
    let mut kept = Vec::with_capacity(rows.len());
    for b in rows {
        let keep: arrow::array::BooleanArray =
            (0..b.num_rows()).map(|i| Some(!deliveries.contains(&delivery_key(&b, i)))).collect();
        let b = arrow::compute::filter_record_batch(&b, &keep)?;
        kept.push(RecordBatch::try_new(row_schema(), b.columns().to_vec())?);
    }
    Ok(Superseded { deliveries, rows: kept })
}

/// The delivery of row `i` of a batch whose first columns are `DELIVERY`.
fn delivery_key(b: &RecordBatch, i: usize) -> DeliveryKey {
    (
        b.column(0).as_primitive::<Int64Type>().value(i),
        b.column(1).as_primitive::<Date32Type>().value(i),
        b.column(2).as_primitive::<Int32Type>().value(i),
    )
}

/// The kept answer, if there is one.
fn read(path: &Path) -> Result<Option<Superseded>, ParquetError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?.build()?;
    let mut s = Superseded::default();
    for b in reader {
        let b = RecordBatch::try_new(row_schema(), b?.columns().to_vec())?;
        let lines = b.column(3);
        for i in (0..b.num_rows()).filter(|&i| lines.is_null(i)) {
            s.deliveries.insert(delivery_key(&b, i));
        }
        let is_row = arrow::compute::is_not_null(lines)?;
        s.rows.push(arrow::compute::filter_record_batch(&b, &is_row)?);
    }
    Ok(Some(s))
}

/// Keep the answer: written aside, fsynced, linked into place (a concurrent session may win; both are equal).
fn write(path: &Path, s: &Superseded) -> Result<(), ParquetError> {
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir)?;
    let (c, d, q): (Vec<i64>, Vec<i32>, Vec<i32>) =
        s.deliveries.iter().copied().fold((Vec::new(), Vec::new(), Vec::new()), |(mut c, mut d, mut q), (a, b, e)| {
            c.push(a);
            d.push(b);
            q.push(e);
            (c, d, q)
        });
    let n = c.len();
    let whole = RecordBatch::try_new(
        row_schema(),
        vec![
            Arc::new(arrow::array::Int64Array::from(c)),
            Arc::new(arrow::array::Date32Array::from(d)),
            Arc::new(arrow::array::Int32Array::from(q)),
            Arc::new(arrow::array::Int64Array::new_null(n)),
        ],
    )?;
    let written = Durable::new(Place::New).write(path, |f| {
        let mut w = parquet::arrow::ArrowWriter::try_new(f, row_schema(), None).map_err(std::io::Error::other)?;
        for b in std::iter::once(&whole).chain(&s.rows) {
            w.write(b).map_err(std::io::Error::other)?;
        }
        w.close().map(drop).map_err(std::io::Error::other)
    });
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.into()),
        _ => Ok(()),
    }
}
