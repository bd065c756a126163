//! Releases to named recipients (`ladu release`): a query's result under the recipient's own pseudonyms, risk-checked and accounted for.
//!
//! The query runs as the `release` role in a session where every pseudonym
//! column already reads as the recipient's release pseudonyms
//! ([`crate::sql::Session::open_for_recipient`]), so no warehouse pseudonym
//! can reach the result, whatever the query does with it. The result is
//! written aside as Parquet, then read once to write the CSV, measure the
//! re-identification risk ([`risk`]) and collect its pseudonyms
//! ([`record`]). A release whose smallest group of persons is below
//! `release.min_group_size` is refused unless the risk is accepted with a
//! reason. The `release` audit entry is appended before the folder is moved
//! to where the user asked, so nothing leaves unaccounted for.

pub mod recipients;
pub mod record;
pub mod risk;

use std::collections::BTreeSet;
use std::fs::File;

use arrow::array::RecordBatch;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::durable::{Durable, Place};
use crate::pseudonym::isikukood::redact;
use crate::pseudonym::{Keys, Pseudonymiser};
use crate::sql::{self, Session};
use crate::warehouse::{manifest, writer::hash_file};
use recipients::Recipient;
use risk::{Risk, RiskMeter};

/// The role release queries run as.
pub const ROLE: &str = "release";
/// Files of a release folder.
pub const PARQUET_FILE: &str = "data.parquet";
pub const CSV_FILE: &str = "data.csv";
pub const MANIFEST_FILE: &str = "release.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Recipients(#[from] recipients::Error),
    #[error("cannot read the query file {path}: {source}")]
    QueryFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the query file {path} must hold exactly one query; it holds {count} statements")]
    NotOneQuery { path: PathBuf, count: usize },
    #[error(
        "{path} already exists and is not an empty folder: give a new folder to --out (a release never overwrites)"
    )]
    OutExists { path: PathBuf },
    #[error("the warehouse has no committed data yet: there is nothing to release")]
    Empty,
    #[error(
        "the key's fingerprint {given} differs from the warehouse's {expected}: release pseudonyms made with it would be wrong; use the warehouse's key"
    )]
    WrongKey { expected: String, given: String },
    #[error(transparent)]
    Sql(#[from] sql::Error),
    #[error("the result has more than one column named `{column}`: give each column its own name (`… as name`)")]
    DuplicateColumn { column: String },
    #[error(
        "result column `{column}` holds pseudonyms mixed with, or inside, other text: return pseudonym columns as they are, so that a person's data can be found in the release"
    )]
    MixedPseudonyms { column: String },
    #[error(
        "release refused: {smallest} {counted} share one combination of {qi} (at least {min} must: `release.min_group_size`); {small} of {rows} rows are in smaller groups. Return fewer or coarser quasi-identifiers, or give --accept-risk \"reason\" (audited)",
        smallest = risk.smallest_group.unwrap_or(0), counted = risk.counted, qi = risk.quasi_identifiers.join(", "),
        min = risk.min_group_size, small = risk.rows_in_small_groups, rows = risk.rows
    )]
    TooRisky { risk: Box<Risk> },
    #[error("cannot write the release at {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to release, to whom.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub recipient: &'a str,
    pub query_file: &'a Path,
    pub out: &'a Path,
    pub request_id: Option<&'a str>,
    /// Why a release above the risk threshold goes ahead anyway.
    pub accept_risk: Option<&'a str>,
}

/// A delivered release.
#[derive(Debug, Clone)]
pub struct Released {
    pub id: String,
    pub out: PathBuf,
    pub rows: u64,
    pub pseudonym_columns: Vec<String>,
    pub risk: Risk,
}

/// Run `request`'s query as the `release` role and write the release to its folder.
pub fn run(settings: &Settings, key: &Keys, audit: &AuditLog, request: &Request) -> Result<Released> {
    let recipient = recipients::find(&settings.release.recipients_file, request.recipient)?;
    let query = read_query(request.query_file)?;
    check_out(request.out)?;
    let manifest = manifest::load_latest(&settings.paths.warehouse).map_err(sql::Error::from)?;
    let expected = manifest.generations();
    let generations = key.fingerprints();
    if expected.is_empty() {
        return Err(Error::Empty);
    }
    if expected != generations {
        return Err(Error::WrongKey { expected: expected.join(" → "), given: generations.join(" → ") });
    }
    // Release pseudonyms are made with the newest generation (a new domain after each rekey).
    let given = generations.last().cloned().unwrap_or_default();
    let session = Session::open_for_recipient(
        settings,
        audit.clone(),
        ROLE,
        Pseudonymiser::for_release(key.newest(), &recipient.id),
    )?;
    let staging = staging_dir(request.out);
    prepare_staging(&staging)?;
    let (id, record) = match record::allocate(&settings.paths.warehouse) {
        Ok(allocated) => allocated,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(write_error(&settings.paths.warehouse)(e));
        }
    };
    let result = (|| {
        let written = write(&session, &query, &staging, settings)?;
        let entry = Entry { id: &id, recipient: &recipient, request, query: &query, written: &written, settings };
        let (for_recipient, mut for_audit) = entry.fields(&given, session.warehouse_version());
        if written.risk.too_high() && request.accept_risk.is_none() {
            for_audit.insert("outcome".into(), Value::from("refused"));
            for_audit
                .insert("reason".into(), Value::from("re-identification risk: a group below release.min_group_size"));
            audit.append(record::AUDIT_KIND, for_audit)?;
            return Err(Error::TooRisky { risk: Box::new(written.risk.clone()) });
        }
        let index = record.join(record::PSEUDONYMS_FILE);
        record::write_pseudonyms(&index, &written.pseudonyms).map_err(write_error(&index))?;
        let (index_sha256, _) = hash_file(&index).map_err(write_error(&index))?;
        let text = serde_json::to_vec_pretty(&Value::Object(for_recipient)).expect("JSON values serialise");
        for dir in [&staging, &record] {
            write_synced(&dir.join(MANIFEST_FILE), &text)?;
        }
        for_audit.insert("outcome".into(), Value::from(record::RELEASED));
        for_audit.insert("record_sha256".into(), Value::from(index_sha256));
        audit.append(record::AUDIT_KIND, for_audit)?;
        Ok(written)
    })();
    let written = match result {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            // A refusal is audited under its id: the id stays taken.
            if !matches!(e, Error::TooRisky { .. }) {
                let _ = std::fs::remove_dir_all(&record);
            }
            return Err(e);
        }
    };
    let marker = staging.join(STAGING_MARKER);
    std::fs::remove_file(&marker).map_err(write_error(&marker))?;
    crate::durable::sync_dir(&staging).map_err(write_error(&staging))?;
    // rename(2) replaces an empty folder (`check_out` allowed only that).
    std::fs::rename(&staging, request.out).map_err(write_error(request.out))?;
    // The release is delivered only once its name is durable.
    let parent = match request.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::durable::sync_dir(parent).map_err(write_error(parent))?;
    Ok(Released {
        id,
        out: request.out.to_owned(),
        rows: written.rows,
        pseudonym_columns: written.pseudonym_columns,
        risk: written.risk,
    })
}

fn write_error<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Write { path: path.to_owned(), message: e.to_string() }
}

/// The one query of the file.
fn read_query(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::QueryFile { path: path.to_owned(), source })?;
    let mut script = sql::script::Script::new();
    let mut statements: Vec<sql::script::Item> = text.lines().flat_map(|l| script.line(l)).collect();
    statements.extend(script.finish());
    match statements.as_slice() {
        [sql::script::Item::Statement(s)] => Ok(s.clone()),
        _ => Err(Error::NotOneQuery { path: path.to_owned(), count: statements.len() }),
    }
}

/// `out` must not exist, or be an empty folder.
fn check_out(out: &Path) -> Result<()> {
    match std::fs::read_dir(out).map(|mut entries| entries.next().is_none()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(true) => Ok(()),
        _ => Err(Error::OutExists { path: out.to_owned() }),
    }
}

/// Marks a staging folder as ladu's own, so that ladu removes no folder it did not make.
const STAGING_MARKER: &str = ".ladu-release-partial";

/// Make the staging folder, after removing one an earlier release left
/// (which holds the marker); one without the marker is not ladu's: refused.
fn prepare_staging(staging: &Path) -> Result<()> {
    if staging.exists() {
        if !staging.join(STAGING_MARKER).is_file() {
            return Err(Error::Write {
                path: staging.to_owned(),
                message:
                    "it exists and was not made by ladu: move it away (ladu removes only its own unfinished releases)"
                        .into(),
            });
        }
        std::fs::remove_dir_all(staging).map_err(write_error(staging))?;
    }
    std::fs::create_dir_all(staging).map_err(write_error(staging))?;
    std::fs::write(staging.join(STAGING_MARKER), b"").map_err(write_error(staging))
}

/// `.<name>.partial` beside `out`: the release is built there and renamed into place.
fn staging_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "release".into());
    out.with_file_name(format!(".{name}.partial"))
}

/// The release's data files, written and read back.
struct Written {
    tables: Vec<String>,
    columns: Vec<(String, String)>,
    rows: u64,
    pseudonym_columns: Vec<String>,
    pseudonyms: Vec<u128>,
    risk: Risk,
    /// File name, bytes, SHA-256.
    files: Vec<(String, u64, String)>,
}

/// Run the query into `dir`'s Parquet file, then read it once for the CSV, the risk and the pseudonyms.
fn write(session: &Session, query: &str, dir: &Path, settings: &Settings) -> Result<Written> {
    let parquet_path = dir.join(PARQUET_FILE);
    let mut out = sql::Output::new(sql::Format::Parquet, Some(&parquet_path), false).map_err(sql::Error::from)?;
    let (rows, tables) = session.run_reading(query, &mut out)?;
    let reader = File::open(&parquet_path)
        .map_err(parquet::errors::ParquetError::from)
        .and_then(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new)
        .and_then(|b| b.build())
        .map_err(write_error(&parquet_path))?;
    let schema = arrow::array::RecordBatchReader::schema(&reader);
    let mut names = std::collections::BTreeSet::new();
    if let Some(f) = schema.fields().iter().find(|f| !names.insert(f.name())) {
        return Err(Error::DuplicateColumn { column: f.name().clone() });
    }
    let measured = quasi_identifiers(session, query, settings)?;
    let mut meter =
        RiskMeter::new(&schema, measured.qi, measured.person, measured.identity).map_err(write_error(dir))?;
    let mut index = record::PseudonymIndex::new(&schema);
    let csv_path = dir.join(CSV_FILE);
    let csv_file = File::create(&csv_path).map_err(write_error(&csv_path))?;
    // The CSV is formatted on a thread of its own while this one measures the batches.
    let (batches, to_csv) = std::sync::mpsc::sync_channel::<RecordBatch>(4);
    std::thread::scope(|scope| {
        let csv_writer = scope.spawn(|| -> Result<()> {
            let mut csv = arrow::csv::WriterBuilder::new().with_header(true).build(std::io::BufWriter::new(csv_file));
            for batch in to_csv {
                csv.write(&batch).map_err(write_error(&csv_path))?;
            }
            let file = csv.into_inner().into_inner().map_err(write_error(&csv_path))?;
            file.sync_all().map_err(write_error(&csv_path))
        });
        let measured = (|| {
            for batch in reader {
                let batch = batch.map_err(write_error(&parquet_path))?;
                meter.add(&batch).map_err(write_error(&parquet_path))?;
                index.add(&batch).map_err(|m| Error::MixedPseudonyms { column: m.column })?;
                if batches.send(batch).is_err() {
                    break; // The CSV writer failed: its error is reported below.
                }
            }
            Ok(())
        })();
        drop(batches);
        let written = csv_writer.join().map_err(|_| Error::Write {
            path: csv_path.clone(),
            message: "the CSV writer stopped unexpectedly".into(),
        })?;
        measured.and(written)
    })?;
    File::open(&parquet_path).and_then(|f| f.sync_all()).map_err(write_error(&parquet_path))?;
    let (pseudonym_columns, pseudonyms) = index.finish();
    let mut files = Vec::new();
    for name in [PARQUET_FILE, CSV_FILE] {
        let path = dir.join(name);
        let (sha256, bytes) = hash_file(&path).map_err(write_error(&path))?;
        files.push((name.to_owned(), bytes, sha256));
    }
    Ok(Written {
        tables,
        columns: schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect(),
        rows,
        pseudonym_columns,
        pseudonyms,
        risk: meter.finish(settings.release.min_group_size),
        files,
    })
}

/// What the risk is measured over, by lineage through the query's plan.
struct Measured {
    /// Columns derived in any way from a quasi-identifier of a table
    /// (`release.quasi_identifiers`; `birth_year / 10`, a `CASE` on `sex`, a
    /// renamed `county`), or whose lineage cannot be decided.
    qi: Vec<usize>,
    /// The first column that passes a table's personal-code pseudonyms on as
    /// they are, whatever its name, read from the same rows as the
    /// quasi-identifiers (the same scan, or one joined to it on the person):
    /// a person column joined in from elsewhere would pad the groups.
    person: Option<usize>,
    /// Without a person column, the columns whose distinct values count as
    /// persons: those read from the quasi-identifiers' rows (not literals, not
    /// columns joined in from unrelated rows).
    identity: Vec<usize>,
}

fn quasi_identifiers(session: &Session, query: &str, settings: &Settings) -> Result<Measured> {
    let traced = session.trace(query)?;
    let lineage = &traced.columns;
    let persons: std::collections::HashSet<(String, String)> = settings
        .sources
        .iter()
        .flat_map(|s| {
            s.columns.values().filter_map(move |rule| match rule {
                crate::config::ColumnRule::Pseudonymise { kind, name, .. } if kind == crate::subject::PERSON_KIND => {
                    Some((s.table.clone(), name.clone()))
                }
                _ => None,
            })
        })
        .collect();
    let qi: Vec<usize> =
        (0..lineage.len()).filter(|&i| lineage[i].derives_from_any(&settings.release.quasi_identifiers)).collect();
    let is_person = |l: &crate::sql::lineage::Lineage| {
        l.plain && l.decided && l.sources.len() == 1 && l.sources.iter().all(|s| persons.contains(s))
    };
    // Scans whose rows are one person's: the same scan, or scans joined on their person columns.
    let mut same: Vec<(usize, usize)> = Vec::new();
    for (a, b) in traced.joined.iter().filter(|(a, b)| is_person(a) && is_person(b)) {
        for (&x, &y) in a.rows.iter().zip(b.rows.iter()) {
            same.push((x, y));
        }
    }
    let qi_rows: BTreeSet<usize> = qi.iter().flat_map(|&i| lineage[i].rows.iter().copied()).collect();
    let person = lineage.iter().position(|l| {
        is_person(l) && l.rows.len() == 1 && qi_rows.iter().all(|r| l.rows.iter().all(|p| linked(&same, *p, *r)))
    });
    let identity = (0..lineage.len())
        .filter(|&i| qi.contains(&i) || lineage[i].rows.iter().any(|r| qi_rows.contains(r)))
        .collect();
    Ok(Measured { qi, person, identity })
}

/// Are scans `a` and `b` one, or connected through `pairs`?
fn linked(pairs: &[(usize, usize)], a: usize, b: usize) -> bool {
    let mut reached = BTreeSet::from([a]);
    loop {
        let before = reached.len();
        for &(x, y) in pairs {
            if reached.contains(&x) || reached.contains(&y) {
                reached.insert(x);
                reached.insert(y);
            }
        }
        if reached.contains(&b) {
            return true;
        }
        if reached.len() == before {
            return false;
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    Durable::new(Place::New).bytes(path, bytes).map_err(write_error(path))
}

/// What the audit entry and `release.json` say about one release.
struct Entry<'a> {
    id: &'a str,
    recipient: &'a Recipient,
    request: &'a Request<'a>,
    query: &'a str,
    written: &'a Written,
    settings: &'a Settings,
}

impl Entry<'_> {
    /// The fields of the recipient's `release.json`, and of the audit entry (without its outcome).
    fn fields(&self, fingerprint: &str, version: u64) -> (Map<String, Value>, Map<String, Value>) {
        let w = self.written;
        let query = redact(self.query).into_owned();
        let files: Vec<Value> =
            w.files.iter().map(|(name, bytes, sha)| json!({"name": name, "bytes": bytes, "sha256": sha})).collect();
        let columns: Vec<Value> = w
            .columns
            .iter()
            .map(|(name, ty)| {
                json!({
                    "name": name,
                    "type": ty,
                    "release_pseudonyms": w.pseudonym_columns.contains(name),
                    "quasi_identifier": w.risk.quasi_identifiers.contains(name),
                })
            })
            .collect();
        let risk = json!({
            "quasi_identifiers": w.risk.quasi_identifiers,
            "counted": w.risk.counted,
            "groups": w.risk.groups,
            "smallest_group": w.risk.smallest_group,
            "min_group_size": w.risk.min_group_size,
            "rows_in_small_groups": w.risk.rows_in_small_groups,
            "share_in_small_groups": w.risk.share_in_small_groups,
            "accepted": self.request.accept_risk.map(|r| redact(r).into_owned()),
        });
        let mut m = Map::new();
        m.insert("release".into(), Value::from(self.id));
        m.insert("recipient".into(), Value::from(self.recipient.id.clone()));
        m.insert("recipient_name".into(), Value::from(self.recipient.name.clone()));
        m.insert("basis".into(), Value::from(self.recipient.basis.clone()));
        m.insert("request_id".into(), self.request.request_id.map(|r| Value::from(redact(r).into_owned())).into());
        m.insert("query".into(), Value::from(query.clone()));
        // Of the query as stored (redacted): a hash of what was typed would
        // give a redacted personal code back to anyone who tries every code.
        m.insert("query_sha256".into(), Value::from(crate::hex::encode(&Sha256::digest(&query))));
        m.insert("tables".into(), Value::from(w.tables.clone()));
        m.insert("columns".into(), Value::from(columns));
        m.insert("rows".into(), Value::from(w.rows));
        m.insert("files".into(), Value::from(files));
        m.insert("key_fingerprint".into(), Value::from(fingerprint));
        m.insert("warehouse_version".into(), Value::from(version));
        m.insert("risk".into(), risk);
        m.insert("method".into(), Value::from("Parquet and CSV files with release.json, written to a folder"));
        let mut audit = m.clone();
        audit.insert("out".into(), Value::from(redact(&self.request.out.display().to_string()).into_owned()));
        audit.insert("role".into(), Value::from(ROLE));
        let mut recipient_manifest = m;
        recipient_manifest.insert("created_at".into(), Value::from(chrono::Utc::now().to_rfc3339()));
        recipient_manifest.insert("ladu_version".into(), Value::from(env!("CARGO_PKG_VERSION")));
        recipient_manifest.insert(
            "pseudonyms".into(),
            Value::from(format!(
                "Pseudonym columns hold release pseudonyms made for recipient `{}` only: they cannot be linked to another recipient's data. Quasi-identifiers were checked against a minimum group of {} {}.",
                self.recipient.id, self.settings.release.min_group_size, w.risk.counted
            )),
        );
        (recipient_manifest, audit)
    }
}
