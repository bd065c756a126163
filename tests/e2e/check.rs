//! `ladu check`: a damaged, missing or stray warehouse file, an edited audit entry, a changed site file, a wrong key.

use crate::util::*;

#[test]
fn check_names_every_problem() {
    let ws = Workspace::new();
    ws.sample(200, 6, &[]);
    ws.ok(&["run"]);
    let out = ws.ok(&["check"]);
    assert!(stdout(&out).contains("no problems found"), "{}", stdout(&out));
    assert!(stdout(&out).contains("committed files (warehouse version 2)"), "{}", stdout(&out));

    let files = ws.data_files();
    let damaged = ws.warehouse().join(files.iter().find(|f| f.contains("treatment_invoices")).unwrap());
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let deleted = ws.warehouse().join(files.iter().find(|f| f.contains("sick_leave")).unwrap());
    std::fs::remove_file(&deleted).unwrap();
    let stray = ws.warehouse().join("population/part-0000000099-000000.parquet");
    std::fs::write(&stray, b"PAR1").unwrap();
    let page = ws.root().join("site/latest/index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    std::fs::write(&page, html.replace("Open data", "Open dada")).unwrap();
    let log = ws.root().join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"outcome\":\"committed\"", "\"outcome\":\"refused\"", 1)).unwrap();
    let other = ws.root().join("other.key");
    ws.ok(&["keygen", "--out", other.to_str().unwrap()]);
    std::fs::copy(&other, ws.root().join("key/ladu.key")).unwrap();

    let out = ws.expect(&["check"], 1);
    let text = stdout(&out);
    for (what, needle) in [
        ("damaged file", format!("{}: committed file differs from the manifest", damaged.display())),
        ("deleted file", format!("{}: committed file cannot be read", deleted.display())),
        ("stray file", format!("{}: a file no committed warehouse version accounts for", stray.display())),
        ("site file", "index.html: differs from".to_owned()),
        ("audit entry", "does not match its hash (it was edited)".to_owned()),
        ("key", "differs from the warehouse's".to_owned()),
    ] {
        assert!(text.contains(&needle), "{what}: {needle} not in\n{text}");
    }
    assert!(stderr(&out).contains("6 problem(s) found"), "{}", stderr(&out));
}
