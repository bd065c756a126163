//! `ladu check`: verify the warehouse's files against the manifest, the key, the audit chain, the records of releases and the site's checksums.
//!
//! Reads only. Every problem found is named (file, and what is wrong with
//! it), so that an operator knows what to restore from backup.

use std::collections::HashSet;
use std::path::Path;

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::pseudonym::Keys;
use crate::warehouse::files::Standing;
use crate::warehouse::manifest;
use crate::warehouse::writer::hash_file;

/// What `ladu check` found.
#[derive(Debug, Default)]
pub struct Findings {
    /// What was checked, for the summary: (what, how many).
    pub checked: Vec<(String, u64)>,
    pub problems: Vec<String>,
}

/// Check everything; `key` is checked against the warehouse when given.
pub fn run(settings: &Settings, key: Option<&Keys>, audit: &AuditLog) -> Findings {
    let mut f = Findings::default();
    warehouse(&settings.paths.warehouse, key, &mut f);
    match crate::audit::verify(audit) {
        Ok(v) => f.checked.push(("audit entries".into(), v.entries)),
        Err(e) => f.problems.push(e.to_string()),
    }
    release_records(&settings.paths.warehouse, audit, &mut f);
    site(&settings.paths.site, &mut f);
    f
}

/// ladu's record of each delivered release, against the checksum its audit entry (or its rekey's) holds.
fn release_records(root: &Path, audit: &AuditLog, f: &mut Findings) {
    use crate::release::record;
    let (entries, rekeys) = match (record::account(audit, None), record::rekeys(audit)) {
        (Ok(e), Ok(r)) => (e, r),
        (Err(e), _) | (_, Err(e)) => return f.problems.push(e.to_string()),
    };
    let generations = manifest::load_latest(root).map(|m| m.generations()).unwrap_or_default();
    for entry in &entries {
        if let Err(problem) = record::checked_pseudonyms(root, entry, &rekeys, &generations) {
            f.problems.push(problem.to_string());
        }
    }
    f.checked.push(("records of releases to recipients".into(), entries.len() as u64));
}

fn warehouse(root: &Path, key: Option<&Keys>, f: &mut Findings) {
    let m = match manifest::load_latest(root) {
        Ok(m) => m,
        Err(e) => return f.problems.push(e.to_string()),
    };
    if let Some(key) = key
        && let Err(e) = crate::warehouse::check_generations(&m, &key.fingerprints())
    {
        f.problems.push(e.to_string());
    }
    if !m.key_generations.is_empty() && m.key_generations.last() != m.key_fingerprint.as_ref() {
        f.problems.push(format!(
            "the manifest's key generations {} do not end with its key fingerprint {}; restore `_ladu/manifest/` from backup",
            m.key_generations.join(" → "),
            m.key_fingerprint.as_deref().unwrap_or("(none)")
        ));
    }
    let mut files = 0;
    for file in m.committed_files() {
        files += 1;
        let path = root.join(&file.path);
        match hash_file(&path) {
            Err(e) => f.problems.push(format!("{}: committed file cannot be read: {e}", path.display())),
            Ok((sha, bytes)) if sha != file.sha256 || bytes != file.bytes => f.problems.push(format!(
                "{}: committed file differs from the manifest ({bytes} bytes, SHA-256 {sha}; the manifest says {} bytes, {})",
                path.display(),
                file.bytes,
                file.sha256
            )),
            Ok(_) => {}
        }
    }
    f.checked.push((format!("committed files (warehouse version {})", m.version), files));
    let mut recorded = 0;
    for (name, t) in &m.tables {
        let Some(v) = &t.versions else { continue };
        recorded += 1;
        let (held, counted): (u64, u64) =
            (t.files.iter().map(|f| f.rows).sum(), v.deliveries.iter().map(|d| d.rows).sum());
        if held != counted {
            f.problems.push(format!(
                "table {name}: its files hold {held} rows, its record of versions counts {counted}; restore `_ladu/manifest/` from backup"
            ));
        }
        if let Some(d) = v.deliveries.iter().find(|d| d.superseded > d.rows) {
            f.problems.push(format!(
                "table {name}: the record of versions counts more superseded rows than delivery {} of commit {} holds",
                d.extract_date, d.commit
            ));
        }
    }
    f.checked.push(("tables' records of superseded rows".into(), recorded));
    let mut replaced = 0;
    match crate::warehouse::files::unnamed(root, &m) {
        Err(e) => f.problems.push(e.to_string()),
        Ok(unnamed) => {
            for (file, standing) in unnamed {
                let path = root.join(&file);
                match standing {
                    // Named by the version before; removal was interrupted, the next writer finishes it.
                    Standing::Replaced => replaced += 1,
                    Standing::Uncommitted => f.problems.push(format!(
                        "{}: a data file of a run that did not commit (the next ingest or stats removes it)",
                        path.display()
                    )),
                    Standing::Unaccounted => f.problems.push(format!(
                        "{}: a file no committed warehouse version accounts for; ladu never removes such a file: find out where it came from",
                        path.display()
                    )),
                }
            }
        }
    }
    if replaced > 0 {
        f.checked.push((format!("replaced files not yet removed (version {} replaced them)", m.version), replaced));
    }
}

/// Every release's `SHA256SUMS`, and no file a release's sums do not list.
fn site(site: &Path, f: &mut Findings) {
    let releases = site.join(crate::publish::site::RELEASES);
    let Ok(entries) = std::fs::read_dir(&releases) else { return };
    let mut checked = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !dir.is_dir() || name.starts_with('.') {
            continue;
        }
        checked += 1;
        let sums_path = dir.join(crate::publish::site::CHECKSUMS);
        let sums = match std::fs::read_to_string(&sums_path) {
            Ok(s) => s,
            Err(e) => {
                f.problems.push(format!("{}: cannot be read: {e}", sums_path.display()));
                continue;
            }
        };
        let mut listed = HashSet::new();
        for line in sums.lines() {
            let Some((digest, rel)) = line.split_once("  ") else {
                f.problems.push(format!("{}: a line is not `<sha256>  <file>`", sums_path.display()));
                continue;
            };
            listed.insert(rel.to_owned());
            let path = dir.join(rel);
            match hash_file(&path) {
                Err(e) => f.problems.push(format!("{}: cannot be read: {e}", path.display())),
                Ok((sha, _)) if sha != digest => {
                    f.problems.push(format!("{}: differs from {}", path.display(), sums_path.display()))
                }
                Ok(_) => {}
            }
        }
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p != sums_path {
                    let rel = p.strip_prefix(&dir).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
                    if !listed.contains(&rel) {
                        f.problems.push(format!("{}: not listed in {}", p.display(), sums_path.display()));
                    }
                }
            }
        }
    }
    f.checked.push(("site releases".into(), checked));
}
