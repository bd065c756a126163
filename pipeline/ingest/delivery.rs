//! Deliveries in the inbox: finding them, reading their names, hashing their bytes.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::config::SourceConfig;

/// A delivery file, named `<source>_<YYYYMMDD>[_<seq>].csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFile {
    pub path: PathBuf,
    pub source: String,
    /// File name without folder.
    pub name: String,
    pub extract_date: NaiveDate,
    pub seq: u32,
}

/// What a path in the inbox is, when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAFile {
    #[error("it is a symbolic link, which ladu never follows: deliver the file itself")]
    Link,
    #[error("it is a folder, not a file")]
    Folder,
    #[error("it is a named pipe (FIFO), not a file")]
    Fifo,
    #[error("it is a device or socket, not a file")]
    Other,
}

impl NotAFile {
    fn of(t: std::fs::FileType) -> Option<NotAFile> {
        use std::os::unix::fs::FileTypeExt;
        if t.is_file() {
            None
        } else if t.is_symlink() {
            Some(NotAFile::Link)
        } else if t.is_dir() {
            Some(NotAFile::Folder)
        } else if t.is_fifo() {
            Some(NotAFile::Fifo)
        } else {
            Some(NotAFile::Other)
        }
    }
}

/// Open a delivery for reading if it is a regular file, never following a
/// symbolic link and never waiting on a pipe; `Ok(Err(_))` says what else it is.
pub fn open(path: &Path) -> std::io::Result<Result<std::fs::File, NotAFile>> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(what) = NotAFile::of(std::fs::symlink_metadata(path)?.file_type()) {
        return Ok(Err(what));
    }
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
    {
        Ok(f) => f,
        // Replaced by a link since it was looked at.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Err(NotAFile::Link)),
        Err(e) => return Err(e),
    };
    Ok(match NotAFile::of(file.metadata()?.file_type()) {
        Some(what) => Err(what),
        None => Ok(file),
    })
}

/// Why a file cannot be taken as a delivery of a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name does not follow `{name}_<YYYYMMDD>[_<seq>].csv`")]
    Pattern { name: String },
    #[error("the name's extract date is not a real date")]
    Date,
}

/// Read the extract date and sequence number from a delivery's file name.
pub fn parse_name(source: &str, name: &str) -> Result<(NaiveDate, u32), NameError> {
    let pattern = || NameError::Pattern { name: source.to_owned() };
    let rest = name
        .strip_prefix(source)
        .and_then(|r| r.strip_prefix('_'))
        .and_then(|r| r.strip_suffix(".csv"))
        .ok_or_else(pattern)?;
    let (date, seq) = match rest.split_once('_') {
        Some((d, s)) => (d, s),
        None => (rest, "0"),
    };
    if date.len() != 8
        || !date.bytes().all(|c| c.is_ascii_digit())
        || seq.is_empty()
        || seq.len() > 6
        || !seq.bytes().all(|c| c.is_ascii_digit())
    {
        return Err(pattern());
    }
    let d = NaiveDate::parse_from_str(date, "%Y%m%d").map_err(|_| NameError::Date)?;
    Ok((d, seq.parse().map_err(|_| pattern())?))
}

/// Well-named deliveries, and misnamed files with why.
pub type Discovered = (Vec<DeliveryFile>, Vec<(PathBuf, NameError)>);

/// Deliveries of `source` waiting in `<inbox>/<source>/`, and files there
/// that match the source's pattern but are not well named.
pub fn discover(inbox: &Path, source: &SourceConfig) -> std::io::Result<Discovered> {
    let dir = inbox.join(&source.name);
    let mut found = Vec::new();
    let mut misnamed = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((found, misnamed)),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Links, folders and pipes with a delivery's name are taken too, to be refused with their reason.
        if name.starts_with('.') || !source.matches_file(&name) {
            continue;
        }
        match parse_name(&source.name, &name) {
            Ok((extract_date, seq)) => {
                found.push(DeliveryFile { path: entry.path(), source: source.name.clone(), name, extract_date, seq })
            }
            Err(e) => misnamed.push((entry.path(), e)),
        }
    }
    sort(&mut found);
    Ok((found, misnamed))
}

/// Oldest extract first, so that the newest delivery is the last to be applied.
pub fn sort(deliveries: &mut [DeliveryFile]) {
    deliveries
        .sort_by(|a, b| (a.extract_date, a.seq, &a.source, &a.name).cmp(&(b.extract_date, b.seq, &b.source, &b.name)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(parse_name("sick_leave", "sick_leave_20240301.csv"), Ok((d(2024, 3, 1), 0)));
        assert_eq!(parse_name("sick_leave", "sick_leave_20240301_2.csv"), Ok((d(2024, 3, 1), 2)));
        assert!(matches!(parse_name("sick_leave", "sick_leave_20240230.csv"), Err(NameError::Date)));
        assert!(parse_name("sick_leave", "sick_leave_2024031.csv").is_err());
        assert!(parse_name("sick_leave", "sick_leave_20240301_.csv").is_err());
        assert!(parse_name("sick_leave", "other_20240301.csv").is_err());
        assert!(parse_name("sick_leave", "sick_leave_20240301.txt").is_err());
    }
}
