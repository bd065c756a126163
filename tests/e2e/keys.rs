//! Keys: keygen, the checks on load, and a warehouse that refuses another key.

use std::os::unix::fs::PermissionsExt;

use crate::util::*;

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    let ws = Workspace::new();
    let key = ws.root().join("key/ladu.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&key).unwrap();
    let out = ws.expect(&["keygen", "--out", key.to_str().unwrap()], 3);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn bad_keys_are_refused_with_their_own_message_and_nothing_is_written() {
    let ws = Workspace::new();
    ws.sample(30, 1, &["--only", "population"]);
    let key = ws.root().join("key/ladu.key");
    let cases: [(&str, u32, &str); 4] = [
        ("ab", 0o600, "at least 32 bytes"),
        ("zz", 0o600, "not a hex digit"),
        ("", 0o644, "readable by group or others"),
        ("", 0o600, ""),
    ];
    let good = ws.key_hex();
    for (text, mode, message) in cases {
        if text.is_empty() && message.is_empty() {
            std::fs::remove_file(&key).unwrap();
        } else {
            let body = if text == "ab" {
                "ab".repeat(16)
            } else if text == "zz" {
                format!("{good}zz")
            } else {
                good.clone()
            };
            std::fs::write(&key, body).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let out = ws.expect(&["ingest"], 3);
        let err = stderr(&out);
        if message.is_empty() {
            assert!(err.contains("does not exist") && err.contains("ladu keygen"), "{err}");
        } else {
            assert!(err.contains(message), "{message}: {err}");
        }
        assert!(!err.contains(&good[..16]), "the key leaked into an error: {err}");
        assert!(ws.data_files().is_empty(), "{}", ws.listing());
    }
}

#[test]
fn a_warehouse_refuses_a_key_with_another_fingerprint() {
    let ws = Workspace::new();
    ws.sample(30, 1, &["--only", "population"]);
    ws.ok(&["ingest"]);
    let files = ws.data_files();
    let versions = ws.manifest_versions();
    let key = ws.root().join("key/ladu.key");
    std::fs::remove_file(&key).unwrap();
    ws.ok(&["keygen", "--out", key.to_str().unwrap()]);
    ws.sample(30, 2, &["--only", "treatment_invoices"]);
    let out = ws.expect(&["ingest"], 3);
    assert!(stderr(&out).contains("fingerprint"), "{}", stderr(&out));
    assert_eq!(ws.data_files(), files);
    assert_eq!(ws.manifest_versions(), versions);
}

#[test]
fn the_key_split_into_shares_is_rebuilt_from_any_threshold_of_them_and_audited() {
    let ws = Workspace::new();
    let shares = ws.root().join("shares");
    let out = ws.ok(&["key", "split", "--shares", "5", "--threshold", "3", "--out", shares.to_str().unwrap()]);
    let files: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(files.len(), 5, "{}", stdout(&out));
    let fingerprint = ws.audit_entries().last().unwrap()["fingerprint"].as_str().unwrap().to_owned();
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains(&fingerprint) && f.contains(&fingerprint), "{f}: names the key's fingerprint");
    }
    // Any three: the same key, in a new private file.
    let rebuilt = ws.root().join("rebuilt.key");
    ws.ok(&["key", "join", &files[4], &files[1], &files[2], "--out", rebuilt.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&rebuilt).unwrap().trim(), ws.key_hex().to_lowercase());
    assert_eq!(std::fs::metadata(&rebuilt).unwrap().permissions().mode() & 0o777, 0o600);
    // Two are too few: refused, and nothing written.
    let none = ws.root().join("none.key");
    let out = ws.expect(&["key", "join", &files[0], &files[3], "--out", none.to_str().unwrap()], 3);
    assert!(stderr(&out).contains("any 3 of the 5"), "{}", stderr(&out));
    assert!(!none.exists());
    // A key file is never overwritten.
    ws.expect(&["key", "join", &files[0], &files[1], &files[3], "--out", rebuilt.to_str().unwrap()], 3);
    // Both operations audited, naming files and the fingerprint, never a share's data or the key.
    let entries: Vec<_> = ws.audit_entries().into_iter().filter(|e| e["kind"] == "key").collect();
    assert_eq!(entries.iter().map(|e| e["action"].as_str().unwrap()).collect::<Vec<_>>(), ["split", "join"]);
    let audit = std::fs::read_to_string(ws.root().join("audit/audit.jsonl")).unwrap();
    assert!(!audit.to_lowercase().contains(&ws.key_hex().to_lowercase()));
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let data = text.lines().find_map(|l| l.strip_prefix("data = \"")).unwrap().trim_end_matches('"');
        assert!(!audit.contains(data) && !audit.contains(&data[2..34]), "a share's data in the audit log");
    }
}
