//! Lowercase hex: the one encoder (and decoder) for digests, pseudonyms and keys.

use arrow::array::{Array, BooleanBufferBuilder, FixedSizeBinaryArray, OffsetSizeTrait};
use arrow::buffer::{NullBuffer, OffsetBuffer};

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

/// The hex text of 16-byte values (pseudonyms) picked from several arrays, as the parts of a text array.
pub struct Gathered {
    /// Each picked value's 32 digits, one after another; a null takes none.
    pub text: Vec<u8>,
    /// Where each row's text ends, after a leading 0 (a null's is empty).
    pub ends: Vec<usize>,
    /// Which rows are valid, where any is not.
    pub nulls: Option<NullBuffer>,
}

impl Gathered {
    /// `ends` as the offsets of a string array; `None` where the text is too long for `O`.
    pub fn offsets<O: OffsetSizeTrait>(&self) -> Option<OffsetBuffer<O>> {
        let offsets = self.ends.iter().map(|&end| O::from_usize(end)).collect::<Option<Vec<O>>>()?;
        Some(OffsetBuffer::new(offsets.into()))
    }
}

/// The hex of the 16-byte values that `rows` picks (array, row) from `sources`; `None` if a source
/// holds values of another width.
pub fn gather16(sources: &[&FixedSizeBinaryArray], rows: &[(usize, usize)]) -> Option<Gathered> {
    let values: Vec<&[[u8; 16]]> = (sources.iter())
        .map(|s| (s.value_length() == 16).then(|| s.value_data().as_chunks::<16>().0))
        .collect::<Option<_>>()?;
    // First only the random reads, in a loop small enough that many of them
    // are in flight at once; then the encoding, reading in order.
    let picked: Vec<[u8; 16]> = rows.iter().map(|&(b, r)| values[b][r]).collect();
    let any_null = sources.iter().any(|s| s.null_count() > 0);
    let mut valid = any_null.then(|| BooleanBufferBuilder::new(rows.len()));
    let mut text = Vec::with_capacity(rows.len() * 32);
    let mut ends = Vec::with_capacity(rows.len() + 1);
    ends.push(0);
    for (bytes, &(b, r)) in picked.iter().zip(rows) {
        let is_valid = !any_null || sources[b].is_valid(r);
        if let Some(valid) = valid.as_mut() {
            valid.append(is_valid);
        }
        if is_valid {
            text.extend_from_slice(&encode16(bytes));
        }
        ends.push(text.len());
    }
    let nulls = valid.map(|mut v| NullBuffer::new(v.finish())).filter(|n| n.null_count() > 0);
    Some(Gathered { text, ends, nulls })
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
