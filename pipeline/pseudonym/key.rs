//! The pseudonymisation key in memory: parsed from its hex text, wiped when dropped.
//!
//! Reading and writing the key file is [`crate::keyfile`]'s; this module does no I/O.

use hmac::Hmac;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Fewest key bytes accepted (64 hex digits).
pub const MIN_KEY_BYTES: usize = 32;

/// Why a key's text was refused. Never carries any byte of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormat {
    #[error("it must hold one line of hex digits; {0}")]
    NotHex(&'static str),
    #[error(
        "it holds {0} bytes; at least {MIN_KEY_BYTES} bytes (64 hex digits) are needed: make a new key with `ladu keygen`"
    )]
    TooShort(usize),
}

/// A loaded key. Its bytes never leave this type except into an HMAC, and
/// are overwritten with zeros when it is dropped.
pub struct Key {
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

impl Key {
    /// A key from the text of a key file: one line of hex digits, at least [`MIN_KEY_BYTES`] bytes.
    pub fn parse(text: &[u8]) -> Result<Key, KeyFormat> {
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.contains(&b'\n') {
            return Err(KeyFormat::NotHex("it holds more than one line"));
        }
        if body.is_empty() {
            return Err(KeyFormat::NotHex("it is empty"));
        }
        if !body.iter().all(u8::is_ascii_hexdigit) {
            return Err(KeyFormat::NotHex("it holds a character that is not a hex digit"));
        }
        if !body.len().is_multiple_of(2) {
            return Err(KeyFormat::NotHex("it holds an odd number of hex digits"));
        }
        // Filled in place: no copy of the key is left in a reallocated buffer.
        let mut bytes = Zeroizing::new(Vec::with_capacity(body.len() / 2));
        bytes.extend(body.as_chunks::<2>().0.iter().map(|[hi, lo]| (nibble(*hi) << 4) | nibble(*lo)));
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyFormat::TooShort(bytes.len()));
        }
        Ok(Key { bytes })
    }

    /// A key from its bytes (decrypted by a token), at least [`MIN_KEY_BYTES`] of them.
    pub fn from_secret(bytes: Zeroizing<Vec<u8>>) -> Result<Key, KeyFormat> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyFormat::TooShort(bytes.len()));
        }
        Ok(Key { bytes })
    }

    /// A key from hex text (tests and tools; files go through [`crate::keyfile::load`]).
    pub fn from_hex(text: &str) -> Result<Key, KeyFormat> {
        Self::parse(text.as_bytes())
    }

    /// The key's bytes, for `ladu key split` alone (which writes them as shares).
    pub(crate) fn secret_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn hmac(&self) -> Hmac<Sha256> {
        super::keyed(&self.bytes)
    }

    /// The key as HMAC-SHA256 uses it: hashed if longer than a block, then
    /// zero-padded to one 64-byte block (RFC 2104).
    pub(super) fn hmac_block(&self) -> Zeroizing<[u8; 64]> {
        let mut block = Zeroizing::new([0u8; 64]);
        if self.bytes.len() > 64 {
            let mut digest = Sha256::digest(self.bytes.as_slice());
            block[..32].copy_from_slice(&digest);
            digest.as_mut_slice().zeroize();
        } else {
            block[..self.bytes.len()].copy_from_slice(&self.bytes);
        }
        block
    }
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// The key's generations, oldest first (DESIGN.md "Key generations"): the
/// first makes each pseudonym, every later one over-encrypts it.
#[derive(Debug)]
pub struct Keys {
    keys: Vec<Key>,
}

impl Keys {
    /// One generation.
    pub fn single(key: Key) -> Keys {
        Keys { keys: vec![key] }
    }

    /// The first generation and the later ones, oldest first.
    pub fn new(first: Key, later: Vec<Key>) -> Keys {
        let mut keys = vec![first];
        keys.extend(later);
        Keys { keys }
    }

    pub fn first(&self) -> &Key {
        &self.keys[0]
    }

    /// The newest generation: release pseudonyms are made with it.
    pub fn newest(&self) -> &Key {
        self.keys.last().expect("at least one generation")
    }

    pub fn all(&self) -> &[Key] {
        &self.keys
    }

    /// Add a generation (a rekey).
    pub fn push(&mut self, key: Key) {
        self.keys.push(key);
    }

    /// Each generation's fingerprint, oldest first.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(super::fingerprint).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_text_has_its_own_error() {
        let good = "ab".repeat(32);
        assert_eq!(Key::from_hex(&"ab".repeat(31)).unwrap_err(), KeyFormat::TooShort(31));
        assert!(matches!(Key::from_hex(&format!("{good}zz")), Err(KeyFormat::NotHex(_))));
        assert!(matches!(Key::from_hex(&format!("{good}\n{good}\n")), Err(KeyFormat::NotHex(_))));
        assert!(matches!(Key::from_hex(&format!("{good}a")), Err(KeyFormat::NotHex(_))));
        assert!(matches!(Key::from_hex(""), Err(KeyFormat::NotHex(_))));
        Key::from_hex(&format!("{good}\r\n")).unwrap();
        Key::from_hex(&"AB".repeat(40)).unwrap();
    }

    #[test]
    fn neither_errors_nor_debug_show_the_key() {
        let secret = "c0ffee".repeat(11);
        let msg = Key::from_hex(&format!("{secret}x")).unwrap_err().to_string();
        assert!(!msg.contains("c0ffee"), "{msg}");
        let key = Key::from_hex(&secret[..64]).unwrap();
        assert!(!format!("{key:?}").contains("c0ffee"));
    }
}
