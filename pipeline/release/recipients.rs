//! The registered recipients of releases (`config/recipients.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read the recipients file {path}: {source}; copy config/recipients.toml there or set `release.recipients_file`"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the recipients file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the recipients file {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
    #[error(
        "unknown recipient `{id}`: the recipients of {path} are {known}; register a recipient there, with the request or contract it receives data under, before releasing to it"
    )]
    Unknown { id: String, path: PathBuf, known: String },
}

/// One recipient: an organisation that receives data under a request or contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The id: part of the recipient's release pseudonyms.
    #[serde(skip_deserializing)]
    pub id: String,
    /// The organisation's name.
    pub name: String,
    /// The request or contract it receives data under (§10(1¹)).
    pub basis: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipients {
    #[serde(default)]
    recipients: BTreeMap<String, Recipient>,
}

/// Is `id` a recipient id: lower-case letters, digits, `.`, `_`, `-`, starting with a letter or digit?
fn valid_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && id.len() <= 64
}

/// The recipient `id` of the recipients file at `path`.
pub fn find(path: &Path, id: &str) -> Result<Recipient, Error> {
    let all = load(path)?;
    all.get(id).cloned().ok_or_else(|| Error::Unknown {
        id: id.to_owned(),
        path: path.to_owned(),
        known: all.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}

/// Every recipient of the file at `path`, by id; all problems reported together.
pub fn load(path: &Path) -> Result<BTreeMap<String, Recipient>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    let raw: RawRecipients =
        toml::from_str(&text).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })?;
    let mut problems = Vec::new();
    for (id, r) in &raw.recipients {
        if !valid_id(id) {
            problems.push(format!(
                "recipients.{id}: an id is 1–64 lower-case letters, digits, `.`, `_` or `-`, starting with a letter or digit"
            ));
        }
        if r.name.trim().is_empty() || r.basis.trim().is_empty() {
            problems.push(format!("recipients.{id}: give `name` and `basis` (the request or contract)"));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Invalid { path: path.to_owned(), problems });
    }
    Ok(raw.recipients.into_iter().map(|(id, r)| (id.clone(), Recipient { id, ..r })).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("recipients.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn the_shipped_file_loads() {
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/recipients.toml"));
        let r = find(p, "tartu-uni").unwrap();
        assert_eq!(r.id, "tartu-uni");
        assert!(matches!(find(p, "nobody"), Err(Error::Unknown { .. })));
    }

    #[test]
    fn bad_ids_and_missing_basis_are_named() {
        let (_d, p) = file("[recipients.'Tartu Uni']\nname='x'\nbasis='y'\n[recipients.ok]\nname='x'\nbasis=' '\n");
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("recipients.Tartu Uni") && e.contains("recipients.ok"), "{e}");
        let (_d, p) = file("[recipients.a]\nname='x'\nbasis='y'\ncontact='z'\n");
        assert!(matches!(load(&p), Err(Error::Parse { .. })));
    }

    #[test]
    fn ids() {
        for ok in ["tai", "tartu-uni", "a.b_c", "9x"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a b", "a:b", "õ"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
