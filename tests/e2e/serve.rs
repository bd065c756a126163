//! `ladu serve` through real clients: psql, psycopg 3 and pandas, and raw protocol bytes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{BIN, Killed, Workspace, in_ci, py, stderr, stdout};

pub(crate) const ANALYST_PASSWORD: &str = "an analyst's password";
const PROVIDER_PASSWORD: &str = "a provider's password";
const PROVIDER: &str = "90006399";

/// A running `ladu serve` on a loopback port it picked; stopped (SIGTERM, then killed) when dropped.
pub(crate) struct Served {
    child: Option<Killed>,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Served {
    pub(crate) fn start(ws: &Workspace) -> Served {
        let mut child = Killed(
            Command::new(BIN)
                .args(["--config", ws.config().to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"])
                .env_remove("LADU_CONFIG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.0.stderr.take().unwrap());
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ladu serve: listening on ") {
                    let port = addr.split(' ').next().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok());
                    let _ = tx.send(port);
                }
                kept.lock().unwrap().push_str(&line);
                kept.lock().unwrap().push('\n');
            }
        });
        let port: Option<u16> = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("ladu serve did not start within 60 s: {}", log.lock().unwrap()));
        Served { child: Some(child), port: port.expect("a port"), log }
    }

    pub(crate) fn port(&self) -> String {
        self.port.to_string()
    }

    /// SIGTERM, then wait (bounded) for the exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ladu serve did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The server's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().0.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Served {
    /// SIGTERM, a bounded wait, then `Killed` kills what is left; never a panic (it may run in one).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
            unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A warehouse with invoices, an analyst and a provider user, and `[serve]` settings `serve`.
pub(crate) fn installation(serve: &str) -> Workspace {
    let ws = Workspace::new();
    ws.sample(1500, 21, &["--only", "treatment_invoices", "--only", "waiting_list", "--only", "population"]);
    ws.ok(&["ingest"]);
    let mut config = std::fs::read_to_string(ws.config()).unwrap();
    // The tests compare with `ladu sql --role`, which the service user may use.
    config.push_str(&format!("[serve]\nservice_user = \"{}\"\n", os_user()));
    config.push_str(serve);
    std::fs::write(ws.config(), config).unwrap();
    add_user(&ws, "maria", "analyst", ANALYST_PASSWORD);
    add_user(&ws, "prov", &format!("provider:{PROVIDER}"), PROVIDER_PASSWORD);
    ws
}

/// The tables `ladu sql --role ROLE` lists, sorted.
fn readable_tables(ws: &Workspace, role: &str) -> Vec<String> {
    let sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'";
    let mut tables: Vec<String> = ws.sql_rows(Some(role), sql).into_iter().map(|r| r[0].clone()).collect();
    tables.sort();
    tables
}

/// The columns of `treatment_invoices` that `ladu sql --role ROLE` shows, in order.
fn invoice_columns(ws: &Workspace, role: &str) -> Vec<String> {
    let sql = "SELECT column_name FROM information_schema.columns WHERE table_name = 'treatment_invoices' \
               ORDER BY ordinal_position";
    ws.sql_rows(Some(role), sql).into_iter().map(|r| r[0].clone()).collect()
}

fn os_user() -> String {
    stdout(&Command::new("id").arg("-un").output().unwrap()).trim().to_owned()
}

fn add_user(ws: &Workspace, name: &str, role: &str, password: &str) {
    let mut child = ws
        .command(&["user", "add", name, "--role", role, "--password-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// psql, which the tests need; missing, a test fails under CI and skips loudly elsewhere.
pub(crate) fn psql_present() -> bool {
    let present = Command::new("psql").arg("--version").output().is_ok_and(|o| o.status.success());
    if !present {
        assert!(!in_ci(), "psql (Debian's postgresql-client) is needed: tests/run.sh installs it");
        eprintln!("SKIPPED: psql is not installed (tests/run.sh installs postgresql-client)");
    }
    present
}

pub(crate) fn psql(port: &str, user: &str, password: &str, extra: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .arg(format!("host=127.0.0.1 port={port} user={user} dbname=ladu connect_timeout=20 {extra}"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", password)
        .env_remove("PGSERVICEFILE")
        .output()
        .unwrap()
}

fn client(served: &Served, user: &str, password: &str, args: &[&str]) -> Value {
    let port = served.port();
    let mut all = vec![port.as_str(), user, password];
    all.extend_from_slice(args);
    serde_json::from_str(&py("serve_client.py", &all)).unwrap()
}

fn entries(ws: &Workspace, kind: &str) -> Vec<Value> {
    ws.audit_entries().into_iter().filter(|e| e["kind"] == kind).collect()
}

/// Make a CA, a server certificate for 127.0.0.1 and a client certificate
/// whose subject serialNumber is `serial`, with openssl; returns their folder.
pub(crate) fn certificates(dir: &Path, serial: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is needed");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=ladu test CA",
    ]);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        &format!("/CN=TAMM,MARI/serialNumber={serial}"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "2",
        "-extfile",
        "client.ext",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("client.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Items 1, 2 and 5: password and certificate logins over TLS; wrong
/// passwords, unknown users, cleartext and plain connections refused and
/// audited; a lockout after repeated failures; no personal code written.
#[test]
fn logins_are_checked_refused_and_audited() {
    if !psql_present() {
        return;
    }
    // An ID card's serialNumber holds a personal code: it must never be written.
    let code = "38001085718";
    let ws = installation("");
    let certs = ws.root().join("certs");
    certificates(&certs, &format!("PNOEE-{code}"));
    let mut config = std::fs::read_to_string(ws.config()).unwrap();
    config.push_str(&format!(
        "tls_certificate = \"{0}/server.crt\"\ntls_key = \"{0}/server.key\"\nclient_ca = \"{0}/ca.crt\"\n\
         max_login_failures = 3\nlockout = \"1h\"\n",
        certs.display()
    ));
    std::fs::write(ws.config(), config).unwrap();
    let field = certs.join("field");
    std::fs::write(&field, format!("PNOEE-{code}\n")).unwrap();
    ws.ok(&[
        "user",
        "add",
        "mari",
        "--role",
        "analyst",
        "--no-password",
        "--certificate-file",
        field.to_str().unwrap(),
    ]);
    let served = Served::start(&ws);
    let port = served.port();
    let tls = format!("sslmode=verify-full sslrootcert={}/ca.crt", certs.display());

    let out = psql(&port, "maria", ANALYST_PASSWORD, &tls, "SELECT count(*) FROM treatment_invoices");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), ws.sql_rows(None, "SELECT count(*) FROM treatment_invoices")[0][0]);
    let cert = format!("{tls} sslcert={0}/client.crt sslkey={0}/client.key", certs.display());
    let out = psql(&port, "mari", "", &cert, "SELECT 1");
    assert!(out.status.success(), "certificate login: {}", stderr(&out));
    // The certificate logs in its own user only.
    let out = psql(&port, "maria", ANALYST_PASSWORD, &cert, "SELECT 1");
    assert!(stderr(&out).contains("certificate authentication failed"), "{}", stderr(&out));

    let out = psql(&port, "maria", "not the password", &tls, "SELECT 1");
    assert!(stderr(&out).contains("password authentication failed for user \"maria\""), "{}", stderr(&out));
    let out = psql(&port, "nobody", "whatever", &tls, "SELECT 1");
    assert!(stderr(&out).contains("password authentication failed for user \"nobody\""), "{}", stderr(&out));
    let out = psql(&port, "maria", ANALYST_PASSWORD, "sslmode=disable", "SELECT 1");
    assert!(stderr(&out).contains("TLS connections only"), "{}", stderr(&out));
    // The personal code as a user name: refused, and written nowhere.
    let out = psql(&port, code, "whatever", &tls, "SELECT 1");
    assert!(!out.status.success());
    // Three failures for maria's name lock it, even with the right password.
    let _ = psql(&port, "maria", "wrong again", &tls, "SELECT 1");
    let out = psql(&port, "maria", ANALYST_PASSWORD, &tls, "SELECT 1");
    assert!(stderr(&out).contains("too many failed logins"), "{}", stderr(&out));

    let logins = entries(&ws, "login");
    let outcomes: Vec<(String, String)> = logins
        .iter()
        .map(|e| (e["login"].as_str().unwrap_or("").to_owned(), e["outcome"].as_str().unwrap().to_owned()))
        .collect();
    for expected in [
        ("maria", "ok"),
        ("mari", "ok"),
        ("maria", "failed"),
        ("nobody", "failed"),
        ("maria", "refused"),
        ("maria", "locked"),
    ] {
        assert!(
            outcomes.iter().any(|(u, o)| u == expected.0 && o == expected.1),
            "no {expected:?} login in {outcomes:?}"
        );
    }
    let methods: Vec<&str> =
        logins.iter().filter(|e| e["outcome"] == "ok").map(|e| e["method"].as_str().unwrap()).collect();
    assert!(methods.contains(&"password") && methods.contains(&"certificate"), "{methods:?}");
    assert!(logins.iter().all(|e| e["client"] == "127.0.0.1" && e["connection"].is_u64()));
    assert!(!entries(&ws, "disconnect").is_empty());
    let served_log = served.log();
    drop(served);
    // q6 and q9 of the inspectorate, from the users file and the audit log.
    let report = stdout(&ws.ok(&["report", "processing"]));
    assert!(report.contains("### Logins over the network (`ladu serve`)"), "{report}");
    assert!(report.contains("| `analyst` | 2 | 1 | 1 |"), "users per role and method: {report}");
    assert!(report.contains("| failed | password |") && report.contains("| ok | certificate | 1 |"), "{report}");
    let audit = std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap();
    let users = std::fs::read_to_string(ws.root().join("config/users.toml")).unwrap();
    let log = served_log;
    for (what, text) in [("audit log", &audit), ("users file", &users), ("server's log", &log)] {
        assert!(!text.contains(code), "the personal code is in the {what}");
        assert!(!text.contains(ANALYST_PASSWORD), "the password is in the {what}");
    }
    ws.ok(&["audit", "verify"]);
}

/// Item 3: each role sees over the wire exactly what `ladu sql --role` shows, refusals included.
#[test]
fn each_role_sees_what_ladu_sql_shows() {
    let ws = installation("");
    let served = Served::start(&ws);
    let provider = format!("provider:{PROVIDER}");
    let queries = [
        "SELECT count(*) FROM treatment_invoices",
        "SELECT record_id FROM treatment_invoices_history WHERE provider_regcode <> '90006399' OR 1 = 1 ORDER BY 1",
        "SELECT DISTINCT provider_regcode FROM treatment_invoices_history ORDER BY 1",
        "SELECT care_type, count(*), sum(amount) FROM treatment_invoices GROUP BY care_type ORDER BY 1",
        "SELECT a.record_id FROM treatment_invoices a JOIN treatment_invoices_history b ON a.person_id = b.person_id ORDER BY 1",
        "SELECT count(*) FROM population",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "CREATE TABLE t AS SELECT 1",
        "SELECT min(_line) FROM treatment_invoices",
    ];
    let list = serde_json::to_string(&queries).unwrap();
    for (user, password, role) in
        [("maria", ANALYST_PASSWORD, "analyst"), ("prov", PROVIDER_PASSWORD, provider.as_str())]
    {
        let wire = client(&served, user, password, &["rows", &list]);
        for (i, q) in queries.iter().enumerate() {
            let local = ws.run(&["sql", "--role", role, "--format", "csv", "-c", q]);
            let got = &wire[i];
            if local.status.success() {
                let mut lines = stdout(&local).lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
                let mut over_wire: Vec<String> = got["rows"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{role}: {q} failed over the wire: {got}"))
                    .iter()
                    .map(|r| {
                        r.as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_str().unwrap_or("").to_owned())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect();
                lines.sort();
                over_wire.sort();
                assert_eq!(over_wire, lines, "{role}: {q}");
            } else {
                assert!(got["error"].is_string(), "{role}: {q} is refused by ladu sql but ran over the wire: {got}");
                if stderr(&local).contains("refused") {
                    assert_eq!(got["error"], "42501", "{role}: {q}: {got}");
                }
            }
        }
    }
    let provider_rows = client(&served, "prov", PROVIDER_PASSWORD, &["rows", &list]);
    assert_eq!(provider_rows[2]["rows"], serde_json::json!([[PROVIDER]]), "a provider sees its own code only");
    let statements: Vec<Value> = entries(&ws, "sql").into_iter().filter(|e| e["login"] == "prov").collect();
    assert!(statements.iter().all(|e| e["role"] == provider.as_str() && e["format"] == "wire"));
    assert!(statements.iter().any(|e| e["outcome"] == "refused"));
}

/// Items 1 and 4: the extended protocol with parameters (text and binary),
/// prepared statements and `SET` kept to their connection, pandas, session commands.
#[test]
fn parameters_prepared_statements_and_settings_stay_with_their_connection() {
    let ws = installation("");
    let served = Served::start(&ws);
    let got = client(&served, "maria", ANALYST_PASSWORD, &["extended"]);
    let expected =
        &ws.sql_rows(None, "SELECT count(*) FROM treatment_invoices WHERE amount > 10 AND care_type = 'AMB'")[0][0];
    assert_eq!(got["text_params"].to_string(), *expected, "{got}");
    assert_eq!(got["binary_params"].to_string(), *expected, "{got}");
    assert_eq!(got["binary_equals_text"], true, "{got}");
    let stat = &ws.sql_rows(None, "SELECT count(*) FROM treatment_invoices WHERE care_type = 'STAT'")[0][0];
    assert_eq!(got["prepared"].to_string(), *stat);
    assert_eq!(got["a_application_name"], "connection a");
    assert_eq!(got["b_application_name"], "", "SET reached another connection: {got}");
    assert_eq!(got["prepare_a"], true);
    assert_eq!(got["exec_b"], "26000", "a prepared statement reached another connection: {got}");
    assert_eq!(got["set_datafusion"], "42501");
    let by_type =
        ws.sql_rows(None, "SELECT care_type, count(*) FROM treatment_invoices WHERE amount > 10 GROUP BY 1 ORDER BY 1");
    for row in by_type {
        assert_eq!(got["pandas"][&row[0]].to_string(), row[1], "{got}");
    }
    let with_parameters: Vec<Value> =
        entries(&ws, "sql").into_iter().filter(|e| e["parameters"].is_array() && e["outcome"] == "ok").collect();
    assert!(!with_parameters.is_empty(), "parameters are audited");
    // Session commands of the extended protocol are audited as the client sent them.
    let statements: Vec<Value> = entries(&ws, "sql").iter().map(|e| e["statement"].clone()).collect();
    assert_eq!(got["extended_set"], true, "{got}");
    assert!(statements.contains(&Value::from("SET extra_float_digits = 2")), "{statements:?}");
}

/// Item 6: cancel requests, the statement timeout, the connection limit, a
/// client leaving in the middle of a result; the server serves on.
#[test]
fn cancel_timeout_and_limits() {
    let ws = installation("max_connections = 3\nstatement_timeout = \"4s\"\n");
    let served = Served::start(&ws);
    let slow = "SELECT count(*) FROM treatment_invoices_history a, treatment_invoices_history b, \
                treatment_invoices_history c WHERE a.amount + b.amount > c.amount";
    let got = client(&served, "maria", ANALYST_PASSWORD, &["cancel", slow]);
    assert!(got["outcome"].as_str().unwrap().starts_with("cancelled"), "{got}");
    assert!(got["seconds"].as_f64().unwrap() < 4.0, "cancelled before the time limit: {got}");
    assert_eq!(got["after"], 42);
    let got = client(&served, "maria", ANALYST_PASSWORD, &["error", slow]);
    assert_eq!(got["sqlstate"], "57014", "{got}");
    assert!(got["message"].as_str().unwrap().contains("statement timeout"), "{got}");
    let outcomes: Vec<String> =
        entries(&ws, "sql").iter().filter_map(|e| e["outcome"].as_str().map(str::to_owned)).collect();
    assert!(outcomes.contains(&"cancelled".to_owned()) && outcomes.contains(&"timeout".to_owned()), "{outcomes:?}");

    let got = client(&served, "maria", ANALYST_PASSWORD, &["hold", "4", "1"]);
    assert_eq!(got["connected"], 3, "{got}");
    assert!(got["errors"][0].as_str().unwrap().contains("too many clients"), "{got}");

    let big = "SELECT a.record_id, b.record_id FROM treatment_invoices_history a, treatment_invoices_history b";
    let got = client(&served, "maria", ANALYST_PASSWORD, &["leave", big]);
    assert_eq!(got["read"], 10);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !entries(&ws, "sql").iter().any(|e| e["outcome"] == "interrupted") {
        assert!(Instant::now() < deadline, "the abandoned statement was not audited as interrupted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client that takes none of its result: its statement is stopped and the connection
    // ended once it has taken nothing for the statement timeout.
    // (Its statement ends as `interrupted`, or as `timeout` where its own time ran out first.)
    let interrupted = |ws: &Workspace| {
        entries(ws, "sql").iter().filter(|e| e["outcome"] == "interrupted" || e["outcome"] == "timeout").count()
    };
    let before = interrupted(&ws);
    let got = client(&served, "maria", ANALYST_PASSWORD, &["stall", big, "9"]);
    assert_eq!(got["closed"], true, "the server ended a connection that took nothing for 4 s: {got}");
    let outcomes: Vec<Value> = entries(&ws, "sql").iter().map(|e| e["outcome"].clone()).collect();
    assert_eq!(interrupted(&ws), before + 1, "{outcomes:?}");
    let ended = entries(&ws, "disconnect");
    assert!(ended.iter().any(|e| e["reason"].as_str().is_some_and(|r| r.contains("statement_timeout"))), "{ended:?}");
    let got = client(&served, "maria", ANALYST_PASSWORD, &["rows", r#"["SELECT 6 * 7"]"#]);
    assert_eq!(got[0]["rows"], serde_json::json!([["42"]]));
}

/// Malformed input closes its own connection only; nothing is allocated for what a message only claims.
#[test]
fn malformed_input_closes_only_its_connection() {
    let ws = installation("login_timeout = \"2s\"\nmax_result_rows = 1000\n");
    let mut served = Served::start(&ws);
    let before = served.rss_kib();
    let got = client(&served, "maria", "", &["malformed"]);
    assert!(got["random"].as_array().unwrap().iter().all(|c| c == true), "random bytes left a connection open: {got}");
    for case in ["huge_startup", "short_length", "cleartext", "huge_query"] {
        assert_eq!(got[case]["closed"], true, "{case}: {got}");
        assert!(!got[case]["answer"].as_str().unwrap().contains("ReadyForQuery"), "{case}");
    }
    assert!(got["huge_query"]["answer"].as_str().unwrap().contains("max_message_bytes"), "{got}");
    let got = client(&served, "maria", "", &["never_ends", "10"]);
    assert_eq!(got["closed"], true, "{got}");
    assert!(got["seconds"].as_f64().unwrap() < 9.0, "{got}");
    let after = served.rss_kib();
    assert!(after < before + 64 * 1024, "the server grew from {before} to {after} KiB on claimed lengths");
    let got = client(&served, "maria", ANALYST_PASSWORD, &["rows", r#"["SELECT 6 * 7"]"#]);
    assert_eq!(got[0]["rows"], serde_json::json!([["42"]]), "the server serves on");
    let got =
        client(&served, "maria", ANALYST_PASSWORD, &["error", "SELECT record_id FROM treatment_invoices_history"]);
    assert_eq!(got["sqlstate"], "54000", "serve.max_result_rows: {got}");
    let status = served.stop();
    assert!(status.success(), "SIGTERM ends the server cleanly: {status}\n{}", served.log());
    assert!(!served.log().contains("internal error"), "{}", served.log());
    let events: Vec<Value> = entries(&ws, "serve").iter().map(|e| e["event"].clone()).collect();
    assert_eq!(events, ["start", "stop"]);
    ws.ok(&["audit", "verify"]);
}

/// Item 7: once users exist, `ladu sql --role` is for the OS users the users file names.
#[test]
fn ladu_sql_roles_follow_the_users_file() {
    let ws = installation("");
    let me = os_user();
    ws.ok(&["sql", "--role", "analyst", "-c", "SELECT 1"]);
    let config = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), config.replace(&format!("service_user = \"{me}\"\n"), "")).unwrap();
    let out = ws.expect(&["sql", "--role", "analyst", "-c", "SELECT 1"], 3);
    assert!(stderr(&out).contains(&format!("OS user {me} may not use role analyst")), "{}", stderr(&out));
    // Without --role, the roles file's default role, as before.
    ws.ok(&["sql", "-c", "SELECT 1"]);
    let listed = stdout(&ws.ok(&["user", "list"]));
    assert!(listed.contains("maria") && listed.contains("analyst") && !listed.contains("SCRAM"), "{listed}");
    ws.ok(&["user", "remove", "prov"]);
    assert!(!stdout(&ws.ok(&["user", "list"])).contains("prov "));
    let out = ws.expect(&["user", "remove", "prov"], 2);
    assert!(stderr(&out).contains("no user `prov`"), "{}", stderr(&out));
}

/// Item 4: psql's `\d` family and the catalog functions clients call, each
/// listing only what the role may read, and no warehouse row reached through them.
#[test]
fn psql_describes_what_the_role_may_read() {
    if !psql_present() {
        return;
    }
    let ws = installation("");
    let served = Served::start(&ws);
    let port = served.port();
    let provider = format!("provider:{PROVIDER}");
    let lines = |out: &std::process::Output, what: &str| -> Vec<String> {
        assert!(out.status.success(), "{what}: {}", stderr(out));
        stdout(out).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    };
    let mut seen = Vec::new();
    for (user, password, role) in
        [("maria", ANALYST_PASSWORD, "analyst"), ("prov", PROVIDER_PASSWORD, provider.as_str())]
    {
        let expected = readable_tables(&ws, role);
        let listed = lines(&psql(&port, user, password, "", "\\dt"), "\\dt");
        let mut names: Vec<String> = listed
            .iter()
            .map(|l| {
                let fields: Vec<&str> = l.split('|').collect();
                assert_eq!((fields[0], fields[2], fields[3]), ("public", "table", "ladu"), "{role}: {l}");
                fields[1].to_owned()
            })
            .collect();
        names.sort();
        assert_eq!(names, expected, "{role}: \\dt lists what the role may read");
        // \d NAME: the columns the role sees, in order, with PostgreSQL's type names.
        let columns = invoice_columns(&ws, role);
        let described = lines(&psql(&port, user, password, "", "\\d treatment_invoices"), "\\d NAME");
        let shown: Vec<&str> = described.iter().filter_map(|l| l.split('|').next()).take(columns.len()).collect();
        assert_eq!(shown, columns, "{role}: \\d treatment_invoices");
        assert!(described.iter().any(|l| l.starts_with("amount|numeric")), "{described:?}");
        assert!(described.iter().any(|l| l.starts_with("record_id|")), "{described:?}");
        let databases = lines(&psql(&port, user, password, "", "\\l"), "\\l");
        assert!(databases.iter().any(|l| l.starts_with("ladu|")), "{databases:?}");
        let schemas = lines(&psql(&port, user, password, "", "\\dn"), "\\dn");
        assert!(schemas.iter().any(|l| l.starts_with("public|")), "{schemas:?}");
        assert!(lines(&psql(&port, user, password, "", "\\d"), "\\d").iter().all(|l| {
            let name = l.split('|').nth(1).unwrap_or_default();
            expected.iter().any(|e| e == name)
        }));
        let functions = lines(
            &psql(&port, user, password, "", "SELECT version(), current_schema(), current_database()"),
            "functions",
        );
        assert!(functions[0].starts_with("PostgreSQL ") && functions[0].ends_with("|public|ladu"), "{functions:?}");
        seen.push(names);
    }
    // A table the analyst may read and the provider may not: not described to the provider.
    let hidden = seen[0].iter().find(|t| !seen[1].contains(t)).expect("the provider reads fewer tables").clone();
    let out = psql(&port, "prov", PROVIDER_PASSWORD, "", &format!("\\d {hidden}"));
    assert!(stderr(&out).contains("Did not find any relation"), "{}", stderr(&out));
    let out = psql(
        &port,
        "prov",
        PROVIDER_PASSWORD,
        "",
        &format!("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = '{hidden}'"),
    );
    assert_eq!(stdout(&out).trim(), "0");
    // The catalog's tables hold no rows: a statement that mixes them with the warehouse is refused.
    let out =
        psql(&port, "maria", ANALYST_PASSWORD, "", "SELECT count(*) FROM pg_catalog.pg_class, treatment_invoices");
    assert!(!out.status.success() && stderr(&out).contains("reads no table of the warehouse"), "{}", stderr(&out));
    // Catalog statements are audited like any other; no array function beyond the catalog's few.
    let out = psql(&port, "maria", ANALYST_PASSWORD, "", "SELECT array_repeat('x', 3) FROM pg_catalog.pg_class");
    assert!(!out.status.success(), "{}", stdout(&out));
    let audited: Vec<Value> = entries(&ws, "sql")
        .into_iter()
        .filter(|e| e["statement"].as_str().is_some_and(|s| s.contains("pg_catalog.pg_class")))
        .collect();
    assert!(audited.iter().any(|e| e["outcome"] == "ok" && e["login"] == "maria"), "{audited:?}");
    assert!(audited.iter().any(|e| e["outcome"] == "refused"), "{audited:?}");
}

/// Item 4: what DBeaver and RPostgres ask when connecting and browsing
/// answers, listing exactly the tables and columns the role may read.
#[test]
fn browsing_tools_see_what_the_role_may_read() {
    let ws = installation("");
    let served = Served::start(&ws);
    let provider = format!("provider:{PROVIDER}");
    let column = |answer: &Value, name: &str| -> Vec<String> {
        assert!(answer.get("error").is_none(), "{answer}");
        let columns = answer["columns"].as_array().unwrap();
        let at = columns.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name}: {answer}"));
        answer["rows"].as_array().unwrap().iter().map(|r| r[at].as_str().unwrap_or_default().to_owned()).collect()
    };
    let mut seen = Vec::new();
    for (user, password, role) in
        [("maria", ANALYST_PASSWORD, "analyst"), ("prov", PROVIDER_PASSWORD, provider.as_str())]
    {
        let expected = readable_tables(&ws, role);
        let columns = invoice_columns(&ws, role);
        let got = client(&served, user, password, &["browse", "treatment_invoices"]);
        for tool in ["dbeaver", "rpostgres"] {
            for answer in got[tool].as_array().unwrap() {
                assert!(answer.get("error").is_none(), "{role}, {tool}: {answer}");
            }
        }
        let dbeaver = got["dbeaver"].as_array().unwrap();
        assert_eq!(dbeaver[2]["rows"], serde_json::json!([["public", user]]), "{}", dbeaver[2]);
        assert!(column(&dbeaver[4], "datname").contains(&"ladu".to_owned()), "{}", dbeaver[4]);
        assert!(column(&dbeaver[5], "nspname").contains(&"public".to_owned()), "{}", dbeaver[5]);
        let mut listed = column(&dbeaver[6], "relname");
        listed.sort();
        assert_eq!(listed, expected, "{role}: DBeaver's table list");
        assert_eq!(column(&dbeaver[7], "attname"), columns, "{role}: DBeaver's columns");
        let rpostgres = got["rpostgres"].as_array().unwrap();
        assert!(column(&rpostgres[0], "typname").contains(&"int8".to_owned()));
        assert_eq!(column(&rpostgres[1], "name"), expected, "{role}: dbListTables");
        assert_eq!(column(&rpostgres[2], "column_name"), columns, "{role}: dbListFields");
        seen.push(expected);
    }
    // A table the provider may not read: nothing of it through either tool's queries.
    let hidden = seen[0].iter().find(|t| !seen[1].contains(t)).expect("the provider reads fewer tables").clone();
    let got = client(&served, "prov", PROVIDER_PASSWORD, &["browse", &hidden]);
    assert_eq!(got["dbeaver"][7]["rows"], serde_json::json!([]), "{got}");
    assert_eq!(got["rpostgres"][2]["rows"], serde_json::json!([]), "{got}");
}
