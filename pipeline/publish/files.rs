//! One dataset's downloads: CSV, JSON and Parquet, and its Frictionless `datapackage.json`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::datatypes::DataType;
use serde_json::{Value, json};

use super::Table;
use super::dataset::Role;
use crate::config::PublishSettings;
use crate::warehouse::manifest::Manifest;

/// A file of a release.
#[derive(Debug, Clone)]
pub struct Written {
    /// Path relative to the release folder, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A download format of every dataset.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    pub extension: &'static str,
    pub media_type: &'static str,
    /// Code in the EU file-type vocabulary.
    pub eu_file_type: &'static str,
}

pub const FORMATS: [Format; 3] = [
    Format { extension: "csv", media_type: "text/csv", eu_file_type: "CSV" },
    Format { extension: "json", media_type: "application/json", eu_file_type: "JSON" },
    Format { extension: "parquet", media_type: "application/vnd.apache.parquet", eu_file_type: "PARQUET" },
];

/// Name of each dataset's package descriptor.
pub const DATAPACKAGE: &str = "datapackage.json";

/// Write `table`'s files into `<release>/<name>/`; returns them, the descriptor last.
pub fn write(
    release: &Path,
    table: &Table,
    publish: &PublishSettings,
    manifest: &Manifest,
    release_id: &str,
) -> std::io::Result<Vec<Written>> {
    let name = &table.dataset.name;
    let dir = release.join(name);
    std::fs::create_dir_all(&dir)?;
    let mut written = Vec::new();
    for format in FORMATS {
        let file = format!("{name}.{}", format.extension);
        let path = dir.join(&file);
        let sink = BufWriter::new(File::create(&path)?);
        let other = |e: arrow::error::ArrowError| std::io::Error::other(e);
        let sink = match format.extension {
            "csv" => {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(sink);
                w.write(&table.batch).map_err(other)?;
                w.into_inner()
            }
            "json" => {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::JsonArray>(sink);
                w.write(&table.batch).map_err(other)?;
                w.finish().map_err(other)?;
                w.into_inner()
            }
            _ => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                let other = std::io::Error::other;
                let mut w =
                    parquet::arrow::ArrowWriter::try_new(sink, table.batch.schema(), Some(props)).map_err(other)?;
                w.write(&table.batch).map_err(other)?;
                w.into_inner().map_err(other)?
            }
        };
        finish(sink)?;
        written.push(describe(release, &format!("{name}/{file}"))?);
    }
    let csv = &written[0];
    let package = datapackage(table, publish, manifest, release_id, csv);
    let text = serde_json::to_vec_pretty(&package).map_err(std::io::Error::other)?;
    let path = dir.join(DATAPACKAGE);
    let mut f = File::create(&path)?;
    f.write_all(&text)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    written.push(describe(release, &format!("{name}/{DATAPACKAGE}"))?);
    Ok(written)
}

fn finish(sink: BufWriter<File>) -> std::io::Result<()> {
    sink.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Size and SHA-256 of a written file.
pub fn describe(release: &Path, rel: &str) -> std::io::Result<Written> {
    let (sha256, bytes) = crate::warehouse::writer::hash_file(&release.join(rel))?;
    Ok(Written { path: rel.to_owned(), bytes, sha256 })
}

/// The Table Schema type of an Arrow type.
fn field_type(t: &DataType) -> &'static str {
    match t {
        t if t.is_integer() => "integer",
        t if t.is_floating() => "number",
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            "number"
        }
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(..) => "datetime",
        DataType::Boolean => "boolean",
        _ => "string",
    }
}

/// The Frictionless Data Package describing the dataset's CSV file.
fn datapackage(
    table: &Table,
    publish: &PublishSettings,
    manifest: &Manifest,
    release_id: &str,
    csv: &Written,
) -> Value {
    let d = &table.dataset;
    let meta = &d.meta;
    let mut fields: Vec<Value> = table
        .batch
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != super::FLAG_COLUMN)
        .map(|f| {
            let c = &meta.columns[f.name()];
            let role = match c.role {
                Role::Dimension => "dimension",
                Role::Persons => "distinct persons of the cell",
                Role::Measure => "measure over the cell's persons",
            };
            json!({
                "name": f.name(),
                "type": field_type(f.data_type()),
                "title": c.description.en,
                "description": format!("{} / {} ({role})", c.description.et, c.description.en),
            })
        })
        .collect();
    fields.push(json!({
        "name": super::FLAG_COLUMN,
        "type": "string",
        "description": format!(
            "Miks rea väärtused on tühjad: primary = alla {t} isiku, secondary = peidetud, et primary lahtreid ei saaks summadest tuletada. / Why the row's values are empty: primary = fewer than {t} persons, secondary = hidden so that primary cells cannot be derived from totals.",
            t = publish.threshold
        ),
        "constraints": { "enum": ["primary", "secondary"] },
    }));
    json!({
        "profile": "tabular-data-package",
        "name": d.name,
        "title": format!("{} / {}", meta.title.et, meta.title.en),
        "description": format!("{}\n\n{}", meta.description.et, meta.description.en),
        "keywords": meta.keywords.et.iter().chain(&meta.keywords.en).collect::<Vec<_>>(),
        "version": release_id,
        "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "licenses": [{ "name": meta.licence.id, "path": meta.licence.url, "title": meta.licence.title }],
        "contributors": [{ "title": publish.publisher, "role": "publisher" }],
        "sources": [{
            "title": format!(
                "{} — ladu warehouse version {}, committed {}",
                publish.publisher, manifest.version, manifest.committed_at
            ),
        }],
        "resources": [{
            "name": d.name,
            "path": csv.path.rsplit('/').next().unwrap_or(&csv.path),
            "profile": "tabular-data-resource",
            "title": meta.title.en,
            "description": meta.description.en,
            "format": "csv",
            "mediatype": "text/csv",
            "encoding": "utf-8",
            "bytes": csv.bytes,
            "hash": format!("sha256:{}", csv.sha256),
            "dialect": { "delimiter": ",", "header": true, "quoteChar": "\"", "doubleQuote": true },
            "schema": { "fields": fields, "missingValues": [""] },
        }],
    })
}
