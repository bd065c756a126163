//! Synthetic deliveries for all seven sources, in the exact formats of EXTRACTS.md.
//!
//! Deterministic for a seed. People are drawn from one synthetic population,
//! so that the sources join; every personal code has a valid check digit.
//! `invalid` rows per source carry one deliberate defect each (bad check
//! digit, unparsable date or amount, missing key, value outside its list).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Europe::Tallinn;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ingest::values::COUNTIES;
use crate::pseudonym::isikukood;

/// Every source the generator knows, in EXTRACTS.md order.
pub const SOURCES: [&str; 7] = [
    "population",
    "treatment_invoices",
    "sick_leave",
    "prescriptions",
    "ambulance_calls",
    "waiting_list",
    "cancer_screening",
];

/// Largest synthetic population other sources draw people from.
const MAX_PEOPLE: usize = 1_000_000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows per source.
    pub rows: usize,
    pub seed: u64,
    /// Deliberately invalid rows per source (within `rows`).
    pub invalid: usize,
    /// Only these sources (all when empty).
    pub sources: Vec<String>,
    /// The extract date of the deliveries; events fall in the year before it.
    pub extract_date: NaiveDate,
    /// Number of the first record (record keys count from it).
    pub first_record: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rows: 300,
            seed: 1,
            invalid: 4,
            sources: Vec::new(),
            extract_date: NaiveDate::from_ymd_opt(2024, 3, 31).expect("valid date"),
            first_record: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown source `{0}`: known are {known}", known = SOURCES.join(", "))]
    UnknownSource(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Person {
    code: String,
    first: &'static str,
    last: &'static str,
    birth: NaiveDate,
    male: bool,
    county: usize,
    street: &'static str,
    house: u16,
}

const MALE: [&str; 12] =
    ["Jüri", "Märt", "Tõnis", "Andres", "Peeter", "Jaan", "Mihkel", "Priit", "Sten", "Ülo", "Toomas", "Kristjan"];
const FEMALE: [&str; 12] =
    ["Mari", "Tiiu", "Ülle", "Kärt", "Liis", "Anu", "Ene", "Kadri", "Siiri", "Maie", "Õie", "Helje"];
const LAST: [&str; 16] = [
    "Tamm", "Saar", "Sepp", "Mägi", "Kask", "Kukk", "Rebane", "Ilves", "Pärn", "Kõiv", "Lepik", "Koppel", "Õunapuu",
    "Jõgi", "Šmidt", "Žukov",
];
const STREETS: [&str; 8] = ["Tamme", "Pärna", "Jõe", "Kase", "Võidu", "Männi", "Õuna", "Küla"];
const DIAGNOSES: [&str; 14] = [
    "J06.9", "E11", "I10", "M54.5", "K21.0", "F32.1", "J20.9", "N39.0", "S72.01", "C50.9", "Z00.0", "R51", "H10.3",
    "L20",
];
const INSTITUTIONS: [(&str, &str); 6] = [
    ("90006399", "Tartu Ülikooli Kliinikum SA"),
    ("90001478", "Põhja-Eesti Regionaalhaigla SA"),
    ("90004585", "Ida-Tallinna Keskhaigla AS"),
    ("10822068", "Pärnu Haigla SA"),
    ("90000053", "Lääne-Tallinna Keskhaigla AS"),
    ("11107913", "Perearst Kõiv OÜ"),
];
const PRODUCTS: [(&str, &str); 6] = [
    ("C09AA05", "Ramipriil Krka 5 mg tabletid"),
    ("A10BA02", "Metformiin-Teva 500 mg õhukese polümeerikattega tabletid"),
    ("N02BE01", "Paratsetamool Žentiva 500 mg"),
    ("M01AE01", "Ibuprofeen Grindeks 400 mg, kaetud tabletid"),
    ("R03AC02", "Salbutamool \"Ventolin\" inhalaator"),
    ("J01CA04", "Amoksitsilliin Šandoz 500 mg kapslid"),
];
const PHARMACIES: [&str; 4] = ["10034569", "11239856", "12564788", "10987456"];
const SPECIALTIES: [&str; 6] = ["E220", "E260", "E310", "E350", "E170", "E150"];
const REASONS: [&str; 6] = ["rinnavalu", "kukkumine", "hingamisraskus", "teadvusetus", "liiklusõnnetus", "palavik"];
const CASE_TYPES: [&str; 3] = ["esmane", "korduv", "transport"];
const DESCRIPTIONS: [&str; 5] = [
    "Patsient kukkus trepil, valu jalas",
    "Naaber helistas: \"ei ava ust\", kontrollida",
    "Hingamisraskus,\nastma ajalugu",
    "Liiklusõnnetus ristmikul; kaks sõidukit",
    "",
];
const HOSPITALS: [&str; 3] = ["Tartu Ülikooli Kliinikum", "Põhja-Eesti Regionaalhaigla", "Ida-Viru Keskhaigla"];

/// The header row of a source, in EXTRACTS.md order.
pub fn header(source: &str) -> &'static [&'static str] {
    match source {
        "population" => &[
            "isikukood",
            "first_name",
            "last_name",
            "birth_date",
            "sex",
            "citizenship",
            "residence_ehak",
            "residence_address",
            "death_date",
            "death_record_no",
        ],
        "treatment_invoices" => &[
            "invoice_id",
            "isikukood",
            "provider_regcode",
            "provider_name",
            "main_diagnosis",
            "care_type",
            "amount",
            "start_date",
            "end_date",
            "submitted_date",
        ],
        "sick_leave" => &[
            "certificate_id",
            "isikukood",
            "issuer_regcode",
            "doctor_code",
            "diagnosis",
            "leave_type",
            "start_date",
            "end_date",
        ],
        "prescriptions" => &[
            "dispensation_id",
            "prescription_id",
            "isikukood",
            "prescriber_code",
            "atc_code",
            "product_name",
            "pharmacy_regcode",
            "dispensed_date",
            "packages",
            "patient_paid",
            "insurer_paid",
        ],
        "ambulance_calls" => &[
            "case_no",
            "received_at",
            "brigade_callsign",
            "priority",
            "changed_priority",
            "case_type",
            "reason",
            "description",
            "patient_first_name",
            "patient_last_name",
            "patient_age",
            "patient_isikukood",
            "patient_birth_date",
            "patient_sex",
            "patient_citizenship",
            "estimated_patients",
            "caller_name",
            "caller_phone",
            "location_address",
            "location_ehak",
            "dispatched_at",
            "departed_at",
            "arrived_at",
            "to_hospital_at",
            "hospital_name",
            "freed_at",
            "returned_at",
            "cancelled_at",
        ],
        "waiting_list" => &[
            "booking_id",
            "isikukood",
            "specialty_code",
            "service_time",
            "first_available_time",
            "confirmed_at",
            "institution_regcode",
            "institution_name",
            "changed_at",
            "cancelled_at",
            "changed_by",
            "payer_name",
            "payer_iban",
            "reference_no",
            "paid_amount",
            "service_used",
        ],
        "cancer_screening" => &[
            "invitation_id",
            "isikukood",
            "first_name",
            "last_name",
            "screening",
            "purpose",
            "provider_regcode",
            "invited_date",
        ],
        _ => &[],
    }
}

fn delimiter(source: &str) -> u8 {
    match source {
        "population" => b';',
        "treatment_invoices" => b';',
        "sick_leave" => b',',
        "prescriptions" => b';',
        "ambulance_calls" => b',',
        "waiting_list" => b';',
        "cancer_screening" => b',',
        _ => b',',
    }
}

/// Write deliveries into `<out>/<source>/<source>_<YYYYMMDD>.csv`.
pub fn generate(out: &Path, opts: &Options) -> Result<Vec<(PathBuf, usize)>, Error> {
    for s in &opts.sources {
        if !SOURCES.contains(&s.as_str()) {
            return Err(Error::UnknownSource(s.clone()));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let people_n = opts.rows.clamp(50, MAX_PEOPLE);
    let people: Vec<Person> = (0..people_n).map(|_| person(&mut rng)).collect();
    let mut written = Vec::new();
    for (i, source) in SOURCES.iter().enumerate() {
        if !opts.sources.is_empty() && !opts.sources.iter().any(|s| s == source) {
            continue;
        }
        let dir = out.join(source);
        let path = dir.join(format!("{source}_{}.csv", opts.extract_date.format("%Y%m%d")));
        let err = |e| Error::Write { path: path.clone(), source: e };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let file = File::create(&path).map_err(err)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut g = Gen {
            rng: ChaCha8Rng::seed_from_u64(opts.seed.wrapping_mul(31).wrapping_add(i as u64)),
            people: &people,
            end: opts.extract_date,
            buf: Vec::with_capacity(1024),
            delim: b';',
        };
        let rows = opts.rows;
        // Invalid rows sit at evenly spaced places, never on the first row.
        let bad_every = if opts.invalid == 0 { usize::MAX } else { (rows / (opts.invalid + 1)).max(1) };
        let is_bad = |r: usize| r > 0 && r.is_multiple_of(bad_every) && r / bad_every <= opts.invalid;
        let write_row = |g: &mut Gen, w: &mut BufWriter<File>, windows: bool| -> std::io::Result<()> {
            if windows {
                let text = std::str::from_utf8(&g.buf).expect("rows are UTF-8");
                let (bytes, _, _) = encoding_rs::WINDOWS_1257.encode(text);
                w.write_all(&bytes)?;
            } else {
                w.write_all(&g.buf)?;
            }
            g.buf.clear();
            Ok(())
        };
        let (windows, row): (bool, RowFn<'_>) = match *source {
            "population" => (false, Gen::population),
            "treatment_invoices" => (false, Gen::invoice),
            "sick_leave" => (false, Gen::sick_leave),
            "prescriptions" => (true, Gen::prescription),
            "ambulance_calls" => (false, Gen::ambulance),
            "waiting_list" => (false, Gen::waiting),
            _ => (false, Gen::screening),
        };
        g.delim = delimiter(source);
        g.header(header(source));
        write_row(&mut g, &mut w, windows).map_err(err)?;
        for r in 0..rows {
            row(&mut g, r + opts.first_record.max(1) - 1, is_bad(r).then(|| r / bad_every - 1));
            write_row(&mut g, &mut w, windows).map_err(err)?;
        }
        w.flush().map_err(err)?;
        written.push((path, rows));
    }
    Ok(written)
}

fn person(rng: &mut ChaCha8Rng) -> Person {
    let birth = NaiveDate::from_ymd_opt(1930, 1, 1).expect("valid date") + Duration::days(rng.random_range(0..33_000));
    let male = rng.random_bool(0.49);
    let century = match birth.year() {
        ..1900 => 1,
        1900..2000 => 3,
        _ => 5,
    } + u8::from(!male);
    let code = isikukood::make(
        century,
        (birth.year() % 100) as u8,
        birth.month() as u8,
        birth.day() as u8,
        rng.random_range(0..1000),
    );
    // Harju holds about half the people, as in life.
    let county = if rng.random_bool(0.45) { 0 } else { rng.random_range(0..COUNTIES.len()) };
    Person {
        code,
        first: if male { MALE[rng.random_range(0..MALE.len())] } else { FEMALE[rng.random_range(0..FEMALE.len())] },
        last: LAST[rng.random_range(0..LAST.len())],
        birth,
        male,
        county,
        street: STREETS[rng.random_range(0..STREETS.len())],
        house: rng.random_range(1..120),
    }
}

/// Writes one row of a source into `Gen::buf`; the second argument is the row number, the third its defect.
type RowFn<'a> = fn(&mut Gen<'a>, usize, Option<usize>);

struct Gen<'a> {
    rng: ChaCha8Rng,
    people: &'a [Person],
    end: NaiveDate,
    buf: Vec<u8>,
    delim: u8,
}

impl Gen<'_> {
    fn header(&mut self, names: &[&str]) {
        let fields: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        self.row(&fields);
    }

    fn row(&mut self, fields: &[String]) {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.buf.push(self.delim);
            }
            if f.bytes().any(|c| c == self.delim || c == b'"' || c == b'\n' || c == b'\r') {
                self.buf.push(b'"');
                self.buf.extend_from_slice(f.replace('"', "\"\"").as_bytes());
                self.buf.push(b'"');
            } else {
                self.buf.extend_from_slice(f.as_bytes());
            }
        }
        self.buf.extend_from_slice(b"\n");
    }

    fn who(&mut self) -> &Person {
        let i = self.rng.random_range(0..self.people.len());
        &self.people[i]
    }

    fn day(&mut self, back: i64) -> NaiveDate {
        self.end - Duration::days(self.rng.random_range(0..back))
    }

    fn code(&mut self, p_code: &str) -> String {
        // Providers' spreadsheet artefacts: a few codes arrive padded or with an apostrophe.
        match self.rng.random_range(0..100) {
            0 => format!(" {p_code} "),
            1 => format!("'{p_code}"),
            _ => p_code.to_owned(),
        }
    }

    fn worker(&mut self) -> String {
        format!("D{:05}", self.rng.random_range(10000..99999))
    }

    fn iso(d: NaiveDate) -> String {
        d.format("%Y-%m-%d").to_string()
    }

    fn money(&mut self, max_cents: i64, comma: bool) -> String {
        let c = self.rng.random_range(0..max_cents);
        let s = format!("{}.{:02}", c / 100, c % 100);
        if comma { s.replace('.', ",") } else { s }
    }

    fn local(&mut self, day: NaiveDate) -> NaiveDateTime {
        // Avoid the hour the spring clock change skips.
        day.and_hms_opt(self.rng.random_range(5..23), self.rng.random_range(0..60), self.rng.random_range(0..60))
            .expect("valid time")
    }

    fn with_offset(t: NaiveDateTime) -> String {
        match Tallinn.from_local_datetime(&t).earliest() {
            Some(z) => z.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            None => t.format("%Y-%m-%dT%H:%M:%S+02:00").to_string(),
        }
    }

    /// Apply defect `bad` (0-based, cycling through kinds) to a row's fields.
    fn spoil(fields: &mut [String], bad: Option<usize>, key: usize, code: usize, date: usize, other: (usize, &str)) {
        let Some(k) = bad else { return };
        match k % 4 {
            0 => {
                // A wrong check digit.
                let c = fields[code].trim().trim_start_matches('\'').to_owned();
                let last = c.as_bytes().last().copied().unwrap_or(b'0');
                let wrong = char::from(b'0' + (last - b'0' + 1) % 10);
                fields[code] = format!("{}{wrong}", &c[..c.len().saturating_sub(1)]);
            }
            1 => fields[date] = "2024-02-30".replace('-', if fields[date].contains('.') { "." } else { "-" }),
            2 => fields[key].clear(),
            _ => fields[other.0] = other.1.to_owned(),
        }
    }

    fn population(&mut self, r: usize, bad: Option<usize>) {
        let idx = r % self.people.len();
        let p = &self.people[idx];
        let dead = self.rng.random_bool(0.02);
        let death = if dead { Self::iso(self.day(3000)) } else { String::new() };
        let (c, n) = COUNTIES[p.county];
        let mut f = vec![
            p.code.clone(),
            p.first.to_owned(),
            p.last.to_owned(),
            Self::iso(p.birth),
            if p.male { "M" } else { "N" }.to_owned(),
            if self.rng.random_bool(0.9) { "EST" } else { ["RUS", "UKR", "FIN", "LVA"][self.rng.random_range(0..4)] }
                .to_owned(),
            c.to_owned(),
            format!("{} tn {}, {} maakond", p.street, p.house, n),
            death,
            if dead { format!("SR{:08}", self.rng.random_range(0..99_999_999)) } else { String::new() },
        ];
        Self::spoil(&mut f, bad, 0, 0, 3, (4, "X"));
        self.row(&f);
    }

    fn invoice(&mut self, r: usize, bad: Option<usize>) {
        let code = self.who().code.clone();
        let code = self.code(&code);
        let (reg, name) = INSTITUTIONS[self.rng.random_range(0..INSTITUTIONS.len())];
        let start = self.day(365);
        let care = ["AMB", "AMB", "AMB", "STAT", "PAEV"][self.rng.random_range(0..5)];
        let len = if care == "STAT" { self.rng.random_range(1..20) } else { 0 };
        let end = start + Duration::days(len);
        let submitted = end + Duration::days(self.rng.random_range(1..30));
        let mut f = vec![
            format!("INV{:09}", r + 1),
            code,
            reg.to_owned(),
            name.to_owned(),
            DIAGNOSES[self.rng.random_range(0..DIAGNOSES.len())].to_owned(),
            care.to_owned(),
            self.money(500_000, true),
            Self::iso(start),
            Self::iso(end),
            Self::iso(submitted),
        ];
        Self::spoil(&mut f, bad, 0, 1, 7, (6, "12.50"));
        self.row(&f);
    }

    fn sick_leave(&mut self, r: usize, bad: Option<usize>) {
        let code = self.who().code.clone();
        let code = self.code(&code);
        let start = self.day(365);
        let end = start + Duration::days(self.rng.random_range(1..30));
        let dmy = |d: NaiveDate| d.format("%d.%m.%Y").to_string();
        let mut f = vec![
            format!("HL{:08}", r + 1),
            code,
            INSTITUTIONS[self.rng.random_range(0..INSTITUTIONS.len())].0.to_owned(),
            self.worker(),
            DIAGNOSES[self.rng.random_range(0..DIAGNOSES.len())].to_owned(),
            ["HAIGUS", "HAIGUS", "HOOLDUS", "RASEDUS", "TOOONN"][self.rng.random_range(0..5)].to_owned(),
            dmy(start),
            dmy(end),
        ];
        Self::spoil(&mut f, bad, 0, 1, 6, (5, "PUHKUS"));
        self.row(&f);
    }

    fn prescription(&mut self, r: usize, bad: Option<usize>) {
        let code = self.who().code.clone();
        let code = self.code(&code);
        let (atc, name) = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
        let mut f = vec![
            format!("DISP{:09}", r + 1),
            format!("RX{:010}", self.rng.random_range(0..9_999_999_999u64)),
            code,
            self.worker(),
            atc.to_owned(),
            name.to_owned(),
            PHARMACIES[self.rng.random_range(0..PHARMACIES.len())].to_owned(),
            Self::iso(self.day(365)),
            self.rng.random_range(1..4).to_string(),
            self.money(3_000, false),
            self.money(10_000, false),
        ];
        Self::spoil(&mut f, bad, 0, 2, 7, (9, "3,50"));
        self.row(&f);
    }

    fn ambulance(&mut self, r: usize, bad: Option<usize>) {
        let p = self.who();
        let (code, first, last, birth, male) = (p.code.clone(), p.first, p.last, p.birth, p.male);
        let county = self.rng.random_range(0..COUNTIES.len());
        let received = {
            let d = self.day(365);
            self.local(d)
        };
        let step =
            |t: NaiveDateTime, lo: i64, hi: i64, rng: &mut ChaCha8Rng| t + Duration::seconds(rng.random_range(lo..hi));
        let dispatched = step(received, 30, 240, &mut self.rng);
        let departed = step(dispatched, 30, 180, &mut self.rng);
        let arrived = step(departed, 180, 1800, &mut self.rng);
        let cancelled = self.rng.random_bool(0.05);
        let known = self.rng.random_bool(0.8);
        let to_hospital = !cancelled && self.rng.random_bool(0.6);
        let hosp = step(arrived, 600, 2400, &mut self.rng);
        let freed = step(if to_hospital { hosp } else { arrived }, 600, 3600, &mut self.rng);
        let returned = step(freed, 300, 2400, &mut self.rng);
        let t = |x: NaiveDateTime| Self::with_offset(x);
        let age = self.end.year() - birth.year();
        let (cc, cn) = COUNTIES[county];
        let mut f = vec![
            format!("{}-{:07}", self.end.year(), r + 1),
            t(received),
            format!("{}{:02}", ["TA", "TR", "PR", "IV"][county % 4], self.rng.random_range(1..40)),
            ["A", "B", "B", "C", "D"][self.rng.random_range(0..5)].to_owned(),
            if self.rng.random_bool(0.1) { "B".to_owned() } else { String::new() },
            CASE_TYPES[self.rng.random_range(0..CASE_TYPES.len())].to_owned(),
            REASONS[self.rng.random_range(0..REASONS.len())].to_owned(),
            DESCRIPTIONS[self.rng.random_range(0..DESCRIPTIONS.len())].to_owned(),
            if known { first.to_owned() } else { String::new() },
            if known { last.to_owned() } else { String::new() },
            if known || self.rng.random_bool(0.5) { age.to_string() } else { String::new() },
            if known { code } else { String::new() },
            if known { Self::iso(birth) } else { String::new() },
            if known { if male { "M" } else { "N" }.to_owned() } else { String::new() },
            if known { "EST".to_owned() } else { String::new() },
            if self.rng.random_bool(0.1) { self.rng.random_range(2..5).to_string() } else { "1".to_owned() },
            format!(
                "{} {}",
                FEMALE[self.rng.random_range(0..FEMALE.len())],
                LAST[self.rng.random_range(0..LAST.len())]
            ),
            format!("+372 5{:07}", self.rng.random_range(0..9_999_999)),
            format!(
                "{} tn {}, {cn} maakond",
                STREETS[self.rng.random_range(0..STREETS.len())],
                self.rng.random_range(1..99)
            ),
            cc.to_owned(),
            t(dispatched),
            t(departed),
            if cancelled { String::new() } else { t(arrived) },
            if to_hospital { t(hosp) } else { String::new() },
            if to_hospital { HOSPITALS[self.rng.random_range(0..HOSPITALS.len())].to_owned() } else { String::new() },
            if cancelled { String::new() } else { t(freed) },
            t(returned),
            if cancelled { t(arrived) } else { String::new() },
        ];
        if bad.is_some() && f[11].is_empty() {
            f[11] = self.people[0].code.clone();
        }
        Self::spoil(&mut f, bad, 0, 11, 1, (3, "E"));
        if bad.is_some_and(|k| k % 4 == 1) {
            f[1] = "2024-02-30T10:00:00+02:00".to_owned();
        }
        self.row(&f);
    }

    fn waiting(&mut self, r: usize, bad: Option<usize>) {
        let p = self.who();
        let (code, first, last) = (p.code.clone(), p.first, p.last);
        let code = self.code(&code);
        let confirmed = {
            let d = self.day(365);
            self.local(d)
        };
        let first_avail = confirmed + Duration::days(self.rng.random_range(1..60));
        let service = first_avail + Duration::days(self.rng.random_range(0..60));
        let fmt = |t: NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S").to_string();
        let (reg, name) = INSTITUTIONS[self.rng.random_range(0..INSTITUTIONS.len())];
        let changed = self.rng.random_bool(0.2);
        let cancelled = self.rng.random_bool(0.07);
        let paid = self.rng.random_bool(0.3);
        let mut f = vec![
            format!("B{:09}", r + 1),
            code,
            SPECIALTIES[self.rng.random_range(0..SPECIALTIES.len())].to_owned(),
            fmt(service),
            if self.rng.random_bool(0.9) { fmt(first_avail) } else { String::new() },
            fmt(confirmed),
            reg.to_owned(),
            name.to_owned(),
            if changed { fmt(confirmed + Duration::days(3)) } else { String::new() },
            if cancelled { fmt(confirmed + Duration::days(5)) } else { String::new() },
            if changed { ["PATIENT", "PROVIDER"][self.rng.random_range(0..2)].to_owned() } else { String::new() },
            if paid { format!("{first} {last}") } else { String::new() },
            if paid {
                format!(
                    "EE{:02}2200{:012}",
                    self.rng.random_range(10..99),
                    self.rng.random_range(0..999_999_999_999u64)
                )
            } else {
                String::new()
            },
            if paid { format!("{:011}", self.rng.random_range(0..99_999_999_999u64)) } else { String::new() },
            if paid { self.money(5_000, false) } else { String::new() },
            if cancelled { String::new() } else { ["Y", "N"][usize::from(self.rng.random_bool(0.1))].to_owned() },
        ];
        Self::spoil(&mut f, bad, 0, 1, 3, (10, "SYSTEM"));
        if bad.is_some_and(|k| k % 4 == 1) {
            f[3] = "2024-02-30T10:00:00".to_owned();
        }
        self.row(&f);
    }

    fn screening(&mut self, r: usize, bad: Option<usize>) {
        let p = self.who();
        let (code, first, last, male) = (p.code.clone(), p.first, p.last, p.male);
        let programme =
            if male { "COLORECTAL" } else { ["BREAST", "CERVICAL", "COLORECTAL"][self.rng.random_range(0..3)] };
        let mut f = vec![
            format!("SCR{:08}", r + 1),
            code,
            first.to_owned(),
            last.to_owned(),
            programme.to_owned(),
            ["sõeluuring", "kordusuuring"][usize::from(self.rng.random_bool(0.2))].to_owned(),
            INSTITUTIONS[self.rng.random_range(0..INSTITUTIONS.len())].0.to_owned(),
            Self::iso(self.day(365)),
        ];
        Self::spoil(&mut f, bad, 0, 1, 7, (4, "LUNG"));
        self.row(&f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_complete() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let opts = Options { rows: 40, ..Options::default() };
        let wa = generate(a.path(), &opts).unwrap();
        generate(b.path(), &opts).unwrap();
        assert_eq!(wa.len(), 7);
        for (p, _) in &wa {
            let rel = p.strip_prefix(a.path()).unwrap();
            assert_eq!(std::fs::read(p).unwrap(), std::fs::read(b.path().join(rel)).unwrap());
        }
        let presc = std::fs::read(a.path().join("prescriptions/prescriptions_20240331.csv")).unwrap();
        assert!(std::str::from_utf8(&presc).is_err(), "prescriptions are Windows-1257");
        let amb = std::fs::read_to_string(a.path().join("ambulance_calls/ambulance_calls_20240331.csv")).unwrap();
        assert!(amb.contains("\"\""), "quotes inside quoted fields");
    }
}
