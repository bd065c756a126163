//! Faults and bad input that once lost data, leaked, or passed unnoticed (the hardening issue), each through the binary.

use sha2::Digest;

use crate::util::*;

const INVOICE_HEADER: &str = "invoice_id;isikukood;provider_regcode;provider_name;main_diagnosis;care_type;amount;start_date;end_date;submitted_date";

fn invoice(id: &str, code: &str, provider_name: &str) -> String {
    format!("{id};{code};90006399;{provider_name};J06.9;AMB;10,00;2024-03-01;2024-03-01;2024-03-02")
}

/// Write `text` to `path`; returns the path as text.
fn write(path: &std::path::Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Item 1: a warehouse whose manifest is missing, empty or damaged is refused by every command that
/// writes (exit 3, naming the folder and its data files), reported by `ladu check`, and nothing of it is removed.
#[test]
fn a_warehouse_without_its_manifest_is_refused_and_nothing_is_removed() {
    let ws = Workspace::new();
    ws.sample(60, 2, &["--only", "population", "--only", "treatment_invoices"]);
    ws.ok(&["run"]);
    let files = ws.data_files();
    assert!(!files.is_empty());
    let manifests = ws.warehouse().join("_ladu/manifest");
    let saved = tempfile::tempdir().unwrap();
    copy_dir(&manifests, saved.path());
    ws.sample(60, 3, &["--only", "population", "--date", "2024-04-30"]);
    for damage in ["missing", "empty", "unparsable"] {
        let _ = std::fs::remove_dir_all(&manifests);
        match damage {
            "missing" => {}
            "empty" => std::fs::create_dir(&manifests).unwrap(),
            _ => {
                copy_dir(saved.path(), &manifests);
                let newest = ws.manifest_versions().pop().unwrap();
                std::fs::write(manifests.join(newest), b"{\"format\": 1, \"vers").unwrap();
            }
        }
        for command in [&["ingest"][..], &["stats"], &["run"], &["publish"]] {
            let out = ws.expect(command, 3);
            let err = stderr(&out);
            match damage {
                "unparsable" => assert!(err.contains("is damaged") && err.contains("restore"), "{command:?}: {err}"),
                _ => assert!(
                    err.contains(&format!(
                        "{} holds {} data file(s) but no manifest",
                        ws.warehouse().display(),
                        files.len()
                    )) && err.contains("damaged, not new"),
                    "{damage} {command:?}: {err}"
                ),
            }
        }
        ws.expect(&["sql", "-c", "SELECT 1"], 3);
        let check = stdout(&ws.expect(&["check"], 1));
        assert!(check.contains("PROBLEM:") && check.contains("manifest"), "{check}");
        assert_eq!(ws.data_files(), files, "{damage}: every data file is still there");
    }
    // Restored from backup, everything works again.
    std::fs::remove_dir_all(&manifests).unwrap();
    copy_dir(saved.path(), &manifests);
    ws.ok(&["run"]);
    ws.ok(&["check"]);
}

/// Item 2: every night with new deliveries recomputes the statistics, and `ladu check` passes after each.
#[test]
fn check_passes_after_every_night() {
    let ws = Workspace::new();
    for (night, date) in ["2024-03-31", "2024-04-01", "2024-04-02"].iter().enumerate() {
        ws.sample(80, night as u64 + 1, &["--date", date]);
        let out = ws.ok(&["run"]);
        assert!(stdout(&out).contains("statistics: 6 computed"), "{}", stdout(&out));
        let check = ws.ok(&["check"]);
        assert!(stdout(&check).contains("no problems found"), "night {night}: {}", stdout(&check));
    }
    // The statistics replaced are gone from disk, not merely unnamed.
    let stats: Vec<String> = ws.data_files().into_iter().filter(|f| f.starts_with("stats/")).collect();
    assert_eq!(stats.len(), 6, "{stats:?}");
}

/// Item 3: one (source, extract date, sequence) is one delivery, however its name spells it.
#[test]
fn one_extract_date_and_sequence_is_one_delivery() {
    let ws = Workspace::new();
    let first = format!("{INVOICE_HEADER}\n{}\n", invoice("INV1", "38001010009", "Kliinik"));
    let other = format!("{INVOICE_HEADER}\n{}\n", invoice("INV1", "49403136515", "Kliinik"));
    ws.deliver("treatment_invoices", "treatment_invoices_20240301.csv", &first);
    ws.ok(&["ingest"]);
    ws.deliver("treatment_invoices", "treatment_invoices_20240301_0.csv", &other);
    ws.deliver("treatment_invoices", "treatment_invoices_20240301_00.csv", &first);
    let out = ws.expect(&["ingest"], 4);
    let text = stdout(&out);
    assert!(
        text.contains("treatment_invoices_20240301_0.csv")
            && text.contains("REFUSED: extract date 2024-03-01 sequence 0 of treatment_invoices was already delivered as `treatment_invoices_20240301.csv` with other content"),
        "{text}"
    );
    assert!(text.contains("treatment_invoices_20240301_00.csv") && text.contains("already ingested"), "{text}");
    assert_eq!(ws.sql_rows(None, "SELECT count(*) FROM treatment_invoices_history"), [["1"]]);
    let report = std::fs::read_to_string(
        ws.root().join("outbox/treatment_invoices/treatment_invoices_20240301_0.csv.rejections.csv"),
    )
    .unwrap();
    assert!(report.contains("file refused: extract date 2024-03-01 sequence 0"), "{report}");
    let refused = ws.audit_entries().into_iter().find(|e| e["outcome"] == "refused").unwrap();
    assert_eq!(refused["file"], "treatment_invoices_20240301_0.csv");
}

/// Item 4: a record that never ends refuses its delivery at once, naming the line where it starts;
/// the rest of the file is not read into memory.
#[test]
fn a_record_that_never_ends_refuses_the_delivery_at_once() {
    let ws = Workspace::new();
    let mut body =
        format!("{INVOICE_HEADER}\n{}\nINV2;38001010009;90006399;\"Kliinik", invoice("INV1", "38001010009", "K"));
    body.push_str(&"x\n".repeat(20 << 20));
    ws.deliver("treatment_invoices", "treatment_invoices_20240301.csv", &body);
    let mut quoted_newlines = format!("{INVOICE_HEADER}\n\"");
    quoted_newlines.push_str(&"\n".repeat(20 << 20));
    ws.deliver("treatment_invoices", "treatment_invoices_20240302.csv", &quoted_newlines);
    ws.deliver("treatment_invoices", "treatment_invoices_20240303.csv", "x".repeat(20 << 20));
    let out = ws.expect(&["ingest"], 4);
    let text = stdout(&out);
    for (file, line) in [("20240301", 3), ("20240302", 2), ("20240303", 1)] {
        let report = std::fs::read_to_string(
            ws.root().join(format!("outbox/treatment_invoices/treatment_invoices_{file}.csv.rejections.csv")),
        )
        .unwrap();
        assert!(
            report.contains(&format!(",{line},,\"file refused: line {line}: a record starting here runs past 1048576 bytes (`ingest.max_record_bytes`)")),
            "{file}: {report}"
        );
    }
    assert!(text.contains("3 deliveries refused"), "{text}");
    assert!(ws.data_files().is_empty());
}

/// Item 5: answers to the supervisory authority and the data subject are never made from what could not be read.
#[test]
fn compliance_answers_never_swallow_errors() {
    let ws = Workspace::new();
    ws.sample(40, 4, &["--only", "population"]);
    ws.ok(&["run"]);
    // An audit log with a line that cannot be read: the report fails, naming it.
    let log = ws.root().join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "{\"seq\": 2, \"kind\": \"release\", garbled";
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = ws.expect(&["report", "processing"], 1);
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "no report: {}", stdout(&out));
    std::fs::write(&log, &text).unwrap();
    // A key that cannot be read is no clean pass of `ladu check`, unless it is said not to be checked.
    std::fs::remove_file(ws.root().join("key/ladu.key")).unwrap();
    let out = ws.expect(&["check"], 1);
    assert!(stdout(&out).contains("PROBLEM: key file") && stdout(&out).contains("--skip-key"), "{}", stdout(&out));
    let out = ws.ok(&["check", "--skip-key"]);
    assert!(stdout(&out).contains("key not checked: --skip-key was given"), "{}", stdout(&out));
}

/// Item 6: local times in the hour the clocks skip and the hour they repeat are read as PostgreSQL reads them.
#[test]
fn local_times_across_daylight_saving_changes() {
    let ws = Workspace::new();
    let header = "booking_id;isikukood;specialty_code;service_time;first_available_time;confirmed_at;institution_regcode;institution_name;changed_at;cancelled_at;changed_by;payer_name;payer_iban;reference_no;paid_amount;service_used";
    let row = |id: &str, service: &str| {
        format!(
            "{id};38001010009;E220;{service};;2025-01-10T09:00:00;90006399;Kliinik;;;;Mari Maasikas;EE382200221020145685;123;;Y"
        )
    };
    let body = [
        header.to_owned(),
        row("B1", "2025-03-30T03:33:22"),
        row("B2", "2025-10-26T03:30:00"),
        row("B3", "2025-03-30T02:59:59"),
    ]
    .join("\n");
    ws.deliver("waiting_list", "waiting_list_20251101.csv", body + "\n");
    let out = ws.ok(&["ingest"]);
    assert!(stdout(&out).contains("committed         3 rows, rejected 0 rows"), "{}", stdout(&out));
    let rows =
        ws.sql_rows(None, "SELECT CAST(extract(epoch FROM service_time) AS BIGINT) AS t FROM waiting_list ORDER BY t");
    // PostgreSQL 15, TimeZone Europe/Tallinn: extract(epoch from '…'::timestamptz).
    assert_eq!(rows, [["1743296399"], ["1743298402"], ["1761442200"]]);
}

/// Item 8: a restricted role's plans show nothing of the rows it cannot read: not their files, number or statistics.
#[test]
fn a_restricted_roles_plans_hide_what_lies_beneath_its_restriction() {
    let ws = Workspace::new();
    ws.sample(400, 5, &["--only", "treatment_invoices", "--only", "population"]);
    ws.ok(&["ingest"]);
    let provider = Some("provider:90006399");
    let total = ws.sql_rows(None, "SELECT count(*) FROM treatment_invoices_history")[0][0].clone();
    for sql in [
        "EXPLAIN VERBOSE SELECT count(*) FROM treatment_invoices",
        "EXPLAIN (COSTS) SELECT count(*) FROM treatment_invoices",
        "EXPLAIN FORMAT tree SELECT count(*) FROM treatment_invoices",
        "EXPLAIN ANALYZE SELECT count(*) FROM treatment_invoices",
    ] {
        let out = ws.expect(&["sql", "--role", "provider:90006399", "-c", sql], 1);
        assert!(
            stderr(&out).contains("refused") && stderr(&out).contains("plain `EXPLAIN` may"),
            "{sql}: {}",
            stderr(&out)
        );
    }
    let plan = stdout(&ws.ok(&[
        "sql",
        "--role",
        "provider:90006399",
        "--format",
        "csv",
        "-c",
        "EXPLAIN SELECT care_type, count(*) FROM treatment_invoices WHERE year = 2024 GROUP BY care_type",
    ]));
    assert!(plan.contains("RoleFilterExec"), "{plan}");
    let counted = stdout(&ws.ok(&[
        "sql",
        "--role",
        "provider:90006399",
        "--format",
        "csv",
        "-c",
        "EXPLAIN SELECT count(*) FROM treatment_invoices_history",
    ]));
    for plan in [&plan, &counted] {
        for leak in ["parquet", "file_groups", "DataSourceExec", "part-", "Rows=", &total] {
            assert!(!plan.contains(leak), "`{leak}` in a provider's plan:\n{plan}");
        }
    }
    // An analyst sees everything, files included.
    let plan = stdout(&ws.ok(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "EXPLAIN SELECT care_type, count(*) FROM treatment_invoices GROUP BY care_type",
    ]));
    assert!(plan.contains(".parquet"), "{plan}");
    let _ = provider;
}

/// Items 9 and 10: the release risk check finds quasi-identifiers and the person column by lineage,
/// whatever they are called, and the query's hash is of the redacted text.
#[test]
fn release_risk_follows_lineage_and_hashes_only_redacted_text() {
    let ws = Workspace::new();
    ws.sample(200, 3, &["--only", "population", "--only", "treatment_invoices", "--invalid", "0"]);
    ws.ok(&["ingest"]);
    for (name, query, qi) in [
        ("renamed", "select person_id as pid, birth_year as yob, sex as gender from population", "yob, gender"),
        (
            "derived",
            "select person_id as who, birth_year / 10 as decade, case when sex = 'M' then 1 else 2 end as s, county as c \
             from population",
            "decade, s, c",
        ),
        (
            "view",
            "select i.person_id as p, i.age_band as band, i.county as place from invoices_with_patient i",
            "band, place",
        ),
    ] {
        let file = write(&ws.root().join(format!("{name}.sql")), query);
        let out = ws.root().join(name);
        let refused =
            ws.expect(&["release", "--recipient", "tai", "--query", &file, "--out", out.to_str().unwrap()], 4);
        let err = stderr(&refused);
        assert!(
            err.contains("release refused") && err.contains(&format!("share one combination of {qi}")),
            "{name}: {err}"
        );
        assert!(err.contains("persons share"), "{name}: the renamed person column counts persons: {err}");
    }
    // A code typed into the query: the audit entry and release.json hold the redacted text and its hash.
    let query = "select count(*) as n from population where person_id <> '38001010009'";
    let file = write(&ws.root().join("typed.sql"), query);
    let out = ws.root().join("typed");
    ws.ok(&["release", "--recipient", "tai", "--query", &file, "--out", out.to_str().unwrap()]);
    let redacted = query.replace("38001010009", "[isikukood]");
    let expected = ladu::hex::encode(&sha2::Sha256::digest(redacted.as_bytes()));
    let entry = ws.audit_entries().into_iter().rfind(|e| e["kind"] == "release").unwrap();
    assert_eq!(entry["query"], redacted);
    assert_eq!(entry["query_sha256"], expected);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("release.json")).unwrap()).unwrap();
    assert_eq!(manifest["query_sha256"], expected);
    assert_ne!(expected, ladu::hex::encode(&sha2::Sha256::digest(query.as_bytes())));
}

/// Items 11 and 12: codes in their written forms are redacted, pseudonyms stay whole, and free text
/// kept in the warehouse is stored with its codes masked and reported to the provider.
#[test]
fn codes_in_text_are_redacted_or_masked_and_pseudonyms_stay_whole() {
    let ws = Workspace::new();
    let body = [
        INVOICE_HEADER.to_owned(),
        invoice("INV1", "38001010009", "Dr Tamm 380 0101 0009"),
        invoice("INV2", "49403136515", "Kliinik 49403136515"),
        invoice("INV3", "49403136515", "Kliinik 12345678901"),
    ]
    .join("\n");
    ws.deliver("treatment_invoices", "treatment_invoices_20240301.csv", body + "\n");
    let out = ws.ok(&["ingest"]);
    assert!(stdout(&out).contains("committed         3 rows, rejected 0 rows"), "{}", stdout(&out));
    let names = ws.sql_rows(None, "SELECT provider_name FROM treatment_invoices ORDER BY provider_name");
    assert_eq!(names, [["Dr Tamm [isikukood]"], ["Kliinik 12345678901"], ["Kliinik [isikukood]"]]);
    let report = std::fs::read_to_string(
        ws.root().join("outbox/treatment_invoices/treatment_invoices_20240301.csv.rejections.csv"),
    )
    .unwrap();
    assert_eq!(
        report.lines().skip(1).collect::<Vec<_>>(),
        [
            "treatment_invoices_20240301.csv,2,provider_name,\"personal code in free text, masked\"",
            "treatment_invoices_20240301.csv,3,provider_name,\"personal code in free text, masked\""
        ]
    );
    // Written forms in a statement are redacted in the audit log; a subject look-up's pseudonym is kept whole.
    for typed in ["'3800101 0009'", "'380-0101-0009'", "'３８００１０１０００９'", "'38001010009' || '49403136515'"]
    {
        ws.ok(&["sql", "-c", &format!("SELECT {typed} AS x")]);
    }
    let mut subject = ws.command(&["subject", "--isikukood-file", "-"]);
    let child = subject.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write as _;
    child.stdin.as_ref().unwrap().write_all(b"38001010009\n").unwrap();
    let answer = child.wait_with_output().unwrap();
    assert!(answer.status.success(), "{}", stderr(&answer));
    let pseudonym = ws.audit_entries().into_iter().rfind(|e| e["kind"] == "subject").unwrap()["pseudonym"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap();
    for form in ["3800101 0009", "380-0101-0009", "３８００１０１０００９", "38001010009", "49403136515"] {
        assert!(!log.contains(form), "`{form}` in the audit log");
    }
    let lookups: Vec<String> = ws
        .audit_entries()
        .into_iter()
        .filter(|e| e["role"] == "ladu subject" && e["outcome"] == "ok")
        .map(|e| e["statement"].as_str().unwrap().to_owned())
        .collect();
    assert!(!lookups.is_empty());
    assert!(lookups.iter().all(|s| s.contains(&pseudonym) && !s.contains("[isikukood]")), "{lookups:?}");
}

/// Item 13: no byte of a result reaches the reader before the statement's entry is in the audit log.
#[test]
fn a_statement_is_in_the_audit_log_before_its_first_row_is_shown() {
    let ws = Workspace::new();
    ws.sample(4000, 7, &["--only", "treatment_invoices"]);
    ws.ok(&["ingest"]);
    let before = ws.audit_entries().len();
    let mut child = Killed(
        ws.command(&[
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT * FROM treatment_invoices_history a, (VALUES (1),(2),(3)) v(k)",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    let mut first = [0u8; 64];
    use std::io::Read as _;
    child.0.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    // The reader has a result's first bytes, and the process waits to write more: its entry is already there.
    let entries = ws.audit_entries();
    let started = entries[before..].iter().find(|e| e["kind"] == "sql").expect("an entry before the first row");
    assert_eq!(started["outcome"], "started");
    drop(child);
    // A finished statement's final entry points back at its start.
    ws.ok(&["sql", "-c", "SELECT 1"]);
    let entries = ws.audit_entries();
    let last = entries.last().unwrap();
    let start = &entries[last["started_seq"].as_u64().unwrap() as usize - 1];
    assert_eq!((start["outcome"].as_str(), last["outcome"].as_str()), (Some("started"), Some("ok")));
    assert_eq!(start["statement"], last["statement"]);
}

/// The site: a folder that is not a release of ladu's is never removed by pruning.
#[test]
fn pruning_removes_only_releases() {
    let ws = Workspace::new();
    let config = ws.config();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}[publish]\nkeep_releases = 1\n")).unwrap();
    ws.sample(300, 8, &[]);
    ws.ok(&["run"]);
    let releases = ws.root().join("site/releases");
    // Sorting before every dated release, a name the old parser took for the oldest release.
    let mine = releases.join("1999-notes");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("x.txt"), b"mine").unwrap();
    ws.sample(300, 9, &["--date", "2024-04-30"]);
    ws.ok(&["run"]);
    assert!(mine.join("x.txt").exists(), "a folder ladu did not make stays");
    let named: Vec<String> = std::fs::read_dir(&releases)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "1999-notes")
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
}
