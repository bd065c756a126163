//! The audit log: append-only JSON lines, each carrying its own SHA-256 and the one before.
//!
//! An entry's `hash` is the SHA-256 of the entry's JSON (keys sorted, without
//! `hash`), and its `prev` is the `hash` of the entry before it.
//! `audit.jsonl` in the configured folder. An entry is written with one
//! `write` of a whole line and fsynced before the call returns, under an
//! exclusive lock, so concurrent processes cannot interleave and a crash
//! loses at most the entry being written, never an earlier one. Editing,
//! deleting, reordering or inserting any line breaks the chain, which
//! [`verify`] reports with the first bad line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// File name of the log inside the audit folder.
pub const LOG_FILE: &str = "audit.jsonl";
/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the audit log {path}: {source}; nothing further was done")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit log {path} is damaged at line {line}: {problem}; run `ladu audit verify`")]
    Damaged { path: PathBuf, line: u64, problem: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The audit log of one installation.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(dir: &Path) -> AuditLog {
        AuditLog { path: dir.join(LOG_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append an entry of `kind` with `fields`; `seq`, `time`, `user`, `kind`
    /// and `prev` are added here, and the entry's `seq` returned. Fields must
    /// never hold a raw identifier.
    pub fn append(&self, kind: &str, fields: Map<String, Value>) -> Result<u64> {
        let io = |source| Error::Io { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&self.path).map_err(io)?;
        file.lock().map_err(io)?;
        let (seq, prev) = last_entry(&mut file).map_err(|e| self.tail_error(e))?;
        let mut entry = Map::new();
        entry.insert("seq".into(), Value::from(seq + 1));
        entry.insert(
            "time".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        entry.insert("user".into(), Value::from(os_user()));
        entry.insert("kind".into(), Value::from(kind));
        for (k, v) in fields {
            entry.insert(k, v);
        }
        entry.insert("prev".into(), Value::from(prev));
        let hash = entry_hash(&entry);
        entry.insert("hash".into(), Value::from(hash));
        let mut line = serde_json::to_vec(&Value::Object(entry)).expect("JSON values serialise");
        line.push(b'\n');
        file.write_all(&line).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(seq + 1)
    }

    /// Fail unless an entry can be appended (the log's last line is whole), so
    /// that a command can refuse to work before doing something it cannot log.
    pub fn check_appendable(&self) -> Result<()> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(Error::Io { path: self.path.clone(), source }),
        };
        last_entry(&mut file).map(drop).map_err(|e| self.tail_error(e))
    }

    fn tail_error(&self, e: TailError) -> Error {
        match e {
            TailError::Io(source) => Error::Io { path: self.path.clone(), source },
            TailError::Partial => Error::Damaged {
                path: self.path.clone(),
                line: 0,
                problem: "the last entry is incomplete (a crash while writing it?)".into(),
            },
        }
    }

    /// Is there an `ingest` entry for warehouse version `commit`?
    pub fn has_ingest_commit(&self, commit: u64) -> Result<bool> {
        Ok(self.entries()?.iter().any(|e| {
            e.get("kind").and_then(Value::as_str) == Some("ingest")
                && e.get("commit").and_then(Value::as_u64) == Some(commit)
        }))
    }

    /// Every entry, in order (for `audit show` and tests).
    pub fn entries(&self) -> Result<Vec<Value>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Io { path: self.path.clone(), source }),
        };
        let mut out = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| Error::Io { path: self.path.clone(), source })?;
            let v = serde_json::from_str(&line).map_err(|e| Error::Damaged {
                path: self.path.clone(),
                line: i as u64 + 1,
                problem: e.to_string(),
            })?;
            out.push(v);
        }
        Ok(out)
    }
}

/// Which entries to select: all of them by default.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only entries of this kind.
    pub kind: Option<String>,
    /// Only entries on or after this day (UTC).
    pub from: Option<chrono::NaiveDate>,
    /// Only entries on or before this day (UTC).
    pub to: Option<chrono::NaiveDate>,
}

impl Filter {
    pub fn matches(&self, entry: &Value) -> bool {
        let kind = entry.get("kind").and_then(Value::as_str).unwrap_or_default();
        let day = entry.get("time").and_then(Value::as_str).and_then(|t| t.get(..10)).unwrap_or_default();
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.from.is_none_or(|d| day >= d.to_string().as_str())
            && self.to.is_none_or(|d| day <= d.to_string().as_str())
    }
}

impl AuditLog {
    /// The entries `filter` selects, in order; an error (naming the line) if any line cannot be read.
    pub fn select(&self, filter: &Filter) -> Result<Vec<Value>> {
        Ok(self.entries()?.into_iter().filter(|e| filter.matches(e)).collect())
    }
}

enum TailError {
    Io(std::io::Error),
    Partial,
}

/// `seq` and hash of the last complete line (0 and the genesis hash for an empty log).
fn last_entry(file: &mut File) -> Result<(u64, String), TailError> {
    let len = file.seek(SeekFrom::End(0)).map_err(TailError::Io)?;
    if len == 0 {
        return Ok((0, GENESIS.to_owned()));
    }
    // Read backwards in blocks until the start of the last line is found.
    let mut tail = Vec::new();
    let mut pos = len;
    loop {
        let step = pos.min(64 * 1024);
        pos -= step;
        file.seek(SeekFrom::Start(pos)).map_err(TailError::Io)?;
        let mut block = vec![0u8; step as usize];
        file.read_exact(&mut block).map_err(TailError::Io)?;
        block.extend_from_slice(&tail);
        tail = block;
        if tail.last() != Some(&b'\n') {
            return Err(TailError::Partial);
        }
        let body = &tail[..tail.len() - 1];
        if let Some(i) = memchr::memrchr(b'\n', body) {
            return parse_last(&body[i + 1..]);
        }
        if pos == 0 {
            return parse_last(body);
        }
    }
}

fn parse_last(line: &[u8]) -> Result<(u64, String), TailError> {
    let v: Value = serde_json::from_slice(line).map_err(|_| TailError::Partial)?;
    let seq = v.get("seq").and_then(Value::as_u64).ok_or(TailError::Partial)?;
    let hash = v.get("hash").and_then(Value::as_str).ok_or(TailError::Partial)?;
    Ok((seq, hash.to_owned()))
}

/// SHA-256 of an entry's canonical JSON (serde_json's map keeps keys sorted), without `hash`.
fn entry_hash(entry: &Map<String, Value>) -> String {
    let mut e = entry.clone();
    e.remove("hash");
    let bytes = serde_json::to_vec(&Value::Object(e)).expect("JSON values serialise");
    crate::hex::encode(&Sha256::digest(&bytes))
}

/// Name of the operating-system user running ladu: the real user id's name
/// in `/etc/passwd` (not `$USER`, which anyone can set), else `uid:<n>`.
pub fn os_user() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { getuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    user_name(&passwd, uid).unwrap_or_else(|| format!("uid:{uid}"))
}

/// The name of `uid` in a passwd file's text.
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

unsafe extern "C" {
    fn getuid() -> u32;
}

/// Outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
}

/// Check the whole chain; the error names the first bad line.
pub fn verify(log: &AuditLog) -> Result<Verified> {
    let damaged = |line: u64, problem: String| Error::Damaged { path: log.path.clone(), line, problem };
    let mut text = Vec::new();
    match File::open(&log.path) {
        Ok(mut f) => f.read_to_end(&mut text).map_err(|source| Error::Io { path: log.path.clone(), source })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verified { entries: 0 }),
        Err(source) => return Err(Error::Io { path: log.path.clone(), source }),
    };
    if !text.is_empty() && text.last() != Some(&b'\n') {
        let line = memchr::memchr_iter(b'\n', &text).count() as u64 + 1;
        return Err(damaged(line, "the entry is incomplete (truncated)".into()));
    }
    let mut prev = GENESIS.to_owned();
    let mut n = 0u64;
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    for (i, line) in body.split(|c| *c == b'\n').enumerate().filter(|_| !body.is_empty()) {
        let no = i as u64 + 1;
        let v: Map<String, Value> =
            serde_json::from_slice(line).map_err(|e| damaged(no, format!("not a JSON entry: {e}")))?;
        let hash = v.get("hash").and_then(Value::as_str).ok_or_else(|| damaged(no, "no `hash`".into()))?;
        if hash != entry_hash(&v) {
            return Err(damaged(no, "the entry's content does not match its hash (it was edited)".into()));
        }
        let seq = v.get("seq").and_then(Value::as_u64).ok_or_else(|| damaged(no, "no `seq`".into()))?;
        if seq != no {
            return Err(damaged(
                no,
                format!("`seq` is {seq}, expected {no} (an entry was removed, inserted or moved)"),
            ));
        }
        let p = v.get("prev").and_then(Value::as_str).ok_or_else(|| damaged(no, "no `prev` hash".into()))?;
        if p != prev {
            return Err(damaged(
                no,
                "`prev` does not match the line before (an entry was edited, removed or moved)".into(),
            ));
        }
        prev = hash.to_owned();
        n += 1;
    }
    Ok(Verified { entries: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: usize) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        for i in 0..n {
            let mut m = Map::new();
            m.insert("i".into(), Value::from(i));
            log.append("test", m).unwrap();
        }
        (dir, log)
    }

    fn lines(log: &AuditLog) -> Vec<String> {
        std::fs::read_to_string(log.path()).unwrap().lines().map(str::to_owned).collect()
    }

    fn write(log: &AuditLog, lines: &[String]) {
        std::fs::write(log.path(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    fn bad_line(log: &AuditLog) -> u64 {
        match verify(log) {
            Err(Error::Damaged { line, .. }) => line,
            other => panic!("expected damage, got {other:?}"),
        }
    }

    #[test]
    fn a_clean_chain_verifies() {
        let (_d, log) = log_with(5);
        assert_eq!(verify(&log).unwrap().entries, 5);
        assert_eq!(log.entries().unwrap().len(), 5);
    }

    #[test]
    fn every_tampering_names_the_first_bad_line() {
        let (_d, log) = log_with(5);
        let orig = lines(&log);

        let mut edited = orig.clone();
        edited[2] = edited[2].replace("\"i\":2", "\"i\":7");
        write(&log, &edited);
        assert_eq!(bad_line(&log), 3, "an edit breaks the entry's own hash");

        let mut deleted = orig.clone();
        deleted.remove(1);
        write(&log, &deleted);
        assert_eq!(bad_line(&log), 2);

        let mut reordered = orig.clone();
        reordered.swap(1, 2);
        write(&log, &reordered);
        assert_eq!(bad_line(&log), 2);

        let mut inserted = orig.clone();
        inserted.insert(3, orig[3].clone());
        write(&log, &inserted);
        assert_eq!(bad_line(&log), 5, "the copy sits where the original was; the original no longer fits");

        std::fs::write(log.path(), format!("{}\n{}", orig[0], &orig[1][..10])).unwrap();
        assert_eq!(bad_line(&log), 2, "truncated");

        write(&log, &orig[..3]);
        assert_eq!(verify(&log).unwrap().entries, 3, "losing the tail is only visible against a copy");
    }

    #[test]
    fn the_user_is_the_real_uid_by_name() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nanalyst:x:1000:1000::/home/a:/bin/sh\nbroken\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("analyst"));
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 7), None);
        assert!(!os_user().is_empty());
    }

    #[test]
    fn appending_after_a_partial_line_is_refused() {
        let (_d, log) = log_with(2);
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(b"{\"seq\":3").unwrap();
        assert!(matches!(log.append("x", Map::new()), Err(Error::Damaged { .. })));
    }
}
