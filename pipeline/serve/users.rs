//! The users file: who may log in to `ladu serve`, as which role, and how.
//!
//! ```toml
//! [users.maria]
//! role = "analyst"
//! password = "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
//! os_users = ["maria"]
//! ```
//!
//! A password is kept only as PostgreSQL's SCRAM-SHA-256 verifier, from
//! which it cannot be recovered; a certificate login is kept as the SHA-256
//! of the subject field that names the user (an ID card's field is a
//! personal code, which ladu never writes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pgwire::api::auth::sasl::scram::{ScramSecret, gen_salted_password};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::durable::{Durable, Place};

/// Iterations of a new verifier: PostgreSQL's default.
pub const SCRAM_ITERATIONS: usize = 4096;
/// Salt bytes of a new verifier: PostgreSQL's length.
const SALT_BYTES: usize = 16;
/// The shortest password `ladu user` accepts.
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the users file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the users file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the users file {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
    #[error("cannot write the users file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("user `{0}` exists already: `ladu user passwd` changes a password, `ladu user remove` removes a user")]
    Exists(String),
    #[error("no user `{name}` in {path}: `ladu user list` lists them")]
    Unknown { name: String, path: PathBuf },
    #[error("`{0}` is not a user name: use letters, digits, `_`, `.` and `-`, starting with a letter (at most 63)")]
    BadName(String),
    #[error("the password is too short: use at least {MIN_PASSWORD_CHARS} characters")]
    ShortPassword,
    #[error("the two passwords differ; nothing was changed")]
    Mismatch,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One user as the file holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// A role of the roles file, or `provider:<regcode>`.
    pub role: String,
    /// SCRAM-SHA-256 verifier, PostgreSQL's form; none: no password login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `sha256:<hex>` of the client certificate's subject field that logs this user in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Operating-system users who may run `ladu sql --role <role>` on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub os_users: Vec<String>,
}

/// Every user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Users {
    #[serde(default)]
    pub users: BTreeMap<String, User>,
}

/// A password verifier, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: usize,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Verifier {
    /// A new verifier of `password`, with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        let mut salt = vec![0u8; SALT_BYTES];
        getrandom::fill(&mut salt).expect("the operating system's random numbers");
        Self::with_salt(password, salt, SCRAM_ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: usize) -> Verifier {
        let salted = Zeroizing::new(gen_salted_password(password, &salt, iterations));
        match ScramSecret::verifier_from_salted_password(salt, salted.to_vec(), iterations) {
            ScramSecret::Verifier { salt, iterations, stored_key, server_key } => {
                Verifier { iterations, salt, stored_key, server_key }
            }
            ScramSecret::SaltedPassword { .. } => unreachable!("a verifier is made"),
        }
    }

    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as PostgreSQL's `pg_authid` holds it.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: usize = iterations.parse().ok().filter(|i| *i >= SCRAM_ITERATIONS)?;
        let salt = STANDARD.decode(salt).ok().filter(|s| !s.is_empty())?;
        let stored_key = STANDARD.decode(stored).ok().filter(|k| k.len() == 32)?;
        let server_key = STANDARD.decode(server).ok().filter(|k| k.len() == 32)?;
        Some(Verifier { iterations, salt, stored_key, server_key })
    }

    pub fn secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }

    /// A verifier no password matches, the same for `name` every time, so
    /// that an unknown user's login fails as a wrong password does, after
    /// the same exchange (as PostgreSQL does), and names are not revealed.
    pub fn decoy(name: &str, secret: &[u8; 32]) -> Verifier {
        let mut mac = Sha256::new();
        mac.update(secret);
        mac.update(name.as_bytes());
        let salt = mac.finalize()[..SALT_BYTES].to_vec();
        let mut keys = Sha256::new();
        keys.update(salt.as_slice());
        keys.update(secret);
        let stored_key = keys.finalize().to_vec();
        Verifier { iterations: SCRAM_ITERATIONS, salt, server_key: stored_key.clone(), stored_key }
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

/// How a certificate's subject field is kept: `sha256:<hex>`.
pub fn certificate_digest(field: &str) -> String {
    format!("sha256:{}", crate::hex::encode(&Sha256::digest(field.as_bytes())))
}

/// A user name as PostgreSQL clients send it: one word, at most 63 bytes.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Users {
    /// Read the users file; a missing file is no users.
    pub fn load(path: &Path) -> Result<Users> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(source) => return Err(Error::Read { path: path.to_owned(), source }),
        };
        let users: Users =
            toml::from_str(&text).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })?;
        let mut problems = Vec::new();
        for (name, user) in &users.users {
            if !valid_name(name) {
                problems.push(format!("users.{name}: not a user name (letters, digits, `_`, `.`, `-`)"));
            }
            if let Some(p) = &user.password
                && Verifier::parse(p).is_none()
            {
                problems.push(format!(
                    "users.{name}.password: not a SCRAM-SHA-256 verifier (`ladu user passwd {name}` sets one)"
                ));
            }
            if let Some(c) = &user.certificate
                && !c.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                problems.push(format!("users.{name}.certificate: not `sha256:<64 hex digits>`"));
            }
        }
        if !problems.is_empty() {
            return Err(Error::Invalid { path: path.to_owned(), problems });
        }
        Ok(users)
    }

    /// Write the users file durably, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = format!(
            "# ladu serve's users, written by `ladu user`. Passwords are SCRAM-SHA-256 verifiers, never passwords.\n{}",
            toml::to_string(self).expect("users serialise")
        );
        let write = |source| Error::Write { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            crate::durable::create_dirs(dir).map_err(write)?;
        }
        Durable::new(Place::Replace).private().bytes(path, text.as_bytes()).map_err(write)
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The user whose certificate field is `field`.
    pub fn by_certificate(&self, field: &str) -> Option<(&str, &User)> {
        let digest = certificate_digest(field);
        self.users.iter().find(|(_, u)| u.certificate.as_deref() == Some(digest.as_str())).map(|(n, u)| (n.as_str(), u))
    }

    /// The roles the OS user `os_user` may take with `ladu sql`.
    pub fn roles_of_os_user<'a>(&'a self, os_user: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.users.values().filter(move |u| u.os_users.iter().any(|o| o == os_user)).map(|u| u.role.as_str())
    }

    pub fn add(&mut self, name: &str, user: User) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::BadName(name.to_owned()));
        }
        if self.users.contains_key(name) {
            return Err(Error::Exists(name.to_owned()));
        }
        self.users.insert(name.to_owned(), user);
        Ok(())
    }

    pub fn get_mut(&mut self, name: &str, path: &Path) -> Result<&mut User> {
        self.users.get_mut(name).ok_or_else(|| Error::Unknown { name: name.to_owned(), path: path.to_owned() })
    }

    pub fn remove(&mut self, name: &str, path: &Path) -> Result<User> {
        self.users.remove(name).ok_or_else(|| Error::Unknown { name: name.to_owned(), path: path.to_owned() })
    }
}

/// Check a new password typed twice (or once, from a file).
pub fn check_password(password: &str, again: Option<&str>) -> Result<()> {
    if again.is_some_and(|a| a != password) {
        return Err(Error::Mismatch);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::ShortPassword);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_checks_rfc_7677s_exchange() {
        use hmac::{KeyInit, Mac};
        let mac = |key: &[u8], msg: &str| {
            let mut m = hmac::Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(msg.as_bytes());
            m.finalize().into_bytes().to_vec()
        };
        // RFC 7677 §3: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::with_salt("pencil", salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert_eq!(
            STANDARD.encode(mac(&v.server_key, auth_message)),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            "the RFC's server signature"
        );
        let proof = STANDARD.decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        let client_key: Vec<u8> = proof.iter().zip(mac(&v.stored_key, auth_message)).map(|(a, b)| a ^ b).collect();
        assert_eq!(Sha256::digest(&client_key).to_vec(), v.stored_key, "the RFC's client proof");
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"), "{text}");
        assert_eq!(Verifier::parse(&text), Some(v.clone()));
        assert_eq!(format!("{v:?}"), "Verifier { iterations: 4096, .. }", "no key material in Debug");
    }

    #[test]
    fn bad_verifiers_and_names_are_refused() {
        for bad in ["", "md5abc", "SCRAM-SHA-256$10:AAAA$AAAA:AAAA", "SCRAM-SHA-256$4096:AAAA$AAAA"] {
            assert!(Verifier::parse(bad).is_none(), "{bad}");
        }
        assert!(valid_name("maria.tamm") && valid_name("a1") && !valid_name("1a") && !valid_name("a b"));
        assert!(!valid_name(&"a".repeat(64)));
        assert!(matches!(check_password("short", None), Err(Error::ShortPassword)));
        assert!(matches!(check_password("long enough pw", Some("other")), Err(Error::Mismatch)));
    }

    #[test]
    fn a_decoy_is_stable_per_name_and_differs_between_names() {
        let secret = [7u8; 32];
        assert_eq!(Verifier::decoy("a", &secret), Verifier::decoy("a", &secret));
        assert_ne!(Verifier::decoy("a", &secret).salt, Verifier::decoy("b", &secret).salt);
    }
}
