//! Criterion benches of the hot kernels: one pseudonym, one isikukood check.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

fn pseudonymise(c: &mut Criterion) {
    let key = Key::from_hex(&"5a".repeat(32)).expect("valid key");
    let ps = Pseudonymiser::new(&key, "isikukood");
    let codes = codes(4096);
    let mut g = c.benchmark_group("pseudonym");
    g.throughput(Throughput::Elements(codes.len() as u64));
    g.bench_function("isikukood x4096", |b| {
        b.iter(|| {
            for code in &codes {
                black_box(ps.pseudonym(black_box(code.as_bytes())));
            }
        })
    });
    g.finish();
}

fn check_digit(c: &mut Criterion) {
    let codes = codes(4096);
    let mut g = c.benchmark_group("isikukood");
    g.throughput(Throughput::Elements(codes.len() as u64));
    g.bench_function("is_valid x4096", |b| {
        b.iter(|| {
            for code in &codes {
                black_box(isikukood::is_valid(black_box(isikukood::normalise(code))));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, pseudonymise, check_digit);
criterion_main!(benches);
