//! The DCAT-AP 3 catalogue of a release (`catalog.jsonld`), for national open-data portals to harvest.
//!
//! Every node DCAT-AP constrains by class is typed, and the controlled terms
//! are the EU Publications Office's authority tables (file types,
//! frequencies, licences, countries, languages, data themes), as portals
//! expect; the labels the page shows ride beside them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Table;
use super::dataset::Licence;
use super::files::{DATAPACKAGE, FORMATS, Written};
use crate::config::PublishSettings;
use crate::warehouse::manifest::Manifest;

/// File name of the catalogue in a release.
pub const FILE: &str = "catalog.jsonld";

const EU_AUTHORITY: &str = "http://publications.europa.eu/resource/authority/";
const IANA_MEDIA_TYPES: &str = "https://www.iana.org/assignments/media-types/";
const FRICTIONLESS_PACKAGE: &str = "https://specs.frictionlessdata.io/data-package/";

/// SPDX licence identifiers and their terms in the EU licence table.
const EU_LICENCES: [(&str, &str); 6] = [
    ("CC-BY-4.0", "CC_BY_4_0"),
    ("CC-BY-SA-4.0", "CC_BYSA_4_0"),
    ("CC-BY-ND-4.0", "CC_BYND_4_0"),
    ("CC-BY-NC-4.0", "CC_BYNC_4_0"),
    ("CC-BY-3.0", "CC_BY_3_0"),
    ("CC0-1.0", "CC0"),
];

fn text(et: &str, en: &str) -> Value {
    json!([{ "@value": et, "@language": "et" }, { "@value": en, "@language": "en" }])
}

fn date(day: &str) -> Value {
    json!({ "@value": day, "@type": "xsd:date" })
}

/// A term of an EU authority table, typed as DCAT-AP's range for it.
fn authority(table: &str, code: &str, class: &str) -> Value {
    json!({ "@id": format!("{EU_AUTHORITY}{table}/{code}"), "@type": class })
}

fn document(url: &str) -> Value {
    json!({ "@id": url, "@type": "foaf:Document" })
}

/// The licence as the EU licence table names it where it has the term, else its own page; with its title.
fn licence(l: &Licence) -> Value {
    let id = match EU_LICENCES.iter().find(|(spdx, _)| *spdx == l.id) {
        Some((_, eu)) => format!("{EU_AUTHORITY}licence/{eu}"),
        None => l.url.clone(),
    };
    json!({ "@id": id, "@type": "dct:LicenseDocument", "dct:title": l.title, "rdfs:seeAlso": { "@id": l.url } })
}

/// The catalogue: one `dcat:Dataset` per dataset, one `dcat:Distribution` per file.
/// `first_issued` gives, per dataset, the date of the oldest release that holds it.
pub fn catalog(
    tables: &[Table],
    written: &[Written],
    publish: &PublishSettings,
    manifest: &Manifest,
    release: &str,
    first_issued: &BTreeMap<String, String>,
) -> Value {
    let base = &publish.base_url;
    let release_url = format!("{base}{}/{release}/", super::site::RELEASES);
    let latest_page = format!("{base}{}/index.html", super::site::LATEST);
    let publisher = json!({ "@type": "foaf:Agent", "foaf:name": publish.publisher });
    let mut contact = json!({ "@type": ["vcard:Kind", "vcard:Organization"], "vcard:fn": publish.publisher });
    match &publish.contact_email {
        Some(email) => contact["vcard:hasEmail"] = json!({ "@id": format!("mailto:{email}") }),
        None => contact["vcard:hasURL"] = json!({ "@id": latest_page }),
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let languages = json!([
        authority("language", "EST", "dct:LinguisticSystem"),
        authority("language", "ENG", "dct:LinguisticSystem"),
    ]);
    let country = authority("country", &publish.country, "dct:Location");
    let theme = json!({
        "@id": format!("{EU_AUTHORITY}data-theme/HEAL"),
        "@type": "skos:Concept",
        "skos:prefLabel": text("Tervis", "Health"),
        "skos:inScheme": { "@id": format!("{EU_AUTHORITY}data-theme") },
    });
    let datasets: Vec<Value> = tables
        .iter()
        .map(|t| {
            let d = &t.dataset;
            let m = &d.meta;
            let issued = first_issued.get(&d.name).unwrap_or(&today);
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
                    "dct:format": {
                        "@id": format!("{EU_AUTHORITY}file-type/{format}"),
                        "@type": "dct:MediaTypeOrExtent",
                        "skos:prefLabel": format,
                    },
                    "dcat:mediaType": { "@id": format!("{IANA_MEDIA_TYPES}{media_type}"), "@type": "dct:MediaType" },
                    "dcat:byteSize": { "@value": w.bytes.to_string(), "@type": "xsd:nonNegativeInteger" },
                    "spdx:checksum": {
                        "@type": "spdx:Checksum",
                        "spdx:algorithm": { "@id": "spdx:checksumAlgorithm_sha256", "@type": "spdx:ChecksumAlgorithm" },
                        "spdx:checksumValue": { "@value": w.sha256, "@type": "xsd:hexBinary" },
                    },
                    "dct:license": licence(&m.licence),
                    "dct:issued": date(&today),
                    "dct:modified": date(&today),
                }))
            };
            let mut distributions: Vec<Value> = FORMATS
                .iter()
                .filter_map(|f| distribution(format!("{}.{}", d.name, f.extension), f.eu_file_type, f.media_type))
                .collect();
            distributions.extend(distribution(DATAPACKAGE.to_owned(), "JSON", "application/json").map(|mut v| {
                v["dct:conformsTo"] = json!({
                    "@id": FRICTIONLESS_PACKAGE,
                    "@type": "dct:Standard",
                    "dct:title": "Frictionless Data Package",
                });
                v
            }));
            let keywords: Vec<Value> = m
                .keywords
                .et
                .iter()
                .map(|k| json!({ "@value": k, "@language": "et" }))
                .chain(m.keywords.en.iter().map(|k| json!({ "@value": k, "@language": "en" })))
                .collect();
            let page = format!("{latest_page}#{}", d.name);
            let mut dataset = json!({
                "@id": page,
                "@type": "dcat:Dataset",
                "dct:identifier": d.name,
                "dct:title": text(&m.title.et, &m.title.en),
                "dct:description": text(&m.description.et, &m.description.en),
                "dcat:keyword": keywords,
                "dcat:theme": theme,
                "dct:accrualPeriodicity": {
                    "@id": format!("{EU_AUTHORITY}frequency/{}", m.update_frequency.eu_code()),
                    "@type": "dct:Frequency",
                    "skos:prefLabel": m.update_frequency.label(),
                },
                "dct:publisher": publisher,
                "dcat:contactPoint": contact,
                "dct:issued": date(issued),
                "dct:modified": date(&today),
                "dct:language": languages,
                "dct:spatial": country,
                "dcat:landingPage": document(&page),
                "dct:provenance": {
                    "@type": "dct:ProvenanceStatement",
                    "rdfs:label": format!(
                        "ladu warehouse version {}, committed {}; cells of fewer than {} persons suppressed",
                        manifest.version, manifest.committed_at, publish.threshold
                    ),
                },
                "dcat:distribution": distributions,
            });
            if let Some((start, end)) = t.coverage {
                dataset["dct:temporal"] = json!({
                    "@type": "dct:PeriodOfTime",
                    "dcat:startDate": date(&start.to_string()),
                    "dcat:endDate": date(&end.to_string()),
                });
            }
            dataset
        })
        .collect();
    json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
            "skos": "http://www.w3.org/2004/02/skos/core#",
            "spdx": "http://spdx.org/rdf/terms#",
            "vcard": "http://www.w3.org/2006/vcard/ns#",
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
        "dct:issued": date(first_issued.values().min().unwrap_or(&today)),
        "dct:modified": date(&today),
        "dct:language": languages,
        "dct:spatial": country,
        "dcat:themeTaxonomy": {
            "@id": format!("{EU_AUTHORITY}data-theme"),
            "@type": "skos:ConceptScheme",
            "dct:title": text("Andmeteemad", "Data theme"),
        },
        "foaf:homepage": document(&latest_page),
        "dcat:dataset": datasets,
    })
}
