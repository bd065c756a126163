//! Statistics: the queries of `queries/statistics/`, materialised as warehouse tables `stats_<name>`.
//!
//! `ladu stats` runs each query over the committed warehouse and commits its
//! result as one Parquet file under `stats/<name>/`, replacing the previous
//! result in the same manifest commit. A statistic is a snapshot: it has no
//! versions and no `_history`. Statistics read warehouse tables and views;
//! one that reads another statistic sees that statistic's previous result.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::sql::{self, Session, query_files};
use crate::warehouse::{self, Statistic, Warehouse, manifest};

/// Folder of the statistics' queries under the queries folder.
pub const DIR: &str = "statistics";
/// A statistic `name` is the table `stats_<name>`.
pub const TABLE_PREFIX: &str = "stats_";
/// Folder of the statistics under the warehouse root.
pub const FOLDER: &str = "stats";
/// Audit entry kind of a `ladu stats` commit.
pub const AUDIT_KIND: &str = "stats";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("statistic {0}")]
    File(#[from] query_files::Error),
    #[error("unknown statistic `{name}`: the statistics are {known} (files in {dir})")]
    Unknown { name: String, known: String, dir: String },
    #[error("statistic {name} failed: {source}")]
    Query {
        name: String,
        #[source]
        source: sql::Error,
    },
    #[error(transparent)]
    Sql(#[from] sql::Error),
    #[error(transparent)]
    Warehouse(#[from] warehouse::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What became of one statistic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Computed and committed with this many rows.
    Computed { rows: u64 },
    /// Neither its query, nor the views, nor the data changed since it was computed.
    Unchanged,
    /// Not computed: it reads a table with nothing committed yet.
    NoData { table: String },
}

/// What `ladu stats` did.
#[derive(Debug)]
pub struct Summary {
    /// Each statistic's table name and outcome.
    pub statistics: Vec<(String, Outcome)>,
    /// Manifest version committed, if anything was.
    pub commit: Option<u64>,
}

/// SHA-256 of what a statistic's result depends on besides the data: its query and the curated views.
fn inputs_sha256(file: &query_files::QueryFile, views: &[query_files::QueryFile]) -> String {
    let mut h = Sha256::new();
    for q in std::iter::once(file).chain(views) {
        h.update(q.name.as_bytes());
        h.update([0]);
        // Redacted, as everywhere a query is hashed: an unkeyed hash must not give a personal code back.
        h.update(crate::pseudonym::isikukood::redact(&q.sql).as_bytes());
        h.update([0]);
    }
    crate::hex::encode(&h.finalize())
}

/// Compute the statistics (all, or those named in `only`) whose query, views
/// or data changed since they were computed, and commit them together.
pub fn run(settings: &Settings, audit: &AuditLog, only: &[String], progress: bool) -> Result<Summary> {
    let dir = settings.paths.queries.join(DIR);
    let files = query_files::read_dir(&dir)?;
    for name in only {
        if !files.iter().any(|f| &f.name == name) {
            let known = files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(Error::Unknown { name: name.clone(), known, dir: dir.display().to_string() });
        }
    }
    let views = query_files::read_dir(&settings.paths.queries.join(sql::views::DIR))?;
    let mut wh = Warehouse::open_for_derived_write(&settings.paths.warehouse)?;
    let base = wh.manifest().clone();
    // The version of the newest data: statistics computed from it are current.
    // The data changes with each delivery, each removal of rows past their period, and each rotation of the key.
    let data_version = base
        .deliveries
        .iter()
        .map(|d| d.commit)
        .chain(base.expired.iter().map(|e| e.commit))
        .chain(base.rekeys.iter().map(|r| r.commit))
        .max()
        .unwrap_or(0);
    let session = Session::open_for(settings, audit.clone(), base.clone(), "ladu stats")?;
    let mut tx = wh.begin()?;
    let mut next = base.clone();
    next.committed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut statistics = Vec::new();
    let mut entries = Vec::new();
    for file in files.iter().filter(|f| only.is_empty() || only.contains(&f.name)) {
        let table = format!("{TABLE_PREFIX}{}", file.name);
        let inputs = inputs_sha256(file, &views);
        let current = base.tables.get(&table).and_then(|t| t.statistic.as_ref());
        if current.is_some_and(|s| s.inputs_sha256 == inputs && s.from_version == data_version) {
            statistics.push((table, Outcome::Unchanged));
            continue;
        }
        let spinner = crate::progress::spinner(progress, &format!("statistic {}", file.name));
        let result = session.collect(&file.sql);
        spinner.finish_and_clear();
        let (schema, batches) = match result {
            Ok(result) => result,
            Err(sql::Error::NoData { table: missing, .. }) => {
                tracing::warn!(statistic = %file.name, "skipped: table {missing} has no committed data yet");
                entries.push(serde_json::json!({ "table": table, "skipped": format!("no data in {missing}") }));
                statistics.push((table, Outcome::NoData { table: missing }));
                continue;
            }
            Err(source) => {
                wh.abort(tx)?;
                return Err(Error::Query { name: file.path.display().to_string(), source });
            }
        };
        let committed = tx.write_file(&format!("{FOLDER}/{}", file.name), schema, &batches)?;
        entries.push(serde_json::json!({ "table": table, "rows": committed.rows, "sha256": committed.sha256 }));
        statistics.push((table.clone(), Outcome::Computed { rows: committed.rows }));
        let statistic =
            Statistic { description: file.description.clone(), inputs_sha256: inputs, from_version: data_version };
        next.tables.insert(
            table,
            manifest::Table {
                partition_columns: Vec::new(),
                files: vec![committed],
                statistic: Some(statistic),
                versions: None,
            },
        );
    }
    if only.is_empty() {
        // A statistic whose query was removed goes with it.
        let defined: BTreeSet<String> = files.iter().map(|f| format!("{TABLE_PREFIX}{}", f.name)).collect();
        next.tables.retain(|name, t| t.statistic.is_none() || defined.contains(name));
    }
    if tx.mark() == 0 && next.tables == base.tables {
        wh.abort(tx)?;
        return Ok(Summary { statistics, commit: None });
    }
    let version = tx.version();
    wh.commit(tx, next)?;
    let mut fields = Map::new();
    fields.insert("commit".into(), Value::from(version));
    fields.insert("from_version".into(), Value::from(data_version));
    fields.insert("statistics".into(), Value::from(entries));
    audit.append(AUDIT_KIND, fields)?;
    Ok(Summary { statistics, commit: Some(version) })
}
