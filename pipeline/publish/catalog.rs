//! The DCAT-AP catalogue of a release (`catalog.jsonld`), for national open-data portals to harvest.

use serde_json::{Value, json};

use super::Table;
use super::files::{DATAPACKAGE, FORMATS, Written};
use crate::config::PublishSettings;
use crate::warehouse::manifest::Manifest;

/// File name of the catalogue in a release.
pub const FILE: &str = "catalog.jsonld";

const EU_FREQUENCY: &str = "http://publications.europa.eu/resource/authority/frequency/";
const EU_FILE_TYPE: &str = "http://publications.europa.eu/resource/authority/file-type/";
const IANA_MEDIA_TYPES: &str = "https://www.iana.org/assignments/media-types/";

fn text(et: &str, en: &str) -> Value {
    json!([{ "@value": et, "@language": "et" }, { "@value": en, "@language": "en" }])
}

/// The catalogue: one `dcat:Dataset` per dataset, one `dcat:Distribution` per file.
pub fn catalog(
    tables: &[Table],
    written: &[Written],
    publish: &PublishSettings,
    manifest: &Manifest,
    release: &str,
) -> Value {
    let base = &publish.base_url;
    let release_url = format!("{base}{}/{release}/", super::site::RELEASES);
    let publisher = json!({ "@type": "foaf:Agent", "foaf:name": publish.publisher });
    let issued = json!({ "@value": chrono::Utc::now().format("%Y-%m-%d").to_string(), "@type": "xsd:date" });
    let datasets: Vec<Value> = tables
        .iter()
        .map(|t| {
            let d = &t.dataset;
            let m = &d.meta;
            let file = |name: &str| written.iter().find(|w| w.path == format!("{}/{name}", d.name));
            let distribution = |name: String, format: &str, media_type: &str| -> Option<Value> {
                let w = file(&name)?;
                let url = format!("{release_url}{}", w.path);
                Some(json!({
                    "@id": url,
                    "@type": "dcat:Distribution",
                    "dct:title": text(&format!("{} ({format})", m.title.et), &format!("{} ({format})", m.title.en)),
                    "dcat:accessURL": { "@id": url },
                    "dcat:downloadURL": { "@id": url },
                    "dct:format": { "@id": format!("{EU_FILE_TYPE}{format}") },
                    "dcat:mediaType": { "@id": format!("{IANA_MEDIA_TYPES}{media_type}") },
                    "dcat:byteSize": { "@value": w.bytes.to_string(), "@type": "xsd:nonNegativeInteger" },
                    "spdx:checksum": {
                        "@type": "spdx:Checksum",
                        "spdx:algorithm": { "@id": "spdx:checksumAlgorithm_sha256" },
                        "spdx:checksumValue": w.sha256,
                    },
                    "dct:license": { "@id": m.licence.url },
                }))
            };
            let mut distributions: Vec<Value> = FORMATS
                .iter()
                .filter_map(|f| distribution(format!("{}.{}", d.name, f.extension), f.eu_file_type, f.media_type))
                .collect();
            distributions.extend(distribution(DATAPACKAGE.to_owned(), "JSON", "application/json").map(|mut v| {
                v["dct:conformsTo"] = json!({ "@id": "https://specs.frictionlessdata.io/data-package/" });
                v
            }));
            let keywords: Vec<Value> = m
                .keywords
                .et
                .iter()
                .map(|k| json!({ "@value": k, "@language": "et" }))
                .chain(m.keywords.en.iter().map(|k| json!({ "@value": k, "@language": "en" })))
                .collect();
            json!({
                "@id": format!("{base}{}/index.html#{}", super::site::LATEST, d.name),
                "@type": "dcat:Dataset",
                "dct:identifier": d.name,
                "dct:title": text(&m.title.et, &m.title.en),
                "dct:description": text(&m.description.et, &m.description.en),
                "dcat:keyword": keywords,
                "dct:license": { "@id": m.licence.url },
                "dct:accrualPeriodicity": { "@id": format!("{EU_FREQUENCY}{}", m.update_frequency.eu_code()) },
                "dct:publisher": publisher,
                "dct:modified": issued,
                "dcat:landingPage": { "@id": format!("{base}{}/index.html#{}", super::site::LATEST, d.name) },
                "dct:provenance": {
                    "@type": "dct:ProvenanceStatement",
                    "rdfs:label": format!(
                        "ladu warehouse version {}, committed {}; cells of fewer than {} persons suppressed",
                        manifest.version, manifest.committed_at, publish.threshold
                    ),
                },
                "dcat:distribution": distributions,
            })
        })
        .collect();
    json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
            "spdx": "http://spdx.org/rdf/terms#",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
        },
        "@id": format!("{release_url}{FILE}"),
        "@type": "dcat:Catalog",
        "dct:title": text(&publish.title_et, &publish.title_en),
        "dct:description": text(
            "Tervise infosüsteemi andmeaida avaandmed (tervise infosüsteemi seadus § 14 lg 3): koondandmed, milles alla lävendi isikute lahtrid on peidetud.",
            "Open data of the health information system's data warehouse (Health Information System Act § 14(3)): aggregates in which cells of fewer persons than the threshold are suppressed.",
        ),
        "dct:publisher": publisher,
        "dct:issued": issued,
        "dct:modified": issued,
        "foaf:homepage": { "@id": format!("{base}{}/index.html", super::site::LATEST) },
        "dcat:dataset": datasets,
    })
}
