//! Curated query files (`queries/<kind>/<name>.sql`): one query each, opening with a comment saying what it answers.

use std::path::{Path, PathBuf};

/// One query file, read and checked.
#[derive(Debug, Clone)]
pub struct QueryFile {
    pub path: PathBuf,
    /// The file name without `.sql`.
    pub name: String,
    /// The query, without a final `;`.
    pub sql: String,
    /// The opening comment, lines joined.
    pub description: String,
}

/// A query file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct Error {
    pub file: PathBuf,
    pub message: String,
}

/// The `.sql` files of `dir`, by name (no folder: none).
pub fn read_dir(dir: &Path) -> Result<Vec<QueryFile>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error { file: dir.to_owned(), message: e.to_string() }),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error { file: dir.to_owned(), message: e.to_string() })?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.into_iter().map(|p| read(&p)).collect()
}

/// Read one query file.
pub fn read(path: &Path) -> Result<QueryFile, Error> {
    let bad = |message: String| Error { file: path.to_owned(), message };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(bad("a query's file name is its name: lower-case letters, digits and `_`".into()));
    }
    let description: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| l.starts_with("--"))
        .map(|l| l.trim_start_matches('-').trim())
        .collect();
    if description.is_empty() {
        return Err(bad("start the file with a `--` comment saying what the query answers".into()));
    }
    let sql = text.trim().trim_end_matches(';').trim().to_owned();
    Ok(QueryFile { path: path.to_owned(), name, sql, description: description.join(" ") })
}
