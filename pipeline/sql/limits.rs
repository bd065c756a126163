//! Bounds on a statement that DataFusion does not set: how deep a recursive query may go, and how large a value may grow.
//!
//! [`BoundedRecursion`] puts a [`DepthLimitExec`] over the recursive term of
//! every `WITH RECURSIVE` query: the term is executed once per iteration,
//! and the node stops the query when the iterations pass
//! `sql.max_recursion_depth`. [`cap_values`] puts the functions that can
//! make a value far larger than what they read (`lpad`, `repeat`,
//! `replace`, `string_agg`, …) under `sql.max_value_bytes`, and has them take
//! what their output needs from the memory pool before they make it.
//! [`Interruptible`] lets a stopped statement's joins end at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// What a statement stopped by a limit says.
pub const RECURSION_STOPPED: &str = "a recursive query went deeper than `sql.max_recursion_depth`";

/// Physical optimizer rule: every recursive query's recursive term counts its iterations.
#[derive(Debug)]
pub struct BoundedRecursion {
    pub max_depth: usize,
}

impl PhysicalOptimizerRule for BoundedRecursion {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.downcast_ref::<RecursiveQueryExec>().is_none() {
                return Ok(Transformed::no(node));
            }
            let children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
            let [static_term, recursive_term] = children.as_slice() else { return Ok(Transformed::no(node)) };
            let limited = Arc::new(DepthLimitExec::new(Arc::clone(recursive_term), self.max_depth));
            let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
            Ok(Transformed::yes(node.replace_children(vec![Arc::clone(static_term), limited], options)?))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ladu_bounded_recursion"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Physical optimizer rule: every node that reads two inputs or more (a join,
/// a union) hands out its batches cooperatively, each taking from its task's
/// tokio budget. A join can make millions of rows from one batch of each
/// input without ever waiting; so marked, its task yields every so many
/// batches, and a statement stopped (by its time limit, a signal, a client's
/// cancel request) ends there instead of holding a thread until it is done.
#[derive(Debug)]
pub struct Interruptible;

impl PhysicalOptimizerRule for Interruptible {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.children().len() < 2 {
                return Ok(Transformed::no(node));
            }
            let node: Arc<dyn ExecutionPlan> = Arc::new(datafusion::physical_plan::coop::CooperativeExec::new(node));
            Ok(Transformed::yes(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ladu_interruptible"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input through, and fails once it has been executed more than `max` times.
#[derive(Debug)]
pub struct DepthLimitExec {
    input: Arc<dyn ExecutionPlan>,
    max: usize,
    /// Executions so far, shared by the copies DataFusion makes of the node between iterations.
    depth: Arc<AtomicUsize>,
}

impl DepthLimitExec {
    fn new(input: Arc<dyn ExecutionPlan>, max: usize) -> DepthLimitExec {
        DepthLimitExec { input, max, depth: Arc::new(AtomicUsize::new(0)) }
    }
}

impl DisplayAs for DepthLimitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DepthLimitExec: max_depth={}", self.max)
    }
}

impl ExecutionPlan for DepthLimitExec {
    fn name(&self) -> &str {
        "DepthLimitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("DepthLimitExec has one input".into()));
        }
        Ok(Arc::new(DepthLimitExec { input: children.swap_remove(0), max: self.max, depth: Arc::clone(&self.depth) }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        if depth > self.max {
            return Err(DataFusionError::Execution(format!("{RECURSION_STOPPED} ({})", self.max)));
        }
        self.input.execute(partition, context)
    }
}

/// How a capped scalar function's output can grow, and so what is checked before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Growth {
    /// `lpad`, `rpad`: to the length its second argument asks for.
    Pad,
    /// `repeat`: its text times its count.
    Repeat,
    /// `replace`, `regexp_replace`: each match (an empty pattern matches everywhere) replaced.
    Replace,
    /// `concat`, `translate`, …: no more than its inputs together; checked after it ran.
    Linear,
}

/// The scalar functions whose output can outgrow their input, and how.
pub const GROWING: [(&str, Growth); 11] = [
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("repeat", Growth::Repeat),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::Replace),
    ("concat", Growth::Linear),
    ("concat_ws", Growth::Linear),
    ("translate", Growth::Linear),
    ("overlay", Growth::Linear),
    ("to_hex", Growth::Linear),
    // `ladu serve`'s catalog only.
    ("array_to_string", Growth::Linear),
];

/// The aggregates whose one value holds a whole group.
pub const GATHERING: [&str; 2] = ["string_agg", "array_agg"];

/// Replace each function of [`GROWING`] and [`GATHERING`] in `ctx` by one
/// that makes no value larger than `cap` bytes, and (for [`GROWING`] ones
/// that could make far more than they read) takes what its output will need
/// from `pool` before it runs, so that `sql.memory_limit` bounds it too.
pub fn cap_values(ctx: &datafusion::prelude::SessionContext, pool: Arc<dyn MemoryPool>, cap: u64) {
    let state = ctx.state();
    for (name, growth) in GROWING {
        if let Some(inner) = state.scalar_functions().get(name) {
            let capped = CappedScalar { inner: ScalarUDF::clone(inner), growth, cap, pool: Arc::clone(&pool) };
            ctx.register_udf(ScalarUDF::new_from_impl(capped));
        }
    }
    for name in GATHERING {
        if let Some(inner) = state.aggregate_functions().get(name) {
            ctx.register_udaf(AggregateUDF::new_from_impl(CappedAggregate { inner: AggregateUDF::clone(inner), cap }));
        }
    }
}

fn too_large(what: &str, bytes: u64, cap: u64) -> DataFusionError {
    DataFusionError::Execution(format!(
        "{what} would make a value of {bytes} bytes, more than `sql.max_value_bytes` ({cap}) allows"
    ))
}

/// A scalar function whose values are capped and whose growth is paid for from the memory pool.
#[derive(Debug)]
struct CappedScalar {
    inner: ScalarUDF,
    growth: Growth,
    cap: u64,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for CappedScalar {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.cap == other.cap
    }
}

impl Eq for CappedScalar {}

impl std::hash::Hash for CappedScalar {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.cap.hash(state);
    }
}

/// Byte lengths of a text or binary argument, row by row (`None`: not text).
fn lengths(arg: &ColumnarValue, rows: usize) -> Option<Vec<u64>> {
    let array = arg.to_array(rows).ok()?;
    // From the offsets or views alone: no value is read.
    fn spans<O: arrow::array::OffsetSizeTrait>(offsets: &[O]) -> Vec<u64> {
        offsets.windows(2).map(|w| (w[1] - w[0]).as_usize() as u64).collect()
    }
    Some(match array.data_type() {
        DataType::Utf8 => spans(array.as_string::<i32>().value_offsets()),
        DataType::LargeUtf8 => spans(array.as_string::<i64>().value_offsets()),
        DataType::Binary => spans(array.as_binary::<i32>().value_offsets()),
        DataType::Utf8View => array.as_string_view().views().iter().map(|v| u64::from(*v as u32)).collect(),
        _ => return None,
    })
}

/// An integer argument, row by row (negative and null as 0).
fn counts(arg: &ColumnarValue, rows: usize) -> Option<Vec<u64>> {
    let array = arg.to_array(rows).ok()?;
    let array = arrow::compute::cast(&array, &DataType::Int64).ok()?;
    Some(array.as_primitive::<arrow::datatypes::Int64Type>().iter().map(|v| v.unwrap_or(0).max(0) as u64).collect())
}

/// Is every value of a text argument ASCII (one byte a character)?
fn ascii(arg: &ColumnarValue, rows: usize) -> bool {
    let Ok(array) = arg.to_array(rows) else { return false };
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().values().is_ascii(),
        DataType::LargeUtf8 => array.as_string::<i64>().values().is_ascii(),
        DataType::Utf8View => array.as_string_view().iter().flatten().all(str::is_ascii),
        _ => false,
    }
}

impl CappedScalar {
    /// The most bytes each row's value can take, where the growth is known before running.
    fn bound(&self, args: &ScalarFunctionArgs) -> Option<Vec<u64>> {
        let rows = args.number_rows;
        let a = &args.args;
        match self.growth {
            Growth::Pad => {
                let n = counts(a.get(1)?, rows)?;
                let width =
                    if a.iter().enumerate().filter(|(i, _)| *i != 1).all(|(_, v)| ascii(v, rows)) { 1 } else { 4 };
                Some(n.into_iter().map(|n| n.saturating_mul(width)).collect())
            }
            Growth::Repeat => {
                let (text, n) = (lengths(a.first()?, rows)?, counts(a.get(1)?, rows)?);
                Some(text.into_iter().zip(n).map(|(t, n)| t.saturating_mul(n)).collect())
            }
            Growth::Replace => {
                let (text, to) = (lengths(a.first()?, rows)?, lengths(a.get(2)?, rows)?);
                // A back-reference in a regex replacement may repeat the whole text.
                let refs = match a.get(2)? {
                    ColumnarValue::Scalar(s) => s.to_string().matches(['\\', '$']).count() as u64,
                    ColumnarValue::Array(_) => 4,
                };
                Some(
                    text.into_iter()
                        .zip(to)
                        .map(|(t, to)| t.saturating_add((t + 1).saturating_mul(to.saturating_add(refs * t))))
                        .collect(),
                )
            }
            Growth::Linear => None,
        }
    }
}

impl ScalarUDFImpl for CappedScalar {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        // Paid for before it is made: no value past the cap, no output past the pool.
        let reservation = MemoryConsumer::new(format!("{} output", self.name())).register(&self.pool);
        if let Some(bound) = self.bound(&args) {
            if let Some(&largest) = bound.iter().max()
                && largest > self.cap
            {
                return Err(too_large(self.name(), largest, self.cap));
            }
            let total = bound.iter().fold(0u64, |a, b| a.saturating_add(*b));
            reservation.try_grow(usize::try_from(total).unwrap_or(usize::MAX))?;
        }
        let rows = args.number_rows;
        let out = self.inner.invoke_with_args(args)?;
        if let Some(largest) = lengths(&out, rows).and_then(|l| l.into_iter().max())
            && largest > self.cap
        {
            return Err(too_large(self.name(), largest, self.cap));
        }
        Ok(out)
    }
}

/// An aggregate whose one value (a whole group's text or list) is capped.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CappedAggregate {
    inner: AggregateUDF,
    cap: u64,
}

impl AggregateUDFImpl for CappedAggregate {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> DfResult<FieldRef> {
        self.inner.return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let inner = self.inner.accumulator(acc_args)?;
        Ok(Box::new(CappedAccumulator {
            base: inner.size() as u64,
            inner,
            cap: self.cap,
            name: self.name().to_owned(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> DfResult<Option<Arc<dyn AggregateUDFImpl>>> {
        let inner = Arc::clone(self.inner.inner()).with_beneficial_ordering(beneficial_ordering)?;
        Ok(inner.map(|inner| {
            Arc::new(CappedAggregate { inner: AggregateUDF::new_from_shared_impl(inner), cap: self.cap })
                as Arc<dyn AggregateUDFImpl>
        }))
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn default_value(&self, data_type: &DataType) -> DfResult<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.inner().supports_null_handling_clause()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.inner().supports_within_group_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Fails once what it holds for one group passes the cap.
#[derive(Debug)]
struct CappedAccumulator {
    inner: Box<dyn Accumulator>,
    /// Its size holding nothing.
    base: u64,
    cap: u64,
    name: String,
}

impl CappedAccumulator {
    fn check(&self) -> DfResult<()> {
        let held = (self.inner.size() as u64).saturating_sub(self.base);
        if held > self.cap { Err(too_large(&self.name, held, self.cap)) } else { Ok(()) }
    }
}

impl Accumulator for CappedAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.inner.update_batch(values)?;
        self.check()
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        self.inner.evaluate()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        self.inner.merge_batch(states)?;
        self.check()
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}
