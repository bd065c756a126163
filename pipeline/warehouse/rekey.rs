//! Rotation of the key: every pseudonym of every table over-encrypted under a new key generation, in one commit.
//!
//! `Pₙ = hex(HMAC-SHA256(Kₙ, "ladu:rekey:" ‖ kind ‖ ":" ‖ Pₙ₋₁)[0..16])`
//! (DESIGN.md "Key generations"). Every file of every table is rewritten,
//! as ingest writes (row groups sorted by the new pseudonyms, statistics,
//! the bloom filter of the new record ids); rows, lineage and the records of
//! superseded rows (which name rows by lineage, not by id) stay as they are.
//! A statistic that holds pseudonyms is left out of the commit, to be
//! computed again; the others hold aggregates, which the key does not
//! change. The manifest then lists every generation's fingerprint. Nothing
//! is committed until the caller says so: [`prepare`] stages,
//! [`Prepared::commit`] commits.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;

use super::manifest::{CommittedFile, Manifest, Rekey};
use super::{Error, Result, Transaction, Warehouse, compact};
use crate::pseudonym::{self, Key, Pseudonymiser};

/// A table's pseudonym columns and the kind each holds.
#[derive(Debug, Clone)]
pub struct Plan {
    pub table: String,
    /// (column, kind).
    pub columns: Vec<(String, String)>,
}

/// What a rekey rewrites.
#[derive(Debug, Clone)]
pub struct Options {
    pub plans: Vec<Plan>,
    pub row_group_rows: usize,
    pub zstd_level: i32,
}

/// One table rewritten.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rekeyed {
    pub table: String,
    pub files: usize,
    pub rows: u64,
    pub columns: Vec<String>,
}

/// A rekey staged and not yet committed.
#[derive(Debug)]
pub struct Prepared {
    tx: Transaction,
    next: Manifest,
    pub rekeyed: Vec<Rekeyed>,
    /// Statistics that held pseudonyms: left out, to be computed again.
    pub dropped: Vec<String>,
}

impl Prepared {
    pub fn version(&self) -> u64 {
        self.tx.version()
    }

    /// Commit the new generation; returns the version committed.
    pub fn commit(self, wh: &mut Warehouse) -> Result<u64> {
        let version = self.tx.version();
        wh.commit(self.tx, self.next)?;
        Ok(version)
    }
}

fn invalid(path: &Path, problem: String) -> Error {
    Error::Read { path: path.to_owned(), source: parquet::errors::ParquetError::General(problem) }
}

/// `column` with every pseudonym over-encrypted by `step`; nulls stay null.
fn over_encrypt(column: &ArrayRef, step: &Pseudonymiser) -> std::result::Result<ArrayRef, String> {
    let text = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| e.to_string())?;
    let text = text.as_string::<i32>();
    let out: Vec<Option<pseudonym::Pseudonym>> = (0..text.len())
        .into_par_iter()
        .with_min_len(4096)
        .map(|i| {
            if text.is_null(i) {
                return Ok(None);
            }
            let v = text.value(i).as_bytes();
            if !pseudonym::is_pseudonym(v) {
                return Err("holds a value that is not a pseudonym".to_owned());
            }
            Ok(Some(step.pseudonym(v)))
        })
        .collect::<std::result::Result<_, String>>()?;
    let array: StringArray = out.iter().map(|p| p.as_ref().map(|p| p.as_str())).collect();
    Ok(Arc::new(array))
}

/// Does any text column of the file hold pseudonyms (every value one, and at least one)?
fn holds_pseudonyms(path: &Path) -> Result<bool> {
    let read = |source| Error::Read { path: path.to_owned(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).map_err(super::io(path))?)
        .and_then(|b| b.build())
        .map_err(read)?;
    let mut seen: Vec<Option<bool>> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| read(e.into()))?;
        seen.resize(batch.num_columns(), None);
        for (c, column) in batch.columns().iter().enumerate() {
            if !matches!(column.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                continue;
            }
            let Ok(text) = arrow::compute::cast(column, &DataType::Utf8) else { continue };
            let text = text.as_string::<i32>();
            for v in text.iter().flatten() {
                let is = pseudonym::is_pseudonym(v.as_bytes());
                seen[c] = Some(seen[c].unwrap_or(true) && is);
            }
        }
    }
    Ok(seen.into_iter().any(|s| s == Some(true)))
}

/// Stage every table rewritten under `key`, the new generation; `generations` are all the fingerprints, the new one last.
pub fn prepare(wh: &mut Warehouse, key: &Key, generations: &[String], opts: &Options) -> Result<Prepared> {
    let root = wh.root.clone();
    let mut next = wh.manifest().clone();
    let mut tx = wh.begin()?;
    tx.rewrite_rows();
    let mut rekeyed = Vec::new();
    let mut dropped = Vec::new();
    let names: Vec<String> = next.tables.keys().cloned().collect();
    for name in names {
        let table = next.tables.get(&name).expect("listed").clone();
        if table.statistic.is_some() {
            let mut holds = false;
            for f in &table.files {
                holds |= holds_pseudonyms(&root.join(&f.path))?;
            }
            if holds {
                next.tables.remove(&name);
                dropped.push(name);
            }
            continue;
        }
        let Some(plan) = opts.plans.iter().find(|p| p.table == name) else {
            return Err(Error::NoSource { table: name });
        };
        let (files, rows) = rewrite_table(&root, plan, &table.files, &table.partition_columns, key, &mut tx, opts)?;
        let t = next.tables.get_mut(&name).expect("listed");
        t.files = files;
        rekeyed.push(Rekeyed {
            table: name.clone(),
            files: t.files.len(),
            rows,
            columns: plan.columns.iter().map(|(c, _)| c.clone()).collect(),
        });
    }
    next.committed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    next.set_generations(generations);
    next.rekeys.push(Rekey {
        commit: tx.version(),
        committed_at: next.committed_at.clone(),
        generation: generations.last().cloned().unwrap_or_default(),
    });
    Ok(Prepared { tx, next, rekeyed, dropped })
}

/// Rewrite a table's files with its pseudonym columns over-encrypted; returns the new files and the rows.
fn rewrite_table(
    root: &Path,
    plan: &Plan,
    files: &[CommittedFile],
    partition_columns: &[String],
    key: &Key,
    tx: &mut Transaction,
    opts: &Options,
) -> Result<(Vec<CommittedFile>, u64)> {
    let steps: Vec<(String, Pseudonymiser)> =
        plan.columns.iter().map(|(c, kind)| (c.clone(), Pseudonymiser::rekey(key, kind))).collect();
    let parts = compact::partition_parts_of(partition_columns).unwrap_or_default();
    let mark = tx.mark();
    let mut rewriter = compact::Rewriter::new(&plan.table, parts.clone(), opts.row_group_rows, opts.zstd_level);
    let mut rows = 0u64;
    for file in files {
        let path: PathBuf = root.join(&file.path);
        let read = |source| Error::Read { path: path.clone(), source };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&path).map_err(super::io(&path))?).map_err(read)?;
        let schema = builder.schema().clone();
        let reader = builder.with_batch_size(65_536).build().map_err(read)?;
        let key_of_partition = compact::file_key(partition_columns, &parts, file);
        for batch in reader {
            let batch = batch.map_err(|e| read(e.into()))?;
            let mut columns = batch.columns().to_vec();
            for (name, step) in &steps {
                let Ok(i) = batch.schema().index_of(name) else { continue };
                columns[i] =
                    over_encrypt(&columns[i], step).map_err(|why| invalid(&path, format!("column {name} {why}")))?;
            }
            let batch = RecordBatch::try_new(batch.schema(), columns).map_err(|e| read(e.into()))?;
            rows += batch.num_rows() as u64;
            rewriter.push(tx, &path, &schema, key_of_partition, batch)?;
        }
    }
    rewriter.finish(tx)?;
    let before: u64 = files.iter().map(|f| f.rows).sum();
    if rows != before {
        return Err(invalid(
            &root.join(&plan.table),
            format!("its files hold {rows} rows, the manifest says {before}"),
        ));
    }
    Ok((tx.files().skip(mark).cloned().collect(), rows))
}
