//! The data files on disk, and what each is to the committed state: named, replaced, uncommitted or unaccounted for.
//!
//! Recovery may remove a file only when it is provably not committed data.
//! Before a commit moves its files into place it durably writes an *intent*
//! listing them (`_ladu/staging/<version>.intent`); a file listed by the
//! intent of a version newer than the newest manifest, and named for that
//! version, is a leftover of a run that died before its commit. A file that
//! the newest manifest lists as `replaced` was superseded by a committed
//! version. Any other file the manifest does not name is unaccounted for
//! and is never removed by ladu.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use super::{Error, META_DIR, Result, io};
use crate::durable::{Durable, Place};

/// What a data file the newest manifest does not name is to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Named by an earlier version, replaced by the newest: removed once that version is durable.
    Replaced,
    /// Written by a run that died before committing (listed by its intent).
    Uncommitted,
    /// Neither: not ladu's to remove.
    Unaccounted,
}

/// Folder of staged files and commit intents.
pub fn staging(root: &Path) -> PathBuf {
    root.join(META_DIR).join("staging")
}

fn intent_path(root: &Path, version: u64) -> PathBuf {
    staging(root).join(format!("{version:010}.intent"))
}

/// Record, durably, the files commit `version` is about to move into place.
pub fn write_intent(root: &Path, version: u64, files: &[&str]) -> Result<()> {
    let dir = staging(root);
    crate::durable::create_dirs(&dir).map_err(io(&dir))?;
    let path = intent_path(root, version);
    let body = serde_json::to_vec(files).expect("paths serialise");
    Durable::new(Place::Replace).bytes(&path, &body).map_err(io(&path))
}

/// The intents in the staging folder: (version, the files it lists, its path).
fn intents(root: &Path) -> Result<Vec<(u64, Vec<String>, PathBuf)>> {
    let dir = staging(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { path: dir, source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name.strip_suffix(".intent").and_then(|v| v.parse::<u64>().ok()) else { continue };
        let path = entry.path();
        let text = std::fs::read(&path).map_err(io(&path))?;
        // An intent is written whole before any file moves: one that does not parse moved nothing.
        let files: Vec<String> = serde_json::from_slice(&text).unwrap_or_default();
        found.push((version, files, path));
    }
    Ok(found)
}

/// The version a data file's name says it was written for: `part-<version>-<n>.parquet`.
pub fn version_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (version, n) = rest.split_once('-')?;
    let digits = |s: &str, len: usize| s.len() == len && s.bytes().all(|c| c.is_ascii_digit());
    (digits(version, 10) && digits(n, 6)).then(|| version.parse().ok()).flatten()
}

/// Files of uncommitted runs: listed by the intent of a version newer than
/// `newest` and named for that version. Relative paths.
pub fn uncommitted(root: &Path, newest: u64) -> Result<HashSet<String>> {
    let mut found = HashSet::new();
    for (version, files, _) in intents(root)? {
        if version <= newest {
            continue;
        }
        let named_for = |f: &String| f.rsplit('/').next().and_then(version_of) == Some(version);
        found.extend(files.into_iter().filter(named_for));
    }
    Ok(found)
}

/// Every data file under `root` (outside `_ladu` and hidden folders), relative, `/`-separated.
pub fn data_files(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(Error::Io { path: root.to_owned(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(io(&entry.path()))?;
        if file_type.is_dir() {
            walk(&entry.path(), &name, &mut out)?;
        } else {
            out.push(name);
        }
    }
    // Records of superseded rows are committed files too, though under `_ladu/`.
    let versions = root.join(META_DIR).join(super::superseded::DIR);
    if versions.is_dir() {
        walk(&versions, &format!("{META_DIR}/{}", super::superseded::DIR), &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{rel}/{name}");
        if entry.file_type().map_err(io(&entry.path()))?.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Every data file under `root` that the newest manifest `m` does not name, with its standing.
pub fn unnamed(root: &Path, m: &Manifest) -> Result<Vec<(String, Standing)>> {
    let committed: HashSet<&str> = m.file_paths().collect();
    let replaced: HashSet<&str> = m.replaced.iter().map(String::as_str).collect();
    let uncommitted = uncommitted(root, m.version)?;
    Ok(data_files(root)?
        .into_iter()
        .filter(|f| !committed.contains(f.as_str()))
        .map(|f| {
            let standing = if replaced.contains(f.as_str()) {
                Standing::Replaced
            } else if uncommitted.contains(&f) {
                Standing::Uncommitted
            } else {
                Standing::Unaccounted
            };
            (f, standing)
        })
        .collect())
}

/// Remove what provably is not committed data: the files of uncommitted
/// runs and their staging, and the files the newest version replaced.
pub fn recover(root: &Path, m: &Manifest) -> Result<()> {
    for (file, standing) in unnamed(root, m)? {
        if matches!(standing, Standing::Uncommitted | Standing::Replaced) {
            let path = root.join(&file);
            tracing::info!(file = %path.display(), ?standing, "removing a data file that is not committed data");
            remove(&path)?;
        }
    }
    let staging = staging(root);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Io { path: staging, source: e }),
        _ => {}
    }
    let meta = root.join(META_DIR);
    // Sessions of earlier versions kept their answer here; commits record it now.
    let kept = meta.join("superseded");
    match std::fs::remove_dir_all(&kept) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Io { path: kept, source: e }),
        _ => {}
    }
    if let Ok(entries) = std::fs::read_dir(&meta) {
        for entry in entries.flatten() {
            // Manifests written aside (by `durable`) by a writer that died.
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                remove(&entry.path())?;
            }
        }
    }
    tidy_release_records(root, &m.generations())
}

/// Folder of ladu's records of releases to recipients, under `_ladu/`.
pub const RELEASES: &str = "releases";

/// The generation a record of a release's pseudonyms was over-encrypted to, from its name `pseudonyms-<fingerprint>.parquet`.
fn record_generation(name: &str) -> Option<&str> {
    name.strip_prefix("pseudonyms-")?.strip_suffix(".parquet")
}

/// Remove the records of releases a rekey left behind: once a release's
/// record over-encrypted to a generation the manifest lists is in place,
/// every older one (which an older key alone could search), and any made by
/// a rekey that never committed.
pub fn tidy_release_records(root: &Path, generations: &[String]) -> Result<()> {
    let Ok(releases) = std::fs::read_dir(root.join(META_DIR).join(RELEASES)) else { return Ok(()) };
    for release in releases.flatten() {
        let Ok(files) = std::fs::read_dir(release.path()) else { continue };
        let names: Vec<String> = files.flatten().map(|f| f.file_name().to_string_lossy().into_owned()).collect();
        let rank = |n: &str| record_generation(n).and_then(|g| generations.iter().position(|x| x == g));
        let newest = names.iter().filter_map(|n| rank(n)).max();
        for name in &names {
            let stale = match (record_generation(name), newest) {
                (Some(_), _) if rank(name).is_none() => true,
                (Some(_), Some(h)) => rank(name) < Some(h),
                (None, Some(_)) => name == "pseudonyms.parquet",
                (Some(_), None) | (None, None) => false,
            };
            if stale {
                let path = release.path().join(name);
                tracing::info!(file = %path.display(), "removing a record of a release's pseudonyms under an older key generation");
                remove(&path)?;
            }
        }
    }
    Ok(())
}

/// Remove the files the newest version replaced, now that it is durable.
pub fn remove_replaced(root: &Path, m: &Manifest) -> Result<()> {
    for file in &m.replaced {
        remove(&root.join(file))?;
    }
    Ok(())
}

/// Remove a file (gone already is fine) and make its removal durable.
fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { path: path.to_owned(), source }),
    }
    match path.parent() {
        Some(dir) => crate::durable::sync_dir(dir).map_err(io(dir)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_names() {
        assert_eq!(version_of("part-0000000012-000003.parquet"), Some(12));
        assert_eq!(version_of("part-12-3.parquet"), None);
        assert_eq!(version_of("part-0000000012-000003.csv"), None);
        assert_eq!(version_of("notes.txt"), None);
    }
}
