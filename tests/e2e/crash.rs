//! `kill -9` during an ingest, then a plain rerun, gives exactly the rows of an uninterrupted run.

use std::time::Instant;

use crate::util::*;

const ROWS: usize = 100_000;

fn digest(ws: &Workspace) -> String {
    py("digest.py", &[ws.warehouse().to_str().unwrap()])
}

#[test]
fn kill_9_at_any_moment_then_rerun_equals_an_uninterrupted_run() {
    let reference = Workspace::new();
    reference.sample(ROWS, 21, &["--only", "treatment_invoices", "--only", "population"]);
    let started = Instant::now();
    reference.ok(&["ingest"]);
    let full = started.elapsed();
    let want = digest(&reference);
    assert!(want.contains("\"rows\": 99996") && want.contains("treatment_invoices"), "sanity: {want}");

    let key = reference.root().join("key/ladu.key");
    let mut outcomes = Vec::new();
    for fraction in [0.05, 0.3, 0.6, 0.85, 0.97, 1.2] {
        let ws = Workspace::new();
        std::fs::copy(&key, ws.root().join("key/ladu.key")).unwrap();
        copy_dir(&reference.root().join("inbox"), &ws.root().join("inbox"));
        let mut child = ws.command(&["-q", "ingest"]).spawn().unwrap();
        std::thread::sleep(full.mul_f64(fraction));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        // Before or after, never between: either no version or a complete one.
        let versions = ws.manifest_versions();
        assert!(versions.len() <= 1, "{versions:?}");
        outcomes.push((fraction, finished, versions.len()));
        let out = ws.ok(&["ingest"]);
        assert!(!stdout(&out).contains("REFUSED"), "{}", stdout(&out));
        assert_eq!(digest(&ws), want, "killed at {fraction} of a run");
        // Every committed delivery is audited exactly once, even when the kill
        // came between the commit and the audit entries.
        ws.ok(&["audit", "verify"]);
        let audit = std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap();
        let committed = audit.lines().filter(|l| l.contains("\"outcome\":\"committed\"")).count();
        assert_eq!(committed, 2, "{audit}");
        let staging = ws.warehouse().join("_ladu/staging");
        assert!(files_under(&staging).is_empty(), "{}", ws.listing());
    }
    // The kills really interrupted runs at different stages.
    assert!(outcomes.iter().any(|(_, fin, v)| !fin && *v == 0), "{outcomes:?}");
}
