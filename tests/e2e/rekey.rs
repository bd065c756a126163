//! `ladu rekey`: the key rotated by over-encryption; the old key alone no longer finds anyone, and everything goes on.

use std::collections::BTreeSet;

use crate::util::*;

/// `hex(HMAC-SHA256(key, message)[0..16])`, by Python's `hmac`.
fn python_hmac(key_hex: &str, message: &str) -> String {
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import hmac,hashlib,sys; print(hmac.new(bytes.fromhex(sys.argv[1]), sys.argv[2].encode(), hashlib.sha256).hexdigest()[:32])",
            key_hex,
            message,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// The personal codes of the sample's population delivery.
fn codes(ws: &Workspace) -> Vec<String> {
    let text = std::fs::read_to_string(ws.inbox("population").join("population_20240331.csv")).unwrap();
    text.lines().skip(1).map(|l| l.split(';').next().unwrap().trim().trim_start_matches('\'').to_owned()).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn bytes_of(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// List `key` as the newest generation in the workspace's config.
fn add_generation(ws: &Workspace, key: &str) {
    let text = std::fs::read_to_string(ws.config()).unwrap();
    let text = match text.lines().find(|l| l.starts_with("key_generations = [")) {
        Some(line) => text.replace(line, &line.replace(']', &format!(", \"{key}\"]"))),
        None => text.replacen("[paths]", &format!("key_generations = [\"{key}\"]\n[paths]"), 1),
    };
    std::fs::write(ws.config(), text).unwrap();
}

#[test]
fn rekey_moves_every_pseudonym_to_a_new_generation_and_the_old_key_alone_finds_no_one() {
    let ws = Workspace::new();
    ws.sample(300, 31, &["--only", "population", "--only", "treatment_invoices", "--invalid", "0"]);
    ws.ok(&["ingest"]);
    ws.ok(&["stats"]);
    let query = ws.root().join("q.sql");
    std::fs::write(&query, "-- invoices\nselect person_id, record_id, amount from treatment_invoices\n").unwrap();
    let out = ws.root().join("released");
    ws.ok(&["release", "--recipient", "tai", "--query", query.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let k1 = ws.key_hex().to_lowercase();
    // A person with an invoice, hence in the release.
    let people: BTreeSet<String> = ws
        .sql_rows(None, "SELECT DISTINCT person_id FROM treatment_invoices")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let code = codes(&ws)
        .into_iter()
        .find(|c| people.contains(&python_hmac(&k1, &format!("ladu:v1:isikukood:{c}"))))
        .expect("someone has an invoice");
    let p1 = python_hmac(&k1, &format!("ladu:v1:isikukood:{code}"));
    let r1 = python_hmac(&k1, &format!("ladu:release:tai:{p1}"));
    let invoices_before = ws.sql_rows(None, "SELECT count(*), sum(amount) FROM treatment_invoices_history");
    let versions = ws.manifest_versions().len();

    ws.ok(&["keygen", "--out", ws.root().join("key/k2.key").to_str().unwrap()]);
    let out = ws.ok(&["rekey", "--new-key", "key/k2.key"]);
    assert!(stdout(&out).contains("records of releases over-encrypted: 1"), "{}", stdout(&out));
    assert!(stderr(&out).contains("key_generations"), "{}", stderr(&out));
    assert!(ws.manifest_versions().len() > versions);
    let k2 = std::fs::read_to_string(ws.root().join("key/k2.key")).unwrap().trim().to_lowercase();
    // Python agrees: P₂ = HMAC(K₂, "ladu:rekey:isikukood:" ‖ P₁).
    let p2 = python_hmac(&k2, &format!("ladu:rekey:isikukood:{p1}"));
    let found = ws.sql_rows(None, &format!("SELECT count(*) FROM population WHERE person_id = '{p2}'"));
    assert_eq!(found[0][0], "1");
    assert_eq!(ws.sql_rows(None, "SELECT count(*), sum(amount) FROM treatment_invoices_history"), invoices_before);
    // A warehouse copy and the old key alone: the old pseudonym, and the old release pseudonym, are nowhere.
    let (p1_bytes, r1_bytes) = (bytes_of(&p1), bytes_of(&r1));
    for file in files_under(&ws.warehouse()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!contains(&bytes, p1.as_bytes()) && !contains(&bytes, &p1_bytes), "P₁ in {}", file.display());
        assert!(!contains(&bytes, r1.as_bytes()) && !contains(&bytes, &r1_bytes), "R₁ in {}", file.display());
    }

    // The configured key alone is now refused by writers, until the new generation is listed.
    ws.sample(300, 31, &["--only", "population", "--date", "2024-04-07", "--invalid", "0"]);
    let refused = ws.expect(&["ingest"], 3);
    assert!(stderr(&refused).contains("key_generations"), "{}", stderr(&refused));
    add_generation(&ws, "../key/k2.key");
    ws.ok(&["ingest"]);
    // The same people, under the same (chained) pseudonyms.
    let found = ws.sql_rows(None, &format!("SELECT count(*) FROM population_history WHERE person_id = '{p2}'"));
    assert_eq!(found[0][0], "2", "both snapshots hold the person under P₂");
    // Subject access finds the person's rows and the release made before the rotation.
    let answer = ws.root().join("answer.json");
    ws.ok(&["subject", "--isikukood", &code, "--out", answer.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&answer).unwrap()).unwrap();
    assert_eq!(json["pseudonym"], p2.as_str());
    assert_eq!(json["releases"].as_array().unwrap().len(), 1, "{}", json["releases"]);
    // A release after the rotation: a new domain (the newest key on P₂), and found too.
    let later = ws.root().join("released-later");
    ws.ok(&["release", "--recipient", "tai", "--query", query.to_str().unwrap(), "--out", later.to_str().unwrap()]);
    let r2 = python_hmac(&k2, &format!("ladu:release:tai:{p2}"));
    let in_later = py("release_files.py", &[later.to_str().unwrap()]);
    assert!(in_later.contains(&r2) && !in_later.contains(&r1), "a new domain of release pseudonyms");
    std::fs::remove_file(&answer).unwrap();
    ws.ok(&["subject", "--isikukood", &code, "--out", answer.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&answer).unwrap()).unwrap();
    assert_eq!(json["releases"].as_array().unwrap().len(), 2, "{}", json["releases"]);
    // Checked and audited; the manifest lists both generations.
    ws.ok(&["check"]);
    let entry = ws.audit_entries().into_iter().find(|e| e["kind"] == "rekey").unwrap();
    assert_eq!(entry["previous"].as_array().unwrap().len(), 1);
    let audit = std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap();
    assert!(!audit.contains(&k1) && !audit.contains(&k2));
    // The same key twice is refused; a second rotation chains on.
    ws.expect(&["rekey", "--new-key", "key/k2.key"], 3);
    ws.ok(&["keygen", "--out", ws.root().join("key/k3.key").to_str().unwrap()]);
    ws.ok(&["rekey", "--new-key", "key/k3.key"]);
    add_generation(&ws, "../key/k3.key");
    let text = std::fs::read_to_string(ws.config()).unwrap();
    assert!(text.contains("key_generations = [\"../key/k2.key\", \"../key/k3.key\"]"), "{text}");
    let k3 = std::fs::read_to_string(ws.root().join("key/k3.key")).unwrap().trim().to_lowercase();
    let p3 = python_hmac(&k3, &format!("ladu:rekey:isikukood:{p2}"));
    std::fs::remove_file(&answer).unwrap();
    ws.ok(&["subject", "--isikukood", &code, "--out", answer.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&answer).unwrap()).unwrap();
    assert_eq!(json["pseudonym"], p3.as_str());
    assert_eq!(json["releases"].as_array().unwrap().len(), 2, "{}", json["releases"]);
    ws.ok(&["check"]);
}

#[test]
fn kill_9_during_a_rekey_leaves_one_generation_whole() {
    let reference = Workspace::new();
    reference.sample(20_000, 32, &["--only", "population", "--only", "treatment_invoices", "--invalid", "0"]);
    reference.ok(&["ingest"]);
    reference.ok(&["keygen", "--out", reference.root().join("key/k2.key").to_str().unwrap()]);
    let before: BTreeSet<String> =
        reference.sql_rows(None, "SELECT person_id FROM population").into_iter().map(|r| r[0].clone()).collect();
    let copy = |to: &Workspace| {
        std::fs::remove_dir_all(to.warehouse()).ok();
        copy_dir(&reference.warehouse(), &to.warehouse());
        for k in ["ladu.key", "k2.key"] {
            std::fs::copy(reference.root().join("key").join(k), to.root().join("key").join(k)).unwrap();
        }
    };
    let timing = Workspace::new();
    copy(&timing);
    let started = std::time::Instant::now();
    timing.ok(&["-q", "rekey", "--new-key", "key/k2.key"]);
    let full = started.elapsed();
    let after: BTreeSet<String> =
        timing.sql_rows(None, "SELECT person_id FROM population").into_iter().map(|r| r[0].clone()).collect();
    assert!(before.is_disjoint(&after) && before.len() == after.len());
    let mut outcomes = Vec::new();
    for fraction in [0.2, 0.5, 0.8] {
        let ws = Workspace::new();
        copy(&ws);
        let finished = kill_9_after(&ws, &["-q", "rekey", "--new-key", "key/k2.key"], full.mul_f64(fraction));
        let seen: BTreeSet<String> =
            ws.sql_rows(None, "SELECT person_id FROM population").into_iter().map(|r| r[0].clone()).collect();
        let rotated = seen == after;
        assert!(rotated || seen == before, "killed at {fraction}: a mix of generations");
        outcomes.push((fraction, finished, rotated));
        if !rotated {
            // The next rekey tidies up what the killed one left, and rotates.
            ws.ok(&["rekey", "--new-key", "key/k2.key"]);
        }
        add_generation(&ws, "../key/k2.key");
        ws.ok(&["check"]);
        let seen: BTreeSet<String> =
            ws.sql_rows(None, "SELECT person_id FROM population").into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(seen, after);
    }
    assert!(
        outcomes.iter().any(|(_, fin, rotated)| !fin && !rotated),
        "some kill came before the commit: {outcomes:?}"
    );
}
