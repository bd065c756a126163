//! Files kept past their period, removed by `ladu run`: deliveries moved to `paths.processed` (they hold personal codes), rejection reports and run reports.
//!
//! A file's age is the time since it was last written (a processed delivery's
//! since `ladu run` moved it there). Each removal is audited first (kind
//! `retention`: what it was, the file, its SHA-256 and age), never with its
//! contents. The audit log itself is never removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Map, json};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::warehouse::META_DIR;

/// Audit entry kind of a removal.
pub const AUDIT_KIND: &str = "retention";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read or remove {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

/// One file removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// `processed delivery`, `rejection report` or `run report`.
    pub what: &'static str,
    pub file: PathBuf,
    pub age_days: u64,
}

/// Remove every file older than its period, as of `now`.
pub fn run(settings: &Settings, audit: &AuditLog, now: SystemTime) -> Result<Vec<Removed>, Error> {
    let p = &settings.paths;
    let mut places: Vec<(&'static str, PathBuf, u32)> = vec![
        ("rejection report", p.outbox.clone(), p.outbox_retention_days),
        ("run report", p.warehouse.join(META_DIR).join(super::REPORTS), p.run_reports_retention_days),
    ];
    if let Some(processed) = &p.processed {
        places.insert(0, ("processed delivery", processed.clone(), p.processed_retention_days));
    }
    let mut removed = Vec::new();
    for (what, dir, days) in places {
        let period = Duration::from_secs(u64::from(days) * 86_400);
        for file in files_under(&dir)? {
            let io = |source| Error::Io { path: file.clone(), source };
            let modified = std::fs::symlink_metadata(&file).and_then(|m| m.modified()).map_err(io)?;
            let age = now.duration_since(modified).unwrap_or_default();
            if age <= period {
                continue;
            }
            let (sha256, bytes) = crate::warehouse::writer::hash_file(&file).map_err(io)?;
            let age_days = age.as_secs() / 86_400;
            let mut fields = Map::new();
            fields.insert("what".into(), json!(what));
            fields.insert("file".into(), json!(file.display().to_string()));
            fields.insert("sha256".into(), json!(sha256));
            fields.insert("bytes".into(), json!(bytes));
            fields.insert("age_days".into(), json!(age_days));
            fields.insert("retention_days".into(), json!(days));
            audit.append(AUDIT_KIND, fields)?;
            std::fs::remove_file(&file).map_err(io)?;
            tracing::info!(what, file = %file.display(), age_days, "removed: kept past its period");
            removed.push(Removed { what, file, age_days });
        }
    }
    Ok(removed)
}

/// Regular files under `dir` (none if it does not exist); links are not followed.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(Error::Io { path: dir.to_owned(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io { path: dir.to_owned(), source })?;
        let kind = entry.file_type().map_err(|source| Error::Io { path: entry.path(), source })?;
        if kind.is_dir() {
            out.extend(files_under(&entry.path())?);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}
