//! Criterion benches of the hot kernels: one pseudonym, a column's digests,
//! one isikukood check, framing a delivery, disclosure control of a release.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ladu::config::source::Encoding;
use ladu::ingest::framer::{Framer, Limits};
use ladu::pseudonym::{Key, Pseudonymiser, isikukood};
use ladu::publish::disclosure::{self, Cell, Table};

fn codes(n: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..n)
        .map(|_| {
            isikukood::make(
                rng.random_range(1..=6),
                rng.random_range(0..100),
                rng.random_range(1..=12),
                rng.random_range(1..=28),
                rng.random_range(0..1000),
            )
        })
        .collect()
}

/// Bench `f` over 4096 generated personal codes, one element per code.
fn per_code(c: &mut Criterion, group: &str, name: &str, f: impl Fn(&str)) {
    let codes = codes(4096);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(codes.len() as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            for code in &codes {
                f(black_box(code));
            }
        })
    });
    g.finish();
}

fn pseudonymise(c: &mut Criterion) {
    let key = Key::from_hex(&"5a".repeat(32)).expect("valid key");
    let ps = Pseudonymiser::new(&key, "isikukood");
    per_code(c, "pseudonym", "isikukood x4096", |code| {
        black_box(ps.pseudonym(code.as_bytes()));
    });
    // As the ingest hashes a column: raw digests, two at a time where the
    // processor has the SHA extensions.
    let codes = codes(4096);
    let ids: Vec<&str> = codes.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("pseudonym");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("isikukood x4096 digests", |b| b.iter(|| black_box(ps.digests(black_box(&ids)))));
    g.finish();
}

fn check_digit(c: &mut Criterion) {
    per_code(c, "isikukood", "is_valid x4096", |code| {
        black_box(isikukood::is_valid(isikukood::normalise(code)));
    });
}

/// An invoices delivery of `rows` rows, as providers send it.
fn invoices(rows: usize) -> Vec<u8> {
    let mut out = b"invoice_id;isikukood;provider_regcode;provider_name;main_diagnosis;care_type;amount;start_date;end_date;submitted_date\n".to_vec();
    for (i, code) in codes(rows).iter().enumerate() {
        let line = format!(
            "INV{i:09};{code};90001478;P\u{f5}hja-Eesti Regionaalhaigla SA;J20.9;AMB;{},{:02};2024-01-{:02};2024-01-{:02};2024-02-01\n",
            i % 5000,
            i % 100,
            1 + i % 28,
            1 + i % 28
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

fn framing(c: &mut Criterion) {
    let data = invoices(100_000);
    let mut g = c.benchmark_group("framer");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("invoices 100k rows", |b| {
        b.iter(|| {
            let (mut framer, _) =
                Framer::new(data.as_slice(), Encoding::Utf8, b';', Limits::new(4 << 20, 1 << 20)).expect("a header");
            while let Some(chunk) = framer.next_chunk().expect("well-formed") {
                black_box(chunk.lines.len());
                framer.recycle(chunk.data);
            }
        })
    });
    g.finish();
}

/// Two datasets of one universe, as the shipped invoice datasets: `records`
/// invoices of 40k persons by (diagnosis chapter, age band, sex) and by
/// (care type, age band, sex), with chapters as skewed as diagnoses are.
fn universe(records: usize) -> Vec<Table<'static>> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut a: std::collections::BTreeMap<[String; 3], std::collections::BTreeSet<u32>> = Default::default();
    let mut b: std::collections::BTreeMap<[String; 3], std::collections::BTreeSet<u32>> = Default::default();
    for _ in 0..records {
        let person: u32 = rng.random_range(0..40_000);
        let chapter = (rng.random_range(0.0f64..1.0).powi(3) * 120.0) as u32;
        let (age, sex) = ((person % 19).to_string(), (person % 2).to_string());
        let care = rng.random_range(0..3u32).to_string();
        a.entry([chapter.to_string(), age.clone(), sex.clone()]).or_default().insert(person);
        b.entry([care, age, sex]).or_default().insert(person);
    }
    let cells = |m: std::collections::BTreeMap<[String; 3], std::collections::BTreeSet<u32>>| {
        m.into_iter().map(|(k, p)| Cell { key: k.into_iter().map(Some).collect(), persons: p.len() as u64 }).collect()
    };
    vec![
        Table { dimensions: vec!["chapter", "age", "sex"], cells: cells(a) },
        Table { dimensions: vec!["care", "age", "sex"], cells: cells(b) },
    ]
}

fn disclosure_control(c: &mut Criterion) {
    let mut g = c.benchmark_group("disclosure");
    g.sample_size(10);
    for records in [20_000, 100_000] {
        let tables = universe(records);
        let cells: usize = tables.iter().map(|t| t.cells.len()).sum();
        let primary: usize = tables.iter().flat_map(|t| &t.cells).filter(|c| c.persons < 5).count();
        g.throughput(Throughput::Elements(cells as u64));
        g.bench_function(format!("{cells} cells, {primary} primary"), |b| {
            b.iter(|| black_box(disclosure::suppress(black_box(&tables), 5).expect("protectable")))
        });
    }
    g.finish();
}

criterion_group!(benches, pseudonymise, check_digit, framing, disclosure_control);
criterion_main!(benches);
