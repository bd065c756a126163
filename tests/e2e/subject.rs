//! `ladu subject` (GDPR art. 15) and `ladu report processing`: one person's data and releases, never their code; the monitoring report.

use std::io::Write;
use std::process::Stdio;

use crate::util::*;

/// A person with invoices: their code, from the delivered files.
fn person_with_invoices(ws: &Workspace) -> String {
    let text = std::fs::read_to_string(ws.inbox("treatment_invoices").join("treatment_invoices_20240331.csv")).unwrap();
    let codes: Vec<String> =
        text.lines().skip(1).map(|l| l.split(';').nth(1).unwrap().trim().trim_start_matches('\'').to_owned()).collect();
    let population = std::fs::read_to_string(ws.inbox("population").join("population_20240331.csv")).unwrap();
    codes.into_iter().find(|c| population.contains(c.as_str()) && ladu::pseudonym::isikukood::is_valid(c)).unwrap()
}

/// Run `ladu subject` with the code on standard input.
fn subject_stdin(ws: &Workspace, code: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["subject"];
    all.extend(args);
    let mut child =
        ws.command(&all).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{code}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_person_gets_every_row_and_the_releases_that_held_them_and_their_code_is_never_written() {
    let ws = Workspace::new();
    ws.sample(300, 8, &[]);
    ws.ok(&["run"]);
    let code = person_with_invoices(&ws);
    let key = ws.key_hex();
    let pseudonym = py("pseudonym.py", &[&key, "isikukood", &code]).trim().to_owned();
    // One release that holds the person, one that cannot.
    let all = ws.root().join("all.sql");
    std::fs::write(&all, "select person_id, care_type, amount from treatment_invoices").unwrap();
    ws.ok(&[
        "release",
        "--recipient",
        "tartu-uni",
        "--query",
        all.to_str().unwrap(),
        "--out",
        ws.root().join("r1").to_str().unwrap(),
        "--request-id",
        "REQ-1",
    ]);
    let none = ws.root().join("none.sql");
    std::fs::write(&none, "select person_id from population where birth_year < 1000").unwrap();
    ws.ok(&[
        "release",
        "--recipient",
        "tai",
        "--query",
        none.to_str().unwrap(),
        "--out",
        ws.root().join("r2").to_str().unwrap(),
    ]);

    let answer = ws.root().join("answers/dsr-1.json");
    std::fs::create_dir_all(answer.parent().unwrap()).unwrap();
    let out = subject_stdin(
        &ws,
        &format!(" '{code} "),
        &["--out", answer.to_str().unwrap(), "--request-id", "DSR-1", "--received", "2026-01-05"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout(&out);
    assert!(summary.contains(&pseudonym) && summary.contains("## treatment_invoices (table)"), "{summary}");
    assert!(summary.contains("20240") || summary.contains("tartu-uni"), "{summary}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&answer).unwrap()).unwrap();
    assert_eq!(json["pseudonym"], pseudonym.as_str());
    // Every table's rows equal what SQL finds for the pseudonym, current and history.
    for t in ladu::sample_data::SOURCES {
        let column = "person_id";
        for name in [t.to_string(), format!("{t}_history")] {
            let want = ws.sql_rows(None, &format!("select count(*) from {name} where {column} = '{pseudonym}'"))[0][0]
                .parse::<usize>()
                .unwrap();
            let got = json["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["table"] == name.as_str())
                .unwrap_or_else(|| panic!("{name} not searched"));
            assert_eq!(got["rows"].as_array().unwrap().len(), want, "{name}");
            for row in got["rows"].as_array().unwrap() {
                assert_eq!(row[column], pseudonym.as_str());
            }
        }
    }
    let invoices = json["data"].as_array().unwrap().iter().find(|d| d["table"] == "treatment_invoices").unwrap();
    assert!(!invoices["rows"].as_array().unwrap().is_empty());
    // Statistics are searched, and hold no row about anyone (they are aggregates).
    let stats: Vec<_> = json["data"].as_array().unwrap().iter().filter(|d| d["kind"] == "statistic").collect();
    assert_eq!(stats.len(), 6);
    assert!(stats.iter().all(|s| s["rows"].as_array().unwrap().is_empty()));
    // The release that held the person, not the one that did not.
    let releases: Vec<&str> =
        json["releases"].as_array().unwrap().iter().map(|r| r["recipient"].as_str().unwrap()).collect();
    assert_eq!(releases, ["tartu-uni"]);
    assert_eq!(json["releases"][0]["request_id"], "REQ-1");
    // Audited with the pseudonym.
    let entry = ws.audit_entries().into_iter().rev().find(|e| e["kind"] == "subject").unwrap();
    assert_eq!(entry["pseudonym"], pseudonym.as_str());
    assert_eq!(entry["request_id"], "DSR-1");
    assert_eq!(entry["received"], "2026-01-05");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&answer).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The code from a file and from the flag give the same answer; an answer file is never overwritten.
    let code_file = ws.root().join("code.txt");
    std::fs::write(&code_file, format!("{code}\n")).unwrap();
    let from_file = ws.ok(&["subject", "--isikukood-file", code_file.to_str().unwrap()]);
    let from_flag = ws.ok(&["subject", "--isikukood", &code]);
    let body = |o: &std::process::Output| stdout(o).lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&from_file), body(&from_flag));
    let again = ws.expect(&["subject", "--isikukood", &code, "--out", answer.to_str().unwrap()], 2);
    assert!(stderr(&again).contains("already exists"));

    // Bad codes: exit 2, and the code is not echoed, by ladu or by the argument parser.
    let mut bad = code.clone().into_bytes();
    bad[10] = if bad[10] == b'9' { b'0' } else { bad[10] + 1 };
    let bad = String::from_utf8(bad).unwrap();
    for args in [
        vec!["subject".to_owned(), "--isikukood".to_owned(), bad.clone()],
        vec!["subject".to_owned(), code.clone()],
        vec!["subject".to_owned(), "--isikukood".to_owned(), code.clone(), "--isikukood".to_owned(), code.clone()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ws.expect(&args, 2);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains(&code) && !all.contains(&bad), "the code was echoed: {all}");
    }
    let e = subject_stdin(&ws, "not a code", &[]);
    assert_eq!(e.status.code(), Some(2));
    assert!(stderr(&e).contains("not a valid isikukood"), "{}", stderr(&e));

    // Nothing ladu wrote holds the code or any raw identifier.
    for path in files_under(ws.root()) {
        if path.starts_with(ws.root().join("inbox")) || path == code_file {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&code), "the code is in {}", path.display());
    }
    let mut scan: Vec<String> = vec![ws.root().join("inbox").display().to_string()];
    for dir in ["warehouse", "audit", "answers", "r1", "r2", "site", "outbox"] {
        scan.push(ws.root().join(dir).display().to_string());
    }
    let logs = ws.root().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("summary.txt"), summary).unwrap();
    scan.push(logs.display().to_string());
    let scan: Vec<&str> = scan.iter().map(String::as_str).collect();
    let found = py_output("scan.py", &scan);
    assert!(found.status.success(), "raw identifiers found:\n{}", stdout(&found));

    // The processing report: what is stored, roles, logging, the releases and the request.
    let report = stdout(&ws.ok(&["report", "processing", "--from", "2026-01-01"]));
    let invoices_now = ws.sql_rows(None, "select count(*) from treatment_invoices")[0][0].clone();
    for expected in [
        "## 1. What is stored".to_owned(),
        "### Table `treatment_invoices` (source `treatment_invoices`)".to_owned(),
        format!("- Rows: {invoices_now} current records"),
        "| `isikukood` | replaced by its keyed pseudonym (kind `isikukood`) | `person_id` |".to_owned(),
        "| `first_name` | dropped (name) | — |".to_owned(),
        "## 2. Retention".to_owned(),
        "| `insurance_fund` |".to_owned(),
        "the chain of".to_owned(),
        "| releases to recipients (and refusals) (`release`) | 2 |".to_owned(),
        "2 release(s); 0 refused".to_owned(),
        "| DSR-1 | 2026-01-05 |".to_owned(),
        "3 request(s) answered".to_owned(),
        "for the 1 with a receipt date".to_owned(),
    ] {
        assert!(report.contains(&expected), "`{expected}` not in the report:\n{report}");
    }
    assert!(!report.contains(&pseudonym), "the report names no person");
    let e = ws.expect(&["report", "processing", "--from", "2026-02-01", "--to", "2026-01-01"], 2);
    assert!(stderr(&e).contains("the period is empty"));
    ws.ok(&["audit", "verify"]);
}
