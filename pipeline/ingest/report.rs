//! Rejection reports for providers: `outbox/<source>/<file>.rejections.csv`.
//!
//! Columns `file,line,column,reason`. A report names where and why, never
//! the value. It is written aside and renamed into place when complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::durable::{Durable, Pending, Place};

/// Header row of every report.
pub const HEADER: &str = "file,line,column,reason";

/// A report being written.
pub struct RejectionReport {
    path: PathBuf,
    file_name: String,
    out: Pending,
    entries: u64,
}

impl RejectionReport {
    pub fn create(outbox: &Path, source: &str, delivery_name: &str) -> std::io::Result<RejectionReport> {
        let dir = outbox.join(source);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{delivery_name}.rejections.csv"));
        let mut out = Durable::new(Place::Replace).begin(&path)?;
        writeln!(out, "{HEADER}")?;
        Ok(RejectionReport { path, file_name: delivery_name.to_owned(), out, entries: 0 })
    }

    pub fn add(&mut self, line: u64, column: &str, reason: &str) -> std::io::Result<()> {
        self.entries += 1;
        writeln!(self.out, "{},{line},{},{}", field(&self.file_name), field(column), field(reason))
    }

    /// Put the report in place. A delivery with nothing to report leaves no
    /// report (and removes a stale one of an earlier delivery of the same name).
    pub fn finish(self) -> std::io::Result<Option<PathBuf>> {
        let RejectionReport { path, out, entries, .. } = self;
        if entries == 0 {
            drop(out);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            return Ok(None);
        }
        out.commit()?;
        Ok(Some(path))
    }

    /// Drop the report being written.
    pub fn discard(self) {}
}

/// Quote a CSV field when it needs it.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_quoted_rows_and_nothing_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = RejectionReport::create(dir.path(), "s", "s_20240101.csv").unwrap();
        r.add(3, "amount", "expected 2 fields, found 3").unwrap();
        let p = r.finish().unwrap().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, "file,line,column,reason\ns_20240101.csv,3,amount,\"expected 2 fields, found 3\"\n");
        let r = RejectionReport::create(dir.path(), "s", "s_20240101.csv").unwrap();
        assert_eq!(r.finish().unwrap(), None);
        assert!(!p.exists());
    }
}
