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

/// What [`redact`] writes in place of a code.
pub const REDACTED: &str = "[isikukood]";

/// `text` with every stand-alone run of exactly 11 digits (anything that
/// could be a personal code, valid or not) replaced by [`REDACTED`]: for text
/// a person typed, such as a SQL statement, before ladu writes it anywhere.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    let mut out = String::new();
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i - start == 11 {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = i;
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
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
    }

    #[test]
    fn redaction_keeps_other_numbers() {
        assert_eq!(redact("WHERE x = 38001010009;"), "WHERE x = [isikukood];");
        assert_eq!(
            redact("'38001010009' or 380010100091 or 3800101000 or 2024"),
            "'[isikukood]' or 380010100091 or 3800101000 or 2024"
        );
        assert!(matches!(redact("SELECT 1"), std::borrow::Cow::Borrowed(_)));
    }
}
