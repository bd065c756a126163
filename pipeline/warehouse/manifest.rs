//! The manifest: which files and deliveries are committed, under which key.
//!
//! Version N lives in `_ladu/manifest/<N>.json` and holds the whole state.
//! It is written aside, fsynced, and hard-linked into place, which fails if
//! N already exists ([`crate::durable`]): two writers can never both commit
//! version N, and a crash leaves either no version N or a complete one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::durable::{Durable, Place};

/// Version of the manifest's own format.
pub const FORMAT: u32 = 1;

/// One committed Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    /// Path relative to the warehouse root, `/`-separated.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Hive partition values, e.g. `{"year": "2024", "month": "3"}`.
    pub partition: BTreeMap<String, String>,
    /// Manifest version that committed it.
    pub commit: u64,
}

/// One ingested delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub source: String,
    /// File name as delivered (no folder).
    pub file: String,
    /// SHA-256 of the delivered bytes, hex.
    pub sha256: String,
    /// Size of the delivered file.
    pub bytes: u64,
    pub extract_date: String,
    pub extract_seq: u32,
    pub rows_committed: u64,
    pub rows_rejected: u64,
    pub commit: u64,
    pub committed_at: String,
}

/// The committed state of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Partition folder levels, outermost first.
    pub partition_columns: Vec<String>,
    pub files: Vec<CommittedFile>,
    /// Set for a statistic materialised by `ladu stats`: a snapshot replaced
    /// whole at each run, not a table of deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<Statistic>,
    /// Which rows later versions of their record supersede, as each commit
    /// recorded it ([`super::superseded`]). `None` for a table without
    /// versions, and for one written before commits recorded them (the next
    /// commit records them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Versions>,
}

/// What the commits of a table recorded about its versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// Files of superseded rows (`_commit`, `_extract_date`, `_extract_seq`,
    /// `_line`), one per commit that superseded any, under `_ladu/versions/`.
    /// A delivery every row of which is superseded is not listed row by row
    /// from then on: [`DeliveryRows::is_superseded`] says so.
    pub superseded: Vec<CommittedFile>,
    /// Each delivery's rows in this table, and how many of them are superseded.
    pub deliveries: Vec<DeliveryRows>,
}

/// One delivery's rows in a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRows {
    pub commit: u64,
    pub extract_date: String,
    pub extract_seq: u32,
    pub rows: u64,
    /// How many of them later versions supersede.
    pub superseded: u64,
}

impl DeliveryRows {
    /// Is every row of the delivery superseded (a full snapshot that the next replaced)?
    pub fn is_superseded(&self) -> bool {
        self.superseded >= self.rows
    }
}

/// One table's rows removed by one `ladu expire` commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    pub commit: u64,
    pub committed_at: String,
    pub table: String,
    /// The column the retention period counts from.
    pub column: String,
    /// Rows dated before this day were removed.
    pub cutoff: String,
    /// Versions removed (rows of `<table>_history`).
    pub rows: u64,
    /// Of them, newest versions of their record (rows of `<table>`).
    pub current_rows: u64,
}

/// How a statistic table was computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statistic {
    /// What it answers: the comment its query opens with.
    pub description: String,
    /// SHA-256 of its query and the curated views, hex.
    pub inputs_sha256: String,
    /// Manifest version of the newest deliveries it was computed from.
    pub from_version: u64,
}

/// The whole committed state of the warehouse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// 0 for an empty warehouse.
    pub version: u64,
    pub committed_at: String,
    /// Fingerprint of the key every pseudonym here was made with: its newest generation.
    pub key_fingerprint: Option<String>,
    /// Every generation's fingerprint, oldest first, once the key was rotated
    /// (`ladu rekey`); empty while there is one generation, `key_fingerprint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_generations: Vec<String>,
    pub tables: BTreeMap<String, Table>,
    pub deliveries: Vec<Delivery>,
    /// Files the version before named and this one does not (a statistic
    /// recomputed): removed once this version is durable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
    /// Rows removed at the end of their retention period, by `ladu expire`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<Expiry>,
    /// Each rotation of the key (`ladu rekey`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rekeys: Vec<Rekey>,
}

/// One rotation of the key: the commit that over-encrypted every pseudonym under a new generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rekey {
    pub commit: u64,
    pub committed_at: String,
    /// The new generation's fingerprint.
    pub generation: String,
}

impl Manifest {
    /// The fingerprints of the key's generations, oldest first (none for a new warehouse).
    pub fn generations(&self) -> Vec<String> {
        match (&self.key_generations, &self.key_fingerprint) {
            (g, _) if !g.is_empty() => g.clone(),
            (_, Some(f)) => vec![f.clone()],
            (_, None) => Vec::new(),
        }
    }

    /// Record the key's generations (a new warehouse, or a rekey).
    pub fn set_generations(&mut self, fingerprints: &[String]) {
        self.key_fingerprint = fingerprints.last().cloned();
        self.key_generations = if fingerprints.len() > 1 { fingerprints.to_vec() } else { Vec::new() };
    }

    /// Is a delivery with these bytes already committed?
    pub fn has_delivery(&self, sha256: &str) -> bool {
        self.deliveries.iter().any(|d| d.sha256 == sha256)
    }

    /// Every committed file: data and records of superseded rows.
    pub fn committed_files(&self) -> impl Iterator<Item = &CommittedFile> {
        self.tables.values().flat_map(|t| t.files.iter().chain(t.versions.iter().flat_map(|v| &v.superseded)))
    }

    /// Every committed file path (data and records of superseded rows), relative to the root.
    pub fn file_paths(&self) -> impl Iterator<Item = &str> {
        self.committed_files().map(|f| f.path.as_str())
    }
}

fn manifest_dir(root: &Path) -> PathBuf {
    root.join(super::META_DIR).join("manifest")
}

fn version_path(root: &Path, version: u64) -> PathBuf {
    manifest_dir(root).join(format!("{version:010}.json"))
}

/// The newest committed manifest, or an empty one for a new warehouse.
///
/// A warehouse with no manifest is new only if it holds no data files
/// (beyond an uncommitted first run's): one that does is damaged, and is
/// refused rather than treated as new.
pub fn load_latest(root: &Path) -> Result<Manifest> {
    let newest = newest_version(root)?;
    let Some(v) = newest else {
        let uncommitted = super::files::uncommitted(root, 0)?;
        let files = super::files::data_files(root)?.into_iter().filter(|f| !uncommitted.contains(f)).count();
        if files > 0 {
            return Err(Error::NoManifest { root: root.to_owned(), files });
        }
        return Ok(Manifest { format: FORMAT, ..Default::default() });
    };
    load_version(root, v)
}

/// Committed version `v`.
pub fn load_version(root: &Path, v: u64) -> Result<Manifest> {
    let path = version_path(root, v);
    let text = std::fs::read(&path).map_err(|e| Error::Corrupt { path: path.clone(), problem: e.to_string() })?;
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| Error::Corrupt { path: path.clone(), problem: e.to_string() })?;
    if m.version != v || m.format != FORMAT {
        return Err(Error::Corrupt { path, problem: format!("holds version {} format {}", m.version, m.format) });
    }
    Ok(m)
}

/// The newest committed version (0 for a warehouse with none), without reading its manifest.
pub fn latest_version(root: &Path) -> Result<u64> {
    Ok(newest_version(root)?.unwrap_or(0))
}

fn newest_version(root: &Path) -> Result<Option<u64>> {
    let dir = manifest_dir(root);
    let unreadable = |problem: String| Error::Corrupt { path: dir.clone(), problem };
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut newest: Option<u64> = None;
            for entry in entries {
                let entry = entry.map_err(|e| unreadable(e.to_string()))?;
                let name = entry.file_name();
                if let Some(v) = name.to_string_lossy().strip_suffix(".json").and_then(|n| n.parse::<u64>().ok()) {
                    newest = newest.max(Some(v));
                }
            }
            Ok(newest)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unreadable(e.to_string())),
    }
}

/// Commit `m` as version `m.version`; fails if that version exists.
pub fn commit(root: &Path, m: &Manifest) -> Result<()> {
    let dir = manifest_dir(root);
    crate::durable::create_dirs(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    let mut body = serde_json::to_vec_pretty(m).expect("manifest serialises");
    body.push(b'\n');
    let target = version_path(root, m.version);
    match Durable::new(Place::New).bytes(&target, &body) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Conflict { version: m.version }),
        Err(source) => Err(Error::Io { path: target, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_and_reload_and_refuse_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_latest(dir.path()).unwrap().version, 0);
        let mut m = Manifest { format: FORMAT, version: 1, key_fingerprint: Some("ab".into()), ..Default::default() };
        commit(dir.path(), &m).unwrap();
        assert_eq!(load_latest(dir.path()).unwrap(), m);
        m.committed_at = "other".into();
        assert!(matches!(commit(dir.path(), &m), Err(Error::Conflict { version: 1 })));
        m.version = 2;
        commit(dir.path(), &m).unwrap();
        assert_eq!(load_latest(dir.path()).unwrap().version, 2);
    }
}
