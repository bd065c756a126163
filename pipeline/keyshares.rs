//! Key backup: the key split into Shamir shares (`ladu key split`), and rebuilt from enough of them (`ladu key join`).
//!
//! Any `threshold` of the shares rebuild the key; fewer reveal nothing of it
//! (Shamir's secret sharing over GF(256), a polynomial per byte, from
//! `vsss-rs`). Each share is a small TOML file, mode 0600, that names the
//! key's fingerprint, its own number, how many shares were made and how many
//! rebuild the key. Interpolating too few shares, or shares of different
//! splits, gives other bytes without any error, so a rebuilt key is accepted
//! only if its fingerprint is the one the shares name.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::durable::{Durable, Place};
use crate::pseudonym::Key;

/// Why shares could not be written or a key rebuilt. Never carries a byte of a share or the key.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(
        "--threshold {threshold} of --shares {shares}: the threshold must be at least 2 and at most the shares, and the shares at most 255"
    )]
    Counts { shares: usize, threshold: usize },
    #[error("cannot split the key: {0}")]
    Split(String),
    #[error("share file {path} already exists; ladu never overwrites a share")]
    Exists { path: PathBuf },
    #[error("cannot write share file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read share file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("share file {path} is readable by group or others (mode {mode:03o}): run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a ladu key share ({problem})")]
    Format { path: PathBuf, problem: String },
    #[error(
        "{path} is a share of another split (key {fingerprint}, {shares} shares, threshold {threshold}) than {first}"
    )]
    Mixed { path: PathBuf, first: PathBuf, fingerprint: String, shares: usize, threshold: usize },
    #[error("share {number} is given twice ({path})")]
    Twice { number: u8, path: PathBuf },
    #[error("{given} distinct share(s) given; any {threshold} of the {shares} rebuild the key")]
    TooFew { given: usize, threshold: usize, shares: usize },
    #[error(
        "the shares do not rebuild the key with fingerprint {fingerprint}: one of them is damaged; try another set of {threshold}"
    )]
    WrongKey { fingerprint: String, threshold: usize },
}

/// One share file's contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareFile {
    /// Fingerprint of the key the shares rebuild (DESIGN.md's key fingerprint).
    fingerprint: String,
    /// This share's number, 1 to `shares`.
    share: u8,
    shares: usize,
    threshold: usize,
    /// The share: its number and one byte per key byte, as hex.
    data: String,
}

impl Drop for ShareFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.data);
    }
}

/// Split `key` into `shares` files under `out` (created if need be), any `threshold` of which rebuild it.
pub fn split(key: &Key, shares: usize, threshold: usize, out: &Path) -> Result<Vec<PathBuf>, ShareError> {
    if threshold < 2 || threshold > shares || shares > 255 {
        return Err(ShareError::Counts { shares, threshold });
    }
    let fingerprint = crate::pseudonym::fingerprint(key);
    let parts = vsss_rs::Gf256::split_bytes(threshold, shares, key.secret_bytes(), rand::rng())
        .map_err(|e| ShareError::Split(e.to_string()))?;
    let parts: Vec<Zeroizing<Vec<u8>>> = parts.into_iter().map(Zeroizing::new).collect();
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| ShareError::Write { path, source }
    };
    crate::durable::create_dirs(out).map_err(write(out))?;
    let mut written = Vec::with_capacity(parts.len());
    for part in &parts {
        let number = part[0];
        let file = ShareFile {
            fingerprint: fingerprint.clone(),
            share: number,
            shares,
            threshold,
            data: crate::hex::encode(part),
        };
        let text = Zeroizing::new(format!(
            "# A share of a ladu key: keep it apart from the other shares. Any {threshold} of the {shares} rebuild the key\n\
             # (`ladu key join`); fewer reveal nothing of it.\n{}",
            toml::to_string(&file).expect("a share serialises")
        ));
        let path = out.join(format!("ladu-key-{fingerprint}-share-{number}-of-{shares}.toml"));
        Durable::new(Place::New)
            .private()
            .write(&path, |f| {
                f.file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
                std::io::Write::write_all(f, text.as_bytes())
            })
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => ShareError::Exists { path: path.clone() },
                _ => ShareError::Write { path: path.clone(), source },
            })?;
        written.push(path);
    }
    Ok(written)
}

/// What a join rebuilt: the key's bytes and its fingerprint, and the split it came from.
pub struct Joined {
    pub key: Zeroizing<Vec<u8>>,
    pub fingerprint: String,
    pub shares: usize,
    pub threshold: usize,
}

/// Rebuild the key from share files, and check it is the key they name.
pub fn join(paths: &[PathBuf]) -> Result<Joined, ShareError> {
    let mut read: Vec<(PathBuf, ShareFile)> = Vec::with_capacity(paths.len());
    for path in paths {
        let file = read_share(path)?;
        if let Some((first_path, first)) = read.first()
            && (first.fingerprint != file.fingerprint
                || first.shares != file.shares
                || first.threshold != file.threshold)
        {
            return Err(ShareError::Mixed {
                path: path.clone(),
                first: first_path.clone(),
                fingerprint: file.fingerprint.clone(),
                shares: file.shares,
                threshold: file.threshold,
            });
        }
        if read.iter().any(|(_, f)| f.share == file.share) {
            return Err(ShareError::Twice { number: file.share, path: path.clone() });
        }
        read.push((path.clone(), file));
    }
    let Some((_, first)) = read.first() else {
        return Err(ShareError::TooFew { given: 0, threshold: 2, shares: 2 });
    };
    let (fingerprint, shares, threshold) = (first.fingerprint.clone(), first.shares, first.threshold);
    if read.len() < threshold {
        return Err(ShareError::TooFew { given: read.len(), threshold, shares });
    }
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(read.len());
    for (path, file) in &read {
        let bytes = crate::hex::decode(&file.data)
            .ok_or_else(|| ShareError::Format { path: path.clone(), problem: "`data` is not hex".into() })?;
        if bytes.first() != Some(&file.share) || bytes.len() != read[0].1.data.len() / 2 {
            return Err(ShareError::Format { path: path.clone(), problem: "`data` does not fit its share".into() });
        }
        parts.push(bytes);
    }
    let combined = vsss_rs::Gf256::combine_bytes(&parts);
    for p in &mut parts {
        zeroize::Zeroize::zeroize(p);
    }
    let wrong = || ShareError::WrongKey { fingerprint: fingerprint.clone(), threshold };
    let key = Zeroizing::new(combined.map_err(|_| wrong())?);
    let rebuilt = Key::parse(crate::hex::encode(&key).as_bytes()).map_err(|_| wrong())?;
    if crate::pseudonym::fingerprint(&rebuilt) != fingerprint {
        return Err(wrong());
    }
    Ok(Joined { key, fingerprint, shares, threshold })
}

fn read_share(path: &Path) -> Result<ShareFile, ShareError> {
    let read = |source| ShareError::Read { path: path.to_owned(), source };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ShareError::Permissions { path: path.to_owned(), mode });
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read)?);
    // The parser's message may quote the text: it is not passed on.
    let file: ShareFile = toml::from_str(&text).map_err(|_| ShareError::Format {
        path: path.to_owned(),
        problem: "expected `fingerprint`, `share`, `shares`, `threshold` and `data`".into(),
    })?;
    if file.threshold < 2 || file.threshold > file.shares || file.share == 0 || usize::from(file.share) > file.shares {
        return Err(ShareError::Format { path: path.to_owned(), problem: "its numbers do not fit together".into() });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Any `threshold` shares rebuild the key; fewer are refused, never turned into a wrong key.
        #[test]
        fn any_threshold_shares_rebuild_the_key_and_fewer_do_not(
            key in prop::collection::vec(any::<u8>(), 32..48),
            (shares, threshold) in (2usize..7).prop_flat_map(|n| (Just(n), 2..=n)),
            pick in any::<u64>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let key = Key::parse(crate::hex::encode(&key).as_bytes()).unwrap();
            let files = split(&key, shares, threshold, dir.path()).unwrap();
            prop_assert_eq!(files.len(), shares);
            // A rotation of the files picks `threshold` of them.
            let start = (pick % shares as u64) as usize;
            let chosen: Vec<PathBuf> = (0..threshold).map(|i| files[(start + i) % shares].clone()).collect();
            let joined = join(&chosen).unwrap();
            prop_assert_eq!(joined.key.as_slice(), key.secret_bytes());
            prop_assert_eq!(&joined.fingerprint, &crate::pseudonym::fingerprint(&key));
            let is_too_few = matches!(join(&chosen[..threshold - 1]), Err(ShareError::TooFew { .. }));
            prop_assert!(is_too_few);
            for f in &files {
                let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
                prop_assert_eq!(mode, 0o600);
            }
        }
    }

    #[test]
    fn damaged_and_mixed_shares_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_hex(&"5a".repeat(32)).unwrap();
        let files = split(&key, 3, 2, &dir.path().join("a")).unwrap();
        // A damaged byte rebuilds other bytes: the fingerprint check refuses them.
        let mut text = std::fs::read(&files[1]).unwrap();
        let end = text.iter().rposition(|&c| c == b'"').unwrap();
        text[end - 1] = if text[end - 1] == b'0' { b'1' } else { b'0' };
        std::fs::remove_file(&files[1]).unwrap();
        std::fs::write(&files[1], text).unwrap();
        std::fs::set_permissions(&files[1], std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(join(&files[..2]), Err(ShareError::WrongKey { .. })));
        // Shares of another split of another key.
        let other = Key::from_hex(&"a5".repeat(32)).unwrap();
        let others = split(&other, 3, 2, &dir.path().join("b")).unwrap();
        assert!(matches!(join(&[files[0].clone(), others[1].clone()]), Err(ShareError::Mixed { .. })));
        assert!(matches!(join(&[files[0].clone(), files[0].clone()]), Err(ShareError::Twice { .. })));
        assert!(matches!(split(&key, 3, 2, &dir.path().join("a")), Err(ShareError::Exists { .. })));
        assert!(matches!(split(&key, 2, 3, dir.path()), Err(ShareError::Counts { .. })));
        std::fs::set_permissions(&files[2], std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(join(&files[2..]), Err(ShareError::Permissions { .. })));
    }
}
