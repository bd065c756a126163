//! Warehouse tables for DataFusion: the committed files of a table, and the newest version of each record.
//!
//! A table is read from the files its manifest names, never by listing
//! folders, so a run's files are invisible until its commit. Partition
//! folders (`year=2024/month=3`) become Int32 columns; filters on them alone
//! choose which files are opened at all. The least and greatest value of
//! each file's dates and times (from the footer read when the session opens)
//! choose too: a filter on a date leaves out the files outside its range
//! before the plan is made, so that their footers are not read again and the
//! files that remain are spread evenly over the threads.

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
    fn is_partition_filter(&self, expr: &Expr) -> bool {
        let names = self.partition_names();
        let columns = expr.column_refs();
        !columns.is_empty() && columns.iter().all(|c| names.contains(&c.name.as_str())) && !expr.is_volatile()
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

    /// The files whose partition values pass every partition filter, with their statistics.
    fn chosen_files(&self, state: &dyn Session, filters: &[&Expr]) -> DfResult<Vec<(&TableFile, &Arc<Statistics>)>> {
        let files: Vec<_> = self.files.iter().zip(&self.ranges).collect();
        if filters.is_empty() || files.is_empty() {
            return Ok(files);
        }
        // One row per file, one column per partition level: filters evaluate as on data.
        let schema = Arc::new(Schema::new(self.partition_fields.clone()));
        let columns: Vec<ArrayRef> = (0..self.partition_fields.len())
            .map(|i| Arc::new(Int32Array::from_iter_values(files.iter().map(|((_, v, _), _)| v[i]))) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let df_schema = DFSchema::try_from(schema)?;
        let mut keep = vec![true; files.len()];
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
        // Filters on partition columns alone are applied exactly, by choosing files.
        Ok(filters
            .iter()
            .map(|f| {
                if self.is_partition_filter(f) {
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
        let mut chosen = self.chosen_files(state, &partition_filters)?;
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
