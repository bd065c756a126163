//! Open datasets: `queries/open_data/<name>.sql` and the metadata in `<name>.toml` beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, Schema};
use serde::Deserialize;

use crate::sql::query_files::{self, QueryFile};

/// Folder of the open datasets under the queries folder.
pub const DIR: &str = "open_data";

/// Text in Estonian and English.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub et: String,
    pub en: String,
}

/// Keywords in Estonian and English.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keywords {
    pub et: Vec<String>,
    pub en: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Licence {
    /// SPDX identifier, e.g. `CC-BY-4.0`.
    pub id: String,
    pub title: String,
    pub url: String,
}

/// How often a dataset is updated (the EU frequency vocabulary's terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Quarterly,
    Annual,
    Irregular,
}

impl Frequency {
    /// The term's code in the EU frequency vocabulary.
    pub fn eu_code(self) -> &'static str {
        match self {
            Frequency::Daily => "DAILY",
            Frequency::Weekly => "WEEKLY",
            Frequency::Monthly => "MONTHLY",
            Frequency::Quarterly => "QUARTERLY",
            Frequency::Annual => "ANNUAL",
            Frequency::Irregular => "IRREG",
        }
    }

    /// The term as the page shows it.
    pub fn label(self) -> &'static str {
        match self {
            Frequency::Daily => "daily",
            Frequency::Weekly => "weekly",
            Frequency::Monthly => "monthly",
            Frequency::Quarterly => "quarterly",
            Frequency::Annual => "annual",
            Frequency::Irregular => "irregular",
        }
    }
}

/// What a column of a dataset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Tells cells apart (county, month, age band, …).
    Dimension,
    /// The number of distinct persons a cell is based on: disclosure control counts it.
    Persons,
    /// A value over the cell's persons (a count, sum, mean, percentile); empty when the cell is suppressed.
    Measure,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub role: Role,
    pub description: Text,
    /// A count or sum: the cells of a group add up to the group's total.
    #[serde(default)]
    pub additive: bool,
}

/// `<name>.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub title: Text,
    pub description: Text,
    pub keywords: Keywords,
    pub licence: Licence,
    pub update_frequency: Frequency,
    /// What the cells partition (e.g. `treatment_invoices`): datasets with the
    /// same universe add up to the same totals.
    pub universe: String,
    /// The column the page charts.
    pub main_measure: String,
    /// The date column whose range the dataset covers (the catalogue's temporal coverage).
    #[serde(default)]
    pub temporal: Option<Temporal>,
    pub columns: BTreeMap<String, Column>,
}

/// `[temporal]`: the table and date column of the events a dataset counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Temporal {
    pub table: String,
    pub column: String,
}

impl Temporal {
    /// The statement that finds the first and last date.
    pub fn query(&self) -> String {
        format!("SELECT min(\"{c}\"), max(\"{c}\") FROM \"{t}\"", c = self.column, t = self.table)
    }
}

/// One open dataset, loaded and checked.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub query: QueryFile,
    pub meta_path: PathBuf,
    pub meta: Meta,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open dataset {0}")]
    Query(#[from] query_files::Error),
    #[error("open dataset {file}: {message}")]
    Meta { file: PathBuf, message: String },
    #[error("open dataset {name}: its result does not match {file}: {message}")]
    Columns { name: String, file: PathBuf, message: String },
    #[error(
        "open datasets {inner} and {outer} count the same universe `{universe}`, and every dimension of {inner} is one of {outer}'s: {inner}'s cells are totals of {outer}'s, and together they could reveal suppressed cells. Publish one of them, or give them different universes if they count different things"
    )]
    Nested { inner: String, outer: String, universe: String },
}

impl Dataset {
    pub fn dimensions(&self) -> Vec<&str> {
        self.with_role(Role::Dimension)
    }

    pub fn persons_column(&self) -> &str {
        self.with_role(Role::Persons)[0]
    }

    fn with_role(&self, role: Role) -> Vec<&str> {
        self.meta.columns.iter().filter(|(_, c)| c.role == role).map(|(n, _)| n.as_str()).collect()
    }

    /// Check the query's result columns against the metadata, in the result's order.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), Error> {
        let bad = |message: String| Error::Columns { name: self.name.clone(), file: self.meta_path.clone(), message };
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let undeclared: Vec<&str> = names.iter().copied().filter(|n| !self.meta.columns.contains_key(*n)).collect();
        if !undeclared.is_empty() {
            return Err(bad(format!("columns {} are not described under [columns]", undeclared.join(", "))));
        }
        let missing: Vec<&str> = self.meta.columns.keys().map(String::as_str).filter(|n| !names.contains(n)).collect();
        if !missing.is_empty() {
            return Err(bad(format!("described columns {} are not in the result", missing.join(", "))));
        }
        let persons = schema.field_with_name(self.persons_column()).map_err(|e| bad(e.to_string()))?;
        if !persons.data_type().is_integer() {
            return Err(bad(format!("the persons column {} must be an integer count", persons.name())));
        }
        for f in schema.fields() {
            if f.name() == super::FLAG_COLUMN {
                return Err(bad(format!("`{}` is the name of the flag column ladu adds", super::FLAG_COLUMN)));
            }
            if matches!(f.data_type(), DataType::List(_) | DataType::Struct(_) | DataType::Map(_, _)) {
                return Err(bad(format!("column {} is nested: open data columns hold single values", f.name())));
            }
        }
        Ok(())
    }
}

/// Every dataset of `dir`: `<name>.sql` with `<name>.toml` beside it.
pub fn load_dir(dir: &Path) -> Result<Vec<Dataset>, Error> {
    let mut datasets = Vec::new();
    for query in query_files::read_dir(dir)? {
        let meta_path = query.path.with_extension("toml");
        let bad = |message: String| Error::Meta { file: meta_path.clone(), message };
        let text = std::fs::read_to_string(&meta_path)
            .map_err(|e| bad(format!("cannot read it ({e}): every dataset's query needs its metadata beside it")))?;
        let meta: Meta = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let problems = check_meta(&meta);
        if !problems.is_empty() {
            return Err(bad(problems.join("; ")));
        }
        datasets.push(Dataset { name: query.name.clone(), query, meta_path, meta });
    }
    for (i, a) in datasets.iter().enumerate() {
        for b in &datasets[i + 1..] {
            if a.meta.universe != b.meta.universe {
                continue;
            }
            let (da, db) = (a.dimensions(), b.dimensions());
            let (inner, outer) = if db.iter().all(|d| da.contains(d)) {
                (b, a)
            } else if da.iter().all(|d| db.contains(d)) {
                (a, b)
            } else {
                continue;
            };
            return Err(Error::Nested {
                inner: inner.name.clone(),
                outer: outer.name.clone(),
                universe: a.meta.universe.clone(),
            });
        }
    }
    Ok(datasets)
}

/// What is wrong with a dataset's metadata (nothing: empty).
fn check_meta(meta: &Meta) -> Vec<String> {
    let mut problems = Vec::new();
    let count = |role| meta.columns.values().filter(|c| c.role == role).count();
    if count(Role::Persons) != 1 {
        problems.push("exactly one column must have role = \"persons\" (the distinct persons of a cell)".to_owned());
    }
    if count(Role::Dimension) == 0 {
        problems.push("at least one column must have role = \"dimension\"".to_owned());
    }
    for (name, c) in &meta.columns {
        // Record keys and pseudonyms are `*_id` columns in the warehouse.
        if name.ends_with("_id") {
            problems.push(format!("column {name}: open data holds no identifiers or pseudonyms (`*_id` columns)"));
        }
        if c.additive && c.role == Role::Dimension {
            problems.push(format!("column {name}: a dimension cannot be additive"));
        }
    }
    match meta.columns.get(&meta.main_measure) {
        Some(c) if c.role != Role::Dimension => {}
        _ => problems.push(format!("main_measure `{}` must name a measure or the persons column", meta.main_measure)),
    }
    if meta.universe.trim().is_empty() {
        problems.push("universe must name what the cells count".to_owned());
    }
    if !meta.licence.url.contains("://") {
        problems.push("licence.url must be an absolute URL".to_owned());
    }
    if let Some(t) = &meta.temporal {
        let plain =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain(&t.table) || !plain(&t.column) {
            problems
                .push("temporal.table and temporal.column must be a table and a date column of the warehouse".into());
        }
    }
    problems
}
