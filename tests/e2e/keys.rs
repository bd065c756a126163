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

/// SoftHSM2's PKCS#11 module, where Debian puts it.
const SOFTHSM_MODULES: [&str; 2] =
    ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"];

/// A SoftHSM2 token labelled `ladu` (user PIN 5678) in the workspace, and its config file; `None` (loudly) without SoftHSM2.
fn softhsm_token(ws: &Workspace) -> Option<(std::path::PathBuf, &'static str)> {
    let module = SOFTHSM_MODULES.into_iter().find(|m| std::path::Path::new(m).exists());
    let util = std::process::Command::new("softhsm2-util").arg("--version").output().is_ok_and(|o| o.status.success());
    let (Some(module), true) = (module, util) else {
        assert!(!in_ci(), "SoftHSM2 (Debian's softhsm2) is needed: tests/run.sh installs it");
        eprintln!("SKIPPED: SoftHSM2 is not installed, so the key's custody in a PKCS#11 token was NOT tested");
        return None;
    };
    let dir = ws.root().join("hsm");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\n", dir.join("tokens").display()),
    )
    .unwrap();
    let out = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "ladu", "--so-pin", "12345678", "--pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    Some((conf, module))
}

/// `ladu ARGS` with the token's configuration; requires exit `code`.
fn with_token(
    ws: &Workspace,
    conf: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
    code: i32,
) -> std::process::Output {
    let out = ws.command(args).env("SOFTHSM2_CONF", conf).envs(env.iter().copied()).output().unwrap();
    assert_eq!(out.status.code(), Some(code), "ladu {}: {}{}", args.join(" "), stdout(&out), stderr(&out));
    out
}

/// Point the workspace's config at the token: `[key]` in place of `key_file`, with `pin` (a `pin_file = …` or `pin_env = …` line).
fn use_token(ws: &Workspace, module: &str, token: &str, pin: &str) {
    let text = std::fs::read_to_string(ws.config()).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("key_file") && !l.starts_with("[key]"))
        .take_while(|l| !l.starts_with("pkcs11_module"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        ws.config(),
        format!("{body}[key]\npkcs11_module = \"{module}\"\ntoken = \"{token}\"\nwrapping_key = \"ladu-kek\"\nwrapped_key_file = \"../key/ladu.key.wrapped\"\n{pin}\n"),
    )
    .unwrap();
}

#[test]
fn a_key_wrapped_under_a_pkcs11_token_is_used_and_never_written_in_the_clear() {
    let ws = Workspace::new();
    let Some((conf, module)) = softhsm_token(&ws) else { return };
    let pin = ws.root().join("hsm/pin");
    std::fs::write(&pin, "5678\n").unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pin_line = format!("pin_file = \"{}\"", pin.display());
    // The same deliveries under the plain key, for reference.
    let plain = Workspace::new();
    std::fs::copy(ws.root().join("key/ladu.key"), plain.root().join("key/ladu.key")).unwrap();
    plain.sample(200, 5, &["--only", "population", "--only", "treatment_invoices"]);
    plain.ok(&["ingest"]);
    let want = plain.sql_rows(None, "SELECT person_id FROM treatment_invoices ORDER BY person_id, record_id");

    use_token(&ws, module, "ladu", &pin_line);
    let key_file = ws.root().join("key/ladu.key");
    let hex = ws.key_hex().to_lowercase();
    // No wrapping key on the token yet: said so.
    let out = with_token(&ws, &conf, &[], &["key", "wrap", "--from", key_file.to_str().unwrap()], 3);
    assert!(stderr(&out).contains("--create-wrapping-key"), "{}", stderr(&out));
    let out =
        with_token(&ws, &conf, &[], &["key", "wrap", "--from", key_file.to_str().unwrap(), "--create-wrapping-key"], 0);
    let wrapped = ws.root().join("key/ladu.key.wrapped");
    assert_eq!(stdout(&out).trim(), wrapped.display().to_string());
    assert_eq!(std::fs::metadata(&wrapped).unwrap().permissions().mode() & 0o777, 0o600);
    // Never overwritten, and the token's key is made once.
    with_token(&ws, &conf, &[], &["key", "wrap", "--new"], 3);
    std::fs::remove_file(&key_file).unwrap();

    // Ingest and SQL work through the token; the pseudonyms are the plain key's.
    ws.sample(200, 5, &["--only", "population", "--only", "treatment_invoices"]);
    with_token(&ws, &conf, &[], &["ingest"], 0);
    assert_eq!(ws.sql_rows(None, "SELECT person_id FROM treatment_invoices ORDER BY person_id, record_id"), want);
    with_token(&ws, &conf, &[], &["check"], 0);
    // Backup through the token: shares that rebuild the same key.
    let shares = ws.root().join("shares");
    let out = with_token(
        &ws,
        &conf,
        &[],
        &["key", "split", "--shares", "3", "--threshold", "2", "--out", shares.to_str().unwrap()],
        0,
    );
    let files: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let rebuilt = std::env::temp_dir().join(format!("ladu-hsm-test-{}.key", std::process::id()));
    with_token(&ws, &conf, &[], &["key", "join", &files[0], &files[2], "--out", rebuilt.to_str().unwrap()], 0);
    assert_eq!(std::fs::read_to_string(&rebuilt).unwrap().trim(), hex);
    std::fs::remove_file(&rebuilt).unwrap();
    // Rebuilt straight under the token: no plain key file on the way.
    std::fs::remove_file(&wrapped).unwrap();
    with_token(&ws, &conf, &[], &["key", "join", &files[1], &files[2], "--wrap"], 0);
    with_token(&ws, &conf, &[], &["check"], 0);
    std::fs::remove_dir_all(&shares).unwrap();

    // The key in the clear is nowhere on disk: not in the wrapped file, the token's files, the warehouse, the audit log.
    let raw: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    for file in files_under(ws.root()) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(!text.contains(&hex), "the key's hex in {}", file.display());
        assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()), "the key's bytes in {}", file.display());
    }
    let wraps: Vec<_> =
        ws.audit_entries().into_iter().filter(|e| e["kind"] == "key" && e["action"] == "wrap").collect();
    assert_eq!(wraps.len(), 1);
    assert_eq!(wraps[0]["created_wrapping_key"], true);

    // A wrong PIN, a missing PIN, a missing token or module: each its own message, exit 3, nothing written.
    let versions = ws.manifest_versions();
    ws.sample(50, 6, &["--only", "population", "--date", "2024-04-07"]);
    std::fs::write(&pin, "0000\n").unwrap();
    let out = with_token(&ws, &conf, &[], &["ingest"], 3);
    assert!(stderr(&out).contains("the token `ladu` refused the PIN"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("0000") && !stderr(&out).contains("5678"));
    use_token(&ws, module, "ladu", "pin_env = \"LADU_TEST_PIN\"");
    let out = with_token(&ws, &conf, &[], &["ingest"], 3);
    assert!(stderr(&out).contains("LADU_TEST_PIN (`key.pin_env`) is not set"), "{}", stderr(&out));
    use_token(&ws, module, "elsewhere", "pin_env = \"LADU_TEST_PIN\"");
    let out = with_token(&ws, &conf, &[("LADU_TEST_PIN", "5678")], &["ingest"], 3);
    assert!(
        stderr(&out).contains("no token labelled `elsewhere`") && stderr(&out).contains("`ladu`"),
        "{}",
        stderr(&out)
    );
    use_token(&ws, "/nonexistent/libpkcs11.so", "ladu", "pin_env = \"LADU_TEST_PIN\"");
    let out = with_token(&ws, &conf, &[("LADU_TEST_PIN", "5678")], &["ingest"], 3);
    assert!(stderr(&out).contains("cannot load the PKCS#11 module"), "{}", stderr(&out));
    assert_eq!(ws.manifest_versions(), versions);
    // The right PIN from the environment: the waiting delivery goes in.
    use_token(&ws, module, "ladu", "pin_env = \"LADU_TEST_PIN\"");
    with_token(&ws, &conf, &[("LADU_TEST_PIN", "5678")], &["ingest"], 0);
    assert_eq!(ws.manifest_versions().len(), versions.len() + 1);
}

#[test]
fn a_new_key_is_made_in_memory_and_wrapped_and_the_config_refuses_half_a_custody() {
    let ws = Workspace::new();
    let Some((conf, module)) = softhsm_token(&ws) else { return };
    use_token(&ws, module, "ladu", "pin_env = \"LADU_TEST_PIN\"");
    let pin = [("LADU_TEST_PIN", "5678")];
    with_token(&ws, &conf, &pin, &["key", "wrap", "--new", "--create-wrapping-key"], 0);
    ws.sample(100, 8, &["--only", "population"]);
    with_token(&ws, &conf, &pin, &["ingest"], 0);
    let wrapped = std::fs::read_to_string(ws.root().join("key/ladu.key.wrapped")).unwrap();
    let manifest = ws.warehouse().join("_ladu/manifest").join(ws.manifest_versions().pop().unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let fingerprint = manifest["key_fingerprint"].as_str().unwrap();
    assert!(wrapped.contains(&format!("fingerprint = \"{fingerprint}\"")), "{wrapped}");
    // A rotation under the token: the new generation is wrapped too, never written in the clear.
    let k2 = ws.root().join("key/k2.wrapped");
    with_token(&ws, &conf, &pin, &["key", "wrap", "--new", "--out", k2.to_str().unwrap()], 0);
    let before: Vec<Vec<String>> = ws.sql_rows(None, "SELECT person_id FROM population ORDER BY person_id");
    with_token(&ws, &conf, &pin, &["rekey", "--new-key", k2.to_str().unwrap()], 0);
    let after: Vec<Vec<String>> = ws.sql_rows(None, "SELECT person_id FROM population ORDER BY person_id");
    assert_eq!(before.len(), after.len());
    assert!(before.iter().all(|p| !after.contains(p)), "every pseudonym of the new generation");
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), text.replacen("[paths]", "key_generations = [\"../key/k2.wrapped\"]\n[paths]", 1))
        .unwrap();
    ws.sample(100, 8, &["--only", "population", "--date", "2024-04-07"]);
    with_token(&ws, &conf, &pin, &["ingest"], 0);
    let both = ws.sql_rows(None, "SELECT count(DISTINCT person_id) FROM population_history");
    assert_eq!(both[0][0], after.len().to_string(), "the next snapshot chains to the same pseudonyms");
    with_token(&ws, &conf, &pin, &["check"], 0);
    // A changed wrapped file is refused, not used.
    let path = ws.root().join("key/ladu.key.wrapped");
    let flipped: String = {
        let (head, tail) = wrapped.split_once("ciphertext = \"").unwrap();
        let first = if tail.starts_with('0') { '1' } else { '0' };
        format!("{head}ciphertext = \"{first}{}", &tail[1..])
    };
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, flipped).unwrap();
    let out = with_token(&ws, &conf, &pin, &["ingest"], 3);
    assert!(stderr(&out).contains("cannot decrypt"), "{}", stderr(&out));
    // Both a key file and a token: refused.
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), format!("key_file = \"../key/ladu.key\"\n{text}")).unwrap();
    let out = with_token(&ws, &conf, &pin, &["ingest"], 3);
    assert!(stderr(&out).contains("key_file: not with `[key]`"), "{}", stderr(&out));
}
