//! An aggregate computed a batch at a time with DataFusion's accumulators, where a batch's groups can be found cheaper than row by row.
//!
//! Two of ladu's plan nodes use it: [`super::partition_groups`] (a batch
//! whose keys are all equal is added to its group whole) and
//! [`super::dictionary_groups`] (keys read as the Parquet pages'
//! dictionaries: each entry of a dictionary is looked up once, and each row
//! takes its entry's group by index). Any other batch is grouped row by row
//! with DataFusion's own group table. The accumulators are DataFusion's, so
//! it emits what DataFusion's node would (the states for a final phase, or
//! the values); a batch that is one group, and a count over a batch with few
//! groups ([`super::tally`]), are merged into them as partial states.

use std::sync::Arc;

use arrow::array::{Array, ArrayData, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::kernels::cmp::not_distinct;
use arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::common::Result as DfResult;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::InputOrderMode;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use super::tally;

/// A partial (or only) aggregate of plain aggregates, grouped (without grouping sets) by some keys,
/// with nothing DataFusion's node does beyond grouping and accumulating.
pub(super) fn plain_grouping(aggregate: &AggregateExec) -> bool {
    let plain = |a: &Arc<AggregateFunctionExpr>| !a.is_distinct() && a.order_bys().is_empty();
    let group = aggregate.group_expr();
    matches!(aggregate.mode(), AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned)
        && group.is_single()
        && !group.is_empty()
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && aggregate.filter_expr().iter().all(Option::is_none)
        && aggregate.aggr_expr().iter().all(plain)
}

/// How a node that computes `aggregate` this way shows in `EXPLAIN`: its name, keys and aggregates.
pub(super) fn describe(f: &mut std::fmt::Formatter, name: &str, aggregate: &AggregateExec) -> std::fmt::Result {
    let keys: Vec<&str> = aggregate.group_expr().expr().iter().map(|(_, name)| name.as_str()).collect();
    let aggregates: Vec<&str> = aggregate.aggr_expr().iter().map(|a| a.name()).collect();
    write!(f, "{name}: gby=[{}], aggr=[{}]", keys.join(", "), aggregates.join(", "))
}

/// Partition `partition` of `aggregate` computed over `input` (the aggregate's input, or one that
/// gives the same rows with some key columns read as dictionaries), one batch at a time.
pub(super) fn execute(
    aggregate: &AggregateExec,
    input: &Arc<dyn ExecutionPlan>,
    metrics: &ExecutionPlanMetricsSet,
    name: &str,
    partition: usize,
    context: Arc<TaskContext>,
) -> DfResult<SendableRecordBatchStream> {
    let mut input = input.execute(partition, Arc::clone(&context))?;
    let schema = aggregate.schema();
    let reservation = MemoryConsumer::new(format!("{name}[{partition}]")).register(context.memory_pool());
    let mut groups = Groups::new(aggregate, reservation)?;
    let baseline = BaselineMetrics::new(metrics, partition);
    let stream = futures::stream::once(async move {
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let _timer = baseline.elapsed_compute().timer();
            groups.add(&batch)?;
        }
        let _timer = baseline.elapsed_compute().timer();
        let out = groups.finish()?;
        baseline.record_output(out.num_rows());
        Ok(out)
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}

/// The groups seen so far and each aggregate's state of every group.
struct Groups {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The type of each key as the aggregate emits it (a key read as a dictionary is emitted as this).
    key_types: Vec<DataType>,
    /// Per aggregate, the expressions of its arguments.
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Per aggregate, each argument that is a constant (`count(*)` counts `1`) as an array of the
    /// most rows a batch has had, sliced for each batch rather than made again.
    constants: Vec<Vec<Option<ArrayRef>>>,
    /// Per aggregate, where its state is a few fixed-size values (a count, a sum, a maximum; not a
    /// median's list of values): a batch that is one group is aggregated whole and merged.
    whole: Vec<Option<Arc<AggregateFunctionExpr>>>,
    /// Per aggregate, is it a count (a batch with few groups is counted by [`tally`] and merged)?
    counts: Vec<bool>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    values: Box<dyn GroupValues>,
    /// The group of each row of the batch at hand.
    rows: Vec<usize>,
    /// The groups of the dictionaries' entries, while the batches share their dictionaries.
    entries: Option<Entries>,
    schema: SchemaRef,
    /// Does it emit the aggregates' states (for a final phase) rather than their values?
    partial: bool,
    reservation: MemoryReservation,
}

/// Most combinations of dictionary entries whose groups are kept in a table; beyond it, rows are grouped one by one.
const MAX_COMBINATIONS: usize = 1 << 16;

/// The group of each combination of the keys' dictionary entries, for one set of dictionaries.
struct Entries {
    /// Each key's dictionary (its values), by identity.
    dictionaries: Vec<ArrayData>,
    /// Each key's step in a combination's index: a key's entry counts its step times, a null its
    /// dictionary's length times.
    steps: Vec<usize>,
    /// Each combination's group, [`UNSEEN`] until a row has it.
    groups: Vec<u32>,
}

const UNSEEN: u32 = u32::MAX;

impl Groups {
    fn new(aggregate: &AggregateExec, reservation: MemoryReservation) -> DfResult<Groups> {
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
        let group_schema = group.group_schema(&aggregate.input_schema())?;
        Ok(Groups {
            keys: group.input_exprs(),
            key_types: group_schema.fields().iter().map(|f| f.data_type().clone()).collect(),
            arguments: aggregate.aggr_expr().iter().map(|a| a.expressions()).collect(),
            constants: aggregate.aggr_expr().iter().map(|a| vec![None; a.expressions().len()]).collect(),
            whole: aggregate.aggr_expr().iter().map(|a| fixed_state(a).then(|| Arc::clone(a))).collect(),
            counts: aggregate.aggr_expr().iter().map(|a| tally::is_count(a)).collect(),
            accumulators,
            values: new_group_values(group_schema, &GroupOrdering::None)?,
            rows: Vec::new(),
            entries: None,
            schema: aggregate.schema(),
            partial: *aggregate.mode() == AggregateMode::Partial,
            reservation,
        })
    }

    fn add(&mut self, batch: &RecordBatch) -> DfResult<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> =
            self.keys.iter().map(|k| k.evaluate(batch)?.into_array(n)).collect::<DfResult<_>>()?;
        // The group of every row, where the batch is one group.
        let mut one_group = None;
        if !self.add_by_dictionaries(&keys)? {
            let keys = self.decoded(keys)?;
            if all_equal(&keys)? {
                let first: Vec<ArrayRef> = keys.iter().map(|k| k.slice(0, 1)).collect();
                self.values.intern(&first, &mut self.rows)?;
                let group = self.rows[0];
                one_group = Some(group);
                self.rows.clear();
                self.rows.resize(n, group);
            } else {
                self.values.intern(&keys, &mut self.rows)?;
            }
        }
        let total = self.values.len();
        let few = one_group.is_none() && total <= tally::MAX_GROUPS;
        // Each group's rows in the batch, made by the first count.
        let mut counts = None;
        let aggregates = (self.accumulators.iter_mut().zip(&self.arguments).zip(&mut self.constants))
            .zip(self.whole.iter().zip(&self.counts));
        for (((accumulator, arguments), constants), (whole, &is_count)) in aggregates {
            let values: Vec<ArrayRef> = (arguments.iter().zip(constants))
                .map(|(e, constant)| argument(e, constant, batch))
                .collect::<DfResult<_>>()?;
            // Logical nulls (a dictionary's key may pick a null entry), read only where a path below asks.
            let no_nulls = || values.iter().all(|v| v.logical_null_count() == 0);
            match (one_group, whole) {
                // The batch's state, as DataFusion's accumulator of one group computes it with
                // Arrow's kernels, merged into the group's as a partial aggregate's would be. Only
                // where no argument is null: an accumulator that saw only nulls may state them
                // otherwise than a group that saw none (avg's sum 0 where the group's is null).
                (Some(group), Some(aggregate)) if no_nulls() => {
                    let mut one = aggregate.create_accumulator()?;
                    one.update_batch(&values)?;
                    let state = one.state()?.iter().map(|s| s.to_array()).collect::<DfResult<Vec<_>>>()?;
                    accumulator.merge_batch(&state, &[group], total)?;
                }
                // Only without nulls, as above: a count of a column counts its values, not its rows.
                (None, _) if is_count && few && no_nulls() => {
                    tally::merge_count(accumulator.as_mut(), &self.rows, total, &mut counts)?;
                }
                _ => accumulator.update_batch(&values, &self.rows, None, total)?,
            }
        }
        let entries = self.entries.as_ref().map_or(0, |e| e.groups.capacity() * 4);
        let constants: usize = self.constants.iter().flatten().flatten().map(|c| c.get_array_memory_size()).sum();
        let size = self.values.size() + entries + constants + self.accumulators.iter().map(|a| a.size()).sum::<usize>();
        self.reservation.try_resize(size)
    }

    /// The keys as the aggregate groups them (a key read as a dictionary decoded).
    fn decoded(&self, keys: Vec<ArrayRef>) -> DfResult<Vec<ArrayRef>> {
        keys.into_iter()
            .zip(&self.key_types)
            .map(|(k, t)| if k.data_type() == t { Ok(k) } else { Ok(arrow::compute::cast(&k, t)?) })
            .collect()
    }

    /// Where every key is a dictionary: each row's group by its entries, each combination of
    /// entries looked up in the group table once. False (nothing done) for any other keys.
    fn add_by_dictionaries(&mut self, keys: &[ArrayRef]) -> DfResult<bool> {
        let Some(dictionaries) = keys.iter().map(|k| k.as_dictionary_opt::<Int32Type>()).collect::<Option<Vec<_>>>()
        else {
            return Ok(false);
        };
        let reuse = self.entries.as_ref().is_some_and(|e| {
            e.dictionaries.iter().zip(&dictionaries).all(|(seen, d)| seen.ptr_eq(&d.values().to_data()))
        });
        if !reuse {
            let mut steps = Vec::with_capacity(keys.len());
            let mut combinations = 1usize;
            for d in &dictionaries {
                steps.push(combinations);
                combinations = match combinations.checked_mul(d.values().len() + 1) {
                    Some(c) if c <= MAX_COMBINATIONS => c,
                    _ => {
                        self.entries = None;
                        return Ok(false);
                    }
                };
            }
            self.entries = Some(Entries {
                dictionaries: dictionaries.iter().map(|d| d.values().to_data()).collect(),
                steps,
                groups: vec![UNSEEN; combinations],
            });
        }
        let entries = self.entries.as_mut().expect("made above");
        // One key without nulls: a row's combination is its entry, so the keys are read twice (for
        // the entries not seen before, then for each row's group) and no combinations are written.
        let single = match &dictionaries[..] {
            [d] if d.keys().null_count() == 0 => Some(d.keys().values()),
            _ => None,
        };
        let unseen = match single {
            Some(keys) => unseen(&mut entries.groups, keys.iter().map(|&entry| entry as usize))?,
            None => {
                // Each row's combination, in `rows` until it is replaced by its group.
                // The first dictionary's entries are written, not added to zeros: one pass over the rows fewer.
                self.rows.clear();
                for (j, (d, &step)) in dictionaries.iter().zip(&entries.steps).enumerate() {
                    let null = d.values().len();
                    let picked = d.keys().values();
                    match d.keys().nulls().filter(|nulls| nulls.null_count() > 0) {
                        None if j == 0 => self.rows.extend(picked.iter().map(|&entry| entry as usize * step)),
                        None => {
                            for (row, &entry) in self.rows.iter_mut().zip(picked) {
                                *row += entry as usize * step;
                            }
                        }
                        Some(nulls) => {
                            let entry =
                                |i: usize, entry: i32| if nulls.is_valid(i) { entry as usize } else { null } * step;
                            if j == 0 {
                                self.rows.extend(picked.iter().enumerate().map(|(i, &e)| entry(i, e)));
                            } else {
                                for (i, (row, &e)) in self.rows.iter_mut().zip(picked).enumerate() {
                                    *row += entry(i, e);
                                }
                            }
                        }
                    }
                }
                unseen(&mut entries.groups, self.rows.iter().copied())?
            }
        };
        if !unseen.is_empty() {
            let columns = dictionaries
                .iter()
                .zip(&entries.steps)
                .zip(&self.key_types)
                .map(|((d, &step), t)| {
                    let size = d.values().len();
                    let picks: UInt32Array = unseen
                        .iter()
                        .map(|&c| Some((c / step) % (size + 1)).filter(|&e| e < size).map(|e| e as u32))
                        .collect();
                    let values = arrow::compute::take(d.values(), &picks, None)?;
                    Ok(arrow::compute::cast(&values, t)?)
                })
                .collect::<DfResult<Vec<ArrayRef>>>()?;
            let mut found = Vec::with_capacity(unseen.len());
            self.values.intern(&columns, &mut found)?;
            for (&combination, group) in unseen.iter().zip(found) {
                entries.groups[combination] =
                    u32::try_from(group).ok().filter(|&g| g < UNSEEN - 1).ok_or_else(|| {
                        datafusion::error::DataFusionError::ResourcesExhausted("more than 4 billion groups".into())
                    })?;
            }
        }
        // Every combination was found in the table above, so indexing it cannot fail.
        match single {
            Some(keys) => {
                self.rows.clear();
                self.rows.extend(keys.iter().map(|&entry| entries.groups[entry as usize] as usize));
            }
            None => {
                for row in &mut self.rows {
                    *row = entries.groups[*row] as usize;
                }
            }
        }
        Ok(true)
    }

    /// Every group's keys and the aggregates' states (or values), as DataFusion's aggregate emits them.
    fn finish(mut self) -> DfResult<RecordBatch> {
        if self.values.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema));
        }
        let mut columns = self.values.emit(EmitTo::All)?;
        for accumulator in &mut self.accumulators {
            if self.partial {
                columns.extend(accumulator.state(EmitTo::All)?);
            } else {
                columns.push(accumulator.evaluate(EmitTo::All)?);
            }
        }
        Ok(RecordBatch::try_new(self.schema, columns)?)
    }
}

/// Is `aggregate`'s state a few fixed-size values, kept by a groups accumulator of its own?
fn fixed_state(aggregate: &AggregateFunctionExpr) -> bool {
    aggregate.groups_accumulator_supported()
        && aggregate.state_fields().is_ok_and(|fields| fields.iter().all(|f| !f.data_type().is_nested()))
}

/// An aggregate's argument `e` over `batch`; a constant is made as an array once for the most rows
/// seen (kept in `made`) and sliced.
fn argument(e: &Arc<dyn PhysicalExpr>, made: &mut Option<ArrayRef>, batch: &RecordBatch) -> DfResult<ArrayRef> {
    let n = batch.num_rows();
    let Some(literal) = e.downcast_ref::<Literal>() else { return e.evaluate(batch)?.into_array(n) };
    match made {
        Some(array) if array.len() >= n => Ok(array.slice(0, n)),
        _ => {
            let array = literal.value().to_array_of_size(n)?;
            *made = Some(Arc::clone(&array));
            Ok(array)
        }
    }
}

/// The combinations among `combinations` that have no group yet, each once, marked in `groups` as
/// being looked up; an error for one beyond the table (a dictionary key beyond its dictionary).
fn unseen(groups: &mut [u32], combinations: impl Iterator<Item = usize>) -> DfResult<Vec<usize>> {
    let mut unseen = Vec::new();
    for combination in combinations {
        let group = groups.get_mut(combination).ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("a dictionary key beyond its dictionary".into())
        })?;
        if *group == UNSEEN {
            *group = UNSEEN - 1;
            unseen.push(combination);
        }
    }
    Ok(unseen)
}

/// Is every row of the keys the same as the first (nulls equal to nulls)?
fn all_equal(keys: &[ArrayRef]) -> DfResult<bool> {
    for k in keys {
        // Partition columns (`year`, `month`) are 32-bit integers without nulls: compared as they lie.
        let same = match k.data_type() {
            DataType::Int32 if k.null_count() == 0 => same_values(k.as_primitive::<Int32Type>().values()),
            _ => {
                let first = arrow::array::Scalar::new(k.slice(0, 1));
                not_distinct(k, &first)?.true_count() == k.len()
            }
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Is every value the first? In blocks whose test the compiler can vectorise.
fn same_values(values: &[i32]) -> bool {
    let Some(&first) = values.first() else { return true };
    values.chunks(256).all(|block| block.iter().fold(true, |same, &v| same & (v == first)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use proptest::prelude::*;

    proptest! {
        /// Integer keys are found all equal exactly when Arrow's `not_distinct` finds every row
        /// equal to the first: nulls, a key differing anywhere (also past a block of 256), slices.
        #[test]
        fn integers_are_all_equal_as_arrow_compares_them(
            len in 1..700usize,
            odd in prop::option::of((0..700usize, prop::option::weighted(0.7, any::<i32>()))),
            first in any::<i32>(),
            skip in 0..3usize,
        ) {
            let mut values = vec![Some(first); len];
            if let Some((at, value)) = odd {
                values[at % len] = value;
            }
            let skip = skip.min(len - 1);
            let key: ArrayRef = Arc::new(Int32Array::from(values).slice(skip, len - skip));
            let first = arrow::array::Scalar::new(key.slice(0, 1));
            let expected = not_distinct(&key, &first).unwrap().true_count() == key.len();
            prop_assert_eq!(all_equal(&[Arc::clone(&key), key]).unwrap(), expected);
        }
    }
}
