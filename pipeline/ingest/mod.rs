//! Ingest: deliveries in the inbox become pseudonymised, partitioned, committed Parquet.
//!
//! Per delivery: frame it ([`framer`], which also hashes its bytes, so that a
//! re-delivery is found and dropped), parse chunks with Polars ([`parse`])
//! and check and transform their rows ([`rules`]), several chunks at a time,
//! write partitions ([`crate::warehouse::writer`]) and report rejected rows
//! ([`report`]). All
//! deliveries of a run commit together as one manifest version; a refused
//! delivery is rolled back alone.

pub mod delivery;
pub mod framer;
pub mod parse;
pub mod report;
pub mod rules;
pub mod values;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value, json};

use crate::audit::AuditLog;
use crate::config::{Settings, SourceConfig};
use crate::pseudonym::Keys;
use crate::warehouse::writer::TableWriter;
use crate::warehouse::{self, Delivery, Manifest, Transaction, Warehouse};
use delivery::DeliveryFile;
use framer::{FrameError, Framer};
use report::RejectionReport;
use rules::{Plan, RowMeta};

/// Errors that stop an ingest run (a refused delivery does not).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Warehouse(#[from] warehouse::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: cannot tell which source this file belongs to; name it `<source>_<YYYYMMDD>.csv` or pass --source"
    )]
    UnknownSource { path: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to ingest.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Only this source.
    pub source: Option<String>,
    /// These files instead of the inbox.
    pub files: Vec<PathBuf>,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Committed { rows: u64, rejected: u64, report: Option<PathBuf> },
    AlreadyIngested,
    Refused { reason: String, report: Option<PathBuf> },
}

#[derive(Debug, Clone)]
pub struct DeliveryResult {
    pub source: String,
    pub file: PathBuf,
    pub outcome: Outcome,
    pub seconds: f64,
}

/// The result of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub deliveries: Vec<DeliveryResult>,
    /// Manifest version committed, if anything was.
    pub commit: Option<u64>,
}

impl Summary {
    pub fn refused(&self) -> usize {
        self.deliveries.iter().filter(|d| matches!(d.outcome, Outcome::Refused { .. })).count()
    }
}

/// Ingest every new delivery (or the given files) and commit them together.
pub fn run(settings: &Settings, key: &Keys, audit: &AuditLog, opts: &Options) -> Result<Summary> {
    let fingerprints = key.fingerprints();
    let mut wh = Warehouse::open_for_write(&settings.paths.warehouse, &fingerprints)?;
    audit_last_commit(wh.manifest(), audit)?;
    let (deliveries, mut results) = find_deliveries(settings, opts)?;
    let mut tx = wh.begin()?;
    let mut next: Manifest = wh.manifest().clone();
    next.set_generations(&fingerprints);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    next.committed_at = now.clone();
    let outbox_err = |source| Error::Write { path: settings.paths.outbox.clone(), source };
    let mut hashes_this_run = BTreeSet::new();
    let mut audit_entries = Vec::new();
    for d in &deliveries {
        let started = Instant::now();
        let source = settings.source(&d.source)?;
        let read_err = |source| Error::Read { path: d.path.clone(), source };
        let file = match delivery::open(&d.path).map_err(read_err)? {
            Ok(file) => file,
            Err(what) => {
                let (entry, result) =
                    refuse_whole(settings, d, format!("not a delivery: {what}"), None, started).map_err(outbox_err)?;
                audit_entries.push(entry);
                results.push(result);
                continue;
            }
        };
        let size = file.metadata().map_err(read_err)?.len();
        // Hashed through a file opened the same careful way (no link followed).
        let hash_now = || -> Result<String> {
            match delivery::open(&d.path).map_err(read_err)? {
                Ok(f) => Ok(crate::warehouse::writer::hash_reader(f).map_err(read_err)?.0),
                Err(what) => Err(read_err(std::io::Error::other(what))),
            }
        };
        let already = |hash: &str, seen: &BTreeSet<String>| next.has_delivery(hash) || seen.contains(hash);
        let skipped = |results: &mut Vec<DeliveryResult>| {
            tracing::info!(source = %d.source, file = %d.name, "already ingested; nothing to do");
            results.push(DeliveryResult {
                source: d.source.clone(),
                file: d.path.clone(),
                outcome: Outcome::AlreadyIngested,
                seconds: started.elapsed().as_secs_f64(),
            });
        };
        // Where a re-delivery is likely (the name or size of a committed
        // delivery), hash before doing any work; otherwise the framer hashes
        // the bytes as it reads them, which saves a pass over the file.
        // One (source, extract date, sequence) is one delivery, whatever the name's spelling.
        let same_slot = next
            .deliveries
            .iter()
            .find(|x| x.source == d.source && x.extract_date == d.extract_date.to_string() && x.extract_seq == d.seq);
        let likely_again = same_slot.is_some()
            || next.deliveries.iter().any(|x| x.source == d.source && (x.file == d.name || x.bytes == size));
        let early_hash = if likely_again { Some(hash_now()?) } else { None };
        if early_hash.as_deref().is_some_and(|h| already(h, &hashes_this_run)) {
            skipped(&mut results);
            continue;
        }
        if let (Some(first), Some(hash)) = (same_slot, &early_hash) {
            let reason = format!(
                "extract date {} sequence {} of {} was already delivered as `{}` with other content: a correction needs a sequence number of its own (`{}_{}_<n>.csv`)",
                d.extract_date,
                d.seq,
                d.source,
                first.file,
                d.source,
                d.extract_date.format("%Y%m%d")
            );
            let (entry, result) = refuse_whole(settings, d, reason, Some(hash), started).map_err(outbox_err)?;
            audit_entries.push(entry);
            results.push(result);
            continue;
        }
        let mark = tx.mark();
        let meta = RowMeta {
            extract_date: (d.extract_date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days()
                as i32,
            extract_seq: d.seq as i32,
            commit: tx.version() as i64,
        };
        let (outcome, hash) = match ingest_delivery(settings, source, d, file, key, meta, &mut tx, opts.progress)? {
            Ok(done) => {
                if already(&done.sha256, &hashes_this_run) {
                    tx.rollback_to(mark);
                    done.report.discard();
                    skipped(&mut results);
                    continue;
                }
                let report = done.report.finish().map_err(outbox_err)?;
                let table = next.tables.entry(source.table.clone()).or_default();
                table.partition_columns = source
                    .partition_by
                    .as_ref()
                    .map(|p| p.parts.iter().map(|x| x.name().to_owned()).collect())
                    .unwrap_or_default();
                table.files.extend(tx.files().skip(mark).cloned());
                next.deliveries.push(Delivery {
                    source: d.source.clone(),
                    file: d.name.clone(),
                    sha256: done.sha256.clone(),
                    bytes: size,
                    extract_date: d.extract_date.to_string(),
                    extract_seq: d.seq,
                    rows_committed: done.rows,
                    rows_rejected: done.rejected,
                    commit: tx.version(),
                    committed_at: now.clone(),
                });
                tracing::info!(source = %d.source, file = %d.name, rows = done.rows, rejected = done.rejected, "delivery ingested");
                (Outcome::Committed { rows: done.rows, rejected: done.rejected, report }, done.sha256)
            }
            Err((reason, report)) => {
                tx.rollback_to(mark);
                let hash = match early_hash {
                    Some(h) => h,
                    None => hash_now()?,
                };
                if already(&hash, &hashes_this_run) {
                    report.discard();
                    skipped(&mut results);
                    continue;
                }
                let report = report.finish().map_err(outbox_err)?;
                tracing::warn!(source = %d.source, file = %d.name, %reason, "delivery refused");
                (Outcome::Refused { reason, report }, hash)
            }
        };
        audit_entries.push(delivery_audit(d, Some(&hash), &outcome));
        hashes_this_run.insert(hash);
        results.push(DeliveryResult {
            source: d.source.clone(),
            file: d.path.clone(),
            outcome,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let mut summary = Summary { deliveries: results, commit: None };
    let committed_any = summary.deliveries.iter().any(|r| matches!(r.outcome, Outcome::Committed { .. }));
    if committed_any {
        let version = tx.version();
        wh.commit(tx, next)?;
        summary.commit = Some(version);
    } else {
        wh.abort(tx)?;
    }
    for mut fields in audit_entries {
        fields.insert("commit".into(), summary.commit.map(Value::from).unwrap_or(Value::Null));
        audit.append("ingest", fields)?;
    }
    Ok(summary)
}

/// A run killed between its commit and its audit entries leaves the newest
/// commit unaudited: write those entries now, marked as recovered.
fn audit_last_commit(m: &Manifest, audit: &AuditLog) -> Result<()> {
    if m.version == 0 || audit.has_ingest_commit(m.version)? {
        return Ok(());
    }
    for d in m.deliveries.iter().filter(|d| d.commit == m.version) {
        let mut fields = Map::new();
        fields.insert("source".into(), json!(d.source));
        fields.insert("file".into(), json!(d.file));
        fields.insert("sha256".into(), json!(d.sha256));
        fields.insert("outcome".into(), json!("committed"));
        fields.insert("rows_committed".into(), json!(d.rows_committed));
        fields.insert("rows_rejected".into(), json!(d.rows_rejected));
        fields.insert("commit".into(), json!(m.version));
        fields.insert("recovered".into(), json!(true));
        audit.append("ingest", fields)?;
    }
    Ok(())
}

/// A delivery's audit entry; `hash` is `None` for a path that is not a file.
fn delivery_audit(d: &DeliveryFile, hash: Option<&str>, outcome: &Outcome) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("source".into(), json!(d.source));
    m.insert("file".into(), json!(d.name));
    m.insert("sha256".into(), json!(hash));
    match outcome {
        Outcome::Committed { rows, rejected, .. } => {
            m.insert("outcome".into(), json!("committed"));
            m.insert("rows_committed".into(), json!(rows));
            m.insert("rows_rejected".into(), json!(rejected));
        }
        Outcome::Refused { reason, .. } => {
            m.insert("outcome".into(), json!("refused"));
            m.insert("reason".into(), json!(reason));
        }
        Outcome::AlreadyIngested => {
            m.insert("outcome".into(), json!("already_ingested"));
        }
    }
    m
}

/// The deliveries of this run, oldest extract first, and results for misnamed files.
fn find_deliveries(settings: &Settings, opts: &Options) -> Result<(Vec<DeliveryFile>, Vec<DeliveryResult>)> {
    let mut found = Vec::new();
    let mut results = Vec::new();
    if opts.files.is_empty() {
        let sources: Vec<&SourceConfig> = match &opts.source {
            Some(s) => vec![settings.source(s)?],
            None => settings.sources.iter().collect(),
        };
        for s in sources {
            let (ok, misnamed) = delivery::discover(&settings.paths.inbox, s)
                .map_err(|source| Error::Read { path: settings.paths.inbox.join(&s.name), source })?;
            found.extend(ok);
            for (path, e) in misnamed {
                results.push(refused_name(&s.name, path, e));
            }
        }
    } else {
        for path in &opts.files {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let source = match &opts.source {
                Some(s) => settings.source(s)?,
                None => settings
                    .sources
                    .iter()
                    .filter(|s| name.starts_with(&format!("{}_", s.name)))
                    .max_by_key(|s| s.name.len())
                    .ok_or_else(|| Error::UnknownSource { path: path.with_file_name(mask_digit_runs(&name)) })?,
            };
            // A link, folder or pipe is taken, to be refused with its reason; nothing is not.
            if std::fs::symlink_metadata(path).is_err() {
                return Err(Error::Read {
                    path: path.with_file_name(mask_digit_runs(&name)),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
            match delivery::parse_name(&source.name, &name) {
                Ok((extract_date, seq)) => found.push(DeliveryFile {
                    path: path.clone(),
                    source: source.name.clone(),
                    name,
                    extract_date,
                    seq,
                }),
                Err(e) => results.push(refused_name(&source.name, path.clone(), e)),
            }
        }
    }
    delivery::sort(&mut found);
    Ok((found, results))
}

fn refused_name(source: &str, path: PathBuf, e: delivery::NameError) -> DeliveryResult {
    // The name is the provider's and failed the convention: it could hold
    // anything, so long digit runs (a personal code?) are masked.
    let name = path.file_name().map(|n| mask_digit_runs(&n.to_string_lossy())).unwrap_or_default();
    let path = path.with_file_name(name);
    tracing::warn!(source, file = %path.display(), reason = %e, "delivery refused");
    DeliveryResult {
        source: source.to_owned(),
        file: path,
        outcome: Outcome::Refused { reason: e.to_string(), report: None },
        seconds: 0.0,
    }
}

/// `text` with every run of nine or more digits replaced by `#`s (dates,
/// eight digits, stay readable; an 11-digit personal code does not).
fn mask_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        if run.len() >= 9 {
            out.extend(std::iter::repeat_n('#', run.len()));
        } else {
            out.push_str(&run);
        }
        run.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// Refuse a whole delivery before reading it (its bytes' `hash`, if it is a
/// file): one line in its report, saying why; returns its audit entry and result.
fn refuse_whole(
    settings: &Settings,
    d: &DeliveryFile,
    reason: String,
    hash: Option<&str>,
    started: Instant,
) -> std::io::Result<(Map<String, Value>, DeliveryResult)> {
    let mut report = RejectionReport::create(&settings.paths.outbox, &d.source, &d.name)?;
    report.add(1, "", &format!("file refused: {reason}"))?;
    let report = report.finish()?;
    tracing::warn!(source = %d.source, file = %d.name, %reason, "delivery refused");
    let outcome = Outcome::Refused { reason, report };
    let entry = delivery_audit(d, hash, &outcome);
    let result = DeliveryResult {
        source: d.source.clone(),
        file: d.path.clone(),
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((entry, result))
}

struct Done {
    rows: u64,
    rejected: u64,
    /// Not yet in place: a delivery found to be a re-delivery leaves none.
    report: RejectionReport,
    /// SHA-256 of the delivered bytes, hashed as they were read.
    sha256: String,
}

/// A refused delivery: why, and the provider's report (not yet in place).
type Refusal = (String, RejectionReport);

/// Ingest one delivery into `tx`. The outer error stops the run; the inner
/// one refuses this delivery.
#[allow(clippy::too_many_arguments)]
fn ingest_delivery(
    settings: &Settings,
    source: &SourceConfig,
    d: &DeliveryFile,
    file: std::fs::File,
    key: &Keys,
    meta: RowMeta,
    tx: &mut Transaction,
    progress: bool,
) -> Result<Result<Done, Refusal>> {
    let outbox = &settings.paths.outbox;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Write { path, source }
    };
    let mut report = RejectionReport::create(outbox, &source.name, &d.name).map_err(write_err(outbox))?;
    let refuse = |mut report: RejectionReport, line: u64, reason: String| -> Result<Result<Done, Refusal>> {
        report.add(line, "", &format!("file refused: {reason}")).map_err(write_err(outbox))?;
        Ok(Err((reason, report)))
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (framer, header) = match Framer::new(file, source.encoding, source.delimiter.byte(), framer_limits(settings)) {
        Ok(x) => x,
        Err(FrameError::Io(source)) => return Err(Error::Read { path: d.path.clone(), source }),
        Err(e) => {
            let line = frame_error_line(&e);
            return refuse(report, line, e.to_string());
        }
    };
    if let Some(problem) = header_problem(source, &header) {
        return refuse(report, 1, problem);
    }
    let plan = Plan::new(source, &header, key, meta);
    let writer = TableWriter::new(
        &source.table,
        plan.schema().clone(),
        source.partition_by.as_ref().map(|p| p.parts.clone()).unwrap_or_default(),
        plan.column_layout(),
        settings.ingest.row_group_rows,
        settings.ingest.zstd_level,
    );
    let bar = progress_bar(progress, size, &d.name);
    let delimiter = source.delimiter.byte();
    let mut rows = 0u64;
    let mut rejected = 0u64;
    // A pipeline of three stages: one thread frames chunks ahead, Polars'
    // pool parses and transforms the next few, and one thread buffers rows
    // per partition and has full row groups sorted, encoded and compressed
    // on rayon's pool, a column per task.
    let tx_writer = &mut *tx;
    let outcome: Result<Result<(TableWriter, String), (u64, String)>> = std::thread::scope(|scope| {
        let (send, recv) = std::sync::mpsc::sync_channel::<Result<framer::Chunk, FrameError>>(1);
        // Parsed chunks' buffers go back to the framer for reuse.
        let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
        // Returns the file's SHA-256 once it has read all of it.
        let framer_thread = scope.spawn(move || -> Option<String> {
            let mut framer = framer;
            loop {
                for data in recycled.try_iter() {
                    framer.recycle(data);
                }
                match framer.next_chunk() {
                    Ok(Some(c)) => {
                        if send.send(Ok(c)).is_err() {
                            return None;
                        }
                    }
                    Ok(None) => return Some(framer.sha256()),
                    Err(e) => {
                        let _ = send.send(Err(e));
                        return None;
                    }
                }
            }
        });
        let (to_writer, batches) = std::sync::mpsc::sync_channel::<Vec<(rules::PartitionKey, RecordBatch)>>(2);
        let writer_thread = scope.spawn(move || -> Result<TableWriter> {
            let mut writer = writer;
            for batch_set in batches {
                for (key, batch) in batch_set {
                    writer.push(tx_writer, key, batch)?;
                }
            }
            Ok(writer)
        });
        let stop_writer = |to_writer: std::sync::mpsc::SyncSender<_>| {
            drop(to_writer);
            writer_thread.join().expect("the writer thread does not panic")
        };
        // Chunks are parsed and transformed on Polars' thread pool, several at
        // a time (each by one task, so Polars' own parallel split is inline),
        // and their results are taken in file order, which keeps the
        // rejection report in line order and the output deterministic.
        let in_flight = polars_core::runtime::THREAD_POOL.current_num_threads() + 1;
        let failed: Result<Option<(u64, String)>> = polars_core::runtime::THREAD_POOL.in_place_scope(|s| {
            let mut pending = std::collections::VecDeque::new();
            let mut chunks = recv.into_iter();
            loop {
                while pending.len() < in_flight {
                    let Some(chunk) = chunks.next() else { break };
                    let chunk = match chunk {
                        Ok(c) => c,
                        Err(FrameError::Io(source)) => return Err(Error::Read { path: d.path.clone(), source }),
                        Err(e) => return Ok(Some((frame_error_line(&e), e.to_string()))),
                    };
                    bar.set_position(chunk.bytes_read);
                    let (done, result) = std::sync::mpsc::sync_channel(1);
                    let (header, plan) = (&header, &plan);
                    let recycle = recycle.clone();
                    s.spawn(move |_| {
                        let _ = done.send(transform_chunk(chunk, header, delimiter, plan, &recycle));
                    });
                    pending.push_back(result);
                }
                let Some(next) = pending.pop_front() else { return Ok(None) };
                let t = match next.recv().expect("a chunk task always reports") {
                    Ok(t) => t,
                    Err(line) => return Ok(Some((line, "records could not be parsed".to_owned()))),
                };
                rejected += t.rejected;
                rows += t.rows;
                for (line, column, reason) in t.problems {
                    report.add(line, &column, &reason).map_err(write_err(outbox))?;
                }
                if to_writer.send(t.batches).is_err() {
                    // The writer stopped on an error, which joining it returns.
                    return Ok(None);
                }
            }
        });
        match failed {
            Ok(None) => {}
            Ok(Some(refusal)) => {
                stop_writer(to_writer)?;
                return Ok(Err(refusal));
            }
            Err(e) => {
                let _ = stop_writer(to_writer);
                return Err(e);
            }
        }
        let writer = stop_writer(to_writer)?;
        let sha256 = framer_thread.join().expect("the framer thread does not panic");
        // The framer stops early only on an error, which ended the loop above.
        Ok(Ok((writer, sha256.expect("the framer read the whole file"))))
    });
    bar.finish_and_clear();
    match outcome? {
        Ok((writer, sha256)) => {
            writer.finish(tx)?;
            Ok(Ok(Done { rows, rejected, report, sha256 }))
        }
        Err((line, reason)) => {
            report.discard();
            let report = RejectionReport::create(outbox, &source.name, &d.name).map_err(write_err(outbox))?;
            refuse(report, line, reason)
        }
    }
}

/// What one chunk of records became.
struct Transformed {
    batches: Vec<(rules::PartitionKey, RecordBatch)>,
    /// Rejections (line, column, reason) in line order.
    problems: Vec<(u64, String, String)>,
    rows: u64,
    rejected: u64,
}

/// Parse a framed chunk with Polars and run the rules over it, then hand its
/// buffer to `recycle`. The error is the chunk's first line: Polars could
/// not parse it (its own message may quote the data, so it is not kept).
fn transform_chunk(
    chunk: framer::Chunk,
    header: &[String],
    delimiter: u8,
    plan: &Plan,
    recycle: &std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<Transformed, u64> {
    let framer::Chunk { data, lines, malformed, quoted, .. } = chunk;
    let mut problems: Vec<(u64, String, String)> =
        malformed.into_iter().map(|m| (m.line, String::new(), m.reason)).collect();
    let mut t = Transformed { batches: Vec::new(), rows: 0, rejected: problems.len() as u64, problems: Vec::new() };
    if !lines.is_empty() {
        let parsed = parse::parse_chunk(&data, header, delimiter, plan.inputs(), quoted);
        // The framer may have stopped: then the buffer is simply freed.
        let _ = recycle.send(data);
        let parsed = match parsed {
            Ok(p) if p.rows() == lines.len() => p,
            _ => return Err(lines[0]),
        };
        let p = plan.process(&parsed, &lines, 0..parsed.rows());
        t.rejected += p.rows_rejected;
        problems.extend(p.rejections.into_iter().map(|r| (r.line, r.column, r.reason)));
        t.rows = p.batches.iter().map(|(_, b)| b.num_rows() as u64).sum();
        t.batches = p.batches;
    }
    problems.sort_by_key(|p| p.0);
    t.problems = problems;
    Ok(t)
}

fn frame_error_line(e: &FrameError) -> u64 {
    match e {
        FrameError::UnclosedQuote { line }
        | FrameError::Encoding { line, .. }
        | FrameError::Header { line, .. }
        | FrameError::RecordTooLong { line, .. } => *line,
        FrameError::Empty | FrameError::Io(_) => 1,
    }
}

fn framer_limits(settings: &Settings) -> framer::Limits {
    framer::Limits::new(settings.ingest.chunk_bytes, settings.ingest.max_record_bytes)
}

/// Why a header does not match the source config, if it does not.
///
/// Column names are shown only when they look like column names: a file
/// delivered without its header would otherwise put its first row's values
/// (personal codes, names) into the message.
fn header_problem(source: &SourceConfig, header: &[String]) -> Option<String> {
    let plausible = |n: &str| {
        let mut b = n.bytes();
        n.len() <= 64
            && b.next().is_some_and(|c| c.is_ascii_lowercase())
            && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
    };
    let show = |i: usize, n: &str| {
        if plausible(n) {
            format!("`{n}`")
        } else {
            format!("column {} (name withheld: not a lowercase column name)", i + 1)
        }
    };
    let mut seen = BTreeSet::new();
    let mut unknown = Vec::new();
    let mut duplicate = Vec::new();
    for (i, h) in header.iter().enumerate() {
        if !seen.insert(h.as_str()) {
            duplicate.push(show(i, h));
        } else if !source.columns.contains_key(h) {
            unknown.push(show(i, h));
        }
    }
    let missing: Vec<String> =
        source.columns.keys().filter(|c| !seen.contains(c.as_str())).map(|c| format!("`{c}`")).collect();
    if unknown.is_empty() && missing.is_empty() && duplicate.is_empty() {
        return None;
    }
    if unknown.len() * 2 > header.len() {
        return Some(format!(
            "the first line is not this source's header ({} of {} names unknown): is the header row missing?",
            unknown.len(),
            header.len()
        ));
    }
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!(
            "unknown column(s) {} (schema drift: after review, give each a rule in {})",
            unknown.join(", "),
            source.file.display()
        ));
    }
    if !missing.is_empty() {
        parts.push(format!("missing column(s) {}", missing.join(", ")));
    }
    if !duplicate.is_empty() {
        parts.push(format!("duplicate column(s) {}", duplicate.join(", ")));
    }
    Some(parts.join("; "))
}

fn progress_bar(enabled: bool, size: u64, name: &str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:30} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(name.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_digit_runs_are_masked() {
        assert_eq!(mask_digit_runs("sick_leave_38001010009.csv"), "sick_leave_###########.csv");
        assert_eq!(mask_digit_runs("sick_leave_2024-03-31.csv"), "sick_leave_2024-03-31.csv");
        assert_eq!(mask_digit_runs("x_20240331_1.txt"), "x_20240331_1.txt");
    }
}
