//! `ladu release` and `ladu releases`: release pseudonyms per recipient, the risk check, the account of disclosures.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::*;

/// The person columns' pseudonyms the warehouse holds.
fn warehouse_pseudonyms(ws: &Workspace) -> BTreeSet<String> {
    let rows = ws.sql_rows(
        None,
        "select person_id from treatment_invoices_history union select record_id from treatment_invoices_history \
         union select person_id from population_history",
    );
    rows.into_iter().map(|r| r[0].clone()).collect()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

/// The personal codes of the delivered population file.
fn codes(ws: &Workspace) -> Vec<String> {
    let text = std::fs::read_to_string(ws.inbox("population").join("population_20240331.csv")).unwrap();
    text.lines().skip(1).map(|l| l.split(';').next().unwrap().trim().trim_start_matches('\'').to_owned()).collect()
}

const INVOICES: &str = "-- invoices with the patient's sex\n\
    select i.person_id, i.record_id, i.care_type, i.amount, p.sex\n\
    from treatment_invoices i join population p on p.person_id = i.person_id\n";

#[test]
fn each_recipient_gets_its_own_pseudonyms_matching_python() {
    let ws = Workspace::new();
    ws.sample(400, 21, &["--only", "population", "--only", "treatment_invoices", "--invalid", "0"]);
    ws.ok(&["ingest"]);
    let query = write(&ws.root().join("q.sql"), INVOICES);
    let a = ws.root().join("out/tartu");
    let b = ws.root().join("out/tai");
    let out = ws.ok(&[
        "release",
        "--recipient",
        "tartu-uni",
        "--query",
        &query,
        "--out",
        a.to_str().unwrap(),
        "--request-id",
        "REQ-7",
    ]);
    assert!(stdout(&out).contains("release pseudonyms in person_id, record_id"), "{}", stdout(&out));
    ws.ok(&["release", "--recipient", "tai", "--query", &query, "--out", b.to_str().unwrap()]);
    let in_a: BTreeSet<String> = py("release_files.py", &[a.to_str().unwrap()]).lines().map(str::to_owned).collect();
    let in_b: BTreeSet<String> = py("release_files.py", &[b.to_str().unwrap()]).lines().map(str::to_owned).collect();
    assert!(in_a.len() > 50 && in_a.len() == in_b.len());
    assert!(in_a.is_disjoint(&in_b), "two recipients' pseudonyms for the same people differ");
    let key = ws.key_hex();
    let mut checked = 0;
    for code in codes(&ws).iter().take(40) {
        let theirs = |r: &str| py("pseudonym.py", &[&key, "--release", r, code]).trim().to_owned();
        let (ra, rb) = (theirs("tartu-uni"), theirs("tai"));
        assert_ne!(ra, rb);
        assert_eq!(in_a.contains(&ra), in_b.contains(&rb), "the same person is in both or neither");
        checked += usize::from(in_a.contains(&ra));
    }
    assert!(checked > 5, "Python's release pseudonyms were found for {checked} people");
    // No warehouse pseudonym left the warehouse, in any column.
    let warehouse = warehouse_pseudonyms(&ws);
    for dir in [&a, &b] {
        let csv = std::fs::read_to_string(dir.join("data.csv")).unwrap();
        for field in csv.split([',', '\n']) {
            assert!(!warehouse.contains(field), "warehouse pseudonym {field} released");
        }
    }
    // release.json: the recipient, the request, the query, the fingerprint, never the key.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("release.json")).unwrap()).unwrap();
    assert_eq!(meta["recipient"], "tartu-uni");
    assert_eq!(meta["request_id"], "REQ-7");
    assert_eq!(meta["key_fingerprint"], py("pseudonym.py", &[&key, "--fingerprint"]).trim());
    assert!(meta["query"].as_str().unwrap().contains("treatment_invoices i join population"));
    let tables: Vec<&str> = meta["tables"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tables, ["population", "treatment_invoices"]);
    assert_eq!(meta["risk"]["quasi_identifiers"], serde_json::json!(["sex"]));
    let key_file = ws.root().join("key/ladu.key");
    for f in files_under(ws.root()).into_iter().filter(|f| *f != key_file) {
        let text = std::fs::read(&f).unwrap();
        assert!(!String::from_utf8_lossy(&text).contains(&key), "the key is in {}", f.display());
    }
    // The account of disclosures.
    let list = stdout(&ws.ok(&["releases"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[1].contains("tartu-uni") && lines[1].contains("REQ-7") && lines[1].contains("person_id,record_id"));
    let only_tai = stdout(&ws.ok(&["releases", "--recipient", "tai"]));
    assert_eq!(only_tai.lines().count(), 2, "{only_tai}");
    let entries: Vec<_> = ws.audit_entries().into_iter().filter(|e| e["kind"] == "release").collect();
    assert_eq!(entries.len(), 2);
    for e in &entries {
        assert_eq!(e["outcome"], "released");
        for field in ["time", "user", "recipient", "recipient_name", "basis", "columns", "rows", "files", "method"] {
            assert!(!e[field].is_null(), "{field} missing in {e}");
        }
    }
    assert_eq!(entries[0]["files"], meta["files"], "the audit entry has the checksums the recipient got");
    ws.ok(&["audit", "verify"]);
    // The shipped release role never releases a delivery's line number.
    let star = write(&ws.root().join("star.sql"), "select * from treatment_invoices_history limit 5");
    let c = ws.root().join("out/star");
    ws.ok(&["release", "--recipient", "tai", "--query", &star, "--out", c.to_str().unwrap()]);
    let header = std::fs::read_to_string(c.join("data.csv")).unwrap().lines().next().unwrap().to_owned();
    assert!(header.contains("person_id") && !header.contains("_line"), "{header}");
    // ladu's record of each release is checked, by `ladu check` and before a subject-access search.
    let checked = stdout(&ws.ok(&["check"]));
    assert!(checked.contains("checked 3 records of releases to recipients"), "{checked}");
    let record =
        ws.warehouse().join(format!("_ladu/releases/{}/pseudonyms.parquet", entries[0]["release"].as_str().unwrap()));
    std::fs::write(&record, b"not the record").unwrap();
    let found = ws.expect(&["check"], 1);
    assert!(stdout(&found).contains("differs from the checksum in the audit log"), "{}", stdout(&found));
    let code = codes(&ws)[0].clone();
    let e = ws.expect(&["subject", "--isikukood", &code], 1);
    assert!(stderr(&e).contains("cannot be searched for the person"), "{}", stderr(&e));
}

/// Statistics of the files (min, max) must not answer a release query with warehouse pseudonyms,
/// and filters and joins on pseudonym columns see release pseudonyms.
#[test]
fn release_pseudonyms_hold_beneath_aggregates_filters_and_joins() {
    let ws = Workspace::new();
    ws.sample(300, 5, &["--only", "population", "--only", "treatment_invoices", "--invalid", "0"]);
    ws.ok(&["ingest"]);
    let warehouse = warehouse_pseudonyms(&ws);
    let query = write(
        &ws.root().join("q.sql"),
        "with first as (select min(person_id) as p from treatment_invoices)\n\
         select (select min(person_id) from treatment_invoices_history) as low,\n\
           (select max(record_id) from population_history) as high,\n\
           (select count(*) from treatment_invoices where person_id = (select p from first)) as of_first,\n\
           (select count(*) from treatment_invoices i join population p using (person_id)) as joined,\n\
           (select count(*) from treatment_invoices) as all_rows",
    );
    let out = ws.root().join("agg");
    ws.ok(&["release", "--recipient", "tai", "--query", &query, "--out", out.to_str().unwrap()]);
    let csv = std::fs::read_to_string(out.join("data.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[0].len(), 32);
    assert!(!warehouse.contains(row[0]) && !warehouse.contains(row[1]), "{csv}");
    assert!(row[2].parse::<u64>().unwrap() >= 1, "a filter on a release pseudonym finds its rows: {csv}");
    assert_eq!(row[3], row[4], "every invoice's person joins the population under release pseudonyms: {csv}");
}

#[test]
fn risky_releases_are_refused_unless_accepted_and_bad_requests_write_nothing() {
    let ws = Workspace::new();
    ws.sample(200, 3, &["--only", "population", "--only", "treatment_invoices", "--invalid", "0"]);
    ws.ok(&["ingest"]);
    let risky = write(
        &ws.root().join("risky.sql"),
        "-- one row per person, with birth year, sex and county\nselect person_id, birth_year, sex, county from population",
    );
    let out = ws.root().join("out");
    let args = ["release", "--recipient", "tartu-uni", "--query", &risky, "--out", out.to_str().unwrap()];
    let refused = ws.expect(&args, 4);
    let err = stderr(&refused);
    assert!(
        err.contains("release refused") && err.contains("birth_year, sex, county") && err.contains("--accept-risk"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written when refused");
    let last = ws.audit_entries().pop().unwrap();
    assert_eq!((last["kind"].as_str(), last["outcome"].as_str()), (Some("release"), Some("refused")));
    assert!(last["risk"]["smallest_group"].as_u64().unwrap() < 5);
    assert!(stdout(&ws.ok(&["releases"])).lines().count() == 1, "a refusal is no release");
    // Coarse enough: sex and county only.
    let coarse = write(&ws.root().join("coarse.sql"), "select person_id, sex from population");
    ws.ok(&[
        "release",
        "--recipient",
        "tartu-uni",
        "--query",
        &coarse,
        "--out",
        ws.root().join("coarse").to_str().unwrap(),
    ]);
    // Accepted, and the reason audited.
    let mut accepted = args.to_vec();
    accepted.extend(["--accept-risk", "approved by the data protection officer, DPO-2026-3"]);
    let ok = ws.ok(&accepted);
    assert!(stdout(&ok).contains("the risk was accepted"));
    assert!(out.join("data.parquet").is_file());
    let last = ws.audit_entries().pop().unwrap();
    assert_eq!(last["risk"]["accepted"], "approved by the data protection officer, DPO-2026-3");
    // The folder is never overwritten.
    let again = ws.expect(&accepted, 2);
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));

    // An unknown recipient, a file that is no query, and tables the role may not read: exit codes, nothing written.
    let fresh = ws.root().join("fresh");
    let unknown =
        ws.expect(&["release", "--recipient", "nobody", "--query", &coarse, "--out", fresh.to_str().unwrap()], 3);
    assert!(stderr(&unknown).contains("unknown recipient `nobody`"), "{}", stderr(&unknown));
    let two = write(&ws.root().join("two.sql"), "select 1; select 2;");
    ws.expect(&["release", "--recipient", "tai", "--query", &two, "--out", fresh.to_str().unwrap()], 2);
    let twice = write(
        &ws.root().join("twice.sql"),
        "select p.sex, q.sex from population p join population q using (person_id)",
    );
    let e = ws.expect(&["release", "--recipient", "tai", "--query", &twice, "--out", fresh.to_str().unwrap()], 2);
    assert!(stderr(&e).contains("more than one column named `sex`"), "{}", stderr(&e));
    let file = write(&ws.root().join("file.sql"), "select * from 'inbox/population/population_20240331.csv'");
    let e = ws.expect(&["release", "--recipient", "tai", "--query", &file, "--out", fresh.to_str().unwrap()], 1);
    assert!(stderr(&e).contains("refused"), "{}", stderr(&e));
    // A release role that may read the invoices only.
    let roles = ws.root().join("config/roles.toml");
    let text = std::fs::read_to_string(&roles).unwrap().replace(
        "[roles.release]\ndescription = \"Releases to named recipients (`ladu release`): every table\"\ntables = [\"*\"]",
        "[roles.release]\ndescription = \"Releases: invoices only\"\ntables = [\"treatment_invoices\"]",
    );
    std::fs::write(&roles, text).unwrap();
    let e = ws.expect(&["release", "--recipient", "tai", "--query", &coarse, "--out", fresh.to_str().unwrap()], 1);
    assert!(stderr(&e).contains("role release may not read `population`"), "{}", stderr(&e));
    assert!(!fresh.exists());
    let partials: Vec<_> = std::fs::read_dir(ws.root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "no half-written release is left");
    assert_eq!(stdout(&ws.ok(&["releases"])).lines().count(), 3, "two releases, the header");
}
