//! The website directory: dated releases built aside, `latest` switched to a complete one in one step.
//!
//! ```text
//! <site>/index.html               sends readers to latest/
//! <site>/latest -> releases/<id>  symbolic link, replaced by rename(2)
//! <site>/releases/<id>/           index.html, catalog.jsonld, SHA256SUMS, <dataset>/…
//! ```
//!
//! A release is written to `releases/.<id>.partial/`, synced, renamed to
//! `releases/<id>/` and only then linked as `latest`; a failed or killed
//! publish leaves a `.partial` folder that the next one removes, and the
//! previous release as it was. Releases are never changed or deleted.

use std::fs::File;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::Table;
use super::files::{self, Written};
use crate::config::PublishSettings;
use crate::durable::{Durable, Place};
use crate::warehouse::manifest::Manifest;

pub const RELEASES: &str = "releases";
pub const LATEST: &str = "latest";
pub const CHECKSUMS: &str = "SHA256SUMS";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the site at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another `ladu publish` is writing to {site} (lock {site}/.lock is held); wait for it to finish")]
    Locked { site: PathBuf },
    #[error("{path} exists and is not a symbolic link: move it away; ladu keeps `latest` as a link to a release")]
    LatestNotALink { path: PathBuf },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// A release being built.
pub struct Release {
    site: PathBuf,
    pub id: String,
    staging: PathBuf,
    _lock: File,
}

impl Release {
    /// Take the site's lock, remove what failed publishes left, and start release `<today>` (or `<today>.N`).
    pub fn begin(site: &Path) -> Result<Release> {
        let releases = site.join(RELEASES);
        std::fs::create_dir_all(&releases).map_err(io(&releases))?;
        let lock_path = site.join(".lock");
        let Some(lock) = crate::warehouse::try_lock(&lock_path).map_err(io(&lock_path))? else {
            return Err(Error::Locked { site: site.to_owned() });
        };
        for entry in std::fs::read_dir(&releases).map_err(io(&releases))? {
            let entry = entry.map_err(io(&releases))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only `.<release>.partial`, as `begin` names them: nothing else is ladu's to remove.
            let partial = name.strip_prefix('.').and_then(|n| n.strip_suffix(".partial")).and_then(release_name);
            if partial.is_some() {
                tracing::warn!(folder = %entry.path().display(), "removing a release a failed publish left");
                std::fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        // After today's releases, even pruned ones: a release's name is never reused.
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let last = release_names(&releases)?.into_iter().filter(|(d, _)| *d == today).map(|(_, n)| n).max();
        let id = match last {
            None => today,
            Some(n) => format!("{today}.{}", n + 1),
        };
        let staging = releases.join(format!(".{id}.partial"));
        std::fs::create_dir(&staging).map_err(io(&staging))?;
        Ok(Release { site: site.to_owned(), id, staging, _lock: lock })
    }

    /// Write every file of the release; returns them, `SHA256SUMS` not included.
    pub fn write(&self, tables: &[Table], publish: &PublishSettings, manifest: &Manifest) -> Result<Vec<Written>> {
        let dir = &self.staging;
        let mut written = Vec::new();
        for t in tables {
            written.extend(files::write(dir, t, publish, manifest, &self.id).map_err(io(&dir.join(&t.dataset.name)))?);
        }
        let first_issued = self.first_issued(tables)?;
        let catalog = super::catalog::catalog(tables, &written, publish, manifest, &self.id, &first_issued);
        let text =
            serde_json::to_vec_pretty(&catalog).map_err(|e| Error::Io { path: dir.clone(), source: e.into() })?;
        written.push(write_file(dir, super::catalog::FILE, &text)?);
        let page = super::page::render(tables, &written, publish, manifest, &self.id);
        written.push(write_file(dir, "index.html", page.as_bytes())?);
        let sums: String = written.iter().map(|w| format!("{}  {}\n", w.sha256, w.path)).collect();
        write_file(dir, CHECKSUMS, sums.as_bytes())?;
        Ok(written)
    }

    /// Move the release into place and make it `latest`, then remove releases
    /// beyond the newest `keep` (0: keep all); returns its folder.
    pub fn publish(self, keep: usize) -> Result<PathBuf> {
        let releases = self.site.join(RELEASES);
        let target = releases.join(&self.id);
        for dir in std::fs::read_dir(&self.staging).map_err(io(&self.staging))? {
            let dir = dir.map_err(io(&self.staging))?.path();
            if dir.is_dir() {
                sync_dir(&dir)?;
            }
        }
        sync_dir(&self.staging)?;
        std::fs::rename(&self.staging, &target).map_err(io(&target))?;
        sync_dir(&releases)?;
        let latest = self.site.join(LATEST);
        if latest.exists() && !latest.is_symlink() {
            return Err(Error::LatestNotALink { path: latest });
        }
        let tmp = self.site.join(".latest.tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(Path::new(RELEASES).join(&self.id), &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &latest).map_err(io(&latest))?;
        write_file(&self.site, "index.html", ROOT_PAGE.as_bytes())?;
        sync_dir(&self.site)?;
        if keep > 0 {
            prune(&releases, keep, &self.id)?;
        }
        Ok(target)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // Published: the staging folder was renamed away. Otherwise: a failure; leave nothing half-made.
        if self.staging.exists() {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// A release's name as (date, number): `2026-11-23` is number 1, `2026-11-23.2` number 2; `None` for any other name.
fn release_name(name: &str) -> Option<(String, u32)> {
    let (date, n) = match name.split_once('.') {
        Some((date, n)) => (date, n.parse::<u32>().ok().filter(|n| *n >= 2)?),
        None => (name, 1),
    };
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok().filter(|_| date.len() == 10)?;
    Some((date.to_owned(), n))
}

impl Release {
    /// Per dataset, the date of the oldest release kept that holds it (none: first published now).
    fn first_issued(&self, tables: &[Table]) -> Result<std::collections::BTreeMap<String, String>> {
        let releases = self.site.join(RELEASES);
        let mut first = std::collections::BTreeMap::new();
        for (date, n) in release_names(&releases)? {
            let folder = if n == 1 { releases.join(&date) } else { releases.join(format!("{date}.{n}")) };
            for t in tables {
                if folder.join(&t.dataset.name).join(files::DATAPACKAGE).is_file() {
                    first.entry(t.dataset.name.clone()).or_insert_with(|| date.clone());
                }
            }
        }
        Ok(first)
    }
}

/// The releases in `releases` (folders named as ladu names releases), as (date, number).
fn release_names(releases: &Path) -> Result<Vec<(String, u32)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(releases).map_err(io(releases))? {
        let entry = entry.map_err(io(releases))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_dir() || entry.path().is_symlink() {
            continue;
        }
        found.extend(release_name(&name));
    }
    found.sort();
    Ok(found)
}

/// Remove all but the newest `keep` releases (by date, then number), never `current`.
fn prune(releases: &Path, keep: usize, current: &str) -> Result<()> {
    let found = release_names(releases)?;
    let excess = found.len().saturating_sub(keep);
    for (date, n) in found.into_iter().take(excess) {
        let name = if n == 1 { date } else { format!("{date}.{n}") };
        if name == current {
            continue;
        }
        let path = releases.join(&name);
        tracing::info!(release = %path.display(), "removing a release beyond publish.keep_releases");
        std::fs::remove_dir_all(&path).map_err(io(&path))?;
    }
    sync_dir(releases)
}

/// The site's front page: the latest release's page is at a stable address.
const ROOT_PAGE: &str = r#"<!DOCTYPE html>
<html lang="et"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=latest/index.html">
<title>Avaandmed / Open data</title></head>
<body><p><a href="latest/index.html">Avaandmed / Open data</a></p></body></html>
"#;

/// Write `name` in `dir` durably, replacing what was there.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<Written> {
    let path = dir.join(name);
    Durable::new(Place::Replace).bytes(&path, bytes).map_err(io(&path))?;
    files::describe(dir, name).map_err(io(&path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    crate::durable::sync_dir(dir).map_err(io(dir))
}
