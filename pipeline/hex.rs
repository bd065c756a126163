//! Lowercase hex: the one encoder (and decoder) for digests, pseudonyms and keys.

/// Each byte's two hex digits.
const PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 0x0f]];
        i += 1;
    }
    t
};

/// Write the hex of `bytes` into the start of `out`, which holds at least twice as many bytes.
pub fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, &b) in out.as_chunks_mut::<2>().0.iter_mut().zip(bytes) {
        *pair = PAIRS[usize::from(b)];
    }
}

/// The hex of 16 bytes (a pseudonym), on the stack.
pub fn encode16(bytes: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    encode_into(bytes, &mut out);
    out
}

/// The bytes of hex text (either case), or `None` if it is not whole pairs of hex digits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

/// The hex of `bytes` as text.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    encode_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_format(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(super::encode(&bytes), expected.clone());
            if let Ok(sixteen) = <[u8; 16]>::try_from(bytes.as_slice()) {
                let hex = super::encode16(&sixteen);
                prop_assert_eq!(hex.as_slice(), expected.as_bytes());
            }
        }
    }
}
