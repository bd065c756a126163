//! Which rows of a table a newer version of their record supersedes: as the commits recorded it, or found in memory.
//!
//! `<table>` shows the newest version of each record (DESIGN.md). Each
//! commit records what it supersedes ([`crate::warehouse::superseded`]); a
//! session reads that record and writes nothing. A warehouse written before
//! commits recorded it (and not yet committed to since) is answered by a
//! pass over every record id, kept in memory for the session's lifetime.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Field, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::prelude::SessionContext;

use super::tables::{RECORD_ID, VERSION_RANK, version_rank};

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
    /// The commits whose rows it names.
    pub fn commits(&self) -> BTreeSet<i64> {
        let mut commits: BTreeSet<i64> = self.deliveries.iter().map(|d| d.0).collect();
        for b in &self.rows {
            commits.extend(b.column(0).as_primitive::<Int64Type>().values().iter().copied());
        }
        commits
    }

    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.row_count() == 0
    }

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

/// The superseded rows of `table` (committed as `t`): as recorded, or computed from `history`.
pub async fn find(
    ctx: &SessionContext,
    root: &Path,
    table: &str,
    t: &crate::warehouse::manifest::Table,
    history: Arc<dyn TableProvider>,
) -> DfResult<Superseded> {
    if let Some(versions) = &t.versions {
        let recorded = crate::warehouse::superseded::load(root, versions)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        return Ok(Superseded { deliveries: recorded.deliveries, rows: recorded.rows });
    }
    let started = std::time::Instant::now();
    let s = compute(ctx, history).await?;
    tracing::info!(
        "{table}: {} superseded rows and {} superseded deliveries, found in {:.2}s (the next commit records them)",
        s.row_count(),
        s.deliveries.len(),
        started.elapsed().as_secs_f64()
    );
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
