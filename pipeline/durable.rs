//! Durable file writes: write aside, fsync the file, move it into place, fsync the folder.
//!
//! A reader sees the old file or the whole new one, never part of one, and
//! once a write returns it survives a crash. [`Place::New`] never replaces
//! anything: the finished file is hard-linked into place, which fails if the
//! name is taken, so of two writers racing for one name exactly one wins.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How the finished file takes its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Replace whatever holds the name (`rename(2)`).
    Replace,
    /// Only if the name is free; `AlreadyExists` otherwise.
    New,
}

/// How to write a file.
#[derive(Debug, Clone, Copy)]
pub struct Durable {
    place: Place,
    mode: u32,
}

impl Durable {
    /// A file readable as the umask allows.
    pub fn new(place: Place) -> Durable {
        Durable { place, mode: 0o666 }
    }

    /// Readable by its owner only (mode 0600), from its first byte.
    pub fn private(self) -> Durable {
        Durable { mode: 0o600, ..self }
    }

    /// Write `bytes` to `path`.
    pub fn bytes(self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.write(path, |f| f.write_all(bytes))
    }

    /// Write `path` through `fill`.
    pub fn write(self, path: &Path, fill: impl FnOnce(&mut Pending) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut pending = self.begin(path)?;
        fill(&mut pending)?;
        pending.commit()
    }

    /// Start writing `path` aside; nothing is at `path` until [`Pending::commit`].
    pub fn begin(self, path: &Path) -> std::io::Result<Pending> {
        let tmp = aside(path);
        let file = OpenOptions::new().write(true).create_new(true).mode(self.mode).open(&tmp)?;
        // A private file's bytes go straight to the file, leaving no copy in a buffer.
        let buffer = if self.mode == 0o600 { 0 } else { 1 << 16 };
        Ok(Pending { out: Some(BufWriter::with_capacity(buffer, file)), tmp, path: path.to_owned(), place: self.place })
    }
}

/// A file being written aside; removed unless committed.
#[derive(Debug)]
pub struct Pending {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    place: Place,
}

impl Pending {
    /// The file being written.
    pub fn file(&self) -> &File {
        self.out.as_ref().expect("not yet committed").get_ref()
    }

    /// Sync what was written, give it its name and make the name durable.
    pub fn commit(mut self) -> std::io::Result<()> {
        let out = self.out.take().expect("a pending file is committed once");
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let placed = match self.place {
            Place::Replace => std::fs::rename(&self.tmp, &self.path),
            Place::New => std::fs::hard_link(&self.tmp, &self.path),
        };
        // After a rename the name is gone; after a link or a failure it is removed.
        let _ = std::fs::remove_file(&self.tmp);
        placed?;
        sync_dir(folder(&self.path))
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().expect("not yet committed").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().expect("not yet committed").flush()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The folder `path` is in.
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A name beside `path` for writing it aside: hidden, ending in `.tmp`, this process's own.
fn aside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    folder(path).join(format!(".{name}.{}.tmp", std::process::id()))
}

/// fsync a folder, so that names made or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `path` and every missing folder above it, each made durable in its parent.
pub fn create_dirs(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    sync_dir(folder(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_never_replaces_and_replace_does() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        Durable::new(Place::New).bytes(&p, b"one").unwrap();
        let e = Durable::new(Place::New).bytes(&p, b"two").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        Durable::new(Place::Replace).bytes(&p, b"three").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "nothing left aside: {names:?}");
    }

    #[test]
    fn private_files_are_the_owners_alone_and_a_failed_fill_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        Durable::new(Place::New).private().bytes(&p, b"x").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let q = dir.path().join("failed");
        let e = Durable::new(Place::New)
            .write(&q, |f| {
                f.write_all(b"part")?;
                Err(std::io::Error::other("disk full"))
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
