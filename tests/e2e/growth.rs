//! A warehouse that stays fast as it grows: commits record what they supersede, SQL only reads it, compaction keeps every row, and an older warehouse is upgraded in place.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::util::*;

/// The newest version of each record of `table`, as ladu shows it: (record id and lineage), sorted.
fn newest_by_ladu(ws: &Workspace, table: &str) -> Vec<Vec<String>> {
    let mut rows = ws.sql_rows(
        None,
        &format!("SELECT record_id, _commit, CAST(_extract_date AS VARCHAR), _extract_seq, _line FROM {table}"),
    );
    rows.sort();
    rows
}

/// The same, by DuckDB's window over every file of the table.
fn newest_by_duckdb(ws: &Workspace, table: &str) -> Vec<Vec<String>> {
    serde_json::from_str(&py("newest_lineage.py", &[ws.warehouse().join(table).to_str().unwrap()])).unwrap()
}

fn agrees_with_duckdb(ws: &Workspace, table: &str) {
    let ours = newest_by_ladu(ws, table);
    assert!(!ours.is_empty());
    assert_eq!(ours, newest_by_duckdb(ws, table), "{table}");
}

/// Every file under the warehouse, with its size and modification time.
fn snapshot(root: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    files_under(root)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).unwrap();
            (p.display().to_string(), (m.len(), m.modified().unwrap()))
        })
        .collect()
}

/// Deliver `treatment_invoices_<date>.csv`: `rows` invoices, of which every `every`-th repeats an
/// earlier invoice (a correction, with a new amount), the rest new invoices.
fn deliver_invoices(ws: &Workspace, date: &str, rows: usize, every: usize) {
    let tmp = ws.root().join("gen");
    let compact = date.replace('-', "");
    ws.ok(&[
        "sample-data",
        "--out",
        tmp.to_str().unwrap(),
        "--only",
        "treatment_invoices",
        "--rows",
        &rows.to_string(),
        "--seed",
        &compact,
        "--invalid",
        "0",
        "--date",
        date,
    ]);
    let file = tmp.join("treatment_invoices").join(format!("treatment_invoices_{compact}.csv"));
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    let mut out = vec![lines.next().unwrap().to_owned()];
    for (i, line) in lines.enumerate() {
        let (id, rest) = line.split_once(';').unwrap();
        let id = if i % every == 0 { id.to_owned() } else { format!("{id}-{compact}") };
        out.push(format!("{id};{rest}"));
    }
    ws.deliver("treatment_invoices", &format!("treatment_invoices_{compact}.csv"), out.join("\n") + "\n");
    std::fs::remove_dir_all(tmp).unwrap();
}

/// `rows` invoices, then `days` daily deliveries of `per_day` (see [`deliver_invoices`]), each its own commit.
fn daily_commits(ws: &Workspace, rows: usize, days: u32, per_day: usize, every: usize) {
    ws.sample(rows, 3, &["--only", "treatment_invoices"]);
    ws.ok(&["ingest"]);
    for day in 1..=days {
        deliver_invoices(ws, &format!("2024-04-{day:02}"), per_day, every);
        ws.ok(&["ingest"]);
    }
}

fn manifest(ws: &Workspace) -> (std::path::PathBuf, Value) {
    let name = ws.manifest_versions().pop().unwrap();
    let path = ws.warehouse().join("_ladu/manifest").join(name);
    let m = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (path, m)
}

#[test]
fn commits_record_what_they_supersede_sessions_write_nothing_and_an_older_warehouse_is_upgraded() {
    let ws = Workspace::new();
    ws.sample(2_000, 3, &["--only", "treatment_invoices", "--only", "population"]);
    ws.ok(&["ingest"]);
    deliver_invoices(&ws, "2024-04-01", 400, 4);
    // A delivery refused in between: a column no config names.
    ws.deliver("treatment_invoices", "treatment_invoices_20240402.csv", "invoice_id;isikukood;surprise\n");
    deliver_invoices(&ws, "2024-04-03", 300, 2);
    let out = ws.expect(&["ingest"], 4);
    assert!(
        stdout(&out).contains("REFUSED") && stdout(&out).contains("committed warehouse version"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_file(ws.inbox("treatment_invoices").join("treatment_invoices_20240402.csv")).unwrap();
    // A full population snapshot supersedes the one before as a whole.
    ws.sample(2_000, 3, &["--only", "population", "--date", "2024-04-07"]);
    ws.ok(&["ingest"]);
    for table in ["treatment_invoices", "population"] {
        agrees_with_duckdb(&ws, table);
    }
    let (_, m) = manifest(&ws);
    let invoices = &m["tables"]["treatment_invoices"]["versions"];
    let listed: u64 = invoices["superseded"].as_array().unwrap().iter().map(|f| f["rows"].as_u64().unwrap()).sum();
    assert_eq!(listed, 100 + 150, "one row per correction: {invoices}");
    assert!(m["tables"]["population"]["versions"]["deliveries"][0]["superseded"].as_u64() > Some(1_900));

    // Sessions read the record and write nothing.
    let before = snapshot(&ws.warehouse());
    let current = newest_by_ladu(&ws, "treatment_invoices");
    ws.ok(&["sql", "-c", "SELECT count(*) FROM population; SELECT count(*) FROM treatment_invoices_history"]);
    assert_eq!(snapshot(&ws.warehouse()), before);

    // A warehouse written before commits recorded their superseded rows: its
    // manifest has no `versions`. Sessions compute them in memory, still writing nothing.
    let (path, mut m) = manifest(&ws);
    for t in m["tables"].as_object_mut().unwrap().values_mut() {
        t.as_object_mut().unwrap().remove("versions");
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    std::fs::remove_dir_all(ws.warehouse().join("_ladu/versions")).unwrap();
    // Where sessions of that version kept what they computed.
    let kept = ws.warehouse().join("_ladu/superseded/0000000003");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("treatment_invoices.parquet"), b"PAR1").unwrap();
    let before = snapshot(&ws.warehouse());
    assert_eq!(newest_by_ladu(&ws, "treatment_invoices"), current);
    assert_eq!(snapshot(&ws.warehouse()), before);
    // The next commit upgrades it: every table gets its record.
    deliver_invoices(&ws, "2024-04-04", 200, 5);
    ws.ok(&["ingest"]);
    let (_, m) = manifest(&ws);
    for (name, t) in m["tables"].as_object().unwrap() {
        assert!(t["versions"].is_object(), "{name}: {t}");
    }
    for table in ["treatment_invoices", "population"] {
        agrees_with_duckdb(&ws, table);
    }
    assert!(!ws.warehouse().join("_ladu/superseded").exists(), "the old sessions' answers are removed");
    ws.ok(&["check", "--skip-key"]);
}

#[test]
fn compaction_keeps_every_row_version_and_lineage_and_ladu_run_compacts_busy_partitions() {
    let ws = Workspace::new();
    daily_commits(&ws, 3_000, 4, 500, 3);
    let per_partition = |ws: &Workspace| -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        for f in ws.data_files().into_iter().filter(|f| f.starts_with("treatment_invoices/")) {
            *n.entry(f.rsplit_once('/').unwrap().0.to_owned()).or_default() += 1;
        }
        n
    };
    assert!(per_partition(&ws).values().any(|&n| n >= 5), "{:?}", per_partition(&ws));
    let digest = || py("digest.py", &[ws.warehouse().to_str().unwrap()]);
    let (rows_before, newest_before) = (digest(), newest_by_ladu(&ws, "treatment_invoices"));

    let out = ws.expect(&["compact", "--table", "no_such_table"], 3);
    assert!(stderr(&out).contains("no_such_table"), "{}", stderr(&out));
    let out = ws.ok(&["compact", "--table", "treatment_invoices"]);
    assert!(stdout(&out).contains("committed warehouse version"), "{}", stdout(&out));
    assert!(per_partition(&ws).values().all(|&n| n == 1), "{:?}", per_partition(&ws));
    // Every row, with its lineage, and every version as it was.
    assert_eq!(digest(), rows_before);
    assert_eq!(newest_by_ladu(&ws, "treatment_invoices"), newest_before);
    agrees_with_duckdb(&ws, "treatment_invoices");
    ws.ok(&["check", "--skip-key"]);
    let entry = ws.audit_entries().into_iter().rfind(|e| e["kind"] == "compact").expect("compaction audited");
    assert!(entry["commit"].as_u64().is_some() && entry["rows"].as_u64() > Some(3_000), "{entry}");
    assert!(stdout(&ws.ok(&["compact"])).contains("nothing to compact"));
    // Only whole files were replaced; nothing is left behind.
    assert!(ws.warehouse().join("_ladu/staging").read_dir().is_err());

    // `ladu run` compacts a partition once it holds more than `ingest.compact_files` files.
    let config = ws.config();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}[ingest]\ncompact_files = 2\n")).unwrap();
    for day in 5..=7 {
        deliver_invoices(&ws, &format!("2024-04-0{day}"), 300, 3);
        ws.ok(&["ingest"]);
    }
    assert!(per_partition(&ws).values().any(|&n| n > 2));
    ws.ok(&["run"]);
    assert!(per_partition(&ws).values().all(|&n| n <= 2), "{:?}", per_partition(&ws));
    agrees_with_duckdb(&ws, "treatment_invoices");
    ws.ok(&["check", "--skip-key"]);
}

#[test]
fn kill_9_during_a_compaction_leaves_the_warehouse_as_it_was_or_compacted() {
    let reference = Workspace::new();
    daily_commits(&reference, 60_000, 3, 20_000, 4);
    let digest = |ws: &Workspace| py("digest.py", &[ws.warehouse().to_str().unwrap()]);
    let want = digest(&reference);
    let newest = newest_by_ladu(&reference, "treatment_invoices");
    let copy = |to: &Workspace| {
        std::fs::remove_dir_all(to.warehouse()).ok();
        copy_dir(&reference.warehouse(), &to.warehouse());
        std::fs::copy(reference.root().join("key/ladu.key"), to.root().join("key/ladu.key")).unwrap();
    };
    let timing = Workspace::new();
    copy(&timing);
    let started_compact = std::time::Instant::now();
    timing.ok(&["-q", "compact"]);
    let full = started_compact.elapsed();
    let mut outcomes = Vec::new();
    for fraction in [0.1, 0.4, 0.7, 0.95] {
        let ws = Workspace::new();
        copy(&ws);
        let versions = ws.manifest_versions().len();
        let finished = kill_9_after(&ws, &["-q", "compact"], full.mul_f64(fraction));
        let after = ws.manifest_versions().len();
        assert!(after == versions || after == versions + 1, "{versions} -> {after}");
        // A compaction that committed was audited first.
        assert!(after == versions || ws.audit_entries().iter().any(|e| e["kind"] == "compact"), "killed at {fraction}");
        outcomes.push((fraction, finished, after - versions));
        // Readers see the rows as they were, compacted or not.
        assert_eq!(digest(&ws), want, "killed at {fraction}");
        assert_eq!(newest_by_ladu(&ws, "treatment_invoices"), newest);
        // The next writer tidies up what the killed one left, and compacts.
        ws.ok(&["compact"]);
        assert_eq!(digest(&ws), want);
        ws.ok(&["check", "--skip-key"]);
    }
    assert!(outcomes.iter().any(|(_, fin, v)| !fin && *v == 0), "some kill came before the commit: {outcomes:?}");
}

#[test]
fn check_finds_a_record_of_versions_that_disagrees_with_the_files() {
    let ws = Workspace::new();
    daily_commits(&ws, 300, 1, 100, 2);
    ws.ok(&["check", "--skip-key"]);
    let (path, mut m) = manifest(&ws);
    let rows = &mut m["tables"]["treatment_invoices"]["versions"]["deliveries"][0]["rows"];
    *rows = (rows.as_u64().unwrap() + 1).into();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let out = ws.expect(&["check", "--skip-key"], 1);
    assert!(stdout(&out).contains("its record of versions counts"), "{}", stdout(&out));
}
