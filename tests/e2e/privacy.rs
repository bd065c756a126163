//! No raw identifier reaches any byte ladu writes: warehouse, outbox, audit, SQL results, statistics, the open-data site, stdout, stderr.

use std::path::Path;

use crate::util::*;

#[test]
fn no_raw_identifier_in_anything_ladu_writes() {
    let ws = Workspace::new();
    ws.sample(150, 11, &[]);
    // Add a refused delivery, so error paths are scanned too.
    let inbox = ws.inbox("cancer_screening");
    let text = std::fs::read_to_string(inbox.join("cancer_screening_20240331.csv")).unwrap();
    let body: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(inbox.join("cancer_screening_20240401.csv"), body).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    let population = std::fs::read_to_string(ws.inbox("population").join("population_20240331.csv")).unwrap();
    let code = population.lines().nth(1).unwrap().split(';').next().unwrap().to_owned();
    let typed = format!("SELECT * FROM population WHERE person_id = '{code}'");
    let failing = format!("SELECT * FROM population WHERE person_id = {code} + nope");
    let exports = ws.root().join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    let mut commands: Vec<Vec<String>> = vec![
        vec!["ingest".into()],
        vec!["-v".into(), "ingest".into()],
        vec!["--log-format".into(), "json".into(), "-v".into(), "run".into()],
        vec!["sql".into(), "-c".into(), typed],
        vec!["sql".into(), "-c".into(), failing],
        // A code in a refused file name and in an output path is echoed in errors and the audit.
        vec!["sql".into(), "-c".into(), format!("SELECT * FROM '{code}.csv'")],
        vec![
            "sql".into(),
            "--format".into(),
            "csv".into(),
            "--output".into(),
            format!("/nonexistent/{code}.csv"),
            "-c".into(),
            "SELECT 1".into(),
        ],
        vec!["sql".into(), "--role".into(), "provider:90006399".into(), "-c".into(), "\\d".into()],
    ];
    // Every table, every version, as a user could export it.
    for t in ladu::sample_data::SOURCES {
        let out = exports.join(format!("{t}.parquet")).display().to_string();
        let q = format!("SELECT * FROM {t}_history");
        commands.push(["sql", "--format", "parquet", "--output", &out, "-c", &q].map(String::from).to_vec());
    }
    // Rows past a retention period removed (which rewrites files that straddle it).
    let source = ws.root().join("config/sources/treatment_invoices.toml");
    let config = std::fs::read_to_string(&source).unwrap().replacen(
        "\n[columns.",
        "\nretention = { years = 3, by = \"start_date\" }\n\n[columns.",
        1,
    );
    std::fs::write(&source, config).unwrap();
    commands.push(vec!["expire".into(), "--dry-run".into()]);
    commands.push(vec!["-v".into(), "expire".into()]);
    commands.push(vec!["stats".into()]);
    commands.push(vec!["publish".into()]);
    // A release, the account of disclosures, a subject-access answer and the processing report.
    let release_query = ws.root().join("release.sql");
    std::fs::write(
        &release_query,
        "select p.*, i.record_id as invoice, i.amount from population_history p join treatment_invoices_history i using (person_id)",
    )
    .unwrap();
    let release_out = exports.join("release").display().to_string();
    let q = release_query.display().to_string();
    commands.push(
        ["release", "--recipient", "tai", "--query", &q, "--out", &release_out, "--accept-risk", "privacy test"]
            .map(String::from)
            .to_vec(),
    );
    commands.push(vec!["releases".into()]);
    // The request's code, where the scan does not look.
    let request = tempfile::tempdir().unwrap();
    let code_file = request.path().join("code.txt");
    std::fs::write(&code_file, &code).unwrap();
    let answer = exports.join("subject.json").display().to_string();
    let cf = code_file.display().to_string();
    commands.push(["subject", "--isikukood-file", &cf, "--out", &answer].map(String::from).to_vec());
    commands.push(["subject", "--isikukood", &code].map(String::from).to_vec());
    // The key rotated: every table and record of releases rewritten (the new key file is outside the scan).
    let new_key = request.path().join("k2.key");
    ws.ok(&["keygen", "--out", new_key.to_str().unwrap()]);
    commands.push(["-v", "rekey", "--new-key", new_key.to_str().unwrap()].map(String::from).to_vec());
    commands.push(vec!["report".into(), "processing".into()]);
    commands.push(vec!["audit".into(), "show".into()]);
    commands.push(vec!["audit".into(), "verify".into()]);
    for args in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ws.run(&args);
        let n = outputs.len();
        for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let p = logs.path().join(format!("{n}-{what}.txt"));
            std::fs::write(&p, bytes).unwrap();
            outputs.push(p);
        }
    }
    assert!(ws.audit_entries().iter().any(|e| e["kind"] == "rekey"), "the rekey ran, so its outputs were scanned");
    assert!(ws.audit_entries().iter().any(|e| e["kind"] == "expire"), "the expiry ran, so its outputs were scanned");
    let inbox = ws.root().join("inbox");
    let mut args: Vec<String> = vec![inbox.display().to_string()];
    for dir in ["warehouse", "outbox", "audit", "exports", "site"] {
        args.push(ws.root().join(dir).display().to_string());
    }
    args.push(logs.path().display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = py_output("scan.py", &args);
    assert!(
        out.status.success(),
        "raw identifiers found:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ws.data_files().is_empty());
    assert_eq!(std::fs::read_dir(&exports).unwrap().count(), 9, "every table, a release and an answer were scanned");
    assert!(Path::new(&release_out).join("data.csv").is_file() && Path::new(&answer).is_file());
    assert!(ws.root().join("site/latest/index.html").is_file(), "the site was published and scanned");
    // The scanner can fail: pointed at the deliveries themselves, it must find them.
    let control = py_output("scan.py", &[inbox.to_str().unwrap(), inbox.to_str().unwrap()]);
    assert_eq!(control.status.code(), Some(1), "{}", String::from_utf8_lossy(&control.stderr));
}
