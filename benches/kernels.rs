//! Criterion benches of the hot kernels: one pseudonym, a column's digests,
//! one isikukood check, framing a delivery.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ladu::config::source::Encoding;
use ladu::ingest::framer::Framer;
use ladu::pseudonym::{Key, Pseudonymiser, isikukood};

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
            let (mut framer, _) = Framer::new(data.as_slice(), Encoding::Utf8, b';', 4 << 20).expect("a header");
            while let Some(chunk) = framer.next_chunk().expect("well-formed") {
                black_box(chunk.lines.len());
                framer.recycle(chunk.data);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, pseudonymise, check_digit, framing);
criterion_main!(benches);
