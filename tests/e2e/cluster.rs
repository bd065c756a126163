//! `ladu cluster`: a scheduler and two executors as processes on loopback, and `ladu sql`, `stats` and `publish` through them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::*;

/// A port free on loopback now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Wait (bounded) until something accepts connections on `port`.
fn wait_for(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scheduler and executors started by a test; stopped (SIGTERM, then kill) when dropped.
struct Cluster {
    scheduler_port: u16,
    scheduler: Option<Child>,
    executors: Vec<(Child, PathBuf)>,
    /// `ladu.toml` with `[cluster] scheduler` set.
    config: PathBuf,
}

impl Cluster {
    /// A scheduler and two executors of two slots each, over `ws`'s warehouse.
    fn start(ws: &Workspace) -> Cluster {
        Cluster::start_with(ws, "")
    }

    /// As [`Cluster::start`], with more keys of `[cluster]` on every node and the client.
    fn start_with(ws: &Workspace, cluster_keys: &str) -> Cluster {
        let scheduler_port = free_port();
        let config = ws.root().join("config/cluster.toml");
        let base = std::fs::read_to_string(ws.config()).unwrap();
        std::fs::write(
            &config,
            format!("{base}\n[cluster]\nscheduler = \"df://127.0.0.1:{scheduler_port}\"\n{cluster_keys}"),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(ws.root().join(format!("{name}.log"))).unwrap();
        let listen = format!("127.0.0.1:{scheduler_port}");
        let scheduler = node(&config, &["cluster", "scheduler", "--listen", &listen]).stderr(log("scheduler")).spawn();
        let mut cluster =
            Cluster { scheduler_port, scheduler: Some(scheduler.unwrap()), executors: Vec::new(), config };
        wait_for(scheduler_port, "the scheduler");
        for i in 0..2 {
            let port = free_port();
            let work = ws.root().join(format!("executor{i}"));
            let listen = format!("127.0.0.1:{port}");
            let args =
                ["cluster", "executor", "--listen", &listen, "--slots", "2", "--work-dir", work.to_str().unwrap()];
            let child = node(&cluster.config, &args).stderr(log(&format!("executor{i}"))).spawn().unwrap();
            cluster.executors.push((child, work));
            wait_for(port, "an executor");
        }
        cluster
    }

    /// `ladu ARGS` with the cluster's config, in `ws`.
    fn run(&self, ws: &Workspace, args: &[&str]) -> Output {
        node(&self.config, args).current_dir(ws.root()).stderr(Stdio::piped()).output().unwrap()
    }

    /// Stop a node with SIGTERM and wait (bounded) for it; kill it if it will not stop.
    fn stop(child: &mut Child) -> Option<i32> {
        // SAFETY: signals a child process this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.executors {
            Cluster::stop(child);
        }
        if let Some(mut s) = self.scheduler.take() {
            Cluster::stop(&mut s);
        }
    }
}

/// The binary with `config`, nothing of the environment's ladu settings.
fn node(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("LADU_CONFIG").arg("--config").arg(config).args(args).stdout(Stdio::piped());
    c
}

/// A query's rows as CSV, sorted (a query without ORDER BY may give them in any order), or its error.
fn answer(out: &Output) -> (Option<i32>, String) {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.len() > 1 {
        lines[1..].sort_unstable();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // Refusals and planning errors are the client's own, the same text either way.
    let refused = err.lines().find(|l| l.starts_with("error: refused") || l.contains("may not read")).unwrap_or("");
    (out.status.code(), format!("{}\n{refused}", lines.join("\n")))
}

/// The same exit and rows; floating-point values may differ in their last digits (sums added in another order).
fn same_answer(a: &(Option<i32>, String), b: &(Option<i32>, String)) -> bool {
    let close = |x: &str, y: &str| match (x.parse::<f64>(), y.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => x == y,
    };
    a.0 == b.0
        && a.1.lines().count() == b.1.lines().count()
        && a.1.lines().zip(b.1.lines()).all(|(x, y)| {
            x.split(',').count() == y.split(',').count() && x.split(',').zip(y.split(',')).all(|(x, y)| close(x, y))
        })
}

const INVOICES: &str = "select i.person_id, i.care_type, i.amount, p.sex \
    from treatment_invoices i join population p on p.person_id = i.person_id";

fn sample_warehouse(rows: usize) -> Workspace {
    let ws = Workspace::new();
    ws.sample(rows, 7, &[]);
    ws.ok(&["ingest"]);
    ws
}

/// The bench's, the suite's and the roles' and sandbox's queries answer on the cluster exactly as here.
#[test]
fn queries_on_the_cluster_answer_as_they_do_locally() {
    let ws = sample_warehouse(1500);
    let cluster = Cluster::start(&ws);
    let provider = "provider:90006399";
    let mut cases: Vec<(Option<&str>, String)> = sql_suite_queries().into_iter().map(|q| (None, q)).collect();
    assert!(cases.len() >= 40, "{}", cases.len());
    let roles = [
        "SELECT count(*), sum(amount) FROM treatment_invoices",
        "SELECT count(*) FROM treatment_invoices_history",
        "SELECT provider_regcode, count(*) FROM treatment_invoices GROUP BY 1",
        "SELECT count(*) FROM treatment_invoices WHERE provider_regcode <> '90006399'",
        "SELECT count(*) FROM treatment_invoices_history h LEFT JOIN treatment_invoices t ON h.record_id = t.record_id \
         WHERE t.record_id IS NULL",
        "SELECT count(*) FROM population",
        "SELECT _line FROM treatment_invoices",
        "SELECT person_id, count(*) FROM prescriptions GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
    ];
    cases.extend(roles.iter().map(|q| (Some(provider), (*q).to_owned())));
    let sandbox = [
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/ladu-cluster-escape.csv'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT array_repeat('x', 100000000)",
        "SELECT repeat('x', 1000000000)",
        "INSERT INTO treatment_invoices SELECT * FROM treatment_invoices",
    ];
    cases.extend(sandbox.iter().map(|q| (None, (*q).to_owned())));
    let before = ws.audit_entries().len();
    let dir = ws.root().join("queries-run");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (role, q)) in cases.iter().enumerate() {
        let file = dir.join(format!("q{i}.sql"));
        std::fs::write(&file, q).unwrap();
        let mut args = vec!["sql", "--format", "csv", "-f", file.to_str().unwrap()];
        if let Some(r) = role {
            args.extend(["--role", r]);
        }
        let local = answer(&ws.run(&args));
        let remote = answer(&cluster.run(&ws, &args));
        assert!(same_answer(&remote, &local), "{role:?} {q}\n--- cluster\n{remote:?}\n--- local\n{local:?}");
    }
    // Every statement that reached the cluster says so; refused ones never left the host.
    let entries = ws.audit_entries();
    let on_cluster = entries[before..]
        .iter()
        .filter(|e| e["kind"] == "sql" && e["outcome"] == "ok")
        .filter(|e| e["ran_on"].as_str().is_some_and(|r| r.starts_with("cluster df://127.0.0.1:")))
        .count();
    assert!(on_cluster >= 45, "{on_cluster} statements ran on the cluster");
    assert!(!Path::new("/tmp/ladu-cluster-escape.csv").exists());
}

/// Copies bytes between a client and a server, keeping every byte either way.
fn recording_proxy(target: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server.try_clone().unwrap(), client.try_clone().unwrap()),
            ] {
                let record = Arc::clone(&record);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, seen)
}

/// HMAC-SHA256's inner and outer midstates of `key`: what a plan would carry to pseudonymise without the key itself.
fn hmac_midstates(key: &[u8]) -> Vec<Vec<u8>> {
    let mut states = Vec::new();
    for pad in [0x36u8, 0x5c] {
        let mut block = [pad; 64];
        for (b, k) in block.iter_mut().zip(key) {
            *b ^= k;
        }
        let mut state =
            [0x6a09e667u32, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
        sha2::block_api::compress256(&mut state, &[block]);
        states.push(state.iter().flat_map(|w| w.to_be_bytes()).collect());
        states.push(state.iter().flat_map(|w| w.to_le_bytes()).collect());
    }
    states
}

/// Nothing sent to the scheduler, nor any shuffle file an executor wrote, holds the key or an HMAC
/// midstate of it; a release runs on this host, and subject access too.
#[test]
fn the_key_never_leaves_the_ladu_host() {
    let ws = sample_warehouse(300);
    let cluster = Cluster::start(&ws);
    let (proxy, seen) = recording_proxy(cluster.scheduler_port);
    // The client talks to the scheduler through the proxy, which records every byte.
    let text = std::fs::read_to_string(&cluster.config).unwrap();
    let proxied = ws.root().join("config/proxied.toml");
    std::fs::write(&proxied, text.replace(&format!(":{}\"", cluster.scheduler_port), &format!(":{proxy}\""))).unwrap();
    let run = |args: &[&str]| node(&proxied, args).current_dir(ws.root()).stderr(Stdio::piped()).output().unwrap();
    let q = "SELECT person_id, count(*) AS n, sum(amount) FROM treatment_invoices GROUP BY person_id ORDER BY n DESC LIMIT 5";
    let out = run(&["sql", "--format", "csv", "-c", q]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let query = ws.root().join("release.sql");
    std::fs::write(&query, INVOICES).unwrap();
    let release = ws.root().join("out/tai");
    let out =
        run(&["release", "--recipient", "tai", "--query", query.to_str().unwrap(), "--out", release.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(seen.lock().unwrap().len() > 1000, "the statement went through the proxy");
    let key = ws.key_hex();
    let raw = ladu::hex::decode(&key).unwrap();
    let mut secrets = vec![key.as_bytes().to_vec(), key.to_uppercase().into_bytes(), raw.clone()];
    secrets.extend(hmac_midstates(&raw));
    let mut sent = seen.lock().unwrap().clone();
    for (_, work) in &cluster.executors {
        for f in files_under(work) {
            sent.extend(std::fs::read(f).unwrap_or_default());
        }
    }
    for secret in &secrets {
        assert!(!sent.windows(secret.len()).any(|w| w == secret.as_slice()), "a secret of the key left the host");
    }
    let entries = ws.audit_entries();
    let sql = entries.iter().rev().find(|e| e["kind"] == "sql" && e["statement"] == q).unwrap();
    assert!(sql["ran_on"].as_str().unwrap().starts_with("cluster"), "{sql}");
    let release = entries.iter().rev().find(|e| e["kind"] == "sql" && e["statement"] == INVOICES).unwrap();
    assert_eq!(release["ran_on"], "local", "{release}");
}

/// A scheduler that is down fails the command at once with exit 3; the cluster stops cleanly on SIGTERM
/// and its executors leave no shuffle files behind.
#[test]
fn a_scheduler_down_fails_at_once_and_the_cluster_stops_cleanly() {
    let ws = sample_warehouse(200);
    let mut cluster = Cluster::start(&ws);
    let out = cluster.run(&ws, &["sql", "-c", "SELECT care_type, count(*) FROM treatment_invoices GROUP BY 1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // ladu stats and publish run their queries there too.
    let out = cluster.run(&ws, &["stats"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cluster.run(&ws, &["publish"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let entries = ws.audit_entries();
    for purpose in ["ladu stats", "ladu publish"] {
        let ran: Vec<_> = entries.iter().filter(|e| e["kind"] == "sql" && e["role"] == purpose).collect();
        assert!(!ran.is_empty(), "{purpose} ran queries");
        assert!(ran.iter().all(|e| e["ran_on"].as_str().unwrap().starts_with("cluster")), "{purpose}: {ran:?}");
    }
    for (child, _) in &mut cluster.executors {
        assert_eq!(Cluster::stop(child), Some(0), "an executor stops cleanly on SIGTERM");
    }
    for (_, work) in &cluster.executors {
        let left: Vec<PathBuf> = files_under(work);
        assert!(left.is_empty(), "shuffle files left behind: {left:?}");
    }
    let mut scheduler = cluster.scheduler.take().unwrap();
    assert_eq!(Cluster::stop(&mut scheduler), Some(0), "the scheduler stops cleanly on SIGTERM");
    let started = Instant::now();
    let out = cluster.run(&ws, &["sql", "-c", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be reached"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10), "it failed at once: {:?}", started.elapsed());
}

/// Under mutual TLS the cluster answers as locally; a client without the cluster's certificate is refused.
#[test]
fn under_mutual_tls_only_holders_of_a_certificate_get_in() {
    let ws = sample_warehouse(300);
    let certs = ws.root().join("certs");
    // Its server certificate (for 127.0.0.1, no key usage named) serves every node, as server and client.
    crate::serve::certificates(&certs, "cluster-node");
    let base = std::fs::read_to_string(ws.config()).unwrap();
    let tls = format!(
        "ca_certificate = \"{0}/ca.crt\"\ncertificate = \"{0}/server.crt\"\nprivate_key = \"{0}/server.key\"\n",
        certs.display()
    );
    let cluster = Cluster::start_with(&ws, &tls);
    for q in [
        "SELECT care_type, count(*), sum(amount) FROM treatment_invoices GROUP BY 1 ORDER BY 1",
        "SELECT p.sex, count(*) FROM treatment_invoices i JOIN population p ON p.person_id = i.person_id GROUP BY 1 ORDER BY 1",
    ] {
        let remote = cluster.run(&ws, &["sql", "--format", "csv", "-c", q]);
        assert_eq!(remote.status.code(), Some(0), "{}", stderr(&remote));
        assert_eq!(stdout(&remote), stdout(&ws.ok(&["sql", "--format", "csv", "-c", q])), "{q}");
    }
    // The same scheduler, without a certificate: refused.
    let plain = ws.root().join("config/plain.toml");
    std::fs::write(&plain, format!("{base}\n[cluster]\nscheduler = \"df://127.0.0.1:{}\"\n", cluster.scheduler_port))
        .unwrap();
    let out = node(&plain, &["sql", "-c", "SELECT count(*) FROM population"])
        .current_dir(ws.root())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "a client without TLS got an answer: {}", stdout(&out));
    let entries = ws.audit_entries();
    let last = entries.iter().rev().find(|e| e["kind"] == "sql").unwrap();
    assert_eq!(last["outcome"], "error", "{last}");
}

/// An executor killed during a query: the query is retried on the other one, or fails with a
/// clear error; either way the cluster goes on serving.
#[test]
fn an_executor_killed_during_a_query_leaves_a_working_cluster() {
    let ws = sample_warehouse(400);
    let mut cluster = Cluster::start(&ws);
    let q = "SELECT count(*) FROM treatment_invoices_history a, treatment_invoices_history b, \
             treatment_invoices_history c WHERE a.amount > b.amount AND b.amount > c.amount";
    let expected = ws.sql_rows(None, q);
    let child = node(&cluster.config, &["sql", "--format", "csv", "-c", q])
        .current_dir(ws.root())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (mut victim, _) = cluster.executors.remove(0);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let out = wait_bounded(child, Duration::from_secs(120));
    match out.status.code() {
        Some(0) => {
            let rows: Vec<Vec<String>> =
                stdout(&out).lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect();
            assert_eq!(rows, expected, "the retried query's answer");
        }
        code => {
            assert_eq!(code, Some(1), "{}", stderr(&out));
            assert!(stderr(&out).contains("error:"), "{}", stderr(&out));
        }
    }
    let again = cluster.run(&ws, &["sql", "--format", "csv", "-c", "SELECT count(*) FROM population"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let population = ws.sql_rows(None, "SELECT count(*) FROM population");
    assert_eq!(stdout(&again).lines().nth(1), population[0].first().map(String::as_str));
}

/// The output of `child`, which must end within `limit` (else it is killed and the test fails).
fn wait_bounded(child: Child, limit: Duration) -> Output {
    let mut child = Killed(child);
    let deadline = Instant::now() + limit;
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the query neither ended nor failed within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = Output { status: child.0.wait().unwrap(), stdout: Vec::new(), stderr: Vec::new() };
    if let Some(mut s) = child.0.stdout.take() {
        s.read_to_end(&mut out.stdout).unwrap();
    }
    if let Some(mut s) = child.0.stderr.take() {
        s.read_to_end(&mut out.stderr).unwrap();
    }
    out
}

/// `ladu serve` with `[cluster]` runs its connections' statements there: psql gets what `ladu sql` gives.
#[test]
fn ladu_serve_runs_its_queries_on_the_cluster() {
    use crate::serve::{ANALYST_PASSWORD, Served, installation, psql, psql_present};
    if !psql_present() {
        return;
    }
    let ws = installation("");
    let q = "SELECT care_type, count(*), sum(amount) FROM treatment_invoices GROUP BY 1 ORDER BY 1";
    let local: Vec<String> = ws.sql_rows(None, q).iter().map(|r| r.join("|")).collect();
    let cluster = Cluster::start(&ws);
    // The server reads the config with `[cluster]`.
    std::fs::copy(&cluster.config, ws.config()).unwrap();
    let served = Served::start(&ws);
    let out = psql(&served.port(), "maria", ANALYST_PASSWORD, "", q);
    assert!(out.status.success(), "{}", stderr(&out));
    let wire: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(wire, local);
    let entries = ws.audit_entries();
    let ran = entries.iter().rev().find(|e| e["kind"] == "sql" && e["statement"] == q && e["outcome"] == "ok").unwrap();
    assert!(ran["ran_on"].as_str().unwrap().starts_with("cluster df://127.0.0.1:"), "{ran}");
}
