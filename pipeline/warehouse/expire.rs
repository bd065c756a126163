//! Expiry: the rows of a table past their retention period removed, in one commit with the table's record of versions.
//!
//! Each file's footer says the range of the retention column: a file whose
//! every row is older than the cutoff goes whole (so a partition of such
//! files goes whole), a file whose rows are all at or after it stays, and
//! only a file that straddles the cutoff is rewritten without its old rows,
//! as ingest writes (sorted row groups, statistics, bloom filter). A row whose
//! date is empty has no age and is kept. Every removed row's delivery count
//! and, where it was a superseded version, its entry in the table's record of
//! versions go in the same commit, so that `<table>` and `<table>_history`
//! agree with the files. Nothing is committed until the caller says so:
//! [`prepare`] stages, [`Prepared::commit`] commits.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use chrono::NaiveDate;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use rayon::prelude::*;

use super::manifest::{CommittedFile, Expiry, Manifest, Table};
use super::superseded::{self, DeliveryKey, Lineage, LineageColumns};
use super::{Error, Result, Transaction, Warehouse, compact};
use crate::config::source::{META_COMMIT, META_EXTRACT_DATE, META_EXTRACT_SEQ, META_LINE};

/// Where a timestamp's day begins: the cutoff of a timestamp column is midnight here.
const LOCAL_TZ: chrono_tz::Tz = chrono_tz::Europe::Tallinn;

/// Today's date where the warehouse is (Europe/Tallinn): the day retention periods count back from.
pub fn today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&LOCAL_TZ).date_naive()
}

/// One table's expiry: rows whose `column` is before `cutoff` go.
#[derive(Debug, Clone)]
pub struct Plan {
    pub table: String,
    pub column: String,
    pub cutoff: NaiveDate,
}

/// What an expiry does.
#[derive(Debug, Clone)]
pub struct Options {
    pub plans: Vec<Plan>,
    pub row_group_rows: usize,
    pub zstd_level: i32,
}

/// What one table lost, and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Expired {
    pub table: String,
    pub column: String,
    /// Rows dated before this day were removed.
    pub cutoff: String,
    /// Rows removed: versions of `<table>_history`.
    pub rows: u64,
    /// Of them, the newest version of their record: rows of `<table>`.
    pub current_rows: u64,
    /// Files removed whole, and files rewritten without their old rows.
    pub files_removed: usize,
    pub files_rewritten: usize,
    /// The oldest date (or time) of `column` still held, `None` when no dated row is left.
    pub oldest_kept: Option<String>,
}

/// An expiry staged and not yet committed.
#[derive(Debug)]
pub struct Prepared {
    tx: Transaction,
    next: Manifest,
    pub expired: Vec<Expired>,
}

impl Prepared {
    /// The manifest version the commit will be.
    pub fn version(&self) -> u64 {
        self.tx.version()
    }

    /// Does it remove anything?
    pub fn removes_rows(&self) -> bool {
        self.expired.iter().any(|e| e.rows > 0)
    }

    /// Commit the removal (or drop the staged files when it removes nothing); returns the version committed.
    pub fn commit(self, wh: &mut Warehouse) -> Result<Option<u64>> {
        if !self.removes_rows() {
            wh.abort(self.tx)?;
            return Ok(None);
        }
        let version = self.tx.version();
        wh.commit(self.tx, self.next)?;
        Ok(Some(version))
    }

    /// Drop what was staged and commit nothing (a dry run).
    pub fn abort(self, wh: &Warehouse) -> Result<()> {
        wh.abort(self.tx)
    }
}

/// The cutoff in the column's own units (days for a date, its unit for a timestamp), or `None` for another type.
fn cutoff_units(ty: &DataType, cutoff: NaiveDate) -> Option<i64> {
    let days = (cutoff - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days();
    match ty {
        DataType::Date32 => Some(days),
        DataType::Timestamp(unit, _) => {
            let midnight = cutoff.and_hms_opt(0, 0, 0)?.and_local_timezone(LOCAL_TZ).earliest()?.timestamp_millis();
            Some(match unit {
                TimeUnit::Second => midnight / 1000,
                TimeUnit::Millisecond => midnight,
                TimeUnit::Microsecond => midnight * 1000,
                TimeUnit::Nanosecond => midnight * 1_000_000,
            })
        }
        _ => None,
    }
}

/// A value of the column in its units, as the report says it.
fn units_text(ty: &DataType, v: i64) -> String {
    match ty {
        DataType::Date32 => {
            { NaiveDate::from_ymd_opt(1970, 1, 1).and_then(|d| d.checked_add_signed(chrono::Duration::days(v))) }
                .map_or_else(|| v.to_string(), |d| d.to_string())
        }
        DataType::Timestamp(unit, _) => {
            let ms = match unit {
                TimeUnit::Second => v.saturating_mul(1000),
                TimeUnit::Millisecond => v,
                TimeUnit::Microsecond => v / 1000,
                TimeUnit::Nanosecond => v / 1_000_000,
            };
            chrono::DateTime::from_timestamp_millis(ms).map_or_else(
                || v.to_string(),
                |t| t.with_timezone(&LOCAL_TZ).format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            )
        }
        _ => v.to_string(),
    }
}

/// What a file's footer says of the retention column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Every row is older than the cutoff.
    Remove,
    /// No row is.
    Keep,
    /// Some are (or the statistics cannot say).
    Rewrite,
}

/// The retention column's range over a file's row groups: (min, max, any null), `None` when the statistics are missing.
fn column_range(meta: &ParquetMetaData, column: &str) -> Option<(Option<i64>, Option<i64>, bool)> {
    let idx = meta.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == column)?;
    let (mut lo, mut hi, mut nulls) = (None::<i64>, None::<i64>, false);
    for rg in meta.row_groups() {
        let (min, max, n) = match rg.column(idx).statistics()? {
            Statistics::Int32(s) => {
                (s.min_opt().map(|&v| i64::from(v)), s.max_opt().map(|&v| i64::from(v)), s.null_count_opt())
            }
            Statistics::Int64(s) => (s.min_opt().copied(), s.max_opt().copied(), s.null_count_opt()),
            _ => return None,
        };
        // Statistics without a null count cannot say the file is all old.
        nulls |= n.is_none_or(|n| n > 0);
        if rg.num_rows() > n.map_or(0, |n| n as i64) {
            let (min, max) = (min?, max?);
            lo = Some(lo.map_or(min, |l| l.min(min)));
            hi = Some(hi.map_or(max, |h| h.max(max)));
        }
    }
    Some((lo, hi, nulls))
}

fn verdict(range: Option<(Option<i64>, Option<i64>, bool)>, cutoff: i64) -> Verdict {
    match range {
        None => Verdict::Rewrite,
        // Nothing dated: nothing to remove.
        Some((None, _, _)) => Verdict::Keep,
        Some((Some(lo), _, _)) if lo >= cutoff => Verdict::Keep,
        Some((_, Some(hi), false)) if hi < cutoff => Verdict::Remove,
        Some(_) => Verdict::Rewrite,
    }
}

/// Removed rows, counted per delivery, and the superseded ones among them.
#[derive(Debug, Default)]
struct Removed {
    per_delivery: HashMap<DeliveryKey, u64>,
    superseded: HashMap<DeliveryKey, u64>,
    /// Removed rows the record of versions lists one by one.
    listed: HashSet<Lineage>,
}

/// The table's superseded rows, as its record says.
struct Record {
    whole: std::collections::BTreeSet<DeliveryKey>,
    listed: HashSet<Lineage>,
}

impl Removed {
    fn count(&mut self, record: Option<&Record>, l: Lineage) {
        *self.per_delivery.entry(l.delivery()).or_default() += 1;
        let Some(record) = record else { return };
        if record.whole.contains(&l.delivery()) {
            *self.superseded.entry(l.delivery()).or_default() += 1;
        } else if record.listed.contains(&l) {
            *self.superseded.entry(l.delivery()).or_default() += 1;
            self.listed.insert(l);
        }
    }

    fn rows(&self) -> u64 {
        self.per_delivery.values().sum()
    }
}

/// Stage the removal of every plan's old rows; nothing is committed yet.
pub fn prepare(wh: &mut Warehouse, opts: &Options) -> Result<Prepared> {
    for p in &opts.plans {
        if !wh.manifest().tables.contains_key(&p.table) {
            return Err(Error::UnknownTable { table: p.table.clone() });
        }
    }
    let root = wh.root.clone();
    let mut next = wh.manifest().clone();
    let mut tx = wh.begin()?;
    // Rows are only removed: nothing new supersedes anything.
    tx.rewrite_rows();
    let mut expired = Vec::new();
    for plan in &opts.plans {
        let Some(table) = next.tables.get_mut(&plan.table) else { continue };
        if table.statistic.is_some() || table.files.is_empty() {
            continue;
        }
        expired.push(expire_table(&root, plan, table, &mut tx, opts)?);
    }
    let removed: Vec<&Expired> = expired.iter().filter(|e| e.rows > 0).collect();
    next.committed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for e in removed {
        next.expired.push(Expiry {
            commit: tx.version(),
            committed_at: next.committed_at.clone(),
            table: e.table.clone(),
            column: e.column.clone(),
            cutoff: e.cutoff.clone(),
            rows: e.rows,
            current_rows: e.current_rows,
        });
    }
    Ok(Prepared { tx, next, expired })
}

fn expire_table(root: &Path, plan: &Plan, table: &mut Table, tx: &mut Transaction, opts: &Options) -> Result<Expired> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Read { path: path.clone(), source }
    };
    let footers: Vec<(CommittedFile, PathBuf, std::sync::Arc<ParquetMetaData>, arrow::datatypes::SchemaRef)> = table
        .files
        .par_iter()
        .map(|f| {
            let path = root.join(&f.path);
            let file = File::open(&path).map_err(super::io(&path))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(read_err(&path))?;
            Ok((f.clone(), path, builder.metadata().clone(), builder.schema().clone()))
        })
        .collect::<Result<_>>()?;
    let ty = footers[0].3.field_with_name(&plan.column).map(|f| f.data_type().clone()).map_err(|_| Error::Read {
        path: footers[0].1.clone(),
        source: parquet::errors::ParquetError::General(format!("has no column {}", plan.column)),
    })?;
    let cutoff = cutoff_units(&ty, plan.cutoff).ok_or_else(|| Error::Read {
        path: footers[0].1.clone(),
        source: parquet::errors::ParquetError::General(format!("column {} is not a date or a timestamp", plan.column)),
    })?;
    let record = match &table.versions {
        Some(v) => {
            let recorded = superseded::load(root, v)?;
            let mut listed = HashSet::new();
            for b in &recorded.rows {
                let at = LineageColumns::by_name(b)
                    .map_err(|source| Error::Read { path: root.join(super::META_DIR), source })?;
                listed.extend((0..b.num_rows()).map(|i| at.at(i)));
            }
            Some(Record { whole: recorded.deliveries, listed })
        }
        None => None,
    };
    let mut removed = Removed::default();
    let (mut gone, mut rewritten) = (HashSet::new(), 0usize);
    let parts = compact::partition_parts(table).unwrap_or_default();
    let mut rewriter = compact::Rewriter::new(&plan.table, parts.clone(), opts.row_group_rows, opts.zstd_level);
    let mark = tx.mark();
    for (file, path, meta, schema) in &footers {
        let verdict = verdict(column_range(meta, &plan.column), cutoff);
        if verdict == Verdict::Keep {
            continue;
        }
        let read = read_err(path);
        let f = File::open(path).map_err(super::io(path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(&read)?;
        let reader = if verdict == Verdict::Remove {
            // Only the lineage, for the counts.
            let mask = ProjectionMask::columns(
                builder.parquet_schema(),
                [META_COMMIT, META_EXTRACT_DATE, META_EXTRACT_SEQ, META_LINE],
            );
            builder.with_projection(mask).with_batch_size(65_536).build().map_err(&read)?
        } else {
            builder.with_batch_size(65_536).build().map_err(&read)?
        };
        let key = compact::file_key(&table.partition_columns, &parts, file);
        for batch in reader {
            let batch = batch.map_err(|e| read(e.into()))?;
            let lineage = LineageColumns::by_name(&batch).map_err(&read)?;
            let at = |i| lineage.at(i);
            if verdict == Verdict::Remove {
                (0..batch.num_rows()).for_each(|i| removed.count(record.as_ref(), at(i)));
                continue;
            }
            let by = batch.column_by_name(&plan.column).ok_or_else(|| {
                read(parquet::errors::ParquetError::General(format!("has no column {}", plan.column)))
            })?;
            let by = arrow::compute::cast(by, &DataType::Int64).map_err(|e| read(e.into()))?;
            let by = by.as_primitive::<Int64Type>();
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|i| {
                    let old = by.is_valid(i) && by.value(i) < cutoff;
                    if old {
                        removed.count(record.as_ref(), at(i));
                    }
                    Some(!old)
                })
                .collect();
            let batch = arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| read(e.into()))?;
            if batch.num_rows() > 0 {
                rewriter.push(tx, path, schema, key, batch)?;
            }
        }
        if verdict == Verdict::Rewrite {
            rewritten += 1;
        }
        gone.insert(file.path.clone());
    }
    rewriter.finish(tx)?;
    let written: Vec<CommittedFile> = tx.files().skip(mark).cloned().collect();
    let files_removed = gone.len() - rewritten;
    table.files.retain(|f| !gone.contains(&f.path));
    table.files.extend(written.iter().cloned());
    let current_rows = removed.rows() - removed.superseded.values().sum::<u64>();
    if let Some(versions) = &mut table.versions
        && removed.rows() > 0
    {
        update_versions(root, &plan.table, versions, &removed, tx)?;
    }
    // The files kept: their footers are read already; only the rewritten ones are opened.
    let kept = footers
        .iter()
        .filter(|(f, ..)| !gone.contains(&f.path))
        .filter_map(|(_, _, meta, _)| column_range(meta, &plan.column).and_then(|(lo, _, _)| lo));
    let rewritten_oldest = written
        .iter()
        .map(|f| {
            let path = tx.staged_path(&f.path).unwrap_or_else(|| root.join(&f.path));
            let file = File::open(&path).map_err(super::io(&path))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(read_err(&path))?;
            Ok(column_range(builder.metadata(), &plan.column).and_then(|(lo, _, _)| lo))
        })
        .collect::<Result<Vec<_>>>()?;
    let oldest = kept.chain(rewritten_oldest.into_iter().flatten()).min();
    Ok(Expired {
        table: plan.table.clone(),
        column: plan.column.clone(),
        cutoff: plan.cutoff.to_string(),
        rows: removed.rows(),
        current_rows,
        files_removed,
        files_rewritten: rewritten,
        oldest_kept: oldest.map(|v| units_text(&ty, v)),
    })
}

/// Take the removed rows out of the table's record of versions: each delivery's counts, and the rows it lists.
fn update_versions(
    root: &Path,
    table: &str,
    versions: &mut super::Versions,
    removed: &Removed,
    tx: &mut Transaction,
) -> Result<()> {
    let before_whole: HashSet<DeliveryKey> =
        versions.deliveries.iter().filter(|d| d.is_superseded()).filter_map(|d| d.key()).collect();
    for d in &mut versions.deliveries {
        let Some(k) = d.key() else { continue };
        d.rows = d.rows.saturating_sub(removed.per_delivery.get(&k).copied().unwrap_or(0));
        d.superseded = d.superseded.saturating_sub(removed.superseded.get(&k).copied().unwrap_or(0));
    }
    // A delivery with no row left is no longer held.
    versions.deliveries.retain(|d| d.rows > 0);
    let newly_whole =
        versions.deliveries.iter().any(|d| d.is_superseded() && d.key().is_some_and(|k| !before_whole.contains(&k)));
    if removed.listed.is_empty() && !newly_whole {
        return Ok(());
    }
    let recorded = superseded::load(root, versions)?;
    let mut kept: Vec<RecordBatch> = Vec::new();
    for b in &recorded.rows {
        let at =
            LineageColumns::by_name(b).map_err(|source| Error::Read { path: root.join(super::META_DIR), source })?;
        let keep: BooleanArray = (0..b.num_rows()).map(|i| Some(!removed.listed.contains(&at.at(i)))).collect();
        let b = arrow::compute::filter_record_batch(b, &keep)
            .map_err(|e| Error::Parquet { path: root.join(super::META_DIR), source: e.into() })?;
        if b.num_rows() > 0 {
            kept.push(b);
        }
    }
    versions.superseded.clear();
    if !kept.is_empty() {
        let rel = format!("{}/{}/{table}/part-{:010}-000000.parquet", super::META_DIR, superseded::DIR, tx.version());
        let staged = tx.stage(&rel);
        let file = superseded::write_rows(&staged, &rel, &kept, tx.version())?;
        versions.superseded.push(file.clone());
        tx.add(staged, file);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_goes_whole_stays_or_is_rewritten_by_its_range() {
        assert_eq!(verdict(Some((Some(1), Some(9), false)), 10), Verdict::Remove);
        // An empty date has no age: kept, so the file is rewritten.
        assert_eq!(verdict(Some((Some(1), Some(9), true)), 10), Verdict::Rewrite);
        assert_eq!(verdict(Some((Some(10), Some(20), true)), 10), Verdict::Keep);
        assert_eq!(verdict(Some((Some(5), Some(20), false)), 10), Verdict::Rewrite);
        assert_eq!(verdict(Some((None, None, true)), 10), Verdict::Keep);
        assert_eq!(verdict(None, 10), Verdict::Rewrite);
    }

    #[test]
    fn a_timestamp_cutoff_is_local_midnight() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let ty = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let c = cutoff_units(&ty, d).unwrap();
        // Tallinn is UTC+2 in winter.
        assert_eq!(units_text(&DataType::Timestamp(TimeUnit::Millisecond, None), c), "2024-01-01T00:00:00+02:00");
        assert_eq!(chrono::DateTime::from_timestamp_millis(c).unwrap().to_rfc3339(), "2023-12-31T22:00:00+00:00");
        assert_eq!(cutoff_units(&DataType::Date32, d), Some(19723));
        assert_eq!(units_text(&DataType::Date32, 19723), "2024-01-01");
        assert_eq!(cutoff_units(&DataType::Utf8, d), None);
    }
}
