//! Estonian personal codes (isikukood): normalisation and validation per EXTRACTS.md.

/// Strip what spreadsheets and providers add around a code: surrounding
/// whitespace and one leading apostrophe.
pub fn normalise(raw: &str) -> &str {
    let s = raw.trim();
    s.strip_prefix('\'').map(str::trim_start).unwrap_or(s)
}

/// The check digit of the first ten digits of a code.
pub fn check_digit(first_ten: &[u8; 10]) -> u8 {
    const W1: [u32; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1];
    const W2: [u32; 10] = [3, 4, 5, 6, 7, 8, 9, 1, 2, 3];
    let sum = |w: &[u32; 10]| first_ten.iter().zip(w).map(|(d, w)| u32::from(*d) * w).sum::<u32>() % 11;
    let c = sum(&W1);
    if c < 10 {
        return c as u8;
    }
    let c = sum(&W2);
    if c < 10 { c as u8 } else { 0 }
}

/// Is `code` (already normalised) a valid isikukood: 11 digits, a century
/// digit 1–6, a real birth date, and the right check digit.
pub fn is_valid(code: &str) -> bool {
    let b = code.as_bytes();
    if b.len() != 11 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut d = [0u8; 11];
    for (o, c) in d.iter_mut().zip(b) {
        *o = c - b'0';
    }
    let century = match d[0] {
        1 | 2 => 1800,
        3 | 4 => 1900,
        5 | 6 => 2000,
        _ => return false,
    };
    let year = century + i32::from(d[1]) * 10 + i32::from(d[2]);
    let month = u32::from(d[3]) * 10 + u32::from(d[4]);
    let day = u32::from(d[5]) * 10 + u32::from(d[6]);
    if chrono::NaiveDate::from_ymd_opt(year, month, day).is_none() {
        return false;
    }
    let mut first_ten = [0u8; 10];
    first_ten.copy_from_slice(&d[..10]);
    check_digit(&first_ten) == d[10]
}

/// What [`redact`] and [`mask`] write in place of a code.
pub const REDACTED: &str = "[isikukood]";

/// The zero of every run of ten decimal digits in Unicode 14 (category Nd):
/// ASCII, Arabic-Indic, Devanagari, fullwidth and the rest.
const DIGIT_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6, 0xE50, 0xED0,
    0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620,
    0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0,
    0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60,
    0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of a decimal digit of any script.
fn digit(c: char) -> Option<u8> {
    let c = u32::from(c);
    if c < 0x80 {
        return (0x30..=0x39).contains(&c).then(|| (c - 0x30) as u8);
    }
    let i = DIGIT_ZEROS.partition_point(|&z| z <= c).checked_sub(1)?;
    let v = c - DIGIT_ZEROS[i];
    (v < 10).then_some(v as u8)
}

/// May stand between the digits of one written code: `380 0101 0009`, `380-0101-0009`, `3800101.0009`.
fn separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '-' | '.' | '/' | '\u{a0}' | '\u{2007}' | '\u{2009}' | '\u{202f}' | '\u{2010}'..='\u{2013}' | '\u{2212}'
    )
}

/// Which digit sequences count as codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Find {
    /// Exactly eleven digits (valid or not), or a longer run holding a valid code.
    AnyEleven,
    /// Only valid codes, alone or inside a longer run.
    Valid,
}

/// Byte ranges of `text` holding codes in any of their written forms:
/// digits of any script, with single separators between groups of them.
/// Hex words of 16, 32 or 64 digits (fingerprints, pseudonyms, SHA-256) are
/// left whole.
fn find(text: &str, mode: Find) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    // Fast path: fewer than eleven characters that could be digits.
    let maybe_digits = text.bytes().filter(|b| b.is_ascii_digit() || *b >= 0x80).count();
    if maybe_digits < 11 {
        return found;
    }
    let protected = hex_words(text);
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let is_digit = |k: usize| -> Option<u8> {
        let (at, c) = chars[k];
        if protected.iter().any(|r| r.contains(&at)) { None } else { digit(c) }
    };
    let mut k = 0;
    while k < chars.len() {
        if is_digit(k).is_none() {
            k += 1;
            continue;
        }
        // A sequence: digits, and single separators each followed by a digit.
        let start = k;
        let mut digits = Vec::new();
        let mut end = k;
        while end < chars.len() {
            if let Some(d) = is_digit(end) {
                digits.push(d);
                end += 1;
            } else if separator(chars[end].1) && end + 1 < chars.len() && is_digit(end + 1).is_some() {
                end += 1;
            } else {
                break;
            }
        }
        let is_code = |w: &[u8]| {
            let code: String = w.iter().map(|d| char::from(b'0' + d)).collect();
            is_valid(&code)
        };
        let hit = match mode {
            Find::AnyEleven if digits.len() == 11 => true,
            _ => digits.len() >= 11 && digits.windows(11).any(is_code),
        };
        if hit {
            let to = chars.get(end).map_or(text.len(), |(at, _)| *at);
            found.push(chars[start].0..to);
        }
        k = end;
    }
    found
}

/// Byte ranges of lowercase hex words of 16, 32 or 64 digits holding a letter.
fn hex_words(text: &str) -> Vec<std::ops::Range<usize>> {
    let b = text.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let word = &b[start..i];
        let hex = word.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if hex && matches!(word.len(), 16 | 32 | 64) && word.iter().any(u8::is_ascii_alphabetic) {
            words.push(start..i);
        }
    }
    words
}

fn replace<'a>(text: &'a str, spans: &[std::ops::Range<usize>]) -> std::borrow::Cow<'a, str> {
    if spans.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for span in spans {
        out.push_str(&text[copied..span.start]);
        out.push_str(REDACTED);
        copied = span.end;
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

/// `text` with everything that could be a personal code replaced by
/// [`REDACTED`]: eleven digits, valid or not, in any script and with
/// separators (`380 0101 0009`), and longer digit runs that hold a valid
/// code (two codes run together); pseudonyms stay whole. For text a person
/// typed (a SQL statement, an argument) before ladu writes it anywhere.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    replace(text, &find(text, Find::AnyEleven))
}

/// `text` with each valid personal code in it, in any of its written forms,
/// replaced by [`REDACTED`]: for free text kept in the warehouse.
pub fn mask(text: &str) -> std::borrow::Cow<'_, str> {
    replace(text, &find(text, Find::Valid))
}

/// Build a valid code from its parts (sample data and tests).
/// `century_digit` is 1–6, `serial` 0–999.
pub fn make(century_digit: u8, yy: u8, mm: u8, dd: u8, serial: u16) -> String {
    let mut s = format!("{century_digit}{yy:02}{mm:02}{dd:02}{serial:03}");
    let mut first_ten = [0u8; 10];
    for (o, c) in first_ten.iter_mut().zip(s.bytes()) {
        *o = c - b'0';
    }
    s.push(char::from(b'0' + check_digit(&first_ten)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_codes() {
        // The example of DESIGN.md and public test codes.
        assert!(is_valid("38001010009"));
        assert!(is_valid("37605030299"));
        assert!(is_valid("49403136515"));
        assert!(!is_valid("38001010008"));
        assert!(!is_valid("3800101000"));
        assert!(!is_valid("78001010009"), "century digit 7 is not in the spec");
        assert!(!is_valid("38002300000"), "30 February");
        assert!(!is_valid("3800101000a"));
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalise("  38001010009 "), "38001010009");
        assert_eq!(normalise("'38001010009"), "38001010009");
        assert_eq!(normalise(" '38001010009"), "38001010009");
        assert_eq!(normalise("38001010009"), "38001010009");
    }

    #[test]
    fn second_weights_and_zero_fallback() {
        // Find codes where the first sum is 10, to exercise the second round.
        let mut seen_second = false;
        for serial in 0..1000 {
            let code = make(3, 80, 1, 1, serial);
            assert!(is_valid(&code), "{code}");
            let d: Vec<u32> = code.bytes().map(|c| u32::from(c - b'0')).collect();
            let s1: u32 = d[..10].iter().zip([1, 2, 3, 4, 5, 6, 7, 8, 9, 1]).map(|(a, b)| a * b).sum();
            seen_second |= s1 % 11 == 10;
        }
        assert!(seen_second);
    }

    proptest! {
        #[test]
        fn made_codes_are_valid(c in 1u8..=6, yy in 0u8..100, mm in 1u8..=12, dd in 1u8..=28, serial in 0u16..1000) {
            let code = make(c, yy, mm, dd, serial);
            prop_assert!(is_valid(&code));
            let wrapped = format!(" '{code} ");
            prop_assert!(is_valid(normalise(&wrapped)));
        }

        #[test]
        fn one_changed_check_digit_is_invalid(c in 1u8..=6, yy in 0u8..100, mm in 1u8..=12, dd in 1u8..=28, serial in 0u16..1000, delta in 1u8..10) {
            let code = make(c, yy, mm, dd, serial);
            let mut b = code.into_bytes();
            b[10] = b'0' + (b[10] - b'0' + delta) % 10;
            prop_assert!(!is_valid(std::str::from_utf8(&b).unwrap()));
        }

        #[test]
        fn never_panics(s in "\\PC{0,20}") {
            let _ = is_valid(normalise(&s));
        }

        #[test]
        fn redaction_leaves_no_eleven_digit_run(prefix in "[a-z '=]{0,8}", code in "[0-9]{11}", suffix in "[a-z ;)]{0,8}") {
            let text = format!("{prefix}{code}{suffix} and {code}");
            let r = redact(&text);
            prop_assert!(!r.contains(&code));
            prop_assert_eq!(r.matches(REDACTED).count(), 2);
        }

        /// A valid code in any written form (separators between its groups,
        /// fullwidth or Arabic-Indic digits, run together with another) is
        /// neither in the redacted nor in the masked text.
        #[test]
        fn written_forms_are_found(
            c in 1u8..=6, yy in 0u8..100, mm in 1u8..=12, dd in 1u8..=28, serial in 0u16..1000,
            cuts in proptest::collection::vec(1usize..11, 0..3),
            sep in prop::sample::select(vec![" ", "-", ".", "\u{a0}", "/"]),
            script in prop::sample::select(vec![0x30u32, 0xFF10, 0x660, 0x6F0, 0x966]),
            twice in any::<bool>(),
            around in "[a-z ()=']{0,6}",
        ) {
            let code = make(c, yy, mm, dd, serial);
            let mut written = String::new();
            for (i, ch) in code.chars().enumerate() {
                if cuts.contains(&i) {
                    written.push_str(sep);
                }
                let d = u32::from(ch) - 0x30;
                written.push(char::from_u32(script + d).unwrap());
            }
            if twice {
                written = format!("{written}{}", make(3, 80, 1, 1, 9));
            }
            // Apart from the words around it: glued into a 16, 32 or 64-digit hex word it would be one.
            let text = format!("{around} {written} {around}");
            for out in [redact(&text), mask(&text)] {
                prop_assert!(!out.contains(&written), "{} -> {}", text, out);
                let digits: String = out.chars().filter_map(digit).map(|d| char::from(b'0' + d)).collect();
                prop_assert!(!digits.contains(&code), "{} -> {}", text, out);
            }
        }

        /// Pseudonyms, fingerprints and SHA-256 digests are never altered, whatever digits they hold.
        #[test]
        fn hex_words_stay_whole(bits in any::<u128>(), digits in "[0-9]{11,20}", len in prop::sample::select(vec![16usize, 32, 64])) {
            let mut word = format!("{bits:032x}{bits:032x}");
            word.replace_range(3..3 + digits.len(), &digits);
            word.truncate(len);
            prop_assume!(word.bytes().any(|c| c.is_ascii_alphabetic()));
            let text = format!("WHERE person_id = '{word}'");
            let redacted = redact(&text);
            prop_assert_eq!(redacted.as_ref(), text.as_str());
        }
    }

    #[test]
    fn redaction_keeps_other_numbers() {
        assert_eq!(redact("WHERE x = 38001010009;"), "WHERE x = [isikukood];");
        assert_eq!(
            redact("'38001010009' or 123456789012 or 3800101000 or 2024"),
            "'[isikukood]' or 123456789012 or 3800101000 or 2024"
        );
        assert_eq!(redact("380010100091"), "[isikukood]", "a valid code inside a longer run");
        assert_eq!(redact("'3800101 0009', '380-0101-0009'"), "'[isikukood]', '[isikukood]'");
        assert_eq!(redact("3800101000938001010009"), "[isikukood]", "two codes run together");
        assert_eq!(redact("x IN (38001010009,49403136515)"), "x IN ([isikukood],[isikukood])");
        assert_eq!(
            redact("BETWEEN '2024-03-01' AND '2024-03-31' LIMIT 10"),
            "BETWEEN '2024-03-01' AND '2024-03-31' LIMIT 10"
        );
        assert_eq!(redact("sum 12345678901.5"), "sum 12345678901.5", "twelve digits, no valid code");
        assert_eq!(redact("sum 38001010009.5"), "sum [isikukood]");
        assert!(matches!(redact("SELECT 1"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn masking_takes_valid_codes_only() {
        assert_eq!(mask("Dr Tamm, 38001010009"), "Dr Tamm, [isikukood]");
        assert_eq!(mask("Kliinik 12345678901"), "Kliinik 12345678901", "not a valid code");
        assert_eq!(mask("Haigla ３８００１０１０００９"), "Haigla [isikukood]");
        assert!(matches!(mask("Tartu Ülikooli Kliinikum"), std::borrow::Cow::Borrowed(_)));
    }
}
