//! Ingest through the binary: all sources, bad input, re-delivery, corrections.

use serde_json::Value;

use crate::util::*;

fn read(ws: &Workspace) -> Value {
    serde_json::from_str(&py("read_warehouse.py", &[ws.warehouse().to_str().unwrap()])).unwrap()
}

#[test]
fn all_seven_sources_ingest_and_pyarrow_reads_them() {
    let ws = Workspace::new();
    ws.sample(120, 3, &[]);
    let out = ws.ok(&["ingest"]);
    let summary = stdout(&out);
    assert!(summary.contains("committed warehouse version 1"), "{summary}");
    let w = read(&ws);
    let tables: Vec<&str> = w.as_object().unwrap().keys().map(String::as_str).collect();
    let mut all = ladu::sample_data::SOURCES.to_vec();
    all.sort();
    assert_eq!(tables, all);
    for (name, t) in w.as_object().unwrap() {
        // 120 rows delivered, 4 deliberately invalid.
        assert_eq!(t["rows"], 116, "{name}");
        let cols = t["columns"].as_object().unwrap();
        assert_eq!(cols["record_id"], "string", "{name}");
        if name != "population" {
            assert_eq!(cols["year"], "int32", "{name}: Hive partition column");
            assert_eq!(cols["month"], "int32", "{name}");
            assert!(t["partitions"].as_array().unwrap().len() >= 10, "{name}: a year of months");
            for r in t["data"].as_array().unwrap() {
                assert!(r["year"].as_i64().unwrap() >= 2023, "{name}: {r}");
            }
        }
        for r in t["data"].as_array().unwrap() {
            assert_eq!(r["record_id"].as_str().unwrap().len(), 32);
        }
    }
    let inv = &w["treatment_invoices"]["columns"];
    assert_eq!(inv["amount"], "decimal128(15, 2)");
    assert_eq!(inv["start_date"], "date32[day]");
    assert_eq!(inv["person_id"], "string");
    assert_eq!(w["ambulance_calls"]["columns"]["received_at"], "timestamp[ms, tz=UTC]");
    assert_eq!(w["population"]["columns"]["birth_year"], "int32");
    for dropped in ["first_name", "isikukood", "residence_address", "birth_date"] {
        assert!(w["population"]["columns"].get(dropped).is_none(), "{dropped}");
    }
    // Windows-1257 product names arrive intact.
    let names: Vec<&str> =
        w["prescriptions"]["data"].as_array().unwrap().iter().filter_map(|r| r["product_name"].as_str()).collect();
    assert!(names.iter().any(|n| n.contains("õhukese polümeerikattega")), "{names:?}");
    assert!(names.iter().any(|n| n.contains('Ž') || n.contains('Š')), "{names:?}");
    // Each provider has a report naming the rejected lines, and the audit log an entry per delivery.
    for source in ["population", "treatment_invoices", "ambulance_calls"] {
        let report = ws.root().join(format!("outbox/{source}/{source}_20240331.csv.rejections.csv"));
        let text = std::fs::read_to_string(&report).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.starts_with("file,line,column,reason\n"));
    }
    let audit = std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap();
    assert_eq!(audit.lines().filter(|l| l.contains("\"kind\":\"ingest\"")).count(), 7);
    ws.ok(&["audit", "verify"]);
}

const INVOICE_HEADER: &str = "invoice_id;isikukood;provider_regcode;provider_name;main_diagnosis;care_type;amount;start_date;end_date;submitted_date";

#[test]
fn schema_drift_refuses_the_whole_file_and_names_the_columns() {
    let ws = Workspace::new();
    ws.deliver("treatment_invoices", "treatment_invoices_20240301.csv", format!("{INVOICE_HEADER};email\nINV1;38001010009;90006399;Kliinik;J06.9;AMB;10,00;2024-03-01;2024-03-01;2024-03-02;a@b.ee\n"));
    let out = ws.expect(&["ingest"], 4);
    let text = stdout(&out);
    assert!(text.contains("REFUSED") && text.contains("`email`") && text.contains("schema drift"), "{text}");
    assert!(ws.data_files().is_empty(), "{}", ws.listing());
    assert!(ws.manifest_versions().is_empty());
    let report = std::fs::read_to_string(
        ws.root().join("outbox/treatment_invoices/treatment_invoices_20240301.csv.rejections.csv"),
    )
    .unwrap();
    assert!(report.contains(",1,,\"file refused: unknown column(s) `email`"), "{report}");

    // A missing column, and a file without its header (whose values must not be echoed).
    ws.deliver("treatment_invoices", "treatment_invoices_20240301.csv", "invoice_id;isikukood\nINV1;38001010009\n");
    let text = stdout(&ws.expect(&["ingest"], 4));
    assert!(text.contains("missing column(s) `provider_regcode`"), "{text}");
    ws.deliver(
        "treatment_invoices",
        "treatment_invoices_20240301.csv",
        "INV1;38001010009;90006399;Kliinik Mari Tamm;J06.9;AMB;10,00;2024-03-01;2024-03-01;2024-03-02\n",
    );
    let out = ws.expect(&["ingest"], 4);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("header row missing"), "{all}");
    assert!(!all.contains("38001010009") && !all.contains("Mari"), "{all}");
}

#[test]
fn bad_values_reject_their_row_by_physical_line_and_column() {
    let ws = Workspace::new();
    let sample = tempfile::tempdir().unwrap();
    ws.ok(&[
        "sample-data",
        "--out",
        sample.path().to_str().unwrap(),
        "--rows",
        "3",
        "--invalid",
        "0",
        "--only",
        "ambulance_calls",
    ]);
    let text = std::fs::read_to_string(sample.path().join("ambulance_calls/ambulance_calls_20240331.csv")).unwrap();
    let header = text.lines().next().unwrap().to_owned();
    let fields: Vec<&str> = header.split(',').collect();
    let row = |case: &str, desc: &str, code: &str, received: &str| -> String {
        fields
            .iter()
            .map(|f| match *f {
                "case_no" => case.to_owned(),
                "received_at" => received.to_owned(),
                "priority" => "A".into(),
                "brigade_callsign" => "TA01".into(),
                "case_type" => "esmane".into(),
                "reason" => "palavik".into(),
                "description" => desc.to_owned(),
                "patient_isikukood" => code.to_owned(),
                "location_ehak" => "0078".into(),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let body = [
        header.clone(),
        // Line 2, spanning lines 2-4.
        row("C1", "\"kaks\nrida, \"\"jutumärgid\"\"\nkolm\"", "38001010009", "2024-03-01T10:00:00+02:00"),
        // Line 5: a bad check digit.
        row("C2", "", "38001010008", "2024-03-01T10:00:00+02:00"),
        // Line 6: spans two lines, and has a bad timestamp.
        row("C3", "\"a\nb\"", "", "2024-03-01 25:00"),
        // Line 8: too few fields.
        "C4,2024-03-01T10:00:00+02:00".to_owned(),
        // Line 9: fine, CRLF.
        row("C5", "", "", "2024-03-01T10:00:00"),
    ]
    .join("\r\n");
    ws.deliver("ambulance_calls", "ambulance_calls_20240301.csv", format!("\u{feff}{body}\r\n"));
    let out = ws.ok(&["ingest"]);
    assert!(stdout(&out).contains("committed         2 rows, rejected 3 rows"), "{}", stdout(&out));
    let report =
        std::fs::read_to_string(ws.root().join("outbox/ambulance_calls/ambulance_calls_20240301.csv.rejections.csv"))
            .unwrap();
    let lines: Vec<&str> = report.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{report}");
    assert!(lines[0].starts_with("ambulance_calls_20240301.csv,5,patient_isikukood,"), "{report}");
    assert!(lines[1].starts_with("ambulance_calls_20240301.csv,6,received_at,invalid timestamp"), "{report}");
    assert!(lines[2].starts_with("ambulance_calls_20240301.csv,8,,\"expected 28 fields, found 2\""), "{report}");
    assert!(!report.contains("38001010008"));
}

#[test]
fn an_unparsable_file_is_refused_with_its_line() {
    let ws = Workspace::new();
    ws.deliver(
        "treatment_invoices",
        "treatment_invoices_20240301.csv",
        format!(
            "{INVOICE_HEADER}\nINV1;38001010009;90006399;\"Kliinik;J06.9;AMB;10,00;2024-03-01;2024-03-01;2024-03-02\n"
        ),
    );
    let text = stdout(&ws.expect(&["ingest"], 4));
    assert!(text.contains("line 2: a quoted field is never closed"), "{text}");
    assert!(ws.data_files().is_empty());
}

#[test]
fn redelivery_changes_nothing() {
    let ws = Workspace::new();
    ws.sample(60, 5, &["--only", "sick_leave", "--only", "population"]);
    ws.ok(&["ingest"]);
    let files = ws.data_files();
    let versions = ws.manifest_versions();
    // The same file again, and the same bytes under another name.
    let out = ws.ok(&["ingest"]);
    assert!(stdout(&out).contains("nothing new to commit"), "{}", stdout(&out));
    let inbox = ws.inbox("sick_leave");
    std::fs::copy(inbox.join("sick_leave_20240331.csv"), inbox.join("sick_leave_20240401.csv")).unwrap();
    let out = ws.ok(&["ingest"]);
    assert!(stdout(&out).contains("already ingested"), "{}", stdout(&out));
    assert_eq!(ws.data_files(), files);
    assert_eq!(ws.manifest_versions(), versions);
}

#[test]
fn a_later_delivery_supersedes_and_history_is_kept() {
    let ws = Workspace::new();
    let row = |id: &str, amount: &str| {
        format!("{id};38001010009;90006399;Kliinik;J06.9;AMB;{amount};2024-03-01;2024-03-01;2024-03-02")
    };
    ws.deliver(
        "treatment_invoices",
        "treatment_invoices_20240301.csv",
        format!("{INVOICE_HEADER}\n{}\n{}\n", row("INV1", "10,00"), row("INV2", "20,00")),
    );
    ws.ok(&["ingest"]);
    ws.deliver(
        "treatment_invoices",
        "treatment_invoices_20240302.csv",
        format!("{INVOICE_HEADER}\n{}\n", row("INV1", "11,50")),
    );
    ws.ok(&["ingest"]);
    let out = py("newest.py", &[ws.warehouse().join("treatment_invoices").to_str().unwrap()]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["versions"], 3, "history keeps every version: {v}");
    let mut amounts: Vec<String> =
        v["current"].as_array().unwrap().iter().map(|r| r["amount"].as_str().unwrap().to_owned()).collect();
    amounts.sort();
    assert_eq!(amounts, ["11.50", "20.00"], "{v}");
}

#[test]
fn one_source_or_named_files_and_misnamed_files() {
    let ws = Workspace::new();
    ws.sample(40, 9, &["--only", "sick_leave", "--only", "population"]);
    let out = ws.ok(&["ingest", "--source", "sick_leave"]);
    assert!(stdout(&out).contains("sick_leave") && !stdout(&out).contains("population"), "{}", stdout(&out));
    assert!(ws.data_files().iter().all(|f| f.starts_with("sick_leave/")), "{:?}", ws.data_files());

    // A file named on the command line, outside the inbox; its source comes from its name.
    let elsewhere = ws.root().join("population_20240402.csv");
    std::fs::rename(ws.inbox("population").join("population_20240331.csv"), &elsewhere).unwrap();
    ws.ok(&["ingest", elsewhere.to_str().unwrap()]);
    assert!(ws.data_files().iter().any(|f| f.starts_with("population/")));

    // A file in the inbox that does not follow the naming convention is refused, not guessed at.
    ws.deliver("sick_leave", "sick_leave_2024-04-03.csv", "x\n");
    // A personal code in a misnamed file's name is not repeated.
    ws.deliver("sick_leave", "sick_leave_38001010009.csv", "x\n");
    let out = ws.expect(&["ingest"], 4);
    assert!(
        stdout(&out).contains("REFUSED: the name does not follow `sick_leave_<YYYYMMDD>[_<seq>].csv`"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("sick_leave_###########.csv"), "{}", stdout(&out));
    assert!(!format!("{}{}", stdout(&out), stderr(&out)).contains("38001010009"));
    let out = ws.expect(&["ingest", ws.root().join("nothing_20240101.csv").to_str().unwrap()], 3);
    assert!(stderr(&out).contains("cannot tell which source"), "{}", stderr(&out));
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let ws = Workspace::new();
    let src = ws.root().join("config/sources/sick_leave.toml");
    let text = std::fs::read_to_string(&src).unwrap();
    std::fs::write(&src, text.replace("type = \"icd10\"", "type = \"icd11\"")).unwrap();
    let out = ws.expect(&["ingest"], 3);
    let err = stderr(&out);
    assert!(err.contains("sick_leave.toml") && err.contains("icd11"), "{err}");
    std::fs::write(&src, text.replace("[columns.diagnosis]\nrule = \"keep\"\ntype = \"icd10\"\n", "")).unwrap();
    ws.sample(5, 1, &["--only", "sick_leave"]);
    let out = ws.expect(&["ingest"], 4);
    assert!(stdout(&out).contains("unknown column(s) `diagnosis`"), "{}", stdout(&out));
    std::fs::write(ws.config(), "key_file = 1\n").unwrap();
    let err = stderr(&ws.expect(&["ingest"], 3));
    assert!(err.contains("ladu.toml") && err.contains("key_file"), "{err}");
}

#[test]
fn parquet_layout_follows_the_design() {
    let ws = Workspace::new();
    let cfg = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), format!("{cfg}[ingest]\nrow_group_rows = 20\n")).unwrap();
    ws.sample(400, 13, &["--only", "treatment_invoices", "--only", "sick_leave"]);
    ws.ok(&["ingest"]);
    for table in ["treatment_invoices", "sick_leave"] {
        let out = py("layout.py", &[ws.warehouse().join(table).to_str().unwrap(), "20", "person_id"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert!(v["row_groups"].as_u64().unwrap() > v["files"].as_u64().unwrap(), "{table}: {v}");
    }
}
