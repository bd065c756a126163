//! `ladu compact` and the compaction step of `ladu run`: compaction of the warehouse's partitions, audited.

use serde_json::{Map, Value, json};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::warehouse::compact::{self, Outcome};
use crate::warehouse::{self, Warehouse};

/// Audit entry kind of a compaction.
pub const AUDIT_KIND: &str = "compact";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Warehouse(#[from] warehouse::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

/// Compact every partition (of `table`, or of all tables) holding more than `max_files` files, in one audited commit.
pub fn run(settings: &Settings, audit: &AuditLog, table: Option<&str>, max_files: usize) -> Result<Outcome, Error> {
    // Nothing is done that cannot be logged.
    audit.check_appendable()?;
    let mut wh = Warehouse::open_for_derived_write(&settings.paths.warehouse)?;
    let opts = compact::Options {
        table: table.map(str::to_owned),
        max_files,
        row_group_rows: settings.ingest.row_group_rows,
        zstd_level: settings.ingest.zstd_level,
    };
    let prepared = compact::prepare(&mut wh, &opts)?;
    // Audited before the commit, so that no compaction is ever unlogged.
    if let Some(commit) = prepared.outcome.commit {
        let outcome = &prepared.outcome;
        let mut fields = Map::new();
        fields.insert("commit".into(), json!(commit));
        fields.insert("compacted".into(), json!(outcome.compacted));
        fields.insert("rows".into(), Value::from(outcome.compacted.iter().map(|c| c.rows).sum::<u64>()));
        audit.append(AUDIT_KIND, fields)?;
    }
    Ok(prepared.commit(&mut wh)?)
}
