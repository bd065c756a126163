//! Warehouse tables for DataFusion: the committed files of a table, and the newest version of each record.
//!
//! A table is read from the files its manifest names, never by listing
//! folders, so a run's files are invisible until its commit. Partition
//! folders (`year=2024/month=3`) become Int32 columns; filters on them alone
//! choose which files are opened at all. The least and greatest value of
//! each file's dates and times (from the footer read when the session opens)
//! choose too: a filter on a date leaves out the files outside its range
//! before the plan is made, so that their footers are not read again and the
//! files that remain are spread evenly over the threads. Where the ranges
//! decide a filter for every file (a month's dates over monthly files), choosing
//! the files applies it exactly: no row is tested and its column is not read.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, ExprFunctionExt, TableProviderFilterPushDown, col};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

use super::dictionary_groups::FileColumns;
use crate::warehouse::{CommittedFile, manifest};

/// Suffix of the table that keeps every version of every record.
pub const HISTORY_SUFFIX: &str = "_history";
/// Column naming a record across deliveries (the record key's pseudonym).
pub const RECORD_ID: &str = "record_id";
/// Newest first: later extract, later sequence number, later commit, later line.
const VERSION_ORDER: [&str; 4] = ["_extract_date", "_extract_seq", "_commit", "_line"];

/// A committed file, its values of the partition columns, and its own columns.
type TableFile = (CommittedFile, Vec<i32>, Arc<FileColumns>);

/// The committed files of one warehouse table, every version of every record.
#[derive(Debug)]
pub struct CommittedTable {
    root: PathBuf,
    /// File columns, then the partition columns.
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    /// Each file with its partition values, in the partition columns' order.
    files: Vec<TableFile>,
    /// Each file's least and greatest `_commit`, from its footer (the widest range where unknown).
    commits: Vec<(i64, i64)>,
    /// Each file's least and greatest values of its dates and times (over `file_schema`), from
    /// its footer; they choose files and never reach DataFusion, so no answer is taken from them
    /// (a file also holds superseded versions).
    ranges: Vec<Arc<Statistics>>,
}

/// Why a committed table cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {path}: {source}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the footer of {path}: {source}")]
    Footer {
        path: std::path::PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("the files of table {table} disagree on a column: {source}")]
    Disagree {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("table {table} has a file column named like its partition column {column}")]
    PartitionClash { table: String, column: String },
    #[error("manifest entry {file} has no numeric value for partition column {column}")]
    PartitionValue { file: String, column: String },
    #[error("cannot read the column statistics in the footer of {path}: {message}")]
    Statistics { path: std::path::PathBuf, message: String },
}

impl CommittedTable {
    /// The table as committed: its schema is the merge of its files' schemas.
    /// String columns are read as views, which DataFusion handles fastest for
    /// short strings, except `pseudonyms`: 32 characters each, they gain
    /// nothing from a view's inline prefix, and per-person sorts, joins and
    /// windows ran 5–15 % faster on plain strings, with less memory.
    pub fn open(
        root: &Path,
        name: &str,
        table: &manifest::Table,
        pseudonyms: &[&str],
    ) -> Result<CommittedTable, OpenError> {
        let mut schemas = Vec::with_capacity(table.files.len());
        let mut commits = Vec::with_capacity(table.files.len());
        let mut footers = Vec::with_capacity(table.files.len());
        let mut own = Vec::with_capacity(table.files.len());
        for f in &table.files {
            let path = root.join(&f.path);
            let file = std::fs::File::open(&path).map_err(|source| OpenError::File { path: path.clone(), source })?;
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|source| OpenError::Footer { path: path.clone(), source })?;
            commits.push(commit_range(builder.metadata()));
            own.push(Arc::new(FileColumns::of(builder.schema(), builder.metadata(), pseudonyms)));
            footers.push((path, Arc::clone(builder.metadata())));
            let fields: Vec<Field> = builder
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let t = if pseudonyms.contains(&f.name().as_str()) {
                        f.data_type().clone()
                    } else {
                        view_type(f.data_type())
                    };
                    Field::new(f.name(), t, f.is_nullable())
                })
                .collect();
            schemas.push(Schema::new(fields));
        }
        let file_schema = Arc::new(
            Schema::try_merge(schemas).map_err(|source| OpenError::Disagree { table: name.to_owned(), source })?,
        );
        // Dates and times, by which tables are partitioned, are what ranges rule out files by; the
        // other columns span about the same range in every file, and cost time at every start.
        let ranged: Vec<usize> = (file_schema.fields().iter().enumerate())
            .filter_map(|(i, f)| f.data_type().is_temporal().then_some(i))
            .collect();
        let ranged_schema = Arc::new(file_schema.project(&ranged).expect("indices of the schema's own fields"));
        let ranges = footers
            .into_iter()
            .map(|(path, meta)| {
                let found = DFParquetMetadata::statistics_from_parquet_metadata(&meta, &ranged_schema)
                    .map_err(|e| OpenError::Statistics { path, message: e.to_string() })?;
                let mut all = Statistics::new_unknown(&file_schema);
                for (column, &i) in found.column_statistics.into_iter().zip(&ranged) {
                    all.column_statistics[i] = column;
                }
                Ok(Arc::new(all))
            })
            .collect::<Result<Vec<_>, OpenError>>()?;
        let partition_fields: Vec<FieldRef> =
            table.partition_columns.iter().map(|c| Arc::new(Field::new(c, DataType::Int32, false))).collect();
        if let Some(clash) = partition_fields.iter().find(|p| file_schema.field_with_name(p.name()).is_ok()) {
            return Err(OpenError::PartitionClash { table: name.to_owned(), column: clash.name().clone() });
        }
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields.iter().cloned());
        let mut files = Vec::with_capacity(table.files.len());
        for (f, own) in table.files.iter().zip(own) {
            let values = table
                .partition_columns
                .iter()
                .map(|c| {
                    f.partition
                        .get(c)
                        .and_then(|v| v.parse::<i32>().ok())
                        .ok_or_else(|| OpenError::PartitionValue { file: f.path.clone(), column: c.clone() })
                })
                .collect::<Result<Vec<i32>, OpenError>>()?;
            files.push((f.clone(), values, own));
        }
        // DataFusion's object store names files by absolute path.
        let root = std::path::absolute(root).map_err(|source| OpenError::File { path: root.to_owned(), source })?;
        Ok(CommittedTable {
            root,
            schema: Arc::new(Schema::new(fields)),
            file_schema,
            partition_fields,
            files,
            commits,
            ranges,
        })
    }

    /// The table's files split by whether their rows may come from one of `commits`: (those that
    /// cannot, those that may); `None` for a side without files.
    pub fn split_by_commits(
        &self,
        commits: &std::collections::BTreeSet<i64>,
    ) -> (Option<CommittedTable>, Option<CommittedTable>) {
        let (mut clean, mut involved) = (self.subset(), self.subset());
        for ((f, &(lo, hi)), range) in self.files.iter().zip(&self.commits).zip(&self.ranges) {
            let side = if commits.range(lo..=hi).next().is_some() { &mut involved } else { &mut clean };
            side.files.push(f.clone());
            side.commits.push((lo, hi));
            side.ranges.push(Arc::clone(range));
        }
        let some = |t: CommittedTable| (!t.files.is_empty()).then_some(t);
        (some(clean), some(involved))
    }

    /// The table without files.
    fn subset(&self) -> CommittedTable {
        CommittedTable {
            root: self.root.clone(),
            schema: self.schema.clone(),
            file_schema: self.file_schema.clone(),
            partition_fields: self.partition_fields.clone(),
            files: Vec::new(),
            commits: Vec::new(),
            ranges: Vec::new(),
        }
    }

    fn partition_names(&self) -> Vec<&str> {
        self.partition_fields.iter().map(|f| f.name().as_str()).collect()
    }

    /// Does `expr` read partition columns only (so it can choose files)?
    pub fn is_partition_filter(&self, expr: &Expr) -> bool {
        let names = self.partition_names();
        let columns = expr.column_refs();
        !columns.is_empty() && columns.iter().all(|c| names.contains(&c.name.as_str())) && !expr.is_volatile()
    }

    /// Whether each file passes `filter` in every row, where the files' ranges decide it for every
    /// file: no row of the file can pass it, or none can fail it and the columns it reads hold no
    /// null. `None` where some file is undecided, or the filter is not one of dates and times whose
    /// answer is never null on values (comparisons with values, `BETWEEN`, `IN`, `AND`, `OR`, `NOT`).
    ///
    /// The answer comes from every row of the table, rows a role may not see too; a role with a row
    /// condition is told only what [`CommittedTable::is_partition_filter`] says (`restrict`).
    pub fn decided_by_ranges(&self, filter: &Expr) -> Option<Vec<bool>> {
        let columns = filter.column_refs();
        let mut read = Vec::with_capacity(columns.len());
        for c in &columns {
            let i = self.file_schema.index_of(&c.name).ok()?;
            self.file_schema.field(i).data_type().is_temporal().then_some(())?;
            read.push(i);
        }
        if read.is_empty() || self.ranges.is_empty() {
            return None;
        }
        // Scans get their filters unqualified; the question comes with the table's name on each column.
        let filter = &datafusion::logical_expr::expr_rewriter::unnormalize_col(filter.clone());
        let failing = negated(filter)?;
        let schema = DFSchema::try_from(self.file_schema.clone()).ok()?;
        let props = datafusion::execution::context::ExecutionProps::new();
        let prune = |e: &Expr| {
            let planning = datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default();
            let e = datafusion::physical_expr::create_physical_expr(e, &schema, &props, &planning).ok()?;
            let pruning =
                PruningPredicateBuilder::new().with_file_schema(self.file_schema.clone()).try_build(e).ok()?;
            if pruning.always_true() {
                return None;
            }
            pruning.prune(&PrunableStatistics::new(self.ranges.clone(), self.file_schema.clone())).ok()
        };
        let (may_pass, may_fail) = (prune(filter)?, prune(&failing)?);
        let no_nulls =
            |stats: &Statistics| read.iter().all(|&i| stats.column_statistics[i].null_count == Precision::Exact(0));
        (may_pass.iter().zip(&may_fail).zip(&self.ranges))
            .map(|((&pass, &fail), stats)| match (pass, fail) {
                (false, _) => Some(false),
                (true, false) if no_nulls(stats) => Some(true),
                _ => None,
            })
            .collect()
    }

    /// Which files, of those whose `ranges` are given, may hold rows that pass `filters` (on the
    /// files' own columns); `None` where the ranges cannot tell.
    fn in_range(
        &self,
        state: &dyn Session,
        filters: &[Expr],
        ranges: Vec<Arc<Statistics>>,
    ) -> DfResult<Option<Vec<bool>>> {
        let on_files = filters.iter().filter(|f| {
            let columns = f.column_refs();
            !columns.is_empty() && columns.iter().all(|c| self.file_schema.field_with_name(&c.name).is_ok())
        });
        let Some(predicate) = datafusion::logical_expr::utils::conjunction(on_files.cloned()) else { return Ok(None) };
        let predicate = state.create_physical_expr(predicate, &DFSchema::try_from(self.file_schema.clone())?)?;
        // A filter the ranges cannot judge (on text, or a function of the column) keeps every file.
        let built = PruningPredicateBuilder::new().with_file_schema(self.file_schema.clone()).try_build(predicate);
        let Ok(pruning) = built else { return Ok(None) };
        if pruning.always_true() {
            return Ok(None);
        }
        Ok(Some(pruning.prune(&PrunableStatistics::new(ranges, self.file_schema.clone()))?))
    }

    /// The files whose partition values pass every partition filter, of those `passing` marks
    /// (one for each file), with their statistics.
    fn chosen_files(
        &self,
        state: &dyn Session,
        filters: &[&Expr],
        passing: Vec<bool>,
    ) -> DfResult<Vec<(&TableFile, &Arc<Statistics>)>> {
        let files: Vec<_> = self.files.iter().zip(&self.ranges).collect();
        if filters.is_empty() || files.is_empty() {
            return Ok(files.into_iter().zip(passing).filter_map(|(f, k)| k.then_some(f)).collect());
        }
        // One row per file, one column per partition level: filters evaluate as on data.
        let schema = Arc::new(Schema::new(self.partition_fields.clone()));
        let columns: Vec<ArrayRef> = (0..self.partition_fields.len())
            .map(|i| Arc::new(Int32Array::from_iter_values(files.iter().map(|((_, v, _), _)| v[i]))) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let df_schema = DFSchema::try_from(schema)?;
        let mut keep = passing;
        for filter in filters {
            let predicate = state.create_physical_expr((*filter).clone(), &df_schema)?;
            let result = predicate.evaluate(&batch)?.into_array(files.len())?;
            let result = result
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Internal("a partition filter is not boolean".into()))?;
            for (i, k) in keep.iter_mut().enumerate() {
                *k &= result.is_valid(i) && result.value(i);
            }
        }
        Ok(files.into_iter().zip(keep).filter_map(|(f, k)| k.then_some(f)).collect())
    }
}

/// The least and greatest `_commit` of a file, from its row groups' statistics.
fn commit_range(meta: &parquet::file::metadata::ParquetMetaData) -> (i64, i64) {
    let unknown = (i64::MIN, i64::MAX);
    let Some(c) = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == crate::config::source::META_COMMIT)
    else {
        return unknown;
    };
    let mut range: Option<(i64, i64)> = None;
    for rg in meta.row_groups() {
        match rg.column(c).statistics() {
            Some(parquet::file::statistics::Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(&lo), Some(&hi)) => {
                    range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                }
                _ => return unknown,
            },
            _ => return unknown,
        }
    }
    range.unwrap_or(unknown)
}

/// The condition a row fails `filter` by, where neither it nor the filter is ever null on values
/// (the columns' nulls aside): comparisons of columns and non-null literals joined by `AND`, `OR`,
/// `NOT`, `BETWEEN` and `IN`. `None` for anything else.
fn negated(filter: &Expr) -> Option<Expr> {
    use datafusion::logical_expr::{Between, BinaryExpr, Operator::*, expr::InList};
    let value = |e: &Expr| match e {
        Expr::Column(_) => true,
        Expr::Literal(v, _) => !v.is_null(),
        _ => false,
    };
    Some(match filter {
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (And | Or), right }) => {
            let (l, r) = (negated(left)?, negated(right)?);
            if *op == And { l.or(r) } else { l.and(r) }
        }
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Eq | NotEq | Lt | LtEq | Gt | GtEq), right })
            if value(left) && value(right) =>
        {
            Expr::BinaryExpr(BinaryExpr::new(left.clone(), op.negate()?, right.clone()))
        }
        Expr::Not(x) => {
            negated(x)?;
            (**x).clone()
        }
        Expr::Between(b) if value(&b.expr) && value(&b.low) && value(&b.high) => {
            Expr::Between(Between { negated: !b.negated, ..b.clone() })
        }
        Expr::InList(l) if value(&l.expr) && l.list.iter().all(value) => {
            Expr::InList(InList { negated: !l.negated, ..l.clone() })
        }
        _ => return None,
    })
}

/// Utf8 and Binary as their view types, as `schema_force_view_types` does for listing tables.
fn view_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
        other => other.clone(),
    }
}

#[async_trait]
impl TableProvider for CommittedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters on partition columns alone are applied exactly by choosing files, and so are those
        // that every file's ranges decide: no FilterExec, and the columns they read are not read.
        Ok(filters
            .iter()
            .map(|f| {
                if self.is_partition_filter(f) || self.decided_by_ranges(f).is_some() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
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
        let partition_filters: Vec<&Expr> = filters.iter().filter(|f| self.is_partition_filter(f)).collect();
        // A filter the ranges decide was answered exact: the files where no row passes it go, and
        // every row of the others passes it.
        let mut passing = vec![true; self.files.len()];
        for decided in filters.iter().filter_map(|f| self.decided_by_ranges(f)) {
            passing.iter_mut().zip(decided).for_each(|(p, d)| *p &= d);
        }
        let mut chosen = self.chosen_files(state, &partition_filters, passing)?;
        if let Some(keep) = self.in_range(state, filters, chosen.iter().map(|(_, r)| Arc::clone(r)).collect())? {
            chosen = chosen.into_iter().zip(keep).filter_map(|(c, k)| k.then_some(c)).collect();
        }
        if chosen.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let rows: u64 = chosen.iter().map(|((f, _, _), _)| f.rows).sum();
        let bytes: u64 = chosen.iter().map(|((f, _, _), _)| f.bytes).sum();
        // Spread the files over the target partitions, largest first onto the lightest group.
        let groups_wanted = state.config().target_partitions().max(1).min(chosen.len());
        let mut order: Vec<usize> = (0..chosen.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(chosen[i].0.0.bytes));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..groups_wanted).map(|_| (0, Vec::new())).collect();
        for i in order {
            let ((f, values, own), _) = &chosen[i];
            let path = self.root.join(&f.path);
            let location = path
                .to_str()
                .ok_or_else(|| DataFusionError::Execution(format!("warehouse path {} is not UTF-8", path.display())))?;
            let mut file_stats = Statistics::new_unknown(&self.file_schema);
            file_stats.num_rows = Precision::Exact(f.rows as usize);
            let mut file = PartitionedFile::new(location.trim_start_matches('/'), f.bytes)
                .with_partition_values(values.iter().map(|v| ScalarValue::Int32(Some(*v))).collect())
                .with_statistics(Arc::new(file_stats));
            // For the plan rules that read some of its columns otherwise (`dictionary_groups`).
            file.extensions.insert_arc(Arc::clone(own));
            let lightest = groups.iter_mut().min_by_key(|g| g.0).expect("at least one group");
            lightest.0 += f.bytes;
            lightest.1.push(file);
        }
        let mut stats = Statistics::new_unknown(&self.schema);
        stats.num_rows = Precision::Exact(rows as usize);
        stats.total_byte_size = Precision::Inexact(bytes as usize);
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), format.file_source(table_schema))
            .with_file_groups(groups.into_iter().map(|(_, files)| FileGroup::new(files)).collect())
            .with_statistics(stats)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

/// Name of [`version_rank`]'s column.
pub const VERSION_RANK: &str = "__ladu_version_rank";

/// 1 for the newest version of each record, 2 for the one before, and so on.
pub fn version_rank() -> DfResult<Expr> {
    Ok(row_number()
        .partition_by(vec![col(RECORD_ID)])
        .order_by(VERSION_ORDER.iter().map(|c| col(*c).sort(false, false)).collect())
        .build()?
        .alias(VERSION_RANK))
}

/// Is `schema` one whose versions [`newest_versions`] can order?
pub fn has_versions(schema: &Schema) -> bool {
    schema.field_with_name(RECORD_ID).is_ok() && VERSION_ORDER.iter().all(|c| schema.field_with_name(c).is_ok())
}

/// Tables of the manifest, by name; `pseudonyms` names each table's pseudonym columns.
pub fn committed_tables(
    root: &Path,
    m: &manifest::Manifest,
    pseudonyms: &HashMap<&str, Vec<&str>>,
) -> Result<BTreeMap<String, CommittedTable>, OpenError> {
    m.tables
        .iter()
        .filter(|(_, t)| !t.files.is_empty())
        .map(|(name, t)| {
            let p = pseudonyms.get(name.as_str()).map_or(&[][..], Vec::as_slice);
            Ok((name.clone(), CommittedTable::open(root, name, t, p)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::testing::{run, write_file};
    use arrow::array::{Date32Array, Int64Array};
    use datafusion::datasource::MemTable;
    use datafusion::logical_expr::lit;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;

    /// 2024-01-01, in days since 1970.
    const JAN_1: i32 = 19723;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true), Field::new("v", DataType::Int64, false)]))
    }

    fn batch(days: &[Option<i32>]) -> RecordBatch {
        let v = Int64Array::from_iter_values(days.iter().map(|d| i64::from(d.unwrap_or(-1)) * 7 + 1));
        RecordBatch::try_new(schema(), vec![Arc::new(Date32Array::from(days.to_vec())), Arc::new(v)]).unwrap()
    }

    /// Each file's days (since [`JAN_1`]) as a committed table `t` under `dir`, and as one in memory, `m`;
    /// with the committed table itself, to ask what its files' ranges decide.
    fn context(dir: &Path, files: &[Vec<Option<i32>>]) -> (SessionContext, CommittedTable) {
        let mut table =
            manifest::Table { partition_columns: Vec::new(), files: Vec::new(), statistic: None, versions: None };
        let mut all = Vec::new();
        for (i, days) in files.iter().enumerate() {
            let days: Vec<Option<i32>> = days.iter().map(|d| d.map(|d| JAN_1 + d)).collect();
            all.extend(days.iter().copied());
            table.files.push(write_file(dir, format!("t/part-{i}.parquet"), &batch(&days), None, BTreeMap::new()));
        }
        let ctx = SessionContext::new();
        let committed = CommittedTable::open(dir, "t", &table, &[]).unwrap();
        ctx.register_table("t", Arc::new(CommittedTable::open(dir, "t", &table, &[]).unwrap())).unwrap();
        ctx.register_table("m", Arc::new(MemTable::try_new(schema(), vec![vec![batch(&all)]]).unwrap())).unwrap();
        (ctx, committed)
    }

    /// `filter` over `t` as the planner gives it to the table: simplified (the dates' casts folded).
    fn planned(ctx: &SessionContext, filter: &str) -> Expr {
        use datafusion::logical_expr::simplify::SimplifyContext;
        use datafusion::optimizer::simplify_expressions::ExprSimplifier;
        let t = Arc::new(DFSchema::try_from_qualified_schema("t", &schema()).unwrap());
        let parsed = ctx.parse_sql_expr(filter, &t).unwrap();
        ExprSimplifier::new(SimplifyContext::builder().with_schema(t).build()).simplify(parsed).unwrap()
    }

    /// A filter on `d`: comparisons, ranges and lists of days (since [`JAN_1`]), nulls, and their
    /// combinations.
    fn filter() -> impl Strategy<Value = String> {
        let day = || {
            (0..24i32).prop_map(|d| {
                format!("DATE '{}'", chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(d as u64))
            })
        };
        let leaf = prop_oneof![
            6 => (prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]), day()).prop_map(|(op, d)| format!("d {op} {d}")),
            2 => (day(), day(), any::<bool>())
                .prop_map(|(a, b, not)| format!("d {}BETWEEN {a} AND {b}", if not { "NOT " } else { "" })),
            2 => (day(), day(), any::<bool>())
                .prop_map(|(a, b, not)| format!("d {}IN ({a}, {b})", if not { "NOT " } else { "" })),
            1 => Just("d IS NULL".to_owned()),
            1 => Just("d IS NOT NULL".to_owned()),
            1 => Just("extract(day FROM d) = 3".to_owned()),
        ];
        leaf.prop_recursive(2, 4, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
                inner.prop_map(|a| format!("NOT ({a})")),
            ]
        })
    }

    /// Files of days in a stretch each (a month, say), some with nulls.
    fn files() -> impl Strategy<Value = Vec<Vec<Option<i32>>>> {
        let file = (0..20i32, 0..6i32, prop::bool::weighted(0.25)).prop_flat_map(|(from, width, nulls)| {
            let day = (from..=from + width).prop_map(Some);
            let day = if nulls { prop_oneof![4 => day, 1 => Just(None)].boxed() } else { day.boxed() };
            prop::collection::vec(day, 1..20)
        });
        prop::collection::vec(file, 1..6)
    }

    #[test]
    fn negations_fail_where_the_filter_passes() {
        let d = || col("d");
        let day = |n: i32| lit(ScalarValue::Date32(Some(JAN_1 + n)));
        assert_eq!(negated(&d().lt(day(3))), Some(d().gt_eq(day(3))));
        assert_eq!(negated(&d().gt(day(1)).and(d().not_eq(day(2)))), Some(d().lt_eq(day(1)).or(d().eq(day(2)))));
        assert_eq!(negated(&d().between(day(1), day(2))), Some(d().not_between(day(1), day(2))));
        assert_eq!(negated(&!d().eq(day(1))), Some(d().eq(day(1))));
        // Null on values, or not a comparison of values: not negated.
        assert_eq!(negated(&d().lt(lit(ScalarValue::Date32(None)))), None);
        assert_eq!(negated(&d().is_null()), None);
        assert_eq!(negated(&!d().is_null()), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Where the ranges decide a filter for every file, each file passes it in every row or in
        /// none; and the table, which then applies it by its files alone, answers as every row does.
        #[test]
        fn files_the_ranges_decide_pass_or_fail_whole(files in files(), filter in filter()) {
            let dir = tempfile::tempdir().unwrap();
            let (ctx, committed) = context(dir.path(), &files);
            let expr = planned(&ctx, &filter);
            if let Some(decided) = committed.decided_by_ranges(&expr) {
                let props = datafusion::execution::context::ExecutionProps::new();
                let planning = datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default();
                let unqualified = DFSchema::try_from(schema()).unwrap();
                let e = datafusion::logical_expr::expr_rewriter::unnormalize_col(expr.clone());
                let physical = datafusion::physical_expr::create_physical_expr(&e, &unqualified, &props, &planning).unwrap();
                for (days, passes) in files.iter().zip(decided) {
                    let days: Vec<Option<i32>> = days.iter().map(|d| d.map(|d| JAN_1 + d)).collect();
                    let answer = physical.evaluate(&batch(&days)).unwrap().into_array(days.len()).unwrap();
                    let answer = answer.as_any().downcast_ref::<BooleanArray>().unwrap();
                    let all = (0..answer.len()).all(|i| answer.is_valid(i) && answer.value(i));
                    let none = (0..answer.len()).all(|i| !answer.is_valid(i) || !answer.value(i));
                    prop_assert!(if passes { all } else { none }, "{filter}: {days:?} {answer:?}");
                }
            }
            let q = |t: &str| run(&ctx, &format!("SELECT count(*) AS n, sum(v) AS s FROM {t} WHERE {filter}"));
            prop_assert_eq!(q("t"), q("m"), "{}", filter);
        }
    }

    #[test]
    fn a_role_with_a_row_condition_is_not_told_what_the_ranges_decide() {
        use crate::sql::restrict::Restricted;
        use TableProviderFilterPushDown::{Exact, Inexact};
        let dir = tempfile::tempdir().unwrap();
        let (ctx, committed) = context(dir.path(), &[(0..31).map(Some).collect(), (60..91).map(Some).collect()]);
        let committed: Arc<dyn TableProvider> = Arc::new(committed);
        let march = planned(&ctx, "d >= DATE '2024-03-01'");
        assert_eq!(committed.supports_filters_pushdown(&[&march]).unwrap(), [Exact]);
        let analyst = Restricted::new(Arc::clone(&committed), &["v".to_owned()], None, "analyst", None).unwrap();
        assert_eq!(analyst.supports_filters_pushdown(&[&march]).unwrap(), [Exact]);
        // The answer would tell the provider about every row's date, its own and the others'.
        let condition = Some(col("v").gt(lit(7i64)));
        let provider = Restricted::new(committed, &[], condition, "provider", None).unwrap();
        assert_eq!(provider.supports_filters_pushdown(&[&march]).unwrap(), [Inexact]);
    }

    #[test]
    fn a_filter_every_file_decides_leaves_no_filter_and_reads_no_column_for_it() {
        let dir = tempfile::tempdir().unwrap();
        // A month a file, the second with a null day.
        let files =
            [(0..31).map(Some).collect(), (31..60).map(Some).chain([None]).collect(), (60..91).map(Some).collect()];
        let (ctx, committed) = context(dir.path(), &files);
        let plan = |filter: &str| run(&ctx, &format!("EXPLAIN SELECT sum(v) AS s FROM t WHERE {filter}"));
        let decided = |filter: &str| committed.decided_by_ranges(&planned(&ctx, filter));

        // January and March whole: each in one file; from February on, the second file's null
        // day neither passes nor fails.
        assert_eq!(decided("d < DATE '2024-02-01'"), Some(vec![true, false, false]));
        assert_eq!(decided("d >= DATE '2024-02-01'"), None);
        // At the edge of a file's range: decided only where no row is on the edge itself.
        assert_eq!(decided("d <= DATE '2024-01-31'"), Some(vec![true, false, false]));
        assert_eq!(decided("d < DATE '2024-01-31'"), None);
        assert_eq!(decided("d > DATE '2024-03-01'"), None);
        assert_eq!(decided("NOT (d < DATE '2024-03-01') AND d IN (DATE '2024-03-01', DATE '2024-05-01')"), None);
        let march = "d >= DATE '2024-03-01'";
        assert_eq!(decided(march), Some(vec![false, false, true]));
        let shown = plan(march);
        assert!(!shown.contains("FilterExec") && shown.contains("part-2.parquet"), "{shown}");
        assert!(!shown.contains("part-0.parquet") && !shown.contains("part-1.parquet"), "{shown}");
        assert!(shown.contains("projection=[v]"), "{shown}");
        // Mid-month: filtered row by row.
        let mid = "d >= DATE '2024-03-15'";
        assert_eq!(decided(mid), None);
        assert!(plan(mid).contains("FilterExec"), "{}", plan(mid));
        assert_eq!(
            run(&ctx, &format!("SELECT count(*) AS n FROM t WHERE {mid}")),
            run(&ctx, &format!("SELECT count(*) AS n FROM m WHERE {mid}"))
        );
    }
}
