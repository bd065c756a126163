//! Two SHA-256 compressions at once on the x86 SHA extensions.
//!
//! One compression is a chain of dependent `sha256rnds2` instructions, so a
//! single message leaves the SHA unit waiting on its own results; the two
//! chains of two independent messages interleave and take little longer
//! than one. The pseudonymiser uses this for pairs of identifiers; anywhere
//! else (or on a processor without the extensions) `sha2` does the work.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this processor has what [`compress2`] needs.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Compress `blocks[i]` into `states[i]` for both `i`, as
/// `sha2::block_api::compress256` does one at a time.
pub fn compress2(states: [&mut [u32; 8]; 2], blocks: [&[u8; 64]; 2]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the processor has the features the function is compiled for.
        unsafe { compress2_ni(states, blocks) };
        return;
    }
    for (state, block) in states.into_iter().zip(blocks) {
        sha2::block_api::compress256(state, &[*block]);
    }
}

/// SHA-256 round constants (FIPS 180-4, 4.2.2).
#[cfg(target_arch = "x86_64")]
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// The two compressions, each instruction of one message next to its twin
/// of the other (Intel's SHA extensions reference, two lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn compress2_ni(states: [&mut [u32; 8]; 2], blocks: [&[u8; 64]; 2]) {
    // SAFETY (whole body): loads and stores are unaligned and stay inside
    // the 32-byte states, 64-byte blocks and 256-byte constant table.
    unsafe {
        let byte_swap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        let mut abef = [_mm_setzero_si128(); 2];
        let mut cdgh = [_mm_setzero_si128(); 2];
        let mut w = [[_mm_setzero_si128(); 16]; 2];
        for l in 0..2 {
            let dcba = _mm_loadu_si128(states[l].as_ptr().cast());
            let hgfe = _mm_loadu_si128(states[l].as_ptr().add(4).cast());
            let cdab = _mm_shuffle_epi32::<0xB1>(dcba);
            let efgh = _mm_shuffle_epi32::<0x1B>(hgfe);
            abef[l] = _mm_alignr_epi8::<8>(cdab, efgh);
            cdgh[l] = _mm_blend_epi16::<0xF0>(efgh, cdab);
            for (i, word) in w[l].iter_mut().take(4).enumerate() {
                *word = _mm_shuffle_epi8(_mm_loadu_si128(blocks[l].as_ptr().add(16 * i).cast()), byte_swap);
            }
        }
        let (abef_in, cdgh_in) = (abef, cdgh);
        for i in 0..16 {
            let k = _mm_loadu_si128(K.as_ptr().add(4 * i).cast());
            for l in 0..2 {
                if i >= 4 {
                    let w = &mut w[l];
                    let sigma0 = _mm_sha256msg1_epu32(w[i - 4], w[i - 3]);
                    let t = _mm_add_epi32(sigma0, _mm_alignr_epi8::<4>(w[i - 1], w[i - 2]));
                    w[i] = _mm_sha256msg2_epu32(t, w[i - 1]);
                }
                let msg = _mm_add_epi32(w[l][i], k);
                cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], msg);
                abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], _mm_shuffle_epi32::<0x0E>(msg));
            }
        }
        for l in 0..2 {
            let abef = _mm_add_epi32(abef[l], abef_in[l]);
            let cdgh = _mm_add_epi32(cdgh[l], cdgh_in[l]);
            let feba = _mm_shuffle_epi32::<0x1B>(abef);
            let dchg = _mm_shuffle_epi32::<0xB1>(cdgh);
            _mm_storeu_si128(states[l].as_mut_ptr().cast(), _mm_blend_epi16::<0xF0>(feba, dchg));
            _mm_storeu_si128(states[l].as_mut_ptr().add(4).cast(), _mm_alignr_epi8::<8>(dchg, feba));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The processor's SHA extensions, asked directly rather than through [`available`].
    fn processor_has_them() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("sha")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Says which path the tests below exercise; in CI, a processor with
    /// the extensions must have its fast path tested.
    #[test]
    fn the_fast_path_is_tested_where_the_processor_has_it() {
        let has = processor_has_them();
        eprintln!(
            "SHA extensions: {}; the two-lane compression tested: {}",
            if has { "present" } else { "absent" },
            if available() { "the SHA-NI path" } else { "NOT the SHA-NI path (only sha2's, compared with itself)" }
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") && has {
            assert!(available(), "the processor has the SHA extensions, but the fast path would not run");
        }
    }

    proptest! {
        /// The SHA-NI compression itself (not the dispatch, which on a
        /// processor without the extensions is sha2 compared with sha2).
        #[test]
        fn agrees_with_sha2(a in any::<[u32; 8]>(), b in any::<[u32; 8]>(),
                            x in prop::collection::vec(any::<u8>(), 64), y in prop::collection::vec(any::<u8>(), 64)) {
            let (x, y): ([u8; 64], [u8; 64]) = (x.try_into().unwrap(), y.try_into().unwrap());
            let (mut a1, mut b1) = (a, b);
            sha2::block_api::compress256(&mut a1, &[x]);
            sha2::block_api::compress256(&mut b1, &[y]);
            let (mut a2, mut b2) = (a, b);
            compress2([&mut a2, &mut b2], [&x, &y]);
            prop_assert_eq!((a2, b2), (a1, b1));
            #[cfg(target_arch = "x86_64")]
            if available() {
                let (mut a3, mut b3) = (a, b);
                // SAFETY: the processor has the features the function is compiled for.
                unsafe { compress2_ni([&mut a3, &mut b3], [&x, &y]) };
                prop_assert_eq!((a3, b3), (a1, b1));
            }
        }
    }
}
