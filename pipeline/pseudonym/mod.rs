//! Keyed HMAC pseudonyms: the exact construction of DESIGN.md, with no I/O.
//!
//! `P(kind, id) = hex(HMAC-SHA256(K, "ladu:v1:" ‖ kind ‖ ":" ‖ id)[0..16])`.
//! The key's inner and outer HMAC states and the `ladu:v1:<kind>:` prefix
//! are absorbed once per kind; each identifier then costs two SHA-256
//! compressions (three if prefix and identifier pass 55 bytes) on stack
//! buffers, with no heap allocation, and the ingest has a column's
//! identifiers hashed two at a time ([`sha_ni`]). The `hmac` crate stays the
//! reference: tests check this against it and against Python's `hmac`.

pub mod isikukood;
pub mod key;
pub mod sha_ni;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sha2::block_api::compress256;
use zeroize::{Zeroize, Zeroizing};

pub use key::{Key, KeyFormat, Keys};

type HmacSha256 = Hmac<Sha256>;

/// Length of a pseudonym in hex characters (16 bytes of the HMAC).
pub const PSEUDONYM_LEN: usize = 32;

/// Version tag of the pseudonym construction; part of every HMAC message.
const DOMAIN: &str = "ladu:v1:";
/// Start of the HMAC message of a release pseudonym.
const RELEASE_DOMAIN: &str = "ladu:release:";
/// Start of the HMAC message of a later key generation's over-encryption.
const REKEY_DOMAIN: &str = "ladu:rekey:";
/// The `kind` under which ladu's records of releases are over-encrypted.
pub const RELEASE_KIND: &str = "release";

/// A pseudonym as 32 lowercase hex characters, kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym([u8; PSEUDONYM_LEN]);

impl Pseudonym {
    pub fn as_str(&self) -> &str {
        // Only ever filled with ASCII hex digits by `crate::hex`.
        std::str::from_utf8(&self.0).expect("pseudonym is ASCII hex")
    }
}

impl std::fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pseudonym({})", self.as_str())
    }
}

/// Pseudonymises identifiers of one kind (`isikukood`, `worker_code`, …).
///
/// Cheap to clone; share one per kind across threads.
#[derive(Clone)]
pub struct Pseudonymiser {
    /// SHA-256 state after `K ^ ipad` and the whole blocks of the prefix.
    inner: [u32; 8],
    /// SHA-256 state after `K ^ opad`.
    outer: [u32; 8],
    /// The prefix's bytes past its whole blocks.
    rest: [u8; 64],
    rest_len: usize,
    /// Bytes absorbed into `inner`: the key block and the prefix's whole blocks.
    absorbed: u64,
    /// Later key generations: each over-encrypts the hex of the pseudonym before it.
    then: Vec<Pseudonymiser>,
}

/// The HMAC midstates compute every pseudonym of their kind: wiped when dropped.
impl Drop for Pseudonymiser {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// Shows nothing: the states are derived from the key.
impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser")
    }
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

impl Pseudonymiser {
    /// Pseudonyms of identifiers of `kind`: `P(kind, id)`, under one key.
    pub fn new(key: &Key, kind: &str) -> Self {
        Self::with_prefix(key, &[DOMAIN.as_bytes(), kind.as_bytes(), b":"].concat())
    }

    /// Pseudonyms of identifiers of `kind` under every generation of the key
    /// (DESIGN.md "Key generations"): `P₁ = P(kind, id)` under the first, then
    /// `Pₙ = hex(HMAC-SHA256(Kₙ, "ladu:rekey:" ‖ kind ‖ ":" ‖ Pₙ₋₁)[0..16])`.
    pub fn chained(keys: &Keys, kind: &str) -> Self {
        Self::generations(keys.all(), kind)
    }

    /// As [`Pseudonymiser::chained`], through the first `keys.len()` generations only.
    pub fn generations(keys: &[Key], kind: &str) -> Self {
        let (first, later) = keys.split_first().expect("at least one generation");
        let mut p = Self::new(first, kind);
        p.then = later.iter().map(|k| Self::rekey(k, kind)).collect();
        p
    }

    /// One generation's over-encryption of pseudonyms of `kind`: given `Pₙ₋₁`, `Pₙ`.
    pub fn rekey(key: &Key, kind: &str) -> Self {
        Self::with_prefix(key, &[REKEY_DOMAIN.as_bytes(), kind.as_bytes(), b":"].concat())
    }

    /// The chain of over-encryptions by `keys` (each in turn): given a pseudonym of generation `g`, that of `g + keys.len()`.
    pub fn rekey_chain(keys: &[Key], kind: &str) -> Option<Self> {
        let (first, rest) = keys.split_first()?;
        let mut step = Self::rekey(first, kind);
        step.then = rest.iter().map(|k| Self::rekey(k, kind)).collect();
        Some(step)
    }

    /// Release pseudonyms for `recipient`: given a warehouse pseudonym `P`,
    /// `hex(HMAC-SHA256(K, "ladu:release:" ‖ r ‖ ":" ‖ P)[0..16])`, as [`release_pseudonym`].
    pub fn for_release(key: &Key, recipient: &str) -> Self {
        Self::with_prefix(key, &[RELEASE_DOMAIN.as_bytes(), recipient.as_bytes(), b":"].concat())
    }

    /// HMAC over `prefix ‖ id`, the prefix absorbed once.
    fn with_prefix(key: &Key, prefix: &[u8]) -> Self {
        let block = key.hmac_block();
        let state_after = |pad: u8| {
            let mut padded = Zeroizing::new(*block);
            padded.iter_mut().for_each(|b| *b ^= pad);
            let mut state = SHA256_IV;
            compress256(&mut state, std::slice::from_ref(&*padded));
            state
        };
        let (mut inner, outer) = (state_after(0x36), state_after(0x5c));
        let whole = prefix.len() / 64 * 64;
        for b in prefix[..whole].chunks_exact(64) {
            compress256(&mut inner, &[b.try_into().expect("64-byte chunk")]);
        }
        let mut rest = [0u8; 64];
        rest[..prefix.len() - whole].copy_from_slice(&prefix[whole..]);
        Self { inner, outer, rest, rest_len: prefix.len() - whole, absorbed: 64 + whole as u64, then: Vec::new() }
    }

    /// The pseudonym of an already normalised identifier.
    pub fn pseudonym(&self, id: &[u8]) -> Pseudonym {
        let mut out = [0u8; PSEUDONYM_LEN];
        crate::hex::encode_into(&self.digest(id), &mut out);
        Pseudonym(out)
    }

    /// The pseudonym's 16 bytes before hex encoding. Byte order and the
    /// order of the hex text agree, so these sort as the pseudonyms do; the
    /// ingest carries them raw and the warehouse writer encodes them.
    pub fn digest(&self, id: &[u8]) -> [u8; PSEUDONYM_LEN / 2] {
        self.over_encrypt(self.first_digest(id))
    }

    /// `digest` through the later generations.
    fn over_encrypt(&self, mut digest: [u8; PSEUDONYM_LEN / 2]) -> [u8; PSEUDONYM_LEN / 2] {
        for step in &self.then {
            digest = step.first_digest(&crate::hex::encode16(&digest));
        }
        digest
    }

    /// This generation's digest alone.
    fn first_digest(&self, id: &[u8]) -> [u8; PSEUDONYM_LEN / 2] {
        let mut state = self.inner;
        let mut block = self.rest;
        let mut fill = self.rest_len;
        let total = self.absorbed + (self.rest_len + id.len()) as u64;
        let mut id = id;
        while fill + id.len() >= 64 {
            let (head, tail) = id.split_at(64 - fill);
            block[fill..].copy_from_slice(head);
            compress256(&mut state, &[block]);
            id = tail;
            fill = 0;
        }
        block[fill..fill + id.len()].copy_from_slice(id);
        finish(&mut state, &mut block, fill + id.len(), total);
        let mut outer = self.outer;
        compress256(&mut outer, &[outer_block(&state)]);
        truncated(&outer)
    }

    /// The digests (see `digest`) of `ids`, in order: two at a time on the
    /// processor's SHA extensions ([`sha_ni`]), which nearly halves the cost
    /// of each.
    pub fn digests(&self, ids: &[&str]) -> Vec<[u8; PSEUDONYM_LEN / 2]> {
        let mut out = Vec::with_capacity(ids.len());
        let mut rest = ids;
        if sha_ni::available() {
            let mut pairs = ids.chunks_exact(2);
            for pair in &mut pairs {
                let (a, b) = (pair[0].as_bytes(), pair[1].as_bytes());
                match (self.inner_block(a), self.inner_block(b)) {
                    (Some(x), Some(y)) => {
                        let (mut sx, mut sy) = (self.inner, self.inner);
                        sha_ni::compress2([&mut sx, &mut sy], [&x, &y]);
                        let (mut ox, mut oy) = (self.outer, self.outer);
                        sha_ni::compress2([&mut ox, &mut oy], [&outer_block(&sx), &outer_block(&sy)]);
                        out.extend([truncated(&ox), truncated(&oy)]);
                    }
                    _ => out.extend([self.first_digest(a), self.first_digest(b)]),
                }
            }
            rest = pairs.remainder();
        }
        out.extend(rest.iter().map(|id| self.first_digest(id.as_bytes())));
        if !self.then.is_empty() {
            out.iter_mut().for_each(|d| *d = self.over_encrypt(*d));
        }
        out
    }

    /// The inner HMAC's last block for `id`, when prefix rest, identifier
    /// and padding fit in one.
    fn inner_block(&self, id: &[u8]) -> Option<[u8; 64]> {
        let fill = self.rest_len + id.len();
        if fill > 55 {
            return None;
        }
        // `rest` is zero past the prefix, as padding needs.
        let mut block = self.rest;
        block[self.rest_len..fill].copy_from_slice(id);
        block[fill] = 0x80;
        block[56..].copy_from_slice(&((self.absorbed + fill as u64) * 8).to_be_bytes());
        Some(block)
    }
}

/// The outer HMAC's one block: the inner digest of `state`, padded.
fn outer_block(state: &[u32; 8]) -> [u8; 64] {
    let mut block = [0u8; 64];
    for (i, w) in state.iter().enumerate() {
        block[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
    block[32] = 0x80;
    block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
    block
}

/// The first 16 bytes of the digest in `state`.
fn truncated(state: &[u32; 8]) -> [u8; PSEUDONYM_LEN / 2] {
    let mut digest = [0u8; PSEUDONYM_LEN / 2];
    for (i, w) in state[..PSEUDONYM_LEN / 8].iter().enumerate() {
        digest[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
    digest
}

/// SHA-256 padding of the last `fill` bytes of a message of `total` bytes
/// held in `block`, and the final compression(s).
fn finish(state: &mut [u32; 8], block: &mut [u8; 64], fill: usize, total: u64) {
    block[fill] = 0x80;
    block[fill + 1..].fill(0);
    if fill + 1 > 56 {
        compress256(state, &[*block]);
        block.fill(0);
    }
    block[56..].copy_from_slice(&(total * 8).to_be_bytes());
    compress256(state, &[*block]);
}

/// `hex(HMAC-SHA256(K, "ladu:fingerprint")[0..8])`: names a key without revealing it.
pub fn fingerprint(key: &Key) -> String {
    let mut mac = key.hmac();
    mac.update(b"ladu:fingerprint");
    let digest = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    crate::hex::encode_into(&digest[..8], &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The pseudonym released to recipient `recipient` for warehouse pseudonym `p`:
/// `hex(HMAC-SHA256(K, "ladu:release:" ‖ r ‖ ":" ‖ P)[0..16])`.
pub fn release_pseudonym(key: &Key, recipient: &str, p: &str) -> Pseudonym {
    let mut mac = key.hmac();
    mac.update(RELEASE_DOMAIN.as_bytes());
    mac.update(recipient.as_bytes());
    mac.update(b":");
    mac.update(p.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = [0u8; PSEUDONYM_LEN];
    crate::hex::encode_into(&digest[..PSEUDONYM_LEN / 2], &mut out);
    Pseudonym(out)
}

/// Is `s` a pseudonym as ladu writes them: 32 lowercase hex digits?
pub fn is_pseudonym(s: &[u8]) -> bool {
    s.len() == PSEUDONYM_LEN && s.as_chunks::<8>().0.iter().all(|eight| all_hex(u64::from_be_bytes(*eight)))
}

/// Are all eight bytes of `x` lowercase hex digits? Eight at a time (a table
/// lookup per byte was a tenth of a grouped query's time).
fn all_hex(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // For bytes below 0x80, adding 0x80 - lo sets a byte's high bit when it is
    // at least lo, and adding 0x7f - hi when it is above hi; no sum carries out.
    let within = |lo: u8, hi: u8| (x + ONES * u64::from(0x80 - lo)) & !(x + ONES * u64::from(0x7f - hi));
    x & HIGH == 0 && (within(b'0', b'9') | within(b'a', b'f')) & HIGH == HIGH
}

/// Zero for the bytes `0`-`9` and `a`-`f`, a set bit for every other.
static NOT_HEX: [u8; 256] = {
    let mut table = [0x80; 256];
    let mut c = 0;
    while c < 256 {
        if matches!(c as u8, b'0'..=b'9' | b'a'..=b'f') {
            table[c] = 0;
        }
        c += 1;
    }
    table
};

/// Does `text` hold a pseudonym anywhere: a run of 32 or more lowercase hex digits?
pub fn contains_pseudonym(text: &[u8]) -> bool {
    let mut run = 0;
    for &c in text {
        run = if NOT_HEX[usize::from(c)] == 0 { run + 1 } else { 0 };
        if run >= PSEUDONYM_LEN {
            return true;
        }
    }
    false
}

/// A pseudonym's 32 hex digits as the number they spell (which sorts as the text does).
pub fn pseudonym_bits(s: &[u8]) -> Option<u128> {
    if s.len() != PSEUDONYM_LEN {
        return None;
    }
    let (eights, _) = s.as_chunks::<8>();
    eights.iter().try_fold(0, |v, eight| Some(v << 32 | u128::from(eight_digits(eight)?)))
}

/// The high (first 16 digits) or low half of [`pseudonym_bits`], reading only those digits; `None`
/// if `s` is not 32 characters long or those digits are not lowercase hex.
pub fn pseudonym_half_bits(s: &[u8], high: bool) -> Option<u64> {
    if s.len() != PSEUDONYM_LEN {
        return None;
    }
    let (eights, _) = s.as_chunks::<8>();
    let (first, second) = if high { (&eights[0], &eights[1]) } else { (&eights[2], &eights[3]) };
    Some(u64::from(eight_digits(first)?) << 32 | u64::from(eight_digits(second)?))
}

/// The number eight lowercase hex digits spell, all at once.
#[inline]
fn eight_digits(eight: &[u8; 8]) -> Option<u32> {
    let x = u64::from_be_bytes(*eight);
    if !all_hex(x) {
        return None;
    }
    // A digit's value: its low nibble, plus 9 for a-f (whose bit 6 is set).
    let n = (x & 0x0F0F_0F0F_0F0F_0F0F) + 9 * ((x >> 6) & 0x0101_0101_0101_0101);
    // Two digits' nibbles into one byte per 16-bit lane, then the four bytes together.
    let m = (n >> 4 & 0x00F0_00F0_00F0_00F0) | (n & 0x000F_000F_000F_000F);
    let m = (m | m >> 8) & 0x0000_FFFF_0000_FFFF;
    Some(((m | m >> 16) & 0xFFFF_FFFF) as u32)
}

/// The pseudonym whose hex digits spell `bits`: the inverse of [`pseudonym_bits`].
pub fn pseudonym_from_bits(bits: u128) -> Pseudonym {
    let mut out = [0u8; PSEUDONYM_LEN];
    crate::hex::encode_into(&bits.to_be_bytes(), &mut out);
    Pseudonym(out)
}

/// The keyed HMAC for `key`; used by this module and by `key` only.
fn keyed(bytes: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; the error branch cannot be taken.
    <HmacSha256 as KeyInit>::new_from_slice(bytes).expect("HMAC accepts any key length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(hex: &str) -> Key {
        Key::from_hex(hex).unwrap()
    }

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    /// RFC 4231 test cases 1, 2 and 6 (HMAC-SHA-256), through the same HMAC
    /// construction the pseudonymiser uses.
    #[test]
    fn rfc4231_vectors() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (k, msg, want) in cases {
            let mut mac = keyed(k);
            mac.update(msg);
            let digest = mac.finalize().into_bytes();
            let mut out = [0u8; 64];
            crate::hex::encode_into(&digest, &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), want);
        }
    }

    /// Values recomputed with Python:
    /// `hmac.new(bytes.fromhex(KEY_HEX), b"ladu:v1:isikukood:38001010009", hashlib.sha256).hexdigest()[:32]`.
    #[test]
    fn known_pseudonyms() {
        let k = key(KEY_HEX);
        let p = Pseudonymiser::new(&k, "isikukood").pseudonym(b"38001010009");
        assert_eq!(p.as_str(), "bbb746783c404ce46f9366e761058f6d");
        assert_eq!(fingerprint(&k), "56273df95b47f1c7");
    }

    #[test]
    fn another_key_gives_unrelated_pseudonyms() {
        let a = Pseudonymiser::new(&key(KEY_HEX), "isikukood");
        let other = KEY_HEX.replace("1f", "20");
        let b = Pseudonymiser::new(&key(&other), "isikukood");
        let pa = a.pseudonym(b"38001010009");
        let pb = b.pseudonym(b"38001010009");
        assert_ne!(pa, pb);
        // Unrelated: about half of the bits differ, none of the hex positions
        // agree systematically.
        let same = pa.as_str().bytes().zip(pb.as_str().bytes()).filter(|(x, y)| x == y).count();
        assert!(same < 12, "{same} of 32 hex digits agree");
    }

    #[test]
    fn kinds_are_separated() {
        let k = key(KEY_HEX);
        let a = Pseudonymiser::new(&k, "isikukood").pseudonym(b"D12345");
        let b = Pseudonymiser::new(&k, "worker_code").pseudonym(b"D12345");
        assert_ne!(a, b);
    }

    #[test]
    fn release_pseudonyms_differ_per_recipient() {
        let k = key(KEY_HEX);
        let p = Pseudonymiser::new(&k, "isikukood").pseudonym(b"38001010009");
        let a = release_pseudonym(&k, "tartu-uni", p.as_str());
        let b = release_pseudonym(&k, "tai", p.as_str());
        assert_ne!(a, b);
        assert_ne!(a, p);
        // Python: hmac.new(bytes.fromhex(KEY_HEX), b"ladu:release:tai:" + P, hashlib.sha256).hexdigest()[:32]
        assert_eq!(b.as_str(), "7deca68210bb77507e2081bbca1296d1");
    }

    /// The reference construction, through the `hmac` crate.
    fn reference(k: &Key, kind: &str, id: &[u8]) -> String {
        let mut mac = k.hmac();
        mac.update(format!("{DOMAIN}{kind}:").as_bytes());
        mac.update(id);
        let digest = mac.finalize().into_bytes();
        let mut out = [0u8; PSEUDONYM_LEN];
        crate::hex::encode_into(&digest[..PSEUDONYM_LEN / 2], &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// A later generation over-encrypts the hex of the one before, through the `hmac` crate.
    fn reference_rekey(k: &Key, kind: &str, p: &str) -> String {
        let mut mac = k.hmac();
        mac.update(format!("{REKEY_DOMAIN}{kind}:").as_bytes());
        mac.update(p.as_bytes());
        crate::hex::encode(&mac.finalize().into_bytes()[..PSEUDONYM_LEN / 2])
    }

    proptest! {
        #[test]
        fn generations_chain_as_the_design_says(
            ids in proptest::collection::vec("[0-9A-Za-z ]{0,60}", 1..9),
            generations in 1usize..4,
        ) {
            let hexes = [KEY_HEX.to_owned(), KEY_HEX.replace('0', "f"), KEY_HEX.replace('1', "e")];
            let keys = Keys::new(key(&hexes[0]), hexes[1..generations].iter().map(|h| key(h)).collect());
            let chained = Pseudonymiser::chained(&keys, "isikukood");
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let digests = chained.digests(&refs);
            for (id, digest) in ids.iter().zip(&digests) {
                let mut want = reference(keys.first(), "isikukood", id.as_bytes());
                for k in &keys.all()[1..] {
                    want = reference_rekey(k, "isikukood", &want);
                }
                let made = chained.pseudonym(id.as_bytes());
                prop_assert_eq!(made.as_str(), want.as_str());
                prop_assert_eq!(crate::hex::encode(digest), want.clone());
                // A warehouse of the first generation, over-encrypted, holds what a chained ingest makes.
                let first = Pseudonymiser::new(keys.first(), "isikukood").pseudonym(id.as_bytes());
                let rekeyed = Pseudonymiser::rekey_chain(&keys.all()[1..], "isikukood")
                    .map_or_else(|| first.as_str().to_owned(), |r| r.pseudonym(first.as_str().as_bytes()).as_str().to_owned());
                prop_assert_eq!(rekeyed, want);
            }
        }
    }

    #[test]
    fn only_lowercase_hex_of_32_digits_is_a_pseudonym() {
        for not in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdeg0123456789abcdef",
            "0123456789abcdef0123456789abcd\u{e9}",
        ] {
            assert!(!is_pseudonym(not.as_bytes()), "{not}");
            assert_eq!(pseudonym_bits(not.as_bytes()), None, "{not}");
            let halves = (pseudonym_half_bits(not.as_bytes(), true), pseudonym_half_bits(not.as_bytes(), false));
            assert!(halves.0.is_none() || halves.1.is_none(), "{not}");
        }
        assert!(is_pseudonym(b"0123456789abcdef0123456789abcdef"));
    }

    /// Every byte in every position of eight: a digit exactly when the table says so.
    #[test]
    fn all_hex_agrees_with_the_table_for_every_byte() {
        for c in 0..=255u8 {
            for at in 0..8 {
                let mut eight = *b"09af09af";
                eight[at] = c;
                let expected = eight.iter().all(|&b| NOT_HEX[usize::from(b)] == 0);
                assert_eq!(all_hex(u64::from_be_bytes(eight)), expected, "byte {c:#04x} at {at}");
            }
        }
    }

    proptest! {
        /// Any 32 bytes: a pseudonym exactly when every byte is a lowercase hex digit.
        #[test]
        fn is_pseudonym_agrees_with_the_table(s in prop::collection::vec(prop::sample::select(b"09afg/:`AF\x80\xff".to_vec()), 32)) {
            let expected = s.iter().all(|&b| NOT_HEX[usize::from(b)] == 0);
            prop_assert_eq!(is_pseudonym(&s), expected);
            prop_assert_eq!(pseudonym_bits(&s).is_some(), expected);
            let halves = pseudonym_half_bits(&s, true).is_some() && pseudonym_half_bits(&s, false).is_some();
            prop_assert_eq!(halves, expected);
        }

        #[test]
        fn pseudonym_bits_are_the_number_the_digits_spell(v in any::<u128>()) {
            let hex = format!("{v:032x}");
            prop_assert_eq!(pseudonym_bits(hex.as_bytes()), Some(v));
            prop_assert_eq!(pseudonym_half_bits(hex.as_bytes(), true), Some((v >> 64) as u64));
            prop_assert_eq!(pseudonym_half_bits(hex.as_bytes(), false), Some(v as u64));
            prop_assert_eq!(pseudonym_from_bits(v).as_str().to_owned(), hex);
        }
    }

    proptest! {
        /// Every split of prefix and identifier over SHA-256 blocks, and keys
        /// longer than a block, agree with the `hmac` crate.
        #[test]
        fn agrees_with_the_hmac_crate(
            key_bytes in proptest::collection::vec(any::<u8>(), 32..100),
            kind in "[a-z_]{1,140}",
            id in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let k = key(&key_bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
            let ps = Pseudonymiser::new(&k, &kind);
            let p = ps.pseudonym(&id);
            prop_assert_eq!(p.as_str(), reference(&k, &kind, &id));
        }

        /// In batches, two at a time: odd and even counts, identifiers that
        /// fit one block next to ones that do not, any kind and key.
        #[test]
        fn batches_agree_with_the_hmac_crate(
            key_bytes in proptest::collection::vec(any::<u8>(), 32..100),
            kind in "[a-z_]{1,70}",
            ids in proptest::collection::vec("[0-9A-Za-zõ' ]{0,60}", 0..9),
        ) {
            let k = key(&key_bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
            let ps = Pseudonymiser::new(&k, &kind);
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let got: Vec<String> = ps.digests(&ids).iter().map(|d| d.iter().map(|b| format!("{b:02x}")).collect()).collect();
            let expected: Vec<String> = ids.iter().map(|id| reference(&k, &kind, id.as_bytes())).collect();
            prop_assert_eq!(got, expected);
        }

        /// The release pseudonymiser agrees with the `hmac` crate's construction.
        #[test]
        fn release_pseudonymiser_agrees(recipient in "[a-z0-9._-]{1,60}", id in "[0-9]{11}") {
            let k = key(KEY_HEX);
            let p = Pseudonymiser::new(&k, "isikukood").pseudonym(id.as_bytes());
            let fast = Pseudonymiser::for_release(&k, &recipient).pseudonym(p.as_str().as_bytes());
            prop_assert_eq!(fast, release_pseudonym(&k, &recipient, p.as_str()));
        }

        #[test]
        fn deterministic_hex_and_never_the_input(id in "[0-9A-Za-z]{1,40}") {
            let k = key(KEY_HEX);
            let ps = Pseudonymiser::new(&k, "isikukood");
            let a = ps.pseudonym(id.as_bytes());
            let b = ps.clone().pseudonym(id.as_bytes());
            prop_assert_eq!(a, b);
            prop_assert_eq!(a.as_str().len(), PSEUDONYM_LEN);
            prop_assert!(a.as_str().bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
            prop_assert_ne!(a.as_str(), id.as_str());
            prop_assert!(!a.as_str().contains(id.as_str()) || id.len() < 4);
        }

        #[test]
        fn distinct_ids_distinct_pseudonyms(a in "[0-9]{11}", b in "[0-9]{11}") {
            prop_assume!(a != b);
            let ps = Pseudonymiser::new(&key(KEY_HEX), "isikukood");
            prop_assert_ne!(ps.pseudonym(a.as_bytes()), ps.pseudonym(b.as_bytes()));
        }
    }
}
