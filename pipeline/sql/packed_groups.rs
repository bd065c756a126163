//! An aggregate that finds each row's group by its keys packed into 16 bytes each, where the keys are short.
//!
//! Analysts group by codes: care type, diagnosis, provider, county, sex,
//! year. DataFusion's aggregate hashes every row's string and compares it in
//! its group table; on `GROUP BY care_type` over 10M invoices that was a
//! third of the query's time. A code of at most 12 bytes is, as Arrow stores
//! a string view, 16 bytes that say everything about it (length and bytes),
//! and so is an integer with a null flag. Here each row's keys are packed so;
//! a row whose packed keys equal the previous row's (files are sorted by the
//! first of them) takes its group, other rows look theirs up in a small hash
//! table of packed keys. That table only remembers what DataFusion's own
//! group table assigned: a key it has not seen is interned there (a batch's
//! new keys at once), so the groups, their order, the states and the values
//! are DataFusion's. A batch with a longer string, or keys of more than
//! [`CACHE_LIMIT`] groups, goes to DataFusion's table directly.
//!
//! It replaces a partial aggregate, which may emit early: when the memory
//! pool refuses more, and, as DataFusion's does, once the probe shows that
//! the keys hardly repeat, from then on passing each row's state on. A
//! one-phase aggregate, which cannot emit early, is replaced only where its
//! keys are partition columns (`year`, `month`): there are then at most as
//! many groups as files.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, GenericStringArray, OffsetSizeTrait, RecordBatch, UInt32Array};
use arrow::compute::kernels::cmp::not_distinct;
use arrow::datatypes::{ArrowPrimitiveType, DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    ReplaceChildrenOptions, StatisticsArgs,
};
use futures::StreamExt;

use super::restrict::RoleFilterExec;

/// Past this many groups the packed keys stop paying (each new key is looked up twice) and DataFusion's table takes over.
const CACHE_LIMIT: usize = 1 << 16;

/// The most keys packed together.
const MAX_KEYS: usize = 4;

/// The packed key of a NULL: no packed string has this length, no packed integer this flag.
const NULL: u128 = u128::MAX;

/// Physical optimizer rule: an aggregate by packable keys becomes a [`PackedGroupsExec`] (see the module's comment for which).
#[derive(Debug, Default)]
pub struct PackedGroups;

impl PhysicalOptimizerRule for PackedGroups {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match node.downcast_ref::<AggregateExec>() {
            Some(aggregate) if eligible(aggregate) => {
                Ok(Transformed::yes(Arc::new(PackedGroupsExec::new(aggregate.clone())) as Arc<dyn ExecutionPlan>))
            }
            _ => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_packed_groups"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial aggregate by keys that pack, or a partial or one-phase one by partition columns; plain aggregates, no grouping sets.
fn eligible(aggregate: &AggregateExec) -> bool {
    let plain = |a: &Arc<AggregateFunctionExpr>| !a.is_distinct() && a.order_bys().is_empty();
    let group = aggregate.group_expr();
    let shape = group.is_single()
        && !group.is_empty()
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && aggregate.filter_expr().iter().all(Option::is_none)
        && aggregate.aggr_expr().iter().all(plain);
    let partition_keys = || {
        group
            .expr()
            .iter()
            .all(|(e, _)| e.downcast_ref::<Column>().is_some_and(|c| is_partition_column(aggregate.input(), c.index())))
    };
    shape
        && match aggregate.mode() {
            AggregateMode::Partial => packable_keys(aggregate) || partition_keys(),
            AggregateMode::Single | AggregateMode::SinglePartitioned => partition_keys(),
            _ => false,
        }
}

/// Are there at most [`MAX_KEYS`] keys, each of a type that packs?
fn packable_keys(aggregate: &AggregateExec) -> bool {
    aggregate.group_expr().group_schema(&aggregate.input_schema()).is_ok_and(|schema| {
        schema.fields().len() <= MAX_KEYS && schema.fields().iter().all(|f| packable(f.data_type()))
    })
}

fn packable(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Utf8View
            | Utf8
            | LargeUtf8
            | Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Date32
    )
}

/// Is column `index` of `plan`'s output a partition column of a file scan, passed on unchanged?
fn is_partition_column(plan: &Arc<dyn ExecutionPlan>, index: usize) -> bool {
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        return p
            .expr()
            .get(index)
            .and_then(|e| e.expr.downcast_ref::<Column>())
            .is_some_and(|c| is_partition_column(p.input(), c.index()));
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let index = match f.projection() {
            Some(projection) => match projection.get(index) {
                Some(&i) => i,
                None => return false,
            },
            None => index,
        };
        return is_partition_column(f.input(), index);
    }
    if let Some(r) = plan.downcast_ref::<RoleFilterExec>() {
        return !r.recodes() && r.positions().get(index).is_some_and(|&i| is_partition_column(r.children()[0], i));
    }
    if plan.downcast_ref::<RepartitionExec>().is_some() {
        return is_partition_column(plan.children()[0], index);
    }
    let Some(scan) = plan.downcast_ref::<DataSourceExec>() else { return false };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else { return false };
    let table_index = match config.file_source().projection() {
        Some(projection) => match projection.iter().nth(index).and_then(|p| p.expr.downcast_ref::<Column>()) {
            Some(c) => c.index(),
            None => return false,
        },
        None => index,
    };
    table_index >= config.file_schema().fields().len()
        && table_index < config.file_schema().fields().len() + config.table_partition_cols().len()
}

/// Computes the aggregate it stands for (which it keeps for everything but execution) a batch at a time.
#[derive(Debug)]
pub struct PackedGroupsExec {
    aggregate: AggregateExec,
    metrics: ExecutionPlanMetricsSet,
}

impl PackedGroupsExec {
    pub fn new(aggregate: AggregateExec) -> PackedGroupsExec {
        PackedGroupsExec { aggregate, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// The aggregate node it stands for.
    pub fn aggregate(&self) -> &AggregateExec {
        &self.aggregate
    }
}

impl DisplayAs for PackedGroupsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<&str> = self.aggregate.group_expr().expr().iter().map(|(_, name)| name.as_str()).collect();
        let aggregates: Vec<&str> = self.aggregate.aggr_expr().iter().map(|a| a.name()).collect();
        let mode = format!("{:?}", self.aggregate.mode());
        write!(f, "PackedGroupsExec: mode={mode}, gby=[{}], aggr=[{}]", keys.join(", "), aggregates.join(", "))
    }
}

impl ExecutionPlan for PackedGroupsExec {
    fn name(&self) -> &str {
        "PackedGroupsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        let aggregate = Arc::new(self.aggregate.clone()).replace_children(children, recompute)?;
        match aggregate.downcast_ref::<AggregateExec>() {
            Some(a) if eligible(a) => Ok(Arc::new(PackedGroupsExec::new(a.clone()))),
            // No longer one of ours: DataFusion's node is right.
            _ => Ok(aggregate),
        }
    }

    fn statistics_from_inputs(&self, input: &[Arc<Statistics>], args: &StatisticsArgs) -> DfResult<Arc<Statistics>> {
        self.aggregate.statistics_from_inputs(input, args)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.aggregate.child_stats_requests(partition)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let input = self.aggregate.input().execute(partition, Arc::clone(&context))?;
        let schema = self.aggregate.schema();
        let reservation = MemoryConsumer::new(format!("PackedGroupsExec[{partition}]")).register(context.memory_pool());
        let options = &context.session_config().options().execution;
        let probe = Probe {
            rows: options.skip_partial_aggregation_probe_rows_threshold,
            ratio: options.skip_partial_aggregation_probe_ratio_threshold,
            seen: 0,
        };
        let packed_rows = MetricBuilder::new(&self.metrics).counter("packed_rows", partition);
        let groups = Groups::new(&self.aggregate, reservation, probe, packed_rows)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        // Every batch the groups hand back, then what they hold at the end.
        let stream = futures::stream::try_unfold(Some((input, groups)), move |state| {
            let baseline = baseline.clone();
            async move {
                let Some((mut input, mut groups)) = state else { return Ok(None) };
                while let Some(batch) = input.next().await {
                    let batch = batch?;
                    let _timer = baseline.elapsed_compute().timer();
                    if let Some(out) = groups.add(&batch)? {
                        baseline.record_output(out.num_rows());
                        return Ok(Some((out, Some((input, groups)))));
                    }
                }
                let _timer = baseline.elapsed_compute().timer();
                let out = groups.emit()?;
                baseline.record_output(out.num_rows());
                Ok(Some((out, None)))
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// When a partial aggregate gives up grouping: after `rows` rows, if there are more than `ratio` groups a row (DataFusion's settings).
struct Probe {
    rows: usize,
    ratio: f64,
    seen: usize,
}

/// The groups seen so far and each aggregate's state of every group.
struct Groups {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Per aggregate, the expressions of its arguments.
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    values: Box<dyn GroupValues>,
    /// Packed keys to the groups `values` gave them; `None` where the keys do not pack or were too many.
    cache: Option<Cache>,
    /// The group of each row of the batch at hand.
    rows: Vec<usize>,
    schema: SchemaRef,
    /// Does it emit the aggregates' states (for a final phase) rather than their values, and may it emit early?
    partial: bool,
    probe: Probe,
    /// Has it given up grouping (a partial aggregate whose keys hardly repeat)?
    passing: bool,
    reservation: MemoryReservation,
    /// Rows whose group the packed keys found (shown by `EXPLAIN ANALYZE`).
    packed_rows: Count,
}

impl Groups {
    fn new(
        aggregate: &AggregateExec,
        reservation: MemoryReservation,
        probe: Probe,
        packed_rows: Count,
    ) -> DfResult<Groups> {
        let group = aggregate.group_expr();
        let accumulators = aggregate
            .aggr_expr()
            .iter()
            .map(|a| -> DfResult<Box<dyn GroupsAccumulator>> {
                if a.groups_accumulator_supported() {
                    a.create_groups_accumulator()
                } else {
                    let a = Arc::clone(a);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || a.create_accumulator())))
                }
            })
            .collect::<DfResult<_>>()?;
        let key_schema = group.group_schema(&aggregate.input_schema())?;
        let packs =
            key_schema.fields().len() <= MAX_KEYS && key_schema.fields().iter().all(|f| packable(f.data_type()));
        Ok(Groups {
            keys: group.input_exprs(),
            arguments: aggregate.aggr_expr().iter().map(|a| a.expressions()).collect(),
            accumulators,
            values: new_group_values(key_schema, &GroupOrdering::None)?,
            cache: packs.then(|| Cache::new(group.expr().len())),
            rows: Vec::new(),
            schema: aggregate.schema(),
            partial: *aggregate.mode() == AggregateMode::Partial,
            probe,
            passing: false,
            reservation,
            packed_rows,
        })
    }

    /// Adds a batch; gives back a batch to pass on now, if there is one.
    fn add(&mut self, batch: &RecordBatch) -> DfResult<Option<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(None);
        }
        let keys: Vec<ArrayRef> =
            self.keys.iter().map(|k| k.evaluate(batch)?.into_array(n)).collect::<DfResult<_>>()?;
        if self.passing {
            return self.pass(batch, keys).map(Some);
        }
        let packed = match &mut self.cache {
            Some(cache) => cache.assign(&keys, self.values.as_mut(), &mut self.rows)?,
            None => false,
        };
        if packed {
            self.packed_rows.add(n);
        } else {
            if all_equal(&keys)? {
                let first: Vec<ArrayRef> = keys.iter().map(|k| k.slice(0, 1)).collect();
                self.values.intern(&first, &mut self.rows)?;
                let group = self.rows[0];
                self.rows.clear();
                self.rows.resize(n, group);
            } else {
                self.values.intern(&keys, &mut self.rows)?;
            }
        }
        if self.cache.as_ref().is_some_and(|c| c.len() > CACHE_LIMIT) {
            self.cache = None;
        }
        let total = self.values.len();
        for (accumulator, arguments) in self.accumulators.iter_mut().zip(&self.arguments) {
            let values: Vec<ArrayRef> =
                arguments.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<DfResult<_>>()?;
            accumulator.update_batch(&values, &self.rows, None, total)?;
        }
        if self.partial && self.probe.ratio < 1.0 {
            self.probe.seen += n;
            if self.probe.seen >= self.probe.rows && total as f64 / self.probe.seen as f64 > self.probe.ratio {
                self.passing = true;
                return self.emit().map(Some);
            }
        }
        match self.reservation.try_resize(self.size()) {
            Ok(()) => Ok(None),
            // A partial aggregate passes its groups on to make room (as DataFusion's does); a final phase merges them.
            Err(_) if self.partial => {
                let out = self.emit()?;
                self.values.clear_shrink(n);
                if let Some(cache) = &mut self.cache {
                    *cache = Cache::new(self.keys.len());
                }
                self.reservation.try_resize(self.size())?;
                Ok(Some(out))
            }
            Err(e) => Err(e),
        }
    }

    /// Each row as a group of its own: its keys and the aggregates' states of it.
    fn pass(&mut self, batch: &RecordBatch, mut columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
        let n = batch.num_rows();
        for (accumulator, arguments) in self.accumulators.iter().zip(&self.arguments) {
            let values: Vec<ArrayRef> =
                arguments.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<DfResult<_>>()?;
            columns.extend(accumulator.convert_to_state(&values, None)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    fn size(&self) -> usize {
        self.values.size()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + self.cache.as_ref().map_or(0, Cache::size)
    }

    /// Every group's keys and the aggregates' states (or values), as DataFusion's aggregate emits them; it then holds none.
    fn emit(&mut self) -> DfResult<RecordBatch> {
        if self.values.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let mut columns = self.values.emit(EmitTo::All)?;
        for accumulator in &mut self.accumulators {
            if self.partial {
                columns.extend(accumulator.state(EmitTo::All)?);
            } else {
                columns.push(accumulator.evaluate(EmitTo::All)?);
            }
        }
        // The groups are numbered afresh.
        if let Some(cache) = &mut self.cache {
            cache.clear();
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Is every row of the keys the same as the first (nulls equal to nulls)?
fn all_equal(keys: &[ArrayRef]) -> DfResult<bool> {
    for k in keys {
        let first = arrow::array::Scalar::new(k.slice(0, 1));
        if not_distinct(k, &first)?.true_count() != k.len() {
            return Ok(false);
        }
    }
    Ok(true)
}

type Table<const K: usize> = HashMap<[u128; K], u32, foldhash::fast::RandomState>;

/// Packed keys of one, two, three or four columns to their groups.
enum Tables {
    One(Table<1>),
    Two(Table<2>),
    Three(Table<3>),
    Four(Table<4>),
}

/// Packed keys to the groups DataFusion's table gave them, and the buffers of a batch.
struct Cache {
    tables: Tables,
    /// Per key column, each row's packed key.
    packed: Vec<Vec<u128>>,
    /// The rows whose keys the table did not know, and the groups they were then given.
    misses: Vec<u32>,
    missed: Vec<usize>,
}

impl Cache {
    fn new(keys: usize) -> Cache {
        let tables = match keys {
            1 => Tables::One(Table::default()),
            2 => Tables::Two(Table::default()),
            3 => Tables::Three(Table::default()),
            _ => Tables::Four(Table::default()),
        };
        Cache { tables, packed: vec![Vec::new(); keys], misses: Vec::new(), missed: Vec::new() }
    }

    fn len(&self) -> usize {
        match &self.tables {
            Tables::One(t) => t.len(),
            Tables::Two(t) => t.len(),
            Tables::Three(t) => t.len(),
            Tables::Four(t) => t.len(),
        }
    }

    fn clear(&mut self) {
        match &mut self.tables {
            Tables::One(t) => t.clear(),
            Tables::Two(t) => t.clear(),
            Tables::Three(t) => t.clear(),
            Tables::Four(t) => t.clear(),
        }
    }

    fn size(&self) -> usize {
        let entry = |k: usize| 16 * k + size_of::<u32>() + 1;
        let table = match &self.tables {
            Tables::One(t) => t.capacity() * entry(1),
            Tables::Two(t) => t.capacity() * entry(2),
            Tables::Three(t) => t.capacity() * entry(3),
            Tables::Four(t) => t.capacity() * entry(4),
        };
        table
            + self.packed.iter().map(|p| p.capacity() * 16).sum::<usize>()
            + self.misses.capacity() * 4
            + self.missed.capacity() * 8
    }

    /// Gives every row its group in `rows`, interning new keys in `values`; false (and nothing done) if a key does not pack.
    fn assign(&mut self, keys: &[ArrayRef], values: &mut dyn GroupValues, rows: &mut Vec<usize>) -> DfResult<bool> {
        for (key, packed) in keys.iter().zip(&mut self.packed) {
            if !pack(key.as_ref(), packed) {
                return Ok(false);
            }
        }
        let packed = &self.packed;
        match &mut self.tables {
            Tables::One(t) => look_up(t, packed, rows, &mut self.misses),
            Tables::Two(t) => look_up(t, packed, rows, &mut self.misses),
            Tables::Three(t) => look_up(t, packed, rows, &mut self.misses),
            Tables::Four(t) => look_up(t, packed, rows, &mut self.misses),
        }
        if self.misses.is_empty() {
            return Ok(true);
        }
        // The batch's new keys (each as often as it came) go to DataFusion's table at once.
        let indices = UInt32Array::from_iter_values(self.misses.iter().copied());
        let new: Vec<ArrayRef> =
            keys.iter().map(|k| arrow::compute::take(k, &indices, None)).collect::<Result<_, _>>()?;
        values.intern(&new, &mut self.missed)?;
        for (&row, &group) in self.misses.iter().zip(&self.missed) {
            rows[row as usize] = group;
        }
        match &mut self.tables {
            Tables::One(t) => remember(t, packed, &self.misses, &self.missed),
            Tables::Two(t) => remember(t, packed, &self.misses, &self.missed),
            Tables::Three(t) => remember(t, packed, &self.misses, &self.missed),
            Tables::Four(t) => remember(t, packed, &self.misses, &self.missed),
        }
        Ok(true)
    }
}

/// Each row's group from the table (the previous row's where the keys repeat); the rows it does not know go to `misses`.
fn look_up<const K: usize>(table: &Table<K>, packed: &[Vec<u128>], rows: &mut Vec<usize>, misses: &mut Vec<u32>) {
    rows.clear();
    misses.clear();
    let n = packed[0].len();
    let mut last: Option<([u128; K], usize)> = None;
    // The row index reads K columns.
    #[allow(clippy::needless_range_loop)]
    for i in 0..n {
        let key: [u128; K] = std::array::from_fn(|c| packed[c][i]);
        if let Some((previous, group)) = last
            && previous == key
        {
            rows.push(group);
            continue;
        }
        match table.get(&key) {
            Some(&group) => {
                rows.push(group as usize);
                last = Some((key, group as usize));
            }
            None => {
                rows.push(usize::MAX);
                misses.push(i as u32);
            }
        }
    }
}

fn remember<const K: usize>(table: &mut Table<K>, packed: &[Vec<u128>], misses: &[u32], groups: &[usize]) {
    for (&row, &group) in misses.iter().zip(groups) {
        let key: [u128; K] = std::array::from_fn(|c| packed[c][row as usize]);
        table.insert(key, group as u32);
    }
}

/// Packs each row of a key column into 16 bytes that tell its value (and NULL) apart; false if a value is too long.
fn pack(array: &dyn Array, out: &mut Vec<u128>) -> bool {
    out.clear();
    match array.data_type() {
        DataType::Utf8View => {
            let views = array.as_string_view().views();
            // A view's low 32 bits are its length; up to 12 bytes follow inline, the rest is zero (masked, to be sure).
            if views.iter().any(|&v| v as u32 > 12) {
                return false;
            }
            out.extend(views.iter().map(|&v| v & (u128::MAX >> (96 - 8 * (v as u32)))));
        }
        DataType::Utf8 => {
            if !pack_strings(array.as_string::<i32>(), out) {
                return false;
            }
        }
        DataType::LargeUtf8 => {
            if !pack_strings(array.as_string::<i64>(), out) {
                return false;
            }
        }
        DataType::Boolean => out.extend(array.as_boolean().values().iter().map(u128::from)),
        DataType::Int8 => pack_integers::<arrow::datatypes::Int8Type>(array, out, |v| v as i64 as u64),
        DataType::Int16 => pack_integers::<arrow::datatypes::Int16Type>(array, out, |v| v as i64 as u64),
        DataType::Int32 => pack_integers::<arrow::datatypes::Int32Type>(array, out, |v| v as i64 as u64),
        DataType::Int64 => pack_integers::<arrow::datatypes::Int64Type>(array, out, |v| v as u64),
        DataType::UInt8 => pack_integers::<arrow::datatypes::UInt8Type>(array, out, u64::from),
        DataType::UInt16 => pack_integers::<arrow::datatypes::UInt16Type>(array, out, u64::from),
        DataType::UInt32 => pack_integers::<arrow::datatypes::UInt32Type>(array, out, u64::from),
        DataType::UInt64 => pack_integers::<arrow::datatypes::UInt64Type>(array, out, |v| v),
        DataType::Date32 => pack_integers::<arrow::datatypes::Date32Type>(array, out, |v| v as i64 as u64),
        _ => return false,
    }
    if let Some(nulls) = array.logical_nulls().filter(|n| n.null_count() > 0) {
        for (packed, valid) in out.iter_mut().zip(nulls.iter()) {
            if !valid {
                *packed = NULL;
            }
        }
    }
    true
}

/// A string as a view would inline it: its length in the low 4 bytes, then its bytes.
fn pack_strings<O: OffsetSizeTrait>(array: &GenericStringArray<O>, out: &mut Vec<u128>) -> bool {
    let data = array.value_data();
    for w in array.value_offsets().windows(2) {
        let (start, end) = (w[0].as_usize(), w[1].as_usize());
        let len = end - start;
        if len > 12 {
            return false;
        }
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&(len as u32).to_le_bytes());
        bytes[4..4 + len].copy_from_slice(&data[start..end]);
        out.push(u128::from_le_bytes(bytes));
    }
    true
}

/// An integer in the low 8 bytes, with a flag above that NULL does not share.
fn pack_integers<T: ArrowPrimitiveType>(array: &dyn Array, out: &mut Vec<u128>, bits: impl Fn(T::Native) -> u64) {
    out.extend(array.as_primitive::<T>().values().iter().map(|&v| u128::from(bits(v)) | 1 << 64));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::testing::run;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use parquet::arrow::ArrowWriter;
    use proptest::prelude::*;

    /// A row: year, month, which of its partition's files, a nullable value, a nullable key, whether the key is long.
    type Row = (i32, i32, usize, Option<i64>, Option<u8>, bool);

    /// The key as written: short (packs) or longer than 12 bytes (does not).
    fn key(r: &Row) -> Option<String> {
        r.4.map(|k| if r.5 { format!("a longer key {k}") } else { format!("k{k}") })
    }

    /// Writes the rows as hive-partitioned Parquet files under `dir`.
    fn write(dir: &std::path::Path, rows: &[Row]) -> SchemaRef {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("d", DataType::Float64, false),
            Field::new("k", DataType::Utf8, true),
        ]));
        let mut files: std::collections::BTreeMap<(i32, i32, usize), Vec<&Row>> = Default::default();
        for r in rows {
            files.entry((r.0, r.1, r.2)).or_default().push(r);
        }
        for ((year, month, file), rows) in files {
            let folder = dir.join(format!("year={year}/month={month}"));
            std::fs::create_dir_all(&folder).unwrap();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(rows.iter().map(|r| r.3).collect::<Int64Array>()),
                    Arc::new(rows.iter().map(|r| r.3.unwrap_or(0) as f64 / 4.0).collect::<Float64Array>()),
                    Arc::new(rows.iter().map(|r| key(r)).collect::<StringArray>()),
                ],
            )
            .unwrap();
            let out = std::fs::File::create(folder.join(format!("part-{file}.parquet"))).unwrap();
            let mut writer = ArrowWriter::try_new(out, schema.clone(), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
        schema
    }

    /// A session on the files, with the rule or without; `probe` makes a partial aggregate give up grouping after 5 rows.
    fn context(dir: &std::path::Path, schema: SchemaRef, rule: bool, probe: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(2).with_batch_size(3);
        if probe {
            config.options_mut().execution.skip_partial_aggregation_probe_rows_threshold = 5;
            config.options_mut().execution.skip_partial_aggregation_probe_ratio_threshold = 0.3;
        }
        configured(dir, schema, rule, config)
    }

    fn configured(dir: &std::path::Path, schema: SchemaRef, rule: bool, config: SessionConfig) -> SessionContext {
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(PackedGroups));
        }
        let ctx = SessionContext::new_with_state(state.build());
        register(&ctx, dir, schema);
        ctx
    }

    fn register(ctx: &SessionContext, dir: &std::path::Path, schema: SchemaRef) {
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("year".into(), DataType::Int32), ("month".into(), DataType::Int32)]);
        let url = ListingTableUrl::parse(dir.to_str().unwrap()).unwrap();
        let table =
            ListingTable::try_new(ListingTableConfig::new(url).with_listing_options(options).with_schema(schema))
                .unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
    }

    /// Where the rule applies to a query.
    #[derive(Clone, Copy, PartialEq)]
    enum Applies {
        /// Its keys are partition columns.
        Always,
        /// Its keys pack, where DataFusion aggregates in two phases (not over a single file).
        WherePartial,
        Never,
    }

    /// Each query, and where the rule applies to it.
    const QUERIES: [(&str, Applies); 11] = [
        (
            "SELECT year, month, count(*) AS n, count(v) AS c, sum(v) AS s, avg(v) AS a, max(v) AS hi, min(d) AS lo \
             FROM t GROUP BY year, month ORDER BY 1, 2",
            Applies::Always,
        ),
        ("SELECT month, sum(v) AS s, count(*) AS n FROM t WHERE k <> 'k1' GROUP BY month ORDER BY 1", Applies::Always),
        (
            "SELECT year, month, median(v) AS m, bool_and(v > 0) AS b FROM t GROUP BY month, year ORDER BY 1, 2",
            Applies::Always,
        ),
        ("SELECT year, k, count(*) AS n, sum(v) AS s FROM t GROUP BY year, k ORDER BY 1, 2", Applies::WherePartial),
        (
            "SELECT k, count(*) AS n, avg(v) AS a, min(d) AS lo, max(k) AS hi FROM t GROUP BY k ORDER BY 1",
            Applies::WherePartial,
        ),
        (
            "SELECT k, year, month, v IS NULL AS missing, count(*) AS n, sum(d) AS s FROM t \
             GROUP BY k, year, month, v IS NULL ORDER BY 1, 2, 3, 4",
            Applies::WherePartial,
        ),
        (
            "SELECT substr(k, 1, 2) AS p, v, count(*) AS n FROM t GROUP BY substr(k, 1, 2), v ORDER BY 1, 2",
            Applies::WherePartial,
        ),
        ("SELECT year + 1 AS y, count(*) AS n FROM t GROUP BY year + 1 ORDER BY 1", Applies::WherePartial),
        ("SELECT year, count(DISTINCT v) AS n FROM t GROUP BY year ORDER BY 1", Applies::WherePartial),
        (
            "SELECT d, k, v, year, month, count(*) AS n FROM t GROUP BY d, k, v, year, month ORDER BY 1, 2, 3, 4, 5",
            Applies::Never,
        ),
        ("SELECT count(*) AS n, sum(v) AS s FROM t", Applies::Never),
    ];

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        prop::collection::vec(
            (
                2023..2026i32,
                1..4i32,
                0..3usize,
                prop::option::weighted(0.8, -1000..1000i64),
                prop::option::weighted(0.9, 0..4u8),
                prop::bool::weighted(0.2),
            ),
            0..120,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// With the rule or without, with partial aggregates giving up early or not, every query
        /// has the same answer; the rule applies exactly where it should.
        #[test]
        fn same_answers_as_datafusion(rows in rows(), probe in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let schema = write(dir.path(), &rows);
            let ours = context(dir.path(), schema.clone(), true, probe);
            let theirs = context(dir.path(), schema, false, probe);
            for (sql, applies) in QUERIES {
                prop_assert_eq!(run(&ours, sql), run(&theirs, sql), "{}", sql);
                let plan = run(&ours, &format!("EXPLAIN {sql}"));
                let expected = match applies {
                    Applies::Always => !rows.is_empty(),
                    Applies::WherePartial => run(&theirs, &format!("EXPLAIN {sql}")).contains("mode=Partial"),
                    Applies::Never => false,
                };
                prop_assert_eq!(plan.contains("PackedGroupsExec"), expected, "{}", plan);
            }
        }
    }

    /// The metric of the first line of `EXPLAIN ANALYZE` that shows the partial `PackedGroupsExec`.
    fn partial_metric(analysed: &str, metric: &str) -> String {
        analysed
            .lines()
            .find(|l| l.contains("PackedGroupsExec") && l.contains("Partial"))
            .and_then(|l| l.split(&format!("{metric}=")).nth(1))
            .and_then(|s| s.split([',', ']']).next())
            .unwrap_or_else(|| panic!("{analysed}"))
            .to_owned()
    }

    /// More groups than the cache holds: DataFusion's table takes over and the answer stays the same.
    #[test]
    fn many_groups_leave_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<Row> = (0..(3 * CACHE_LIMIT as i64))
            .map(|i| (2024, 1 + (i % 3) as i32, 0, Some(i), Some((i % 7) as u8), false))
            .collect();
        let schema = write(dir.path(), &rows);
        let sql = "SELECT count(*) AS groups, sum(n) AS n FROM (SELECT v, k, count(*) AS n FROM t GROUP BY v, k)";
        let mut config = SessionConfig::new().with_target_partitions(2).with_batch_size(4096);
        config.options_mut().execution.skip_partial_aggregation_probe_ratio_threshold = 1.0;
        let ours = configured(dir.path(), schema.clone(), true, config);
        let theirs = context(dir.path(), schema, false, false);
        assert_eq!(run(&ours, sql), run(&theirs, sql));
        let analysed = run(&ours, &format!("EXPLAIN ANALYZE {sql}"));
        // Each partition packed the rows of its first 65 536 groups (and a batch more), not all of its rows.
        let packed: f64 = partial_metric(&analysed, "packed_rows").trim_end_matches(" K").parse().unwrap();
        assert!(packed > 65.0 && packed < 150.0, "{analysed}");
    }

    /// A partial aggregate the memory pool refuses passes its groups on early; the answer stays the same.
    #[test]
    fn a_full_pool_makes_it_emit_early() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<Row> = (0..20_000i64).map(|i| (2024, 1, 0, Some(i % 5000), Some((i % 3) as u8), false)).collect();
        let schema = write(dir.path(), &rows);
        let sql = "SELECT count(*) AS groups, sum(n) AS n, sum(s) AS s \
                   FROM (SELECT v, k, count(*) AS n, sum(v) AS s FROM t GROUP BY v, k)";
        let theirs = context(dir.path(), schema.clone(), false, false);
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(1000);
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(600_000, 1.0).build_arc().unwrap();
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(PackedGroups))
            .build();
        let ours = SessionContext::new_with_state(state);
        register(&ours, dir.path(), schema);
        assert_eq!(run(&ours, sql), run(&theirs, sql));
        let emitted = partial_metric(&run(&ours, &format!("EXPLAIN ANALYZE {sql}")), "output_rows");
        // 15 000 groups of (v, k) in all; passing them on early repeats some.
        assert!(emitted != "15000" && emitted != "15.00 K", "{emitted}");
    }
}
