//! Test harness: a temporary installation of ladu, the real binary, and Python cross-checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_ladu");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Environment variables ladu reads; cleared so a developer's own never leak in.
const LADU_ENV: [&str; 1] = ["LADU_CONFIG"];

/// One temporary installation: config, key, inbox, warehouse, outbox, audit.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A fresh installation with the shipped source configs and a new key.
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        let ws = Workspace { dir };
        let cfg = ws.root().join("config");
        std::fs::create_dir_all(cfg.join("sources")).unwrap();
        for entry in std::fs::read_dir(Path::new(REPO).join("config/sources")).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, cfg.join("sources").join(p.file_name().unwrap())).unwrap();
        }
        for file in ["roles.toml", "recipients.toml"] {
            std::fs::copy(Path::new(REPO).join("config").join(file), cfg.join(file)).unwrap();
        }
        copy_dir(&Path::new(REPO).join("queries"), &ws.root().join("queries"));
        std::fs::write(
            cfg.join("ladu.toml"),
            "key_file = \"../key/ladu.key\"\n[paths]\ninbox = \"../inbox\"\nwarehouse = \"../warehouse\"\n\
             outbox = \"../outbox\"\naudit = \"../audit\"\nsite = \"../site\"\n",
        )
        .unwrap();
        ws.ok(&["keygen", "--out", ws.root().join("key/ladu.key").to_str().unwrap()]);
        ws
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.root().join("config/ladu.toml")
    }

    pub fn inbox(&self, source: &str) -> PathBuf {
        let p = self.root().join("inbox").join(source);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Drop a delivery named `name` with `contents` into the source's inbox.
    pub fn deliver(&self, source: &str, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.inbox(source).join(name), contents).unwrap();
    }

    pub fn warehouse(&self) -> PathBuf {
        self.root().join("warehouse")
    }

    pub fn key_hex(&self) -> String {
        std::fs::read_to_string(self.root().join("key/ladu.key")).unwrap().trim().to_owned()
    }

    /// The binary with this workspace's config and a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        for v in LADU_ENV {
            c.env_remove(v);
        }
        c.arg("--config").arg(self.config()).args(args).current_dir(self.root());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ladu")
    }

    /// Run and require exit code `code`; on failure show everything.
    pub fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        if out.status.code() != Some(code) {
            panic!(
                "`ladu {}` exited {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}\n--- files\n{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.listing()
            );
        }
        out
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        self.expect(args, 0)
    }

    /// `ladu sql --format csv [--role ROLE] -c SQL`, which must succeed; the CSV rows after the header.
    pub fn sql_rows(&self, role: Option<&str>, sql: &str) -> Vec<Vec<String>> {
        let mut args = vec!["sql", "--format", "csv", "-c", sql];
        if let Some(r) = role {
            args.extend(["--role", r]);
        }
        let out = self.ok(&args);
        let text = stdout(&out);
        text.lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect()
    }

    /// The entries of the audit log.
    pub fn audit_entries(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.root().join("audit/audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Every file under the workspace, for failure messages.
    pub fn listing(&self) -> String {
        files_under(self.root()).iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n")
    }

    /// Generate sample deliveries straight into the inbox.
    pub fn sample(&self, rows: usize, seed: u64, extra: &[&str]) {
        let inbox = self.root().join("inbox");
        let (rows, seed) = (rows.to_string(), seed.to_string());
        let mut args = vec!["sample-data", "--out", inbox.to_str().unwrap(), "--rows", &rows, "--seed", &seed];
        args.extend(extra);
        self.ok(&args);
    }

    /// Data files of the warehouse (committed and not), relative, sorted.
    pub fn data_files(&self) -> Vec<String> {
        let root = self.warehouse();
        let mut v: Vec<String> = files_under(&root)
            .into_iter()
            .filter(|p| !p.starts_with(root.join("_ladu")))
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        v.sort();
        v
    }

    pub fn manifest_versions(&self) -> Vec<String> {
        let dir = self.warehouse().join("_ladu/manifest");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Start `ladu ARGS` in `ws`, `kill -9` it after `after`; had it finished by then?
pub fn kill_9_after(ws: &Workspace, args: &[&str], after: std::time::Duration) -> bool {
    let mut child = ws.command(args).spawn().unwrap();
    std::thread::sleep(after);
    let finished = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    finished
}

/// Copy a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The Python of the test virtualenv (made on first use by tests/python-env.sh).
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(Path::new(REPO).join("tests/python-env.sh"))
            .output()
            .expect("run tests/python-env.sh");
        assert!(
            out.status.success(),
            "tests/python-env.sh failed (Python 3 with venv and pip is needed):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Run `tests/e2e/py/<script>` with `args`; returns stdout, panics with stderr on failure.
pub fn py(script: &str, args: &[&str]) -> String {
    let out = py_output(script, args);
    assert!(
        out.status.success(),
        "python {script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every release's catalogue in the workspace's site conforms to DCAT-AP 3.0.1 (pyshacl, the official shapes).
pub fn catalogues_conform(ws: &Workspace) {
    let site = ws.root().join("site");
    let summary = py("open_data.py", &["shacl", site.to_str().unwrap()]);
    assert!(summary.contains("\"violations\": 0"), "{summary}");
}

pub fn py_output(script: &str, args: &[&str]) -> Output {
    Command::new(python())
        .arg(Path::new(REPO).join("tests/e2e/py").join(script))
        .args(args)
        .output()
        .expect("run python")
}

/// Kills the process it holds when dropped (a failed assertion included), so no test leaves one running.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Running in CI (`CI=true`), where a test whose tool is missing fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every named query (`-- qN …`, `-- sN …`) of the SQL suite and the SQL bench, as written.
pub fn sql_suite_queries() -> Vec<String> {
    let mut queries = Vec::new();
    for file in ["benches/sql_suite.sql", "benches/sql_queries.sql"] {
        let text = std::fs::read_to_string(Path::new(REPO).join(file)).unwrap();
        for block in text.split(";\n") {
            let named = block.lines().any(|l| {
                l.strip_prefix("-- ").and_then(|r| r.split(' ').next()).is_some_and(|n| {
                    n.len() > 1 && n.starts_with(['q', 's']) && n[1..].chars().all(|c| c.is_ascii_digit())
                })
            });
            if named {
                queries.push(block.trim().to_owned());
            }
        }
    }
    queries
}

/// Runs a test whose answers name today's date, and runs it again if a day began while it ran
/// (in UTC, which names releases, or in Tallinn, which counts retention), so that a run
/// across midnight cannot fail it.
pub fn within_one_day(body: impl Fn()) {
    let days = || {
        let now = chrono::Utc::now();
        (now.date_naive(), now.with_timezone(&chrono_tz::Europe::Tallinn).date_naive())
    };
    let before = days();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&body));
    if days() != before {
        eprintln!("a day began while the test ran: running it again");
        body();
    } else if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
