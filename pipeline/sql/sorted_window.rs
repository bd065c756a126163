//! Window functions over input already sorted by their partition keys, in one linear pass: `row_number()`, `lag`, `lead`, `first_value`, running `sum` and `count`.
//!
//! DataFusion's `BoundedWindowAggExec` keeps state per window partition (a
//! key of `ScalarValue`s, a slice, a map entry), which dominates queries
//! such as "each patient's three dearest invoices" or "days between a
//! patient's consecutive invoices" over a million patients (2.7 s of compute
//! for `lag` over 10M rows). When every window function of the node is one
//! of these and the input arrives sorted by the partition keys (mode
//! `Sorted`), each row's value follows from its neighbours within the same
//! run of equal keys: a row's number is one more than its predecessor's,
//! `lag(x)` is the predecessor's `x`, `lead(x)` the successor's, and
//! `first_value(x)` (over a frame from the partition's start) the run's first
//! `x`, and a running `sum` or `count` (`ROWS BETWEEN UNBOUNDED PRECEDING AND
//! CURRENT ROW`) the predecessor's plus this row's. Arrow's `partition` kernel finds the runs of each batch, and a take
//! per column builds the values. The node stands in for the window node and
//! keeps its plan properties, schema and input requirements, so the rest of
//! the plan is unchanged. Anything else (an offset other than one, a default,
//! `IGNORE NULLS`, a window DataFusion reversed against its input's order)
//! stays with DataFusion's node.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, PrimitiveArray, PrimitiveBuilder, RecordBatch, UInt32Array, UInt64Array,
    make_comparator, new_null_array,
};
use arrow::compute::{SortOptions, cast, concat, partition, take};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Decimal128Type, Float64Type, Int64Type, SchemaRef, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, ScalarValue, Statistics};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{WindowFrame, WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::window::{PlainAggregateWindowExpr, StandardWindowExpr, WindowExpr};
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

/// Physical optimizer rule: each `BoundedWindowAggExec` whose functions all
/// have a [`Pass`], over input sorted by its partition keys, becomes a [`SortedWindowExec`].
#[derive(Debug, Default)]
pub struct SortedWindow;

impl PhysicalOptimizerRule for SortedWindow {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match node.downcast_ref::<BoundedWindowAggExec>() {
            Some(window) if passes(window).is_some() => {
                Ok(Transformed::yes(Arc::new(SortedWindowExec::new(window.clone())) as Arc<dyn ExecutionPlan>))
            }
            _ => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_sorted_window"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What one window function computes, from its row's neighbours within the run of equal partition keys.
#[derive(Debug, Clone)]
enum Pass {
    /// `row_number()`.
    RowNumber,
    /// `lag(x)`: the previous row's `x`.
    Previous(Arc<dyn PhysicalExpr>),
    /// `lead(x)`: the next row's `x`.
    Next(Arc<dyn PhysicalExpr>),
    /// `first_value(x)` over a frame from the partition's start: the first row's `x`.
    First(Arc<dyn PhysicalExpr>),
    /// `sum(x)` over `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`, in the sum's type.
    RunningSum(Arc<dyn PhysicalExpr>, DataType),
    /// `count(x)` over the same frame.
    RunningCount(Arc<dyn PhysicalExpr>),
}

/// Each function of `window` as a [`Pass`], if all have one and the input is sorted by every partition key.
fn passes(window: &BoundedWindowAggExec) -> Option<Vec<Pass>> {
    if window.input_order_mode != InputOrderMode::Sorted
        || window.state_observer().is_some()
        || window.window_expr().is_empty()
    {
        return None;
    }
    window.window_expr().iter().map(|e| pass(e.as_ref())).collect()
}

fn pass(expr: &dyn WindowExpr) -> Option<Pass> {
    if let Some(plain) = expr.as_any().downcast_ref::<PlainAggregateWindowExpr>() {
        return running(plain);
    }
    let standard = expr.as_any().downcast_ref::<StandardWindowExpr>()?;
    let function = standard.get_standard_func_expr();
    let udf = function.as_any().downcast_ref::<WindowUDFExpr>()?;
    let name = udf.fun().name();
    // The expression keeps the name it was written with: another function's name means
    // DataFusion reversed it against its input's order (lag for lead, last_value for first_value).
    let written = function.name();
    if !written.starts_with(&format!("{name}(")) || written.contains(") IGNORE NULLS") {
        return None;
    }
    let args = udf.args();
    match (name, args) {
        ("row_number", []) => Some(Pass::RowNumber),
        ("lag" | "lead", [x, rest @ ..]) if shift_of_one(rest) => {
            Some(if name == "lag" { Pass::Previous(Arc::clone(x)) } else { Pass::Next(Arc::clone(x)) })
        }
        ("first_value", [x]) if from_partition_start(expr.get_window_frame()) => Some(Pass::First(Arc::clone(x))),
        _ => None,
    }
}

/// A running `sum` or `count` from the partition's first row to the current one.
fn running(plain: &PlainAggregateWindowExpr) -> Option<Pass> {
    let aggregate = plain.get_aggregate_expr();
    let frame = plain.get_window_frame();
    let to_this_row = frame.units == WindowFrameUnits::Rows
        && frame.start_bound.is_unbounded()
        && frame.end_bound == WindowFrameBound::CurrentRow;
    // The FILTER clause is not reachable from here but is written in the name.
    if !to_this_row
        || aggregate.is_distinct()
        || aggregate.ignore_nulls()
        || aggregate.is_reversed()
        || plain.name().contains(" FILTER (WHERE ")
    {
        return None;
    }
    let [x] = aggregate.expressions().try_into().ok()?;
    let out = aggregate.field().data_type().clone();
    match aggregate.fun().name() {
        "sum" if matches!(out, DataType::Int64 | DataType::UInt64 | DataType::Float64 | DataType::Decimal128(..)) => {
            Some(Pass::RunningSum(x, out))
        }
        "count" if out == DataType::Int64 => Some(Pass::RunningCount(x)),
        _ => None,
    }
}

/// `lag`/`lead`'s arguments after the value: none, an offset of one, or that and a NULL default.
fn shift_of_one(rest: &[Arc<dyn PhysicalExpr>]) -> bool {
    let literal = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().map(|l| l.value().clone());
    let one = |e| literal(e).and_then(|v| v.cast_to(&DataType::Int64).ok()) == Some(ScalarValue::Int64(Some(1)));
    match rest {
        [] => true,
        [offset] => one(offset),
        [offset, default] => one(offset) && literal(default).is_some_and(|v| v.is_null()),
        _ => false,
    }
}

/// Does every row's frame hold its partition's first row?
fn from_partition_start(frame: &WindowFrame) -> bool {
    frame.start_bound.is_unbounded() && !matches!(&frame.end_bound, WindowFrameBound::Preceding(v) if !v.is_null())
}

/// Computes the window functions of the node it stands for in one pass (which it keeps for everything but execution).
#[derive(Debug)]
pub struct SortedWindowExec {
    window: BoundedWindowAggExec,
    metrics: ExecutionPlanMetricsSet,
}

impl SortedWindowExec {
    pub fn new(window: BoundedWindowAggExec) -> SortedWindowExec {
        SortedWindowExec { window, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// The window node it stands for.
    pub fn window(&self) -> &BoundedWindowAggExec {
        &self.window
    }
}

impl DisplayAs for SortedWindowExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.window.window_expr().iter().map(|e| e.name()).collect();
        write!(f, "SortedWindowExec: [{}]", names.join(", "))
    }
}

impl ExecutionPlan for SortedWindowExec {
    fn name(&self) -> &str {
        "SortedWindowExec"
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
            Some(w) if passes(w).is_some() => Ok(Arc::new(SortedWindowExec::new(w.clone()))),
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
        let passes = passes(&self.window)
            .ok_or_else(|| DataFusionError::Internal("a sorted window node lost its functions".into()))?;
        let input = self.window.input().execute(partition, context)?;
        let schema = self.window.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let mut runs = Runs::new(self.window.window_expr()[0].partition_by().to_vec(), passes, schema.clone());
        // `None` marks the input's end, when a batch held for its `lead` values is let go.
        let stream = input.map(Some).chain(futures::stream::once(async { None })).filter_map(move |item| {
            let timer = baseline.elapsed_compute().timer();
            let out = match item {
                Some(Ok(batch)) => runs.push(batch).transpose(),
                Some(Err(e)) => Some(Err(e)),
                None => runs.finish().transpose(),
            };
            timer.done();
            if let Some(Ok(b)) = &out {
                baseline.record_output(b.num_rows());
            }
            std::future::ready(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// A batch whose window columns are computed but for the `lead` ones, which wait for the next batch's first row.
struct Held {
    batch: RecordBatch,
    /// Per pass: its column, or (for `Next`) the values it takes from.
    columns: Vec<ArrayRef>,
    runs: Vec<Range<usize>>,
}

/// The state carried from one batch to the next.
struct Runs {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    passes: Vec<Pass>,
    schema: SchemaRef,
    /// The previous batch's last row of partition keys, one row each.
    last: Option<Vec<ArrayRef>>,
    /// The previous batch's last row number.
    count: u64,
    /// Per pass: for `Previous`, the previous batch's last value; for `First`, the open run's first value;
    /// for running sums and counts, the previous batch's last one.
    carried: Vec<Option<ArrayRef>>,
    held: Option<Held>,
}

impl Runs {
    fn new(keys: Vec<Arc<dyn PhysicalExpr>>, passes: Vec<Pass>, schema: SchemaRef) -> Runs {
        let carried = vec![None; passes.len()];
        Runs { keys, passes, schema, last: None, count: 0, carried, held: None }
    }

    fn waits_for_next(&self) -> bool {
        self.passes.iter().any(|p| matches!(p, Pass::Next(_)))
    }

    /// Takes a batch; gives the batch that is complete now (this one, or the one held for its `lead`s).
    fn push(&mut self, batch: RecordBatch) -> DfResult<Option<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(None);
        }
        let keys = self.keys.iter().map(|k| k.evaluate(&batch)?.into_array(n)).collect::<DfResult<Vec<ArrayRef>>>()?;
        let runs: Vec<Range<usize>> =
            if keys.is_empty() { std::iter::once(0..n).collect() } else { partition(&keys)?.ranges() };
        let continues = match &self.last {
            Some(last) => same_keys(last, &keys)?,
            None => false,
        };
        self.last = Some(keys.iter().map(|k| k.slice(n - 1, 1)).collect());
        // Numbered once for every `row_number()` of the node.
        let mut numbers: Option<ArrayRef> = None;
        let mut columns = Vec::with_capacity(self.passes.len());
        let mut next_firsts = Vec::new();
        for i in 0..self.passes.len() {
            let column = match self.passes[i].clone() {
                Pass::RowNumber => Arc::clone(numbers.get_or_insert_with(|| self.numbers(&runs, continues))),
                Pass::Previous(x) => {
                    let values = x.evaluate(&batch)?.into_array(n)?;
                    let before = self.carried_or_null(i, values.data_type());
                    // Row r takes row r - 1 (at r in [before, values]); a run's first row takes
                    // the previous batch's last row if the run goes on from there, else NULL.
                    let indices: UInt32Array = runs
                        .iter()
                        .enumerate()
                        .flat_map(|(j, run)| {
                            let first = (j == 0 && continues).then_some(0);
                            std::iter::once(first).chain((run.start + 1..run.end).map(|r| Some(r as u32)))
                        })
                        .collect();
                    self.carried[i] = Some(values.slice(n - 1, 1));
                    neighbours(&before, &values, &indices)?
                }
                Pass::First(x) => {
                    let values = x.evaluate(&batch)?.into_array(n)?;
                    let before = self.carried_or_null(i, values.data_type());
                    // Every row of a run takes the run's first row (at start + 1), or the
                    // carried first value if the run began in an earlier batch.
                    let indices: UInt32Array = runs
                        .iter()
                        .enumerate()
                        .flat_map(|(j, run)| {
                            let first = if j == 0 && continues { 0 } else { run.start as u32 + 1 };
                            std::iter::repeat_n(first, run.len())
                        })
                        .collect();
                    let opened = runs.len() > 1 || !continues;
                    if opened {
                        let start = runs.last().map_or(0, |r| r.start);
                        self.carried[i] = Some(values.slice(start, 1));
                    }
                    neighbours(&before, &values, &indices)?
                }
                Pass::Next(x) => {
                    let values = x.evaluate(&batch)?.into_array(n)?;
                    next_firsts.push(values.slice(0, 1));
                    values
                }
                Pass::RunningSum(x, out) => {
                    let values = cast(&x.evaluate(&batch)?.into_array(n)?, &out)?;
                    let carried = self.carried[i].as_ref().filter(|_| continues);
                    let sums = running_sum(&values, &runs, carried)?;
                    self.carried[i] = Some(sums.slice(n - 1, 1));
                    sums
                }
                Pass::RunningCount(x) => {
                    let values = x.evaluate(&batch)?.into_array(n)?;
                    let carried = self.carried[i].as_ref().filter(|_| continues);
                    let counts = running_count(&values, &runs, carried);
                    self.carried[i] = Some(counts.slice(n - 1, 1));
                    counts
                }
            };
            columns.push(column);
        }
        if !self.waits_for_next() {
            return self.complete(Held { batch, columns, runs }, None).map(Some);
        }
        let done = match self.held.take() {
            Some(held) => Some(self.complete(held, Some((continues, next_firsts)))?),
            None => None,
        };
        self.held = Some(Held { batch, columns, runs });
        Ok(done)
    }

    /// The input has ended: the held batch, its last `lead`s NULL.
    fn finish(&mut self) -> DfResult<Option<RecordBatch>> {
        match self.held.take() {
            Some(held) => self.complete(held, None).map(Some),
            None => Ok(None),
        }
    }

    /// `held` with its `lead` columns, given whether the next batch goes on with its last run and that batch's first values.
    fn complete(&self, held: Held, next: Option<(bool, Vec<ArrayRef>)>) -> DfResult<RecordBatch> {
        let n = held.batch.num_rows();
        let (goes_on, firsts) = match next {
            Some((goes_on, firsts)) => (goes_on, firsts),
            None => (false, Vec::new()),
        };
        let mut firsts = firsts.into_iter();
        let mut columns = held.batch.columns().to_vec();
        for (pass, column) in self.passes.iter().zip(held.columns) {
            let column = match pass {
                Pass::Next(_) => {
                    let after = match firsts.next() {
                        Some(first) => first,
                        None => new_null_array(column.data_type(), 1),
                    };
                    // Row r takes row r + 1; a run's last row takes NULL, but the batch's
                    // last row takes the next batch's first row if its run goes on there.
                    let last_run = held.runs.len() - 1;
                    let indices: UInt32Array = held
                        .runs
                        .iter()
                        .enumerate()
                        .flat_map(|(j, run)| {
                            let end = (j == last_run && goes_on).then_some(n as u32);
                            (run.start + 1..run.end).map(|r| Some(r as u32)).chain(std::iter::once(end))
                        })
                        .collect();
                    neighbours(&column, &after, &indices)?
                }
                _ => column,
            };
            columns.push(column);
        }
        // The schema's types are the functions' own; a value expression may differ only in name.
        let fields = self.schema.fields();
        let columns = columns
            .into_iter()
            .zip(fields.iter())
            .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { cast(&c, f.data_type()) })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn carried_or_null(&self, pass: usize, data_type: &DataType) -> ArrayRef {
        self.carried[pass].clone().unwrap_or_else(|| new_null_array(data_type, 1))
    }

    /// Row numbers of `runs`, the first going on from the previous batch's if `continues`.
    fn numbers(&mut self, runs: &[Range<usize>], continues: bool) -> ArrayRef {
        let mut numbers = Vec::with_capacity(runs.last().map_or(0, |r| r.end));
        let mut count = self.count;
        for (i, run) in runs.iter().enumerate() {
            let start = if i == 0 && continues { count } else { 0 };
            let end = start + run.len() as u64;
            numbers.extend(start + 1..=end);
            count = end;
        }
        self.count = count;
        Arc::new(UInt64Array::from(numbers))
    }
}

/// Rows of `first` then `then` (a carried row and a batch's values, or the reverse) at `indices`; NULL where an index is.
fn neighbours(first: &ArrayRef, then: &ArrayRef, indices: &UInt32Array) -> DfResult<ArrayRef> {
    Ok(take(&concat(&[first.as_ref(), then.as_ref()])?, indices, None)?)
}

/// Running sums of `values` within each run, the first run going on from `carried` (the previous batch's last sum) if given.
fn running_sum(values: &ArrayRef, runs: &[Range<usize>], carried: Option<&ArrayRef>) -> DfResult<ArrayRef> {
    Ok(match values.data_type() {
        DataType::Int64 => Arc::new(sums::<Int64Type>(values, runs, carried, i64::wrapping_add)),
        DataType::UInt64 => Arc::new(sums::<UInt64Type>(values, runs, carried, u64::wrapping_add)),
        DataType::Float64 => Arc::new(sums::<Float64Type>(values, runs, carried, |a, b| a + b)),
        DataType::Decimal128(p, s) => Arc::new(
            sums::<Decimal128Type>(values, runs, carried, i128::wrapping_add).with_precision_and_scale(*p, *s)?,
        ),
        other => return Err(DataFusionError::Internal(format!("no running sum of {other}"))),
    })
}

/// NULL until a run's first non-null value, as `sum` over the rows so far is.
fn sums<T: ArrowPrimitiveType>(
    values: &ArrayRef,
    runs: &[Range<usize>],
    carried: Option<&ArrayRef>,
    add: impl Fn(T::Native, T::Native) -> T::Native,
) -> PrimitiveArray<T> {
    let values = values.as_primitive::<T>();
    let carried = carried.map(|c| c.as_primitive::<T>()).and_then(|c| c.is_valid(0).then(|| c.value(0)));
    let mut out = PrimitiveBuilder::<T>::with_capacity(values.len());
    for (j, run) in runs.iter().enumerate() {
        let mut sum = if j == 0 { carried } else { None };
        for r in run.clone() {
            if values.is_valid(r) {
                let v = values.value(r);
                sum = Some(sum.map_or(v, |s| add(s, v)));
            }
            out.append_option(sum);
        }
    }
    out.finish()
}

/// Running counts of `values`' non-null rows within each run, the first run going on from `carried`.
fn running_count(values: &ArrayRef, runs: &[Range<usize>], carried: Option<&ArrayRef>) -> ArrayRef {
    let carried = carried.map_or(0, |c| c.as_primitive::<Int64Type>().value(0));
    let mut out = Vec::with_capacity(values.len());
    for (j, run) in runs.iter().enumerate() {
        let mut count = if j == 0 { carried } else { 0 };
        for r in run.clone() {
            count += i64::from(values.is_valid(r));
            out.push(count);
        }
    }
    Arc::new(Int64Array::from(out))
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
    use crate::sql::testing::run;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// A context over table `t` split into `parts` partitions, with or without the rule.
    fn context(batches: &[RecordBatch], parts: usize, batch_size: usize, rule: bool) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(batch_size);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(SortedWindow));
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

    /// Queries whose windows have a one-pass form (the rule applies) and some that do not.
    const QUERIES: [(&str, bool); 14] = [
        (
            "SELECT a, b, v, sum(v) OVER (PARTITION BY a ORDER BY v ROWS UNBOUNDED PRECEDING) AS s, \
             count(a) OVER (PARTITION BY a ORDER BY v ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS c, \
             count(*) OVER (PARTITION BY b ORDER BY v ROWS UNBOUNDED PRECEDING) AS n, \
             sum(CAST(v AS DOUBLE) / 4) OVER (PARTITION BY b ORDER BY v ROWS UNBOUNDED PRECEDING) AS d FROM t",
            true,
        ),
        (
            "SELECT a, b, v, sum(CAST(v AS DECIMAL(10, 2))) OVER (PARTITION BY b ORDER BY v ROWS UNBOUNDED PRECEDING) AS s, \
             sum(CASE WHEN v % 3 = 0 THEN NULL ELSE a END) OVER (PARTITION BY b ORDER BY v ROWS UNBOUNDED PRECEDING) AS n FROM t",
            true,
        ),
        (
            "SELECT a, v, sum(v) OVER (PARTITION BY a ORDER BY v ROWS BETWEEN UNBOUNDED PRECEDING AND 1 FOLLOWING) AS s FROM t",
            false,
        ),
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
            "SELECT a, b, v, lag(v) OVER (PARTITION BY a, b ORDER BY v) AS p, lead(b) OVER (PARTITION BY a, b ORDER BY v) AS n, \
             first_value(v * 2) OVER (PARTITION BY a, b ORDER BY v) AS f, row_number() OVER (PARTITION BY a, b ORDER BY v) AS r FROM t",
            true,
        ),
        (
            "SELECT a, v, lead(v, 1) OVER (PARTITION BY a ORDER BY v DESC) AS n, lag(v, 1, NULL) OVER (PARTITION BY a ORDER BY v DESC) AS p FROM t",
            true,
        ),
        (
            "SELECT b, v, first_value(a) OVER (PARTITION BY b ORDER BY v ROWS BETWEEN UNBOUNDED PRECEDING AND 2 FOLLOWING) AS f, \
             lag(a) OVER (PARTITION BY b ORDER BY v) AS p FROM t",
            true,
        ),
        ("SELECT v, lag(v) OVER (ORDER BY v) AS p, lead(v) OVER (ORDER BY v) AS n FROM t", true),
        ("SELECT a, v, lag(v, 2) OVER (PARTITION BY a ORDER BY v) AS p FROM t", false),
        ("SELECT a, v, lag(v, 1, 0) OVER (PARTITION BY a ORDER BY v) AS p FROM t", false),
        (
            "SELECT a, v, row_number() OVER (PARTITION BY a ORDER BY v) AS r, sum(v) OVER (PARTITION BY a ORDER BY v) AS s FROM t",
            false,
        ),
        (
            "SELECT a, v, first_value(v) OVER (PARTITION BY a ORDER BY v ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS f FROM t",
            false,
        ),
    ];

    /// Each query's rows in a fixed order, so that two runs compare as text.
    fn answer(ctx: &SessionContext, sql: &str) -> String {
        run(ctx, &format!("SELECT * FROM ({sql}) ORDER BY 1, 2, 3"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn values_agree_with_datafusions_window(
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
                prop_assert_eq!(plan.contains("SortedWindowExec"), applies, "{}", plan);
                prop_assert!(!run(&theirs, &explain).contains("SortedWindowExec"));
                prop_assert_eq!(answer(&ours, sql), answer(&theirs, sql), "{}", sql);
            }
        }
    }

    #[test]
    fn runs_continue_across_batches_and_restart_at_new_keys() {
        let schema =
            Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("x", DataType::Int64, false)]));
        let column = |name: &str, i| -> Arc<dyn PhysicalExpr> {
            Arc::new(datafusion::physical_expr::expressions::Column::new(name, i))
        };
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("x", DataType::Int64, false),
            Field::new("r", DataType::UInt64, false),
            Field::new("p", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("f", DataType::Int64, true),
        ]));
        let passes = vec![
            Pass::RowNumber,
            Pass::Previous(column("x", 1)),
            Pass::Next(column("x", 1)),
            Pass::First(column("x", 1)),
        ];
        let mut runs = Runs::new(vec![column("k", 0)], passes, out);
        let mut got: Vec<[Option<i64>; 4]> = Vec::new();
        let mut take_rows = |batch: Option<RecordBatch>| {
            let Some(batch) = batch else { return };
            let r = batch.column(2).as_any().downcast_ref::<UInt64Array>().expect("numbers are UInt64");
            let int = |i: usize| batch.column(i).as_any().downcast_ref::<Int64Array>().expect("Int64").clone();
            let (p, n, f) = (int(3), int(4), int(5));
            let value = |a: &Int64Array, i| a.is_valid(i).then(|| a.value(i));
            for i in 0..batch.num_rows() {
                got.push([Some(r.value(i) as i64), value(&p, i), value(&n, i), value(&f, i)]);
            }
        };
        let mut x = 0;
        for keys in [vec![Some("x"), Some("x")], vec![Some("x"), None], vec![], vec![None, Some("y")], vec![Some("y")]]
        {
            let values: Vec<i64> = keys
                .iter()
                .map(|_| {
                    x += 1;
                    x
                })
                .collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(keys)), Arc::new(Int64Array::from(values))],
            )
            .expect("a batch");
            take_rows(runs.push(batch).expect("computes"));
        }
        take_rows(runs.finish().expect("finishes"));
        // Rows x1..x7 with keys x x | x null | null y | y.
        assert_eq!(
            got,
            [
                [Some(1), None, Some(2), Some(1)],
                [Some(2), Some(1), Some(3), Some(1)],
                [Some(3), Some(2), None, Some(1)],
                [Some(1), None, Some(5), Some(4)],
                [Some(2), Some(4), None, Some(4)],
                [Some(1), None, Some(7), Some(6)],
                [Some(2), Some(6), None, Some(6)],
            ]
        );
    }
}
