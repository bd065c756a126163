//! `ladu report processing`: what a supervisory authority asks, answered from the live config, data and audit log, as Markdown.
//!
//! Every figure is read when the report is made: the sources' rules from
//! their config files, counts and date ranges through SQL (audited like any
//! query), roles from the roles file, and releases and subject-access
//! requests from the audit log, whose chain is verified first.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use serde_json::Value;

use crate::audit::AuditLog;
use crate::config::source::output_name;
use crate::config::{ColumnRule, Generalisation, Settings, SourceConfig};
use crate::release::record;
use crate::sql::roles::{Roles, RowFilter};
use crate::sql::{self, Session};
use crate::warehouse::manifest::{self, Manifest};

/// The audit log's kinds, as the report names them.
const KINDS: [(&str, &str); 16] = [
    ("ingest", "deliveries ingested"),
    ("expire", "removals of rows past their retention period"),
    ("retention", "removals of processed deliveries and reports past their period"),
    ("compact", "compactions (files rewritten, every row kept)"),
    ("key", "key backups split into shares, and keys rebuilt from them"),
    ("sql", "SQL statements"),
    ("stats", "statistics runs"),
    ("publish", "open-data publications"),
    ("run", "nightly runs"),
    ("release", "releases to recipients (and refusals)"),
    ("subject", "subject-access look-ups"),
    ("report", "processing reports"),
    ("serve", "starts and stops of `ladu serve`"),
    ("login", "logins over the network (and refusals)"),
    ("disconnect", "network sessions ended"),
    ("user", "changes to the users of `ladu serve`"),
];
/// Audit entry kind of a report.
pub const AUDIT_KIND: &str = "report";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sql(#[from] sql::Error),
    #[error(transparent)]
    Roles(#[from] sql::roles::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    #[error(transparent)]
    Users(#[from] crate::serve::users::Error),
    #[error("the period is empty: --from {from} is after --to {to}")]
    Period { from: NaiveDate, to: NaiveDate },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The processing report for the period `from`..=`to`, as Markdown.
pub fn processing(settings: &Settings, audit: &AuditLog, from: NaiveDate, to: NaiveDate) -> Result<String> {
    if from > to {
        return Err(Error::Period { from, to });
    }
    let manifest = manifest::load_latest(&settings.paths.warehouse).map_err(sql::Error::from)?;
    let chain = crate::audit::verify(audit);
    // A log that cannot be read whole fails the report: never zero releases for want of reading them.
    let entries = audit.select(&crate::audit::Filter { from: Some(from), to: Some(to), ..Default::default() })?;
    let in_period: Vec<&Value> = entries.iter().collect();
    let mut md = String::new();
    let now = chrono::Utc::now();
    let _ = writeln!(md, "# Processing report of the health-data warehouse (ladu)\n");
    let _ = writeln!(
        md,
        "Made {} by `{}` from the configuration `{}`, warehouse version {}. Period: {from} to {to}.\n",
        now.format("%Y-%m-%d %H:%M UTC"),
        crate::audit::os_user(),
        settings.file.display(),
        manifest.version
    );
    stored(&mut md, settings, audit, &manifest, &in_period)?;
    retention(&mut md, settings);
    access(&mut md, settings, &manifest)?;
    logins(&mut md, settings, &in_period)?;
    logging(&mut md, audit, &chain, &in_period);
    releases(&mut md, &in_period);
    subject_requests(&mut md, &in_period);
    let mut fields = serde_json::Map::new();
    fields.insert("report".into(), Value::from("processing"));
    fields.insert("from".into(), Value::from(from.to_string()));
    fields.insert("to".into(), Value::from(to.to_string()));
    fields.insert("warehouse_version".into(), Value::from(manifest.version));
    audit.append(AUDIT_KIND, fields)?;
    Ok(md)
}

/// What a column rule did to its delivered column.
fn rule_text(rule: &ColumnRule) -> String {
    match rule {
        ColumnRule::Keep { ty, .. } => format!("kept, checked as {}", format!("{ty:?}").to_lowercase()),
        ColumnRule::Drop { why } => match why {
            Some(why) => format!("dropped ({why})"),
            None => "dropped".to_owned(),
        },
        ColumnRule::Pseudonymise { kind, .. } => format!("replaced by its keyed pseudonym (kind `{kind}`)"),
        ColumnRule::Generalise { to, .. } => format!(
            "generalised to {}",
            match to {
                Generalisation::Year => "the year",
                Generalisation::YearMonth => "the year and month",
                Generalisation::AgeBand => "a five-year age band",
                Generalisation::County => "the county",
                Generalisation::CountyFromAddress => "the county named in the address",
            }
        ),
    }
}

/// One number or text of a one-row query result.
fn cell(batches: &[arrow::array::RecordBatch], column: usize) -> String {
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else { return "-".into() };
    let c = b.column(column);
    if c.is_null(0) {
        return "-".into();
    }
    arrow::compute::cast(c, &DataType::Utf8)
        .map(|s| s.as_string::<i32>().value(0).to_owned())
        .unwrap_or_else(|_| "-".into())
}

fn stored(
    md: &mut String,
    settings: &Settings,
    audit: &AuditLog,
    manifest: &Manifest,
    in_period: &[&Value],
) -> Result<()> {
    let files: Vec<_> = manifest.tables.values().flat_map(|t| &t.files).collect();
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let _ = writeln!(md, "## 1. What is stored\n");
    let _ = writeln!(
        md,
        "The warehouse `{}` holds {} table(s) in {} Parquet file(s), {:.1} MiB. No column reaches it as delivered unless its rule keeps it: personal codes and record numbers arrive only as keyed pseudonyms, birth dates and ages only generalised, addresses only as the county, and names, phone numbers, IBANs and free text never. Pseudonyms are made with the key {}; {}, never in the configuration or any output.\n",
        settings.paths.warehouse.display(),
        manifest.tables.len(),
        files.len(),
        bytes as f64 / (1 << 20) as f64,
        match manifest.generations().as_slice() {
            [] => "(none yet)".to_owned(),
            [one] => format!("whose fingerprint is `{one}`"),
            more => format!(
                "whose generations' fingerprints are `{}` (rotated {} time(s) by over-encryption with `ladu rekey`: every pseudonym held is of the newest)",
                more.join(" → "),
                more.len() - 1
            ),
        },
        match &settings.key {
            None => format!("the key is kept in the file `{}` (mode 0600)", settings.key_file.display()),
            Some(k) => format!(
                "the key is kept encrypted (AES-256-GCM) in `{}` under the key `{}` of the PKCS#11 token `{}`, which never leaves the token; the token decrypts it into memory when a command starts, and it is never written in the clear",
                k.wrapped_key_file.display(),
                k.wrapping_key,
                k.token
            ),
        },
    );
    let session = Session::open_for(settings, audit.clone(), manifest.clone(), "ladu report")?;
    let readable: BTreeMap<String, sql::Kind> = session.catalog().map(|(n, k, _)| (n.to_owned(), k)).collect();
    for source in &settings.sources {
        table_section(md, &session, &readable, source, manifest, in_period)?;
    }
    let stats: Vec<_> = manifest.tables.iter().filter_map(|(n, t)| t.statistic.as_ref().map(|s| (n, t, s))).collect();
    if !stats.is_empty() {
        let _ = writeln!(md, "### Statistics (aggregates computed by `ladu stats`)\n");
        let _ = writeln!(md, "| table | what it answers | rows | from warehouse version |\n|---|---|---|---|");
        for (name, table, s) in stats {
            let rows: u64 = table.files.iter().map(|f| f.rows).sum();
            let _ = writeln!(md, "| `{name}` | {} | {rows} | {} |", s.description, s.from_version);
        }
        let _ = writeln!(md);
    }
    let latest = std::fs::read_link(settings.paths.site.join(crate::publish::site::LATEST)).ok();
    let _ = writeln!(
        md,
        "### Open data\n\nPublished to `{}`; latest release: {}. A cell counting fewer than {} persons is suppressed, with enough other cells that no suppressed value can be derived from the totals.\n",
        settings.paths.site.display(),
        latest.map_or_else(|| "none yet".to_owned(), |p| format!("`{}`", p.display())),
        settings.publish.threshold
    );
    Ok(())
}

fn table_section(
    md: &mut String,
    session: &Session,
    readable: &BTreeMap<String, sql::Kind>,
    source: &SourceConfig,
    manifest: &Manifest,
    in_period: &[&Value],
) -> Result<()> {
    let t = &source.table;
    let _ = writeln!(md, "### Table `{t}` (source `{}`)\n\n{}.\n", source.name, source.description);
    let deliveries: Vec<_> = manifest.deliveries.iter().filter(|d| d.source == source.name).collect();
    let extract_dates: Vec<&str> = deliveries.iter().map(|d| d.extract_date.as_str()).collect();
    let _ = writeln!(
        md,
        "- Deliveries: files `{}` in the source's inbox folder; {} ingested, extract dates {} to {}; {} rows committed, {} rejected and reported to the provider.",
        source.file_pattern,
        deliveries.len(),
        extract_dates.iter().min().unwrap_or(&"-"),
        extract_dates.iter().max().unwrap_or(&"-"),
        deliveries.iter().map(|d| d.rows_committed).sum::<u64>(),
        deliveries.iter().map(|d| d.rows_rejected).sum::<u64>(),
    );
    if readable.contains_key(t.as_str()) {
        let history = format!("{t}{}", sql::tables::HISTORY_SUFFIX);
        let dated = source
            .partition_by
            .as_ref()
            .and_then(|p| source.columns.get(&p.column).and_then(|r| output_name(&p.column, r)).map(str::to_owned));
        let range = dated.as_ref().map(|c| format!(", min(\"{c}\"), max(\"{c}\")")).unwrap_or_default();
        let (_, current) = session.collect(&format!("select count(*){range} from \"{t}\""))?;
        let (_, all) = session.collect(&format!("select count(*) from \"{history}\""))?;
        let _ = write!(
            md,
            "- Rows: {} current records, {} versions in all (`{history}` keeps the superseded ones)",
            cell(&current, 0),
            cell(&all, 0)
        );
        match &dated {
            Some(c) => {
                let _ = writeln!(md, "; `{c}` from {} to {}.", cell(&current, 1), cell(&current, 2));
            }
            None => {
                let _ = writeln!(md, ".");
            }
        }
    } else {
        let _ = writeln!(md, "- Rows: none committed yet.");
    }
    retention_line(md, session, readable, source, in_period)?;
    let _ = writeln!(md, "\n| delivered column | rule | warehouse column |\n|---|---|---|");
    for (column, rule) in &source.columns {
        let out = output_name(column, rule).map_or_else(|| "—".to_owned(), |n| format!("`{n}`"));
        let _ = writeln!(md, "| `{column}` | {} | {out} |", rule_text(rule));
    }
    let _ = writeln!(md);
    Ok(())
}

/// A table's retention: its period and basis, the oldest and newest data held, and what the period's expiries removed.
fn retention_line(
    md: &mut String,
    session: &Session,
    readable: &BTreeMap<String, sql::Kind>,
    source: &SourceConfig,
    in_period: &[&Value],
) -> Result<()> {
    let t = &source.table;
    let Some(r) = &source.retention else {
        let _ = writeln!(
            md,
            "- Retention: no retention period: keeps every row (set `retention` in `{}` to limit it).",
            source.file.display()
        );
        return Ok(());
    };
    let _ = write!(
        md,
        "- Retention: rows kept {} by `{}`, counted from the day `ladu expire` (a step of the nightly run) runs; older rows, every version, are removed",
        r.period(),
        r.column
    );
    if readable.contains_key(t.as_str()) {
        let history = format!("{t}{}", sql::tables::HISTORY_SUFFIX);
        let c = &r.column;
        let (_, range) = session.collect(&format!("select min(\"{c}\"), max(\"{c}\") from \"{history}\""))?;
        let _ = write!(md, "; `{c}` held from {} to {}", cell(&range, 0), cell(&range, 1));
    }
    let (mut rows, mut commits) = (0, 0);
    for e in in_period.iter().filter(|e| e.get("kind").and_then(Value::as_str) == Some(crate::run::expire::AUDIT_KIND))
    {
        for x in e.get("tables").and_then(Value::as_array).into_iter().flatten() {
            if x.get("table").and_then(Value::as_str) == Some(t.as_str()) {
                rows += x.get("rows").and_then(Value::as_u64).unwrap_or(0);
                commits += 1;
            }
        }
    }
    let _ = writeln!(md, "; in the period, {rows} rows past their period removed in {commits} expiries.");
    Ok(())
}

fn retention(md: &mut String, settings: &Settings) {
    let p = &settings.paths;
    let _ = writeln!(md, "## 2. Retention\n");
    let limited: Vec<String> = settings
        .sources
        .iter()
        .filter_map(|s| s.retention.as_ref().map(|r| format!("`{}` {} by `{}`", s.table, r.period(), r.column)))
        .collect();
    let _ = writeln!(
        md,
        "- Warehouse tables (`{}`): {}. Every other table keeps every row. A corrected record's earlier versions stay queryable as history until their own date passes the period.",
        p.warehouse.display(),
        if limited.is_empty() {
            "no source sets a retention period".to_owned()
        } else {
            format!(
                "rows older than their source's period are removed by `ladu expire`, a step of the nightly run: {}",
                limited.join(", ")
            )
        }
    );
    let _ = writeln!(
        md,
        "- Deliveries (they hold personal codes): {}. A delivery that was refused stays in the inbox `{}` for the provider to correct.",
        match &p.processed {
            Some(dir) => format!(
                "moved after their commit to `{}`, and removed there {} days after the move (`paths.processed_retention_days`)",
                dir.display(),
                p.processed_retention_days
            ),
            None =>
                format!("left in the inbox `{}` after their commit (`paths.processed` is not set)", p.inbox.display()),
        },
        p.inbox.display()
    );
    let _ = writeln!(
        md,
        "- Rejection reports for providers (`{}`): removed after {} days (`paths.outbox_retention_days`); they hold no values, only file, line, column and reason. Run reports: removed after {} days (`paths.run_reports_retention_days`). Each removal is audited with the file's name, SHA-256 and age.",
        p.outbox.display(),
        p.outbox_retention_days,
        p.run_reports_retention_days
    );
    let _ = writeln!(
        md,
        "- Audit log (`{}`): never rotated or shortened by ladu; the statute (§8(3)) requires 30 years.",
        p.audit.display()
    );
    let _ = writeln!(
        md,
        "- Open data releases (`{}`): {}.",
        p.site.display(),
        match settings.publish.keep_releases {
            0 => "every release is kept".to_owned(),
            n => format!("the newest {n} are kept (`publish.keep_releases`)"),
        }
    );
    let _ = writeln!(
        md,
        "- Records of releases to recipients (`{}`): kept, like the audit log, to answer subject-access requests.\n",
        record::dir(&p.warehouse).display()
    );
}

fn access(md: &mut String, settings: &Settings, manifest: &Manifest) -> Result<()> {
    let mut tables: Vec<String> = settings.sources.iter().map(|s| s.table.clone()).collect();
    tables.extend(manifest.tables.keys().cloned());
    tables.sort();
    tables.dedup();
    let roles = Roles::load(&settings.sql.roles_file, &tables)?;
    let _ = writeln!(md, "## 3. Who has access, and how they log in\n");
    let _ = writeln!(
        md,
        "On the host, a person uses ladu under their own operating-system account, and who may run it and read the warehouse files is set by the file system's permissions on `{}` (the nightly service runs as its own user). Every audit entry names the operating-system account by its user id, not by the `USER` variable, which anyone can set. A SQL session runs as one role of `{}` (`--role`; default `{}`), enforced beneath every query: a role sees only its tables, never its hidden columns, and only the rows its filter lets through.\n",
        settings.paths.warehouse.display(),
        settings.sql.roles_file.display(),
        roles.default_role
    );
    let _ = writeln!(md, "| role | what for | tables | hidden columns | rows |\n|---|---|---|---|---|");
    for role in roles.named_roles() {
        let (tables, hidden) = role.scope();
        let rows = match &role.filter {
            RowFilter::None => "all".to_owned(),
            RowFilter::Conditions(c) => c.iter().map(|(t, f)| format!("`{t}`: `{f}`")).collect::<Vec<_>>().join("; "),
            RowFilter::Provider { .. } => "its own".to_owned(),
        };
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ")
            }
        };
        let _ =
            writeln!(md, "| `{}` | {} | {} | {} | {rows} |", role.name, role.description, list(tables), list(hidden));
    }
    if let Ok(provider) = roles.role(Some("provider:00000000")) {
        let RowFilter::Provider { code_columns, grant, .. } = &provider.filter else { return Ok(()) };
        let _ = writeln!(
            md,
            "\nProvider roles `provider:<register code>` ({}): only rows whose {} holds the provider's own code; tables without such a column: {}.",
            provider.description,
            code_columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" or "),
            if grant.is_empty() { "none".to_owned() } else { grant.join(", ") }
        );
    }
    let _ = writeln!(md);
    Ok(())
}

/// q6 and q9 for `ladu serve`: the users file's login methods and users per
/// role, and the logins of the period from the audit log.
fn logins(md: &mut String, settings: &Settings, in_period: &[&Value]) -> Result<()> {
    let users = crate::serve::users::Users::load(&settings.serve.users_file)?;
    let _ = writeln!(
        md,
        "### Logins over the network (`ladu serve`)
"
    );
    if users.users.is_empty() {
        let _ = writeln!(
            md,
            "No users in `{}`: no one logs in over the network.
",
            settings.serve.users_file.display()
        );
    } else {
        let _ = writeln!(
            md,
            "Users of `{}` log in with a personal login, SCRAM-SHA-256 password (only its verifier is kept) or a client certificate issued by the configured CA{}; cleartext and MD5 passwords are not offered. Each connection is a session of the user's role, as above.\n",
            settings.serve.users_file.display(),
            if settings.serve.tls.is_some() { ", over TLS only" } else { " (TLS is not configured: loopback only)" }
        );
        let mut per_role: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for u in users.users.values() {
            let counts = per_role.entry(u.role.as_str()).or_default();
            counts.0 += 1;
            counts.1 += u64::from(u.password.is_some());
            counts.2 += u64::from(u.certificate.is_some());
        }
        let _ = writeln!(md, "| role | users | with a password | with a certificate |\n|---|---|---|---|");
        for (role, (n, password, certificate)) in per_role {
            let _ = writeln!(md, "| `{role}` | {n} | {password} | {certificate} |");
        }
        let _ = writeln!(md);
    }
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for e in in_period.iter().filter(|e| e.get("kind").and_then(Value::as_str) == Some(crate::serve::AUDIT_LOGIN)) {
        let outcome = e.get("outcome").and_then(Value::as_str).unwrap_or("?");
        let method = e.get("method").and_then(Value::as_str).unwrap_or("-");
        *outcomes.entry(format!("{outcome} | {method}")).or_default() += 1;
    }
    let _ = writeln!(md, "| logins in the period: outcome | method | count |\n|---|---|---|");
    for (what, n) in &outcomes {
        let _ = writeln!(md, "| {what} | {n} |");
    }
    if outcomes.is_empty() {
        let _ = writeln!(md, "| none | | 0 |");
    }
    let _ = writeln!(md);
    Ok(())
}

fn logging(
    md: &mut String,
    audit: &AuditLog,
    chain: &crate::audit::Result<crate::audit::Verified>,
    in_period: &[&Value],
) {
    let _ = writeln!(md, "## 4. Is use logged\n");
    let _ = writeln!(
        md,
        "Yes. Every ingest, SQL statement, statistics run, publication, nightly run, release, subject-access look-up and report appends an entry to `{}`: time, operating-system user, and what was done. Each entry carries the SHA-256 of the one before, so an edited, removed, reordered or inserted entry is detected by `ladu audit verify`. {}\n",
        audit.path().display(),
        match chain {
            Ok(v) => format!("Verified now: the chain of {} entries is intact.", v.entries),
            Err(e) => format!("**Verified now: the chain is damaged: {e}**"),
        }
    );
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    // A statement that ran has two entries, when it started and how it ended; it counts once.
    let started = |e: &Value| e.get("outcome").and_then(Value::as_str) == Some("started");
    let ended: std::collections::HashSet<u64> =
        in_period.iter().filter_map(|e| e.get("started_seq").and_then(Value::as_u64)).collect();
    let mut unfinished = 0;
    for e in in_period {
        let kind = e.get("kind").and_then(Value::as_str).unwrap_or("?");
        if kind == sql::AUDIT_KIND && started(e) {
            if !e.get("seq").and_then(Value::as_u64).is_some_and(|s| ended.contains(&s)) {
                unfinished += 1;
            }
            continue;
        }
        *counts.entry(kind).or_default() += 1;
    }
    let _ = writeln!(md, "| entries in the period | count |\n|---|---|");
    for (kind, what) in KINDS {
        let _ = writeln!(md, "| {what} (`{kind}`) | {} |", counts.get(kind).copied().unwrap_or(0));
    }
    let _ = writeln!(md, "| SQL statements started and never ended (the process was killed) | {unfinished} |");
    let _ = writeln!(md);
}

fn releases(md: &mut String, in_period: &[&Value]) {
    let of_kind = |outcome: &str| -> Vec<&&Value> {
        in_period
            .iter()
            .filter(|e| {
                e.get("kind").and_then(Value::as_str) == Some(record::AUDIT_KIND)
                    && e.get("outcome").and_then(Value::as_str) == Some(outcome)
            })
            .collect()
    };
    let released = of_kind(record::RELEASED);
    let refused = of_kind("refused");
    let _ = writeln!(md, "## 5. Releases to recipients in the period\n");
    let _ = writeln!(
        md,
        "{} release(s); {} refused for re-identification risk. Each recipient receives its own release pseudonyms, which cannot be linked to another recipient's.\n",
        released.len(),
        refused.len()
    );
    if !released.is_empty() {
        let _ = writeln!(
            md,
            "| time | release | recipient | basis | request | rows | columns | risk accepted |\n|---|---|---|---|---|---|---|---|"
        );
        for e in released {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
            let columns: Vec<&str> = e
                .get("columns")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect())
                .unwrap_or_default();
            let accepted = e.pointer("/risk/accepted").and_then(Value::as_str).unwrap_or("-");
            let _ = writeln!(
                md,
                "| {} | {} | {} ({}) | {} | {} | {} | {} | {accepted} |",
                s("time"),
                s("release"),
                s("recipient_name"),
                s("recipient"),
                s("basis"),
                s("request_id"),
                e.get("rows").and_then(Value::as_u64).unwrap_or(0),
                columns.join(", ")
            );
        }
        let _ = writeln!(md);
    }
}

fn subject_requests(md: &mut String, in_period: &[&Value]) {
    let answered: Vec<&&Value> = in_period
        .iter()
        .filter(|e| e.get("kind").and_then(Value::as_str) == Some(crate::subject::AUDIT_KIND))
        .collect();
    let _ = writeln!(md, "## 6. Subject-access requests (GDPR art. 15) in the period\n");
    let mut days: Vec<i64> = Vec::new();
    let mut rows = String::new();
    for e in &answered {
        let time = e.get("time").and_then(Value::as_str).unwrap_or_default();
        let answered_on = time.get(..10).and_then(|d| d.parse::<NaiveDate>().ok());
        let received = e.get("received").and_then(Value::as_str).and_then(|d| d.parse::<NaiveDate>().ok());
        let took = match (received, answered_on) {
            (Some(r), Some(a)) => {
                let d = (a - r).num_days();
                days.push(d);
                d.to_string()
            }
            _ => "-".into(),
        };
        let found: u64 =
            e.get("rows").and_then(Value::as_object).map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
        let _ = writeln!(
            rows,
            "| {time} | {} | {} | {took} | {found} | {} |",
            e.get("request_id").and_then(Value::as_str).unwrap_or("-"),
            received.map_or_else(|| "-".to_owned(), |d| d.to_string()),
            e.get("releases").and_then(Value::as_array).map_or(0, Vec::len),
        );
    }
    days.sort_unstable();
    let _ = writeln!(
        md,
        "{} request(s) answered with `ladu subject`, which exports every row held about the person (current and earlier versions, and any statistic row that is not an aggregate) and the releases that contained them. {}\n",
        answered.len(),
        match (days.first(), days.last()) {
            (Some(_), Some(max)) => format!(
                "Days from receipt to answer, for the {} with a receipt date: median {}, longest {max}.",
                days.len(),
                days[days.len() / 2]
            ),
            _ => "No answered request has a receipt date (`--received`), so response times cannot be given.".to_owned(),
        }
    );
    if !answered.is_empty() {
        let _ = writeln!(
            md,
            "| answered | request | received | days | rows found | releases |\n|---|---|---|---|---|---|\n{rows}"
        );
    }
}
