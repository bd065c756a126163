//! `ladu expire`: rows past their source's retention period leave `<table>` and `<table>_history` in one audited commit.

use chrono::{Duration, Months, NaiveDate};

use crate::util::*;

/// Today where the warehouse is, as ladu counts retention periods.
fn today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&chrono_tz::Europe::Tallinn).date_naive()
}

/// Give `source` the retention `setting` (e.g. `{ months = 6, by = "start_date" }`).
fn set_retention(ws: &Workspace, source: &str, setting: &str) {
    let path = ws.root().join("config/sources").join(format!("{source}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, columns) = text.split_once("\n[columns.").unwrap();
    std::fs::write(&path, format!("{head}\nretention = {setting}\n\n[columns.{columns}")).unwrap();
}

/// Deliver `source` extracted on `date`, `rows` rows dated over the year before, every third
/// invoice a correction of the delivery before (same id, other values).
fn deliver(ws: &Workspace, source: &str, date: NaiveDate, rows: usize, seed: u64) {
    let d = date.to_string();
    ws.sample(rows, seed, &["--only", source, "--invalid", "0", "--date", &d]);
}

/// The invoices of a table, with their lineage, sorted; `history` for every version.
fn lineage(ws: &Workspace, table: &str, filter: &str) -> Vec<Vec<String>> {
    let mut rows = ws.sql_rows(
        None,
        &format!(
            "SELECT record_id, _commit, CAST(_extract_date AS VARCHAR), _extract_seq, _line FROM {table} {filter}"
        ),
    );
    rows.sort();
    rows
}

/// Two deliveries of invoices and one of ambulance calls, dated over the year up to yesterday.
fn warehouse_with_a_year(ws: &Workspace) {
    let yesterday = today() - Duration::days(1);
    deliver(ws, "treatment_invoices", yesterday - Duration::days(1), 1_500, 11);
    deliver(ws, "ambulance_calls", yesterday, 600, 12);
    ws.ok(&["ingest"]);
    // A second delivery repeats every invoice id of the first (sample ids count up from 1): corrections.
    deliver(ws, "treatment_invoices", yesterday, 900, 13);
    ws.ok(&["ingest"]);
}

#[test]
fn expire_removes_old_rows_from_the_table_and_its_history_in_one_audited_commit() {
    within_one_day(|| {
        let ws = Workspace::new();
        set_retention(&ws, "treatment_invoices", r#"{ months = 6, by = "start_date" }"#);
        set_retention(&ws, "ambulance_calls", r#"{ months = 3, by = "received_at" }"#);
        warehouse_with_a_year(&ws);
        ws.ok(&["stats"]);
        let cutoff = today().checked_sub_months(Months::new(6)).unwrap();
        let kept = format!("WHERE start_date >= DATE '{cutoff}'");
        let current_before = lineage(&ws, "treatment_invoices", "");
        let current_kept = lineage(&ws, "treatment_invoices", &kept);
        let history_kept = lineage(&ws, "treatment_invoices_history", &kept);
        let history_all = lineage(&ws, "treatment_invoices_history", "");
        assert!(history_all.len() > history_kept.len() && current_before.len() > current_kept.len());
        assert!(history_all.len() > current_before.len(), "the second delivery corrected invoices");
        let versions = ws.manifest_versions();

        // A dry run says what would go and changes nothing.
        let dry = stdout(&ws.ok(&["expire", "--dry-run"]));
        let removed = history_all.len() - history_kept.len();
        assert!(
            dry.contains(&format!("treatment_invoices: would remove {removed} rows dated before {cutoff}")),
            "{dry}"
        );
        assert!(dry.contains("population: no retention period set; keeps everything"), "{dry}");
        assert_eq!(ws.manifest_versions(), versions);
        // Counted from another day, for planning.
        let calls = "SELECT count(*) FROM ambulance_calls_history";
        let calls_before: u64 = ws.sql_rows(None, calls)[0][0].parse().unwrap();
        let later = stdout(&ws.ok(&["expire", "--dry-run", "--as-of", "2099-01-01"]));
        assert!(later.contains(&format!("would remove {} rows", history_all.len())), "{later}");
        ws.expect(&["expire", "--as-of", "2099-01-01"], 2);

        let out = stdout(&ws.ok(&["expire"]));
        assert!(out.contains(&format!("treatment_invoices: removed {removed} rows dated before {cutoff}")), "{out}");
        assert!(out.contains("statistics recomputed"), "{out}");
        // One commit for the removal (and one for the statistics).
        assert_eq!(ws.manifest_versions().len(), versions.len() + 2);
        assert_eq!(lineage(&ws, "treatment_invoices_history", ""), history_kept);
        assert!(ws.sql_rows(None, calls)[0][0].parse::<u64>().unwrap() < calls_before);
        assert_eq!(lineage(&ws, "treatment_invoices", ""), current_kept, "the newest versions among what is kept");
        let min = ws.sql_rows(None, "SELECT CAST(min(start_date) AS VARCHAR) FROM treatment_invoices_history");
        assert!(min[0][0].as_str() >= cutoff.to_string().as_str(), "{min:?}");
        // The ambulance calls' cutoff is local midnight.
        let midnight = today().checked_sub_months(Months::new(3)).unwrap().and_hms_opt(0, 0, 0).unwrap();
        let ms = midnight.and_local_timezone(chrono_tz::Europe::Tallinn).earliest().unwrap().timestamp_millis();
        let calls = ws.sql_rows(
            None,
            &format!("SELECT count(*), sum(CASE WHEN CAST(received_at AS BIGINT) < {ms} THEN 1 ELSE 0 END) FROM ambulance_calls_history"),
        );
        assert!(calls[0][0].parse::<u64>().unwrap() > 0 && calls[0][1] == "0", "{calls:?}");
        // Audited before the commit, with the rows per table and the oldest date kept.
        let entry = ws.audit_entries().into_iter().rfind(|e| e["kind"] == "expire").expect("audited");
        let t =
            entry["tables"].as_array().unwrap().iter().find(|t| t["table"] == "treatment_invoices").unwrap().clone();
        assert_eq!(t["rows"].as_u64(), Some(removed as u64));
        assert_eq!(t["current_rows"].as_u64(), Some((current_before.len() - current_kept.len()) as u64));
        assert!(t["oldest_kept"].as_str().unwrap() >= cutoff.to_string().as_str(), "{t}");
        assert!(t["files_removed"].as_u64() > Some(0) && t["files_rewritten"].as_u64() > Some(0), "{t}");
        assert_eq!(entry["commit"].as_u64().unwrap() as usize, versions.len() + 1);
        // The statistics were computed again from what is left.
        let stats = ws.audit_entries().into_iter().rfind(|e| e["kind"] == "stats").unwrap();
        assert_eq!(stats["from_version"], entry["commit"]);
        ws.ok(&["check", "--skip-key"]);
        ws.ok(&["audit", "verify"]);
        // Nothing left to remove.
        assert!(stdout(&ws.ok(&["expire"])).contains("nothing past its retention period"));

        // Later deliveries still correct what is kept.
        deliver(&ws, "treatment_invoices", today(), 300, 14);
        ws.ok(&["ingest"]);
        ws.ok(&["check", "--skip-key"]);
        let (current, history) =
            (lineage(&ws, "treatment_invoices", ""), lineage(&ws, "treatment_invoices_history", ""));
        assert!(history.len() > current.len());

        // The processing report answers how long each table keeps its rows, and what went.
        let report = stdout(&ws.ok(&["report", "processing"]));
        assert!(report.contains("rows kept 6 months by `start_date`"), "{report}");
        assert!(report.contains(&format!("{removed} rows past their period removed")), "{report}");
        assert!(report.contains("no retention period: keeps every row"), "{report}");
    });
}

#[test]
fn expire_is_refused_for_a_table_without_retention_and_the_nightly_run_expires() {
    within_one_day(|| {
        let ws = Workspace::new();
        warehouse_with_a_year(&ws);
        let out = ws.expect(&["expire", "--table", "treatment_invoices"], 3);
        assert!(stderr(&out).contains("no source feeds a table `treatment_invoices` with a retention period"));
        assert!(stdout(&ws.ok(&["expire"])).contains("treatment_invoices: no retention period set"));
        set_retention(&ws, "treatment_invoices", r#"{ years = 1, by = "nowhere" }"#);
        let out = ws.expect(&["expire"], 3);
        assert!(stderr(&out).contains("retention.by: `nowhere` must be a kept column"), "{}", stderr(&out));
        let path = ws.root().join("config/sources/treatment_invoices.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("years = 1, by = \"nowhere\"", "months = 2, by = \"end_date\"");
        std::fs::write(&path, text).unwrap();
        let history = ws.sql_rows(None, "SELECT count(*) FROM treatment_invoices_history")[0][0].clone();
        ws.ok(&["run"]);
        let entry = ws.audit_entries().into_iter().find(|e| e["kind"] == "expire").expect("the run expired");
        let removed = entry["rows"].as_u64().unwrap();
        let left = ws.sql_rows(None, "SELECT count(*) FROM treatment_invoices_history")[0][0].clone();
        assert_eq!(left.parse::<u64>().unwrap() + removed, history.parse::<u64>().unwrap());
        ws.ok(&["check", "--skip-key"]);
    });
}

#[test]
fn kill_9_during_an_expiry_leaves_the_rows_as_they_were_or_expired() {
    within_one_day(|| {
        let reference = Workspace::new();
        set_retention(&reference, "treatment_invoices", r#"{ months = 6, by = "start_date" }"#);
        let yesterday = today() - Duration::days(1);
        deliver(&reference, "treatment_invoices", yesterday - Duration::days(1), 60_000, 21);
        reference.ok(&["ingest"]);
        deliver(&reference, "treatment_invoices", yesterday, 20_000, 22);
        reference.ok(&["ingest"]);
        let before = lineage(&reference, "treatment_invoices_history", "");
        let cutoff = today().checked_sub_months(Months::new(6)).unwrap();
        let after = lineage(&reference, "treatment_invoices_history", &format!("WHERE start_date >= DATE '{cutoff}'"));
        let copy = |to: &Workspace| {
            std::fs::remove_dir_all(to.warehouse()).ok();
            copy_dir(&reference.warehouse(), &to.warehouse());
            std::fs::copy(reference.root().join("key/ladu.key"), to.root().join("key/ladu.key")).unwrap();
            std::fs::copy(
                reference.root().join("config/sources/treatment_invoices.toml"),
                to.root().join("config/sources/treatment_invoices.toml"),
            )
            .unwrap();
        };
        let timing = Workspace::new();
        copy(&timing);
        let started = std::time::Instant::now();
        timing.ok(&["-q", "expire"]);
        let full = started.elapsed();
        let mut outcomes = Vec::new();
        for fraction in [0.1, 0.4, 0.7, 0.95] {
            let ws = Workspace::new();
            copy(&ws);
            let versions = ws.manifest_versions().len();
            let finished = kill_9_after(&ws, &["-q", "expire"], full.mul_f64(fraction));
            let expired = ws.manifest_versions().len() > versions;
            outcomes.push((fraction, finished, expired));
            let seen = lineage(&ws, "treatment_invoices_history", "");
            assert!(seen == before || seen == after, "killed at {fraction}: {} rows", seen.len());
            // An expiry that committed was audited first.
            assert!(!expired || ws.audit_entries().iter().any(|e| e["kind"] == "expire"), "killed at {fraction}");
            // The next writer tidies up what the killed one left, and expires.
            ws.ok(&["expire"]);
            assert_eq!(lineage(&ws, "treatment_invoices_history", ""), after);
            ws.ok(&["check", "--skip-key"]);
        }
        assert!(outcomes.iter().any(|(_, fin, e)| !fin && !e), "some kill came before the commit: {outcomes:?}");
    });
}
