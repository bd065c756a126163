//! The key file: loading it with every check of DESIGN.md, and writing a new one (`ladu keygen`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::durable::{Durable, Place};
use crate::pseudonym::key::{Key, KeyFormat};

/// Bytes of randomness in a key made by `ladu keygen`.
pub const GENERATED_KEY_BYTES: usize = 32;

/// Why a key file was refused. Never carries any byte of the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key file {path} does not exist: make one with `ladu keygen --out {path}` (or fix `key_file` in the config)"
    )]
    Missing { path: PathBuf },
    #[error("cannot read key file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is readable by group or others (mode {mode:03o}): run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path}: {problem}")]
    Format {
        path: PathBuf,
        #[source]
        problem: KeyFormat,
    },
    #[error(
        "key file {path} already exists; ladu never overwrites a key (losing it makes every pseudonym unrecomputable)"
    )]
    Exists { path: PathBuf },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
}

/// Load and check the key file at `path`.
pub fn load(path: &Path) -> Result<Key, KeyError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::Missing { path: path.to_owned() }),
        Err(source) => return Err(KeyError::Unreadable { path: path.to_owned(), source }),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_owned(), mode });
    }
    let text =
        Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Unreadable { path: path.to_owned(), source })?);
    Key::parse(&text).map_err(|problem| KeyError::Format { path: path.to_owned(), problem })
}

/// Write a new random key to `path` with mode 0600; never overwrites.
pub fn generate(path: &Path) -> Result<(), KeyError> {
    let mut bytes = Zeroizing::new([0u8; GENERATED_KEY_BYTES]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|e| KeyError::Random(e.to_string()))?;
    write(path, bytes.as_slice())
}

/// Write a key of `bytes` to a new file at `path`, as hex, with mode 0600; never overwrites.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut text = Zeroizing::new(vec![0u8; 2 * bytes.len() + 1]);
    crate::hex::encode_into(bytes, &mut text[..2 * bytes.len()]);
    text[2 * bytes.len()] = b'\n';
    write_private(path, &text).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists { path: path.to_owned() }
        } else {
            KeyError::Write { path: path.to_owned(), source }
        }
    })
}

/// Write `body` to a new file of mode 0600 at `path` (its folders made), durably; never replaces one
/// (`AlreadyExists`). 0600 from the first byte: the umask cannot widen it, and the file is
/// written aside and linked into place, so no one sees part of a key.
pub fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::durable::create_dirs(parent)?;
    }
    Durable::new(Place::New).private().write(path, |f| {
        f.file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn generated_key_loads_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ladu.key");
        generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        load(&path).unwrap();
        assert!(matches!(generate(&path), Err(KeyError::Exists { .. })));
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1, "nothing left aside");
    }

    #[test]
    fn every_bad_key_file_has_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = "ab".repeat(32);
        assert!(matches!(load(&dir.path().join("none")), Err(KeyError::Missing { .. })));
        let p = write(dir.path(), &good, 0o640);
        assert!(matches!(load(&p), Err(KeyError::Permissions { mode: 0o640, .. })));
        let p = write(dir.path(), &"ab".repeat(31), 0o600);
        assert!(matches!(load(&p), Err(KeyError::Format { problem: KeyFormat::TooShort(31), .. })));
        let p = write(dir.path(), &format!("{good}\n"), 0o400);
        load(&p).unwrap();
        let secret = "c0ffee".repeat(11);
        let p = write(dir.path(), &format!("{secret}x"), 0o600);
        let msg = load(&p).unwrap_err().to_string();
        assert!(!msg.contains("c0ffee"), "{msg}");
    }
}
