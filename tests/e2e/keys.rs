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
