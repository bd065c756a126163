//! The nightly run: ingest every new delivery, remove rows and files past their period, compact, refresh the statistics, publish the open data, report.
//!
//! One run at a time holds `warehouse/_ladu/run.lock` (an advisory lock the
//! kernel releases when its holder dies, so a killed run's lock is simply
//! taken by the next). A refused delivery does not stop the run; a failure
//! of any step does, and the steps after it do not run. Each run leaves a
//! report, `warehouse/_ladu/runs/<start>.json`, and an audit entry.

pub mod compact;
pub mod expire;
pub mod rekey;
pub mod retention;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::durable::{Durable, Place};
use crate::ingest::{self, Outcome};
use crate::pseudonym::Keys;
use crate::warehouse::META_DIR;
use crate::{publish, stats};

/// Audit entry kind of a run.
pub const AUDIT_KIND: &str = "run";
/// Folder of the run reports under the warehouse's metadata folder.
pub const REPORTS: &str = "runs";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("another `ladu run` is running (lock {path} is held{holder}); this one did nothing")]
    Running { path: PathBuf, holder: String },
    #[error("cannot take or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ingest: {0}")]
    Ingest(#[from] ingest::Error),
    #[error("expiry: {0}")]
    Expire(#[from] expire::Error),
    #[error("retention: {0}")]
    Retention(#[from] retention::Error),
    #[error("compaction: {0}")]
    Compact(#[from] compact::Error),
    #[error("statistics: {0}")]
    Stats(#[from] stats::Error),
    #[error("publish: {0}")]
    Publish(#[from] publish::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

/// What a run did: the report, and what each step returned.
#[derive(Debug)]
pub struct Report {
    pub ingest: ingest::Summary,
    pub stats: Option<stats::Summary>,
    pub publish: Option<publish::Summary>,
    /// The report's file.
    pub path: PathBuf,
    /// Seconds each step took: `ingest_seconds`, `stats_seconds`, `publish_seconds`.
    pub steps: Map<String, Value>,
}

/// A run that stopped: why, and its report if one was written.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub report: Option<PathBuf>,
}

fn failed(error: impl Into<Error>, report: Option<PathBuf>) -> Box<Failed> {
    Box::new(Failed { error: error.into(), report })
}

/// Run the nightly job; a step's failure is in the report (and the returned error), never lost.
pub fn run(settings: &Settings, key: &Keys, audit: &AuditLog, progress: bool) -> Result<Report, Box<Failed>> {
    let lock = take_lock(&settings.paths.warehouse.join(META_DIR)).map_err(|e| failed(e, None))?;
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let mut steps = Map::new();
    let mut timed = |name: &str, since: Instant| {
        steps.insert(format!("{name}_seconds"), json!((since.elapsed().as_secs_f64() * 100.0).round() / 100.0));
    };
    let mut outcome: Outcomes = (None, None, None);
    // Each step in turn; the first failure stops the rest, and what was done stays in `outcome`.
    let failure = (|| -> Result<(), Error> {
        let t = Instant::now();
        let opts = ingest::Options { source: None, files: Vec::new(), progress };
        let ingested = ingest::run(settings, key, audit, &opts);
        timed("ingest", t);
        let ingested = outcome.0.insert(ingested?);
        if let Some(to) = &settings.paths.processed {
            move_processed(ingested, to)?;
        }
        let t = Instant::now();
        let expired = expire::run(settings, audit, None, crate::warehouse::expire::today(), false)?;
        timed("expire", t);
        for e in expired.expired.iter().filter(|e| e.rows > 0) {
            tracing::info!(table = %e.table, rows = e.rows, cutoff = %e.cutoff, "removed rows past their retention period");
        }
        let t = Instant::now();
        retention::run(settings, audit, std::time::SystemTime::now())?;
        timed("retention", t);
        let t = Instant::now();
        let compacted = compact::run(settings, audit, None, settings.ingest.compact_files)?;
        timed("compact", t);
        for c in &compacted.compacted {
            tracing::info!(table = %c.table, partition = %c.partition, files = c.files_before, rows = c.rows, "compacted");
        }
        let t = Instant::now();
        outcome.1 = Some(stats::run(settings, audit, &[], progress)?);
        timed("stats", t);
        let t = Instant::now();
        match publish::run(settings, audit, progress) {
            Err(publish::Error::NoDatasets { dir }) => {
                tracing::warn!("nothing published: no open dataset in {} has data yet", dir);
            }
            published => outcome.2 = Some(published?),
        }
        timed("publish", t);
        Ok(())
    })()
    .err();
    finish(settings, audit, lock, (started, clock, steps), outcome, failure)
}

type Outcomes = (Option<ingest::Summary>, Option<stats::Summary>, Option<publish::Summary>);

/// Write the report and the audit entry, release the lock, and return the run's result.
fn finish(
    settings: &Settings,
    audit: &AuditLog,
    lock: File,
    (started, clock, steps): (chrono::DateTime<chrono::Utc>, Instant, Map<String, Value>),
    (ingested, stats, published): Outcomes,
    failure: Option<Error>,
) -> Result<Report, Box<Failed>> {
    let meta = settings.paths.warehouse.join(META_DIR);
    let ingested = ingested.unwrap_or_default();
    let message = failure.as_ref().map(|e| crate::pseudonym::isikukood::redact(&e.to_string()).into_owned());
    let report =
        report_json(&started, clock, &ingested, stats.as_ref(), published.as_ref(), message.as_deref(), steps.clone());
    let path = write_report(&meta, &started, &report).map_err(|e| failed(e, None))?;
    let mut fields = Map::new();
    fields.insert("report".into(), Value::from(path.display().to_string()));
    fields.insert("outcome".into(), report["outcome"].clone());
    fields.insert("commits".into(), json!([ingested.commit, stats.as_ref().and_then(|s| s.commit)]));
    fields.insert("release".into(), json!(published.as_ref().map(|p| p.release.clone())));
    if let Some(m) = &message {
        fields.insert("error".into(), Value::from(m.clone()));
    }
    audit.append(AUDIT_KIND, fields).map_err(|e| failed(e, Some(path.clone())))?;
    drop(lock);
    match failure {
        Some(e) => Err(failed(e, Some(path))),
        None => Ok(Report { ingest: ingested, stats, publish: published, path, steps }),
    }
}

/// Move the deliveries now in the warehouse (committed, or found to be
/// already) from the inbox to `<to>/<source>/`; refused ones stay.
fn move_processed(summary: &ingest::Summary, to: &Path) -> Result<(), Error> {
    for d in &summary.deliveries {
        if matches!(d.outcome, Outcome::Refused { .. }) {
            continue;
        }
        let Some(name) = d.file.file_name() else { continue };
        let dir = to.join(&d.source);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        let name = name.to_string_lossy();
        let target = (1..)
            .map(|n| if n == 1 { dir.join(&*name) } else { dir.join(format!("{name}.{n}")) })
            .find(|p| !p.exists())
            .expect("some name is free");
        let io = |source| Error::Io { path: target.clone(), source };
        match std::fs::rename(&d.file, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                // Another file system: copy, make it durable, then remove.
                std::fs::copy(&d.file, &target).map_err(io)?;
                File::open(&target).and_then(|f| f.sync_all()).map_err(io)?;
                std::fs::remove_file(&d.file).map_err(|source| Error::Io { path: d.file.clone(), source })?;
            }
            Err(source) => return Err(Error::Io { path: target, source }),
        }
        // Its period in `processed` counts from now, not from when the provider wrote it.
        File::options()
            .write(true)
            .open(&target)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .map_err(io)?;
        crate::durable::sync_dir(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        if let Some(inbox) = d.file.parent() {
            crate::durable::sync_dir(inbox).map_err(|source| Error::Io { path: inbox.to_owned(), source })?;
        }
    }
    Ok(())
}

/// Take the run lock, naming the holder when it is busy.
fn take_lock(meta: &Path) -> Result<File, Error> {
    std::fs::create_dir_all(meta).map_err(|source| Error::Io { path: meta.to_owned(), source })?;
    let path = meta.join("run.lock");
    let io = |source| Error::Io { path: path.clone(), source };
    let Some(mut file) = crate::warehouse::try_lock(&path).map_err(io)? else {
        let holder = std::fs::read_to_string(&path).map(|s| format!(" by {}", s.trim())).unwrap_or_default();
        return Err(Error::Running { path, holder });
    };
    file.set_len(0).map_err(io)?;
    write!(file, "process {} since {}", std::process::id(), chrono::Utc::now().to_rfc3339()).map_err(io)?;
    Ok(file)
}

fn report_json(
    started: &chrono::DateTime<chrono::Utc>,
    clock: Instant,
    ingested: &ingest::Summary,
    stats: Option<&stats::Summary>,
    published: Option<&publish::Summary>,
    failure: Option<&str>,
    steps: Map<String, Value>,
) -> Value {
    let deliveries: Vec<Value> = ingested
        .deliveries
        .iter()
        .map(|d| {
            let file = d.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let (outcome, detail) = match &d.outcome {
                Outcome::Committed { rows, rejected, .. } => {
                    ("committed", json!({ "rows": rows, "rejected": rejected }))
                }
                Outcome::AlreadyIngested => ("already ingested", json!({})),
                Outcome::Refused { reason, .. } => ("refused", json!({ "reason": reason })),
            };
            json!({ "source": d.source, "file": file, "outcome": outcome, "detail": detail, "seconds": d.seconds })
        })
        .collect();
    let refused = ingested.refused();
    let outcome = match (failure, refused) {
        (Some(_), _) => "failed",
        (None, 0) => "ok",
        (None, _) => "some deliveries refused",
    };
    json!({
        "started": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "seconds": (clock.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "outcome": outcome,
        "error": failure,
        "steps": steps,
        "ingest": { "commit": ingested.commit, "deliveries": deliveries },
        "statistics": stats.map(|s| {
            s.statistics.iter().map(|(t, o)| json!({ "table": t, "outcome": format!("{o:?}") })).collect::<Vec<_>>()
        }),
        "publish": published.map(|p| json!({
            "release": p.release,
            "datasets": p.datasets.iter().map(|d| json!({
                "name": d.name, "rows": d.rows, "suppressed_primary": d.primary, "suppressed_secondary": d.secondary,
            })).collect::<Vec<_>>(),
            "waiting_for_data": p.waiting.iter().map(|(d, t)| json!({ "dataset": d, "table": t })).collect::<Vec<_>>(),
        })),
    })
}

fn write_report(meta: &Path, started: &chrono::DateTime<chrono::Utc>, report: &Value) -> Result<PathBuf, Error> {
    let dir = meta.join(REPORTS);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let stamp = started.format("%Y%m%dT%H%M%SZ");
    let path = (1..)
        .map(|n| dir.join(if n == 1 { format!("{stamp}.json") } else { format!("{stamp}-{n}.json") }))
        .find(|p| !p.exists())
        .expect("some name is free");
    let mut text = serde_json::to_vec_pretty(report).expect("a report serialises");
    text.push(b'\n');
    Durable::new(Place::New).bytes(&path, &text).map_err(io(&path))?;
    Ok(path)
}
