//! The warehouse on disk: layout, the writer lock, staging, atomic commits and recovery.
//!
//! Layout: `<root>/<table>/<k=v>/…/part-*.parquet` for committed data and
//! `<root>/_ladu/` for the manifest, staging and the lock (readers skip
//! `_`-folders). A run writes its files to `_ladu/staging/<run>/`, moves them
//! into place under names no other commit uses, then commits a new manifest
//! version. [`Warehouse::open_for_write`] removes only what is provably not
//! committed data ([`files`]): what a run that died before its commit left,
//! and files a committed version replaced. A folder with data files and no
//! readable manifest is damaged, not new, and is refused.

pub mod compact;
pub mod expire;
pub mod files;
pub mod manifest;
pub mod rekey;
pub mod superseded;
pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

pub use manifest::{CommittedFile, Delivery, DeliveryRows, Expiry, Manifest, Statistic, Versions};

/// What the writer should know about a table's columns.
#[derive(Debug, Clone, Default)]
pub struct ColumnLayout {
    /// Columns to sort each row group by.
    pub sort: Vec<usize>,
    /// Columns whose values are (nearly) all distinct: no dictionary.
    pub unique: Vec<String>,
    /// Columns with one value per delivery (row metadata).
    pub constant: Vec<String>,
    /// Columns with long runs of one value (row metadata of several
    /// deliveries, after compaction): encoded as `constant`, gathered row by row.
    pub runs: Vec<String>,
    /// Columns whose batches hold the 16 bytes of a pseudonym
    /// (`FixedSizeBinary(16)`), written as its 32 lowercase hex characters.
    pub pseudonyms: Vec<usize>,
}

/// Hive folder names of a partition key, e.g. `["year=2024", "month=3"]`.
pub fn partition_dirs(key: u32, parts: &[crate::config::source::PartitionPart]) -> Vec<String> {
    parts
        .iter()
        .map(|p| match p {
            crate::config::source::PartitionPart::Year => format!("year={}", key / 100),
            crate::config::source::PartitionPart::Month => format!("month={}", key % 100),
        })
        .collect()
}

/// Folder of warehouse metadata under the root.
pub const META_DIR: &str = "_ladu";

/// Errors of the warehouse layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("warehouse I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another ladu process is writing to the warehouse {root} (lock {root}/_ladu/lock is held); wait for it to finish"
    )]
    Locked { root: PathBuf },
    #[error("the warehouse manifest {path} is damaged ({problem}); restore it from backup before running again")]
    Corrupt { path: PathBuf, problem: String },
    #[error(
        "the warehouse {root} holds {files} data file(s) but no manifest (`_ladu/manifest/` is missing or empty): it is damaged, not new; restore `_ladu/manifest/` from backup. Nothing was written"
    )]
    NoManifest { root: PathBuf, files: usize },
    #[error("another writer committed manifest version {version} first; run again")]
    Conflict { version: u64 },
    #[error(
        "the key's fingerprint {given} differs from the warehouse's {expected}: this is not the key the warehouse was built with (after `ladu rekey`, list the new key in `key_generations`); nothing was written"
    )]
    WrongKey { expected: String, given: String },
    #[error("cannot read the committed file {path}: {source}; run `ladu check` and restore what it names from backup")]
    Read {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("the warehouse has no table {table}; `ladu sql -c 'SHOW TABLES'` lists them")]
    UnknownTable { table: String },
    #[error(
        "no source config feeds the table {table}, so which of its columns hold pseudonyms (and of which kind) is unknown: restore its config in the sources folder; nothing was written"
    )]
    NoSource { table: String },
    #[error("cannot write Parquet file {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// Open (or create) `path` and take an exclusive advisory lock on it; `None`
/// when another process holds it. The kernel releases the lock when its
/// holder exits, however it exits.
pub fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    let file = File::options().create(true).truncate(false).read(true).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// fsync a directory, so that entries made in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::durable::sync_dir(dir).map_err(io(dir))
}

/// Refuse key generations whose fingerprints are not the warehouse's (a new warehouse takes any).
pub fn check_generations(manifest: &Manifest, fingerprints: &[String]) -> Result<()> {
    let expected = manifest.generations();
    if expected.is_empty() || expected == fingerprints {
        return Ok(());
    }
    Err(Error::WrongKey { expected: expected.join(" → "), given: fingerprints.join(" → ") })
}

/// A warehouse opened for writing: holds the writer lock until dropped.
#[derive(Debug)]
pub struct Warehouse {
    root: PathBuf,
    manifest: Manifest,
    _lock: File,
}

impl Warehouse {
    /// Take the writer lock, load the manifest, refuse a key whose
    /// generations' fingerprints are not the warehouse's, then recover from any crashed run.
    pub fn open_for_write(root: &Path, fingerprints: &[String]) -> Result<Warehouse> {
        Self::open(root, Some(fingerprints))
    }

    /// As [`Warehouse::open_for_write`], for commits of tables computed from
    /// committed ones (statistics): they pseudonymise nothing, so need no key.
    pub fn open_for_derived_write(root: &Path) -> Result<Warehouse> {
        Self::open(root, None)
    }

    fn open(root: &Path, fingerprints: Option<&[String]>) -> Result<Warehouse> {
        let meta = root.join(META_DIR);
        std::fs::create_dir_all(&meta).map_err(io(&meta))?;
        let lock_path = meta.join("lock");
        let Some(lock) = try_lock(&lock_path).map_err(io(&lock_path))? else {
            return Err(Error::Locked { root: root.to_owned() });
        };
        let manifest = manifest::load_latest(root)?;
        let wh = Warehouse { root: root.to_owned(), manifest, _lock: lock };
        if let Some(fingerprints) = fingerprints {
            check_generations(&wh.manifest, fingerprints)?;
        }
        wh.recover()?;
        Ok(wh)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Remove what runs that died before their commit left, and finish removing what the newest version replaced.
    fn recover(&self) -> Result<()> {
        files::recover(&self.root, &self.manifest)
    }

    /// Start a transaction that will commit as the next manifest version.
    pub fn begin(&self) -> Result<Transaction> {
        let version = self.manifest.version + 1;
        let staging = files::staging(&self.root).join(format!("{version:010}"));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        Ok(Transaction { version, staging, files: Vec::new(), next_file: 0, rewrites: false })
    }

    /// Drop a transaction that commits nothing, with its staged files.
    pub fn abort(&self, tx: Transaction) -> Result<()> {
        match std::fs::remove_dir_all(&tx.staging) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io { path: tx.staging, source: e }),
            _ => {
                // The staging folder itself goes too, if nothing else is in it.
                let _ = std::fs::remove_dir(files::staging(&self.root));
                Ok(())
            }
        }
    }

    /// Move the transaction's files into place and commit `next` as the new
    /// manifest; then remove the files it replaced.
    pub fn commit(&mut self, mut tx: Transaction, mut next: Manifest) -> Result<()> {
        next.version = tx.version;
        next.format = manifest::FORMAT;
        superseded::record(&self.root, &self.manifest, &mut next, &mut tx)?;
        let named: std::collections::HashSet<&str> = next.file_paths().collect();
        next.replaced = self.manifest.file_paths().filter(|f| !named.contains(f)).map(str::to_owned).collect();
        let moving: Vec<&str> = tx.files.iter().map(|(_, f)| f.path.as_str()).collect();
        files::write_intent(&self.root, tx.version, &moving)?;
        let mut dirs = std::collections::BTreeSet::new();
        for (staged, file) in &tx.files {
            let target = self.root.join(&file.path);
            let dir = target.parent().expect("data files live in a table folder").to_owned();
            crate::durable::create_dirs(&dir).map_err(io(&dir))?;
            // The name carries the version, so no committed file is ever replaced.
            if target.exists() {
                return Err(Error::Io {
                    path: target,
                    source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "refusing to replace a file"),
                });
            }
            std::fs::rename(staged, &target).map_err(io(&target))?;
            dirs.insert(dir);
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        manifest::commit(&self.root, &next)?;
        self.manifest = next;
        // Committed: what is left to tidy, the next writer finishes should this fail.
        if let Err(e) = files::remove_replaced(&self.root, &self.manifest) {
            tracing::warn!(error = %e, "the files the new version replaced were not all removed; the next writer removes them");
        }
        let _ = std::fs::remove_dir_all(files::staging(&self.root));
        Ok(())
    }
}

/// Files staged by one run, committed all at once or not at all.
#[derive(Debug)]
pub struct Transaction {
    version: u64,
    staging: PathBuf,
    /// Staged path and what it becomes once committed.
    files: Vec<(PathBuf, CommittedFile)>,
    next_file: u64,
    /// Does it rewrite rows already committed (compaction), rather than add new ones?
    rewrites: bool,
}

impl Transaction {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Mark the transaction as one that rewrites committed rows (compaction): it supersedes nothing.
    pub fn rewrite_rows(&mut self) {
        self.rewrites = true;
    }

    /// Where a file this transaction commits as `rel` is staged, if it is one of its files.
    pub fn staged_path(&self, rel: &str) -> Option<PathBuf> {
        self.files.iter().find(|(_, f)| f.path == rel).map(|(p, _)| p.clone())
    }

    /// A fresh staging path for a file that commits as `rel`.
    pub fn stage(&mut self, rel: &str) -> PathBuf {
        let n = self.next_file;
        self.next_file += 1;
        let ext = rel.rsplit_once('.').map_or("", |(_, e)| e);
        self.staging.join(format!("{n:06}.{ext}"))
    }

    /// A fresh staging path and the committed path (relative) it will move to.
    pub fn new_file(&mut self, table: &str, partition_dirs: &[String]) -> (PathBuf, String) {
        let n = self.next_file;
        self.next_file += 1;
        let staged = self.staging.join(format!("{n:06}.parquet"));
        let mut rel = table.to_owned();
        for d in partition_dirs {
            rel.push('/');
            rel.push_str(d);
        }
        rel.push_str(&format!("/part-{:010}-{n:06}.parquet", self.version));
        (staged, rel)
    }

    /// Record a finished staged file.
    pub fn add(&mut self, staged: PathBuf, file: CommittedFile) {
        self.files.push((staged, file));
    }

    /// Forget (and delete) files staged after `mark`, e.g. of a refused delivery.
    pub fn rollback_to(&mut self, mark: usize) {
        for (staged, _) in self.files.drain(mark..) {
            let _ = std::fs::remove_file(staged);
        }
    }

    pub fn mark(&self) -> usize {
        self.files.len()
    }

    pub fn files(&self) -> impl Iterator<Item = &CommittedFile> {
        self.files.iter().map(|(_, f)| f)
    }

    /// Stage one unpartitioned file of `batches` under `folder` (a small
    /// table such as a statistic) and record it; returns what it commits as.
    pub fn write_file(&mut self, folder: &str, schema: SchemaRef, batches: &[RecordBatch]) -> Result<CommittedFile> {
        let (staged, rel) = self.new_file(folder, &[]);
        let err = |source| Error::Parquet { path: staged.clone(), source };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let file = File::create(&staged).map_err(io(&staged))?;
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(err)?;
        for batch in batches {
            writer.write(batch).map_err(err)?;
        }
        writer.into_inner().map_err(err)?.sync_all().map_err(io(&staged))?;
        let (sha256, bytes) = writer::hash_file(&staged).map_err(io(&staged))?;
        let file = CommittedFile {
            path: rel,
            rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
            bytes,
            sha256,
            partition: Default::default(),
            commit: self.version,
        };
        self.add(staged, file.clone());
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Warehouse::open_for_write(dir.path(), &["aaaa".to_owned()]).unwrap();
        assert!(matches!(Warehouse::open_for_write(dir.path(), &["aaaa".to_owned()]), Err(Error::Locked { .. })));
    }

    /// Stage and commit one file of table `t` with `body`; returns its path.
    fn commit_file(wh: &mut Warehouse, table: &str, body: &[u8], next: &Manifest) -> String {
        let mut tx = wh.begin().unwrap();
        let (staged, rel) = tx.new_file(table, &[]);
        std::fs::write(&staged, body).unwrap();
        let file = CommittedFile {
            path: rel.clone(),
            rows: 1,
            bytes: body.len() as u64,
            sha256: String::new(),
            partition: Default::default(),
            commit: tx.version(),
        };
        tx.add(staged, file.clone());
        let mut next = next.clone();
        let t = next.tables.entry(table.into()).or_default();
        t.files = vec![file];
        // Replaced whole at each commit, as a statistic is: no versions to record.
        t.statistic = Some(Statistic { description: String::new(), inputs_sha256: String::new(), from_version: 0 });
        wh.commit(tx, next).unwrap();
        rel
    }

    #[test]
    fn only_files_an_intent_lists_are_removed_as_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A first run died after moving its file into place, before its manifest.
        let moved = "t/year=2024/part-0000000001-000000.parquet";
        std::fs::create_dir_all(root.join("t/year=2024")).unwrap();
        std::fs::write(root.join(moved), b"x").unwrap();
        files::write_intent(root, 1, &[moved]).unwrap();
        assert_eq!(manifest::load_latest(root).unwrap().version, 0, "the leftover does not make it damaged");
        let wh = Warehouse::open_for_write(root, &["aaaa".to_owned()]).unwrap();
        assert!(!root.join(moved).exists());
        assert!(!root.join("_ladu/staging").exists());
        drop(wh);
        // A file no intent lists, in a warehouse without a manifest: damaged, and kept.
        let lost = root.join("t/year=2024/part-0000000004-000000.parquet");
        std::fs::write(&lost, b"x").unwrap();
        match Warehouse::open_for_write(root, &["aaaa".to_owned()]) {
            Err(Error::NoManifest { files: 1, .. }) => {}
            other => panic!("expected NoManifest, got {other:?}"),
        }
        assert!(lost.exists());
        assert!(matches!(manifest::load_latest(root), Err(Error::NoManifest { .. })));
    }

    #[test]
    fn replaced_files_go_once_the_new_version_is_durable_and_unaccounted_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut wh = Warehouse::open_for_write(root, &["aaaa".to_owned()]).unwrap();
        let base = Manifest { key_fingerprint: Some("aaaa".into()), ..Default::default() };
        let first = commit_file(&mut wh, "stats/s", b"1", &base);
        let next = wh.manifest().clone();
        let second = commit_file(&mut wh, "stats/s", b"2", &next);
        assert_eq!(wh.manifest().replaced, std::slice::from_ref(&first));
        assert!(!root.join(&first).exists());
        assert!(root.join(&second).exists());
        drop(wh);
        // A file of an older version that no manifest accounts for is not ladu's to remove.
        let odd = root.join("stats/s/part-0000000001-000007.parquet");
        std::fs::write(&odd, b"?").unwrap();
        let wh = Warehouse::open_for_write(root, &["aaaa".to_owned()]).unwrap();
        assert!(odd.exists());
        let unnamed = files::unnamed(root, wh.manifest()).unwrap();
        assert_eq!(unnamed, [("stats/s/part-0000000001-000007.parquet".to_owned(), files::Standing::Unaccounted)]);
    }

    #[test]
    fn wrong_fingerprint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut wh = Warehouse::open_for_write(dir.path(), &["aaaa".to_owned()]).unwrap();
        let tx = wh.begin().unwrap();
        let m = Manifest { key_fingerprint: Some("aaaa".into()), ..Default::default() };
        wh.commit(tx, m).unwrap();
        drop(wh);
        let wh = Warehouse::open_for_write(dir.path(), &["aaaa".to_owned()]).unwrap();
        drop(wh);
        assert!(matches!(Warehouse::open_for_write(dir.path(), &["bbbb".to_owned()]), Err(Error::WrongKey { .. })));
    }
}
