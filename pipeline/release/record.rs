//! ladu's own record of each release (which release pseudonyms it held) and the account of disclosures.
//!
//! Each release gets a folder `<warehouse>/_ladu/releases/<id>/` holding a
//! copy of its `release.json` and `pseudonyms.parquet`: every release
//! pseudonym it contained, sorted. A subject-access request computes the
//! person's release pseudonym for each recipient and looks it up there. The
//! account of disclosures is the audit log's `release` entries.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::Value;

use crate::audit::AuditLog;
use crate::warehouse::META_DIR;

/// Folder of release records under the warehouse's `_ladu/`.
pub const DIR: &str = crate::warehouse::files::RELEASES;
/// The release pseudonyms a release held.
pub const PSEUDONYMS_FILE: &str = "pseudonyms.parquet";
/// Audit entry kind of a release.
pub const AUDIT_KIND: &str = "release";
/// `outcome` of a release that was delivered.
pub const RELEASED: &str = "released";

/// The folder of release records.
pub fn dir(warehouse: &Path) -> PathBuf {
    warehouse.join(META_DIR).join(DIR)
}

/// Make the folder of a new release, `<YYYYMMDD>-<NN>`; returns its id and path.
/// Creating the folder claims the id, so two releases at once get two ids.
pub fn allocate(warehouse: &Path) -> std::io::Result<(String, PathBuf)> {
    let base = dir(warehouse);
    std::fs::create_dir_all(&base)?;
    let today = chrono::Utc::now().format("%Y%m%d");
    for n in 1.. {
        let id = format!("{today}-{n:02}");
        let path = base.join(&id);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok((id, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the ids of a day are unbounded")
}

/// A pseudonym's 32 hex digits as the number they spell (which sorts as the text does).
pub fn pseudonym_bits(s: &str) -> Option<u128> {
    crate::pseudonym::pseudonym_bits(s.as_bytes())
}

/// What a text column of a result has held so far.
enum Column {
    Empty,
    /// Its values, deduplicated up to `.1` entries.
    Pseudonyms(Vec<u128>, usize),
    Text,
}

/// Finds a result's pseudonym columns (every value a pseudonym) and collects their values,
/// 16 bytes each.
pub struct PseudonymIndex {
    columns: Vec<(String, Column)>,
    positions: Vec<usize>,
}

impl PseudonymIndex {
    pub fn new(schema: &SchemaRef) -> PseudonymIndex {
        let positions: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| {
                matches!(schema.field(i).data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            })
            .collect();
        let columns = positions.iter().map(|&i| (schema.field(i).name().clone(), Column::Empty)).collect();
        PseudonymIndex { columns, positions }
    }

    /// Take in a batch; `Err(column)` when a column mixes pseudonyms with other text
    /// or embeds them in it (such a column could not be searched for a person).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), Mixed> {
        for (&i, (name, state)) in self.positions.iter().zip(&mut self.columns) {
            let mixed = || Mixed { column: name.clone() };
            let values = arrow::compute::cast(batch.column(i), &DataType::Utf8).map_err(|_| mixed())?;
            for v in values.as_string::<i32>().iter().flatten() {
                match (pseudonym_bits(v), &mut *state) {
                    (Some(bits), Column::Empty) => *state = Column::Pseudonyms(vec![bits], 0),
                    (Some(bits), Column::Pseudonyms(values, _)) => values.push(bits),
                    (None, Column::Empty | Column::Text) if !crate::pseudonym::contains_pseudonym(v.as_bytes()) => {
                        *state = Column::Text
                    }
                    _ => return Err(mixed()),
                }
            }
            // A person's pseudonym repeats on each of their rows: keep memory to the distinct ones.
            if let Column::Pseudonyms(values, distinct) = state
                && values.len() > 2 * *distinct + (1 << 20)
            {
                values.sort_unstable();
                values.dedup();
                *distinct = values.len();
            }
        }
        Ok(())
    }

    /// The pseudonym columns' names and every value they held, sorted, each once.
    pub fn finish(self) -> (Vec<String>, Vec<u128>) {
        let mut names = Vec::new();
        let mut all = Vec::new();
        for (name, state) in self.columns {
            if let Column::Pseudonyms(values, _) = state {
                names.push(name);
                all.extend(values);
            }
        }
        all.sort_unstable();
        all.dedup();
        (names, all)
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("release_pseudonym", DataType::FixedSizeBinary(16), false)]))
}

/// Write `values` (sorted) to `path` as Parquet: each pseudonym as its 16 bytes.
pub fn write_pseudonyms(path: &Path, values: &[u128]) -> Result<(), parquet::errors::ParquetError> {
    let file = File::create(path)?;
    let synced = file.try_clone()?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema(), Some(props))?;
    for chunk in values.chunks(1 << 20) {
        let bytes = FixedSizeBinaryArray::try_from_iter(chunk.iter().map(|v| v.to_be_bytes()))?;
        writer.write(&RecordBatch::try_new(schema(), vec![Arc::new(bytes)])?)?;
    }
    writer.close()?;
    synced.sync_all()?;
    Ok(())
}

/// Every release pseudonym of the pseudonyms file at `path`, as numbers.
pub fn read_pseudonyms(path: &Path) -> Result<Vec<u128>, parquet::errors::ParquetError> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let values = batch.column(0).as_fixed_size_binary_opt().ok_or_else(|| {
            parquet::errors::ParquetError::General("it does not hold 16-byte release pseudonyms".into())
        })?;
        for i in 0..values.len() {
            let bytes: [u8; 16] = values
                .value(i)
                .try_into()
                .map_err(|_| parquet::errors::ParquetError::General("a release pseudonym is not 16 bytes".into()))?;
            out.push(u128::from_be_bytes(bytes));
        }
    }
    Ok(out)
}

/// Does the pseudonyms file at `path` hold `pseudonym`?
pub fn holds(path: &Path, pseudonym: &str) -> Result<bool, parquet::errors::ParquetError> {
    let Some(wanted) = pseudonym_bits(pseudonym) else { return Ok(false) };
    let wanted = wanted.to_be_bytes();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
    for batch in reader {
        let batch = batch?;
        let values = batch.column(0).as_fixed_size_binary_opt().ok_or_else(|| {
            parquet::errors::ParquetError::General("it does not hold 16-byte release pseudonyms".into())
        })?;
        if (0..values.len()).any(|i| values.value(i) == wanted) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Audit entry kind of a key rotation (`ladu rekey`), which over-encrypts every record of a release.
pub const REKEY_KIND: &str = "rekey";

/// The record of release `id` over-encrypted to the key generation whose fingerprint is `generation`.
pub fn rekeyed_file(warehouse: &Path, id: &str, generation: &str) -> PathBuf {
    dir(warehouse).join(id).join(format!("pseudonyms-{generation}.parquet"))
}

/// A release's record as it stands, checked.
#[derive(Debug, Clone)]
pub struct Checked {
    pub path: PathBuf,
    /// The key generation (index into the warehouse's) the release was made under.
    pub made: usize,
    /// The generation the record's pseudonyms are over-encrypted to (`made` when never rekeyed).
    pub now: usize,
}

/// The record of the release an audit entry names, as it stands under the
/// warehouse's key generations (`generations`, oldest first), once its
/// checksum is found equal to the one the audit log holds for it (the
/// release's entry, or the newest `rekey` entry of its generation, among
/// `rekeys`); else what is wrong with it.
pub fn checked_pseudonyms(
    warehouse: &Path,
    entry: &Value,
    rekeys: &[Value],
    generations: &[String],
) -> Result<Checked, RecordError> {
    let id = entry.get("release").and_then(Value::as_str).unwrap_or_default().to_owned();
    let made_under = entry.get("key_fingerprint").and_then(Value::as_str).unwrap_or_default();
    let made = match generations.iter().position(|g| g == made_under) {
        Some(g) => g,
        None if generations.len() <= 1 => 0,
        None => {
            return Err(RecordError::Generation { id, fingerprint: made_under.to_owned() });
        }
    };
    let mut found = (dir(warehouse).join(&id).join(PSEUDONYMS_FILE), made, entry.get("record_sha256"));
    for (now, generation) in generations.iter().enumerate().skip(made + 1).rev() {
        let path = rekeyed_file(warehouse, &id, generation);
        if path.exists() {
            let sha = rekeys
                .iter()
                .rev()
                .find(|r| r.get("generation").and_then(Value::as_str) == Some(generation.as_str()))
                .and_then(|r| r.get("records")?.get(&id));
            found = (path, now, sha);
            break;
        }
    }
    let (path, now, expected) = found;
    let (sha256, _) = match crate::warehouse::writer::hash_file(&path) {
        Ok(hashed) => hashed,
        Err(source) => return Err(RecordError::Unreadable { path, id, source }),
    };
    if expected.and_then(Value::as_str) != Some(sha256.as_str()) {
        return Err(RecordError::Differs { path, id });
    }
    Ok(Checked { path, made, now })
}

/// Every `rekey` audit entry, oldest first.
pub fn rekeys(audit: &AuditLog) -> crate::audit::Result<Vec<Value>> {
    audit.select(&crate::audit::Filter { kind: Some(REKEY_KIND.to_owned()), from: None, to: None })
}

/// A column that mixes pseudonyms with other text, or embeds them in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}` mixes pseudonyms with other text")]
pub struct Mixed {
    pub column: String,
}

/// Why ladu's record of a release cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: the record of release {id} cannot be read: {source}")]
    Unreadable {
        path: PathBuf,
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the record of release {id} differs from the checksum in the audit log")]
    Differs { path: PathBuf, id: String },
    #[error(
        "the release {id} was made under the key with fingerprint {fingerprint}, which is not one of the warehouse's key generations"
    )]
    Generation { id: String, fingerprint: String },
    #[error("{path}: the record of release {id} cannot be searched: {source}")]
    Unsearchable {
        path: PathBuf,
        id: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
}

/// The audit log's entries of delivered releases, oldest first.
pub fn account(audit: &AuditLog, since: Option<chrono::NaiveDate>) -> crate::audit::Result<Vec<Value>> {
    let filter = crate::audit::Filter { kind: Some(AUDIT_KIND.to_owned()), from: since, to: None };
    let mut entries = audit.select(&filter)?;
    entries.retain(|e| e.get("outcome").and_then(Value::as_str) == Some(RELEASED));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn batch(values: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("c", DataType::Utf8, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values.to_vec()))]).unwrap()
    }

    const P: &str = "0123456789abcdef0123456789abcdef";
    const Q: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn pseudonym_columns_are_found_and_mixed_ones_refused() {
        let mut ix = PseudonymIndex::new(&batch(&[]).schema());
        ix.add(&batch(&[None, Some(Q), Some(P)])).unwrap();
        ix.add(&batch(&[Some(P)])).unwrap();
        let bits = |p: &str| pseudonym_bits(p).unwrap();
        assert_eq!(ix.finish(), (vec!["c".to_owned()], vec![bits(P), bits(Q)]));

        let mut ix = PseudonymIndex::new(&batch(&[]).schema());
        ix.add(&batch(&[Some("J06.9"), Some("E11")])).unwrap();
        assert_eq!(ix.finish(), (vec![], vec![]));

        for mixed in [[Some(P), Some("J06")], [Some("J06"), Some(P)], [Some("x"), Some(&format!("id {P}"))]] {
            let mut ix = PseudonymIndex::new(&batch(&[]).schema());
            assert_eq!(ix.add(&batch(&mixed)), Err(Mixed { column: "c".to_owned() }), "{mixed:?}");
        }
    }

    #[test]
    fn pseudonym_files_are_searched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PSEUDONYMS_FILE);
        write_pseudonyms(&path, &[pseudonym_bits(P).unwrap()]).unwrap();
        assert!(holds(&path, P).unwrap());
        assert!(!holds(&path, Q).unwrap());
    }

    #[test]
    fn ids_are_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, pa) = allocate(dir.path()).unwrap();
        let (b, _) = allocate(dir.path()).unwrap();
        assert_ne!(a, b);
        assert!(pa.is_dir() && a.ends_with("-01") && b.ends_with("-02"));
    }
}
