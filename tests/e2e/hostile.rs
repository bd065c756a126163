//! What a hostile analyst or provider could do (the hostile-user issue), each tried through the binary.

use std::io::{Read, Write};
use std::process::Stdio;

use crate::util::*;

const INVOICE_HEADER: &str = "invoice_id;isikukood;provider_regcode;provider_name;main_diagnosis;care_type;amount;start_date;end_date;submitted_date";

/// Append `text` to the workspace's `ladu.toml`.
fn configure(ws: &Workspace, text: &str) {
    let path = ws.config();
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

/// The workspace's SQL entries after the first `from` entries of the log.
fn sql_entries(ws: &Workspace, from: usize) -> Vec<serde_json::Value> {
    ws.audit_entries().into_iter().skip(from).filter(|e| e["kind"] == "sql").collect()
}

/// A child's exit status and peak resident memory (KiB), waited for with wait4(2).
fn wait_with_peak(child: std::process::Child) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain data, filled by wait4 for this child's pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child, writing into the two locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Item 1: SIGINT and SIGTERM stop a running statement, which is audited as interrupted with the
/// rows sent so far; SIGKILL leaves the entry written before its first row.
#[test]
fn signals_stop_a_statement_and_it_is_audited() {
    let ws = Workspace::new();
    ws.sample(3000, 11, &["--only", "treatment_invoices"]);
    ws.ok(&["ingest"]);
    let query = "SELECT a.record_id, b.record_id FROM treatment_invoices_history a, treatment_invoices_history b";
    for (signal, code, name) in
        [(libc::SIGINT, 130, "SIGINT"), (libc::SIGTERM, 143, "SIGTERM"), (libc::SIGKILL, -1, "")]
    {
        let before = ws.audit_entries().len();
        let mut child = Killed(
            ws.command(&["sql", "--format", "csv", "-c", query])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut stdout = child.0.stdout.take().unwrap();
        let mut first = vec![0u8; 1 << 20];
        stdout.read_exact(&mut first).unwrap();
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.0.id() as libc::pid_t, signal) };
        // Keep reading, so that nothing blocks on a full pipe while the statement stops.
        let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let status = child.0.wait().unwrap();
        drain.join().unwrap().unwrap();
        let entries = sql_entries(&ws, before);
        assert_eq!(entries[0]["outcome"], "started", "{entries:?}");
        if signal == libc::SIGKILL {
            assert_eq!(status.code(), None);
            assert_eq!(entries.len(), 1, "killed: only the entry written before its first row");
            continue;
        }
        assert_eq!(status.code(), Some(code), "{name}");
        let end = &entries[1];
        assert_eq!(end["outcome"], "interrupted", "{end}");
        assert!(end["error"].as_str().unwrap().contains(name), "{end}");
        assert!(end["rows"].as_u64().unwrap() > 1000, "the rows sent so far: {end}");
        assert_eq!(end["started_seq"], entries[0]["seq"]);
    }
    ws.ok(&["audit", "verify"]);
}

/// Item 1: Ctrl-C in the interactive shell cancels the running statement and returns to the prompt.
#[test]
fn ctrl_c_in_the_shell_cancels_the_statement_and_the_shell_goes_on() {
    let ws = Workspace::new();
    ws.sample(3000, 12, &["--only", "treatment_invoices"]);
    ws.ok(&["ingest"]);
    // `exec`: script(1) runs the command with `$SHELL -c`, and a shell that stays
    // between it and ladu (dash does) would die of the Ctrl-C meant for ladu.
    let cmd = format!("exec {BIN} --config {} sql", ws.config().display());
    let mut child = Killed(
        std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .current_dir(ws.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux runs the shell on a terminal"),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.0.stdout.take().unwrap();
    let shown = std::sync::Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            shown.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |what: &str, count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while screen.lock().unwrap().matches(what).count() < count {
            assert!(std::time::Instant::now() < deadline, "no `{what}` on the terminal: {}", screen.lock().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for("ladu=> ", 1);
    let before = ws.audit_entries().len();
    stdin
        .write_all(b"SELECT count(*) FROM treatment_invoices_history a, treatment_invoices_history b, treatment_invoices_history c WHERE a.amount + b.amount > c.amount;\n")
        .unwrap();
    // Wait (bounded) until the statement runs, then press Ctrl-C.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sql_entries(&ws, before).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the statement never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stdin.write_all(b"\x03").unwrap();
    wait_for("ladu=> ", 2);
    stdin.write_all(b"SELECT 6 * 7 AS answer;\n").unwrap();
    wait_for("ladu=> ", 3);
    stdin.write_all(b"\\q\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the shell did not quit");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = screen.lock().unwrap().clone();
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("interrupted (SIGINT)") && text.contains("| 42     |"), "{text}");
    let entries = sql_entries(&ws, before);
    let outcomes: Vec<&str> = entries.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["started", "interrupted", "started", "ok"]);
}

/// Item 2: a statement that runs too long, or recurses too deep, is stopped and audited as such.
#[test]
fn time_and_recursion_are_bounded() {
    let ws = Workspace::new();
    ws.sample(2000, 13, &["--only", "treatment_invoices"]);
    ws.ok(&["ingest"]);
    let before = ws.audit_entries().len();
    let out = ws.expect(
        &["sql", "-c", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"],
        1,
    );
    assert!(stderr(&out).contains("deeper than `sql.max_recursion_depth` (10000)"), "{}", stderr(&out));
    let end = sql_entries(&ws, before).pop().unwrap();
    assert!(end["outcome"] == "error" && end["error"].as_str().unwrap().contains("max_recursion_depth"), "{end}");
    configure(&ws, "[sql]\nstatement_timeout = \"2s\"\n");
    let before = ws.audit_entries().len();
    let out = ws.expect(
        &["sql", "-c", "SELECT count(*) FROM treatment_invoices_history a, treatment_invoices_history b, treatment_invoices_history c WHERE a.amount + b.amount > c.amount"],
        1,
    );
    assert!(stderr(&out).contains("ran longer than `sql.statement_timeout` (2 s)"), "{}", stderr(&out));
    let end = sql_entries(&ws, before).pop().unwrap();
    assert_eq!(end["outcome"], "timeout", "{end}");
}

/// Item 3: no function makes a value past `sql.max_value_bytes`, and what could grow is paid for
/// from the memory pool first: the process stays near its limit.
#[test]
fn values_are_capped_and_memory_stays_within_the_limit() {
    let ws = Workspace::new();
    ws.sample(200, 14, &["--only", "treatment_invoices"]);
    ws.ok(&["ingest"]);
    for query in [
        "SELECT length(lpad('a', 2147483647))",
        "SELECT length(repeat('ab', 100000000))",
        "SELECT length(replace(repeat('a', 100000), 'a', repeat('b', 10000)))",
        "SELECT length(string_agg(repeat('x', 200000), ',')) FROM treatment_invoices_history",
        "SELECT a IS NULL FROM (SELECT array_agg(repeat('x', 200000)) AS a FROM treatment_invoices_history) t",
    ] {
        let out = ws.expect(&["sql", "-c", query], 1);
        assert!(stderr(&out).contains("sql.max_value_bytes"), "{query}: {}", stderr(&out));
    }
    let rows =
        ws.sql_rows(None, "SELECT lpad('ab', 5, '-'), repeat('x', 3), replace('aaa', 'a', 'bb'), concat('a', 'b')");
    assert_eq!(rows, [["---ab", "xxx", "bbbbbb", "ab"]]);
    configure(&ws, "[sql]\nmemory_limit = \"64MiB\"\nmax_value_bytes = \"1GiB\"\n");
    let child = ws
        .command(&["sql", "-c", "SELECT length(lpad('a', 500000000))"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (code, peak_kib) = wait_with_peak(child);
    assert_eq!(code, 1, "refused: it would not fit the pool");
    assert!(peak_kib < 400 * 1024, "peak {peak_kib} KiB: the 500 MB value was never made");
}

/// Item 4: no output a user names may replace a file ladu manages, and no file is replaced without --force.
#[test]
fn outputs_never_replace_what_ladu_manages() {
    let ws = Workspace::new();
    ws.sample(100, 15, &["--only", "population"]);
    ws.ok(&["ingest"]);
    let log = ws.root().join("audit/audit.jsonl");
    let out = ws.expect(&["sql", "--output", log.to_str().unwrap(), "--force", "-c", "SELECT 1"], 2);
    assert!(stderr(&out).contains("which ladu manages (the audit log)"), "{}", stderr(&out));
    // Through a link, and into the warehouse, the key's folder and the site.
    let link = ws.root().join("innocent.csv");
    std::os::unix::fs::symlink(&log, &link).unwrap();
    ws.expect(&["sql", "--output", link.to_str().unwrap(), "--force", "-c", "SELECT 1"], 2);
    for managed in ["warehouse/x.csv", "key/x.csv", "site/x.csv", "inbox/new/x.csv"] {
        let path = ws.root().join(managed);
        ws.expect(&["sql", "--output", path.to_str().unwrap(), "-c", "SELECT 1"], 2);
        assert!(!path.exists());
    }
    ws.ok(&["audit", "verify"]);
    let subject = ws.root().join("warehouse/answer.json");
    let out = ws.expect(&["subject", "--isikukood", "38001010009", "--out", subject.to_str().unwrap()], 2);
    assert!(stderr(&out).contains("which ladu manages"), "{}", stderr(&out));
    let query = ws.root().join("q.sql");
    std::fs::write(&query, "select count(*) as n from population").unwrap();
    let release = ws.root().join("site/release");
    ws.expect(
        &["release", "--recipient", "tai", "--query", query.to_str().unwrap(), "--out", release.to_str().unwrap()],
        2,
    );
    // A file of the user's own: not replaced unless --force says so.
    let mine = ws.root().join("mine.csv");
    std::fs::write(&mine, "precious\n").unwrap();
    let out = ws.expect(&["sql", "--format", "csv", "--output", mine.to_str().unwrap(), "-c", "SELECT 1 AS x"], 2);
    assert!(stderr(&out).contains("already exists") && stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "precious\n");
    ws.ok(&["sql", "--format", "csv", "--output", mine.to_str().unwrap(), "--force", "-c", "SELECT 1 AS x"]);
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "x\n1\n");
    // A device is written to, not replaced: no --force needed.
    ws.ok(&["sql", "--format", "csv", "--output", "/dev/null", "-c", "SELECT 1 AS x"]);
}

/// Item 5: a personal code is read from at most a few hundred bytes; more is refused at once.
#[test]
fn a_personal_code_is_read_from_a_bounded_input() {
    let ws = Workspace::new();
    ws.sample(50, 16, &["--only", "population"]);
    ws.ok(&["ingest"]);
    let child = ws
        .command(&["subject", "--isikukood-file", "/dev/zero"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, peak_kib) = wait_with_peak(child);
    assert_eq!(code, 2);
    assert!(peak_kib < 400 * 1024, "peak {peak_kib} KiB");
    let mut child =
        ws.command(&["subject", "--isikukood-file", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The process stops reading after 257 bytes; the rest may not fit the pipe.
    let _ = stdin.write_all(&vec![b'1'; 1 << 20]);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("more than 256 bytes"), "{}", stderr(&out));
}

/// Items 6 and 7: a provider sees neither line numbers nor commits, and its `<table>` is the newest
/// version among its own rows: another provider's later row of the same record changes nothing for it.
#[test]
fn a_provider_learns_nothing_of_other_providers_rows() {
    let ws = Workspace::new();
    let row = |id: &str, provider: &str, amount: &str| {
        format!("{id};38001010009;{provider};Kliinik;J06.9;AMB;{amount};2024-03-01;2024-03-01;2024-03-02")
    };
    ws.deliver(
        "treatment_invoices",
        "treatment_invoices_20240301.csv",
        [INVOICE_HEADER.to_owned(), row("INV1", "90006399", "10,00"), row("INV2", "90006399", "20,00")].join("\n")
            + "\n",
    );
    ws.ok(&["ingest"]);
    ws.deliver(
        "treatment_invoices",
        "treatment_invoices_20240302.csv",
        [INVOICE_HEADER.to_owned(), row("INV1", "10137319", "99,00")].join("\n") + "\n",
    );
    ws.ok(&["ingest"]);
    let a = Some("provider:90006399");
    assert_eq!(ws.sql_rows(a, "SELECT count(*), sum(amount) FROM treatment_invoices"), [["2", "30.00"]]);
    let named = "SELECT count(*) FROM treatment_invoices_history h LEFT JOIN treatment_invoices t \
                 ON h.record_id = t.record_id WHERE t.record_id IS NULL";
    assert_eq!(ws.sql_rows(a, named), [["0"]], "no row of its own is superseded by another's");
    assert_eq!(ws.sql_rows(Some("provider:10137319"), "SELECT sum(amount) FROM treatment_invoices"), [["99.00"]]);
    assert_eq!(ws.sql_rows(None, "SELECT sum(amount) FROM treatment_invoices"), [["119.00"]], "analysts: the newest");
    for column in ["_line", "_commit"] {
        let out = ws.expect(
            &["sql", "--role", "provider:90006399", "-c", &format!("SELECT {column} FROM treatment_invoices")],
            1,
        );
        assert!(stderr(&out).contains(column), "{}", stderr(&out));
    }
    let roles = ws.root().join("config/roles.toml");
    let text = std::fs::read_to_string(&roles).unwrap();
    std::fs::write(
        &roles,
        text.replace(
            "hidden_columns = []\n# grant_columns",
            "hidden_columns = []\ngrant_columns = [\"_line\"]\n# grant_columns",
        ),
    )
    .unwrap();
    assert_eq!(ws.sql_rows(a, "SELECT _line FROM treatment_invoices ORDER BY _line"), [["2"], ["3"]]);
    ws.expect(&["sql", "--role", "provider:90006399", "-c", "SELECT _commit FROM treatment_invoices"], 1);
}

/// Item 9: padding a result (repeats, a cross join with constants or with unrelated persons, a
/// quasi-identifier dressed up) does not make its groups large enough.
#[test]
fn padded_releases_are_refused() {
    let ws = Workspace::new();
    ws.sample(300, 17, &["--only", "population", "--invalid", "0"]);
    ws.ok(&["ingest"]);
    let copies = ["select birth_year, sex, county from population"; 5].join(" union all ");
    for (name, query) in [
        (
            "constants",
            "select birth_year, sex, county from population cross join (values (1),(2),(3),(4),(5)) as v(k)".to_owned(),
        ),
        ("copies", copies),
        (
            "strangers",
            "select q.birth_year, q.sex, q.county, p.person_id from population q \
             cross join (select person_id from population order by person_id limit 5) p"
                .to_owned(),
        ),
        ("age", "select 2024 - birth_year as age, sex from population".to_owned()),
        ("joined", "select concat(county, '/', sex, '/', birth_year) as c from population".to_owned()),
    ] {
        let file = ws.root().join(format!("{name}.sql"));
        std::fs::write(&file, &query).unwrap();
        let out = ws.root().join(name);
        let refused = ws.expect(
            &["release", "--recipient", "tai", "--query", file.to_str().unwrap(), "--out", out.to_str().unwrap()],
            4,
        );
        assert!(stderr(&refused).contains("release refused"), "{name}: {}", stderr(&refused));
        assert!(!out.exists());
    }
}

/// Item 10: a code written into a free-text argument never reaches anything ladu writes.
#[test]
fn a_code_in_a_request_id_is_redacted_everywhere() {
    let ws = Workspace::new();
    ws.sample(100, 18, &["--only", "population"]);
    ws.ok(&["ingest"]);
    let query = ws.root().join("q.sql");
    std::fs::write(&query, "select count(*) as n from population").unwrap();
    let out = ws.root().join("out");
    ws.ok(&[
        "release",
        "--recipient",
        "tai",
        "--query",
        query.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--request-id",
        "REQ 380-0101-0009",
    ]);
    let listing = stdout(&ws.ok(&["releases"]));
    let record = std::fs::read_dir(ws.warehouse().join("_ladu/releases")).unwrap().next().unwrap().unwrap().path();
    for (what, text) in [
        ("the audit log", std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap()),
        ("ladu releases", listing),
        ("release.json", std::fs::read_to_string(out.join("release.json")).unwrap()),
        ("ladu's copy", std::fs::read_to_string(record.join("release.json")).unwrap()),
    ] {
        assert!(!text.contains("0101-0009") && !text.contains("38001010009"), "{what}: {text}");
        assert!(text.contains("REQ [isikukood]"), "{what}: {text}");
    }
}

/// Item 12: a delivery's name on a link, a pipe, a folder or a link loop is refused with its reason,
/// in the output, the outbox and the audit log; links are never followed.
#[test]
fn what_is_not_a_file_is_refused_and_links_are_never_followed() {
    let ws = Workspace::new();
    let inbox = ws.inbox("treatment_invoices");
    let elsewhere = ws.root().join("elsewhere.csv");
    std::fs::write(
        &elsewhere,
        format!("{INVOICE_HEADER}\nINV1;38001010009;90006399;K;J06.9;AMB;1,00;2024-03-01;2024-03-01;2024-03-02\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&elsewhere, inbox.join("treatment_invoices_20240301.csv")).unwrap();
    let fifo = std::ffi::CString::new(inbox.join("treatment_invoices_20240302.csv").to_str().unwrap()).unwrap();
    // SAFETY: a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(inbox.join("treatment_invoices_20240303.csv")).unwrap();
    let looping = inbox.join("treatment_invoices_20240304.csv");
    std::os::unix::fs::symlink(&looping, &looping).unwrap();
    let out = ws.expect(&["ingest"], 4);
    let text = stdout(&out);
    for (day, why) in [("01", "symbolic link"), ("02", "named pipe"), ("03", "folder"), ("04", "symbolic link")] {
        let name = format!("treatment_invoices_202403{day}.csv");
        assert!(
            text.lines().any(|l| l.contains(&name) && l.contains("REFUSED: not a delivery") && l.contains(why)),
            "{name}: {text}"
        );
        let report =
            std::fs::read_to_string(ws.root().join(format!("outbox/treatment_invoices/{name}.rejections.csv")))
                .unwrap();
        assert!(report.contains(why), "{report}");
    }
    let refused = ws.audit_entries().into_iter().filter(|e| e["outcome"] == "refused").count();
    assert_eq!(refused, 4);
    assert!(ws.data_files().is_empty(), "nothing behind a link was read");
    // Named on the command line, a link is refused too.
    let out = ws.expect(&["ingest", inbox.join("treatment_invoices_20240301.csv").to_str().unwrap()], 4);
    assert!(stdout(&out).contains("symbolic link"), "{}", stdout(&out));
    assert!(ws.data_files().is_empty());
}

/// Item 13: in a UTF-8 delivery, a row with bytes that are not UTF-8 is rejected, as the README says.
#[test]
fn a_row_that_is_not_utf8_is_rejected_and_the_rest_committed() {
    let ws = Workspace::new();
    let mut body =
        format!("{INVOICE_HEADER}\nINV1;38001010009;90006399;K;J06.9;AMB;1,00;2024-03-01;2024-03-01;2024-03-02\n")
            .into_bytes();
    body.extend_from_slice(b"INV2;38001010009;90006399;K\xff;J06.9;AMB;1,00;2024-03-01;2024-03-01;2024-03-02\n");
    ws.deliver("treatment_invoices", "treatment_invoices_20240301.csv", body);
    let out = ws.ok(&["ingest"]);
    assert!(stdout(&out).contains("committed         1 rows, rejected 1 rows"), "{}", stdout(&out));
    let report = std::fs::read_to_string(
        ws.root().join("outbox/treatment_invoices/treatment_invoices_20240301.csv.rejections.csv"),
    )
    .unwrap();
    assert!(report.contains("treatment_invoices_20240301.csv,3,,bytes that are not valid UTF-8"), "{report}");
    let readme = std::fs::read_to_string(std::path::Path::new(REPO).join("README.md")).unwrap();
    assert!(readme.contains("a record holding bytes that are not valid\n  UTF-8 is rejected like any other bad row"));
}
