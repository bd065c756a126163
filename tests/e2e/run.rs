//! `ladu run`: the nightly job in one command, its report, its lock and its exit codes.

use crate::util::*;

fn report(ws: &Workspace, out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    let path = text.lines().find_map(|l| l.strip_prefix("run report: ")).expect("the run names its report");
    serde_json::from_str(&std::fs::read_to_string(ws.root().join(path)).unwrap()).unwrap()
}

#[test]
fn a_run_ingests_computes_publishes_and_reports() {
    let ws = Workspace::new();
    ws.sample(300, 2, &[]);
    let out = ws.ok(&["run"]);
    let r = report(&ws, &out);
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["ingest"]["commit"], 1);
    assert_eq!(r["ingest"]["deliveries"].as_array().unwrap().len(), 7);
    assert_eq!(r["statistics"].as_array().unwrap().len(), 6);
    assert!(r["publish"]["release"].is_string());
    for step in ["ingest_seconds", "stats_seconds", "publish_seconds"] {
        assert!(r["steps"][step].is_number(), "{step}: {r}");
    }
    assert!(ws.root().join("site/latest/index.html").is_file());
    catalogues_conform(&ws);
    let entries = ws.audit_entries();
    let run = entries.iter().rfind(|e| e["kind"] == "run").unwrap();
    assert_eq!(run["outcome"], "ok");
    ws.ok(&["audit", "verify"]);
    // Nothing new: nothing ingested, every statistic unchanged.
    let r = report(&ws, &ws.ok(&["run"]));
    assert_eq!(r["ingest"]["commit"], serde_json::Value::Null);
    assert!(r["statistics"].as_array().unwrap().iter().all(|s| s["outcome"] == "Unchanged"), "{r}");
}

#[test]
fn a_refused_delivery_does_not_stop_the_others() {
    let ws = Workspace::new();
    ws.sample(100, 3, &["--only", "treatment_invoices", "--only", "population"]);
    let inbox = ws.inbox("treatment_invoices");
    let good = std::fs::read_to_string(inbox.join("treatment_invoices_20240331.csv")).unwrap();
    let header = good.lines().next().unwrap();
    std::fs::write(inbox.join("treatment_invoices_20240401.csv"), format!("{header};email\n")).unwrap();
    let out = ws.expect(&["run"], 4);
    let r = report(&ws, &out);
    assert_eq!(r["outcome"], "some deliveries refused");
    let refused: Vec<_> =
        r["ingest"]["deliveries"].as_array().unwrap().iter().filter(|d| d["outcome"] == "refused").collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0]["detail"]["reason"].as_str().unwrap().contains("`email`"));
    assert_eq!(r["ingest"]["commit"], 1, "the good deliveries went through");
    assert!(r["publish"]["release"].is_string());
}

#[test]
fn one_run_at_a_time_and_a_dead_runs_lock_is_taken_over() {
    let ws = Workspace::new();
    ws.sample(50, 4, &["--only", "population"]);
    let lock = ws.warehouse().join("_ladu/run.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let held = std::fs::File::options().create(true).truncate(false).write(true).open(&lock).unwrap();
    held.try_lock().unwrap();
    let out = ws.expect(&["run"], 1);
    assert!(stderr(&out).contains("another `ladu run` is running"), "{}", stderr(&out));
    assert!(!ws.warehouse().join("_ladu/manifest").exists(), "the refused run did nothing");
    // The holder dies (its lock goes with it); what it wrote in the file does not matter.
    drop(held);
    std::fs::write(&lock, "process 1 since long ago").unwrap();
    ws.ok(&["run"]);
}

#[test]
fn a_failed_step_stops_the_run_and_is_reported() {
    let ws = Workspace::new();
    ws.sample(50, 5, &[]);
    std::fs::write(ws.root().join("queries/statistics/zz_broken.sql"), "-- Broken.\nSELECT nope FROM population")
        .unwrap();
    let out = ws.expect(&["run"], 1);
    assert!(stderr(&out).contains("zz_broken.sql"), "{}", stderr(&out));
    assert!(stderr(&out).contains("run report: "), "{}", stderr(&out));
    assert!(!ws.root().join("site/latest").exists(), "nothing was published after the failure");
    let entries = ws.audit_entries();
    let run = entries.iter().rfind(|e| e["kind"] == "run").unwrap();
    assert_eq!(run["outcome"], "failed");
    assert_eq!(run["commits"][0], 1, "the ingest before the failure stands");
}

#[test]
fn the_systemd_units_are_valid() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        // `tests/run.sh` installs it; elsewhere the test may skip, but says so loudly.
        assert!(!crate::util::in_ci(), "systemd-analyze is not installed (Debian's systemd): CI must verify the units");
        eprintln!("SKIPPED: systemd-analyze is not installed, so the systemd units were NOT verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in ["ladu-nightly.service", "ladu-nightly.timer", "ladu-serve.service"] {
        let text = std::fs::read_to_string(std::path::Path::new(REPO).join("config/systemd").join(unit)).unwrap();
        // Verified against the binary under test, where the unit expects the installed one.
        std::fs::write(dir.path().join(unit), text.replace("/usr/local/bin/ladu", BIN)).unwrap();
    }
    let out = std::process::Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(dir.path().join("ladu-nightly.service"))
        .arg(dir.path().join("ladu-nightly.timer"))
        .arg(dir.path().join("ladu-serve.service"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).trim().is_empty(), "systemd-analyze complains: {}", stderr(&out));
}

#[test]
fn committed_deliveries_move_to_processed_and_old_releases_go() {
    within_one_day(|| {
        let ws = Workspace::new();
        let config = ws.config();
        let mut text = std::fs::read_to_string(&config).unwrap();
        assert!(text.trim_end().ends_with("site = \"../site\""), "[paths] is the last table: {text}");
        text.push_str("processed = \"../processed\"\n[publish]\nkeep_releases = 2\n");
        std::fs::write(&config, text).unwrap();
        ws.sample(100, 7, &["--only", "treatment_invoices", "--only", "population"]);
        let inbox = ws.inbox("treatment_invoices");
        let header = std::fs::read_to_string(inbox.join("treatment_invoices_20240331.csv")).unwrap();
        let refused = inbox.join("treatment_invoices_20240401.csv");
        std::fs::write(&refused, format!("{};email\n", header.lines().next().unwrap())).unwrap();
        ws.expect(&["run"], 4);
        let processed = ws.root().join("processed");
        assert!(processed.join("treatment_invoices/treatment_invoices_20240331.csv").is_file());
        assert!(processed.join("population/population_20240331.csv").is_file());
        assert!(!inbox.join("treatment_invoices_20240331.csv").exists(), "moved out of the inbox");
        assert!(refused.is_file(), "a refused delivery stays for the operator");
        // Three more publications: only the newest two releases remain, latest the newest.
        for _ in 0..3 {
            ws.ok(&["publish"]);
        }
        let releases = ws.root().join("site/releases");
        let mut names: Vec<String> = std::fs::read_dir(&releases)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        assert_eq!(names, [format!("{today}.3"), format!("{today}.4")]);
        let latest = std::fs::read_link(ws.root().join("site/latest")).unwrap();
        assert!(latest.ends_with(format!("{today}.4")), "{latest:?}");
        ws.ok(&["check"]);
    });
}

#[test]
fn logs_can_be_json_lines() {
    let ws = Workspace::new();
    ws.sample(50, 8, &["--only", "population"]);
    let out = ws.ok(&["--log-format", "json", "run"]);
    let lines: Vec<&str> = std::str::from_utf8(&out.stderr).unwrap().lines().collect();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
    // The error that ends a command is a log line too.
    let out = ws.expect(&["--log-format", "json", "stats", "--only", "nope"], 3);
    let last: serde_json::Value = serde_json::from_str(stderr(&out).lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["fields"]["exit_code"], 3);
    assert!(last["fields"]["message"].as_str().unwrap().contains("unknown statistic `nope`"));
}

#[test]
fn two_runs_started_together_one_runs_one_refuses() {
    let ws = Workspace::new();
    ws.sample(20_000, 9, &["--only", "treatment_invoices", "--only", "population"]);
    let a = ws
        .command(&["-q", "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = ws
        .command(&["-q", "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(1)], "{}\n{}", stderr(&a), stderr(&b));
    let refused = if a.status.code() == Some(1) { &a } else { &b };
    assert!(stderr(refused).contains("another `ladu run` is running"), "{}", stderr(refused));
    assert_eq!(ws.manifest_versions().len(), 2, "one ingest commit and one statistics commit");
}

#[test]
fn a_write_failure_fails_cleanly_and_the_next_run_succeeds() {
    within_one_day(|| {
        let ws = Workspace::new();
        ws.sample(100, 10, &["--only", "treatment_invoices", "--only", "population"]);
        ws.ok(&["run"]);
        let site = ws.root().join("site");
        // Every file of the site but its lock, with its bytes.
        let contents = |site: &std::path::Path| -> Vec<_> {
            files_under(site)
                .into_iter()
                .filter(|p| !p.ends_with(".lock"))
                .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
                .collect()
        };
        let site_before = contents(&site);
        let versions = ws.manifest_versions();
        // New deliveries, and the warehouse cannot stage files (a file where its staging folder goes).
        ws.sample(100, 11, &["--only", "treatment_invoices", "--date", "2024-04-30"]);
        let staging = ws.warehouse().join("_ladu/staging");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::write(&staging, b"in the way").unwrap();
        let out = ws.expect(&["run"], 1);
        assert!(stderr(&out).contains("ingest:"), "{}", stderr(&out));
        assert_eq!(ws.manifest_versions(), versions, "the warehouse is as it was");
        std::fs::remove_file(&staging).unwrap();
        // Now the site cannot be written (a folder where its lock file goes).
        let lock = site.join(".lock");
        std::fs::remove_file(&lock).unwrap();
        std::fs::create_dir(&lock).unwrap();
        let out = ws.expect(&["run"], 1);
        assert!(stderr(&out).contains("publish:"), "{}", stderr(&out));
        assert!(contents(&site) == site_before, "the site is as it was");
        std::fs::remove_dir(&lock).unwrap();
        let r = report(&ws, &ws.ok(&["run"]));
        assert_eq!(r["outcome"], "ok");
        assert!(r["publish"]["release"].as_str().unwrap().ends_with(".2"), "{r}");
        ws.ok(&["check"]);
    });
}

#[test]
fn processed_deliveries_and_reports_past_their_period_are_removed_and_audited() {
    let ws = Workspace::new();
    let config = ws.config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("processed = \"../processed\"\nprocessed_retention_days = 2\noutbox_retention_days = 10\n");
    std::fs::write(&config, text).unwrap();
    ws.sample(100, 7, &["--only", "treatment_invoices"]);
    ws.ok(&["run"]);
    let processed = ws.root().join("processed/treatment_invoices/treatment_invoices_20240331.csv");
    let report = ws.root().join("outbox/treatment_invoices/treatment_invoices_20240331.csv.rejections.csv");
    assert!(processed.is_file() && report.is_file());
    // The delivery's period counts from its move, not from when it was written.
    let age = |p: &std::path::Path| {
        std::time::SystemTime::now().duration_since(std::fs::metadata(p).unwrap().modified().unwrap()).unwrap()
    };
    assert!(age(&processed).as_secs() < 600);
    let days_ago = |days: u64| std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400 + 60);
    let set_age = |p: &std::path::Path, days: u64| {
        std::fs::File::options().write(true).open(p).unwrap().set_modified(days_ago(days)).unwrap();
    };
    // Three days: past the delivery's two, within the report's ten.
    set_age(&processed, 3);
    set_age(&report, 3);
    let runs = ws.warehouse().join("_ladu/runs");
    let old_run = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    set_age(&old_run, 400);
    let contents = std::fs::read_to_string(&processed).unwrap();
    ws.ok(&["run"]);
    assert!(!processed.exists(), "a delivery past its period is removed");
    assert!(report.exists(), "a report within its period stays");
    // (This run's own report may take the freed name, within the same second.)
    let recent = |p: &std::path::Path| !p.exists() || age(p).as_secs() < 600;
    assert!(recent(&old_run), "a run report past the default 365 days is removed");
    let removed: Vec<_> = ws.audit_entries().into_iter().filter(|e| e["kind"] == "retention").collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.iter().any(|e| e["what"] == "run report" && e["age_days"] == 400), "{removed:?}");
    let delivery = removed.iter().find(|e| e["what"] == "processed delivery").unwrap();
    assert_eq!(delivery["age_days"], 3);
    assert_eq!(delivery["sha256"].as_str().unwrap().len(), 64);
    // Never the contents: no personal code of the delivery in the audit log.
    let audit = std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap();
    let code = contents.lines().nth(1).unwrap().split(';').nth(1).unwrap();
    assert!(!audit.contains(code));
    ws.ok(&["audit", "verify"]);
    // Zero days is refused.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("processed_retention_days = 2", "processed_retention_days = 0");
    std::fs::write(&config, text).unwrap();
    let out = ws.expect(&["run"], 3);
    assert!(stderr(&out).contains("paths.processed_retention_days"), "{}", stderr(&out));
}
