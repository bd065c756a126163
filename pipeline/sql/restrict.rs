//! A role's view of a table, enforced in the plan: hidden columns do not exist, foreign rows never leave the scan.
//!
//! [`Restricted`] wraps a table provider. Its schema lacks the hidden
//! columns, so no query can name them. Its scan ends in [`RoleFilterExec`],
//! which applies the role's row condition before any row reaches the rest of
//! the plan; the node passes no filter of the query down through itself.
//! Filters of the query go beneath it only when they cannot fail (plain
//! comparisons of columns and literals): a filter that raised an error on a
//! hidden row would tell the user that such a row exists.
//!
//! For `ladu release`, [`Recode`] also replaces each pseudonym column's
//! values with the recipient's release pseudonyms in the same node, so the
//! query above never sees a warehouse pseudonym; the scan's statistics for
//! those columns are dropped (they describe the warehouse pseudonyms), and
//! no filter on them goes down to the files.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, StringBuilder};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, DFSchema, Statistics};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::StreamExt;

use super::codec::TableOrigin;
use super::tables::CommittedTable;
use crate::pseudonym::Pseudonymiser;

/// Pseudonym columns shown as release pseudonyms of one recipient.
#[derive(Debug, Clone)]
pub struct Recode {
    /// Output names of the table's pseudonym columns.
    pub columns: Vec<String>,
    pub pseudonymiser: Arc<Pseudonymiser>,
}

/// A table as one role sees it.
#[derive(Debug)]
pub struct Restricted {
    inner: Arc<dyn TableProvider>,
    /// The visible columns.
    schema: SchemaRef,
    /// Index in `inner`'s schema of each visible column.
    visible: Vec<usize>,
    /// The row condition, over `inner`'s columns, and the columns it reads.
    condition: Option<(Expr, Vec<usize>)>,
    role: String,
    /// Indices in `inner`'s schema of the columns to recode, and how.
    recode: Option<(Vec<usize>, Arc<Pseudonymiser>)>,
    /// What a session registered it as, for a plan that goes to the cluster.
    origin: Option<TableOrigin>,
}

impl Restricted {
    /// `inner` without `hidden` columns, only rows passing `condition`, and
    /// `recode`'s columns (those present) as release pseudonyms.
    pub fn new(
        inner: Arc<dyn TableProvider>,
        hidden: &[String],
        condition: Option<Expr>,
        role: &str,
        recode: Option<&Recode>,
    ) -> DfResult<Restricted> {
        let full = inner.schema();
        let visible: Vec<usize> =
            (0..full.fields().len()).filter(|&i| !hidden.iter().any(|h| h == full.field(i).name())).collect();
        let schema = Arc::new(full.project(&visible)?);
        let condition = match condition {
            None => None,
            Some(expr) => {
                let mut reads = Vec::new();
                for c in expr.column_refs() {
                    reads.push(full.index_of(&c.name)?);
                }
                reads.sort_unstable();
                reads.dedup();
                Some((expr, reads))
            }
        };
        let recode = recode.map(|r| {
            let columns = r.columns.iter().filter_map(|c| full.index_of(c).ok()).collect();
            (columns, r.pseudonymiser.clone())
        });
        Ok(Restricted { inner, schema, visible, condition, role: role.to_owned(), recode, origin: None })
    }

    /// The same table, known to the cluster by `origin` (never a table that recodes pseudonyms).
    pub fn with_origin(mut self, origin: TableOrigin) -> Restricted {
        if self.recode.is_none() {
            self.origin = Some(origin);
        }
        self
    }

    /// What a session registered it as, where it may be rebuilt elsewhere.
    pub fn origin(&self) -> Option<&TableOrigin> {
        self.origin.as_ref()
    }

    /// Is `filter` given to the inner table? Not over recoded columns (whose files hold other
    /// values), and beneath a role's condition only if it cannot fail on the rows the role may not see.
    fn passes_on(&self, filter: &Expr) -> bool {
        !self.reads_recoded(filter) && (self.condition.is_none() || cannot_fail(filter))
    }

    /// Does `filter` read a recoded column (whose files hold other values than the query sees)?
    fn reads_recoded(&self, filter: &Expr) -> bool {
        let Some((recoded, _)) = &self.recode else { return false };
        let full = self.inner.schema();
        filter.column_refs().iter().any(|c| full.index_of(&c.name).is_ok_and(|i| recoded.contains(&i)))
    }
}

/// Can evaluating `e` never fail, whatever the row? (Comparisons, boolean logic, columns, literals.)
fn cannot_fail(e: &Expr) -> bool {
    use Operator::*;
    match e {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::BinaryExpr(b) => {
            matches!(b.op, Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | IsDistinctFrom | IsNotDistinctFrom)
                && cannot_fail(&b.left)
                && cannot_fail(&b.right)
        }
        Expr::Not(x)
        | Expr::IsNull(x)
        | Expr::IsNotNull(x)
        | Expr::IsTrue(x)
        | Expr::IsFalse(x)
        | Expr::IsNotTrue(x)
        | Expr::IsNotFalse(x) => cannot_fail(x),
        Expr::Between(b) => cannot_fail(&b.expr) && cannot_fail(&b.low) && cannot_fail(&b.high),
        Expr::InList(l) => cannot_fail(&l.expr) && l.list.iter().all(cannot_fail),
        _ => false,
    }
}

#[async_trait]
impl TableProvider for Restricted {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// A base table to queries and `information_schema`, even where the inner provider is a view.
    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// A filter passed on to the inner table is as exact as that table makes it (beneath the
    /// role's condition only where it cannot fail, so it filters the same rows); the query keeps
    /// any other above this table.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let passed: Vec<bool> = filters.iter().map(|f| self.passes_on(f)).collect();
        let inner: Vec<&Expr> = filters.iter().zip(&passed).filter(|(_, p)| **p).map(|(f, _)| *f).collect();
        let inner_table: &dyn std::any::Any = self.inner.as_ref();
        let answers = match (&self.condition, inner_table.downcast_ref::<CommittedTable>()) {
            // Whether the files' ranges decide a filter depends on rows the role may not see, and
            // shows in its plan (a filter above the scan or not): the role is told only what the
            // filter's columns alone decide.
            (Some(_), Some(table)) => inner
                .iter()
                .map(|f| match table.is_partition_filter(f) {
                    true => TableProviderFilterPushDown::Exact,
                    false => TableProviderFilterPushDown::Inexact,
                })
                .collect(),
            _ => self.inner.supports_filters_pushdown(&inner)?,
        };
        let mut answers = answers.into_iter();
        Ok(passed
            .iter()
            .map(|&p| match p.then(|| answers.next()).flatten() {
                Some(TableProviderFilterPushDown::Exact) => TableProviderFilterPushDown::Exact,
                _ => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| self.visible[i]).collect(),
            None => self.visible.clone(),
        };
        let mut read = wanted.clone();
        if let Some((_, cols)) = &self.condition {
            read.extend(cols);
        }
        read.sort_unstable();
        read.dedup();
        let pushed: Vec<Expr> = filters.iter().filter(|f| self.passes_on(f)).cloned().collect();
        // The limit would count rows before the role's condition.
        let limit = if self.condition.is_some() { None } else { limit };
        let input = self.inner.scan(state, Some(&read), &pushed, limit).await?;
        let input_schema = input.schema();
        let predicate = match &self.condition {
            None => None,
            Some((expr, _)) => {
                let df_schema = DFSchema::try_from(input_schema.clone())?;
                Some(state.create_physical_expr(expr.clone(), &df_schema)?)
            }
        };
        let positions: Vec<usize> = wanted.iter().map(|i| read.binary_search(i).expect("read holds wanted")).collect();
        let schema = Arc::new(input_schema.project(&positions)?);
        let recode = self.recode.as_ref().map(|(recoded, p)| {
            let outputs = wanted.iter().enumerate().filter(|(_, i)| recoded.contains(i)).map(|(o, _)| o).collect();
            (outputs, p.clone())
        });
        Ok(Arc::new(RoleFilterExec::new(input, predicate, positions, schema, &self.role, recode)))
    }
}

/// Keeps the rows a role may see and the columns the query asked for.
#[derive(Debug)]
pub struct RoleFilterExec {
    input: Arc<dyn ExecutionPlan>,
    predicate: Option<Arc<dyn PhysicalExpr>>,
    /// Columns of the input to output, in order.
    positions: Vec<usize>,
    schema: SchemaRef,
    role: String,
    /// Output columns shown as release pseudonyms.
    recode: Option<(Vec<usize>, Arc<Pseudonymiser>)>,
    properties: Arc<PlanProperties>,
}

impl RoleFilterExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        predicate: Option<Arc<dyn PhysicalExpr>>,
        positions: Vec<usize>,
        schema: SchemaRef,
        role: &str,
        recode: Option<(Vec<usize>, Arc<Pseudonymiser>)>,
    ) -> RoleFilterExec {
        let partitions = input.properties().output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        RoleFilterExec { input, predicate, positions, schema, role: role.to_owned(), recode, properties }
    }

    /// The node as the cluster rebuilds it: no pseudonyms recoded there.
    pub fn for_input(
        input: Arc<dyn ExecutionPlan>,
        predicate: Option<Arc<dyn PhysicalExpr>>,
        positions: Vec<usize>,
        role: &str,
    ) -> DfResult<RoleFilterExec> {
        let schema = Arc::new(input.schema().project(&positions)?);
        Ok(RoleFilterExec::new(input, predicate, positions, schema, role, None))
    }

    pub fn predicate(&self) -> Option<&Arc<dyn PhysicalExpr>> {
        self.predicate.as_ref()
    }

    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// Does it show pseudonyms as a recipient's release pseudonyms (made with the key)?
    pub fn recodes(&self) -> bool {
        self.recode.is_some()
    }
}

impl DisplayAs for RoleFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RoleFilterExec: role={}", self.role)?;
        if let Some(p) = &self.predicate {
            write!(f, ", rows={p}")?;
        }
        let names: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        write!(f, ", columns=[{}]", names.join(", "))?;
        if let Some((outputs, _)) = &self.recode {
            let recoded: Vec<&str> = outputs.iter().map(|&i| names[i]).collect();
            write!(f, ", release_pseudonyms=[{}]", recoded.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for RoleFilterExec {
    fn name(&self) -> &str {
        "RoleFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        match &self.predicate {
            Some(p) => f(p),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("RoleFilterExec has one input".into()));
        }
        Ok(Arc::new(RoleFilterExec::new(
            children.swap_remove(0),
            self.predicate.clone(),
            self.positions.clone(),
            self.schema.clone(),
            &self.role,
            self.recode.clone(),
        )))
    }

    /// The input's statistics for the output columns (so that joins build on the smaller
    /// side); with a row condition, the row count is only an upper bound.
    fn statistics_from_inputs(&self, input: &[Arc<Statistics>], _args: &StatisticsArgs) -> DfResult<Arc<Statistics>> {
        let mut stats = Statistics::clone(&input[0]).project(Some(&self.positions));
        if let Some((outputs, _)) = &self.recode {
            // Minimum, maximum and the like of the warehouse pseudonyms would answer `min(person_id)`.
            for &i in outputs {
                stats.column_statistics[i] = ColumnStatistics::new_unknown();
            }
        }
        Ok(Arc::new(if self.predicate.is_some() { stats.to_inexact() } else { stats }))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let predicate = self.predicate.clone();
        let positions = self.positions.clone();
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let recode = self.recode.clone();
        let stream = input.map(move |batch| {
            let batch = batch?;
            let batch = match &predicate {
                None => batch,
                Some(p) => {
                    let keep = p.evaluate(&batch)?.into_array(batch.num_rows())?;
                    let keep = keep
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| DataFusionError::Internal("a role's row condition is not boolean".into()))?;
                    filter_record_batch(&batch, keep)?
                }
            };
            let mut columns: Vec<ArrayRef> = positions.iter().map(|&i| batch.column(i).clone()).collect();
            if let Some((outputs, pseudonymiser)) = &recode {
                for &o in outputs {
                    columns[o] = release_pseudonyms(&columns[o], pseudonymiser)?;
                }
            }
            // With no columns (as for `count(*)`), the row count says how many rows there are.
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(out_schema.clone(), columns, &options)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Each value of a pseudonym column replaced by its release pseudonym, nulls kept.
fn release_pseudonyms(column: &ArrayRef, pseudonymiser: &Pseudonymiser) -> DfResult<ArrayRef> {
    let values: Box<dyn Iterator<Item = Option<&str>>> = match column.data_type() {
        arrow::datatypes::DataType::Utf8 => Box::new(column.as_string::<i32>().iter()),
        arrow::datatypes::DataType::LargeUtf8 => Box::new(column.as_string::<i64>().iter()),
        arrow::datatypes::DataType::Utf8View => Box::new(column.as_string_view().iter()),
        other => return Err(DataFusionError::Internal(format!("a pseudonym column is {other}, not text"))),
    };
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * crate::pseudonym::PSEUDONYM_LEN);
    for v in values {
        match v {
            Some(p) => out.append_value(pseudonymiser.pseudonym(p.as_bytes()).as_str()),
            None => out.append_null(),
        }
    }
    let out: ArrayRef = Arc::new(out.finish());
    // The column keeps its declared type.
    Ok(arrow::compute::cast(&out, column.data_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn only_plain_comparisons_go_beneath_a_row_condition() {
        assert!(cannot_fail(&col("year").eq(lit(2024)).and(col("month").in_list(vec![lit(1), lit(2)], false))));
        assert!(cannot_fail(&col("a").lt(col("b")).or(col("c").is_null())));
        assert!(!cannot_fail(&(col("amount") / lit(0)).eq(lit(1))), "division can fail");
        assert!(!cannot_fail(&datafusion::logical_expr::cast(col("x"), arrow::datatypes::DataType::Int32).eq(lit(1))));
    }
}
