//! `ladu rekey`: the key rotated by over-encryption: the warehouse and ladu's records of releases moved to a new key generation, audited, in one commit.
//!
//! The records of releases live beside the manifest, not in it: each is
//! written over-encrypted as `pseudonyms-<new fingerprint>.parquet` before
//! the commit (and its checksum audited), and the older one removed after
//! it. Readers take the newest record of a generation the manifest lists,
//! so a kill at any point leaves either the old generation whole or the new
//! one; the next writer removes what is left over
//! ([`crate::warehouse::files::tidy_release_records`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::audit::AuditLog;
use crate::config::{ColumnRule, Settings};
use crate::pseudonym::{self, Key, Keys, Pseudonymiser, RELEASE_KIND};
use crate::release::record;
use crate::warehouse::rekey::{self, Plan, Rekeyed};
use crate::warehouse::{self, Warehouse, files};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Warehouse(#[from] warehouse::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    #[error(transparent)]
    Record(#[from] record::RecordError),
    #[error(
        "the new key is already generation {n} of the key (fingerprint {fingerprint}): give a new key (`ladu keygen`)"
    )]
    SameKey { n: usize, fingerprint: String },
    #[error("the warehouse is empty: there is nothing to rekey; start it with the new key instead")]
    Empty,
    #[error("cannot rewrite the record of release {id} ({path}): {problem}")]
    Records { id: String, path: String, problem: String },
}

/// What a rekey did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub commit: u64,
    /// Every generation's fingerprint, the new one last.
    pub generations: Vec<String>,
    pub rekeyed: Vec<Rekeyed>,
    /// Statistics that held pseudonyms, to be computed again.
    pub dropped: Vec<String>,
    /// Records of releases over-encrypted: id → SHA-256.
    pub records: BTreeMap<String, String>,
}

/// Each source table's pseudonym columns and their kinds: `record_id` is its record key's.
fn plans(settings: &Settings) -> Vec<Plan> {
    settings
        .sources
        .iter()
        .map(|s| Plan {
            table: s.table.clone(),
            columns: s
                .columns
                .values()
                .filter_map(|r| match r {
                    ColumnRule::Pseudonymise { kind, name, .. } => Some((name.clone(), kind.clone())),
                    _ => None,
                })
                .collect(),
        })
        .collect()
}

/// Move the warehouse from `keys` (its generations, as configured) to the new generation `new`.
pub fn run(settings: &Settings, audit: &AuditLog, keys: &Keys, new: Key) -> Result<Outcome, Error> {
    audit.check_appendable()?;
    let root = &settings.paths.warehouse;
    let mut wh = Warehouse::open_for_write(root, &keys.fingerprints())?;
    if wh.manifest().generations().is_empty() {
        return Err(Error::Empty);
    }
    let fingerprint = pseudonym::fingerprint(&new);
    if let Some(n) = keys.fingerprints().iter().position(|f| *f == fingerprint) {
        return Err(Error::SameKey { n: n + 1, fingerprint });
    }
    let mut generations = keys.fingerprints();
    generations.push(fingerprint.clone());
    let opts = rekey::Options {
        plans: plans(settings),
        row_group_rows: settings.ingest.row_group_rows,
        zstd_level: settings.ingest.zstd_level,
    };
    let prepared = rekey::prepare(&mut wh, &new, &generations, &opts)?;
    let records = rekey_records(root, audit, &keys.fingerprints(), &new, &fingerprint)?;
    let commit = prepared.version();
    let mut fields = Map::new();
    fields.insert("commit".into(), json!(commit));
    fields.insert("previous".into(), json!(keys.fingerprints()));
    fields.insert("generation".into(), json!(fingerprint));
    fields.insert("tables".into(), json!(prepared.rekeyed));
    fields.insert("rows".into(), Value::from(prepared.rekeyed.iter().map(|r| r.rows).sum::<u64>()));
    fields.insert("statistics_dropped".into(), json!(prepared.dropped));
    fields.insert("records".into(), json!(records));
    audit.append(record::REKEY_KIND, fields)?;
    let (rekeyed, dropped) = (prepared.rekeyed.clone(), prepared.dropped.clone());
    prepared.commit(&mut wh)?;
    // Committed: the older records go now (or, should this fail, at the next writer's start).
    if let Err(e) = files::tidy_release_records(root, &generations) {
        tracing::warn!(error = %e, "older records of releases were not all removed; the next writer removes them");
    }
    Ok(Outcome { commit, generations, rekeyed, dropped, records })
}

/// Write each delivered release's record over-encrypted to the new generation, beside the old; returns their checksums.
fn rekey_records(
    root: &Path,
    audit: &AuditLog,
    generations: &[String],
    new: &Key,
    fingerprint: &str,
) -> Result<BTreeMap<String, String>, Error> {
    let step = Pseudonymiser::rekey(new, RELEASE_KIND);
    let rekeys = record::rekeys(audit)?;
    let mut done = BTreeMap::new();
    for entry in record::account(audit, None)? {
        let id = entry.get("release").and_then(Value::as_str).unwrap_or_default().to_owned();
        let checked = record::checked_pseudonyms(root, &entry, &rekeys, generations)?;
        let fail =
            |problem: String| Error::Records { id: id.clone(), path: checked.path.display().to_string(), problem };
        let mut values = record::read_pseudonyms(&checked.path).map_err(|e| fail(e.to_string()))?;
        for v in values.iter_mut() {
            let hex = crate::hex::encode(&v.to_be_bytes());
            *v = u128::from_be_bytes(step.digest(hex.as_bytes()));
        }
        values.sort_unstable();
        let target = record::rekeyed_file(root, &id, fingerprint);
        record::write_pseudonyms(&target, &values).map_err(|e| fail(e.to_string()))?;
        let (sha, _) = warehouse::writer::hash_file(&target).map_err(|e| fail(e.to_string()))?;
        if let Some(dir) = target.parent() {
            crate::durable::sync_dir(dir).map_err(|e| fail(e.to_string()))?;
        }
        done.insert(id, sha);
    }
    Ok(done)
}
