//! `ladu expire` and the expiry step of `ladu run`: rows past their source's retention period removed, audited before the commit.

use chrono::NaiveDate;
use serde_json::{Map, Value, json};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::warehouse::expire::{self, Expired, Plan};
use crate::warehouse::{self, Warehouse};

/// Audit entry kind of an expiry.
pub const AUDIT_KIND: &str = "expire";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Warehouse(#[from] warehouse::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    #[error("no source feeds a table `{table}` with a retention period; the tables with one are: {known}")]
    NoRetention { table: String, known: String },
}

/// What an expiry did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The manifest version committed; `None` when nothing was removed (or in a dry run).
    pub commit: Option<u64>,
    pub expired: Vec<Expired>,
    /// Tables whose source sets no retention: they keep everything.
    pub kept_forever: Vec<String>,
}

/// Remove, as of `today`, every row past its source's retention (of `table` only, when given) in one commit.
///
/// The audit entry is written after the removal is staged and before it is
/// committed, so no removal is ever unlogged; should the commit then fail,
/// the entry names a version the warehouse never reached.
pub fn run(
    settings: &Settings,
    audit: &AuditLog,
    table: Option<&str>,
    today: NaiveDate,
    dry_run: bool,
) -> Result<Outcome, Error> {
    audit.check_appendable()?;
    let mut outcome = Outcome::default();
    let mut plans = Vec::new();
    for s in &settings.sources {
        if table.is_some_and(|t| t != s.table) {
            continue;
        }
        match &s.retention {
            Some(r) => plans.push(Plan { table: s.table.clone(), column: r.column.clone(), cutoff: r.cutoff(today) }),
            None => outcome.kept_forever.push(s.table.clone()),
        }
    }
    if let Some(t) = table
        && plans.is_empty()
    {
        let known: Vec<&str> =
            settings.sources.iter().filter(|s| s.retention.is_some()).map(|s| s.table.as_str()).collect();
        return Err(Error::NoRetention {
            table: t.to_owned(),
            known: if known.is_empty() { "none".to_owned() } else { known.join(", ") },
        });
    }
    let mut wh = Warehouse::open_for_derived_write(&settings.paths.warehouse)?;
    // A table with nothing committed yet has nothing to expire.
    plans.retain(|p| wh.manifest().tables.contains_key(&p.table));
    if plans.is_empty() {
        return Ok(outcome);
    }
    let opts = expire::Options {
        plans,
        row_group_rows: settings.ingest.row_group_rows,
        zstd_level: settings.ingest.zstd_level,
    };
    let prepared = expire::prepare(&mut wh, &opts)?;
    outcome.expired = prepared.expired.clone();
    if dry_run || !prepared.removes_rows() {
        prepared.abort(&wh)?;
        return Ok(outcome);
    }
    let mut fields = Map::new();
    fields.insert("commit".into(), json!(prepared.version()));
    fields.insert("today".into(), json!(today.to_string()));
    fields.insert("tables".into(), json!(outcome.expired));
    fields.insert("rows".into(), Value::from(outcome.expired.iter().map(|e| e.rows).sum::<u64>()));
    audit.append(AUDIT_KIND, fields)?;
    outcome.commit = prepared.commit(&mut wh)?;
    Ok(outcome)
}
