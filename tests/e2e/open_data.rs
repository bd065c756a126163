//! Statistics and open data: `ladu stats` and `ladu publish`, checked with frictionless, rdflib, pyarrow, an attacker and Chromium.

use std::path::{Path, PathBuf};

use crate::util::*;

/// Metadata of a dataset with these (column, role) pairs.
fn meta(universe: &str, main_measure: &str, columns: &[(&str, &str)]) -> String {
    let mut m = format!(
        "universe = \"{universe}\"\nupdate_frequency = \"monthly\"\nmain_measure = \"{main_measure}\"\n\
         title = {{ et = \"x\", en = \"x\" }}\ndescription = {{ et = \"x\", en = \"x\" }}\n\
         keywords = {{ et = [\"x\"], en = [\"x\"] }}\n\
         licence = {{ id = \"CC0-1.0\", title = \"CC0\", url = \"https://creativecommons.org/publicdomain/zero/1.0/\" }}\n"
    );
    for (name, role) in columns {
        m.push_str(&format!("[columns.{name}]\nrole = \"{role}\"\ndescription = {{ et = \"x\", en = \"x\" }}\n"));
    }
    m
}

/// A workspace with `rows` generated rows per source ingested.
fn ingested(rows: usize) -> Workspace {
    let ws = Workspace::new();
    ws.sample(rows, 5, &[]);
    ws.ok(&["ingest"]);
    ws
}

fn latest(ws: &Workspace) -> PathBuf {
    let link = ws.root().join("site/latest");
    let target = std::fs::read_link(&link).expect("site/latest is a symbolic link");
    ws.root().join("site").join(target)
}

fn dataset_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(REPO).join("queries/open_data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn statistics_are_committed_tables_that_sql_reads() {
    let ws = ingested(400);
    let out = ws.ok(&["stats"]);
    let text = stdout(&out);
    for name in ["waiting_times", "ambulance_response", "sick_leave", "dispensations", "invoices", "screening"] {
        assert!(text.contains(&format!("stats_{name} ")), "{text}");
    }
    // The statistic adds up to the table it counts.
    let invoices = ws.sql_rows(None, "SELECT count(*) FROM treatment_invoices");
    assert_eq!(ws.sql_rows(None, "SELECT sum(invoices) FROM stats_invoices"), invoices);
    let certificates = ws.sql_rows(None, "SELECT count(*), sum(days) FROM sick_leave_days");
    assert_eq!(ws.sql_rows(None, "SELECT sum(certificates), sum(days) FROM stats_sick_leave"), certificates);
    let listing = stdout(&ws.ok(&["sql", "--format", "csv", "-c", "\\d"]));
    assert!(listing.lines().any(|l| l.starts_with("stats_invoices,statistic,")), "{listing}");
    assert!(!listing.contains("stats_invoices_history"));
    // Nothing changed: nothing is recomputed or committed.
    let before = ws.manifest_versions();
    assert!(stdout(&ws.ok(&["stats"])).contains("stats_invoices                           unchanged"));
    assert_eq!(ws.manifest_versions(), before);
    // A changed query is recomputed, and replaces the statistic whole: one file, in the folder the issue names.
    let query = ws.root().join("queries/statistics/invoices.sql");
    std::fs::write(&query, std::fs::read_to_string(&query).unwrap() + "\n-- (changed)").unwrap();
    assert!(stdout(&ws.ok(&["stats"])).contains("stats_screening                          unchanged"));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.warehouse().join("_ladu/manifest").join(ws.manifest_versions().last().unwrap()))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["version"], 3);
    let files = manifest["tables"]["stats_invoices"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0]["path"].as_str().unwrap().starts_with("stats/invoices/part-0000000003-"), "{files:?}");
    assert_eq!(manifest["tables"]["stats_invoices"]["statistic"]["from_version"], 1, "the ingest's version");
    assert_eq!(manifest["tables"]["stats_screening"]["files"][0]["commit"], 2, "unchanged, not rewritten");
    let entries = ws.audit_entries();
    let stats: Vec<_> = entries.iter().filter(|e| e["kind"] == "stats").collect();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0]["statistics"].as_array().unwrap().len(), 6);
    // Unknown names are a usage error; nothing is committed.
    let before = ws.manifest_versions();
    let out = ws.expect(&["stats", "--only", "nope"], 3);
    assert!(stderr(&out).contains("unknown statistic `nope`"), "{}", stderr(&out));
    assert_eq!(ws.manifest_versions(), before);
}

#[test]
fn statistics_and_datasets_wait_for_their_data_and_a_broken_one_commits_nothing() {
    let ws = Workspace::new();
    ws.sample(200, 3, &["--only", "treatment_invoices", "--only", "population"]);
    ws.ok(&["ingest"]);
    let text = stdout(&ws.ok(&["stats"]));
    assert!(text.contains("stats_invoices"), "{text}");
    assert!(text.contains("stats_waiting_times                      skipped: table waiting_list"), "{text}");
    assert_eq!(ws.sql_rows(None, "SELECT count(*) > 0 FROM stats_invoices"), [["true"]]);
    // Publishing likewise leaves out what waits for data; a dataset whose temporal column's
    // table has none yet is published without a temporal coverage.
    let meta = ws.root().join("queries/open_data/invoices_by_diagnosis_age_sex.toml");
    let text = std::fs::read_to_string(&meta).unwrap();
    assert!(text.contains("table = \"treatment_invoices\""));
    std::fs::write(&meta, text.replace("table = \"treatment_invoices\"", "table = \"sick_leave\"")).unwrap();
    let text = stdout(&ws.ok(&["publish"]));
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(latest(&ws).join("catalog.jsonld")).unwrap()).unwrap();
    let temporal = |name: &str| {
        let datasets = catalog["dcat:dataset"].as_array().unwrap();
        datasets.iter().find(|d| d["dct:identifier"] == name).unwrap()["dct:temporal"].is_object()
    };
    assert!(!temporal("invoices_by_diagnosis_age_sex") && temporal("invoices_by_care_type_age_sex"));
    assert!(text.contains("sick_leave_by_diagnosis                  left out: table sick_leave has no"), "{text}");
    assert!(latest(&ws).join("invoices_by_care_type_age_sex").is_dir());
    assert!(!latest(&ws).join("sick_leave_by_diagnosis").exists());
    catalogues_conform(&ws);
    let before = ws.manifest_versions();
    std::fs::write(ws.root().join("queries/statistics/zz_broken.sql"), "-- Broken.\nSELECT nope FROM population")
        .unwrap();
    let out = ws.expect(&["stats"], 1);
    assert!(stderr(&out).contains("zz_broken.sql"), "{}", stderr(&out));
    assert_eq!(ws.manifest_versions(), before, "a failed run commits nothing");
    std::fs::write(ws.root().join("queries/statistics/zz_broken.sql"), "SELECT 1").unwrap();
    let out = ws.expect(&["stats"], 3);
    assert!(stderr(&out).contains("start the file with a `--` comment"), "{}", stderr(&out));
}

#[test]
fn a_release_is_complete_valid_and_described() {
    within_one_day(|| {
        let ws = ingested(2000);
        ws.ok(&["stats"]);
        let out = ws.ok(&["publish"]);
        let release = latest(&ws);
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        assert_eq!(release.file_name().unwrap().to_string_lossy(), today, "{}", stdout(&out));
        let names = dataset_names();
        assert!(names.len() >= 5);
        for name in &names {
            for file in
                [format!("{name}.csv"), format!("{name}.json"), format!("{name}.parquet"), "datapackage.json".into()]
            {
                assert!(release.join(name).join(&file).is_file(), "{name}/{file} missing");
            }
        }
        for file in ["index.html", "catalog.jsonld", "SHA256SUMS"] {
            assert!(release.join(file).is_file());
        }
        let summary = py("open_data.py", &["check", release.to_str().unwrap(), "5"]);
        let summary: serde_json::Value = serde_json::from_str(summary.lines().last().unwrap()).unwrap();
        assert_eq!(summary["datasets"], names.len());
        assert_eq!(summary["distributions"], 4 * names.len());
        assert!(summary["suppressed"].as_u64().unwrap() > 0, "the sample has small cells: {summary}");
        assert!(summary["rows"].as_u64().unwrap() > summary["suppressed"].as_u64().unwrap(), "{summary}");
        // Temporal coverage in whole months: no single event's date is published.
        let catalog: serde_json::Value =
            serde_json::from_slice(&std::fs::read(release.join("catalog.jsonld")).unwrap()).unwrap();
        for d in catalog["dcat:dataset"].as_array().unwrap() {
            let start = d["dct:temporal"]["dcat:startDate"]["@value"].as_str().unwrap_or_default();
            let end = chrono::NaiveDate::parse_from_str(
                d["dct:temporal"]["dcat:endDate"]["@value"].as_str().unwrap(),
                "%Y-%m-%d",
            )
            .unwrap();
            assert!(start.ends_with("-01") && start.as_bytes() < end.to_string().as_bytes(), "{d}");
            assert_eq!(end.succ_opt().unwrap().format("%d").to_string(), "01", "{d}");
        }
        // The audit entry names the release, its datasets and every file's checksum.
        let entries = ws.audit_entries();
        let entry = entries.iter().rfind(|e| e["kind"] == "publish").unwrap();
        assert_eq!(entry["release"], today);
        assert_eq!(entry["datasets"].as_array().unwrap().len(), names.len());
        let sums = std::fs::read_to_string(release.join("SHA256SUMS")).unwrap();
        for line in sums.lines() {
            let (digest, path) = line.split_once("  ").unwrap();
            assert_eq!(entry["files"][path], digest, "{path}");
        }
    });
}

/// The unsuppressed results of every dataset, computed with `ladu sql`.
fn truth(ws: &Workspace) -> PathBuf {
    let dir = ws.root().join("truth");
    std::fs::create_dir_all(&dir).unwrap();
    for name in dataset_names() {
        let query = ws.root().join(format!("queries/open_data/{name}.sql"));
        let out = dir.join(format!("{name}.csv"));
        ws.ok(&["sql", "--format", "csv", "--output", out.to_str().unwrap(), "-f", query.to_str().unwrap()]);
    }
    dir
}

#[test]
fn an_attacker_recovers_no_suppressed_cell() {
    // Enough rows that most cells are published, so the secondary cells matter.
    let ws = ingested(4000);
    ws.ok(&["publish"]);
    let release = latest(&ws);
    let truth = truth(&ws);
    let queries = ws.root().join("queries/open_data");
    let args = [release.to_str().unwrap(), queries.to_str().unwrap(), truth.to_str().unwrap()];
    let out = py_output("open_data.py", &[&["attack"][..], &args].concat());
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    // The attack works: without the secondary cells it recovers primary ones, exactly.
    let out = py_output("open_data.py", &[&["attack"][..], &args, &["--drop-secondary"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).lines().any(|l| l.contains("(primary)") && l.ends_with("equal)")), "{}", stdout(&out));
    // And no published count is below the threshold (also checked by `check`).
    let summary = py("open_data.py", &["check", release.to_str().unwrap(), "5"]);
    assert!(summary.contains("\"datasets\""));
}

#[test]
fn the_site_holds_no_pseudonym_and_no_raw_value() {
    let ws = ingested(600);
    ws.ok(&["publish"]);
    let site = ws.root().join("site");
    py("open_data.py", &["pseudonyms", ws.warehouse().to_str().unwrap(), site.to_str().unwrap()]);
    py("scan.py", &[ws.root().join("inbox").to_str().unwrap(), site.to_str().unwrap()]);
}

#[test]
fn a_failed_publish_leaves_the_previous_release() {
    within_one_day(|| {
        let ws = ingested(300);
        ws.ok(&["publish"]);
        let site = ws.root().join("site");
        let first = std::fs::read_link(site.join("latest")).unwrap();
        let listing = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
            files_under(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
        };
        let before = listing(&site);
        let query = ws.root().join("queries/open_data/sick_leave_by_diagnosis.sql");
        let good = std::fs::read_to_string(&query).unwrap();
        std::fs::write(&query, good.replace("sum(days)", "sum(no_such_column)")).unwrap();
        let out = ws.expect(&["publish"], 1);
        assert!(stderr(&out).contains("open dataset sick_leave_by_diagnosis failed"), "{}", stderr(&out));
        assert_eq!(listing(&site), before, "the site is as it was");
        // A dataset that would publish pseudonyms is refused before anything is written.
        std::fs::write(
            &query,
            "-- Persons.\nSELECT person_id AS who, leave_type, count(*) AS persons FROM sick_leave GROUP BY 1, 2",
        )
        .unwrap();
        let meta = query.with_extension("toml");
        let good_meta = std::fs::read_to_string(&meta).unwrap();
        let bad_meta = self::meta(
            "sick-leave certificates",
            "persons",
            &[("who", "dimension"), ("leave_type", "dimension"), ("persons", "persons")],
        );
        std::fs::write(&meta, bad_meta).unwrap();
        let out = ws.expect(&["publish"], 1);
        assert!(stderr(&out).contains("column who holds values shaped like pseudonyms"), "{}", stderr(&out));
        assert_eq!(listing(&site), before);
        // Fixed, the next release goes beside the first, which stays as it was.
        std::fs::write(&query, &good).unwrap();
        std::fs::write(&meta, &good_meta).unwrap();
        ws.ok(&["publish"]);
        let second = std::fs::read_link(site.join("latest")).unwrap();
        assert_ne!(first, second);
        assert!(second.to_string_lossy().ends_with(".2"), "{second:?}");
        let old = site.join(&first);
        for (path, bytes) in before.iter().filter(|(p, _)| p.starts_with(&old)) {
            assert_eq!(&std::fs::read(path).unwrap(), bytes, "{path:?} changed");
        }
        assert!(!files_under(&site).iter().any(|p| p.to_string_lossy().contains(".partial")));
        // Both releases' catalogues conform; the second says the datasets were first issued with the first.
        catalogues_conform(&ws);
        let catalog: serde_json::Value =
            serde_json::from_slice(&std::fs::read(site.join(&second).join("catalog.jsonld")).unwrap()).unwrap();
        let day = first.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(catalog["dcat:dataset"][0]["dct:issued"]["@value"], day);
    });
}

#[test]
fn bad_dataset_definitions_are_refused_with_their_file() {
    let ws = ingested(100);
    let dir = ws.root().join("queries/open_data");
    // (what is wrong, text replaced, by what, the error says)
    let cases = [
        ("main measure", "main_measure = \"cost\"", "main_measure = \"care_type\"", "main_measure"),
        ("undescribed column", "[columns.sex]", "[columns.gender]", "not described"),
        ("identifier column", "[columns.sex]", "[columns.sex_id]", "no identifiers"),
        ("temporal column", "column = \"start_date\"", "column = \"x\\\" FROM y --\"", "temporal.table"),
    ];
    let meta = dir.join("invoices_by_care_type_age_sex.toml");
    let good = std::fs::read_to_string(&meta).unwrap();
    for (what, from, to, message) in cases {
        assert!(good.contains(from), "{what}");
        std::fs::write(&meta, good.replace(from, to)).unwrap();
        let out = ws.expect(&["publish"], 3);
        assert!(stderr(&out).contains(message), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains("invoices_by_care_type_age_sex"), "{what}: {}", stderr(&out));
    }
    std::fs::write(&meta, &good).unwrap();
    // Two datasets of one universe, one's dimensions within the other's: refused.
    let inner = dir.join("invoices_by_age_sex");
    std::fs::write(
        inner.with_extension("sql"),
        "-- Inner.\nSELECT age_band, sex, count(*) AS invoices, count(DISTINCT person_id) AS persons \
         FROM invoices_with_patient GROUP BY 1, 2",
    )
    .unwrap();
    let columns = [("age_band", "dimension"), ("sex", "dimension"), ("invoices", "measure"), ("persons", "persons")];
    std::fs::write(inner.with_extension("toml"), self::meta("treatment invoices", "invoices", &columns)).unwrap();
    let out = ws.expect(&["publish"], 3);
    assert!(stderr(&out).contains("invoices_by_age_sex and invoices_by_care_type_age_sex"), "{}", stderr(&out));
    assert!(!ws.root().join("site/latest").exists());
}

#[test]
fn the_page_reads_in_a_browser() {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(chromium.exists(), "Debian's chromium is needed (`.ci/run` installs it: apt-get install chromium)");
    let ws = ingested(1000);
    ws.ok(&["publish"]);
    let site = ws.root().join("site");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new(python())
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&site)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/latest/index.html");
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the HTTP server did not start");
    let profile = tempfile::tempdir().unwrap();
    let browser = |extra: &[&str]| {
        std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let dom = browser(&["--dump-dom"]);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("open-data-index.png");
    let shot = browser(&["--window-size=1200,2400", &format!("--screenshot={}", screenshot.display())]);
    let _ = server.kill();
    let _ = server.wait();
    let dom = stdout(&dom);
    assert!(dom.contains("Open data of the health information system"), "{dom}");
    for name in dataset_names() {
        let meta: toml::Value =
            toml::from_str(&std::fs::read_to_string(ws.root().join(format!("queries/open_data/{name}.toml"))).unwrap())
                .unwrap();
        for lang in ["et", "en"] {
            let title = meta["title"][lang].as_str().unwrap();
            assert!(dom.contains(title), "{name}: title {title:?} not on the page");
        }
        for file in
            [format!("{name}.csv"), format!("{name}.json"), format!("{name}.parquet"), "datapackage.json".into()]
        {
            let href = format!("href=\"{name}/{file}\"");
            assert!(dom.contains(&href), "{name}: no link {href}");
            assert!(latest(&ws).join(&name).join(&file).is_file(), "{name}/{file}: the link leads nowhere");
        }
        assert!(dom.contains(&format!("<section id=\"{name}\">")), "{name}");
    }
    assert!(dom.matches("<svg").count() >= dataset_names().len(), "a chart per dataset");
    let png = std::fs::read(&screenshot).unwrap_or_default();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "no screenshot: {}", stderr(&shot));
}
