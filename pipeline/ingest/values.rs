//! Parsers and checkers for delivered values; pure functions, no allocation.

use chrono::{LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Europe::Tallinn;

use crate::config::source::DateFormat;

/// Days from 0001-01-01 (CE day 1) to 1970-01-01.
const EPOCH_CE_DAYS: i32 = 719_163;

/// A date as days since 1970-01-01 (Arrow's Date32).
pub fn parse_date(s: &str, format: DateFormat) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 {
        return None;
    }
    let (y, m, d) = match format {
        DateFormat::Iso if b[4] == b'-' && b[7] == b'-' => (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?),
        DateFormat::DayMonthYear if b[2] == b'.' && b[5] == b'.' => {
            (digits(&b[6..10])?, digits(&b[3..5])?, digits(&b[0..2])?)
        }
        _ => return None,
    };
    days_from_civil(y as i32, m, d)
}

/// Days since 1970-01-01 of a calendar date, or `None` if there is no such
/// date: a look-up for the years of [`MONTH_STARTS`], H. Hinnant's
/// algorithm for others (chrono's constructor cost 1 % of an ingest).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> Option<i32> {
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    if (TABLE_FROM..TABLE_FROM + TABLE_YEARS as i32).contains(&y) {
        let i = (y - TABLE_FROM) as usize * 12 + m as usize - 1;
        let start = MONTH_STARTS[i];
        return (d as i32 <= MONTH_STARTS[i + 1] - start).then_some(start + d as i32 - 1);
    }
    (d <= days_in_month(y, m)).then(|| civil(y, m, d))
}

/// First year of [`MONTH_STARTS`].
const TABLE_FROM: i32 = 1900;
/// Years in [`MONTH_STARTS`].
const TABLE_YEARS: usize = 300;

/// Days since 1970-01-01 of the first of every month from January 1900 on,
/// and of the month after the last: a date is a look-up and a comparison.
static MONTH_STARTS: [i32; TABLE_YEARS * 12 + 1] = {
    let mut t = [0; TABLE_YEARS * 12 + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = civil(TABLE_FROM + (i / 12) as i32, (i % 12) as u32 + 1, 1);
        i += 1;
    }
    t
};

/// Days since 1970-01-01 of a valid calendar date (H. Hinnant's algorithm).
const fn civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400) as u32;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

/// The calendar (year, month) of days since 1970-01-01.
pub fn year_month_of_days(days: i32) -> (i32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe as i32 + era * 400 + i32::from(m <= 2);
    (y, m)
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The calendar date of days since the epoch.
pub fn date_of_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days + EPOCH_CE_DAYS)
}

/// `YYYY-MM-DDTHH:MM:SS` with an optional `+HH:MM`/`-HH:MM`/`Z`, as
/// milliseconds since the epoch (UTC). Without an offset the time is local
/// Europe/Tallinn, read as PostgreSQL reads it: a time in the hour the
/// clocks skip in spring takes the offset before the change (so
/// `03:33:22` on the last Sunday of March is `04:33:22+03`), and a time in
/// the hour they repeat in autumn the offset after it (`03:30:00` on the
/// last Sunday of October is `03:30:00+02`, the second of the two).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
    let dt = date.and_hms_opt(digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?)?;
    let rest = &b[19..];
    let utc_ms = |local: NaiveDateTime, offset_secs: i64| local.and_utc().timestamp_millis() - offset_secs * 1000;
    match rest {
        [] => match Tallinn.from_local_datetime(&dt) {
            LocalResult::Single(t) => Some(t.timestamp_millis()),
            LocalResult::Ambiguous(_, after) => Some(after.timestamp_millis()),
            LocalResult::None => {
                // In the gap: the offset of a moment safely before it.
                let before = Tallinn.from_local_datetime(&(dt - chrono::TimeDelta::hours(3))).earliest()?;
                Some(utc_ms(dt, i64::from(before.offset().fix().local_minus_utc())))
            }
        },
        [b'Z'] => Some(utc_ms(dt, 0)),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])? as i64;
            let m = digits(&[*m1, *m2])? as i64;
            if h > 14 || m > 59 {
                return None;
            }
            let off = (h * 3600 + m * 60) * if *sign == b'-' { -1 } else { 1 };
            Some(utc_ms(dt, off))
        }
        _ => None,
    }
}

/// The local (Europe/Tallinn) calendar date of a UTC instant in milliseconds.
pub fn tallinn_date(utc_ms: i64) -> Option<NaiveDate> {
    let dt = chrono::DateTime::from_timestamp_millis(utc_ms)?;
    Some(dt.with_timezone(&Tallinn).date_naive())
}

/// Money as cents: digits, optional sign, at most two decimals after `sep`.
pub fn parse_money(s: &str, sep: u8) -> Option<i128> {
    let b = s.as_bytes();
    let (neg, b) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, b),
    };
    let (int, frac) = match memchr::memchr(sep, b) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[..0]),
    };
    if int.is_empty() || int.len() > 15 || frac.len() > 2 || (frac.is_empty() && b.len() != int.len()) {
        return None;
    }
    let mut cents: i128 = 0;
    for &c in int {
        cents = cents * 10 + i128::from(digit(c)?);
    }
    let mut f = 0;
    for i in 0..2 {
        f = f * 10 + frac.get(i).map(|c| digit(*c)).unwrap_or(Some(0))?;
    }
    cents = cents * 100 + i128::from(f);
    Some(if neg { -cents } else { cents })
}

/// A whole number, optionally signed.
pub fn parse_integer(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    let digits_part = b.strip_prefix(b"-").or_else(|| b.strip_prefix(b"+")).unwrap_or(b);
    if digits_part.is_empty() || digits_part.len() > 9 || !digits_part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.parse().ok()
}

pub fn is_regcode(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|c| c.is_ascii_digit())
}

/// `D` and five digits.
pub fn is_worker_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6 && b[0] == b'D' && b[1..].iter().all(u8::is_ascii_digit)
}

/// A letter, two digits, then optionally `.` and one or two digits or letters.
pub fn is_icd10(s: &str) -> bool {
    let b = s.as_bytes();
    let head = b.len() >= 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_digit() && b[2].is_ascii_digit();
    head && match &b[3..] {
        [] => true,
        [b'.', rest @ ..] => {
            (1..=2).contains(&rest.len()) && rest.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        }
        _ => false,
    }
}

/// An ATC code at level 1, 2, 3, 4 or 5 (1, 3, 4, 5 or 7 characters).
pub fn is_atc(s: &str) -> bool {
    let b = s.as_bytes();
    let shape: &[fn(&u8) -> bool] = &[
        u8::is_ascii_uppercase,
        u8::is_ascii_digit,
        u8::is_ascii_digit,
        u8::is_ascii_uppercase,
        u8::is_ascii_uppercase,
        u8::is_ascii_digit,
        u8::is_ascii_digit,
    ];
    matches!(b.len(), 1 | 3 | 4 | 5 | 7) && b.iter().zip(shape).all(|(c, f)| f(c))
}

/// Three uppercase letters.
pub fn is_country(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase())
}

/// EHAK county codes and names (EXTRACTS.md).
pub const COUNTIES: [(&str, &str); 15] = [
    ("0037", "Harju"),
    ("0039", "Hiiu"),
    ("0044", "Ida-Viru"),
    ("0049", "Jõgeva"),
    ("0051", "Järva"),
    ("0057", "Lääne"),
    ("0059", "Lääne-Viru"),
    ("0065", "Põlva"),
    ("0067", "Pärnu"),
    ("0070", "Rapla"),
    ("0074", "Saare"),
    ("0078", "Tartu"),
    ("0082", "Valga"),
    ("0084", "Viljandi"),
    ("0086", "Võru"),
];

/// The county name of an EHAK code.
pub fn county_of_ehak(code: &str) -> Option<&'static str> {
    COUNTIES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The county an address names, as `<Name> maakond` (or `<Name> mk`).
pub fn county_of_address(address: &str) -> Option<&'static str> {
    // The longest name first, so that "Lääne-Viru" wins over "Lääne".
    let mut best: Option<&'static str> = None;
    for (_, name) in COUNTIES {
        for suffix in [" maakond", " mk"] {
            let mut at = 0;
            while let Some(i) = address[at..].find(name) {
                let start = at + i;
                let end = start + name.len();
                let before_ok = start == 0 || !address[..start].ends_with(|c: char| c.is_alphanumeric() || c == '-');
                if before_ok && address[end..].starts_with(suffix) && best.is_none_or(|b| b.len() < name.len()) {
                    best = Some(name);
                }
                at = end;
            }
        }
    }
    best
}

/// Five-year age band of an age in years: `0-4`, …, `85-89`, `90+`.
pub fn age_band(age: i32) -> Option<&'static str> {
    const BANDS: [&str; 19] = [
        "0-4", "5-9", "10-14", "15-19", "20-24", "25-29", "30-34", "35-39", "40-44", "45-49", "50-54", "55-59",
        "60-64", "65-69", "70-74", "75-79", "80-84", "85-89", "90+",
    ];
    if !(0..=130).contains(&age) {
        return None;
    }
    Some(BANDS[(age as usize / 5).min(18)])
}

fn digit(c: u8) -> Option<u8> {
    c.is_ascii_digit().then(|| c - b'0')
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| Some(acc * 10 + u32::from(digit(c)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-02", DateFormat::Iso), Some(1));
        assert_eq!(parse_date("02.01.1970", DateFormat::DayMonthYear), Some(1));
        assert_eq!(parse_date("1970-02-30", DateFormat::Iso), None);
        assert_eq!(parse_date("02.01.1970", DateFormat::Iso), None);
        assert_eq!(parse_date("1970-1-2", DateFormat::Iso), None);
        assert_eq!(date_of_days(1), NaiveDate::from_ymd_opt(1970, 1, 2));
    }

    #[test]
    fn timestamps() {
        // Tallinn is UTC+2 in winter, UTC+3 in summer.
        assert_eq!(parse_timestamp("2024-01-01T02:00:00"), Some(1_704_067_200_000));
        assert_eq!(parse_timestamp("2024-01-01T02:00:00+02:00"), Some(1_704_067_200_000));
        assert_eq!(parse_timestamp("2024-01-01T00:00:00Z"), Some(1_704_067_200_000));
        assert_eq!(parse_timestamp("2024-07-01T03:00:00"), parse_timestamp("2024-07-01T00:00:00Z"));
        // The hours the clocks skip and repeat, as PostgreSQL 15 reads them with
        // `SET timezone = 'Europe/Tallinn'; SELECT extract(epoch from '…'::timestamptz)`.
        assert_eq!(parse_timestamp("2025-03-30T03:33:22"), Some(1_743_298_402_000), "skipped: 04:33:22+03");
        assert_eq!(parse_timestamp("2025-03-30T03:33:22"), parse_timestamp("2025-03-30T04:33:22"));
        assert_eq!(parse_timestamp("2025-03-30T02:59:59"), parse_timestamp("2025-03-30T00:59:59Z"), "before the gap");
        assert_eq!(parse_timestamp("2025-10-26T03:30:00"), Some(1_761_442_200_000), "repeated: the second, +02");
        assert_eq!(parse_timestamp("2025-10-26T02:59:59"), parse_timestamp("2025-10-25T23:59:59Z"), "+03 before");
        assert_eq!(parse_timestamp("2025-10-26T04:00:00"), parse_timestamp("2025-10-26T02:00:00Z"), "+02 after");
        assert_eq!(parse_timestamp("2024-01-01 02:00:00"), Some(1_704_067_200_000));
        assert_eq!(parse_timestamp("2024-01-01T25:00:00"), None);
        assert_eq!(parse_timestamp("2024-01-01T02:00:00+2"), None);
        assert_eq!(tallinn_date(1_704_067_200_000 - 1), NaiveDate::from_ymd_opt(2024, 1, 1));
    }

    #[test]
    fn money() {
        assert_eq!(parse_money("123,45", b','), Some(12345));
        assert_eq!(parse_money("123.4", b'.'), Some(12340));
        assert_eq!(parse_money("-5", b'.'), Some(-500));
        assert_eq!(parse_money("123.45", b','), None);
        assert_eq!(parse_money("1,234", b','), None);
        assert_eq!(parse_money("12,", b','), None);
        assert_eq!(parse_money(",5", b','), None);
        assert_eq!(parse_money("", b','), None);
    }

    #[test]
    fn codes() {
        assert!(is_icd10("J06.9") && is_icd10("E11") && is_icd10("S72.01") && !is_icd10("J6") && !is_icd10("j06"));
        assert!(is_atc("C09AA05") && is_atc("C") && is_atc("C09") && is_atc("C09A") && !is_atc("C09AA0"));
        assert!(is_worker_code("D12345") && !is_worker_code("D1234") && !is_worker_code("12345D"));
        assert!(is_regcode("90006399") && !is_regcode("9000639"));
        assert_eq!(county_of_ehak("0078"), Some("Tartu"));
        assert_eq!(county_of_ehak("0000"), None);
        assert_eq!(county_of_address("Tamme tn 5-12, Rakvere linn, Lääne-Viru maakond"), Some("Lääne-Viru"));
        assert_eq!(county_of_address("Pikk 1, Haapsalu, Lääne maakond"), Some("Lääne"));
        assert_eq!(county_of_address("Pikk 1, Tallinn"), None);
        assert_eq!(age_band(0), Some("0-4"));
        assert_eq!(age_band(39), Some("35-39"));
        assert_eq!(age_band(104), Some("90+"));
        assert_eq!(age_band(-1), None);
    }

    proptest! {
        #[test]
        fn dates_round_trip(y in 1900i32..2100, m in 1u32..=12, d in 1u32..=28) {
            let iso = format!("{y:04}-{m:02}-{d:02}");
            let dmy = format!("{d:02}.{m:02}.{y:04}");
            let a = parse_date(&iso, DateFormat::Iso).unwrap();
            prop_assert_eq!(Some(a), parse_date(&dmy, DateFormat::DayMonthYear));
            prop_assert_eq!(date_of_days(a), NaiveDate::from_ymd_opt(y, m, d));
        }

        #[test]
        fn civil_arithmetic_agrees_with_chrono(days in -800_000i32..800_000) {
            use chrono::Datelike;
            let date = date_of_days(days).unwrap();
            prop_assert_eq!(year_month_of_days(days), (date.year(), date.month()));
            prop_assert_eq!(days_from_civil(date.year(), date.month(), date.day()), Some(days));
        }

        /// Inside the look-up table's years and past both its ends, real and
        /// impossible dates (day 0, 31 April, 29 February) alike.
        #[test]
        fn dates_agree_with_chrono(y in 1890i32..2210, m in 0u32..14, d in 0u32..33) {
            let expected = NaiveDate::from_ymd_opt(y, m, d).map(|date| {
                (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
            });
            prop_assert_eq!(days_from_civil(y, m, d), expected);
        }

        #[test]
        fn money_round_trips(cents in -1_000_000_000_i128..1_000_000_000) {
            let s = format!("{}{}.{:02}", if cents < 0 { "-" } else { "" }, cents.abs() / 100, cents.abs() % 100);
            prop_assert_eq!(parse_money(&s, b'.'), Some(cents));
            prop_assert_eq!(parse_money(&s.replace('.', ","), b','), Some(cents));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,30}") {
            let _ = parse_date(&s, DateFormat::Iso);
            let _ = parse_date(&s, DateFormat::DayMonthYear);
            let _ = parse_timestamp(&s);
            let _ = parse_money(&s, b',');
            let _ = parse_integer(&s);
            let _ = county_of_address(&s);
            let _ = is_icd10(&s) || is_atc(&s);
        }
    }
}
