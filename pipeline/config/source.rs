//! A source's config file: how its deliveries look and one rule for every column.

use std::collections::BTreeSet;

use indexmap::IndexMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Error, Result};

/// Column every table carries: the pseudonym of the source's record key.
pub const RECORD_ID: &str = "record_id";
/// Column every table carries for the pseudonym of an `isikukood`.
pub const PERSON_ID: &str = "person_id";

/// Row metadata written beside the data; `_`-prefixed so no source column clashes.
pub const META_EXTRACT_DATE: &str = "_extract_date";
pub const META_EXTRACT_SEQ: &str = "_extract_seq";
pub const META_COMMIT: &str = "_commit";
pub const META_LINE: &str = "_line";

/// Field separator of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Delimiter {
    #[serde(rename = ";")]
    Semicolon,
    #[serde(rename = ",")]
    Comma,
    #[serde(rename = "\t")]
    Tab,
    #[serde(rename = "|")]
    Pipe,
}

impl Delimiter {
    pub fn byte(self) -> u8 {
        match self {
            Delimiter::Semicolon => b';',
            Delimiter::Comma => b',',
            Delimiter::Tab => b'\t',
            Delimiter::Pipe => b'|',
        }
    }
}

/// Character encoding of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    /// UTF-8, with or without a byte-order mark.
    #[serde(rename = "utf-8")]
    Utf8,
    /// Windows-1257 (Baltic), transcoded to UTF-8 as a stream.
    #[serde(rename = "windows-1257")]
    Windows1257,
}

/// How dates are written in a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DateFormat {
    #[serde(rename = "YYYY-MM-DD")]
    Iso,
    #[serde(rename = "DD.MM.YYYY")]
    DayMonthYear,
}

/// Decimal separator of money amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DecimalSeparator {
    #[serde(rename = ".")]
    Point,
    #[serde(rename = ",")]
    Comma,
}

impl DecimalSeparator {
    pub fn byte(self) -> u8 {
        match self {
            DecimalSeparator::Point => b'.',
            DecimalSeparator::Comma => b',',
        }
    }
}

/// What a kept column holds; values that do not fit reject their row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Any text (institution names, codes without a fixed form).
    String,
    /// One of `values`.
    Enum,
    /// A date in the source's `date_format`.
    Date,
    /// `YYYY-MM-DDTHH:MM:SS`, optional `+HH:MM`; Europe/Tallinn when no offset.
    Timestamp,
    /// Euros with the source's decimal separator, at most two decimals.
    Money,
    /// A whole number.
    Integer,
    /// Business register code: 8 digits.
    Regcode,
    /// ICD-10 diagnosis code, e.g. `J06.9`.
    Icd10,
    /// ATC medicine code at any level, e.g. `C09AA05`.
    Atc,
    /// EHAK county code: one of the 15 counties.
    Ehak,
    /// ISO 3166 alpha-3 country code.
    Country,
}

/// How a generalised column is coarsened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generalisation {
    /// A date to its year (integer).
    Year,
    /// A date or timestamp to `YYYY-MM`.
    YearMonth,
    /// An age in years to a five-year band `35-39` (`90+` at the top).
    AgeBand,
    /// An EHAK code to its county's name.
    County,
    /// An address to the county it names (`… Tartu maakond`).
    CountyFromAddress,
}

/// The rule for one delivered column.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnRule {
    /// Keep the value, checked against `type`.
    Keep {
        #[serde(rename = "type")]
        ty: ValueType,
        /// Output column name (default: the delivered name).
        #[serde(rename = "as")]
        name: Option<String>,
        /// Allowed values for `type = "enum"`.
        values: Option<Vec<String>>,
        /// An empty value is allowed (stored as null).
        #[serde(default)]
        optional: bool,
    },
    /// Never reaches the warehouse.
    Drop {
        /// Why, for reviewers (identifier, free text, …).
        why: Option<String>,
    },
    /// Replace with its keyed pseudonym.
    Pseudonymise {
        /// The identifier kind, part of the HMAC message (`isikukood`, `worker_code`, …).
        kind: String,
        /// Output column name.
        #[serde(rename = "as")]
        name: String,
        #[serde(default)]
        optional: bool,
    },
    /// Coarsen, so that the value no longer singles anyone out.
    Generalise {
        to: Generalisation,
        #[serde(rename = "as")]
        name: String,
        #[serde(default)]
        optional: bool,
    },
}

impl ColumnRule {
    pub fn optional(&self) -> bool {
        match self {
            ColumnRule::Keep { optional, .. }
            | ColumnRule::Pseudonymise { optional, .. }
            | ColumnRule::Generalise { optional, .. } => *optional,
            ColumnRule::Drop { .. } => true,
        }
    }
}

/// Which part of a date a partition folder level holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionPart {
    Year,
    Month,
}

impl PartitionPart {
    pub fn name(self) -> &'static str {
        match self {
            PartitionPart::Year => "year",
            PartitionPart::Month => "month",
        }
    }
}

/// Hive partitioning of a table: folders `year=YYYY/month=M` from one date column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitioning {
    /// A `date` or `timestamp` column of the delivery.
    pub column: String,
    /// Folder levels, outermost first.
    pub parts: Vec<PartitionPart>,
}

/// How long a table keeps its rows: `retention = { years = 20, by = "start_date" }` (or `months`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    years: Option<u32>,
    months: Option<u32>,
    /// The delivered date or timestamp column the period counts from.
    by: String,
}

/// A validated retention: rows whose `column` is older than `months` before today are removed by `ladu expire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The period in months (`years` × 12 when given in years).
    pub months: u32,
    /// Did the config give it in years (for saying it back as written)?
    pub in_years: bool,
    /// The delivered column the period counts from.
    pub by: String,
    /// Its warehouse column.
    pub column: String,
}

impl Retention {
    /// The period as the config wrote it: `20 years`, `6 months`.
    pub fn period(&self) -> String {
        let (n, unit) = if self.in_years { (self.months / 12, "year") } else { (self.months, "month") };
        format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
    }

    /// The first day kept on `today`: rows dated before it have passed their period.
    pub fn cutoff(&self, today: chrono::NaiveDate) -> chrono::NaiveDate {
        today.checked_sub_months(chrono::Months::new(self.months)).unwrap_or(chrono::NaiveDate::MIN)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    /// What the source is, for people.
    description: String,
    /// Warehouse table (default: the source name).
    table: Option<String>,
    /// Delivery file names, `*` matching anything (default `<source>_*.csv`).
    file_pattern: Option<String>,
    delimiter: Delimiter,
    encoding: Encoding,
    date_format: DateFormat,
    #[serde(default = "default_decimal")]
    decimal_separator: DecimalSeparator,
    /// Column identifying a record; its pseudonym becomes `record_id`.
    record_key: String,
    partition_by: Option<Partitioning>,
    /// Output columns each row group is sorted by (default `person_id` when present).
    sort_by: Option<Vec<String>>,
    /// How long rows are kept (default: for ever).
    retention: Option<RawRetention>,
    /// A rule for every delivered column.
    columns: IndexMap<String, ColumnRule>,
}

fn default_decimal() -> DecimalSeparator {
    DecimalSeparator::Point
}

/// A validated source config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// File stem of the config, and prefix of delivery names.
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub table: String,
    pub file_pattern: String,
    pub delimiter: Delimiter,
    pub encoding: Encoding,
    pub date_format: DateFormat,
    pub decimal_separator: DecimalSeparator,
    pub record_key: String,
    pub partition_by: Option<Partitioning>,
    pub sort_by: Vec<String>,
    /// How long rows are kept; `None`: for ever.
    pub retention: Option<Retention>,
    /// Delivered column name → rule.
    pub columns: IndexMap<String, ColumnRule>,
}

/// Load every `*.toml` in `dir`, sorted by name; all problems are reported together.
pub fn load_dir(dir: &Path) -> Result<Vec<SourceConfig>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read { path: dir.to_owned(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::NoSources { dir: dir.to_owned() });
    }
    files.iter().map(|f| SourceConfig::load(f)).collect()
}

impl SourceConfig {
    pub fn load(path: &Path) -> Result<SourceConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        let raw: RawSource =
            toml::from_str(&text).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let problems = validate(&name, &raw);
        if !problems.is_empty() {
            return Err(Error::Invalid { path: path.to_owned(), problems });
        }
        let has_person = output_names(&raw.columns).iter().any(|n| n == PERSON_ID);
        let retention = raw.retention.as_ref().map(|r| Retention {
            months: r.years.map_or(0, |y| y * 12) + r.months.unwrap_or(0),
            in_years: r.years.is_some(),
            column: raw.columns.get(&r.by).and_then(|rule| output_name(&r.by, rule)).unwrap_or(&r.by).to_owned(),
            by: r.by.clone(),
        });
        Ok(SourceConfig {
            retention,
            table: raw.table.unwrap_or_else(|| name.clone()),
            file_pattern: raw.file_pattern.unwrap_or_else(|| format!("{name}_*.csv")),
            file: path.to_owned(),
            description: raw.description,
            delimiter: raw.delimiter,
            encoding: raw.encoding,
            date_format: raw.date_format,
            decimal_separator: raw.decimal_separator,
            record_key: raw.record_key,
            partition_by: raw.partition_by,
            sort_by: raw
                .sort_by
                .unwrap_or_else(|| if has_person { vec![PERSON_ID.to_owned()] } else { vec![RECORD_ID.to_owned()] }),
            columns: raw.columns,
            name,
        })
    }

    /// Output names of the columns that hold pseudonyms: `record_id` (the
    /// record key's, always pseudonymised) and every `pseudonymise` rule's.
    pub fn pseudonym_columns(&self) -> impl Iterator<Item = &str> {
        let named = self.columns.values().filter_map(|r| match r {
            ColumnRule::Pseudonymise { name, .. } if name != RECORD_ID => Some(name.as_str()),
            _ => None,
        });
        std::iter::once(RECORD_ID).chain(named)
    }

    /// Does a delivery file name match this source's pattern?
    pub fn matches_file(&self, file_name: &str) -> bool {
        glob_match(self.file_pattern.as_bytes(), file_name.as_bytes())
    }
}

/// The output name of a column rule, or `None` for `drop`.
pub fn output_name<'a>(delivered: &'a str, rule: &'a ColumnRule) -> Option<&'a str> {
    match rule {
        ColumnRule::Keep { name, .. } => Some(name.as_deref().unwrap_or(delivered)),
        ColumnRule::Drop { .. } => None,
        ColumnRule::Pseudonymise { name, .. } | ColumnRule::Generalise { name, .. } => Some(name),
    }
}

fn output_names(columns: &IndexMap<String, ColumnRule>) -> Vec<String> {
    columns.iter().filter_map(|(c, r)| output_name(c, r).map(str::to_owned)).collect()
}

fn validate(name: &str, raw: &RawSource) -> Vec<String> {
    let mut problems = Vec::new();
    let ident = |s: &str| {
        let mut b = s.bytes();
        b.next().is_some_and(|c| c.is_ascii_lowercase())
            && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
    };
    if !ident(name) {
        problems.push(format!("file name: source `{name}` must be lowercase letters, digits and `_`"));
    }
    if let Some(t) = &raw.table
        && !ident(t)
    {
        problems.push(format!("table: `{t}` must be lowercase letters, digits and `_`"));
    }
    if raw.columns.is_empty() {
        problems.push("columns: no column has a rule".to_owned());
    }
    match raw.columns.get(&raw.record_key) {
        None => problems.push(format!("record_key: `{}` is not one of the columns", raw.record_key)),
        Some(ColumnRule::Pseudonymise { optional: true, .. }) => {
            problems.push(format!("columns.{}.optional: the record key cannot be optional", raw.record_key))
        }
        Some(ColumnRule::Pseudonymise { .. }) => {}
        Some(_) => problems.push(format!(
            "columns.{}.rule: the record key leads back to the provider's record and must be `pseudonymise`",
            raw.record_key
        )),
    }
    let mut seen = BTreeSet::new();
    for (col, rule) in &raw.columns {
        if let Some(out) = output_name(col, rule) {
            if !ident(out) {
                problems.push(format!("columns.{col}.as: `{out}` must be lowercase letters, digits and `_`"));
            }
            if !seen.insert(out.to_owned()) {
                problems.push(format!("columns.{col}: output column `{out}` is produced twice"));
            }
            if out == RECORD_ID && col != &raw.record_key {
                problems.push(format!("columns.{col}.as: `{RECORD_ID}` is reserved for the record key"));
            }
            if ["year", "month"].contains(&out) {
                problems.push(format!("columns.{col}.as: `{out}` is a partition folder name"));
            }
        }
        match rule {
            ColumnRule::Keep { ty: ValueType::Enum, values, .. } if values.as_ref().is_none_or(|v| v.is_empty()) => {
                problems.push(format!("columns.{col}.values: an enum needs its list of values"));
            }
            ColumnRule::Keep { ty: ValueType::Enum, .. } => {}
            ColumnRule::Keep { values: Some(_), .. } => {
                problems.push(format!("columns.{col}.values: only `type = \"enum\"` takes values"));
            }
            ColumnRule::Pseudonymise { kind, name, .. } => {
                if !ident(kind) {
                    problems.push(format!("columns.{col}.kind: `{kind}` must be lowercase letters, digits and `_`"));
                }
                if kind == "isikukood" && name != PERSON_ID {
                    problems.push(format!("columns.{col}.as: an isikukood's pseudonym is always `{PERSON_ID}`"));
                }
            }
            _ => {}
        }
    }
    if let Some(p) = &raw.partition_by {
        match raw.columns.get(&p.column) {
            Some(ColumnRule::Keep { ty: ValueType::Date | ValueType::Timestamp, optional, .. }) => {
                if *optional {
                    problems.push(format!(
                        "partition_by.column: `{}` is optional, but every row needs a partition",
                        p.column
                    ));
                }
            }
            _ => problems
                .push(format!("partition_by.column: `{}` must be a kept column of type date or timestamp", p.column)),
        }
        let expected: &[&[PartitionPart]] = &[&[PartitionPart::Year], &[PartitionPart::Year, PartitionPart::Month]];
        if !expected.contains(&p.parts.as_slice()) {
            problems.push("partition_by.parts: must be [\"year\"] or [\"year\", \"month\"]".to_owned());
        }
    }
    if let Some(r) = &raw.retention {
        match (r.years, r.months) {
            (Some(0), None) | (None, Some(0)) => {
                problems.push("retention: the period must be longer than 0".to_owned())
            }
            (Some(y), None) if y > 1000 => problems.push("retention.years: at most 1000".to_owned()),
            (Some(_), None) | (None, Some(_)) => {}
            _ => problems.push("retention: give either `years` or `months`".to_owned()),
        }
        if r.months.is_some_and(|m| m > 12_000) {
            problems.push("retention.months: at most 12000".to_owned());
        }
        match raw.columns.get(&r.by) {
            Some(ColumnRule::Keep { ty: ValueType::Date | ValueType::Timestamp, .. }) => {}
            _ => problems.push(format!("retention.by: `{}` must be a kept column of type date or timestamp", r.by)),
        }
    }
    if let Some(sort) = &raw.sort_by {
        let outs = output_names(&raw.columns);
        for s in sort {
            if !outs.contains(s) && s != RECORD_ID {
                problems.push(format!("sort_by: `{s}` is not an output column"));
            }
        }
    }
    problems
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Some((c, rest)) => text.split_first().is_some_and(|(t, tr)| t == c && glob_match(rest, tr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<SourceConfig> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("demo.toml");
        std::fs::write(&p, text).unwrap();
        SourceConfig::load(&p)
    }

    const GOOD: &str = r#"
description = "demo"
delimiter = ";"
encoding = "utf-8"
date_format = "YYYY-MM-DD"
record_key = "id"
partition_by = { column = "day", parts = ["year", "month"] }
[columns.id]
rule = "pseudonymise"
kind = "demo_id"
as = "record_id"
[columns.day]
rule = "keep"
type = "date"
[columns.name]
rule = "drop"
"#;

    #[test]
    fn good_config_loads_with_defaults() {
        let s = load(GOOD).unwrap();
        assert_eq!(s.table, "demo");
        assert!(s.matches_file("demo_20240101.csv"));
        assert!(!s.matches_file("other_20240101.csv"));
        assert_eq!(s.sort_by, ["record_id"]);
    }

    #[test]
    fn all_problems_are_reported_with_their_keys() {
        let bad = GOOD
            .replace("rule = \"pseudonymise\"\nkind = \"demo_id\"", "rule = \"keep\"\ntype = \"string\"\nkind = \"x\"")
            .replace("type = \"date\"", "type = \"money\"");
        let e = load(&bad).unwrap_err().to_string();
        assert!(e.contains("kind"), "{e}");
        let bad = GOOD
            .replace(
                "rule = \"pseudonymise\"\nkind = \"demo_id\"\nas = \"record_id\"",
                "rule = \"keep\"\ntype = \"string\"",
            )
            .replace("type = \"date\"", "type = \"money\"");
        let e = load(&bad).unwrap_err().to_string();
        assert!(e.contains("columns.id.rule") && e.contains("partition_by.column"), "{e}");
    }

    #[test]
    fn retention_is_a_period_and_a_kept_date() {
        let with = |r: &str| GOOD.replace("[columns.id]", &format!("retention = {r}\n[columns.id]"));
        let s = load(&with(r#"{ years = 2, by = "day" }"#)).unwrap();
        let r = s.retention.unwrap();
        assert_eq!((r.months, r.period(), r.column.as_str()), (24, "2 years".to_owned(), "day"));
        let d = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(r.cutoff(d(2026, 2, 28)), d(2024, 2, 28));
        let r = load(&with(r#"{ months = 1, by = "day" }"#)).unwrap().retention.unwrap();
        assert_eq!((r.period(), r.cutoff(d(2026, 3, 31))), ("1 month".to_owned(), d(2026, 2, 28)));
        for (bad, says) in [
            (r#"{ years = 2, months = 1, by = "day" }"#, "either `years` or `months`"),
            (r#"{ by = "day" }"#, "either `years` or `months`"),
            (r#"{ months = 0, by = "day" }"#, "longer than 0"),
            (r#"{ years = 2, by = "name" }"#, "retention.by: `name`"),
            (r#"{ years = 2, by = "nowhere" }"#, "retention.by: `nowhere`"),
        ] {
            let e = load(&with(bad)).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(load(&with(r#"{ years = 2, by = "day", keep = 1 }"#)).is_err());
        assert!(load(GOOD).unwrap().retention.is_none());
    }

    #[test]
    fn globbing() {
        assert!(glob_match(b"a_*.csv", b"a_1.csv"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a_*.csv", b"a_1.csvx"));
    }
}
