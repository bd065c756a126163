//! A sort on keys packed into at most 32 bytes (a pseudonym as its 16), sorted once per partition; wider keys break their ties on the rest.
//!
//! DataFusion's `SortExec` sorts each incoming batch and then merges the
//! sorted batches, a few hundred per partition on a large table, comparing
//! rows of its variable-length row format at every step. ladu's sort keys
//! are mostly pseudonyms (32 lowercase hex digits: 16 bytes), codes, dates
//! and amounts, which pack into one or two machine integers whose order is
//! the key's order. This node buffers its partition, packs each row's key
//! once, sorts (key, row) pairs and gathers the rows in that order. Text
//! columns of pseudonyms are buffered as their 16 bytes
//! ([`super::compact_pseudonyms`]) and come out as the same text.
//!
//! A key wider than 32 bytes (person, date and record id: 34) packs its
//! leading columns that fit; rows whose packed keys tie are then ordered by
//! the remaining columns, converting only those rows to Arrow's row format.
//! Whatever it cannot pack (a longer free-text key) or cannot hold within
//! its share of the memory pool is handed,
//! with the batches already buffered, to DataFusion's own sort, which
//! spills; that sort's metrics are reported under this node.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, RecordBatch};
use arrow::compute::{SortOptions, interleave};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::row::{RowConverter, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, Statistics, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::compact_pseudonyms;
use crate::pseudonym::{PSEUDONYM_LEN, is_pseudonym, pseudonym_bits};

/// The widest packed key, in bytes: two 128-bit integers.
const MAX_WIDTH: usize = 32;

/// Physical optimizer rule: each full sort (no `LIMIT`) on keys of packable
/// types becomes a [`PackedSortExec`].
#[derive(Debug, Default)]
pub struct PackedSort;

impl PhysicalOptimizerRule for PackedSort {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match node.downcast_ref::<SortExec>() {
            Some(sort) if packable(sort) => {
                Ok(Transformed::yes(Arc::new(PackedSortExec::new(sort.clone())) as Arc<dyn ExecutionPlan>))
            }
            _ => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_packed_sort"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Is `sort` a full sort, partition by partition, on keys whose types can be packed?
fn packable(sort: &SortExec) -> bool {
    let schema = sort.input().schema();
    sort.fetch().is_none()
        && !schema.fields().is_empty()
        && (sort.preserve_partitioning() || sort.input().output_partitioning().partition_count() == 1)
        && sort.expr().iter().all(|e| e.expr.data_type(&schema).is_ok_and(|t| Kind::of(&t).is_some()))
}

/// Sorts as the `SortExec` it stands for, which it keeps for everything but execution.
#[derive(Debug)]
pub struct PackedSortExec {
    sort: SortExec,
    metrics: ExecutionPlanMetricsSet,
    /// DataFusion's sorts that took over a partition, for their metrics.
    handed_over: Arc<Mutex<Vec<Arc<SortExec>>>>,
}

impl PackedSortExec {
    pub fn new(sort: SortExec) -> PackedSortExec {
        PackedSortExec { sort, metrics: ExecutionPlanMetricsSet::new(), handed_over: Arc::default() }
    }

    /// The sort it stands for.
    pub fn sort(&self) -> &SortExec {
        &self.sort
    }
}

impl DisplayAs for PackedSortExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PackedSortExec: expr=[{}], preserve_partitioning=[{}]",
            self.sort.expr(),
            self.sort.preserve_partitioning()
        )
    }
}

impl ExecutionPlan for PackedSortExec {
    fn name(&self) -> &str {
        "PackedSortExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.sort.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.sort.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.sort.apply_expressions(f)
    }

    #[allow(deprecated, reason = "the sort's requirement, as DataFusion still asks for it")]
    fn required_input_distribution(&self) -> Vec<Distribution> {
        self.sort.required_input_distribution()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.sort.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.sort.maintains_input_order()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.sort.benefits_from_input_partitioning()
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        let sort = Arc::new(self.sort.clone()).replace_children(children, recompute)?;
        match sort.downcast_ref::<SortExec>() {
            Some(s) if packable(s) => Ok(Arc::new(PackedSortExec::new(s.clone()))),
            _ => Ok(sort),
        }
    }

    fn statistics_from_inputs(&self, input: &[Arc<Statistics>], args: &StatisticsArgs) -> DfResult<Arc<Statistics>> {
        self.sort.statistics_from_inputs(input, args)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.sort.child_stats_requests(partition)
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    fn metrics(&self) -> Option<MetricsSet> {
        let mut set = self.metrics.clone_inner();
        let handed_over = self.handed_over.lock().map(|s| s.clone()).unwrap_or_default();
        for metrics in handed_over.iter().filter_map(|sort| sort.metrics()) {
            metrics.iter().for_each(|m| set.push(Arc::clone(m)));
        }
        Some(set)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if self.sort.input().equivalence_properties().ordering_satisfy(self.sort.expr().clone())? {
            // Already in order: DataFusion's sort passes it through.
            return self.sort.execute(partition, context);
        }
        let input = self.sort.input().execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("PackedSortExec[{partition}]"))
            .with_can_spill(true)
            .register(&context.runtime_env().memory_pool);
        let packing = Packing {
            sort: self.sort.clone(),
            partition,
            context: Arc::clone(&context),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            handed_over_count: MetricBuilder::new(&self.metrics).counter("handed_over", partition),
            handed_over: Arc::clone(&self.handed_over),
            reservation,
        };
        let stream = futures::stream::once(packing.run(input)).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.sort.schema(), stream)))
    }
}

/// One partition's sort, from the first batch in to the sorted stream out.
struct Packing {
    sort: SortExec,
    partition: usize,
    context: Arc<TaskContext>,
    baseline: BaselineMetrics,
    handed_over_count: Count,
    handed_over: Arc<Mutex<Vec<Arc<SortExec>>>>,
    reservation: MemoryReservation,
}

impl Packing {
    async fn run(self, mut input: SendableRecordBatchStream) -> DfResult<SendableRecordBatchStream> {
        let exprs: Vec<_> = self.sort.expr().iter().map(|e| (Arc::clone(&e.expr), e.options)).collect();
        let mut stats = vec![Stats::default(); exprs.len()];
        // The key columns that are columns of the batch, which share its (compacted) arrays.
        let key_columns: Vec<Option<usize>> =
            exprs.iter().map(|(e, _)| e.downcast_ref::<Column>().map(Column::index)).collect();
        // Text columns held compacted while every value so far has been a pseudonym.
        let mut compacting: Vec<bool> =
            self.sort.input().schema().fields().iter().map(|f| compact_pseudonyms::is_text(f.data_type())).collect();
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut keys: Vec<Vec<ArrayRef>> = Vec::new();
        let compute = self.baseline.elapsed_compute().clone();
        while let Some(batch) = input.next().await {
            let mut batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let timer = compute.timer();
            let mut size = 0;
            let mut columns = Vec::with_capacity(exprs.len());
            let mut fits = true;
            for ((expr, _), column_of) in exprs.iter().zip(&key_columns) {
                let column = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
                if column_of.is_none() {
                    size += column.get_array_memory_size();
                }
                columns.push(column);
            }
            for (c, compacted) in compacting.iter_mut().enumerate() {
                if !*compacted {
                    continue;
                }
                if let Some(small) = compact_pseudonyms::compact(batch.column(c).as_ref()) {
                    batch = compact_pseudonyms::replace_column(&batch, c, small)?;
                    continue;
                }
                // Text that is not a pseudonym: this column is text again in every batch buffered.
                *compacted = false;
                let text = self.sort.input().schema().field(c).data_type().clone();
                for (buffered, buffered_keys) in batches.iter_mut().zip(&mut keys) {
                    let column = compact_pseudonyms::expand(buffered.column(c).as_ref(), &text)?;
                    size += column.get_array_memory_size();
                    *buffered = compact_pseudonyms::replace_column(buffered, c, column)?;
                    share_columns(buffered, buffered_keys, &key_columns);
                }
            }
            share_columns(&batch, &mut columns, &key_columns);
            for (column, stats) in columns.iter().zip(&mut stats) {
                fits &= stats.observe(column.as_ref());
            }
            size += batch.get_array_memory_size();
            timer.done();
            batches.push(batch);
            keys.push(columns);
            if !fits || self.reservation.try_grow(size).is_err() {
                return self.hand_over(batches, input);
            }
        }
        if batches.is_empty() {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(self.sort.schema(), futures::stream::empty())));
        }
        let timer = compute.timer();
        let options: Vec<SortOptions> = exprs.iter().map(|(_, o)| *o).collect();
        let Some(layout) = Layout::new(&stats, &options) else {
            return self.hand_over(batches, input);
        };
        let sorted = match layout.width {
            0..=8 => self.sorted::<Entry8>(&layout, batches, &keys),
            9..=16 => self.sorted::<Entry16>(&layout, batches, &keys),
            17..=24 => self.sorted::<Entry24>(&layout, batches, &keys),
            _ => self.sorted::<Entry32>(&layout, batches, &keys),
        };
        timer.done();
        sorted
    }

    /// Sorts the buffered rows on their packed keys and streams them out in that order.
    fn sorted<E: Entry>(
        self,
        layout: &Layout,
        batches: Vec<RecordBatch>,
        keys: &[Vec<ArrayRef>],
    ) -> DfResult<SendableRecordBatchStream> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if self.reservation.try_grow(rows * size_of::<E>()).is_err() {
            let nothing_more = Box::pin(RecordBatchStreamAdapter::new(self.sort.schema(), futures::stream::empty()));
            return self.hand_over(batches, nothing_more);
        }
        let mut entries: Vec<E> = Vec::with_capacity(rows);
        let mut packed = Vec::new();
        // Keys start at the entry key's highest byte, which the first pass of the sort buckets on.
        let align = E::BYTES - layout.width;
        for (b, columns) in keys.iter().enumerate() {
            packed.clear();
            packed.resize(columns[0].len(), Wide::default());
            layout.pack(columns, &mut packed);
            entries
                .extend(packed.iter().enumerate().map(|(row, key)| E::new(key.push(align, 0), b as u32, row as u32)));
        }
        sort_entries(&mut entries);
        if layout.ties > 0 {
            let options: Vec<SortOptions> = self.sort.expr().iter().map(|e| e.options).collect();
            break_ties(&mut entries, keys, layout.fields.len(), &options)?;
        }
        let out = Sorted {
            schema: self.sort.schema(),
            batches,
            entries,
            next: 0,
            batch_size: self.context.session_config().batch_size().max(1),
            baseline: self.baseline,
            reservation: self.reservation,
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.sort.schema(), futures::stream::iter(out))))
    }

    /// Gives the partition to DataFusion's sort: the batches buffered so far, then the rest of `input`.
    fn hand_over(
        self,
        buffered: Vec<RecordBatch>,
        input: SendableRecordBatchStream,
    ) -> DfResult<SendableRecordBatchStream> {
        self.reservation.free();
        self.handed_over_count.add(1);
        let schema = input.schema();
        // Pseudonyms compacted while buffering are given back as text one batch at a time, as DataFusion's sort reads (and spills) them.
        let text = Arc::clone(&schema);
        let restored = buffered.into_iter().map(move |b| compact_pseudonyms::expand_batch(b, &text));
        let replayed = futures::stream::iter(restored).chain(input);
        let replay = Replay {
            properties: Arc::clone(self.sort.input().properties()),
            stream: Mutex::new(Some(Box::pin(RecordBatchStreamAdapter::new(schema, replayed)))),
        };
        let sort = Arc::new(
            SortExec::new(self.sort.expr().clone(), Arc::new(replay))
                .with_preserve_partitioning(self.sort.preserve_partitioning()),
        );
        if let Ok(mut list) = self.handed_over.lock() {
            list.push(Arc::clone(&sort));
        }
        sort.execute(self.partition, self.context)
    }
}

/// Points the key columns that are columns of `batch` at its arrays, so that each array is held once.
fn share_columns(batch: &RecordBatch, keys: &mut [ArrayRef], key_columns: &[Option<usize>]) {
    for (key, column_of) in keys.iter_mut().zip(key_columns) {
        if let Some(c) = column_of {
            *key = Arc::clone(batch.column(*c));
        }
    }
}

/// A packed key being built: 256 bits, the newest column in the lowest bits.
#[derive(Clone, Copy, Default)]
struct Wide {
    hi: u128,
    lo: u128,
}

impl Wide {
    /// Makes room for `bytes` more bytes of key (fewer than 32) and puts `v`, narrower than them, there.
    fn push(self, bytes: usize, v: u128) -> Wide {
        let bits = 8 * bytes as u32;
        let (hi, lo) = match bits {
            0 => (self.hi, self.lo),
            1..128 => (self.hi << bits | self.lo >> (128 - bits), self.lo << bits),
            _ => (self.lo << (bits - 128), 0),
        };
        Wide { hi, lo: lo | v }
    }
}

/// A row's packed key, as wide as the layout needs, and where the row is.
trait Entry: Copy + Send + 'static {
    /// Bytes of key it holds.
    const BYTES: usize;
    type Key: Ord + Copy;
    /// The entry for a key of `BYTES` bytes held in the low bytes of `key`.
    fn new(key: Wide, batch: u32, row: u32) -> Self;
    fn key(&self) -> Self::Key;
    /// The key's first byte.
    fn top(&self) -> u8;
    /// The row's batch and its place there.
    fn at(&self) -> (usize, usize);
}

#[derive(Clone, Copy)]
struct Entry8 {
    key: u64,
    batch: u32,
    row: u32,
}

impl Entry for Entry8 {
    const BYTES: usize = 8;
    type Key = u64;
    fn new(key: Wide, batch: u32, row: u32) -> Self {
        Entry8 { key: key.lo as u64, batch, row }
    }
    fn key(&self) -> u64 {
        self.key
    }
    fn top(&self) -> u8 {
        (self.key >> 56) as u8
    }
    fn at(&self) -> (usize, usize) {
        (self.batch as usize, self.row as usize)
    }
}

#[derive(Clone, Copy)]
struct Entry16 {
    key: u128,
    batch: u32,
    row: u32,
}

impl Entry for Entry16 {
    const BYTES: usize = 16;
    type Key = u128;
    fn new(key: Wide, batch: u32, row: u32) -> Self {
        Entry16 { key: key.lo, batch, row }
    }
    fn key(&self) -> u128 {
        self.key
    }
    fn top(&self) -> u8 {
        (self.key >> 120) as u8
    }
    fn at(&self) -> (usize, usize) {
        (self.batch as usize, self.row as usize)
    }
}

/// 32 bytes, where a tuple key `(u128, u64)` would pad the entry to 48.
#[derive(Clone, Copy)]
struct Entry24 {
    hi: u128,
    lo: u64,
    batch: u32,
    row: u32,
}

impl Entry for Entry24 {
    const BYTES: usize = 24;
    type Key = (u128, u64);
    fn new(key: Wide, batch: u32, row: u32) -> Self {
        Entry24 { hi: key.hi << 64 | key.lo >> 64, lo: key.lo as u64, batch, row }
    }
    fn key(&self) -> (u128, u64) {
        (self.hi, self.lo)
    }
    fn top(&self) -> u8 {
        (self.hi >> 120) as u8
    }
    fn at(&self) -> (usize, usize) {
        (self.batch as usize, self.row as usize)
    }
}

#[derive(Clone, Copy)]
struct Entry32 {
    hi: u128,
    lo: u128,
    batch: u32,
    row: u32,
}

impl Entry for Entry32 {
    const BYTES: usize = 32;
    type Key = (u128, u128);
    fn new(key: Wide, batch: u32, row: u32) -> Self {
        Entry32 { hi: key.hi, lo: key.lo, batch, row }
    }
    fn key(&self) -> (u128, u128) {
        (self.hi, self.lo)
    }
    fn top(&self) -> u8 {
        (self.hi >> 120) as u8
    }
    fn at(&self) -> (usize, usize) {
        (self.batch as usize, self.row as usize)
    }
}

/// Orders each run of entries whose packed keys tie by the key columns from `from` on, compared
/// in Arrow's row format: only the tied rows are converted (a patient's invoices of one day,
/// ordered by their record ids), not every row.
fn break_ties<E: Entry>(
    entries: &mut [E],
    keys: &[Vec<ArrayRef>],
    from: usize,
    options: &[SortOptions],
) -> DfResult<()> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let key = entries[start].key();
        let end = start + entries[start..].iter().take_while(|e| e.key() == key).count();
        if end - start > 1 {
            runs.push(start..end);
        }
        start = end;
    }
    if runs.is_empty() {
        return Ok(());
    }
    let tied: Vec<(usize, usize)> = runs.iter().flat_map(|r| entries[r.clone()].iter().map(E::at)).collect();
    let width = keys.first().map_or(0, Vec::len);
    let mut columns = Vec::with_capacity(width - from);
    let mut fields = Vec::with_capacity(width - from);
    for k in from..width {
        let arrays: Vec<&dyn Array> = keys.iter().map(|batch| batch[k].as_ref()).collect();
        fields.push(SortField::new_with_options(arrays[0].data_type().clone(), options[k]));
        columns.push(interleave(&arrays, &tied)?);
    }
    let rows = RowConverter::new(fields)?.convert_columns(&columns)?;
    let mut first = 0;
    for run in runs {
        let mut order: Vec<usize> = (first..first + run.len()).collect();
        order.sort_unstable_by(|&a, &b| rows.row(a).cmp(&rows.row(b)));
        let sorted: Vec<E> = order.iter().map(|&i| entries[run.start + i - first]).collect();
        entries[run.clone()].copy_from_slice(&sorted);
        first += run.len();
    }
    Ok(())
}

/// Sorts by key: first into 256 buckets by the key's first byte, in place,
/// then each bucket, small enough to sort within the CPU's cache.
fn sort_entries<E: Entry>(entries: &mut [E]) {
    let mut ends = [0usize; 256];
    for e in entries.iter() {
        ends[usize::from(e.top())] += 1;
    }
    let mut starts = [0usize; 256];
    let mut total = 0;
    for (start, end) in starts.iter_mut().zip(&mut ends) {
        *start = total;
        total += *end;
        *end = total;
    }
    // American flag sort: each entry is swapped straight into its bucket's next free place.
    let mut next = starts;
    for bucket in 0..256 {
        while next[bucket] < ends[bucket] {
            let mut e = entries[next[bucket]];
            loop {
                let b = usize::from(e.top());
                if b == bucket {
                    break;
                }
                std::mem::swap(&mut e, &mut entries[next[b]]);
                next[b] += 1;
            }
            entries[next[bucket]] = e;
            next[bucket] += 1;
        }
    }
    for (&start, &end) in starts.iter().zip(&ends) {
        entries[start..end].sort_unstable_by_key(E::key);
    }
}

/// The sorted rows, gathered a batch at a time.
struct Sorted<E> {
    /// The sort's output schema, with text where pseudonyms were compacted while buffering.
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    entries: Vec<E>,
    next: usize,
    batch_size: usize,
    baseline: BaselineMetrics,
    reservation: MemoryReservation,
}

impl<E: Entry> Iterator for Sorted<E> {
    type Item = DfResult<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.entries.len() {
            // Done: the buffered rows and their memory go back now, not when the stream is dropped.
            self.batches = Vec::new();
            self.entries = Vec::new();
            self.reservation.free();
            return None;
        }
        let timer = self.baseline.elapsed_compute().timer();
        let end = (self.next + self.batch_size).min(self.entries.len());
        let indices: Vec<(usize, usize)> = self.entries[self.next..end].iter().map(E::at).collect();
        self.next = end;
        let batch = self.gather(&indices);
        timer.done();
        if let Ok(b) = &batch {
            self.baseline.record_output(b.num_rows());
        }
        Some(batch)
    }
}

impl<E> Sorted<E> {
    /// The rows `indices` picks from the buffered batches, pseudonyms held compacted as text again.
    fn gather(&self, indices: &[(usize, usize)]) -> DfResult<RecordBatch> {
        let columns = (self.schema.fields().iter().enumerate())
            .map(|(c, field)| {
                let arrays: Vec<&dyn Array> = self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                if arrays[0].data_type() == field.data_type() {
                    Ok(interleave(&arrays, indices)?)
                } else {
                    compact_pseudonyms::gather(&arrays, indices, field.data_type())
                }
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// What a sort key's type packs as.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Integers, decimals, dates and timestamps: the offset from the smallest value.
    Int,
    Float64,
    Float32,
    Bool,
    /// Short text, or pseudonyms as the 16 bytes their hex digits spell.
    Text,
}

impl Kind {
    fn of(t: &DataType) -> Option<Kind> {
        use DataType::*;
        match t {
            Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Date32
            | Date64
            | Timestamp(_, _)
            | Decimal128(_, _) => Some(Kind::Int),
            Float64 => Some(Kind::Float64),
            Float32 => Some(Kind::Float32),
            Boolean => Some(Kind::Bool),
            Utf8 | LargeUtf8 | Utf8View => Some(Kind::Text),
            _ => None,
        }
    }
}

/// What the buffered values of one key column need in order to be packed.
#[derive(Clone, Debug)]
struct Stats {
    kind: Option<Kind>,
    nulls: bool,
    min: i128,
    max: i128,
    /// Every text value so far is a pseudonym.
    hex: bool,
    longest: usize,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { kind: None, nulls: false, min: i128::MAX, max: i128::MIN, hex: true, longest: 0 }
    }
}

/// Text up to this long packs as itself; longer text only as a pseudonym.
const SHORT_TEXT: usize = 15;

impl Stats {
    /// Takes in a batch's key column; false once the column cannot be packed.
    fn observe(&mut self, column: &dyn Array) -> bool {
        if *column.data_type() == compact_pseudonyms::COMPACT {
            return self.observe_compacted(column);
        }
        let Some(kind) = Kind::of(column.data_type()) else { return false };
        if self.kind.is_some_and(|k| k != kind) {
            return false;
        }
        self.kind = Some(kind);
        self.nulls |= column.null_count() > 0;
        match kind {
            Kind::Int => {
                let (min, max) = (&mut self.min, &mut self.max);
                each_int(column, &mut |_, v| {
                    *min = (*min).min(v);
                    *max = (*max).max(v);
                });
            }
            Kind::Text => {
                let (hex, longest) = (&mut self.hex, &mut self.longest);
                each_text(column, &mut |_, s| {
                    *longest = (*longest).max(s.len());
                    *hex = *hex && is_pseudonym(s);
                });
                return self.hex || self.longest <= SHORT_TEXT;
            }
            Kind::Float64 | Kind::Float32 | Kind::Bool => {}
        }
        true
    }

    /// Takes in a key column of pseudonyms held compacted: every value was checked as it was
    /// compacted, so only nulls and whether there is any value are left to see. (No key planned
    /// as a fixed-size binary gets here, since `packable` admits none: this type means compacted.)
    fn observe_compacted(&mut self, column: &dyn Array) -> bool {
        if self.kind.is_some_and(|k| k != Kind::Text) {
            return false;
        }
        self.kind = Some(Kind::Text);
        self.nulls |= column.null_count() > 0;
        if column.null_count() < column.len() {
            self.longest = self.longest.max(PSEUDONYM_LEN);
        }
        self.hex || self.longest <= SHORT_TEXT
    }
}

/// How a column's value is turned into its bytes of the key.
#[derive(Clone, Copy, Debug)]
enum Code {
    Int {
        min: i128,
    },
    Float64,
    Float32,
    Bool,
    Pseudonym,
    /// The bytes, zero-padded to `len`, then the length: shorter sorts first among equal prefixes.
    Short {
        len: usize,
    },
}

/// One key column's place in the packed key.
#[derive(Clone, Copy, Debug)]
struct Field {
    code: Code,
    /// A null flag byte before the value: the column has nulls.
    flag: bool,
    /// Bytes of the value, at most 16.
    width: usize,
    options: SortOptions,
}

/// The packed key's columns, left to right.
#[derive(Debug)]
struct Layout {
    /// The leading key columns that fit in [`MAX_WIDTH`] bytes, packed.
    fields: Vec<Field>,
    width: usize,
    /// The key columns after them, which order only rows whose packed keys tie.
    ties: usize,
}

impl Layout {
    /// The layout for these columns: as many leading ones as fit in [`MAX_WIDTH`] bytes packed,
    /// the rest left to break ties; `None` where a column cannot be packed or the first does not fit.
    fn new(stats: &[Stats], options: &[SortOptions]) -> Option<Layout> {
        let mut fields = Vec::with_capacity(stats.len());
        let mut offset = 0;
        let mut full = false;
        for (s, &options) in stats.iter().zip(options) {
            let (code, width) = match s.kind? {
                Kind::Int if s.min > s.max => (Code::Int { min: 0 }, 0),
                Kind::Int => (Code::Int { min: s.min }, bytes_for(s.max.wrapping_sub(s.min) as u128)),
                Kind::Float64 => (Code::Float64, 8),
                Kind::Float32 => (Code::Float32, 4),
                Kind::Bool => (Code::Bool, 1),
                Kind::Text if s.longest <= SHORT_TEXT => (Code::Short { len: s.longest }, s.longest + 1),
                Kind::Text if s.hex => (Code::Pseudonym, 16),
                Kind::Text => return None,
            };
            let end = offset + usize::from(s.nulls) + width;
            full |= end > MAX_WIDTH;
            if !full {
                fields.push(Field { code, flag: s.nulls, width, options });
                offset = end;
            }
        }
        let ties = stats.len() - fields.len();
        (!fields.is_empty()).then_some(Layout { fields, width: offset, ties })
    }

    /// Appends each row's key to `packed` (one per row).
    fn pack(&self, columns: &[ArrayRef], packed: &mut [Wide]) {
        for (field, column) in self.fields.iter().zip(columns) {
            let column = column.as_ref();
            if field.flag {
                let (null, valid) = if field.options.nulls_first { (0, 1) } else { (1, 0) };
                for (i, key) in packed.iter_mut().enumerate() {
                    *key = key.push(1, if column.is_null(i) { null } else { valid });
                }
            }
            let width = field.width;
            packed.iter_mut().for_each(|key| *key = key.push(width, 0));
            // Descending: the value's bytes complemented. A null's bytes stay zero, as its flag decides.
            let flip = if field.options.descending { mask(width) } else { 0 };
            let mut put = |i: usize, v: u128| packed[i].lo |= v ^ flip;
            match field.code {
                Code::Int { min } => each_int(column, &mut |i, v| put(i, v.wrapping_sub(min) as u128)),
                Code::Float64 => {
                    let c = column.as_primitive::<Float64Type>();
                    each_valid(column, |i| put(i, u128::from(ordered_f64(c.value(i)))));
                }
                Code::Float32 => {
                    let c = column.as_primitive::<Float32Type>();
                    each_valid(column, |i| put(i, u128::from(ordered_f32(c.value(i)))));
                }
                Code::Bool => {
                    let c = column.as_boolean();
                    each_valid(column, |i| put(i, u128::from(c.value(i))));
                }
                // Every value was checked to be a pseudonym while buffering (and may be held compacted).
                Code::Pseudonym if *column.data_type() == compact_pseudonyms::COMPACT => {
                    let c = column.as_fixed_size_binary();
                    each_valid(column, |i| put(i, c.value(i).try_into().map(u128::from_be_bytes).unwrap_or_default()));
                }
                Code::Pseudonym => each_text(column, &mut |i, s| put(i, pseudonym_bits(s).unwrap_or_default())),
                Code::Short { len } => each_text(column, &mut |i, s| put(i, short(s, len))),
            }
        }
    }
}

/// The least number of bytes that hold `n`.
fn bytes_for(n: u128) -> usize {
    (128 - n.leading_zeros() as usize).div_ceil(8)
}

/// The low `width` bytes set.
fn mask(width: usize) -> u128 {
    if width >= 16 { u128::MAX } else { (1u128 << (8 * width)) - 1 }
}

/// `f64::total_cmp`'s order as an unsigned integer's, as Arrow sorts floats.
fn ordered_f64(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 { !bits } else { bits | 1 << 63 }
}

fn ordered_f32(v: f32) -> u32 {
    let bits = v.to_bits();
    if bits >> 31 == 1 { !bits } else { bits | 1 << 31 }
}

/// Short text's bytes, zero-padded to `len`, then its length.
fn short(s: &[u8], len: usize) -> u128 {
    let v = s.iter().fold(0u128, |v, &c| v << 8 | u128::from(c));
    (v << (8 * (len - s.len()))) << 8 | s.len() as u128
}

/// Calls `f` for each row that is not null.
fn each_valid(column: &dyn Array, f: impl FnMut(usize)) {
    match column.nulls() {
        Some(nulls) if nulls.null_count() > 0 => nulls.valid_indices().for_each(f),
        _ => (0..column.len()).for_each(f),
    }
}

/// Calls `f` with each row that is not null and its value as a 128-bit integer.
fn each_int(column: &dyn Array, f: &mut dyn FnMut(usize, i128)) {
    fn go<T: ArrowPrimitiveType>(column: &dyn Array, f: &mut dyn FnMut(usize, i128))
    where
        T::Native: Into<i128>,
    {
        let values = column.as_primitive::<T>().values();
        each_valid(column, |i| f(i, values[i].into()));
    }
    match column.data_type() {
        DataType::Int8 => go::<Int8Type>(column, f),
        DataType::Int16 => go::<Int16Type>(column, f),
        DataType::Int32 => go::<Int32Type>(column, f),
        DataType::Int64 => go::<Int64Type>(column, f),
        DataType::UInt8 => go::<UInt8Type>(column, f),
        DataType::UInt16 => go::<UInt16Type>(column, f),
        DataType::UInt32 => go::<UInt32Type>(column, f),
        DataType::UInt64 => go::<UInt64Type>(column, f),
        DataType::Date32 => go::<Date32Type>(column, f),
        DataType::Date64 => go::<Date64Type>(column, f),
        DataType::Timestamp(TimeUnit::Second, _) => go::<TimestampSecondType>(column, f),
        DataType::Timestamp(TimeUnit::Millisecond, _) => go::<TimestampMillisecondType>(column, f),
        DataType::Timestamp(TimeUnit::Microsecond, _) => go::<TimestampMicrosecondType>(column, f),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => go::<TimestampNanosecondType>(column, f),
        DataType::Decimal128(_, _) => go::<Decimal128Type>(column, f),
        // `Kind::of` admits no other type as `Int`.
        _ => {}
    }
}

/// Calls `f` with each row that is not null and its text's bytes.
fn each_text(column: &dyn Array, f: &mut dyn FnMut(usize, &[u8])) {
    match column.data_type() {
        DataType::Utf8 => {
            let c = column.as_string::<i32>();
            each_valid(column, |i| f(i, c.value(i).as_bytes()));
        }
        DataType::LargeUtf8 => {
            let c = column.as_string::<i64>();
            each_valid(column, |i| f(i, c.value(i).as_bytes()));
        }
        DataType::Utf8View => {
            let c = column.as_string_view();
            each_valid(column, |i| f(i, c.value(i).as_bytes()));
        }
        // `Kind::of` admits no other type as `Text`.
        _ => {}
    }
}

/// A partition's stream played back once, as a plan node for DataFusion's sort to read.
struct Replay {
    properties: Arc<PlanProperties>,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Replay")
    }
}

impl DisplayAs for Replay {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Replay")
    }
}

impl ExecutionPlan for Replay {
    fn name(&self) -> &str {
        "Replay"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() { Ok(self) } else { internal_err!("Replay has no children") }
    }

    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        match self.stream.lock().ok().and_then(|mut s| s.take()) {
            Some(stream) => Ok(stream),
            None => internal_err!("a replayed partition is read once"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::testing::collect;
    use arrow::array::{
        BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array, LargeStringArray, StringArray,
        StringViewArray,
    };
    use arrow::datatypes::{Field as ArrowField, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// A context over table `t` in `parts` partitions, with or without the rule, and a memory pool of `memory` bytes.
    fn context(batches: &[RecordBatch], parts: usize, rule: bool, memory: usize) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(2).with_batch_size(50);
        config.options_mut().execution.sort_spill_reservation_bytes = memory / 16;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(memory)))
            .build_arc()
            .expect("a runtime environment");
        let mut state =
            SessionStateBuilder::new().with_config(config).with_runtime_env(runtime).with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(PackedSort));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let mut partitions = vec![Vec::new(); parts];
        for (i, b) in batches.iter().enumerate() {
            partitions[i % parts].push(b.clone());
        }
        let table = MemTable::try_new(batches[0].schema(), partitions).expect("the batches share a schema");
        ctx.register_table("t", Arc::new(table)).expect("a fresh context");
        ctx
    }

    fn text(batches: &[RecordBatch]) -> String {
        pretty_format_batches(batches).expect("prints").to_string()
    }

    /// One generated row: every key type the node packs, nulls among them, and a unique id.
    #[derive(Clone, Debug)]
    struct Row {
        int: Option<i32>,
        float: Option<f64>,
        pseudonym: Option<String>,
        short: Option<String>,
        amount: Option<i128>,
        flag: Option<bool>,
        big: i64,
        note: String,
        /// Pseudonyms (held compacted while buffered), once in a while text that is not one.
        visitor: Option<String>,
        /// Pseudonyms only, as `LargeUtf8`.
        carer: Option<String>,
    }

    fn row() -> impl Strategy<Value = Row> {
        let float = prop_oneof![
            Just(f64::NAN),
            Just(-0.0),
            Just(0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            -3.0..3.0f64
        ];
        // Few distinct pseudonyms, so that rows tie on them and the next key decides.
        let pseudonym = (0..6u32)
            .prop_map(|i| format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)));
        (
            prop::option::of(-3..3i32),
            prop::option::of(float),
            prop::option::of(pseudonym.clone()),
            prop::option::of("[a-c\u{0}é]{0,4}"),
            prop::option::of(-1_000_000_000_000i128..1_000_000_000_000),
            prop::option::of(any::<bool>()),
            any::<i64>(),
            "[a-z]{16,20}",
            prop::option::of(prop_oneof![12 => pseudonym.clone(), 1 => "[0-9A-F]{32}"]),
            prop::option::of(pseudonym.clone()),
        )
            .prop_map(|(int, float, pseudonym, short, amount, flag, big, note, visitor, carer)| Row {
                int,
                float,
                pseudonym,
                short,
                amount,
                flag,
                big,
                note,
                visitor,
                carer,
            })
    }

    fn batches(rows: &[Row], size: usize) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new("id", DataType::Int64, false),
            ArrowField::new("int", DataType::Int32, true),
            ArrowField::new("float", DataType::Float64, true),
            ArrowField::new("pseudonym", DataType::Utf8, true),
            ArrowField::new("short", DataType::Utf8View, true),
            ArrowField::new("amount", DataType::Decimal128(15, 2), true),
            ArrowField::new("flag", DataType::Boolean, true),
            ArrowField::new("big", DataType::Int64, false),
            ArrowField::new("note", DataType::Utf8, false),
            ArrowField::new("visitor", DataType::Utf8View, true),
            ArrowField::new("carer", DataType::LargeUtf8, true),
        ]));
        rows.chunks(size.max(1))
            .enumerate()
            .map(|(c, chunk)| {
                let id = Int64Array::from_iter_values((0..chunk.len()).map(|i| (c * size + i) as i64));
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(id),
                    Arc::new(Int32Array::from_iter(chunk.iter().map(|r| r.int))),
                    Arc::new(Float64Array::from_iter(chunk.iter().map(|r| r.float))),
                    Arc::new(StringArray::from_iter(chunk.iter().map(|r| r.pseudonym.clone()))),
                    Arc::new(StringViewArray::from_iter(chunk.iter().map(|r| r.short.clone()))),
                    Arc::new(
                        Decimal128Array::from_iter(chunk.iter().map(|r| r.amount))
                            .with_precision_and_scale(15, 2)
                            .expect("a valid decimal type"),
                    ),
                    Arc::new(BooleanArray::from_iter(chunk.iter().map(|r| r.flag))),
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.big))),
                    Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.note.as_str()))),
                    Arc::new(StringViewArray::from_iter(chunk.iter().map(|r| r.visitor.clone()))),
                    Arc::new(LargeStringArray::from_iter(chunk.iter().map(|r| r.carer.clone()))),
                ];
                RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema")
            })
            .collect()
    }

    /// ORDER BY clauses over the packable keys: every direction and null placement,
    /// keys of up to 8, 16, 24 and 32 bytes and wider ones; and those the node must hand
    /// over, with text that is neither short nor pseudonyms.
    const ORDERS: [(&str, bool); 12] = [
        ("int DESC NULLS LAST", true),
        ("pseudonym, amount DESC", true),
        ("pseudonym DESC NULLS FIRST, float, flag", true),
        ("short NULLS FIRST, int DESC, float DESC NULLS LAST", true),
        ("amount, pseudonym DESC, flag NULLS FIRST", true),
        ("flag DESC, short DESC, amount NULLS FIRST", true),
        ("note, int", false),
        // Wider than 32 bytes: the leading keys packed, the others breaking their ties.
        ("float, float * 2, float * 3 DESC, float * 5, float * 7", true),
        ("pseudonym, int DESC, amount, short DESC NULLS FIRST, flag", true),
        ("flag, pseudonym DESC, big, amount DESC NULLS LAST", true),
        ("pseudonym, note", false),
        // A second pseudonym beyond the packed 32 bytes, its ties broken on its compacted bytes.
        ("pseudonym, carer DESC NULLS FIRST, int", true),
    ];

    /// The key columns in output order, and every row (ids included) in a fixed order.
    fn sorted(ctx: &SessionContext, order: &str) -> (String, String) {
        let mut keys: Vec<&str> = order.split(',').map(|k| k.split_whitespace().next().unwrap_or_default()).collect();
        keys.dedup();
        let sql = format!("SELECT {}, id FROM t ORDER BY {order}", keys.join(", "));
        let batches = collect(ctx, &sql);
        let key_columns: Vec<usize> = (0..keys.len()).collect();
        let projected: Vec<RecordBatch> =
            batches.iter().map(|b| b.project(&key_columns).expect("the key columns")).collect();
        let mut rows: Vec<String> = text(&batches).lines().map(str::to_owned).collect();
        rows.sort();
        (text(&projected), rows.join("\n"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn order_agrees_with_datafusions_sort(
            rows in prop::collection::vec(row(), 1..150),
            size in 1usize..60,
            parts in 1usize..4,
        ) {
            let input = batches(&rows, size);
            let ours = context(&input, parts, true, 1 << 30);
            let theirs = context(&input, parts, false, 1 << 30);
            for (order, packs) in ORDERS {
                let analyzed = text(&collect(&ours, &format!("EXPLAIN ANALYZE SELECT * FROM t ORDER BY {order}")));
                prop_assert!(analyzed.contains("PackedSortExec"), "{}", analyzed);
                prop_assert_eq!(analyzed.contains("handed_over=0"), packs, "{}", analyzed);
                prop_assert_eq!(sorted(&ours, order), sorted(&theirs, order), "{}", order);
            }
        }
    }

    /// Rows that do not fit the memory pool go to DataFusion's sort, which spills them, in the same order.
    #[test]
    fn a_sort_beyond_the_memory_pool_is_handed_over_and_spills() {
        let rows: Vec<Row> = (0..40_000u32)
            .map(|i| Row {
                int: Some((i % 7) as i32),
                float: None,
                pseudonym: Some(format!(
                    "{:032x}",
                    u128::from(i).wrapping_mul(0x2545_f491_4f6c_dd1d_6a09_e667_f3bc_c909)
                )),
                short: None,
                amount: Some(i128::from(i % 101)),
                flag: None,
                big: i64::from(i),
                note: String::new(),
                // No text views: DataFusion's merge counts a view's whole buffer in every batch sharing it.
                visitor: None,
                carer: None,
            })
            .collect();
        let input = batches(&rows, 1000);
        // Small enough that both partitions are handed over, large enough for both of DataFusion's
        // merges: a sort that takes over while it is the pool's only spilling consumer may take all
        // of a fair pool, and the other's merge reservation then fails.
        let small = context(&input, 2, true, 4 << 20);
        let plan = text(&collect(&small, "EXPLAIN ANALYZE SELECT * FROM t ORDER BY pseudonym, amount DESC"));
        let line = plan.lines().find(|l| l.contains("PackedSortExec")).unwrap_or_else(|| panic!("{plan}"));
        assert!(line.contains("handed_over=2"), "{line}");
        assert!(!line.contains("spill_count=0,"), "{line}");
        let roomy = context(&input, 2, false, 1 << 30);
        assert_eq!(sorted(&small, "pseudonym, amount DESC"), sorted(&roomy, "pseudonym, amount DESC"));
    }

    proptest! {
        #[test]
        fn short_text_packs_in_its_order(a in prop::collection::vec(any::<u8>(), 0..=15), b in prop::collection::vec(any::<u8>(), 0..=15)) {
            let len = a.len().max(b.len());
            prop_assert_eq!(short(&a, len).cmp(&short(&b, len)), a.cmp(&b));
        }

        #[test]
        fn floats_pack_in_total_order(a in any::<f64>(), b in any::<f64>(), c in any::<f32>(), d in any::<f32>()) {
            prop_assert_eq!(ordered_f64(a).cmp(&ordered_f64(b)), a.total_cmp(&b));
            prop_assert_eq!(ordered_f32(c).cmp(&ordered_f32(d)), c.total_cmp(&d));
        }

        #[test]
        fn bucketed_sort_sorts(keys in prop::collection::vec(prop_oneof![any::<u64>(), 0..4u64, (0..4u64).prop_map(|k| k << 56)], 0..400)) {
            let mut entries: Vec<Entry8> = keys.iter().enumerate().map(|(i, &key)| Entry8 { key, batch: 0, row: i as u32 }).collect();
            sort_entries(&mut entries);
            let mut expected = keys.clone();
            expected.sort_unstable();
            prop_assert_eq!(entries.iter().map(|e| e.key).collect::<Vec<_>>(), expected);
            let mut rows: Vec<u32> = entries.iter().map(|e| e.row).collect();
            rows.sort_unstable();
            prop_assert_eq!(rows, (0..keys.len() as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn wide_keys_shift_across_the_halves() {
        let w = Wide::default().push(16, u128::MAX).push(4, 0xabcd);
        assert_eq!((w.hi, w.lo), (0xffff_ffff, u128::MAX << 32 | 0xabcd));
        let e = Entry24::new(w.push(4, 0), 0, 0);
        assert_eq!(e.key(), (u128::MAX, 0xabcd_0000_0000));
        assert_eq!(e.top(), 0xff);
    }
}
