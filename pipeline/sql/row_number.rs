//! `row_number()` over input already sorted by its partition keys, numbered in one linear pass.
//!
//! DataFusion's `BoundedWindowAggExec` keeps state per window partition (a
//! key of `ScalarValue`s, a slice, a map entry), which dominates a query
//! such as "each patient's three dearest invoices" over a million patients.
//! When every window function of the node is `row_number()` and the input
//! arrives sorted by the partition keys (mode `Sorted`), a row's number is
//! one more than its predecessor's within the same run of equal keys: this
//! node computes exactly that, with Arrow's `partition` kernel per batch.
//! It stands in for the window node and keeps its plan properties, schema
//! and input requirements, so the rest of the plan is unchanged.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array, make_comparator};
use arrow::compute::{SortOptions, partition};
use arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::window::StandardWindowExpr;
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, InputOrderMode, PlanProperties,
};
use futures::StreamExt;

/// Physical optimizer rule: each `BoundedWindowAggExec` that computes only
/// `row_number()` over input sorted by its partition keys becomes a [`SortedRowNumberExec`].
#[derive(Debug, Default)]
pub struct SortedRowNumber;

impl PhysicalOptimizerRule for SortedRowNumber {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match node.downcast_ref::<BoundedWindowAggExec>() {
            Some(window) if only_row_numbers(window) => {
                Ok(Transformed::yes(Arc::new(SortedRowNumberExec::new(window.clone())) as Arc<dyn ExecutionPlan>))
            }
            _ => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_sorted_row_number"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Does `window` number rows only, over input sorted by every partition key?
fn only_row_numbers(window: &BoundedWindowAggExec) -> bool {
    window.input_order_mode == InputOrderMode::Sorted
        && window.state_observer().is_none()
        && !window.window_expr().is_empty()
        && window.window_expr().iter().all(|e| {
            e.as_any()
                .downcast_ref::<StandardWindowExpr>()
                .and_then(|s| s.get_standard_func_expr().as_any().downcast_ref::<WindowUDFExpr>())
                .is_some_and(|f| f.fun().name() == "row_number")
        })
}

/// Numbers the rows of each run of equal partition keys 1, 2, 3, …, as the
/// window node it replaces would (which it keeps for everything but execution).
#[derive(Debug)]
pub struct SortedRowNumberExec {
    window: BoundedWindowAggExec,
    metrics: ExecutionPlanMetricsSet,
}

impl SortedRowNumberExec {
    pub fn new(window: BoundedWindowAggExec) -> SortedRowNumberExec {
        SortedRowNumberExec { window, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// The window node it stands for.
    pub fn window(&self) -> &BoundedWindowAggExec {
        &self.window
    }
}

impl DisplayAs for SortedRowNumberExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.window.window_expr().iter().map(|e| e.name()).collect();
        write!(f, "SortedRowNumberExec: [{}]", names.join(", "))
    }
}

impl ExecutionPlan for SortedRowNumberExec {
    fn name(&self) -> &str {
        "SortedRowNumberExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.window.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.window.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.window.apply_expressions(f)
    }

    #[allow(deprecated, reason = "the window node's requirement, as DataFusion still asks for it")]
    fn required_input_distribution(&self) -> Vec<Distribution> {
        self.window.required_input_distribution()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.window.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.window.maintains_input_order()
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        let window = Arc::new(self.window.clone()).replace_children(children, recompute)?;
        match window.downcast_ref::<BoundedWindowAggExec>() {
            Some(w) if only_row_numbers(w) => Ok(Arc::new(SortedRowNumberExec::new(w.clone()))),
            // Its input no longer sorted by the partition keys: DataFusion's node is right.
            _ => Ok(window),
        }
    }

    fn statistics_from_inputs(&self, input: &[Arc<Statistics>], args: &StatisticsArgs) -> DfResult<Arc<Statistics>> {
        self.window.statistics_from_inputs(input, args)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.window.child_stats_requests(partition)
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let input = self.window.input().execute(partition, context)?;
        let schema = self.window.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let mut numbering = Numbering {
            keys: self.window.window_expr()[0].partition_by().to_vec(),
            functions: self.window.window_expr().len(),
            schema: schema.clone(),
            last: None,
            count: 0,
        };
        let stream = input.map(move |batch| {
            let timer = baseline.elapsed_compute().timer();
            let out = numbering.number(batch?);
            timer.done();
            if let Ok(b) = &out {
                baseline.record_output(b.num_rows());
            }
            out
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The state carried from one batch to the next: the last row's keys and its number.
struct Numbering {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// How many `row_number()` columns to append (all equal).
    functions: usize,
    schema: SchemaRef,
    /// The previous batch's last row of partition keys, one row each.
    last: Option<Vec<ArrayRef>>,
    count: u64,
}

impl Numbering {
    fn number(&mut self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let n = batch.num_rows();
        let keys = self.keys.iter().map(|k| k.evaluate(&batch)?.into_array(n)).collect::<DfResult<Vec<ArrayRef>>>()?;
        let mut numbers = Vec::with_capacity(n);
        if n > 0 {
            let ranges: Vec<_> =
                if keys.is_empty() { std::iter::once(0..n).collect() } else { partition(&keys)?.ranges() };
            let continues = match &self.last {
                Some(last) => same_keys(last, &keys)?,
                None => false,
            };
            for (i, range) in ranges.into_iter().enumerate() {
                let start = if i == 0 && continues { self.count } else { 0 };
                let end = start + range.len() as u64;
                numbers.extend(start + 1..=end);
                self.count = end;
            }
            self.last = Some(keys.iter().map(|k| k.slice(n - 1, 1)).collect());
        }
        let numbers: ArrayRef = Arc::new(UInt64Array::from(numbers));
        let mut columns = batch.columns().to_vec();
        columns.extend(std::iter::repeat_n(numbers, self.functions));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Are `last`'s only row and `keys`' first row the same partition? Equal
/// as the `partition` kernel counts equal within a batch: nulls alike.
fn same_keys(last: &[ArrayRef], keys: &[ArrayRef]) -> DfResult<bool> {
    for (l, k) in last.iter().zip(keys) {
        let compare = make_comparator(l.as_ref(), k.as_ref(), SortOptions::default())
            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
        if compare(0, 0) != Ordering::Equal {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// A context over table `t` split into `parts` partitions, with or without the rule.
    fn context(batches: &[RecordBatch], parts: usize, batch_size: usize, rule: bool) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(batch_size);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(SortedRowNumber));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let schema = batches[0].schema();
        let mut partitions = vec![Vec::new(); parts];
        for (i, b) in batches.iter().enumerate() {
            partitions[i % parts].push(b.clone());
        }
        let table = MemTable::try_new(schema, partitions).expect("the batches share a schema");
        ctx.register_table("t", Arc::new(table)).expect("a fresh context");
        ctx
    }

    fn run(ctx: &SessionContext, sql: &str) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            let batches = ctx.sql(sql).await.expect("plans").collect().await.expect("runs");
            pretty_format_batches(&batches).expect("prints").to_string()
        })
    }

    fn batches(rows: &[(Option<i32>, Option<u8>, i64)], size: usize) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        rows.chunks(size.max(1))
            .map(|chunk| {
                let a = Int32Array::from_iter(chunk.iter().map(|r| r.0));
                let b = StringArray::from_iter(chunk.iter().map(|r| r.1.map(|c| format!("k{c}"))));
                let v = Int64Array::from_iter_values(chunk.iter().map(|r| r.2));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(a), Arc::new(b), Arc::new(v)])
                    .expect("columns match the schema")
            })
            .collect()
    }

    /// Queries whose windows are row numbers only (the rule applies) and one that is not.
    const QUERIES: [(&str, bool); 4] = [
        ("SELECT a, b, v, row_number() OVER (PARTITION BY a, b ORDER BY v, a, b) AS r FROM t", true),
        (
            "SELECT a, v, row_number() OVER (PARTITION BY a ORDER BY v DESC) AS r, \
             row_number() OVER (PARTITION BY a ORDER BY v DESC) AS s FROM t",
            true,
        ),
        (
            "SELECT * FROM (SELECT b, v, a, row_number() OVER (PARTITION BY b ORDER BY v) AS r FROM t) WHERE r <= 2",
            true,
        ),
        (
            "SELECT a, v, row_number() OVER (PARTITION BY a ORDER BY v) AS r, sum(v) OVER (PARTITION BY a ORDER BY v) AS s FROM t",
            false,
        ),
    ];

    /// Each query's rows in a fixed order, so that two runs compare as text.
    fn answer(ctx: &SessionContext, sql: &str) -> String {
        run(ctx, &format!("SELECT * FROM ({sql}) ORDER BY 1, 2, 3, 4"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn numbers_agree_with_datafusions_window(
            keys in prop::collection::vec((prop::option::of(0..4i32), prop::option::of(0..3u8)), 1..120),
            size in 1usize..40,
            parts in 1usize..4,
            out_batch in 1usize..9,
        ) {
            // Distinct values, so that every partition's order is total and both numberings agree row for row.
            let rows: Vec<_> = keys.iter().enumerate().map(|(i, (a, b))| (*a, *b, (i as i64 * 7919) % 1009)).collect();
            let input = batches(&rows, size);
            let ours = context(&input, parts, out_batch, true);
            let theirs = context(&input, parts, out_batch, false);
            for (sql, applies) in QUERIES {
                let explain = format!("EXPLAIN {sql}");
                let plan = run(&ours, &explain);
                prop_assert_eq!(plan.contains("SortedRowNumberExec"), applies, "{}", plan);
                prop_assert!(!run(&theirs, &explain).contains("SortedRowNumberExec"));
                prop_assert_eq!(answer(&ours, sql), answer(&theirs, sql), "{}", sql);
            }
        }
    }

    #[test]
    fn numbering_continues_across_batches_and_restarts_at_new_keys() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        let key: Arc<dyn PhysicalExpr> = Arc::new(datafusion::physical_expr::expressions::Column::new("k", 0));
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("r", DataType::UInt64, false),
        ]));
        let mut numbering = Numbering { keys: vec![key], functions: 1, schema: out, last: None, count: 0 };
        let mut got = Vec::new();
        for values in [vec![Some("x"), Some("x")], vec![Some("x"), None], vec![None, Some("y")], vec![]] {
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(values))]).expect("a batch");
            let numbered = numbering.number(batch).expect("numbers");
            let r = numbered.column(1).as_any().downcast_ref::<UInt64Array>().expect("numbers are UInt64");
            got.extend(r.values().iter().copied());
        }
        assert_eq!(got, [1, 2, 3, 1, 2, 1]);
    }
}
