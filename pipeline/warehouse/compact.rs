//! Compaction: a partition's many files (a file per delivery) rewritten as one, in one commit.
//!
//! Every row is kept as it is, lineage columns included, so every version,
//! every record of superseded rows and every row's provenance stays valid;
//! only the files change. Rows are written as ingest writes them: row groups
//! of `ingest.row_group_rows`, each sorted by the table's sort columns (read
//! from the files' own metadata), older deliveries first among equals. A
//! table's records of superseded rows are merged into one file alongside.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::manifest::{CommittedFile, Manifest, Table};
use super::writer::TableWriter;
use super::{ColumnLayout, Error, Result, Transaction, Warehouse, superseded};
use crate::config::source::{META_COMMIT, META_EXTRACT_DATE, META_EXTRACT_SEQ, PartitionPart};

/// What to compact.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this table (every table when `None`).
    pub table: Option<String>,
    /// Compact a partition holding more than this many files.
    pub max_files: usize,
    pub row_group_rows: usize,
    pub zstd_level: i32,
}

/// One partition compacted (or one table's records of superseded rows merged, with `partition` "_versions").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    pub table: String,
    /// Its folder under the table, e.g. `year=2024/month=3` (empty when unpartitioned).
    pub partition: String,
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
}

/// What a compaction did, and the manifest version it committed (`None`: nothing needed it).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub commit: Option<u64>,
    pub compacted: Vec<Compacted>,
    /// Partitions left as they are, and why (files that disagree on their columns).
    pub skipped: Vec<(String, String)>,
}

/// Compact every partition that holds more than `opts.max_files` files, in one commit.
pub fn compact(wh: &mut Warehouse, opts: &Options) -> Result<Outcome> {
    prepare(wh, opts)?.commit(wh)
}

/// A compaction staged and not yet committed.
#[derive(Debug)]
pub struct Prepared {
    tx: Transaction,
    next: Manifest,
    /// What it will have done (`commit` is the version it will commit as, `None` when nothing needs it).
    pub outcome: Outcome,
}

impl Prepared {
    /// Commit it (or drop the staged files when nothing needed compacting).
    pub fn commit(self, wh: &mut Warehouse) -> Result<Outcome> {
        if self.outcome.commit.is_none() {
            wh.abort(self.tx)?;
            return Ok(self.outcome);
        }
        wh.commit(self.tx, self.next)?;
        Ok(self.outcome)
    }
}

/// Stage the compaction of every partition that holds more than `opts.max_files` files; nothing is committed yet.
pub fn prepare(wh: &mut Warehouse, opts: &Options) -> Result<Prepared> {
    if let Some(t) = &opts.table
        && !wh.manifest().tables.contains_key(t)
    {
        return Err(Error::UnknownTable { table: t.clone() });
    }
    let mut next = wh.manifest().clone();
    let mut tx = wh.begin()?;
    tx.rewrite_rows();
    let mut outcome = Outcome::default();
    let root = wh.root.clone();
    for (name, table) in next.tables.iter_mut() {
        if opts.table.as_ref().is_some_and(|t| t != name) || table.statistic.is_some() {
            continue;
        }
        let Some(parts) = partition_parts(table) else { continue };
        let mut partitions: BTreeMap<Vec<String>, Vec<CommittedFile>> = BTreeMap::new();
        for f in &table.files {
            let key = table.partition_columns.iter().map(|c| f.partition.get(c).cloned().unwrap_or_default()).collect();
            partitions.entry(key).or_default().push(f.clone());
        }
        for (values, mut files) in partitions {
            if files.len() <= opts.max_files {
                continue;
            }
            let folder: Vec<String> =
                table.partition_columns.iter().zip(&values).map(|(c, v)| format!("{c}={v}")).collect();
            let folder = folder.join("/");
            // Older commits first, so that equal sort keys keep delivery order.
            files.sort_by_key(|f| (f.commit, f.path.clone()));
            let paths: Vec<PathBuf> = files.iter().map(|f| root.join(&f.path)).collect();
            let Some(key) = partition_key(&parts, &values) else { continue };
            let layout = match layout(&paths)? {
                Ok(layout) => layout,
                Err(why) => {
                    tracing::warn!(table = %name, partition = %folder, %why, "partition not compacted");
                    outcome.skipped.push((format!("{name}/{folder}"), why));
                    continue;
                }
            };
            let (schema, layout) = layout;
            let mark = tx.mark();
            let mut writer =
                TableWriter::new(name, schema, parts.clone(), layout, opts.row_group_rows, opts.zstd_level);
            for path in &paths {
                let read = |source| Error::Read { path: path.clone(), source };
                let file = File::open(path).map_err(super::io(path))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .and_then(|b| b.with_batch_size(65_536).build())
                    .map_err(read)?;
                for batch in reader {
                    writer.push(&mut tx, key, batch.map_err(|e| read(e.into()))?)?;
                }
            }
            let rows = writer.finish(&mut tx)?;
            let written: Vec<CommittedFile> = tx.files().skip(mark).cloned().collect();
            let before: u64 = files.iter().map(|f| f.rows).sum();
            if rows != before {
                return Err(Error::Read {
                    path: paths[0].clone(),
                    source: parquet::errors::ParquetError::General(format!(
                        "the partition's files hold {rows} rows, the manifest says {before}"
                    )),
                });
            }
            let gone: std::collections::HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
            table.files.retain(|f| !gone.contains(f.path.as_str()));
            table.files.extend(written.iter().cloned());
            outcome.compacted.push(Compacted {
                table: name.clone(),
                partition: folder,
                files_before: files.len(),
                files_after: written.len(),
                rows,
            });
        }
        let compacted_here = outcome.compacted.iter().any(|c| &c.table == name);
        if let Some(versions) = &mut table.versions
            && versions.superseded.len() > 1
            && (compacted_here || versions.superseded.len() > opts.max_files)
        {
            merge_records(&root, name, versions, &mut tx, &mut outcome)?;
        }
    }
    if !outcome.compacted.is_empty() {
        outcome.commit = Some(tx.version());
        next.committed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    }
    Ok(Prepared { tx, next, outcome })
}

/// Merge a table's records of superseded rows into one file, leaving out deliveries superseded whole.
fn merge_records(
    root: &Path,
    table: &str,
    versions: &mut super::Versions,
    tx: &mut Transaction,
    outcome: &mut Outcome,
) -> Result<()> {
    let recorded = superseded::load(root, versions)?;
    let rows: u64 = recorded.rows.iter().map(|b| b.num_rows() as u64).sum();
    let before = versions.superseded.len();
    versions.superseded.clear();
    if rows > 0 {
        let rel = format!("{}/{}/{table}/part-{:010}-000000.parquet", super::META_DIR, superseded::DIR, tx.version());
        let staged = tx.stage(&rel);
        let file = superseded::write_rows(&staged, &rel, &recorded.rows, tx.version())?;
        versions.superseded.push(file.clone());
        tx.add(staged, file);
    }
    outcome.compacted.push(Compacted {
        table: table.to_owned(),
        partition: format!("{}/{}", super::META_DIR, superseded::DIR),
        files_before: before,
        files_after: versions.superseded.len(),
        rows,
    });
    Ok(())
}

/// The partition levels of a table, if ladu knows them all.
pub(crate) fn partition_parts(table: &Table) -> Option<Vec<PartitionPart>> {
    partition_parts_of(&table.partition_columns)
}

/// The partition levels named by folder columns, if ladu knows them all.
pub(crate) fn partition_parts_of(columns: &[String]) -> Option<Vec<PartitionPart>> {
    columns
        .iter()
        .map(|c| match c.as_str() {
            "year" => Some(PartitionPart::Year),
            "month" => Some(PartitionPart::Month),
            _ => None,
        })
        .collect()
}

/// The writer's partition key of a committed file, from its folder values (0 when unpartitioned).
pub(crate) fn file_key(partition_columns: &[String], parts: &[PartitionPart], file: &CommittedFile) -> u32 {
    let values: Vec<String> =
        partition_columns.iter().map(|c| file.partition.get(c).cloned().unwrap_or_default()).collect();
    partition_key(parts, &values).unwrap_or(0)
}

/// Writers of a table's rows read back from its files and written again
/// (expiry, rekey): one per set of columns, so that files written before a
/// column was added keep theirs, each with the layout its files were written with.
pub(crate) struct Rewriter {
    table: String,
    parts: Vec<PartitionPart>,
    row_group_rows: usize,
    zstd_level: i32,
    writers: Vec<(arrow::datatypes::SchemaRef, TableWriter)>,
}

impl Rewriter {
    pub(crate) fn new(table: &str, parts: Vec<PartitionPart>, row_group_rows: usize, zstd_level: i32) -> Rewriter {
        Rewriter { table: table.to_owned(), parts, row_group_rows, zstd_level, writers: Vec::new() }
    }

    /// Write `batch`, read from the file at `path` whose columns are `schema`, to partition `key`.
    pub(crate) fn push(
        &mut self,
        tx: &mut Transaction,
        path: &Path,
        schema: &arrow::datatypes::SchemaRef,
        key: u32,
        batch: arrow::array::RecordBatch,
    ) -> Result<()> {
        let at = match self.writers.iter().position(|(s, _)| s.fields() == schema.fields()) {
            Some(at) => at,
            None => {
                let layout = layout(std::slice::from_ref(&path.to_owned()))?.map_err(|why| Error::Read {
                    path: path.to_owned(),
                    source: parquet::errors::ParquetError::General(why),
                })?;
                let w = TableWriter::new(
                    &self.table,
                    schema.clone(),
                    self.parts.clone(),
                    layout.1,
                    self.row_group_rows,
                    self.zstd_level,
                );
                self.writers.push((schema.clone(), w));
                self.writers.len() - 1
            }
        };
        self.writers[at].1.push(tx, key, batch)
    }

    /// Close every file and stage them in `tx`; returns the rows written.
    pub(crate) fn finish(self, tx: &mut Transaction) -> Result<u64> {
        let mut rows = 0;
        for (_, w) in self.writers {
            rows += w.finish(tx)?;
        }
        Ok(rows)
    }
}

/// The writer's partition key (`year * 100 + month`) of a partition's folder values.
pub(crate) fn partition_key(parts: &[PartitionPart], values: &[String]) -> Option<u32> {
    let mut key = 0;
    for (p, v) in parts.iter().zip(values) {
        let v: u32 = v.parse().ok()?;
        key += match p {
            PartitionPart::Year => v * 100,
            PartitionPart::Month => v,
        };
    }
    Some(key)
}

/// The schema and layout the files were written with (from the first), or why they cannot be merged.
#[allow(clippy::type_complexity)]
pub(crate) fn layout(paths: &[PathBuf]) -> Result<Result<(arrow::datatypes::SchemaRef, ColumnLayout), String>> {
    let mut first: Option<(arrow::datatypes::SchemaRef, ColumnLayout)> = None;
    for path in paths {
        let read = |source| Error::Read { path: path.clone(), source };
        let file = File::open(path).map_err(super::io(path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(read)?;
        let schema = builder.schema().clone();
        match &first {
            Some((s, _)) if s.fields() != schema.fields() => {
                return Ok(Err(format!("{} has other columns than {}", path.display(), paths[0].display())));
            }
            Some(_) => continue,
            None => {}
        }
        let meta = builder.metadata();
        let runs: Vec<String> = [META_EXTRACT_DATE, META_EXTRACT_SEQ, META_COMMIT]
            .into_iter()
            .filter(|c| schema.field_with_name(c).is_ok())
            .map(str::to_owned)
            .collect();
        let mut layout = ColumnLayout { runs, ..Default::default() };
        if let Some(rg) = meta.row_groups().first() {
            layout.sort =
                rg.sorting_columns().map(|s| s.iter().map(|c| c.column_idx as usize).collect()).unwrap_or_default();
            // Columns written without a dictionary were (nearly) all distinct.
            layout.unique = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(i, f)| {
                    !layout.runs.contains(f.name())
                        && rg.columns().get(*i).is_some_and(|c| c.dictionary_page_offset().is_none())
                })
                .map(|(_, f)| f.name().clone())
                .collect();
        }
        first = Some((schema, layout));
    }
    Ok(first.ok_or_else(|| "no files".to_owned()))
}
