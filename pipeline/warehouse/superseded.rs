//! What each commit supersedes: the rows a newer version of their record replaces, found by the writer at commit time.
//!
//! `<table>` shows the newest version of each record (DESIGN.md), by extract
//! date, then sequence number, commit and line. Only the records a commit
//! delivers can change which version of a record is newest, so the commit
//! looks up just those record ids in the earlier files, skipping each row
//! group whose deliveries are all superseded already, or whose `record_id`
//! statistics or bloom filter rule every one of them out. What it finds is
//! committed with the manifest version: a Parquet file of superseded rows
//! under `_ladu/versions/<table>/`, and per delivery a count of the rows
//! superseded, so that a full snapshot superseded by the next one is one
//! count, not a million rows. The cost grows with the commit, not with the
//! warehouse; SQL sessions only read the answer.
//!
//! A table written before commits recorded this gets its record from the
//! next commit, in one full pass over its record ids (in hash-partitioned
//! rounds, so that memory stays bounded): the upgrade in place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, Int32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Field, Int32Type, Int64Type, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::errors::ParquetError;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use rayon::prelude::*;

use super::manifest::{CommittedFile, DeliveryRows, Manifest, Versions};
use super::{Error, Result, Transaction};
use crate::config::source::{META_COMMIT, META_EXTRACT_DATE, META_EXTRACT_SEQ, META_LINE, RECORD_ID};

/// Folder of the records of superseded rows, under `_ladu/`.
pub const DIR: &str = "versions";

/// Columns of a file of superseded rows, and the lineage columns of a table's rows.
const LINEAGE: [&str; 4] = [META_COMMIT, META_EXTRACT_DATE, META_EXTRACT_SEQ, META_LINE];

/// Rows of an unrecorded table held in memory per round of the full pass.
const FULL_PASS_ROWS: u64 = 2_000_000;

/// Where a row came from. Ordered as its record's versions are: the newest is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lineage {
    pub extract_date: i32,
    pub extract_seq: i32,
    pub commit: i64,
    pub line: i64,
}

/// A delivery: commit, extract date (days since 1970) and sequence number.
pub type DeliveryKey = (i64, i32, i32);

impl Lineage {
    pub fn delivery(&self) -> DeliveryKey {
        (self.commit, self.extract_date, self.extract_seq)
    }
}

/// Schema of a file of superseded rows.
pub fn row_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(META_COMMIT, DataType::Int64, false),
        Field::new(META_EXTRACT_DATE, DataType::Date32, false),
        Field::new(META_EXTRACT_SEQ, DataType::Int32, false),
        Field::new(META_LINE, DataType::Int64, false),
    ]))
}

/// Does a table with these columns have versions (a record id and the lineage columns)?
pub fn has_versions(schema: &Schema) -> bool {
    std::iter::once(RECORD_ID).chain(LINEAGE).all(|c| schema.field_with_name(c).is_ok())
}

fn date_text(days: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map_or_else(|| days.to_string(), |t| t.date_naive().to_string())
}

fn date_days(text: &str) -> Option<i32> {
    let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    i32::try_from((d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days()).ok()
}

impl DeliveryRows {
    pub fn key(&self) -> Option<DeliveryKey> {
        Some((i64::try_from(self.commit).ok()?, date_days(&self.extract_date)?, i32::try_from(self.extract_seq).ok()?))
    }
}

/// Record what this commit supersedes in every table of `next` that has versions.
///
/// `before` is the committed state; `tx` holds the commit's new files, and
/// receives the files of superseded rows. A transaction that rewrites rows it
/// already holds (compaction) supersedes nothing; it only gives an
/// unrecorded table its record.
pub fn record(root: &Path, before: &Manifest, next: &mut Manifest, tx: &mut Transaction) -> Result<()> {
    let staged: HashMap<String, PathBuf> = tx.files.iter().map(|(p, f)| (f.path.clone(), p.clone())).collect();
    let locate = |f: &CommittedFile| staged.get(&f.path).cloned().unwrap_or_else(|| root.join(&f.path));
    let version = tx.version();
    for (name, table) in next.tables.iter_mut() {
        if table.statistic.is_some() || table.files.is_empty() {
            continue;
        }
        let new: Vec<PathBuf> = table.files.iter().filter(|f| f.commit == version).map(&locate).collect();
        let started = std::time::Instant::now();
        let found = match &table.versions {
            None => {
                if !has_versions(file_schema(&locate(&table.files[0]))?.as_ref()) {
                    continue;
                }
                let files: Vec<PathBuf> = table.files.iter().map(&locate).collect();
                let rows = table.files.iter().map(|f| f.rows).sum();
                full_pass(&files, rows, &tx.stage("superseded.scratch"))?
            }
            Some(_) if new.is_empty() || tx.rewrites => continue,
            Some(versions) => {
                let old = before.tables.get(name).map_or(&[][..], |t| &t.files[..]);
                let old: Vec<PathBuf> = old.iter().map(&locate).collect();
                let whole: BTreeSet<DeliveryKey> =
                    versions.deliveries.iter().filter(|d| d.is_superseded()).filter_map(DeliveryRows::key).collect();
                incremental(&new, &old, &whole)?
            }
        };
        let versions = table.versions.get_or_insert_with(Versions::default);
        let (read, total) = found.row_groups;
        let written = apply(name, versions, found, tx)?;
        tracing::info!(
            table = %name,
            superseded = written,
            row_groups_read = read,
            row_groups = total,
            seconds = started.elapsed().as_secs_f64(),
            "recorded the rows this commit supersedes"
        );
    }
    Ok(())
}

/// What a pass found: rows per delivery it read for the first time, and what it newly supersedes.
#[derive(Debug, Default)]
struct Found {
    delivered: BTreeMap<DeliveryKey, u64>,
    /// Rows newly superseded, per delivery.
    counts: HashMap<DeliveryKey, u64>,
    /// The rows newly superseded; those of a delivery superseded whole may be left out.
    rows: Vec<Lineage>,
    /// Earlier row groups read, of all there are.
    row_groups: (usize, usize),
}

impl Found {
    fn supersede(&mut self, l: Lineage) {
        *self.counts.entry(l.delivery()).or_default() += 1;
        self.rows.push(l);
    }
}

/// Superseded rows as one batch of [`row_schema`], in order.
fn rows_batch(mut rows: Vec<Lineage>) -> RecordBatch {
    rows.sort_unstable();
    RecordBatch::try_new(
        row_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|l| l.commit))) as ArrayRef,
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|l| l.extract_date))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|l| l.extract_seq))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|l| l.line))),
        ],
    )
    .expect("columns match the schema")
}

/// Fold `found` into `versions` and stage its file of superseded rows; returns how many rows it lists.
fn apply(table: &str, versions: &mut Versions, found: Found, tx: &mut Transaction) -> Result<u64> {
    for (&(commit, date, seq), &rows) in &found.delivered {
        versions.deliveries.push(DeliveryRows {
            commit: commit as u64,
            extract_date: date_text(date),
            extract_seq: seq as u32,
            rows,
            superseded: 0,
        });
    }
    let mut whole = BTreeSet::new();
    for d in &mut versions.deliveries {
        if let Some(n) = d.key().and_then(|k| found.counts.get(&k)) {
            d.superseded += n;
            if d.is_superseded() {
                whole.extend(d.key());
            }
        }
    }
    let rows: Vec<Lineage> = found.rows.into_iter().filter(|l| !whole.contains(&l.delivery())).collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let rel = format!("{}/{DIR}/{table}/part-{:010}-000000.parquet", super::META_DIR, tx.version());
    let staged = tx.stage(&rel);
    let file = write_rows(&staged, &rel, &[rows_batch(rows)], tx.version())?;
    let n = file.rows;
    versions.superseded.push(file.clone());
    tx.add(staged, file);
    Ok(n)
}

/// Write superseded rows to `staged`, durably; returns what it commits as at `rel`.
pub(crate) fn write_rows(staged: &Path, rel: &str, batches: &[RecordBatch], version: u64) -> Result<CommittedFile> {
    let err = |source| Error::Parquet { path: staged.to_owned(), source };
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let f = File::create(staged).map_err(super::io(staged))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(f, row_schema(), Some(props)).map_err(err)?;
    for b in batches {
        w.write(b).map_err(err)?;
    }
    w.into_inner().map_err(err)?.sync_all().map_err(super::io(staged))?;
    let (sha256, bytes) = super::writer::hash_file(staged).map_err(super::io(staged))?;
    Ok(CommittedFile {
        path: rel.to_owned(),
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        bytes,
        sha256,
        partition: Default::default(),
        commit: version,
    })
}

/// The superseded rows a table's record names: whole deliveries, and the other rows one by one.
#[derive(Debug, Default)]
pub struct Recorded {
    pub deliveries: BTreeSet<DeliveryKey>,
    /// Batches of [`row_schema`], none of a delivery in `deliveries`.
    pub rows: Vec<RecordBatch>,
}

/// Read a table's record of superseded rows.
pub fn load(root: &Path, versions: &Versions) -> Result<Recorded> {
    let deliveries: BTreeSet<DeliveryKey> =
        versions.deliveries.iter().filter(|d| d.is_superseded()).filter_map(DeliveryRows::key).collect();
    let mut rows = Vec::new();
    for f in &versions.superseded {
        let path = root.join(&f.path);
        let read = |source| Error::Read { path: path.clone(), source };
        let file = File::open(&path).map_err(super::io(&path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build()).map_err(read)?;
        for b in reader {
            let b = b.map_err(|e| read(e.into()))?;
            let b = RecordBatch::try_new(row_schema(), b.columns().to_vec()).map_err(|e| read(e.into()))?;
            let l = lineage_columns(&b, 0).map_err(read)?;
            let keep: arrow::array::BooleanArray =
                (0..b.num_rows()).map(|i| Some(!deliveries.contains(&l.at(i).delivery()))).collect();
            rows.push(arrow::compute::filter_record_batch(&b, &keep).map_err(|e| read(e.into()))?);
        }
    }
    Ok(Recorded { deliveries, rows })
}

/// The Arrow schema of a Parquet file.
fn file_schema(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(super::io(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|source| Error::Read { path: path.to_owned(), source })?;
    Ok(builder.schema().clone())
}

/// The lineage columns of a batch, from column `first` on, in [`LINEAGE`]'s order.
pub(crate) struct LineageColumns<'a> {
    commit: &'a Int64Array,
    date: &'a Date32Array,
    seq: &'a Int32Array,
    line: &'a Int64Array,
}

impl<'a> LineageColumns<'a> {
    /// The lineage columns of a batch wherever they are, by name.
    pub(crate) fn by_name(b: &'a RecordBatch) -> Result<LineageColumns<'a>, ParquetError> {
        let col = |name: &str| {
            b.column_by_name(name).ok_or_else(|| ParquetError::General(format!("it has no column {name}")))
        };
        let wrong = |c: &str| ParquetError::General(format!("column {c} has an unexpected type"));
        Ok(LineageColumns {
            commit: col(META_COMMIT)?.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong(META_COMMIT))?,
            date: col(META_EXTRACT_DATE)?.as_primitive_opt::<Date32Type>().ok_or_else(|| wrong(META_EXTRACT_DATE))?,
            seq: col(META_EXTRACT_SEQ)?.as_primitive_opt::<Int32Type>().ok_or_else(|| wrong(META_EXTRACT_SEQ))?,
            line: col(META_LINE)?.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong(META_LINE))?,
        })
    }

    pub(crate) fn at(&self, i: usize) -> Lineage {
        Lineage {
            extract_date: self.date.value(i),
            extract_seq: self.seq.value(i),
            commit: self.commit.value(i),
            line: self.line.value(i),
        }
    }
}

fn lineage_columns(b: &RecordBatch, first: usize) -> Result<LineageColumns<'_>, ParquetError> {
    let wrong = |c: &str| ParquetError::General(format!("column {c} has an unexpected type"));
    Ok(LineageColumns {
        commit: b.column(first).as_primitive_opt::<Int64Type>().ok_or_else(|| wrong(META_COMMIT))?,
        date: b.column(first + 1).as_primitive_opt::<Date32Type>().ok_or_else(|| wrong(META_EXTRACT_DATE))?,
        seq: b.column(first + 2).as_primitive_opt::<Int32Type>().ok_or_else(|| wrong(META_EXTRACT_SEQ))?,
        line: b.column(first + 3).as_primitive_opt::<Int64Type>().ok_or_else(|| wrong(META_LINE))?,
    })
}

/// Read `record_id` and the lineage of the rows of `row_groups` (all when `None`), calling `each` per row.
fn read_rows(path: &Path, row_groups: Option<Vec<usize>>, each: impl FnMut(&[u8], Lineage)) -> Result<()> {
    let file = File::open(path).map_err(super::io(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|source| Error::Read { path: path.to_owned(), source })?;
    read_rows_with(path, builder, row_groups, each)
}

/// As [`read_rows`], from a file whose footer `builder` has read already.
fn read_rows_with(
    path: &Path,
    builder: ParquetRecordBatchReaderBuilder<File>,
    row_groups: Option<Vec<usize>>,
    mut each: impl FnMut(&[u8], Lineage),
) -> Result<()> {
    let read = |source| Error::Read { path: path.to_owned(), source };
    let descr = builder.parquet_schema();
    let leaves = std::iter::once(RECORD_ID)
        .chain(LINEAGE)
        .map(|name| {
            descr
                .columns()
                .iter()
                .position(|c| c.path().string() == name)
                .ok_or_else(|| read(ParquetError::General(format!("column {name} is missing"))))
        })
        .collect::<Result<Vec<usize>>>()?;
    let mask = ProjectionMask::leaves(descr, leaves);
    let mut builder = builder.with_projection(mask).with_batch_size(65_536);
    if let Some(groups) = row_groups {
        builder = builder.with_row_groups(groups);
    }
    for b in builder.build().map_err(read)? {
        let b = b.map_err(|e| read(e.into()))?;
        // The projection keeps the file's column order: find each by name.
        let column = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| read(ParquetError::General(format!("column {name} is missing"))))
        };
        let ordered = RecordBatch::try_new(
            Arc::new(Schema::new(
                std::iter::once(RECORD_ID)
                    .chain(LINEAGE)
                    .map(|c| b.schema().field_with_name(c).cloned())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| read(e.into()))?,
            )),
            std::iter::once(RECORD_ID).chain(LINEAGE).map(column).collect::<Result<Vec<_>>>()?,
        )
        .map_err(|e| read(e.into()))?;
        let ids = arrow::compute::cast(ordered.column(0), &DataType::Binary).map_err(|e| read(e.into()))?;
        let ids = ids.as_binary::<i32>();
        let l = lineage_columns(&ordered, 1).map_err(read)?;
        for i in 0..ordered.num_rows() {
            // A row without a record id has no other version.
            if ids.is_valid(i) {
                each(ids.value(i), l.at(i));
            }
        }
    }
    Ok(())
}

/// A record id as a number: the 16 bytes a pseudonym's 32 hex digits spell, or (for an id of
/// any other form) the first 16 bytes of its SHA-256, where a collision is out of reach.
fn id_key(id: &[u8]) -> u128 {
    // A table lookup per digit, checked once at the end: this runs for every row a commit reads.
    if let Ok(digits) = <&[u8; 32]>::try_from(id) {
        let half = |digits: &[u8]| {
            digits.iter().fold((0u64, 0u8), |(n, bad), &c| {
                let d = HEX_DIGIT[usize::from(c)];
                ((n << 4) | u64::from(d & 0x0f), bad | d)
            })
        };
        let ((hi, bad_hi), (lo, bad_lo)) = (half(&digits[..16]), half(&digits[16..]));
        if (bad_hi | bad_lo) & 0xf0 == 0 {
            return (u128::from(hi) << 64) | u128::from(lo);
        }
    }
    hashed_key(id)
}

/// The value of each lowercase hex digit; 0xff for any other byte.
static HEX_DIGIT: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn hashed_key(id: &[u8]) -> u128 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// Parquet's hash of a value for its bloom filters: xxHash64, seed 0, of the value's bytes.
fn bloom_hash(value: &[u8]) -> u64 {
    twox_hash::XxHash64::oneshot(0, value)
}

/// A split-block bloom filter's bit set, probed with hashes computed once (Parquet's `Sbbf` hashes at every probe).
struct BloomBits(Vec<[u32; 8]>);

/// The salt of Parquet's split-block bloom filter (parquet-format, BloomFilter.md).
const SALT: [u32; 8] = [0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d, 0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31];

impl BloomBits {
    fn from_sbbf(f: &Sbbf) -> Result<BloomBits, ParquetError> {
        let mut bytes = Vec::with_capacity(f.num_blocks() * 32);
        f.write_bitset(&mut bytes)?;
        let blocks = bytes
            .chunks_exact(32)
            .map(|b| std::array::from_fn(|i| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])))
            .collect();
        Ok(BloomBits(blocks))
    }

    fn may_contain(&self, hash: u64) -> bool {
        let block = &self.0[(((hash >> 32) * self.0.len() as u64) >> 32) as usize];
        let x = hash as u32;
        (0..8).all(|i| block[i] & (1u32 << (x.wrapping_mul(SALT[i]) >> 27)) != 0)
    }
}

/// The newest row of one record the commit delivers, and the newest before the commit.
#[derive(Debug, Clone, Copy)]
struct Touched {
    new: Lineage,
    old: Option<Lineage>,
}

/// The rows `new` (this commit's files) supersede among themselves and in `old` (the files committed before).
fn incremental(new: &[PathBuf], old: &[PathBuf], whole: &BTreeSet<DeliveryKey>) -> Result<Found> {
    let mut found = Found::default();
    let mut touched: foldhash::HashMap<u128, Touched> = foldhash::HashMap::default();
    let mut hashes: Vec<u64> = Vec::new();
    let (mut lowest, mut highest): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    for path in new {
        read_rows(path, None, |id, l| {
            *found.delivered.entry(l.delivery()).or_default() += 1;
            match touched.entry(id_key(id)) {
                std::collections::hash_map::Entry::Occupied(mut t) => {
                    let t = t.get_mut();
                    found.supersede(t.new.min(l));
                    t.new = t.new.max(l);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Touched { new: l, old: None });
                    hashes.push(bloom_hash(id));
                    if lowest.as_deref().is_none_or(|x| id < x) {
                        lowest = Some(id.to_vec());
                    }
                    if highest.as_deref().is_none_or(|x| id > x) {
                        highest = Some(id.to_vec());
                    }
                }
            }
        })?;
    }
    let (Some(lowest), Some(highest)) = (lowest, highest) else { return Ok(found) };
    // In the order of the filter's blocks, which the hash's high half chooses.
    hashes.sort_unstable();
    let probe = Probe { hashes: &hashes, lowest: &lowest, highest: &highest, whole };
    let matches = old
        .par_iter()
        .map(|path| -> Result<Hits> {
            // The footer is read once, for the probe and the rows; the bloom filters through a second handle.
            let file = File::open(path).map_err(super::io(path))?;
            let bloom_file = file.try_clone().map_err(super::io(path))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|source| Error::Read { path: path.clone(), source })?;
            let (groups, total) = probe.row_groups(path, &builder, &bloom_file)?;
            let mut hits = Vec::new();
            let read = groups.len();
            if groups.is_empty() {
                return Ok((hits, 0, total));
            }
            read_rows_with(path, builder, Some(groups), |id, l| {
                let key = id_key(id);
                if touched.contains_key(&key) {
                    hits.push((key, l));
                }
            })?;
            Ok((hits, read, total))
        })
        .collect::<Result<Vec<_>>>()?;
    found.row_groups = matches.iter().fold((0, 0), |(r, t), (_, read, total)| (r + read, t + total));
    for (id, l) in matches.into_iter().flat_map(|(hits, _, _)| hits) {
        let t = touched.get_mut(&id).expect("only touched ids are kept");
        t.old = t.old.max(Some(l));
    }
    for t in touched.values() {
        match t.old {
            Some(old) if old > t.new => found.supersede(t.new),
            Some(old) => found.supersede(old),
            None => {}
        }
    }
    Ok(found)
}

/// Versions found in one earlier file (record id, lineage), its row groups read, and its row groups.
type Hits = (Vec<(u128, Lineage)>, usize, usize);

/// What the row groups of an earlier file are tested against.
struct Probe<'a> {
    /// Bloom hashes of the commit's record ids, sorted.
    hashes: &'a [u64],
    lowest: &'a [u8],
    highest: &'a [u8],
    /// Deliveries every row of which is superseded already.
    whole: &'a BTreeSet<DeliveryKey>,
}

impl Probe<'_> {
    /// The row groups of `path` that may hold a version of a record the commit delivers.
    fn row_groups(
        &self,
        path: &Path,
        builder: &ParquetRecordBatchReaderBuilder<File>,
        file: &File,
    ) -> Result<(Vec<usize>, usize)> {
        let read = |source| Error::Read { path: path.to_owned(), source };
        let meta = builder.metadata();
        let descr = builder.parquet_schema();
        let index = |name: &str| descr.columns().iter().position(|c| c.path().string() == name);
        let (Some(id), Some(commit), Some(date), Some(seq)) =
            (index(RECORD_ID), index(META_COMMIT), index(META_EXTRACT_DATE), index(META_EXTRACT_SEQ))
        else {
            return Err(read(ParquetError::General("the file lacks the record id or lineage columns".into())));
        };
        let mut keep = Vec::new();
        for (g, rg) in meta.row_groups().iter().enumerate() {
            if self.all_superseded(rg, commit, date, seq) || !self.id_range_overlaps(rg, id) {
                continue;
            }
            let bloom = Sbbf::read_from_column_chunk(rg.column(id), file).map_err(read)?;
            if let Some(bloom) = bloom {
                let bits = BloomBits::from_sbbf(&bloom).map_err(read)?;
                if !self.hashes.iter().any(|&h| bits.may_contain(h)) {
                    continue;
                }
            }
            keep.push(g);
        }
        Ok((keep, meta.num_row_groups()))
    }

    /// Are all deliveries the row group's lineage statistics allow superseded whole?
    fn all_superseded(&self, rg: &RowGroupMetaData, commit: usize, date: usize, seq: usize) -> bool {
        let range = |c: usize| -> Option<(i64, i64)> {
            match rg.column(c).statistics()? {
                Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
                Statistics::Int32(s) => Some((i64::from(*s.min_opt()?), i64::from(*s.max_opt()?))),
                _ => None,
            }
        };
        let (Some(c), Some(d), Some(s)) = (range(commit), range(date), range(seq)) else { return false };
        // Only a single delivery is decided here: a range of several may hold one not superseded.
        c.0 == c.1 && d.0 == d.1 && s.0 == s.1 && self.whole.contains(&(c.0, d.0 as i32, s.0 as i32))
    }

    fn id_range_overlaps(&self, rg: &RowGroupMetaData, id: usize) -> bool {
        match rg.column(id).statistics() {
            Some(Statistics::ByteArray(s)) => {
                match (s.min_bytes_opt(), s.max_bytes_opt(), s.min_is_exact() && s.max_is_exact()) {
                    (Some(min), Some(max), true) => !(self.highest < min || self.lowest > max),
                    _ => true,
                }
            }
            _ => true,
        }
    }
}

/// Every superseded row of a table, from all its files: the upgrade of a
/// table committed before commits recorded them, and the reference the tests
/// check [`incremental`] against. Each round holds the rows of a share of the
/// record ids (by the id's number), at most [`FULL_PASS_ROWS`], sorted by id
/// and version; the rows it finds superseded wait in a scratch file beside
/// the files until every delivery's count is known, so that memory stays
/// bounded whatever the table's size.
fn full_pass(files: &[PathBuf], rows: u64, scratch: &Path) -> Result<Found> {
    let rounds = rows.div_ceil(FULL_PASS_ROWS).max(1) as u128;
    let mut found = Found::default();
    let mut losers = std::io::BufWriter::new(File::create(scratch).map_err(super::io(scratch))?);
    for round in 0..rounds {
        let mut held: Vec<(u128, Lineage)> = Vec::new();
        for path in files {
            read_rows(path, None, |id, l| {
                if round == 0 {
                    *found.delivered.entry(l.delivery()).or_default() += 1;
                }
                let key = id_key(id);
                if key % rounds == round {
                    held.push((key, l));
                }
            })?;
        }
        held.sort_unstable();
        for pair in held.windows(2) {
            // Every version but the last (the newest) of each id.
            if pair[0].0 == pair[1].0 {
                let l = pair[0].1;
                *found.counts.entry(l.delivery()).or_default() += 1;
                let mut bytes = [0u8; 24];
                bytes[..4].copy_from_slice(&l.extract_date.to_le_bytes());
                bytes[4..8].copy_from_slice(&l.extract_seq.to_le_bytes());
                bytes[8..16].copy_from_slice(&l.commit.to_le_bytes());
                bytes[16..].copy_from_slice(&l.line.to_le_bytes());
                std::io::Write::write_all(&mut losers, &bytes).map_err(super::io(scratch))?;
            }
        }
    }
    drop(losers);
    // Rows of deliveries superseded whole are counted, not listed.
    let whole: BTreeSet<DeliveryKey> =
        found.counts.iter().filter(|(d, n)| found.delivered.get(d) == Some(n)).map(|(d, _)| *d).collect();
    let mut reader = std::io::BufReader::new(File::open(scratch).map_err(super::io(scratch))?);
    let mut bytes = [0u8; 24];
    loop {
        match std::io::Read::read_exact(&mut reader, &mut bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(super::io(scratch)(e)),
        }
        let word = |r: std::ops::Range<usize>| bytes[r].to_vec();
        let l = Lineage {
            extract_date: i32::from_le_bytes(word(0..4).try_into().expect("4 bytes")),
            extract_seq: i32::from_le_bytes(word(4..8).try_into().expect("4 bytes")),
            commit: i64::from_le_bytes(word(8..16).try_into().expect("8 bytes")),
            line: i64::from_le_bytes(word(16..24).try_into().expect("8 bytes")),
        };
        if !whole.contains(&l.delivery()) {
            found.rows.push(l);
        }
    }
    let _ = std::fs::remove_file(scratch);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use arrow::array::StringArray;
    use proptest::prelude::*;

    use super::*;
    use crate::config::source::PartitionPart;
    use crate::warehouse::writer::TableWriter;
    use crate::warehouse::{ColumnLayout, Manifest, Warehouse, compact};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(RECORD_ID, DataType::Utf8, false),
            Field::new("amount", DataType::Int64, false),
            Field::new(META_EXTRACT_DATE, DataType::Date32, false),
            Field::new(META_EXTRACT_SEQ, DataType::Int32, false),
            Field::new(META_COMMIT, DataType::Int64, false),
            Field::new(META_LINE, DataType::Int64, false),
        ]))
    }

    /// One delivery: its extract date, rows (record id, which month it falls in), and whether it is refused.
    /// A scratch file name under the warehouse's staging folder (which recovery empties).
    fn tempfile_in(root: &Path) -> Result<PathBuf> {
        let dir = crate::warehouse::files::staging(root);
        std::fs::create_dir_all(&dir).map_err(crate::warehouse::io(&dir))?;
        Ok(dir.join(
            format!("recompute-{}-{:?}.scratch", std::process::id(), std::thread::current().id())
                .replace(['(', ')'], ""),
        ))
    }

    /// The superseded rows of one table by a full pass over its files, as a record would name them (the reference of the tests).
    fn recompute(root: &Path, table: &crate::warehouse::manifest::Table) -> Result<Recorded> {
        let files: Vec<PathBuf> = table.files.iter().map(|f| root.join(&f.path)).collect();
        let scratch = tempfile_in(root)?;
        let found = full_pass(&files, table.files.iter().map(|f| f.rows).sum(), &scratch)?;
        let deliveries: BTreeSet<DeliveryKey> =
            found.counts.iter().filter(|(d, n)| found.delivered.get(d) == Some(n)).map(|(d, _)| *d).collect();
        let rows: Vec<Lineage> = found.rows.into_iter().filter(|l| !deliveries.contains(&l.delivery())).collect();
        Ok(Recorded { deliveries, rows: vec![rows_batch(rows)] })
    }

    #[derive(Debug, Clone)]
    struct Delivery {
        date: i32,
        rows: Vec<(u8, bool)>,
        refused: bool,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Commit(Vec<Delivery>),
        /// Every record delivered again, as a full snapshot is.
        Snapshot(i32),
        Compact,
        /// The warehouse as a version before commits recorded their superseded rows left it.
        Forget,
    }

    const IDS: u8 = 12;

    fn step() -> impl Strategy<Value = Step> {
        let delivery = (0..6i32, prop::collection::vec((0..IDS, any::<bool>()), 0..10), prop::bool::weighted(0.15))
            .prop_map(|(date, rows, refused)| Delivery { date, rows, refused });
        prop_oneof![
            6 => prop::collection::vec(delivery, 1..4).prop_map(Step::Commit),
            1 => (0..6i32).prop_map(Step::Snapshot),
            1 => Just(Step::Compact),
            1 => Just(Step::Forget),
        ]
    }

    /// Write and commit `deliveries`; returns the committed rows as (id, lineage).
    fn commit(wh: &mut Warehouse, deliveries: &[Delivery], seq: &mut i32) -> Vec<(String, Lineage)> {
        let mut tx = wh.begin().unwrap();
        let mut next: Manifest = wh.manifest().clone();
        let mut committed = Vec::new();
        let layout = ColumnLayout { sort: vec![1], unique: vec![RECORD_ID.into()], ..Default::default() };
        for d in deliveries {
            *seq += 1;
            let mark = tx.mark();
            let mut writer =
                TableWriter::new("t", schema(), vec![PartitionPart::Year, PartitionPart::Month], layout.clone(), 3, 1);
            let mut rows = Vec::new();
            for (i, &(id, later)) in d.rows.iter().enumerate() {
                let l = Lineage {
                    extract_date: d.date,
                    extract_seq: *seq,
                    commit: tx.version() as i64,
                    line: i as i64 + 2,
                };
                rows.push((format!("{id:032x}"), later, l));
            }
            for (id, later, l) in &rows {
                let batch = RecordBatch::try_new(
                    schema(),
                    vec![
                        Arc::new(StringArray::from(vec![id.as_str()])) as ArrayRef,
                        Arc::new(Int64Array::from(vec![l.line * 7 % 5])),
                        Arc::new(Date32Array::from(vec![l.extract_date])),
                        Arc::new(Int32Array::from(vec![l.extract_seq])),
                        Arc::new(Int64Array::from(vec![l.commit])),
                        Arc::new(Int64Array::from(vec![l.line])),
                    ],
                )
                .unwrap();
                writer.push(&mut tx, if *later { 202402 } else { 202401 }, batch).unwrap();
            }
            writer.finish(&mut tx).unwrap();
            if d.refused || rows.is_empty() {
                tx.rollback_to(mark);
                continue;
            }
            let table = next.tables.entry("t".into()).or_default();
            table.partition_columns = vec!["year".into(), "month".into()];
            table.files.extend(tx.files().skip(mark).cloned());
            committed.extend(rows.into_iter().map(|(id, _, l)| (id, l)));
        }
        if committed.is_empty() {
            wh.abort(tx).unwrap();
        } else {
            wh.commit(tx, next).unwrap();
        }
        committed
    }

    /// Every superseded row a record names, whole deliveries expanded with `all`.
    fn expand(r: &Recorded, all: &[(String, Lineage)]) -> BTreeSet<Lineage> {
        let mut out: BTreeSet<Lineage> =
            all.iter().map(|(_, l)| *l).filter(|l| r.deliveries.contains(&l.delivery())).collect();
        for b in &r.rows {
            let l = lineage_columns(b, 0).unwrap();
            out.extend((0..b.num_rows()).map(|i| l.at(i)));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        /// Whatever the sequence of commits, what they recorded is exactly
        /// every version but the newest of each record, as a full pass finds.
        #[test]
        fn recorded_versions_agree_with_a_full_recompute(steps in prop::collection::vec(step(), 1..8)) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let mut wh = Warehouse::open_for_write(root, &["aaaa".to_owned()]).unwrap();
            let mut all: Vec<(String, Lineage)> = Vec::new();
            let mut seq = 0;
            for s in &steps {
                match s {
                    Step::Commit(deliveries) => all.extend(commit(&mut wh, deliveries, &mut seq)),
                    Step::Snapshot(date) => {
                        let rows = (0..IDS).map(|id| (id, id % 3 == 0)).collect();
                        all.extend(commit(&mut wh, &[Delivery { date: *date, rows, refused: false }], &mut seq));
                    }
                    Step::Compact => {
                        let opts = compact::Options { table: None, max_files: 1, row_group_rows: 3, zstd_level: 1 };
                        compact::compact(&mut wh, &opts).unwrap();
                    }
                    Step::Forget => {
                        let version = wh.manifest().version;
                        drop(wh);
                        if version > 0 {
                            let path = root.join(format!("_ladu/manifest/{version:010}.json"));
                            let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                            m["tables"]["t"].as_object_mut().unwrap().remove("versions");
                            std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
                        }
                        wh = Warehouse::open_for_write(root, &["aaaa".to_owned()]).unwrap();
                        continue;
                    }
                }
                let Some(table) = wh.manifest().tables.get("t") else { continue };
                let mut newest: HashMap<&str, Lineage> = HashMap::new();
                for (id, l) in &all {
                    let n = newest.entry(id).or_insert(*l);
                    *n = (*n).max(*l);
                }
                let expected: BTreeSet<Lineage> =
                    all.iter().filter(|(id, l)| newest[id.as_str()] != *l).map(|(_, l)| *l).collect();
                let full = expand(&recompute(root, table).unwrap(), &all);
                prop_assert_eq!(&full, &expected);
                let rows: u64 = table.files.iter().map(|f| f.rows).sum();
                prop_assert_eq!(rows, all.len() as u64);
                match &table.versions {
                    Some(versions) => {
                        let recorded = expand(&load(root, versions).unwrap(), &all);
                        prop_assert_eq!(&recorded, &expected, "after {:?}", s);
                        let delivered: u64 = versions.deliveries.iter().map(|d| d.rows).sum();
                        prop_assert_eq!(delivered, rows);
                    }
                    // Only a step that committed nothing leaves a forgotten record unrecorded.
                    None => prop_assert!(!matches!(s, Step::Snapshot(_))),
                }
            }
        }

        /// A pseudonym's key is the number its hex spells; any other id is hashed.
        #[test]
        fn id_keys_are_the_hex_number_or_a_hash(hex in "[0-9a-f]{32}", other in "[0-9a-fA-Z]{0,40}") {
            prop_assert_eq!(id_key(hex.as_bytes()), u128::from_str_radix(&hex, 16).unwrap());
            let is_hex = other.len() == 32 && other.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if !is_hex {
                prop_assert_eq!(id_key(other.as_bytes()), hashed_key(other.as_bytes()));
            }
        }

        /// The bloom probe with hashes computed once agrees with Parquet's own.
        #[test]
        fn bloom_bits_agree_with_parquet(inserted in prop::collection::vec("[0-9a-f]{32}", 1..200), probes in prop::collection::vec("[0-9a-f]{32}", 1..200)) {
            let mut f = Sbbf::new_with_ndv_fpp(64, 0.05).unwrap();
            for v in &inserted {
                f.insert(v.as_str());
            }
            let bits = BloomBits::from_sbbf(&f).unwrap();
            for v in inserted.iter().chain(&probes) {
                prop_assert_eq!(bits.may_contain(bloom_hash(v.as_bytes())), f.check(v.as_str()));
            }
        }
    }

    #[test]
    fn the_writer_writes_a_bloom_filter_on_record_id_and_a_commit_prunes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut wh = Warehouse::open_for_write(dir.path(), &["aaaa".to_owned()]).unwrap();
        let mut seq = 0;
        let first: Vec<(u8, bool)> = (0..IDS).map(|i| (i, false)).collect();
        commit(&mut wh, &[Delivery { date: 1, rows: first, refused: false }], &mut seq);
        let file = &wh.manifest().tables["t"].files[0];
        let path = dir.path().join(&file.path);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let rg = &reader.metadata().row_groups()[0];
        let bloom = Sbbf::read_from_column_chunk(rg.column(0), &File::open(&path).unwrap()).unwrap().unwrap();
        assert!(bloom.check(format!("{:032x}", 1).as_str()));
        // Ids never delivered: every row group is pruned.
        let hashes: Vec<u64> = (100..110u8).map(|i| bloom_hash(format!("{i:032x}").as_bytes())).collect();
        let probe = Probe { hashes: &hashes, lowest: b"0", highest: b"f", whole: &BTreeSet::new() };
        let groups = |probe: &Probe| {
            let f = File::open(&path).unwrap();
            let b = ParquetRecordBatchReaderBuilder::try_new(f.try_clone().unwrap()).unwrap();
            probe.row_groups(&path, &b, &f).unwrap().0
        };
        assert_eq!(groups(&probe), Vec::<usize>::new());
        let hashes = [bloom_hash(format!("{:032x}", 5).as_bytes())];
        let probe = Probe { hashes: &hashes, lowest: b"0", highest: b"f", whole: &BTreeSet::new() };
        assert_eq!(groups(&probe).len(), 1, "the row group holding record 5");
    }
}
