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

/// The open data of the latest release, as published (the files that depend on the data alone).
fn site_data(ws: &Workspace) -> Vec<(String, Vec<u8>)> {
    let latest = ws.root().join("site/latest");
    let mut files: Vec<(String, Vec<u8>)> = files_under(&latest)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "csv" || e == "json") && !p.ends_with("datapackage.json"))
        .map(|p| (p.strip_prefix(&latest).unwrap().display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn kill_9_during_a_nightly_run_then_rerun_equals_an_uninterrupted_run() {
    let reference = Workspace::new();
    reference.sample(20_000, 22, &[]);
    let started = Instant::now();
    reference.ok(&["-q", "run"]);
    let full = started.elapsed();
    let want = (digest(&reference), site_data(&reference));
    assert!(want.0.contains("stats/invoices") && want.1.len() >= 12, "sanity: {want:?}");

    let key = reference.root().join("key/ladu.key");
    let mut outcomes = Vec::new();
    for fraction in [0.1, 0.35, 0.6, 0.8, 0.92, 1.3] {
        let ws = Workspace::new();
        std::fs::copy(&key, ws.root().join("key/ladu.key")).unwrap();
        copy_dir(&reference.root().join("inbox"), &ws.root().join("inbox"));
        let mut child = ws.command(&["-q", "run"]).spawn().unwrap();
        std::thread::sleep(full.mul_f64(fraction));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        outcomes.push((fraction, finished, ws.manifest_versions().len(), ws.root().join("site/latest").exists()));
        ws.ok(&["-q", "run"]);
        assert_eq!(digest(&ws), want.0, "killed at {fraction} of a run: the warehouse differs");
        assert!(site_data(&ws) == want.1, "killed at {fraction} of a run: the published data differ");
        ws.ok(&["check"]);
        let partial = files_under(&ws.root().join("site")).iter().any(|p| p.to_string_lossy().contains(".partial"));
        assert!(!partial, "{}", ws.listing());
    }
    // The kills interrupted runs in different steps: before the ingest's commit, between commits, before publishing.
    assert!(outcomes.iter().any(|(_, fin, v, _)| !fin && *v == 0), "{outcomes:?}");
    assert!(outcomes.iter().any(|(_, fin, v, site)| !fin && *v >= 1 && !site), "{outcomes:?}");

    // And at moments chosen by what is on disk: while the ingest writes its
    // staged files, and while a release is being written aside.
    let staging = |ws: &Workspace| !files_under(&ws.warehouse().join("_ladu/staging")).is_empty();
    let partial = |ws: &Workspace| {
        std::fs::read_dir(ws.root().join("site/releases"))
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".partial")))
            .unwrap_or(false)
    };
    kill_when(&reference, &want, "staging", staging);
    kill_when(&reference, &want, "partial release", partial);
}

/// Kill a run like `reference`'s as soon as `seen` holds, rerun, and compare with `want`.
fn kill_when(
    reference: &Workspace,
    want: &(String, Vec<(String, Vec<u8>)>),
    moment: &str,
    seen: impl Fn(&Workspace) -> bool,
) {
    let ws = Workspace::new();
    std::fs::copy(reference.root().join("key/ladu.key"), ws.root().join("key/ladu.key")).unwrap();
    copy_dir(&reference.root().join("inbox"), &ws.root().join("inbox"));
    let mut child = ws.command(&["-q", "run"]).spawn().unwrap();
    let caught = loop {
        if seen(&ws) {
            child.kill().unwrap();
            break true;
        }
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    child.wait().unwrap();
    assert!(caught, "the run ended before any {moment} was seen");
    ws.ok(&["-q", "run"]);
    assert_eq!(digest(&ws), want.0, "killed at {moment}: the warehouse differs");
    assert!(site_data(&ws) == want.1, "killed at {moment}: the published data differ");
    ws.ok(&["check"]);
}
