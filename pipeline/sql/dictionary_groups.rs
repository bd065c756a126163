//! An aggregate grouped by short text columns reads them as their Parquet pages' dictionaries and finds each entry's group once, not each row's.
//!
//! The warehouse's text columns other than pseudonyms (care type,
//! diagnosis, provider code, medicine) hold a few hundred values at most,
//! and every page of them is dictionary-encoded. DataFusion decodes each row
//! into a string view and hashes it into the group table: `GROUP BY
//! care_type` over 10M invoices spent most of its time there. Where an
//! aggregate's keys are such columns, read straight from the files, this
//! rule has the scan keep them as dictionaries (a key per row, the
//! dictionary once per row group); [`DictionaryGroupsExec`] looks up each
//! combination of entries in DataFusion's group table once per dictionary
//! and gives each row its combination's group. It emits the keys as text,
//! exactly what DataFusion's node would, so nothing above changes. A filter
//! on the way that reads one key column (`main_diagnosis LIKE 'J%'`) is
//! worked out once per dictionary entry ([`OnDictionaries`]); a repartition
//! by the keys (before a one-phase `median`) hashes them as their text
//! would be hashed. A file with a column that is not dictionary-encoded
//! throughout, or a plan where anything else reads the key columns, is left
//! to DataFusion.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Int32Array, RecordBatch, new_null_array};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Int32Type, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::utils::{collect_columns, split_conjunction};
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, StatisticsArgs,
};
use parquet::basic::Encoding;
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};

use super::batch_groups;
use super::restrict::RoleFilterExec;

/// A warehouse file's own columns, as the table learnt them from its footer.
#[derive(Debug)]
pub struct FileColumns {
    /// The file's schema as stored (text as `Utf8`, not views).
    schema: SchemaRef,
    /// Its text columns, pseudonyms aside, whose every data page is dictionary-encoded.
    dictionary: Vec<String>,
}

impl FileColumns {
    /// The columns of a file with this schema and footer; `pseudonyms` are never read as dictionaries.
    pub fn of(schema: &SchemaRef, footer: &ParquetMetaData, pseudonyms: &[&str]) -> FileColumns {
        let leaves = footer.file_metadata().schema_descr().columns();
        let dictionary = (schema.fields().iter())
            .filter(|f| f.data_type() == &DataType::Utf8 && !pseudonyms.contains(&f.name().as_str()))
            .filter(|f| {
                let leaf = leaves.iter().position(|c| c.path().parts() == std::slice::from_ref(f.name()));
                leaf.is_some_and(|i| footer.row_groups().iter().all(|g| all_dictionary(g.column(i))))
            })
            .map(|f| f.name().clone())
            .collect();
        FileColumns { schema: Arc::clone(schema), dictionary }
    }

    /// The file's schema with `names` read as dictionaries of text.
    fn with_dictionaries(&self, names: &BTreeSet<String>) -> SchemaRef {
        as_dictionaries(&self.schema, names)
    }
}

/// Is every data page of the column chunk dictionary-encoded?
fn all_dictionary(chunk: &ColumnChunkMetaData) -> bool {
    chunk.dictionary_page_offset().is_some()
        && chunk
            .page_encoding_stats_mask()
            .is_some_and(|pages| pages.is_only(Encoding::RLE_DICTIONARY) || pages.is_only(Encoding::PLAIN_DICTIONARY))
}

/// Is `t` a dictionary (a column this module's rules read as one)?
fn is_dictionary(t: &DataType) -> bool {
    matches!(t, DataType::Dictionary(..))
}

/// `schema` with the fields `names` as dictionaries of `Utf8` with `Int32` keys.
fn as_dictionaries(schema: &Schema, names: &BTreeSet<String>) -> SchemaRef {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let fields: Vec<Field> = (schema.fields().iter())
        .map(|f| match names.contains(f.name()) {
            true => f.as_ref().clone().with_data_type(dictionary.clone()),
            false => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Physical optimizer rule: a partial or one-phase aggregate whose keys are all dictionary-encoded
/// text columns of a warehouse scan becomes a [`DictionaryGroupsExec`] over a scan that keeps them as dictionaries.
#[derive(Debug, Default)]
pub struct DictionaryGroups;

impl PhysicalOptimizerRule for DictionaryGroups {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else { return Ok(Transformed::no(node)) };
            Ok(match dictionary_input(aggregate)? {
                Some(input) => Transformed::yes(Arc::new(DictionaryGroupsExec::new(aggregate.clone(), input)) as _),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_dictionary_groups"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The aggregate's input with its keys read as dictionaries, where that is possible.
fn dictionary_input(aggregate: &AggregateExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if !batch_groups::plain_grouping(aggregate) {
        return Ok(None);
    }
    let schema = aggregate.input().schema();
    let mut keys = BTreeSet::new();
    for (e, _) in aggregate.group_expr().expr() {
        match e.downcast_ref::<Column>() {
            Some(c) if schema.field(c.index()).data_type() == &DataType::Utf8View => keys.insert(c.index()),
            _ => return Ok(None),
        };
    }
    let arguments = aggregate.aggr_expr().iter().flat_map(|a| a.expressions());
    if arguments.flat_map(|e| collect_columns(&e)).any(|c| keys.contains(&c.index())) {
        return Ok(None);
    }
    read_as_dictionaries(aggregate.input(), &keys)
}

/// `plan` with its output columns `columns` read as dictionaries from the files, where they come
/// straight from a scan whose every file has them dictionary-encoded and nothing on the way reads
/// them but filters (worked out per entry) and repartitions by them (hashed as text).
pub(super) fn read_as_dictionaries(
    plan: &Arc<dyn ExecutionPlan>,
    columns: &BTreeSet<usize>,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let reads = |e: &Arc<dyn PhysicalExpr>, below: &BTreeSet<usize>| {
        collect_columns(e).iter().any(|c| below.contains(&c.index()))
    };
    let below = if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let mut below = BTreeSet::new();
        for &c in columns {
            match p.expr().get(c).and_then(|e| e.expr.downcast_ref::<Column>()) {
                Some(column) => below.insert(column.index()),
                None => return Ok(None),
            };
        }
        let others = p.expr().iter().enumerate().filter(|(i, _)| !columns.contains(i));
        if others.into_iter().any(|(_, e)| reads(&e.expr, &below)) {
            return Ok(None);
        }
        below
    } else if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let below = match f.projection() {
            Some(projection) => columns.iter().map(|&c| projection.get(c).copied()).collect::<Option<_>>(),
            None => Some(columns.clone()),
        };
        let Some(below) = below else { return Ok(None) };
        let Some(input) = read_as_dictionaries(f.input(), &below)? else { return Ok(None) };
        let schema = f.input().schema();
        let names = below.iter().map(|&c| schema.field(c).name().clone()).collect();
        let predicate = on_dictionaries(f.predicate(), &names, &schema)?;
        let filter = FilterExecBuilder::from(f).with_input(input).with_predicate(predicate).build()?;
        return Ok(Some(Arc::new(filter)));
    } else if let Some(r) = plan.downcast_ref::<RoleFilterExec>() {
        let below: Option<BTreeSet<usize>> = columns.iter().map(|&c| r.positions().get(c).copied()).collect();
        match below {
            Some(below) if !r.recodes() && !r.predicate().is_some_and(|p| reads(p, &below)) => {
                let Some(input) = read_as_dictionaries(r.children()[0], &below)? else { return Ok(None) };
                // Its schema is its input's, projected: made again from the new input.
                let filter =
                    RoleFilterExec::for_input(input, r.predicate().cloned(), r.positions().to_vec(), r.role())?;
                return Ok(Some(Arc::new(filter)));
            }
            _ => return Ok(None),
        }
    } else if let Some(r) = plan.downcast_ref::<RepartitionExec>() {
        // Rows dealt out by turns or by the hash of other columns pass as they are; rows dealt out
        // by the hash of the columns themselves are hashed as the text would be.
        match r.partitioning() {
            Partitioning::Hash(exprs, n) if exprs.iter().any(|e| reads(e, columns)) => {
                let mut hashed = Vec::with_capacity(exprs.len());
                for e in exprs {
                    match e.downcast_ref::<Column>() {
                        Some(c) if columns.contains(&c.index()) => hashed.push(Arc::new(HashedAsText {
                            column: Arc::clone(e),
                            text: r.input().schema().field(c.index()).data_type().clone(),
                            alone: exprs.len() == 1,
                        })
                            as Arc<dyn PhysicalExpr>),
                        _ if reads(e, columns) => return Ok(None),
                        _ => hashed.push(Arc::clone(e)),
                    }
                }
                let Some(input) = read_as_dictionaries(r.input(), columns)? else { return Ok(None) };
                let repartition = RepartitionExec::try_new(input, Partitioning::Hash(hashed, *n))?;
                return Ok(Some(Arc::new(if r.preserve_order() {
                    repartition.with_preserve_order()
                } else {
                    repartition
                })));
            }
            _ => columns.clone(),
        }
    } else if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        return dictionary_scan(scan, columns);
    } else {
        return Ok(None);
    };
    let Some(input) = read_as_dictionaries(plan.children()[0], &below)? else { return Ok(None) };
    let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    Ok(Some(Arc::clone(plan).replace_children(vec![input], recompute)?))
}

/// The Parquet scan with its output columns `columns` read as dictionaries, if they are text
/// columns of the files (not partition columns) that every file has dictionary-encoded.
fn dictionary_scan(scan: &DataSourceExec, columns: &BTreeSet<usize>) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else { return Ok(None) };
    let Some(source) = config.file_source().downcast_ref::<ParquetSource>() else { return Ok(None) };
    let Some(projection) = config.file_source().projection() else { return Ok(None) };
    let file_schema = config.file_schema();
    let mut names = BTreeSet::new();
    for &c in columns {
        let Some(i) = projection.iter().nth(c).and_then(|p| p.expr.downcast_ref::<Column>()).map(Column::index) else {
            return Ok(None);
        };
        match file_schema.fields().get(i) {
            Some(f) if f.data_type() == &DataType::Utf8View => names.insert(f.name().clone()),
            _ => return Ok(None),
        };
    }
    // Nothing else the scan computes reads them; what it filters by reads them as dictionaries.
    let others = projection.iter().enumerate().filter(|(i, _)| !columns.contains(i));
    let reads = |e: &Arc<dyn PhysicalExpr>| collect_columns(e).iter().any(|c| names.contains(c.name()));
    if others.into_iter().any(|(_, p)| reads(&p.expr)) {
        return Ok(None);
    }
    rebuilt_scan(config, source, &names, projection)
}

/// The scan of `config` (of the Parquet `source`) with the text columns `names` read as
/// dictionaries and `projection` (which reads them as dictionaries) computed over them; `None`
/// if a file has one of them not dictionary-encoded throughout.
pub(super) fn rebuilt_scan(
    config: &FileScanConfig,
    source: &ParquetSource,
    names: &BTreeSet<String>,
    projection: &ProjectionExprs,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let file_schema = config.file_schema();
    let predicate = match source.filter() {
        Some(p) => Some(on_dictionaries(&p, names, source.table_schema().table_schema())?),
        None => None,
    };
    // A scan rewritten before (for another node) keeps its dictionaries too.
    let mut all = names.clone();
    all.extend(file_schema.fields().iter().filter(|f| is_dictionary(f.data_type())).map(|f| f.name().clone()));
    let mut groups = Vec::with_capacity(config.file_groups.len());
    for group in &config.file_groups {
        let mut files = Vec::with_capacity(group.len());
        for file in group.iter() {
            let Some(own) = file.extensions.get::<FileColumns>() else { return Ok(None) };
            if !names.iter().all(|n| own.dictionary.contains(n)) {
                return Ok(None);
            }
            files.push(file.clone().with_arrow_schema(own.with_dictionaries(&all)));
        }
        groups.push(match group.file_statistics(None) {
            Some(stats) => FileGroup::new(files).with_statistics(Arc::new(stats.clone())),
            None => FileGroup::new(files),
        });
    }
    let table_schema = TableSchema::builder(as_dictionaries(file_schema, &all))
        .with_table_partition_cols(config.table_partition_cols().clone())
        .build();
    let mut dictionaries =
        ParquetSource::new(table_schema).with_table_parquet_options(source.table_parquet_options().clone());
    if let Some(factory) = source.parquet_file_reader_factory() {
        dictionaries = dictionaries.with_parquet_file_reader_factory(Arc::clone(factory));
    }
    if let Some(hint) = source.table_parquet_options().global.metadata_size_hint {
        dictionaries = dictionaries.with_metadata_size_hint(hint);
    }
    if let Some(predicate) = &predicate {
        dictionaries = dictionaries.with_predicate(Arc::clone(predicate));
    }
    let Some(dictionaries) = dictionaries.try_pushdown_projection(projection)? else { return Ok(None) };
    let mut config = config.clone();
    config.file_source = dictionaries;
    config.file_groups = groups;
    Ok(Some(DataSourceExec::from_data_source(config)))
}

/// `predicate` (over `schema`, where the columns `names` are text) with each of its conjuncts that
/// reads one of them made to read them as dictionaries.
fn on_dictionaries(
    predicate: &Arc<dyn PhysicalExpr>,
    names: &BTreeSet<String>,
    schema: &Schema,
) -> DfResult<Arc<dyn PhysicalExpr>> {
    let conjuncts = split_conjunction(predicate).into_iter().map(|c| OnDictionaries::wrap(c, names, schema));
    let mut all = conjuncts.collect::<DfResult<Vec<_>>>()?.into_iter();
    let first = all.next().ok_or_else(|| datafusion::error::DataFusionError::Internal("an empty predicate".into()))?;
    Ok(all.fold(first, |a, b| Arc::new(BinaryExpr::new(a, Operator::And, b)) as Arc<dyn PhysicalExpr>))
}

/// A condition or value planned over text columns that now arrive as dictionaries. Where it reads
/// one column and nothing else and is not volatile, it is worked out once for each entry of the
/// dictionary (and once for null) and each row takes its entry's answer; otherwise the columns are
/// decoded first.
#[derive(Debug)]
pub struct OnDictionaries {
    /// The condition as planned.
    inner: Arc<dyn PhysicalExpr>,
    /// The columns it reads that may come as dictionaries, with their type as planned.
    decoded: Vec<(String, DataType)>,
    /// Its answer's field as planned.
    field: FieldRef,
    /// The one column it reads, where it reads one and is not volatile (`random()` is drawn for
    /// each row): then it is worked out per entry. Derived from `inner` once, not per batch.
    per_entry: Option<Column>,
}

impl OnDictionaries {
    /// `expr` (over `schema`, where the columns `names` are text) made to read them as
    /// dictionaries, if it reads any of them.
    pub(super) fn wrap(
        expr: &Arc<dyn PhysicalExpr>,
        names: &BTreeSet<String>,
        schema: &Schema,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        let read: Vec<(String, DataType)> = (collect_columns(expr).iter())
            .filter(|column| names.contains(column.name()))
            .map(|column| (column.name().to_owned(), schema.field(column.index()).data_type().clone()))
            .collect();
        if read.is_empty() {
            return Ok(Arc::clone(expr));
        }
        Ok(Arc::new(OnDictionaries::new(Arc::clone(expr), read, expr.return_field(schema)?)))
    }

    fn new(inner: Arc<dyn PhysicalExpr>, decoded: Vec<(String, DataType)>, field: FieldRef) -> OnDictionaries {
        let read = collect_columns(&inner);
        let per_entry = match read.into_iter().collect::<Vec<_>>()[..] {
            [ref column] if !is_volatile(&inner) => Some(column.clone()),
            _ => None,
        };
        OnDictionaries { inner, decoded, field, per_entry }
    }

    /// The planned type of column `name`, where it may come as a dictionary.
    fn planned(&self, name: &str) -> Option<&DataType> {
        self.decoded.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The batch with the columns of `decoded` that came as dictionaries decoded to their planned type.
    fn decode(&self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let schema = batch.schema();
        let mut fields = Vec::with_capacity(batch.num_columns());
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (f, c) in schema.fields().iter().zip(batch.columns()) {
            match self.planned(f.name()).filter(|_| is_dictionary(c.data_type())) {
                Some(t) => {
                    fields.push(f.as_ref().clone().with_data_type(t.clone()));
                    columns.push(arrow::compute::cast(c, t)?);
                }
                None => {
                    fields.push(f.as_ref().clone());
                    columns.push(Arc::clone(c));
                }
            }
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), columns)?)
    }
}

impl PartialEq for OnDictionaries {
    fn eq(&self, other: &OnDictionaries) -> bool {
        self.inner.as_ref() == other.inner.as_ref() && self.decoded == other.decoded && self.field == other.field
    }
}

impl Eq for OnDictionaries {}

impl std::hash::Hash for OnDictionaries {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.decoded.hash(state);
        self.field.hash(state);
    }
}

impl fmt::Display for OnDictionaries {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (on dictionaries)", self.inner)
    }
}

impl PhysicalExpr for OnDictionaries {
    fn return_field(&self, _input_schema: &Schema) -> DfResult<FieldRef> {
        Ok(Arc::clone(&self.field))
    }

    fn evaluate(&self, batch: &RecordBatch) -> DfResult<ColumnarValue> {
        let single = self.per_entry.as_ref().and_then(|column| {
            let t = self.planned(column.name())?;
            let d = batch.column(column.index()).as_dictionary_opt::<Int32Type>()?;
            Some((column.index(), t, d))
        });
        let Some((index, planned, dictionary)) = single else { return self.inner.evaluate(&self.decode(batch)?) };
        // The entries, then null, in place of the column; the other columns (unread) as nulls.
        let entries = arrow::compute::concat(&[
            arrow::compute::cast(dictionary.values(), planned)?.as_ref(),
            new_null_array(planned, 1).as_ref(),
        ])?;
        let n = entries.len();
        let schema = batch.schema();
        let mut fields = Vec::with_capacity(batch.num_columns());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for (i, f) in schema.fields().iter().enumerate() {
            let t = if i == index { planned.clone() } else { f.data_type().clone() };
            columns.push(if i == index { Arc::clone(&entries) } else { new_null_array(&t, n) });
            fields.push(Field::new(f.name(), t, true));
        }
        let answers =
            self.inner.evaluate(&RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)?.into_array(n)?;
        let keys = dictionary.keys();
        if let Some(answers) = answers.as_boolean_opt() {
            return Ok(ColumnarValue::Array(Arc::new(pick_booleans(answers, keys))));
        }
        let picks = match keys.nulls().filter(|nulls| nulls.null_count() > 0) {
            None => keys.clone(),
            Some(nulls) => (0..keys.len())
                .map(|i| if nulls.is_valid(i) { keys.values()[i] } else { (n - 1) as i32 })
                .collect::<Int32Array>(),
        };
        Ok(ColumnarValue::Array(arrow::compute::take(&answers, &picks, None)?))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn PhysicalExpr>>) -> DfResult<Arc<dyn PhysicalExpr>> {
        let inner = children.pop().filter(|_| children.is_empty()).ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("a condition on dictionaries has one child".into())
        })?;
        Ok(Arc::new(OnDictionaries::new(inner, self.decoded.clone(), Arc::clone(&self.field))))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}

/// Each row's answer, from `answers` (one per dictionary entry, then the answer for null) by the
/// row's key. Conditions are most of these (a filter's `LIKE`, a `CASE`'s test), and Arrow's `take`
/// of booleans makes the values and the validity in two passes with a bounds check per bit; here
/// each entry's answer is one byte, and the validity is made only where a picked answer is null.
fn pick_booleans(answers: &BooleanArray, keys: &Int32Array) -> BooleanArray {
    let table: Vec<u8> =
        (0..answers.len()).map(|e| u8::from(answers.value(e)) | if answers.is_valid(e) { VALID } else { 0 }).collect();
    let null_entry = table.len().saturating_sub(1);
    let picked = keys.values();
    // A key beyond the table (which a valid dictionary has only under a null) reads as null.
    let entry = |key: i32| table.get(key as usize).copied().unwrap_or(0);
    let entries_valid = table[..null_entry].iter().all(|s| s & VALID != 0);
    match keys.nulls().filter(|nulls| nulls.null_count() > 0) {
        None => pack(keys.len(), |i| entry(picked[i]), entries_valid),
        Some(nulls) => {
            let null = table.get(null_entry).copied().unwrap_or(0);
            let all_valid = entries_valid && null & VALID != 0;
            pack(keys.len(), |i| if nulls.is_valid(i) { entry(picked[i]) } else { null }, all_valid)
        }
    }
}

/// A picked answer's bits: whether it is true, and whether it is valid (not null).
const VALUE: u8 = 1;
const VALID: u8 = 2;

/// The booleans of `n` rows whose answers `state` gives; the validity is made only where some
/// answer may be null.
fn pack(n: usize, state: impl Fn(usize) -> u8, all_valid: bool) -> BooleanArray {
    let values = BooleanBuffer::collect_bool(n, |i| state(i) & VALUE != 0);
    let nulls = (!all_valid)
        .then(|| NullBuffer::new(BooleanBuffer::collect_bool(n, |i| state(i) & VALID != 0)))
        .filter(|nulls| nulls.null_count() > 0);
    BooleanArray::new(values, nulls)
}

/// A text column that a repartition hashes, where it may arrive as a dictionary: hashed as its text
/// would be, so that its rows reach the partition where a join or an aggregate planned over the
/// text expects them.
#[derive(Debug)]
struct HashedAsText {
    /// The column (its only child).
    column: Arc<dyn PhysicalExpr>,
    /// Its type as planned.
    text: DataType,
    /// Is it the only column hashed? DataFusion hashes a dictionary alone by its entries' hashes,
    /// the same as the text's; combined with other columns, differently, so there it is decoded.
    alone: bool,
}

impl PartialEq for HashedAsText {
    fn eq(&self, other: &HashedAsText) -> bool {
        self.column.as_ref() == other.column.as_ref() && self.text == other.text && self.alone == other.alone
    }
}

impl Eq for HashedAsText {}

impl std::hash::Hash for HashedAsText {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.column.hash(state);
        self.text.hash(state);
        self.alone.hash(state);
    }
}

impl HashedAsText {
    fn output(&self, input: &DataType) -> DataType {
        match input {
            DataType::Dictionary(key, _) if self.alone => {
                DataType::Dictionary(key.clone(), Box::new(self.text.clone()))
            }
            _ => self.text.clone(),
        }
    }
}

impl fmt::Display for HashedAsText {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (hashed as text)", self.column)
    }
}

impl PhysicalExpr for HashedAsText {
    fn return_field(&self, input_schema: &Schema) -> DfResult<FieldRef> {
        let field = self.column.return_field(input_schema)?;
        let t = self.output(field.data_type());
        Ok(Arc::new(field.as_ref().clone().with_data_type(t)))
    }

    fn evaluate(&self, batch: &RecordBatch) -> DfResult<ColumnarValue> {
        let array = self.column.evaluate(batch)?.into_array(batch.num_rows())?;
        let Some(d) = array.as_dictionary_opt::<Int32Type>() else { return Ok(ColumnarValue::Array(array)) };
        Ok(ColumnarValue::Array(if self.alone {
            let entries = arrow::compute::cast(d.values(), &self.text)?;
            Arc::new(DictionaryArray::<Int32Type>::try_new(d.keys().clone(), entries)?)
        } else {
            arrow::compute::cast(&array, &self.text)?
        }))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column]
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn PhysicalExpr>>) -> DfResult<Arc<dyn PhysicalExpr>> {
        let column = children
            .pop()
            .filter(|_| children.is_empty())
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("a hashed column has one child".into()))?;
        Ok(Arc::new(HashedAsText { column, text: self.text.clone(), alone: self.alone }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.column.fmt_sql(f)
    }
}

/// Computes the aggregate it stands for a batch at a time, over an input that reads its keys as dictionaries.
#[derive(Debug)]
pub struct DictionaryGroupsExec {
    /// The aggregate as DataFusion planned it (over the keys as text): its output, shown and kept.
    aggregate: AggregateExec,
    /// The aggregate's input with the keys read as dictionaries.
    input: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl DictionaryGroupsExec {
    pub fn new(aggregate: AggregateExec, input: Arc<dyn ExecutionPlan>) -> DictionaryGroupsExec {
        DictionaryGroupsExec { aggregate, input, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for DictionaryGroupsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        batch_groups::describe(f, "DictionaryGroupsExec", &self.aggregate)
    }
}

impl ExecutionPlan for DictionaryGroupsExec {
    fn name(&self) -> &str {
        "DictionaryGroupsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // The new input gives the same rows (the keys as dictionaries or as text: both are grouped alike).
        let input = children
            .pop()
            .filter(|_| children.is_empty())
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("DictionaryGroupsExec has one input".into()))?;
        Ok(Arc::new(DictionaryGroupsExec::new(self.aggregate.clone(), input)))
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
        batch_groups::execute(&self.aggregate, &self.input, &self.metrics, "DictionaryGroupsExec", partition, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::tables::CommittedTable;
    use crate::sql::testing::{run, write_file};
    use crate::warehouse::manifest;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use parquet::file::properties::WriterProperties;
    use proptest::prelude::*;

    /// A row: year, which of its year's files, two keys of few values (maybe null), a pseudonym, a value.
    type Row = (i32, usize, Option<u16>, Option<u16>, u8, Option<i64>);

    /// Writes the rows as a table's files (row groups of `group` rows) under `dir`; the files of
    /// `plain_year` keep `k` without a dictionary.
    fn write(dir: &std::path::Path, rows: &[Row], group: usize, plain_year: Option<i32>) -> manifest::Table {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("j", DataType::Utf8, true),
            Field::new("p", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let mut files: std::collections::BTreeMap<(i32, usize), Vec<&Row>> = Default::default();
        for r in rows {
            files.entry((r.0, r.1)).or_default().push(r);
        }
        let mut table = manifest::Table {
            partition_columns: vec!["year".into()],
            files: Vec::new(),
            statistic: None,
            versions: None,
        };
        for ((year, file), rows) in files {
            let text = |v: Option<u16>, prefix: &str| v.map(|v| format!("{prefix}{v}"));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(rows.iter().map(|r| text(r.2, "k")).collect::<StringArray>()),
                    Arc::new(rows.iter().map(|r| text(r.3, "a-longer-value-")).collect::<StringArray>()),
                    Arc::new(rows.iter().map(|r| text(Some(u16::from(r.4)), "p")).collect::<StringArray>()),
                    Arc::new(rows.iter().map(|r| r.5).collect::<Int64Array>()),
                ],
            )
            .unwrap();
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(group))
                .set_column_dictionary_enabled("k".into(), plain_year != Some(year))
                .build();
            let path = format!("t/year={year}/part-{file}.parquet");
            let partition = [("year".to_owned(), year.to_string())].into();
            table.files.push(write_file(dir, path, &batch, Some(props), partition));
        }
        table
    }

    /// A session over the table `t`: with ladu's rules that read dictionaries (and the one-phase
    /// aggregates that repartition by the keys first), or DataFusion alone. Joins are planned on
    /// partitions, so that both sides of one must be hashed alike.
    fn context(dir: &std::path::Path, table: &manifest::Table, rule: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(2).with_batch_size(3);
        config.options_mut().optimizer.hash_join_single_partition_threshold = 0;
        config.options_mut().optimizer.hash_join_single_partition_threshold_rows = 0;
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            state = state
                .with_physical_optimizer_rule(Arc::new(crate::sql::single_phase::SinglePhase))
                .with_physical_optimizer_rule(Arc::new(DictionaryGroups))
                .with_physical_optimizer_rule(Arc::new(crate::sql::dictionary_exprs::DictionaryExpressions));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let committed = CommittedTable::open(dir, "t", table, &["p"]).unwrap();
        ctx.register_table("t", Arc::new(committed)).unwrap();
        ctx
    }

    const NEVER: u8 = 0;
    const WHERE_K_IS: u8 = 1;
    const ALWAYS: u8 = 2;

    /// Each query; whether an aggregate groups on the dictionaries; whether something is worked
    /// out per entry: [`NEVER`], [`WHERE_K_IS`] (where every file has `k` dictionary-encoded), [`ALWAYS`].
    const QUERIES: [(&str, u8, u8); 20] = [
        (
            "SELECT k, count(*) AS n, count(v) AS c, sum(v) AS s, avg(v) AS a, max(v) AS hi FROM t GROUP BY k ORDER BY 1",
            WHERE_K_IS,
            NEVER,
        ),
        (
            "SELECT j, k, count(*) AS n, sum(v) AS s, sum(CAST(v AS DECIMAL(12, 2)) * 2) AS d FROM t GROUP BY k, j ORDER BY 1, 2",
            WHERE_K_IS,
            NEVER,
        ),
        ("SELECT k, count(*) AS n FROM t WHERE v > 0 AND year >= 2023 GROUP BY k ORDER BY 1", WHERE_K_IS, NEVER),
        ("SELECT j, max(k) AS k, min(p) AS p FROM t GROUP BY j ORDER BY 1", ALWAYS, NEVER),
        // Conditions on the keys: on each entry (and on null), or on the column decoded.
        ("SELECT k, count(*) AS n FROM t WHERE k <> 'k1' GROUP BY k ORDER BY 1", WHERE_K_IS, WHERE_K_IS),
        (
            "SELECT k, j, sum(v) AS s FROM t WHERE k LIKE 'k%' AND (j IS NULL OR j > 'a-longer-value-0') AND v > 0 \
             GROUP BY k, j ORDER BY 1, 2",
            WHERE_K_IS,
            WHERE_K_IS,
        ),
        (
            "SELECT k, count(*) AS n FROM t WHERE coalesce(k, 'none') <> 'k2' GROUP BY k ORDER BY 1",
            WHERE_K_IS,
            WHERE_K_IS,
        ),
        ("SELECT k, count(*) AS n FROM t WHERE k < j OR k = 'k3' GROUP BY k ORDER BY 1", WHERE_K_IS, WHERE_K_IS),
        ("SELECT year, k, count(*) AS n FROM t GROUP BY year, k ORDER BY 1, 2", NEVER, NEVER),
        // DataFusion groups by both keys first: that grouping reads the dictionaries.
        ("SELECT k, count(DISTINCT j) AS n FROM t GROUP BY k ORDER BY 1", WHERE_K_IS, NEVER),
        ("SELECT p, count(*) AS n FROM t GROUP BY p ORDER BY 1", NEVER, NEVER),
        // Keys computed from one column: per entry, and grouped by the answers.
        ("SELECT upper(k) AS k, count(*) AS n FROM t GROUP BY upper(k) ORDER BY 1", NEVER, WHERE_K_IS),
        (
            "SELECT substr(j, 1, 3) AS c, p, count(*) AS n, sum(v) AS s FROM t GROUP BY substr(j, 1, 3), p ORDER BY 1, 2",
            NEVER,
            ALWAYS,
        ),
        (
            "SELECT CASE WHEN k IN ('k1', 'k2') THEN 'low' END AS band, count(DISTINCT p) AS n FROM t \
             GROUP BY CASE WHEN k IN ('k1', 'k2') THEN 'low' END ORDER BY 1",
            NEVER,
            WHERE_K_IS,
        ),
        // In one phase after a repartition by the key, hashed as the text is (alone, or decoded
        // beside another key).
        ("SELECT k, median(v) AS m, count(*) AS n FROM t GROUP BY k ORDER BY 1", WHERE_K_IS, NEVER),
        ("SELECT k, j, median(v) AS m FROM t GROUP BY k, j ORDER BY 1, 2", WHERE_K_IS, NEVER),
        // ... so that a join of it with another aggregate by the key, on partitions, still meets
        // (the join's dynamic filter on the key is worked out per entry).
        (
            "SELECT a.k, a.m, b.n FROM (SELECT k, median(v) AS m FROM t GROUP BY k) a \
             JOIN (SELECT k, count(*) AS n FROM t GROUP BY k) b ON a.k = b.k ORDER BY 1",
            WHERE_K_IS,
            WHERE_K_IS,
        ),
        // Join keys computed from one column.
        (
            "SELECT a.p, count(*) AS n FROM t a JOIN t b ON substr(a.k, 2) = substr(b.j, 16) AND a.p = b.p \
             GROUP BY a.p ORDER BY 1",
            NEVER,
            ALWAYS,
        ),
        // Drawn for each row, not for each entry.
        (
            "SELECT length(k) + floor(random()) AS l, count(*) AS n FROM t GROUP BY length(k) + floor(random()) ORDER BY 1",
            NEVER,
            NEVER,
        ),
        // An aggregate's arguments are left as planned.
        ("SELECT sum(length(k)) AS l, sum(length(j)) AS lj, count(*) AS n FROM t WHERE v IS NOT NULL", NEVER, NEVER),
    ];

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        let key = |n: u16| prop::option::weighted(0.85, 0..n);
        prop::collection::vec(
            (2023..2026i32, 0..2usize, key(4), key(3), 0..5u8, prop::option::weighted(0.8, -1000..1000i64)),
            1..60,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// With the rule or without, every query has the same answer; the rule applies exactly
        /// to aggregates by text columns that every file has dictionary-encoded.
        #[test]
        fn same_answers_as_datafusion(rows in rows(), plain in prop::option::of(2023..2026i32)) {
            let dir = tempfile::tempdir().unwrap();
            let table = write(dir.path(), &rows, 5, plain);
            let (ours, theirs) = (context(dir.path(), &table, true), context(dir.path(), &table, false));
            let plain_read = plain.is_some_and(|y| rows.iter().any(|r| r.0 == y));
            let expected = |when: u8| when == ALWAYS || when == WHERE_K_IS && !plain_read;
            for (sql, groups, per_entry) in QUERIES {
                prop_assert_eq!(run(&ours, sql), run(&theirs, sql), "{}", sql);
                let plan = run(&ours, &format!("EXPLAIN {sql}"));
                prop_assert_eq!(plan.contains("DictionaryGroupsExec"), expected(groups), "{}", plan);
                prop_assert_eq!(plan.contains("(on dictionaries)"), expected(per_entry), "{}", plan);
            }
        }
    }

    proptest! {
        /// Picking each row's boolean answer by its key gives what Arrow's `take` gives, with the
        /// keys' nulls taking the last answer (null's): answers true, false and null, and keys in a
        /// slice (an offset) with and without nulls.
        #[test]
        fn booleans_are_picked_as_take_picks_them(
            answers in prop::collection::vec(prop::option::weighted(0.8, any::<bool>()), 1..6),
            keys in prop::collection::vec(prop::option::weighted(0.9, 0..8i32), 0..200),
            skip in 0..3usize,
        ) {
            let answers = BooleanArray::from(answers);
            let entries = answers.len() as i32 - 1;
            let keys: Int32Array = keys
                .iter()
                .map(|&k| k.map(|k| k % entries.max(1)).filter(|_| entries > 0))
                .collect();
            let keys = keys.slice(skip.min(keys.len()), keys.len() - skip.min(keys.len()));
            let picks: Int32Array = keys.iter().map(|k| Some(k.unwrap_or(entries))).collect();
            let expected = arrow::compute::take(&answers, &picks, None).unwrap();
            prop_assert_eq!(&pick_booleans(&answers, &keys), expected.as_boolean());
        }
    }

    /// Keys whose dictionaries combine in more ways than the table of combinations holds are
    /// grouped row by row, with the same answers; small ones by their entries.
    #[test]
    fn many_combinations_are_grouped_row_by_row() {
        let sql = "SELECT k, j, count(*) AS n, sum(v) AS s FROM t GROUP BY k, j ORDER BY 1, 2";
        // 300 values of each key in one row group: 301 × 301 combinations, more than the table holds.
        for (keys, group) in [(300u32, 100_000), (20, 7)] {
            let dir = tempfile::tempdir().unwrap();
            let rows: Vec<Row> = (0..3000u32)
                .map(|i| {
                    (2024, 0, Some((i % keys) as u16), Some((i / 11 % keys) as u16), (i % 5) as u8, Some(i64::from(i)))
                })
                .collect();
            let table = write(dir.path(), &rows, group, None);
            let (ours, theirs) = (context(dir.path(), &table, true), context(dir.path(), &table, false));
            assert_eq!(run(&ours, sql), run(&theirs, sql));
            assert!(run(&ours, &format!("EXPLAIN {sql}")).contains("DictionaryGroupsExec"));
        }
    }
}
