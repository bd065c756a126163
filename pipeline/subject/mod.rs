//! Subject access (GDPR art. 15, statute §16): everything the warehouse holds about one person, and the releases that held them.
//!
//! The personal code is checked and turned into the person's pseudonym at
//! once; from there on only the pseudonym is used, and only the pseudonym
//! is audited. Every table is searched in its current and historical form,
//! in the columns that hold personal-code pseudonyms (per the sources'
//! rules); statistics, and tables no source describes, in every text
//! column, so a statistic row is found only if it is about the person and
//! not an aggregate. Each delivered release is searched for the person's
//! release pseudonym for its recipient.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use serde_json::{Map, Value, json};

use crate::audit::AuditLog;
use crate::config::{ColumnRule, Settings};
use crate::durable::{Durable, Place};
use crate::pseudonym::isikukood;
use crate::pseudonym::{Keys, Pseudonymiser, RELEASE_KIND};
use crate::release::record;
use crate::sql::{self, Kind, Session};
use crate::warehouse::manifest;

/// Audit entry kind of a subject-access look-up.
pub const AUDIT_KIND: &str = "subject";
/// The identifier kind a person's code is pseudonymised as.
pub const PERSON_KIND: &str = "isikukood";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the personal code given is not a valid isikukood (11 digits, a real birth date and the right check digit); it is not repeated here"
    )]
    InvalidCode,
    #[error(
        "the key's fingerprint {given} differs from the warehouse's {expected}: the person's pseudonym would be wrong and nothing would be found; use the warehouse's key"
    )]
    WrongKey { expected: String, given: String },
    #[error(transparent)]
    Sql(#[from] sql::Error),
    #[error("a release cannot be searched for the person: {0}; restore `_ladu/releases/` from backup")]
    Record(#[from] record::RecordError),
    #[error("{path} already exists: give a new file to --out (an answer is never overwritten)")]
    OutExists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the rows found cannot be written out ({0}); nothing was answered")]
    Format(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One subject-access request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The personal code as given (it is normalised here).
    pub code: &'a str,
    pub request_id: Option<&'a str>,
    /// When the request was received, for the time it took to answer.
    pub received: Option<chrono::NaiveDate>,
    /// Where the JSON answer goes.
    pub out: Option<&'a Path>,
}

/// The rows of one table or statistic about the person.
#[derive(Debug)]
pub struct Rows {
    pub table: String,
    pub kind: Kind,
    pub description: String,
    /// The columns searched for the person's pseudonym.
    pub searched: Vec<String>,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Rows {
    pub fn count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Everything found about one person.
#[derive(Debug)]
pub struct Answer {
    pub pseudonym: String,
    pub warehouse_version: u64,
    pub request_id: Option<String>,
    pub received: Option<chrono::NaiveDate>,
    pub answered: chrono::DateTime<chrono::Utc>,
    /// Every table, history and statistic searched, with what it holds about the person.
    pub found: Vec<Rows>,
    /// Audit entries of the releases that held the person.
    pub releases: Vec<Value>,
    /// The readable summary of it all, for standard output.
    pub text: String,
}

/// Find everything held about the person whose code `request.code` gives, audit it, and write the JSON answer.
pub fn run(settings: &Settings, key: &Keys, audit: &AuditLog, request: &Request) -> Result<Answer> {
    let code = isikukood::normalise(request.code);
    if !isikukood::is_valid(code) {
        return Err(Error::InvalidCode);
    }
    if let Some(out) = request.out
        && out.exists()
    {
        return Err(Error::OutExists { path: out.to_owned() });
    }
    let pseudonym = Pseudonymiser::chained(key, PERSON_KIND).pseudonym(code.as_bytes()).as_str().to_owned();
    let manifest = manifest::load_latest(&settings.paths.warehouse).map_err(sql::Error::from)?;
    let (expected, given) = (manifest.generations(), key.fingerprints());
    if !expected.is_empty() && expected != given {
        return Err(Error::WrongKey { expected: expected.join(" → "), given: given.join(" → ") });
    }
    let version = manifest.version;
    let session = Session::open_for(settings, audit.clone(), manifest, "ladu subject")?;
    let mut found = Vec::new();
    let catalog: Vec<(String, Kind, String)> =
        session.catalog().map(|(n, k, d)| (n.to_owned(), k, d.to_owned())).collect();
    for (name, kind, description) in catalog {
        let Some(schema) = session.columns(&name) else { continue };
        let searched = match kind {
            // A view shows what its tables hold.
            Kind::View => continue,
            Kind::Table | Kind::History => person_columns(settings, &name, &schema),
            Kind::Statistic => text_columns(&schema),
        };
        if searched.is_empty() {
            continue;
        }
        let condition: Vec<String> = searched.iter().map(|c| format!("{} = '{pseudonym}'", quoted(c))).collect();
        let statement = format!("select * from {} where {}", quoted(&name), condition.join(" or "));
        let (schema, batches) = session.collect(&statement)?;
        found.push(Rows { table: name, kind, description, searched, schema, batches });
    }
    let releases = releases_holding(settings, key, audit, code)?;
    let mut answer = Answer {
        pseudonym,
        warehouse_version: version,
        request_id: request.request_id.map(|r| isikukood::redact(r).into_owned()),
        received: request.received,
        answered: chrono::Utc::now(),
        found,
        releases,
        text: String::new(),
    };
    // Both forms are made before anything is written or audited: an answer
    // is never given without its rows.
    let format = |e: ArrowError| Error::Format(e.to_string());
    let json = answer.to_json().map_err(format)?;
    answer.text = answer.summary().map_err(format)?;
    if let Some(out) = request.out {
        write_new(out, &serde_json::to_vec_pretty(&json).expect("JSON values serialise"))?;
    }
    let mut fields = Map::new();
    fields.insert("pseudonym".into(), Value::from(answer.pseudonym.clone()));
    fields.insert("request_id".into(), answer.request_id.clone().into());
    fields.insert("received".into(), answer.received.map(|d| d.to_string()).into());
    fields.insert("warehouse_version".into(), Value::from(version));
    let rows: Map<String, Value> = answer.found.iter().map(|r| (r.table.clone(), Value::from(r.count()))).collect();
    fields.insert("rows".into(), Value::from(rows));
    let ids: Vec<Value> = answer.releases.iter().filter_map(|e| e.get("release").cloned()).collect();
    fields.insert("releases".into(), Value::from(ids));
    fields.insert(
        "out".into(),
        request.out.map(|p| Value::from(isikukood::redact(&p.display().to_string()).into_owned())).into(),
    );
    audit.append(AUDIT_KIND, fields)?;
    Ok(answer)
}

/// `"name"`, for SQL.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Columns of table `name` (or its `_history`) that hold personal-code pseudonyms;
/// every text column of a table no source describes.
fn person_columns(settings: &Settings, name: &str, schema: &SchemaRef) -> Vec<String> {
    let base = name.strip_suffix(sql::tables::HISTORY_SUFFIX).unwrap_or(name);
    let Some(source) = settings.sources.iter().find(|s| s.table == base) else { return text_columns(schema) };
    source
        .columns
        .values()
        .filter_map(|rule| match rule {
            ColumnRule::Pseudonymise { kind, name, .. } if kind == PERSON_KIND => Some(name.clone()),
            _ => None,
        })
        .filter(|c| schema.index_of(c).is_ok())
        .collect()
}

fn text_columns(schema: &SchemaRef) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
        .map(|f| f.name().clone())
        .collect()
}

/// The delivered releases whose record holds the person's release pseudonym for their recipient.
///
/// A release made under key generation `g` holds `R(r, P_g)` made with `K_g`;
/// each later rekey over-encrypted ladu's record of it, so the person's
/// pseudonym is taken through the same steps before it is looked up.
fn releases_holding(settings: &Settings, key: &Keys, audit: &AuditLog, code: &str) -> Result<Vec<Value>> {
    let mut holding = Vec::new();
    let rekeys = record::rekeys(audit)?;
    let generations = key.fingerprints();
    for entry in record::account(audit, None)? {
        let recipient = entry.get("recipient").and_then(Value::as_str).unwrap_or_default();
        let id = entry.get("release").and_then(Value::as_str).unwrap_or_default().to_owned();
        let checked = record::checked_pseudonyms(&settings.paths.warehouse, &entry, &rekeys, &generations)?;
        let path = checked.path;
        let keys = key.all();
        let then = Pseudonymiser::generations(&keys[..=checked.made], PERSON_KIND).pseudonym(code.as_bytes());
        let mut theirs = Pseudonymiser::for_release(&keys[checked.made], recipient).pseudonym(then.as_str().as_bytes());
        if let Some(steps) = Pseudonymiser::rekey_chain(&keys[checked.made + 1..=checked.now], RELEASE_KIND) {
            theirs = steps.pseudonym(theirs.as_str().as_bytes());
        }
        let holds = record::holds(&path, theirs.as_str()).map_err(|source| record::RecordError::Unsearchable {
            path: path.clone(),
            id: id.clone(),
            source,
        })?;
        if holds {
            holding.push(entry);
        }
    }
    Ok(holding)
}

/// Write `bytes` to a new file readable by its owner only; an answer is never overwritten.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    match Durable::new(Place::New).private().bytes(path, bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::OutExists { path: path.to_owned() }),
        Err(source) => Err(Error::Write { path: path.to_owned(), source }),
    }
}

/// Rows as JSON objects, nulls written out.
fn rows_json(batches: &[RecordBatch]) -> Result<Vec<Value>, ArrowError> {
    let mut buf = Vec::new();
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(&mut buf);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs)?;
    writer.finish()?;
    match serde_json::from_slice(&buf) {
        Ok(Value::Array(rows)) => Ok(rows),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(ArrowError::JsonError(e.to_string())),
    }
}

impl Answer {
    /// The whole answer as one JSON document.
    pub fn to_json(&self) -> Result<Value, ArrowError> {
        let found: Vec<Value> = self
            .found
            .iter()
            .map(|r| {
                Ok(json!({
                    "table": r.table,
                    "kind": r.kind.as_str(),
                    "description": r.description,
                    "searched_columns": r.searched,
                    "rows": rows_json(&r.batches)?,
                }))
            })
            .collect::<Result<_, ArrowError>>()?;
        let releases: Vec<Value> = self.releases.iter().map(release_summary).collect();
        Ok(json!({
            "pseudonym": self.pseudonym,
            "request_id": self.request_id,
            "received": self.received.map(|d| d.to_string()),
            "answered": self.answered.to_rfc3339(),
            "warehouse_version": self.warehouse_version,
            "data": found,
            "releases": releases,
        }))
    }

    /// A readable summary: what is held, table by table, and who received it.
    fn summary(&self) -> Result<String, ArrowError> {
        let mut s = format!(
            "Data held about the person with pseudonym {} (warehouse version {}, {})\n",
            self.pseudonym,
            self.warehouse_version,
            self.answered.format("%Y-%m-%d %H:%M UTC")
        );
        let with_rows: Vec<&Rows> = self.found.iter().filter(|r| r.count() > 0).collect();
        if with_rows.is_empty() {
            s.push_str("\nThe warehouse holds no row about this person.\n");
        }
        for r in &with_rows {
            s.push_str(&format!("\n## {} ({}): {} row(s)\n{}\n", r.table, r.kind.as_str(), r.count(), r.description));
            let table = arrow::util::pretty::pretty_format_batches_with_schema(r.schema.clone(), &r.batches)?;
            s.push_str(&format!("{table}\n"));
        }
        let empty: Vec<&str> = self.found.iter().filter(|r| r.count() == 0).map(|r| r.table.as_str()).collect();
        if !empty.is_empty() {
            s.push_str(&format!("\nSearched, nothing about this person: {}\n", empty.join(", ")));
        }
        if self.releases.is_empty() {
            s.push_str("\nNo release to a recipient has contained this person's data.\n");
        } else {
            s.push_str("\nReleases that contained this person's data:\n");
            for e in &self.releases {
                let v = release_summary(e);
                s.push_str(&format!(
                    "  {}  {}  to {} ({}), request {}\n",
                    v["time"].as_str().unwrap_or_default(),
                    v["release"].as_str().unwrap_or_default(),
                    v["recipient_name"].as_str().unwrap_or_default(),
                    v["recipient"].as_str().unwrap_or_default(),
                    v["request_id"].as_str().unwrap_or("-"),
                ));
            }
        }
        Ok(s)
    }
}

/// What an answer says about one release.
fn release_summary(entry: &Value) -> Value {
    let field = |k: &str| entry.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "release": field("release"),
        "time": field("time"),
        "recipient": field("recipient"),
        "recipient_name": field("recipient_name"),
        "basis": field("basis"),
        "request_id": field("request_id"),
        "columns": entry.get("columns").and_then(Value::as_array).map(|c| c.iter().filter_map(|c| c.get("name").cloned()).collect::<Vec<_>>()),
    })
}
