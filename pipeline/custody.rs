//! Where the key is kept: in the key file (the default), or wrapped under an AES key that never leaves a PKCS#11 token.
//!
//! With `[key]`, the warehouse key lives on disk only encrypted (AES-256-GCM
//! under the token's key `wrapping_key`), in `wrapped_key_file`. At start the
//! token decrypts it into memory (a `Zeroizing` buffer, wiped when the key is
//! dropped); the plaintext is never written anywhere. The token's PIN comes
//! from a file of mode 0600 or an environment variable, never the command
//! line. Decryption rather than `C_UnwrapKey`: the HMAC key must be in the
//! process's memory to pseudonymise millions of rows, and an unwrapped token
//! object would have to be extractable to get there.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as Pk, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{KeyCustody, PinSource, Settings};
use crate::keyfile::{self, KeyError};
use crate::pseudonym::{self, Key, Keys};

/// The format of a wrapped key file.
const FORMAT: &str = "ladu-wrapped-key-v1";
/// Bytes of a GCM nonce, and bits of its tag.
const IV_BYTES: usize = 12;
const TAG_BITS: u64 = 128;

/// Why the key could not be loaded or wrapped. Never carries the key, a PIN, or any byte of either.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] KeyError),
    #[error("cannot load the PKCS#11 module {path} (`key.pkcs11_module`): {source}")]
    Module {
        path: PathBuf,
        #[source]
        source: Pk,
    },
    #[error("no token labelled `{token}` in {module} (`key.token`); the tokens present: {present}")]
    NoToken { token: String, module: PathBuf, present: String },
    #[error("the token `{token}` refused the PIN ({from}); ladu tried it once: check it before the token locks")]
    PinIncorrect { token: String, from: String },
    #[error("the token `{token}`'s user PIN is locked: its security officer must reset it")]
    PinLocked { token: String },
    #[error("cannot read the token's PIN: {problem}")]
    Pin { problem: String },
    #[error(
        "no AES key labelled `{label}` on the token `{token}` (`key.wrapping_key`): make one with `ladu key wrap --create-wrapping-key`"
    )]
    NoWrappingKey { label: String, token: String },
    #[error("{count} keys are labelled `{label}` on the token `{token}`: give the wrapping key a label of its own")]
    Ambiguous { label: String, token: String, count: usize },
    #[error("a key labelled `{label}` is already on the token `{token}`; leave out --create-wrapping-key to use it")]
    WrappingKeyExists { label: String, token: String },
    #[error(
        "wrapped key file {path} does not exist: make it with `ladu key wrap` (see the README, \"Keeping the key in an HSM\")"
    )]
    NoWrappedKey { path: PathBuf },
    #[error("wrapped key file {path} already exists; ladu never overwrites a key")]
    WrappedKeyExists { path: PathBuf },
    #[error("wrapped key file {path}: {problem}")]
    Wrapped { path: PathBuf, problem: String },
    #[error(
        "the token's key `{label}` cannot decrypt {path}: it was wrapped under another key (or the file was changed); restore the file or the token from backup"
    )]
    Decrypt { path: PathBuf, label: String },
    #[error("{path} decrypts to a key whose fingerprint is {got}, not the {want} it names: restore it from backup")]
    Fingerprint { path: PathBuf, want: String, got: String },
    #[error("the token failed to {what}: {source}")]
    Token {
        what: &'static str,
        #[source]
        source: Pk,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The key's generations as configured: `key_file` (or `[key]`'s wrapped key) and `key_generations`.
pub fn load(settings: &Settings) -> Result<Keys> {
    let first = load_one(settings, &settings.key_file)?;
    let later = settings.key_generations.iter().map(|p| load_one(settings, p)).collect::<Result<Vec<_>>>()?;
    Ok(Keys::new(first, later))
}

/// One key file: plain, or with `[key]` wrapped under the token.
pub fn load_one(settings: &Settings, path: &Path) -> Result<Key> {
    match &settings.key {
        None => Ok(keyfile::load(path)?),
        Some(custody) => unwrap(&KeyCustody { wrapped_key_file: path.to_owned(), ..custody.clone() }),
    }
}

/// A new random key, made in memory (`ladu key wrap --new`): it is never written in the clear.
pub fn new_key() -> Result<Key> {
    let mut bytes = Zeroizing::new(vec![0u8; keyfile::GENERATED_KEY_BYTES]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|e| Error::File(KeyError::Random(e.to_string())))?;
    Key::from_secret(bytes).map_err(|problem| Error::Wrapped { path: PathBuf::new(), problem: problem.to_string() })
}

/// The wrapped key file's contents.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    format: String,
    /// The token and key it was wrapped under (for people; the config decides which are used).
    token: String,
    wrapping_key: String,
    mechanism: String,
    /// The warehouse key's fingerprint: authenticated with the ciphertext, and checked after decryption.
    fingerprint: String,
    iv: String,
    /// The encrypted key and its tag, hex.
    ciphertext: String,
}

/// Associated data of the encryption: binds the ciphertext to its format and the key's fingerprint.
fn aad(fingerprint: &str) -> Vec<u8> {
    format!("ladu:wrapped-key:v1:{fingerprint}").into_bytes()
}

/// A logged-in session on the configured token.
struct Token {
    session: Session,
    // Dropped after the session: finalises the module.
    _ctx: Pkcs11,
    name: String,
}

fn token_err(what: &'static str) -> impl FnOnce(Pk) -> Error {
    move |source| Error::Token { what, source }
}

fn read_pin(pin: &PinSource) -> Result<AuthPin> {
    let text = match pin {
        PinSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| Error::Pin {
            problem: format!("the environment variable {var} (`key.pin_env`) is not set"),
        })?),
        PinSource::File(path) => {
            let shown = path.display();
            let meta = std::fs::metadata(path)
                .map_err(|e| Error::Pin { problem: format!("{shown} (`key.pin_file`): {e}") })?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::Pin {
                    problem: format!(
                        "{shown} is readable by group or others (mode {mode:03o}): run `chmod 600 {shown}`"
                    ),
                });
            }
            let bytes = Zeroizing::new(
                std::fs::read(path).map_err(|e| Error::Pin { problem: format!("{shown} (`key.pin_file`): {e}") })?,
            );
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| Error::Pin { problem: format!("{shown} is not text") })?
                .trim_end_matches(['\n', '\r']);
            Zeroizing::new(text.to_owned())
        }
    };
    if text.is_empty() {
        return Err(Error::Pin { problem: "it is empty".to_owned() });
    }
    Ok(AuthPin::new(text.as_str().into()))
}

fn pin_origin(pin: &PinSource) -> String {
    match pin {
        PinSource::Env(var) => format!("from ${var}"),
        PinSource::File(path) => format!("from {}", path.display()),
    }
}

impl Token {
    /// Load the module, find the token by its label, open a session and log in as its user.
    fn open(c: &KeyCustody, read_write: bool) -> Result<Token> {
        let ctx =
            Pkcs11::new(&c.pkcs11_module).map_err(|source| Error::Module { path: c.pkcs11_module.clone(), source })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(Pk::Pkcs11(RvError::CryptokiAlreadyInitialized, Function::Initialize)) => {}
            Err(source) => return Err(Error::Module { path: c.pkcs11_module.clone(), source }),
        }
        let mut present = Vec::new();
        let mut found = None;
        for slot in ctx.get_slots_with_token().map_err(token_err("list its slots"))? {
            let info = ctx.get_token_info(slot).map_err(token_err("describe a token"))?;
            let label = info.label().trim_end().to_owned();
            if label == c.token {
                found = Some(slot);
                break;
            }
            if !label.is_empty() {
                present.push(format!("`{label}`"));
            }
        }
        let Some(slot) = found else {
            return Err(Error::NoToken {
                token: c.token.clone(),
                module: c.pkcs11_module.clone(),
                present: if present.is_empty() { "none".to_owned() } else { present.join(", ") },
            });
        };
        let session = if read_write { ctx.open_rw_session(slot) } else { ctx.open_ro_session(slot) }
            .map_err(token_err("open a session"))?;
        let pin = read_pin(&c.pin)?;
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(Pk::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(Pk::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
                return Err(Error::PinIncorrect { token: c.token.clone(), from: pin_origin(&c.pin) });
            }
            Err(Pk::Pkcs11(RvError::PinLocked, _)) => return Err(Error::PinLocked { token: c.token.clone() }),
            Err(source) => return Err(Error::Token { what: "log in", source }),
        }
        Ok(Token { session, _ctx: ctx, name: c.token.clone() })
    }

    /// The secret key labelled `label`, if there is exactly one.
    fn find(&self, label: &str) -> Result<Option<ObjectHandle>> {
        let template = [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.as_bytes().to_vec())];
        let found = self.session.find_objects(&template).map_err(token_err("search its keys"))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            more => Err(Error::Ambiguous { label: label.to_owned(), token: self.name.clone(), count: more.len() }),
        }
    }

    /// Make an AES-256 key labelled `label` on the token: kept there, sensitive, never extractable.
    fn create(&self, label: &str) -> Result<ObjectHandle> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        self.session.generate_key(&Mechanism::AesKeyGen, &template).map_err(token_err("make the wrapping key"))
    }
}

/// Decrypt the wrapped key through the token.
fn unwrap(c: &KeyCustody) -> Result<Key> {
    let path = &c.wrapped_key_file;
    let bad = |problem: String| Error::Wrapped { path: path.clone(), problem };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NoWrappedKey { path: path.clone() }),
        Err(e) => return Err(bad(e.to_string())),
    };
    let wrapped: Wrapped = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if wrapped.format != FORMAT {
        return Err(bad(format!("format `{}` is not `{FORMAT}`", wrapped.format)));
    }
    let mut iv = crate::hex::decode(&wrapped.iv)
        .filter(|v| v.len() == IV_BYTES)
        .ok_or_else(|| bad("iv: not 12 bytes of hex".into()))?;
    let ciphertext = crate::hex::decode(&wrapped.ciphertext).ok_or_else(|| bad("ciphertext: not hex".into()))?;
    let token = Token::open(c, false)?;
    let Some(handle) = token.find(&c.wrapping_key)? else {
        return Err(Error::NoWrappingKey { label: c.wrapping_key.clone(), token: c.token.clone() });
    };
    let aad = aad(&wrapped.fingerprint);
    let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(token_err("set up AES-GCM"))?;
    let plain = match token.session.decrypt(&Mechanism::AesGcm(params), handle, &ciphertext) {
        Ok(p) => Zeroizing::new(p),
        // SoftHSM2 reports a GCM tag that does not match as a general error.
        Err(Pk::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::GeneralError, _)) => {
            return Err(Error::Decrypt { path: path.clone(), label: c.wrapping_key.clone() });
        }
        Err(source) => return Err(Error::Token { what: "decrypt the wrapped key", source }),
    };
    let key = Key::from_secret(plain).map_err(|e| bad(format!("decrypts to no key: {e}")))?;
    let got = pseudonym::fingerprint(&key);
    if got != wrapped.fingerprint {
        return Err(Error::Fingerprint { path: path.clone(), want: wrapped.fingerprint, got });
    }
    Ok(key)
}

/// What `ladu key wrap` did.
#[derive(Debug, Clone)]
pub struct WrapOutcome {
    pub fingerprint: String,
    pub wrapped_key_file: PathBuf,
    /// Was the wrapping key made on the token now?
    pub created_wrapping_key: bool,
}

/// Encrypt `key` under the token's wrapping key (made first when `create`), write the wrapped key file, and check it decrypts.
pub fn wrap(c: &KeyCustody, key: &Key, create: bool) -> Result<WrapOutcome> {
    let path = &c.wrapped_key_file;
    if path.exists() {
        return Err(Error::WrappedKeyExists { path: path.clone() });
    }
    let token = Token::open(c, create)?;
    let handle = match (token.find(&c.wrapping_key)?, create) {
        (Some(_), true) => {
            return Err(Error::WrappingKeyExists { label: c.wrapping_key.clone(), token: c.token.clone() });
        }
        (Some(h), false) => h,
        (None, true) => token.create(&c.wrapping_key)?,
        (None, false) => return Err(Error::NoWrappingKey { label: c.wrapping_key.clone(), token: c.token.clone() }),
    };
    let fingerprint = pseudonym::fingerprint(key);
    let mut iv = [0u8; IV_BYTES];
    getrandom::fill(&mut iv).map_err(|e| Error::File(KeyError::Random(e.to_string())))?;
    let iv_hex = crate::hex::encode(&iv);
    let aad = aad(&fingerprint);
    let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(token_err("set up AES-GCM"))?;
    let ciphertext = token
        .session
        .encrypt(&Mechanism::AesGcm(params), handle, key.secret_bytes())
        .map_err(token_err("encrypt the key"))?;
    drop(token);
    let wrapped = Wrapped {
        format: FORMAT.to_owned(),
        token: c.token.clone(),
        wrapping_key: c.wrapping_key.clone(),
        mechanism: "CKM_AES_GCM".to_owned(),
        fingerprint: fingerprint.clone(),
        iv: iv_hex,
        ciphertext: crate::hex::encode(&ciphertext),
    };
    let body = format!(
        "# The ladu warehouse key, encrypted under the key `{}` of the PKCS#11 token `{}`.\n# Useless without the token; back it up with the token's own backup.\n{}",
        c.wrapping_key,
        c.token,
        toml::to_string(&wrapped).map_err(|e| Error::Wrapped { path: path.clone(), problem: e.to_string() })?
    );
    write_new(path, body.as_bytes())?;
    // Read back through the token: a file that would not load is never left as the key.
    if let Err(e) = unwrap(c) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(WrapOutcome { fingerprint, wrapped_key_file: path.clone(), created_wrapping_key: create })
}

/// Write a new file of mode 0600, durably; never replaces one.
fn write_new(path: &Path, body: &[u8]) -> Result<()> {
    keyfile::write_private(path, body).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::WrappedKeyExists { path: path.to_owned() },
        _ => Error::Wrapped { path: path.to_owned(), problem: e.to_string() },
    })
}
