//! Open data: run the datasets of `queries/open_data/`, suppress what could single out a person, publish a release.
//!
//! `ladu publish` computes every dataset over the committed warehouse,
//! applies [`disclosure`] control across the whole release, and writes the
//! release aside: per dataset CSV, JSON, Parquet and a Frictionless
//! `datapackage.json`, then a DCAT-AP `catalog.jsonld`, a readable
//! `index.html` and `SHA256SUMS`. Only a complete release is moved into
//! `releases/<date>/`, and `latest` is switched to it in one step ([`site`]).

pub mod catalog;
pub mod dataset;
pub mod disclosure;
pub mod files;
pub mod page;
pub mod site;

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::{cast, concat_batches, nullif};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use serde_json::{Map, Value};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::sql::{self, Session};
use crate::warehouse::manifest;
use dataset::{Dataset, Role};
use disclosure::{Cell, Suppression};

/// The column saying why a row's values are empty.
pub const FLAG_COLUMN: &str = "suppression";
/// Audit entry kind of a publication.
pub const AUDIT_KIND: &str = "publish";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dataset(#[from] dataset::Error),
    #[error(
        "no open dataset in {dir} has data to publish: add `<name>.sql` and `<name>.toml` there, and ingest what they read"
    )]
    NoDatasets { dir: String },
    #[error("open dataset {name} failed: {source}")]
    Query {
        name: String,
        #[source]
        source: sql::Error,
    },
    #[error("open dataset {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("open dataset {name}: {column}: {source}")]
    Column {
        name: String,
        /// The column, or `the result` for the whole of it.
        column: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("open dataset {name} cannot be published safely: {source}")]
    Disclosure {
        name: String,
        #[source]
        source: disclosure::Error,
    },
    #[error(transparent)]
    Sql(#[from] sql::Error),
    #[error(transparent)]
    Warehouse(#[from] crate::warehouse::Error),
    #[error(transparent)]
    Site(#[from] site::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One dataset as published.
#[derive(Debug)]
pub struct Table {
    pub dataset: Dataset,
    /// The rows as published: suppressed values empty, the flag column last.
    pub batch: RecordBatch,
    pub primary: usize,
    pub secondary: usize,
    /// The months the counted events fall in: the first day of the first, the last day of the last.
    pub coverage: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// What `ladu publish` did.
#[derive(Debug)]
pub struct Summary {
    pub release: String,
    /// Datasets left out because a table they read has no data yet: (dataset, table).
    pub waiting: Vec<(String, String)>,
    pub datasets: Vec<Published>,
    pub path: std::path::PathBuf,
}

/// One dataset of a release.
#[derive(Debug)]
pub struct Published {
    pub name: String,
    pub rows: usize,
    /// Cells suppressed for having fewer persons than the threshold.
    pub primary: usize,
    /// Cells suppressed so that those cannot be worked out.
    pub secondary: usize,
}

/// Compute, protect and publish every open dataset as one release.
pub fn run(settings: &Settings, audit: &AuditLog, progress: bool) -> Result<Summary> {
    let dir = settings.paths.queries.join(dataset::DIR);
    let datasets = dataset::load_dir(&dir)?;
    if datasets.is_empty() {
        return Err(Error::NoDatasets { dir: dir.display().to_string() });
    }
    let manifest = manifest::load_latest(&settings.paths.warehouse)?;
    let session = Session::open_for(settings, audit.clone(), manifest.clone(), "ladu publish")?;
    let mut computed = Vec::with_capacity(datasets.len());
    let mut waiting = Vec::new();
    let mut ready = Vec::with_capacity(datasets.len());
    let mut coverages = Vec::with_capacity(datasets.len());
    for d in datasets {
        let spinner = crate::progress::spinner(progress, &format!("open dataset {}", d.name));
        let result = session.collect(&d.query.sql);
        spinner.finish_and_clear();
        let (schema, batches) = match result {
            Ok(result) => result,
            Err(sql::Error::NoData { table, .. }) => {
                tracing::warn!(dataset = %d.name, "left out of the release: table {table} has no committed data yet");
                waiting.push((d.name.clone(), table));
                continue;
            }
            Err(source) => return Err(Error::Query { name: d.name.clone(), source }),
        };
        d.check_schema(&schema)?;
        let batch = plain_types(&schema, &batches).map_err(|(column, source)| Error::Column {
            name: d.name.clone(),
            column,
            source,
        })?;
        refuse_pseudonyms(&d, &batch)?;
        coverages.push(match &d.meta.temporal {
            Some(t) => coverage(&session, t).map_err(|source| Error::Query { name: d.name.clone(), source })?,
            None => None,
        });
        computed.push(batch);
        ready.push(d);
    }
    if ready.is_empty() {
        return Err(Error::NoDatasets { dir: dir.display().to_string() });
    }
    let datasets = ready;
    let mut tables = protect(&datasets, computed, settings.publish.threshold)?;
    for (t, c) in tables.iter_mut().zip(coverages) {
        t.coverage = c;
    }
    let release = site::Release::begin(&settings.paths.site)?;
    let written = release.write(&tables, &settings.publish, &manifest)?;
    let id = release.id.clone();
    // Logged before it goes live: a release the log does not know is never published.
    let mut fields = Map::new();
    fields.insert("release".into(), Value::from(id.clone()));
    fields.insert("warehouse_version".into(), Value::from(manifest.version));
    fields.insert("threshold".into(), Value::from(settings.publish.threshold));
    let published: Vec<Published> = tables
        .iter()
        .map(|t| Published { name: t.dataset.name.clone(), rows: t.rows(), primary: t.primary, secondary: t.secondary })
        .collect();
    let datasets_field: Vec<Value> = published
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "rows": p.rows,
                "suppressed_primary": p.primary,
                "suppressed_secondary": p.secondary,
            })
        })
        .collect();
    fields.insert("datasets".into(), Value::from(datasets_field));
    let sums: Map<String, Value> = written.iter().map(|f| (f.path.clone(), Value::from(f.sha256.clone()))).collect();
    fields.insert("files".into(), Value::Object(sums));
    if !waiting.is_empty() {
        let left_out: Map<String, Value> = waiting.iter().map(|(d, t)| (d.clone(), Value::from(t.clone()))).collect();
        fields.insert("waiting_for_data".into(), Value::Object(left_out));
    }
    audit.append(AUDIT_KIND, fields)?;
    let path = release.publish(settings.publish.keep_releases)?;
    Ok(Summary { waiting, release: id, datasets: published, path })
}

/// The months a dataset's events fall in ([`dataset::Temporal`]), widened to
/// whole months so that no single event's date is published; `None` without dates.
fn coverage(
    session: &Session,
    temporal: &dataset::Temporal,
) -> Result<Option<(chrono::NaiveDate, chrono::NaiveDate)>, sql::Error> {
    use chrono::{Datelike, Months, NaiveDate};
    // Its table without data yet: no coverage to tell, and the dataset is published without it.
    let batches = match session.collect(&temporal.query()) {
        Ok((_, batches)) => batches,
        Err(sql::Error::NoData { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let day = |i: usize| -> Option<NaiveDate> {
        let dates = cast(batch.column(i), &DataType::Date32).ok()?;
        let dates = dates.as_any().downcast_ref::<arrow::array::Date32Array>()?;
        if dates.is_null(0) { None } else { dates.value_as_date(0) }
    };
    let (Some(first), Some(last)) = (day(0), day(1)) else { return Ok(None) };
    let start = NaiveDate::from_ymd_opt(first.year(), first.month(), 1);
    let end = NaiveDate::from_ymd_opt(last.year(), last.month(), 1)
        .and_then(|d| d.checked_add_months(Months::new(1)))
        .and_then(|d| d.pred_opt());
    Ok(start.zip(end))
}

/// One batch, with string views as plain strings (what every reader of CSV, JSON and Parquet expects).
fn plain_types(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, (String, ArrowError)> {
    let whole = |e| ("the result".to_owned(), e);
    let batch = concat_batches(schema, batches).map_err(whole)?;
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let t = match f.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            other => other.clone(),
        };
        columns.push(cast(c, &t).map_err(|e| (f.name().clone(), e))?);
        fields.push(Field::new(f.name(), t, true));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(whole)
}

/// Refuse a dataset holding a value shaped like a pseudonym (32 lower-case hex digits), alone or inside text.
fn refuse_pseudonyms(d: &Dataset, batch: &RecordBatch) -> Result<()> {
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        let Some(strings) = c.as_any().downcast_ref::<StringArray>() else { continue };
        if strings.iter().flatten().any(|s| crate::pseudonym::contains_pseudonym(s.as_bytes())) {
            return Err(Error::Invalid {
                name: d.name.clone(),
                message: format!(
                    "column {} holds values shaped like pseudonyms (32 hex digits): open data holds aggregates only",
                    f.name()
                ),
            });
        }
    }
    Ok(())
}

/// Apply disclosure control to every dataset, universe by universe; returns the tables as published.
fn protect(datasets: &[Dataset], batches: Vec<RecordBatch>, threshold: u64) -> Result<Vec<Table>> {
    let mut cells = Vec::with_capacity(datasets.len());
    for (d, batch) in datasets.iter().zip(&batches) {
        cells.push(cells_of(d, batch).map_err(|(column, source)| Error::Column {
            name: d.name.clone(),
            column,
            source,
        })?);
    }
    let mut states: Vec<Vec<Suppression>> = vec![Vec::new(); datasets.len()];
    let universes: BTreeSet<&str> = datasets.iter().map(|d| d.meta.universe.as_str()).collect();
    for universe in universes {
        let members: Vec<usize> = (0..datasets.len()).filter(|&i| datasets[i].meta.universe == universe).collect();
        let tables: Vec<disclosure::Table> = members
            .iter()
            .map(|&i| disclosure::Table { dimensions: datasets[i].dimensions(), cells: std::mem::take(&mut cells[i]) })
            .collect();
        let result = disclosure::suppress(&tables, threshold).map_err(|source| {
            let name = match &source {
                disclosure::Error::DuplicateCell { table, .. } => datasets[members[*table]].name.clone(),
                disclosure::Error::Unprotectable { .. } => {
                    members.iter().map(|&i| datasets[i].name.as_str()).collect::<Vec<_>>().join(", ")
                }
            };
            Error::Disclosure { name, source }
        })?;
        for (&i, state) in members.iter().zip(result) {
            states[i] = state;
        }
    }
    Ok(datasets.iter().zip(batches).zip(states).map(|((d, batch), state)| apply(d.clone(), &batch, &state)).collect())
}

/// A dataset's cells: its dimensions as text, and its persons count.
fn cells_of(d: &Dataset, batch: &RecordBatch) -> Result<Vec<Cell>, (String, ArrowError)> {
    let schema = batch.schema();
    let column = |name: &str, t: &DataType| -> Result<ArrayRef, (String, ArrowError)> {
        let i = schema.index_of(name).map_err(|e| (name.to_owned(), e))?;
        cast(batch.column(i), t).map_err(|e| (name.to_owned(), e))
    };
    let dims = d.dimensions().iter().map(|n| column(n, &DataType::Utf8)).collect::<Result<Vec<_>, _>>()?;
    let dims: Vec<&StringArray> = dims.iter().map(|a| a.as_any().downcast_ref().expect("cast to Utf8")).collect();
    let persons = column(d.persons_column(), &DataType::Int64)?;
    let persons = persons.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
    Ok((0..batch.num_rows())
        .map(|r| Cell {
            key: dims.iter().map(|a| a.is_valid(r).then(|| a.value(r).to_owned())).collect(),
            persons: if persons.is_valid(r) { persons.value(r).max(0) as u64 } else { 0 },
        })
        .collect())
}

/// The dataset as published: suppressed cells' persons and measures empty, the flag column last.
fn apply(d: Dataset, batch: &RecordBatch, state: &[Suppression]) -> Table {
    let schema = batch.schema();
    let hide = BooleanArray::from(state.iter().map(|s| *s != Suppression::Published).collect::<Vec<_>>());
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = Vec::with_capacity(fields.len() + 1);
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let role = d.meta.columns[f.name()].role;
        columns.push(if role == Role::Dimension { c.clone() } else { nullif(c, &hide).expect("same length") });
    }
    fields.push(Field::new(FLAG_COLUMN, DataType::Utf8, true));
    columns.push(Arc::new(StringArray::from(state.iter().map(|s| s.flag()).collect::<Vec<_>>())));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match the fields");
    let count = |k| state.iter().filter(|&&s| s == k).count();
    Table {
        primary: count(Suppression::Primary),
        secondary: count(Suppression::Secondary),
        dataset: d,
        batch,
        coverage: None,
    }
}
