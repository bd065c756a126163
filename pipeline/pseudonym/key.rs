//! The pseudonymisation key: loading with every check of DESIGN.md, and `keygen`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::Hmac;
use sha2::{Digest, Sha256};

/// Fewest key bytes accepted (64 hex digits).
pub const MIN_KEY_BYTES: usize = 32;

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
    #[error("key file {path} must hold one line of hex digits; {problem}")]
    NotHex { path: PathBuf, problem: &'static str },
    #[error(
        "key file {path} holds {bytes} bytes; at least {MIN_KEY_BYTES} bytes (64 hex digits) are needed: make a new key with `ladu keygen`"
    )]
    TooShort { path: PathBuf, bytes: usize },
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

/// A loaded key. Its bytes never leave this type except into an HMAC.
pub struct Key {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // Best effort: do not leave the key in freed memory.
        for b in self.bytes.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl Key {
    /// Load and check the key file at `path`.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing { path: path.to_owned() });
            }
            Err(source) => return Err(KeyError::Unreadable { path: path.to_owned(), source }),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.to_owned(), mode });
        }
        let text = std::fs::read(path).map_err(|source| KeyError::Unreadable { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|e| e.at(path))
    }

    /// A key from hex text (tests and tools; files go through [`Key::load`]).
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        Self::parse(text.as_bytes()).map_err(|e| e.at(Path::new("<memory>")))
    }

    fn parse(text: &[u8]) -> Result<Key, ParseProblem> {
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.contains(&b'\n') {
            return Err(ParseProblem::NotHex("it holds more than one line"));
        }
        if body.is_empty() {
            return Err(ParseProblem::NotHex("it is empty"));
        }
        if !body.iter().all(u8::is_ascii_hexdigit) {
            return Err(ParseProblem::NotHex("it holds a character that is not a hex digit"));
        }
        if !body.len().is_multiple_of(2) {
            return Err(ParseProblem::NotHex("it holds an odd number of hex digits"));
        }
        let bytes: Vec<u8> = body.chunks(2).map(|pair| (nibble(pair[0]) << 4) | nibble(pair[1])).collect();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(ParseProblem::TooShort(bytes.len()));
        }
        Ok(Key { bytes })
    }

    pub(super) fn hmac(&self) -> Hmac<Sha256> {
        super::keyed(&self.bytes)
    }

    /// The key as HMAC-SHA256 uses it: hashed if longer than a block, then
    /// zero-padded to one 64-byte block (RFC 2104).
    pub(super) fn hmac_block(&self) -> [u8; 64] {
        let mut block = [0u8; 64];
        if self.bytes.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(&self.bytes));
        } else {
            block[..self.bytes.len()].copy_from_slice(&self.bytes);
        }
        block
    }
}

enum ParseProblem {
    NotHex(&'static str),
    TooShort(usize),
}

impl ParseProblem {
    fn at(self, path: &Path) -> KeyError {
        match self {
            ParseProblem::NotHex(problem) => KeyError::NotHex { path: path.to_owned(), problem },
            ParseProblem::TooShort(bytes) => KeyError::TooShort { path: path.to_owned(), bytes },
        }
    }
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Write a new random key to `path` with mode 0600; never overwrites.
pub fn generate(path: &Path) -> Result<(), KeyError> {
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    let mut text = String::with_capacity(2 * GENERATED_KEY_BYTES + 1);
    for b in bytes {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    bytes.fill(0);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| KeyError::Write { path: path.to_owned(), source })?;
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists { path: path.to_owned() }
        } else {
            KeyError::Write { path: path.to_owned(), source }
        }
    })?;
    // The umask cannot widen 0600, but a pre-set default ACL could: set it explicitly.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write { path: path.to_owned(), source })?;
    // SAFETY: clearing the hex copy of the key; ASCII zero bytes keep it valid UTF-8.
    unsafe { text.as_bytes_mut().fill(b'0') };
    Ok(())
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
        Key::load(&path).unwrap();
        assert!(matches!(generate(&path), Err(KeyError::Exists { .. })));
    }

    #[test]
    fn every_bad_key_has_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = "ab".repeat(32);
        assert!(matches!(Key::load(&dir.path().join("none")), Err(KeyError::Missing { .. })));
        let p = write(dir.path(), &good, 0o640);
        assert!(matches!(Key::load(&p), Err(KeyError::Permissions { mode: 0o640, .. })));
        let p = write(dir.path(), &"ab".repeat(31), 0o600);
        assert!(matches!(Key::load(&p), Err(KeyError::TooShort { bytes: 31, .. })));
        let p = write(dir.path(), &format!("{good}zz"), 0o600);
        assert!(matches!(Key::load(&p), Err(KeyError::NotHex { .. })));
        let p = write(dir.path(), &format!("{good}\n{good}\n"), 0o600);
        assert!(matches!(Key::load(&p), Err(KeyError::NotHex { .. })));
        let p = write(dir.path(), &format!("{good}\n"), 0o400);
        Key::load(&p).unwrap();
    }

    #[test]
    fn errors_never_show_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "c0ffee".repeat(11);
        let p = write(dir.path(), &format!("{secret}x"), 0o600);
        let msg = Key::load(&p).unwrap_err().to_string();
        assert!(!msg.contains("c0ffee"), "{msg}");
        let key = Key::load(&write(dir.path(), &secret[..64], 0o600)).unwrap();
        assert!(!format!("{key:?}").contains("c0ffee"));
    }
}
