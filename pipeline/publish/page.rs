//! The release's `index.html`: each dataset in Estonian and English, with downloads and a chart of its main measure.

use std::fmt::Write;

use arrow::array::{Array, Float64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use super::Table;
use super::files::{DATAPACKAGE, FORMATS, Written};
use crate::config::PublishSettings;
use crate::warehouse::manifest::Manifest;

/// Bars in a dataset's chart.
const BARS: usize = 12;

/// Escape text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(
    tables: &[Table],
    written: &[Written],
    publish: &PublishSettings,
    manifest: &Manifest,
    release: &str,
) -> String {
    let mut h = String::new();
    let e = escape;
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="et">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title_et} / {title_en}</title>
<link rel="alternate" type="application/ld+json" href="catalog.jsonld">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.25rem; margin-top: 2.5rem; border-top: 1px solid #ccc; padding-top: 1rem; }}
.en {{ color: #555; }} dl {{ display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }} dt {{ font-weight: 600; }}
ul.downloads {{ list-style: none; padding: 0; display: flex; gap: 1rem; flex-wrap: wrap; }}
svg text {{ font-size: 11px; fill: #1b1b1b; }} svg rect {{ fill: #2a6ebb; }}
</style>
</head>
<body>
<header>
<h1><span lang="et">{title_et}</span><br><span lang="en" class="en">{title_en}</span></h1>
<p lang="et">Väljalase {release}. Andmed seisuga {data_as_of} (andmeaida versioon {version}). Lahtrid, mis põhinevad vähem kui {threshold} isikul, on peidetud (veerg <code>suppression</code> = <code>primary</code>), samuti lahtrid, millest peidetud väärtusi saaks summade abil tuletada (<code>secondary</code>). Masinloetav kataloog: <a href="catalog.jsonld">catalog.jsonld</a> (DCAT-AP), kontrollsummad: <a href="SHA256SUMS">SHA256SUMS</a>.</p>
<p lang="en" class="en">Release {release}. Data as of {data_as_of} (warehouse version {version}). Cells based on fewer than {threshold} persons are suppressed (column <code>suppression</code> = <code>primary</code>), and so are cells from which a suppressed value could be derived through totals (<code>secondary</code>). Machine-readable catalogue: <a href="catalog.jsonld">catalog.jsonld</a> (DCAT-AP); checksums: <a href="SHA256SUMS">SHA256SUMS</a>.</p>
</header>
<main>
"#,
        title_et = e(&publish.title_et),
        title_en = e(&publish.title_en),
        release = e(release),
        data_as_of = e(&manifest.committed_at),
        version = manifest.version,
        threshold = publish.threshold,
    );
    for t in tables {
        let d = &t.dataset;
        let m = &d.meta;
        let _ = write!(
            h,
            r#"<section id="{id}">
<h2><span lang="et">{title_et}</span><br><span lang="en" class="en">{title_en}</span></h2>
<p lang="et">{desc_et}</p>
<p lang="en" class="en">{desc_en}</p>
<dl>
<dt>Litsents / Licence</dt><dd><a href="{licence_url}" rel="license">{licence_title}</a></dd>
<dt>Uuendatud / Last update</dt><dd>{data_as_of}</dd>
<dt>Ridu / Rows</dt><dd class="rows">{rows}</dd>
<dt>Peidetud / Suppressed</dt><dd>{primary} primary, {secondary} secondary</dd>
</dl>
<ul class="downloads">
"#,
            id = e(&d.name),
            title_et = e(&m.title.et),
            title_en = e(&m.title.en),
            desc_et = e(&m.description.et),
            desc_en = e(&m.description.en),
            licence_url = e(&m.licence.url),
            licence_title = e(&m.licence.title),
            data_as_of = e(&manifest.committed_at),
            rows = t.rows(),
            primary = t.primary,
            secondary = t.secondary,
        );
        let files = FORMATS
            .iter()
            .map(|f| (format!("{}.{}", d.name, f.extension), f.eu_file_type))
            .chain([(DATAPACKAGE.to_owned(), "Data Package")]);
        for (file, label) in files {
            let path = format!("{}/{file}", d.name);
            let size = written.iter().find(|w| w.path == path).map_or(0, |w| w.bytes);
            let _ = writeln!(h, r#"<li><a href="{}">{}</a> ({})</li>"#, e(&path), e(label), human_size(size));
        }
        h.push_str("</ul>\n");
        h.push_str(&chart(t));
        h.push_str("</section>\n");
    }
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// A bar chart of the main measure: the published cells with the largest values.
fn chart(t: &Table) -> String {
    let d = &t.dataset;
    let measure = &d.meta.main_measure;
    let batch = &t.batch;
    let Ok(values) = batch.schema().index_of(measure).map(|i| batch.column(i).clone()) else { return String::new() };
    let Ok(values) = cast(&values, &DataType::Float64) else { return String::new() };
    let values = values.as_any().downcast_ref::<Float64Array>().expect("cast to Float64");
    let dims: Vec<_> = d
        .dimensions()
        .iter()
        .filter_map(|n| batch.schema().index_of(n).ok())
        .filter_map(|i| cast(batch.column(i), &DataType::Utf8).ok())
        .collect();
    let label = |r: usize| -> String {
        dims.iter()
            .map(|a| {
                let a = a.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
                if a.is_valid(r) { a.value(r).to_owned() } else { "–".to_owned() }
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let mut rows: Vec<(usize, f64)> =
        (0..values.len()).filter(|&r| values.is_valid(r)).map(|r| (r, values.value(r))).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    rows.truncate(BARS);
    let column = &d.meta.columns[measure];
    let caption = format!(
        "{} / {}: {} ({})",
        escape(&column.description.et),
        escape(&column.description.en),
        escape(measure),
        if rows.is_empty() { "kõik lahtrid peidetud / every cell suppressed" } else { "suurimad / largest" }
    );
    let max = rows.iter().map(|r| r.1).fold(0.0_f64, f64::max);
    let (bar_h, label_w, bar_w) = (18, 260.0, 380.0);
    let height = rows.len() * bar_h + 4;
    let mut s = format!(
        r#"<figure><figcaption>{caption}</figcaption>
<svg role="img" aria-label="{caption}" width="{}" height="{height}" viewBox="0 0 {} {height}" xmlns="http://www.w3.org/2000/svg">
"#,
        label_w + bar_w + 80.0,
        label_w + bar_w + 80.0,
    );
    for (i, (r, v)) in rows.iter().enumerate() {
        let y = i * bar_h;
        let w = if max > 0.0 { (v / max * bar_w).max(1.0) } else { 1.0 };
        let _ = writeln!(
            s,
            r#"<text x="{tx}" y="{ty}" text-anchor="end">{label}</text><rect x="{x}" y="{y}" width="{w:.1}" height="{h}"/><text x="{vx:.1}" y="{ty}">{value}</text>"#,
            tx = label_w - 6.0,
            ty = y + 13,
            label = escape(&label(*r)),
            x = label_w,
            h = bar_h - 4,
            vx = label_w + w + 4.0,
            value = format_value(*v),
        );
    }
    s.push_str("</svg></figure>\n");
    s
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
