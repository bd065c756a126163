//! `ladu sql` through the binary: tables and history, pruning, formats, the sandbox, roles, views, audit.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::process::Stdio;

use serde_json::Value;

use crate::util::*;

const PROVIDER: &str = "90006399";
/// Tables with a provider code column, and the column.
const CODED: [(&str, &str); 5] = [
    ("treatment_invoices", "provider_regcode"),
    ("waiting_list", "institution_regcode"),
    ("sick_leave", "issuer_regcode"),
    ("cancer_screening", "provider_regcode"),
    ("prescriptions", "pharmacy_regcode"),
];

/// A warehouse of every source, then a correction of one invoice in a later delivery.
fn warehouse() -> Workspace {
    let ws = Workspace::new();
    ws.sample(200, 5, &[]);
    ws.ok(&["ingest"]);
    ws
}

fn first(rows: &[Vec<String>]) -> Vec<String> {
    rows.iter().map(|r| r[0].clone()).collect()
}

fn count(ws: &Workspace, role: Option<&str>, sql: &str) -> u64 {
    ws.sql_rows(role, sql)[0][0].parse().unwrap()
}

#[test]
fn tables_show_newest_versions_and_history_keeps_every_version() {
    let ws = warehouse();
    let all = ws.sql_rows(None, "SELECT record_id, amount, start_date FROM treatment_invoices ORDER BY record_id");
    assert_eq!(all.len(), 196, "200 delivered, 4 deliberately invalid");
    // A later delivery corrects one invoice's amount and repeats another unchanged.
    let text = std::fs::read_to_string(ws.inbox("treatment_invoices").join("treatment_invoices_20240331.csv")).unwrap();
    let report = std::fs::read_to_string(
        ws.root().join("outbox/treatment_invoices/treatment_invoices_20240331.csv.rejections.csv"),
    )
    .unwrap();
    let rejected: Vec<usize> = report.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    let header = text.lines().next().unwrap();
    let valid: Vec<&str> = text
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(i, _)| !rejected.contains(&(i + 1)))
        .map(|(_, l)| l)
        .take(2)
        .collect();
    let mut corrected: Vec<String> = valid[0].split(';').map(str::to_owned).collect();
    corrected[6] = "12345,67".into();
    ws.deliver(
        "treatment_invoices",
        "treatment_invoices_20240407.csv",
        format!("{header}\n{}\n{}\n", corrected.join(";"), valid[1]),
    );
    ws.ok(&["ingest"]);
    assert_eq!(count(&ws, None, "SELECT count(*) FROM treatment_invoices"), 196);
    assert_eq!(count(&ws, None, "SELECT count(*) FROM treatment_invoices_history"), 198);
    assert_eq!(count(&ws, None, "SELECT count(*) FROM treatment_invoices WHERE amount = 12345.67"), 1);
    let versions = ws.sql_rows(
        None,
        "SELECT amount FROM treatment_invoices_history WHERE record_id IN \
         (SELECT record_id FROM treatment_invoices WHERE amount = 12345.67) ORDER BY _extract_date",
    );
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[1][0], "12345.67");
    // DuckDB over the same files agrees on which version is current.
    let out = py("newest.py", &[ws.warehouse().join("treatment_invoices").to_str().unwrap()]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let duck: BTreeSet<(String, String)> = v["current"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["record_id"].as_str().unwrap().to_owned(), r["amount"].as_str().unwrap().to_owned()))
        .collect();
    let ours: BTreeSet<(String, String)> = ws
        .sql_rows(None, "SELECT record_id, amount FROM treatment_invoices")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(ours, duck);

    // A weekly full snapshot of the population supersedes the previous one as a whole.
    let snapshot = std::fs::read_to_string(ws.inbox("population").join("population_20240331.csv")).unwrap();
    let mut lines: Vec<String> = snapshot.lines().map(str::to_owned).collect();
    let moved = lines.iter().position(|l| l.contains(";0078;")).expect("someone lives in Tartu county");
    lines[moved] = lines[moved].replace(";0078;", ";0037;");
    ws.deliver("population", "population_20240407.csv", lines.join("\n") + "\n");
    ws.ok(&["ingest"]);
    assert_eq!(count(&ws, None, "SELECT count(*) FROM population"), 196);
    assert_eq!(count(&ws, None, "SELECT count(*) FROM population_history"), 392);
    assert_eq!(
        count(&ws, None, "SELECT count(*) FROM population WHERE _extract_date = DATE '2024-04-07'"),
        196,
        "every person's newest version is in the newest snapshot"
    );
    // The commit recorded what it superseded; sessions only read that record.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(ws.warehouse().join("_ladu/manifest/0000000003.json")).unwrap()).unwrap();
    let population = &manifest["tables"]["population"]["versions"];
    assert_eq!(population["superseded"], serde_json::json!([]), "a snapshot superseded whole is not listed row by row");
    let first = &population["deliveries"][0];
    assert_eq!((first["rows"].as_u64(), first["superseded"].as_u64()), (Some(196), Some(196)), "{population}");
    let invoices = &manifest["tables"]["treatment_invoices"]["versions"]["superseded"];
    assert_eq!(invoices.as_array().map(Vec::len), Some(1), "{invoices}");
    let kept = ws.warehouse().join(invoices[0]["path"].as_str().unwrap());
    assert!(kept.starts_with(ws.warehouse().join("_ladu/versions/treatment_invoices")), "{}", kept.display());
    let v: Value = serde_json::from_str(&py("read_parquet.py", &[kept.to_str().unwrap()])).unwrap();
    assert_eq!(v["rows"], 2, "the two invoices delivered again: {v}");
}

#[test]
fn only_committed_files_are_read_and_partition_filters_prune() {
    let ws = warehouse();
    let before = count(&ws, None, "SELECT count(*) FROM treatment_invoices_history");
    // A file of a run that died before its commit sits beside committed ones.
    let committed =
        ws.data_files().into_iter().find(|f| f.starts_with("treatment_invoices/year=2024/month=3/")).unwrap();
    let stray = ws.warehouse().join("treatment_invoices/year=2024/month=3/part-9999999999-000000.parquet");
    std::fs::copy(ws.warehouse().join(&committed), &stray).unwrap();
    assert_eq!(count(&ws, None, "SELECT count(*) FROM treatment_invoices_history"), before);
    assert_eq!(count(&ws, None, "SELECT count(*) FROM treatment_invoices"), before);

    let month = count(&ws, None, "SELECT count(*) FROM treatment_invoices_history WHERE year = 2024 AND month = 3");
    assert!(month > 0);
    let out = ws.ok(&[
        "sql",
        "--format",
        "csv",
        "-c",
        // A sum, which the files' row counts alone do not answer (a count is answered from them).
        "EXPLAIN ANALYZE SELECT count(*), sum(amount) FROM treatment_invoices_history WHERE year = 2024 AND month = 3",
    ]);
    let plan = stdout(&out);
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).unwrap_or_else(|| panic!("{plan}"));
    assert!(scan.contains("year=2024/month=3/"), "{scan}");
    let files = ws.data_files().iter().filter(|f| f.starts_with("treatment_invoices/")).count();
    assert!(files > 10, "a year of months");
    assert_eq!(scan.matches(".parquet").count(), 1, "one file read of {files}: {scan}");
    assert!(scan.contains(&format!("output_rows={month}")), "{scan}");
    assert!(!scan.contains("9999999999"), "{scan}");

    // The same month by its dates: the files' ranges of `start_date` (from their footers) leave one file
    // to read, where every file was opened and its row groups ruled out one by one.
    let dates = "start_date >= DATE '2024-03-01' AND start_date < DATE '2024-04-01'";
    let q = format!("SELECT count(*), sum(amount) FROM treatment_invoices_history WHERE {dates}");
    assert_eq!(count(&ws, None, &format!("SELECT count(*) FROM treatment_invoices_history WHERE {dates}")), month);
    let plan = stdout(&ws.ok(&["sql", "--format", "csv", "-c", &format!("EXPLAIN ANALYZE {q}")]));
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).unwrap_or_else(|| panic!("{plan}"));
    assert!(scan.contains("year=2024/month=3/"), "{scan}");
    assert_eq!(scan.matches(".parquet").count(), 1, "one file read of {files}: {scan}");
    assert!(scan.contains(&format!("output_rows={month}")), "{scan}");
    // Every row of that file passes the filter, so no row is tested, nor its date read.
    let tests_rows = |plan: &str| plan.lines().any(|l| l.trim_start().starts_with("FilterExec"));
    assert!(!tests_rows(&plan), "{plan}");
    assert!(!scan.contains("start_date"), "{scan}");
    // A date inside the month is tested row by row.
    let mid = "start_date >= DATE '2024-03-15' AND start_date < DATE '2024-04-01'";
    let plan = stdout(&ws.ok(&["sql", "--format", "csv", "-c", &format!("EXPLAIN {q}").replace(dates, mid)]));
    assert!(tests_rows(&plan), "{plan}");
    // A filter the ranges cannot judge reads every file, and a range outside every file none.
    let all = "EXPLAIN SELECT count(*) FROM treatment_invoices_history WHERE extract(day FROM start_date) = 3";
    let plan = stdout(&ws.ok(&["sql", "--format", "csv", "-c", all]));
    assert!(plan.matches(".parquet").count() > 1, "{plan}");
    let none = "SELECT count(*) FROM treatment_invoices_history WHERE start_date < DATE '1900-01-01'";
    assert_eq!(count(&ws, None, none), 0);
}

#[test]
fn formats_files_stdin_and_errors() {
    let ws = warehouse();
    let q = "SELECT care_type, count(*) AS n FROM treatment_invoices GROUP BY care_type ORDER BY care_type";
    let table = stdout(&ws.ok(&["sql", "-c", q]));
    assert!(table.contains("| care_type | n ") && table.contains("| AMB ") && table.contains("(3 rows)"), "{table}");
    let csv = stdout(&ws.ok(&["sql", "--format", "csv", "-c", q]));
    assert!(csv.starts_with("care_type,n\nAMB,"), "{csv}");
    let json = stdout(&ws.ok(&["sql", "--format", "json", "-c", q]));
    let rows: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["care_type"], "AMB");
    let total: u64 = rows.iter().map(|r| r["n"].as_u64().unwrap()).sum();
    assert_eq!(total, 196);

    // Parquet needs a file; pyarrow reads what it gets.
    let e = ws.expect(&["sql", "--format", "parquet", "-c", q], 2);
    assert!(stderr(&e).contains("--output"), "{}", stderr(&e));
    let pq = ws.root().join("out.parquet");
    ws.ok(&["sql", "--format", "parquet", "--output", pq.to_str().unwrap(), "-c", q]);
    let back: Value = serde_json::from_str(&py("read_parquet.py", &[pq.to_str().unwrap()])).unwrap();
    assert_eq!(back["rows"], 3, "{back}");

    // -f with several statements, and --output for text formats.
    let script = ws.root().join("q.sql");
    std::fs::write(&script, format!("-- two statements\n{q};\nSELECT 'a;b' AS s;\n")).unwrap();
    let out_csv = ws.root().join("out.csv");
    ws.ok(&["sql", "--format", "csv", "-f", script.to_str().unwrap(), "--output", out_csv.to_str().unwrap()]);
    let written = std::fs::read_to_string(&out_csv).unwrap();
    assert!(written.contains("care_type,n\n") && written.ends_with("s\na;b\n"), "{written}");

    // Statements from stdin, commands included, executed in order.
    let mut child = ws
        .command(&["sql", "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"SELECT 1 AS one;\n\\d population\nSELECT\n  2 AS two\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("one\n1\ncolumn,type,nullable\nrecord_id,"), "{text}");
    assert!(text.ends_with("two\n2\n"), "{text}");

    // An error names the problem and the statement, exits non-zero, and stops the script after earlier results.
    let out = ws.expect(&["sql", "--format", "csv", "-c", "SELECT 1 AS ok; SELECT nope FROM population; SELECT 3"], 1);
    assert_eq!(stdout(&out), "ok\n1\n");
    let err = stderr(&out);
    assert!(err.contains("nope") && err.contains("in: SELECT nope FROM population"), "{err}");
    let out = ws.expect(&["sql", "-c", "SELECT * FRM population"], 1);
    assert!(stderr(&out).contains("Line: 1, Column: 10"), "{}", stderr(&out));
}

#[test]
fn the_sandbox_refuses_every_way_out() {
    let ws = warehouse();
    let target = ws.root().join("escaped.csv");
    let t = target.to_str().unwrap();
    std::fs::write(ws.root().join("x.csv"), "a\n1\n").unwrap();
    let doors = [
        "CREATE TABLE t AS SELECT 1".to_owned(),
        "CREATE VIEW v AS SELECT 1".into(),
        format!("CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '{}'", ws.root().join("x.csv").display()),
        "INSERT INTO population SELECT * FROM population".into(),
        "DELETE FROM population".into(),
        "UPDATE population SET sex = 'M'".into(),
        "DROP TABLE population".into(),
        "DROP VIEW waiting_times".into(),
        format!("COPY (SELECT * FROM population) TO '{t}'"),
        format!("COPY population TO '{t}' STORED AS CSV"),
        format!("EXPLAIN COPY (SELECT 1) TO '{t}'"),
        "SELECT 1 INTO newtable".into(),
        "SET datafusion.execution.target_partitions = 1".into(),
        "SET datafusion.catalog.information_schema = false".into(),
        "RESET datafusion.execution.batch_size".into(),
        format!("SELECT * FROM '{}'", ws.root().join("x.csv").display()),
        "SELECT * FROM 'x.csv'".into(),
        "SELECT * FROM 'https://example.com/x.parquet'".into(),
        "SELECT * FROM read_csv('x.csv')".into(),
        "SELECT * FROM read_parquet('x.parquet')".into(),
        "SELECT * FROM generate_series(1, 3)".into(),
        "SELECT * FROM parquet_metadata('x.parquet')".into(),
        "CREATE SCHEMA s".into(),
        "PREPARE p AS SELECT 1".into(),
    ];
    for door in &doors {
        let out = ws.expect(&["sql", "-c", door], 1);
        let err = stderr(&out);
        assert!(err.contains("refused") || err.contains("not found") || err.contains("not supported"), "{door}: {err}");
    }
    assert!(!target.exists());
    // Every attempt is in the audit log, with what happened.
    let sql: Vec<Value> = ws.audit_entries().into_iter().filter(|e| e["kind"] == "sql").collect();
    assert_eq!(sql.len(), doors.len());
    for e in &sql {
        assert_ne!(e["outcome"], "ok", "{e}");
    }
    assert!(sql.iter().filter(|e| e["outcome"] == "refused").count() >= 17);
    // The session still works and nothing changed.
    assert_eq!(count(&ws, None, "SELECT count(*) FROM population"), 196);
}

/// Record ids a provider may see: rows with its code, read as the analyst.
fn provider_rows(ws: &Workspace) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    for (table, column) in CODED {
        let rows = ws.sql_rows(None, &format!("SELECT record_id FROM {table}_history WHERE {column} = '{PROVIDER}'"));
        allowed.extend(first(&rows));
    }
    allowed
}

#[test]
fn a_provider_sees_only_its_own_rows_whatever_the_query() {
    let ws = warehouse();
    let name = format!("provider:{PROVIDER}");
    let role = Some(name.as_str());
    let allowed = provider_rows(&ws);
    let theirs =
        count(&ws, None, &format!("SELECT count(*) FROM treatment_invoices WHERE provider_regcode = '{PROVIDER}'"));
    let everyone = count(&ws, None, "SELECT count(*) FROM treatment_invoices");
    assert!(theirs > 0 && theirs < everyone, "{theirs} of {everyone}");

    let adversarial = [
        "SELECT record_id FROM treatment_invoices",
        "SELECT record_id FROM treatment_invoices_history WHERE provider_regcode <> '90006399' OR 1 = 1",
        "WITH x AS (SELECT * FROM treatment_invoices_history) SELECT record_id FROM x",
        "SELECT record_id FROM (SELECT record_id, provider_regcode FROM treatment_invoices) t \
         WHERE provider_regcode IN (SELECT DISTINCT provider_regcode FROM treatment_invoices_history)",
        "SELECT record_id FROM treatment_invoices UNION ALL SELECT record_id FROM waiting_list \
         UNION ALL SELECT record_id FROM sick_leave_history UNION ALL SELECT record_id FROM cancer_screening \
         UNION SELECT record_id FROM prescriptions",
        "SELECT record_id FROM (SELECT record_id, row_number() OVER (ORDER BY amount DESC) AS r, \
         count(*) OVER () AS n FROM treatment_invoices_history) t",
        "SELECT a.record_id FROM treatment_invoices a JOIN treatment_invoices_history b ON a.person_id = b.person_id",
        "SELECT record_id FROM waiting_times",
        "SELECT record_id FROM sick_leave_days",
        "SELECT record_id FROM treatment_invoices_history LIMIT 5",
        "SELECT record_id FROM treatment_invoices WHERE record_id NOT IN (SELECT record_id FROM waiting_list)",
        "SELECT max(record_id) FROM treatment_invoices GROUP BY provider_name",
    ];
    for q in adversarial {
        let got: BTreeSet<String> = first(&ws.sql_rows(role, q)).into_iter().collect();
        assert!(!got.is_empty(), "{q} returned nothing: the test would prove nothing");
        let foreign: Vec<&String> = got.difference(&allowed).collect();
        assert!(foreign.is_empty(), "{q} returned another provider's rows: {foreign:?}");
    }
    // Counts and sums are the provider's own, however asked.
    for q in [
        "SELECT count(*) FROM treatment_invoices",
        "SELECT DISTINCT count(*) OVER () FROM treatment_invoices",
        "SELECT count(*) FROM treatment_invoices WHERE CASE WHEN provider_regcode <> '90006399' \
         THEN 1 / (month - month) ELSE 0 END = 0",
        "SELECT count(*) FROM (SELECT DISTINCT provider_regcode, record_id FROM treatment_invoices_history) t",
    ] {
        assert_eq!(count(&ws, role, q), theirs, "{q}");
    }
    // The side-channel query above fails for a role that sees every provider: the test can tell.
    let out = ws.expect(
        &[
            "sql",
            "-c",
            "SELECT count(*) FROM treatment_invoices WHERE CASE WHEN provider_regcode <> '90006399' \
          THEN 1 / (month - month) ELSE 0 END = 0",
        ],
        1,
    );
    assert!(stderr(&out).to_lowercase().contains("divide by zero"), "{}", stderr(&out));
    let codes = ws.sql_rows(role, "SELECT DISTINCT provider_regcode FROM treatment_invoices_history");
    assert_eq!(codes, [vec![PROVIDER.to_owned()]]);
    // Tables without a provider code are not there at all, not even in the catalogue.
    for q in [
        "SELECT count(*) FROM population",
        "SELECT count(*) FROM ambulance_calls_history",
        "SELECT * FROM invoices_with_patient",
    ] {
        let out = ws.expect(&["sql", "--role", &name, "-c", q], 1);
        assert!(stderr(&out).contains("may not read"), "{q}: {}", stderr(&out));
    }
    // EXPLAIN ANALYZE would count the rows the scan read before the role's condition.
    let out = ws.expect(&["sql", "--role", &name, "-c", "EXPLAIN ANALYZE SELECT count(*) FROM treatment_invoices"], 1);
    assert!(stderr(&out).contains("refused") && stderr(&out).contains("EXPLAIN ANALYZE"), "{}", stderr(&out));
    let plan = stdout(&ws.ok(&["sql", "--role", &name, "-c", "EXPLAIN SELECT count(*) FROM treatment_invoices"]));
    assert!(plan.contains("RoleFilterExec"), "{plan}");
    let listed = first(&ws.sql_rows(role, "SELECT DISTINCT table_name FROM information_schema.columns"));
    for hidden in ["population", "population_history", "ambulance_calls", "invoices_with_patient", "ambulance_response"]
    {
        assert!(!listed.contains(&hidden.to_owned()), "{hidden} listed: {listed:?}");
    }
    assert!(listed.contains(&"treatment_invoices".to_owned()));
}

#[test]
fn hidden_columns_do_not_exist_for_the_role_and_conditions_from_the_roles_file_hold() {
    let ws = warehouse();
    let fund = Some("insurance_fund");
    let out = ws.expect(&["sql", "--role", "insurance_fund", "-c", "SELECT prescriber_id FROM prescriptions"], 1);
    assert!(stderr(&out).contains("prescriber_id"), "{}", stderr(&out));
    let out = ws.ok(&[
        "sql",
        "--role",
        "insurance_fund",
        "--format",
        "csv",
        "-c",
        "SELECT * FROM prescriptions_history LIMIT 1",
    ]);
    let header = stdout(&out).lines().next().unwrap().to_owned();
    assert!(header.contains("person_id") && !header.contains("prescriber_id"), "{header}");
    let cols =
        first(&ws.sql_rows(fund, "SELECT column_name FROM information_schema.columns WHERE table_name = 'sick_leave'"));
    assert!(cols.contains(&"diagnosis".to_owned()) && !cols.contains(&"doctor_id".to_owned()), "{cols:?}");
    let out = ws.expect(&["sql", "--role", "insurance_fund", "-c", "SELECT count(*) FROM waiting_list"], 1);
    assert!(stderr(&out).contains("may not read"), "{}", stderr(&out));
    // Views over the role's tables are offered to it; views over other tables are not.
    let views = first(&ws.sql_rows(
        fund,
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW' AND table_schema = 'public'",
    ));
    assert!(
        views.contains(&"invoices_with_patient".to_owned()) && views.contains(&"sick_leave_days".to_owned()),
        "{views:?}"
    );
    assert!(!views.contains(&"waiting_times".to_owned()), "{views:?}");

    let breast = Some("breast_screening");
    let programmes = first(&ws.sql_rows(breast, "SELECT DISTINCT screening FROM cancer_screening_history"));
    assert_eq!(programmes, ["BREAST"]);
    let all = count(&ws, None, "SELECT count(*) FROM cancer_screening WHERE screening = 'BREAST'");
    assert_eq!(count(&ws, breast, "SELECT count(*) FROM cancer_screening"), all);

    let out = ws.expect(&["sql", "--role", "nobody", "-c", "SELECT 1"], 3);
    assert!(stderr(&out).contains("unknown role `nobody`"), "{}", stderr(&out));
}

#[test]
fn views_answer_their_questions_and_a_broken_view_names_its_file() {
    let ws = warehouse();
    let views = ws.sql_rows(None, "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW' AND table_schema = 'public' ORDER BY 1");
    assert_eq!(
        first(&views),
        ["ambulance_response", "dispensations_atc", "invoices_with_patient", "sick_leave_days", "waiting_times"]
    );
    // Each view agrees with the same question asked of the tables.
    let check = |view: &str, table: &str| {
        let a = ws.sql_rows(None, &format!("SELECT * FROM ({view}) ORDER BY 1"));
        let b = ws.sql_rows(None, &format!("SELECT * FROM ({table}) ORDER BY 1"));
        assert_eq!(a, b, "{view}");
        assert!(!a.is_empty(), "{view}");
    };
    check(
        "SELECT record_id, days FROM sick_leave_days",
        "SELECT record_id, CAST(end_date - start_date AS BIGINT) + 1 FROM sick_leave",
    );
    check(
        "SELECT record_id, atc_level1, atc_level2, atc_level3, atc_level4 FROM dispensations_atc",
        "SELECT record_id, left(atc_code, 1), left(atc_code, 3), left(atc_code, 4), left(atc_code, 5) FROM prescriptions",
    );
    check(
        "SELECT record_id, response_minutes FROM ambulance_response WHERE response_minutes IS NOT NULL",
        "SELECT record_id, CAST(date_part('epoch', arrived_at - received_at) AS DOUBLE) / 60.0 FROM ambulance_calls \
         WHERE arrived_at IS NOT NULL",
    );
    check(
        "SELECT record_id, days_from_registration, days_from_first_available FROM waiting_times",
        "SELECT record_id, CAST(service_time AS DATE) - CAST(confirmed_at AS DATE), \
         CAST(service_time AS DATE) - CAST(first_available_time AS DATE) FROM waiting_list",
    );
    let bands = ws.sql_rows(None, "SELECT age_band, count(*) FROM invoices_with_patient GROUP BY 1 ORDER BY 1");
    assert!(bands.iter().all(|r| r[0].is_empty() || r[0] == "90+" || r[0].split('-').count() == 2), "{bands:?}");
    let joined =
        count(&ws, None, "SELECT count(*) FROM invoices_with_patient WHERE county IS NOT NULL AND sex IS NOT NULL");
    assert!(joined > 0);
    assert_eq!(count(&ws, None, "SELECT count(*) FROM invoices_with_patient"), 196);

    std::fs::write(
        ws.root().join("queries/views/zz_broken.sql"),
        "-- Broken on purpose.\nSELECT nope FROM population\n",
    )
    .unwrap();
    let out = ws.expect(&["sql", "-c", "SELECT 1"], 3);
    assert!(stderr(&out).contains("zz_broken.sql") && stderr(&out).contains("nope"), "{}", stderr(&out));
    std::fs::write(ws.root().join("queries/views/zz_broken.sql"), "SELECT 1 AS x\n").unwrap();
    let out = ws.expect(&["sql", "-c", "SELECT 1"], 3);
    assert!(stderr(&out).contains("zz_broken.sql") && stderr(&out).contains("comment"), "{}", stderr(&out));
    std::fs::write(ws.root().join("queries/views/zz_broken.sql"), "-- Not a query.\nDROP TABLE population\n").unwrap();
    let out = ws.expect(&["sql", "-c", "SELECT 1"], 3);
    assert!(stderr(&out).contains("zz_broken.sql") && stderr(&out).contains("refused"), "{}", stderr(&out));
}

#[test]
fn every_statement_is_audited_without_personal_codes() {
    let ws = warehouse();
    let code = "38001010009";
    ws.ok(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT count(*) FROM population; SELECT care_type FROM treatment_invoices LIMIT 2",
    ]);
    ws.expect(&["sql", "-c", &format!("SELECT * FROM population WHERE person_id = '{code}' AND nope = 1")], 1);
    // Each statement that ran has an entry when it started and one when it ended; count the ends.
    let all: Vec<Value> = ws.audit_entries().into_iter().filter(|e| e["kind"] == "sql").collect();
    assert_eq!(all.iter().filter(|e| e["outcome"] == "started").count(), 2, "the failed one never started");
    let sql: Vec<Value> = all.into_iter().filter(|e| e["outcome"] != "started").collect();
    assert_eq!(sql.len(), 3);
    assert_eq!(sql[0]["statement"], "SELECT count(*) FROM population");
    assert_eq!(sql[0]["tables"], serde_json::json!(["population"]));
    assert_eq!(sql[0]["rows"], 1);
    assert_eq!(sql[0]["outcome"], "ok");
    assert_eq!(sql[0]["role"], "analyst");
    assert_eq!(sql[1]["rows"], 2);
    assert_eq!(sql[1]["tables"], serde_json::json!(["treatment_invoices"]));
    for e in &sql {
        for field in ["time", "user", "role", "statement", "tables", "rows", "duration_ms", "outcome"] {
            assert!(!e[field].is_null(), "{field} missing: {e}");
        }
    }
    assert_eq!(sql[2]["outcome"], "error");
    assert!(sql[2]["statement"].as_str().unwrap().contains("[isikukood]"), "{}", sql[2]);
    let log = std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap();
    assert!(!log.contains(code), "a personal code typed into a query reached the audit log");
    let out = ws.ok(&["audit", "verify"]);
    assert!(stdout(&out).contains(&format!("{} entries", ws.audit_entries().len())), "{}", stdout(&out));
    // The user is who runs ladu, not who the environment claims.
    let out = ws.command(&["sql", "-c", "SELECT 1"]).env("USER", "mallory").env("LOGNAME", "mallory").output().unwrap();
    assert!(out.status.success());
    let last = ws.audit_entries().pop().unwrap();
    assert_ne!(last["user"], "mallory", "{last}");
    assert_eq!(last["user"], sql[0]["user"]);
}

#[test]
fn audit_verify_names_the_first_bad_line_of_each_tampering() {
    let ws = warehouse();
    for i in 0..4 {
        ws.ok(&["sql", "-c", &format!("SELECT {i}")]);
    }
    let log = ws.root().join("audit/audit.jsonl");
    let orig: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    let n = orig.len();
    assert!(n >= 15, "7 ingests and 4 statements, each started and ended");
    let write =
        |lines: &[String]| std::fs::write(&log, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let bad_line = |expect: usize, what: &str| {
        let out = ws.expect(&["audit", "verify"], 1);
        let err = stderr(&out);
        assert!(err.contains(&format!("line {expect}:")), "{what}: {err}");
    };
    let mut edited = orig.clone();
    assert!(edited[9].contains("SELECT 1"), "{}", edited[9]);
    edited[9] = edited[9].replace("SELECT 1", "SELECT 9");
    write(&edited);
    bad_line(10, "edited");
    let mut deleted = orig.clone();
    deleted.remove(3);
    write(&deleted);
    bad_line(4, "deleted");
    let mut reordered = orig.clone();
    reordered.swap(8, 9);
    write(&reordered);
    bad_line(9, "reordered");
    let mut inserted = orig.clone();
    inserted.insert(5, orig[2].clone());
    write(&inserted);
    bad_line(6, "inserted");
    let mut truncated = orig.join("\n");
    truncated.truncate(truncated.len() - 20);
    std::fs::write(&log, truncated).unwrap();
    bad_line(n, "truncated");
    // A damaged log is never appended to: the next statement refuses to run unaudited.
    let out = ws.expect(&["sql", "-c", "SELECT 1"], 1);
    assert!(stderr(&out).contains("audit"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "no result is shown that cannot be logged");
    write(&orig);
    ws.ok(&["audit", "verify"]);
    let shown = stdout(&ws.ok(&["audit", "show", "--kind", "sql"]));
    assert_eq!(shown.lines().count(), 8, "four statements, each started and ended: {shown}");
}

/// The interactive shell on a terminal: prompts, a statement over two lines, `\d`, `\q`.
#[test]
fn the_interactive_shell_edits_lines_and_lists_tables() {
    let ws = warehouse();
    let cmd = format!("exec {BIN} --config {} sql", ws.config().display());
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(ws.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs the shell on a terminal");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            let mut chunk = Vec::new();
            match reader.read_until(b' ', &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    buf.extend_from_slice(&chunk);
                    let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                }
            }
        }
    });
    // Wait until the screen shows `want` after `from` characters, for at most a minute.
    let wait = |want: &str, from: usize| -> (String, usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let screen = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no `{want}` on the terminal"));
            if let Some(i) = screen[from.min(screen.len())..].find(want) {
                return (screen.clone(), from + i + want.len());
            }
        }
    };
    let (_, at) = wait("ladu=> ", 0);
    stdin.write_all(b"SELECT 40 +\n").unwrap();
    let (_, at) = wait("ladu-> ", at);
    stdin.write_all(b"2 AS answer;\n").unwrap();
    let (screen, at) = wait("ladu=> ", at);
    assert!(screen.contains("| answer |") && screen.contains("| 42     |"), "{screen}");
    stdin.write_all(b"\\d\n").unwrap();
    let (screen, at) = wait("ladu=> ", at);
    assert!(screen.contains("treatment_invoices_history") && screen.contains("waiting_times"), "{screen}");
    stdin.write_all(b"SELECT nope;\n").unwrap();
    let (_, _) = wait("ladu=> ", at);
    stdin.write_all(b"\\q\n").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let sql: Vec<Value> =
        ws.audit_entries().into_iter().filter(|e| e["kind"] == "sql" && e["outcome"] != "started").collect();
    assert_eq!(sql.len(), 2, "both statements, the failed one too; the error did not end the session");
    assert_eq!(sql[0]["statement"], "SELECT 40 +\n2 AS answer");
}

/// Analyst queries give the same answers in ladu and in DuckDB over the same files.
#[test]
fn analyst_queries_agree_with_duckdb() {
    let ws = warehouse();
    let queries = [
        "SELECT care_type, count(*) AS n, sum(amount) AS total FROM treatment_invoices GROUP BY care_type",
        "SELECT p.county, p.sex, count(*) AS invoices, count(DISTINCT i.person_id) AS persons \
         FROM treatment_invoices i JOIN population p ON p.person_id = i.person_id GROUP BY p.county, p.sex",
        "SELECT count(DISTINCT person_id) FROM treatment_invoices",
        "SELECT person_id, start_date, amount, sum(amount) OVER (PARTITION BY person_id ORDER BY start_date, record_id) \
         AS running FROM treatment_invoices",
        "SELECT year, month, avg(end_date - start_date) AS days, max(end_date - start_date) AS longest \
         FROM treatment_invoices GROUP BY year, month",
        "SELECT main_diagnosis, count(*) AS n FROM treatment_invoices WHERE start_date >= DATE '2024-01-01' \
         AND start_date < DATE '2024-01-01' + INTERVAL '2 months' GROUP BY main_diagnosis",
        "SELECT provider_regcode, total, rank() OVER (ORDER BY total DESC) AS place FROM \
         (SELECT provider_regcode, sum(amount) AS total FROM treatment_invoices GROUP BY provider_regcode) t",
        "SELECT floor((extract(year FROM i.start_date) - p.birth_year) / 10.0) AS decade, p.sex, count(*) AS n, \
         sum(i.amount) AS total FROM treatment_invoices i JOIN population p USING (person_id) GROUP BY 1, 2",
        "SELECT priority, county, count(*) AS cases, avg(date_part('epoch', arrived_at) - date_part('epoch', received_at)) \
         AS seconds FROM ambulance_calls WHERE arrived_at IS NOT NULL GROUP BY priority, county",
        "SELECT leave_type, sum(end_date - start_date + 1) AS days, count(*) AS certificates, \
         count(DISTINCT person_id) AS persons FROM sick_leave GROUP BY leave_type",
        "SELECT substr(atc_code, 1, 3) AS atc2, sum(insurer_paid) AS insurer, sum(packages) AS packages \
         FROM prescriptions GROUP BY 1",
        "SELECT specialty_code, count(*) AS bookings, avg(CAST(service_time AS DATE) - CAST(confirmed_at AS DATE)) \
         AS wait FROM waiting_list WHERE cancelled_at IS NULL GROUP BY specialty_code",
        "SELECT count(*) FROM population p WHERE EXISTS (SELECT 1 FROM sick_leave s WHERE s.person_id = p.person_id)",
        "SELECT screening, count(*) AS invited, count(DISTINCT person_id) AS persons FROM cancer_screening_history \
         GROUP BY screening",
        "SELECT i.person_id, count(*) AS n, lag(count(*)) OVER (ORDER BY i.person_id) AS previous \
         FROM treatment_invoices i WHERE i.care_type = 'AMB' GROUP BY i.person_id",
        // Numbered by ladu's SortedWindowExec, not DataFusion's window.
        "SELECT person_id, record_id, amount, r FROM (SELECT person_id, record_id, amount, row_number() OVER \
         (PARTITION BY person_id ORDER BY amount DESC, record_id) AS r FROM treatment_invoices) t WHERE r <= 3",
    ];
    agree_with_duckdb(&ws, &queries);
}

/// Each query returns rows in ladu, and DuckDB gives the same rows over the same committed files.
fn agree_with_duckdb(ws: &Workspace, queries: &[impl AsRef<str>]) {
    let dir = ws.root().join("crosscheck");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, q) in queries.iter().enumerate() {
        let q = q.as_ref();
        let file = dir.join(format!("q{i}.sql"));
        std::fs::write(&file, q).unwrap();
        let out = dir.join(format!("q{i}.csv"));
        ws.ok(&["sql", "--format", "csv", "--output", out.to_str().unwrap(), "-f", file.to_str().unwrap()]);
        let rows = std::fs::read_to_string(&out).unwrap().lines().count();
        assert!(rows > 1, "{q} returned no rows: nothing to compare");
    }
    let n = queries.len().to_string();
    let v: Value =
        serde_json::from_str(&py("duckdb_compare.py", &[ws.warehouse().to_str().unwrap(), dir.to_str().unwrap(), &n]))
            .unwrap();
    assert_eq!(v["mismatches"], serde_json::json!([]), "{v:#}");
}

/// A sort larger than `sql.memory_limit` spills to disk instead of taking more memory.
#[test]
fn a_query_larger_than_the_memory_limit_spills() {
    let ws = Workspace::new();
    ws.sample(60_000, 2, &["--only", "treatment_invoices"]);
    ws.ok(&["ingest"]);
    let config = std::fs::read_to_string(ws.config()).unwrap();
    let spill = ws.root().join("spill");
    std::fs::write(
        ws.config(),
        format!(
            "{config}[sql]\nmemory_limit = \"10MiB\"\nspill_dir = \"{}\"\ntarget_partitions = 1\n",
            spill.display()
        ),
    )
    .unwrap();
    // Only invoices are committed: the other tables say so.
    let out = ws.expect(&["sql", "-c", "SELECT count(*) FROM population_history"], 1);
    assert!(stderr(&out).contains("`population_history` has no committed data yet"), "{}", stderr(&out));
    let q = "EXPLAIN ANALYZE SELECT * FROM treatment_invoices_history ORDER BY provider_name, record_id";
    let plan = stdout(&ws.ok(&["sql", "--format", "csv", "-c", q]));
    let sort = plan.lines().find(|l| l.contains("SortExec")).unwrap_or_else(|| panic!("{plan}"));
    let spills: u64 = sort
        .split("spill_count=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no spill count: {sort}"));
    assert!(spills > 0, "{sort}");
    // The same sort without the limit's pressure does not spill, and the rows are all there.
    std::fs::write(ws.config(), format!("{config}[sql]\nmemory_limit = \"4GiB\"\n")).unwrap();
    let plan = stdout(&ws.ok(&["sql", "--format", "csv", "-c", q]));
    let sort = plan.lines().find(|l| l.contains("SortExec")).unwrap();
    assert!(sort.contains("spill_count=0") && sort.contains("output_rows=60.00 K"), "{sort}");
}

/// A reader that stops early (`| head`) ends ladu with exit 0, and the statement is still audited.
#[test]
fn a_closed_pipe_ends_quietly() {
    let ws = warehouse();
    let many =
        "select * from treatment_invoices_history cross join (select 1 from treatment_invoices_history limit 200)";
    for args in [
        vec!["sql", "--format", "csv", "-c", many],
        vec!["sql", "--format", "table", "-c", many],
        vec!["audit", "show"],
        vec!["report", "processing"],
    ] {
        let mut child = ws.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(!first.is_empty());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let last_sql = ws.audit_entries().into_iter().rev().find(|e| e["kind"] == "sql" && e["statement"] == many);
    assert!(last_sql.is_some(), "the statement read through a closed pipe was audited");
}

/// Every query of the SQL suite and of the SQL bench gives DuckDB's answer over the same files.
#[test]
fn the_sql_suite_agrees_with_duckdb() {
    let ws = Workspace::new();
    ws.sample(3000, 7, &[]);
    ws.ok(&["ingest"]);
    let queries = sql_suite_queries();
    assert!(queries.len() >= 40, "the suite's 30 and more and the bench's 10: {}", queries.len());
    agree_with_duckdb(&ws, &queries);
}
