//! Statistical disclosure control: which cells of a dataset to suppress before it is published.
//!
//! A cell is one row of a dataset: the values of its dimensions, the number
//! of distinct persons it is based on, and measures over them.
//!
//! - **Primary**: a cell based on fewer persons than the threshold.
//! - **Secondary**: further cells, so that no primary cell can be worked out
//!   from what is published. Datasets of the same *universe* partition the
//!   same records, so an attacker knows that their additive measures agree:
//!   on the grand total (assumed known, as such totals are published
//!   elsewhere), and on every total over the dimensions two datasets share
//!   (invoices by age and sex, summed over diagnoses in one dataset and over
//!   care types in another).
//!
//! Each of those facts is a linear equation over the suppressed cells. A
//! suppressed cell can be worked out exactly when its unit vector lies in the
//! span of the equations, which [`exposed`] decides by Gaussian elimination
//! over the prime field GF(2⁶¹−1): exact, and any combination that exposes a
//! cell over the rationals exposes it there too. Suppression is greedy: first
//! every equation with a single suppressed cell gets a second, its smallest
//! published cell; then, while elimination still exposes a suppressed cell,
//! the smallest published cell of an equation holding it goes. No suppressed
//! cell, primary or secondary, can be recomputed.
//! The pattern is per cell: a suppressed cell's every measure is hidden.

use std::collections::{BTreeMap, HashMap};

/// Why a cell is not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Suppression {
    Published,
    /// Based on fewer persons than the threshold.
    Primary,
    /// Hidden so that the primary cells cannot be worked out.
    Secondary,
}

impl Suppression {
    /// The flag column's value.
    pub fn flag(self) -> Option<&'static str> {
        match self {
            Suppression::Published => None,
            Suppression::Primary => Some("primary"),
            Suppression::Secondary => Some("secondary"),
        }
    }
}

/// One cell: its dimension values and the distinct persons it is based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub key: Vec<Option<String>>,
    pub persons: u64,
}

/// One dataset of a universe: its dimensions' names and its cells (keys in that order).
#[derive(Debug, Clone)]
pub struct Table<'a> {
    pub dimensions: Vec<&'a str>,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "result rows {} and {} have the same dimension values: a dataset's dimensions must tell its rows apart",
        first + 1,
        second + 1
    )]
    DuplicateCell { table: usize, first: usize, second: usize },
    #[error(
        "even with every cell suppressed, a cell of fewer than {threshold} persons could be worked out from the totals: coarsen the dimensions of the datasets of this universe"
    )]
    Unprotectable { threshold: u64 },
}

/// A known total: the cells (global index) with their coefficients, summing to a known value.
type Equation = Vec<(usize, u64)>;

/// The suppression of each cell of each table of one universe: tables whose
/// cells partition the same records, so that their additive measures have
/// the same grand total, and the same total over any group of cells that
/// share the values of the dimensions two tables have in common.
pub fn suppress(tables: &[Table], threshold: u64) -> Result<Vec<Vec<Suppression>>, Error> {
    for (t, table) in tables.iter().enumerate() {
        let mut seen: HashMap<&[Option<String>], usize> = HashMap::with_capacity(table.cells.len());
        for (i, c) in table.cells.iter().enumerate() {
            if let Some(first) = seen.insert(&c.key, i) {
                return Err(Error::DuplicateCell { table: t, first, second: i });
            }
        }
    }
    let cells: Vec<&Cell> = tables.iter().flat_map(|t| &t.cells).collect();
    let mut state: Vec<Suppression> = cells
        .iter()
        .map(|c| if c.persons < threshold { Suppression::Primary } else { Suppression::Published })
        .collect();
    if state.contains(&Suppression::Primary) {
        let equations = equations(tables);
        protect(&cells, &mut state, &equations, threshold)?;
    }
    let mut out = Vec::with_capacity(tables.len());
    let mut rest = state.as_slice();
    for t in tables {
        let (mine, after) = rest.split_at(t.cells.len());
        out.push(mine.to_vec());
        rest = after;
    }
    Ok(out)
}

/// What an attacker knows: each table's grand total, and for each pair of
/// tables, that their cells agree on every total over the dimensions they share.
fn equations(tables: &[Table]) -> Vec<Equation> {
    let offsets: Vec<usize> = tables
        .iter()
        .scan(0, |next, t| {
            let here = *next;
            *next += t.cells.len();
            Some(here)
        })
        .collect();
    let mut equations: Vec<Equation> =
        tables.iter().zip(&offsets).map(|(t, &o)| (o..o + t.cells.len()).map(|i| (i, 1)).collect()).collect();
    for (a, ta) in tables.iter().enumerate() {
        for (b, tb) in tables.iter().enumerate().skip(a + 1) {
            let shared: Vec<(usize, usize)> = ta
                .dimensions
                .iter()
                .enumerate()
                .filter_map(|(i, d)| tb.dimensions.iter().position(|e| e == d).map(|j| (i, j)))
                .collect();
            if shared.is_empty() {
                continue; // Equal grand totals: implied by the grand totals.
            }
            // Per value of the shared dimensions: the cells of `ta`, then those of `tb`.
            let mut groups: BTreeMap<Vec<&Option<String>>, [Vec<usize>; 2]> = BTreeMap::new();
            for (i, c) in ta.cells.iter().enumerate() {
                groups.entry(shared.iter().map(|&(d, _)| &c.key[d]).collect()).or_default()[0].push(offsets[a] + i);
            }
            for (i, c) in tb.cells.iter().enumerate() {
                groups.entry(shared.iter().map(|&(_, d)| &c.key[d]).collect()).or_default()[1].push(offsets[b] + i);
            }
            for [ours, theirs] in groups.into_values() {
                if ours.is_empty() || theirs.is_empty() {
                    continue;
                }
                equations
                    .push(ours.into_iter().map(|i| (i, 1)).chain(theirs.into_iter().map(|i| (i, P - 1))).collect());
            }
        }
    }
    equations
}

/// Add secondary suppressions until no suppressed cell follows from the equations.
fn protect(cells: &[&Cell], state: &mut [Suppression], equations: &[Equation], threshold: u64) -> Result<(), Error> {
    let unknown = |state: &[Suppression], e: &Equation| -> Vec<usize> {
        e.iter().map(|&(i, _)| i).filter(|&i| state[i] != Suppression::Published).collect()
    };
    // Fast pass: no total may hold a single suppressed cell.
    loop {
        let mut changed = false;
        for e in equations {
            if unknown(state, e).len() == 1 {
                let members: Vec<usize> = e.iter().map(|&(i, _)| i).collect();
                if let Some(pick) = smallest_published(cells, state, &members) {
                    state[pick] = Suppression::Secondary;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Exact pass: no suppressed cell may follow from any combination of totals.
    loop {
        let exposed = exposed(state, equations);
        if exposed.is_empty() {
            return Ok(());
        }
        for x in exposed {
            let around: Vec<usize> =
                equations.iter().filter(|e| e.iter().any(|&(i, _)| i == x)).flatten().map(|&(i, _)| i).collect();
            let anywhere: Vec<usize> = (0..cells.len()).collect();
            let pick = smallest_published(cells, state, &around)
                .or_else(|| smallest_published(cells, state, &anywhere))
                .ok_or(Error::Unprotectable { threshold })?;
            state[pick] = Suppression::Secondary;
        }
    }
}

fn smallest_published(cells: &[&Cell], state: &[Suppression], among: &[usize]) -> Option<usize> {
    among.iter().copied().filter(|&i| state[i] == Suppression::Published).min_by_key(|&i| (cells[i].persons, i))
}

/// The suppressed cells whose value follows from the equations.
fn exposed(state: &[Suppression], equations: &[Equation]) -> Vec<usize> {
    let unknowns: Vec<usize> = (0..state.len()).filter(|&i| state[i] != Suppression::Published).collect();
    let column: HashMap<usize, usize> = unknowns.iter().enumerate().map(|(c, &i)| (i, c)).collect();
    let mut rows: Vec<Vec<u64>> = equations
        .iter()
        .filter_map(|e| {
            let mut row = vec![0u64; unknowns.len()];
            let mut any = false;
            for &(i, coefficient) in e {
                if let Some(&c) = column.get(&i) {
                    row[c] = coefficient;
                    any = true;
                }
            }
            any.then_some(row)
        })
        .collect();
    let pivots = reduce(&mut rows, unknowns.len());
    pivots
        .into_iter()
        .filter(|&(col, r)| rows[r].iter().enumerate().all(|(c, &v)| c == col || v == 0))
        .map(|(col, _)| unknowns[col])
        .collect()
}

/// The prime of the field the elimination runs in: 2⁶¹ − 1.
const P: u64 = (1 << 61) - 1;

fn mul(a: u64, b: u64) -> u64 {
    // Reduction modulo a Mersenne prime: fold the high bits onto the low ones.
    let x = a as u128 * b as u128;
    let folded = (x & P as u128) as u64 + (x >> 61) as u64;
    let folded = (folded & P) + (folded >> 61);
    if folded >= P { folded - P } else { folded }
}

fn inverse(a: u64) -> u64 {
    // Fermat: a^(P-2).
    let (mut result, mut base, mut e) = (1u64, a, P - 2);
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// Reduce `rows` to reduced row echelon form; returns (pivot column, row).
fn reduce(rows: &mut [Vec<u64>], columns: usize) -> Vec<(usize, usize)> {
    let mut pivots = Vec::new();
    let mut next = 0;
    for col in 0..columns {
        let Some(found) = (next..rows.len()).find(|&r| rows[r][col] != 0) else { continue };
        rows.swap(next, found);
        let inv = inverse(rows[next][col]);
        for v in rows[next].iter_mut() {
            *v = mul(*v, inv);
        }
        let pivot = rows[next].clone();
        for (r, row) in rows.iter_mut().enumerate() {
            if r == next || row[col] == 0 {
                continue;
            }
            let factor = row[col];
            for (v, p) in row.iter_mut().zip(&pivot) {
                if *p != 0 {
                    let sub = mul(factor, *p);
                    *v = if *v >= sub { *v - sub } else { *v + P - sub };
                }
            }
        }
        pivots.push((col, next));
        next += 1;
    }
    pivots
}

#[cfg(test)]
mod tests {
    use super::*;
    use Suppression::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn table<'a>(dimensions: &[&'a str], rows: &[(&[&str], u64)]) -> Table<'a> {
        Table {
            dimensions: dimensions.to_vec(),
            cells: rows
                .iter()
                .map(|(key, persons)| Cell {
                    key: key.iter().map(|k| Some((*k).to_owned())).collect(),
                    persons: *persons,
                })
                .collect(),
        }
    }

    #[test]
    fn nothing_small_nothing_suppressed() {
        let t = table(&["d"], &[(&["a"], 5), (&["b"], 9)]);
        assert_eq!(suppress(&[t], 5).unwrap(), [[Published, Published]]);
    }

    #[test]
    fn a_lone_small_cell_takes_the_smallest_other_with_it_because_of_the_grand_total() {
        let t = table(&["d"], &[(&["a"], 2), (&["b"], 30), (&["c"], 7), (&["d"], 12)]);
        assert_eq!(suppress(&[t], 5).unwrap(), [[Primary, Published, Secondary, Published]]);
    }

    #[test]
    fn totals_another_table_gives_need_a_second_cell() {
        // A by (age, chapter), B by (age, care): B's cells total A's ages.
        let a = table(&["age", "chapter"], &[(&["0-4", "J06"], 2), (&["0-4", "E11"], 20), (&["5-9", "J06"], 30)]);
        let b = table(&["age", "care"], &[(&["0-4", "AMB"], 22), (&["5-9", "AMB"], 30)]);
        let s = suppress(&[a.clone(), b.clone()], 5).unwrap();
        assert_eq!(s[0][0], Primary);
        // 0-4 in A: 2 + 20 = B's 22; hiding only (0-4, J06) would give it away.
        assert!(s[0][1] != Published || s[1][0] != Published);
        let tables = [a, b];
        let flat: Vec<Suppression> = s.concat();
        assert!(exposed(&flat, &equations(&tables)).is_empty());
    }

    #[test]
    fn field_arithmetic_is_exact() {
        for (a, b) in [(P - 1, P - 1), (P - 1, 2), (1 << 60, 1 << 60), (123_456_789, 987_654_321)] {
            assert_eq!(mul(a, b), ((a as u128 * b as u128) % P as u128) as u64);
        }
        assert_eq!(mul(inverse(12345), 12345), 1);
    }

    #[test]
    fn the_exact_test_finds_a_cell_that_follows_from_several_totals() {
        // x0 + x1 = a, x1 − x2 = b, x2 = c: x0 follows, though no total holds it alone.
        let state = [Primary, Secondary, Secondary];
        let eq = |cells: &[(usize, u64)]| cells.to_vec();
        assert_eq!(exposed(&state, &[eq(&[(0, 1), (1, 1)]), eq(&[(1, 1), (2, P - 1)]), eq(&[(2, 1)])]), [0, 1, 2]);
        assert!(exposed(&state, &[eq(&[(0, 1), (1, 1)]), eq(&[(1, 1), (2, P - 1)])]).is_empty());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let t = table(&["d"], &[(&["a"], 9), (&["a"], 9)]);
        assert_eq!(suppress(&[t], 5), Err(Error::DuplicateCell { table: 0, first: 0, second: 1 }));
    }

    #[test]
    fn a_table_of_one_small_cell_cannot_be_protected() {
        let t = table(&["d"], &[(&["a"], 3)]);
        assert_eq!(suppress(&[t], 5), Err(Error::Unprotectable { threshold: 5 }));
    }

    /// An attacker independent of the elimination: repeatedly solve any
    /// equation with one unknown left. Returns the cells it recovers.
    fn peel(state: &[Suppression], equations: &[Equation]) -> Vec<usize> {
        let mut known: Vec<bool> = state.iter().map(|s| *s == Published).collect();
        let mut recovered = Vec::new();
        loop {
            let next = equations.iter().find_map(|e| {
                let u: Vec<usize> = e.iter().map(|&(i, _)| i).filter(|&i| !known[i]).collect();
                (u.len() == 1).then(|| u[0])
            });
            match next {
                Some(i) => {
                    known[i] = true;
                    recovered.push(i);
                }
                None => return recovered,
            }
        }
    }

    proptest! {
        /// Records with three attributes; A counts them by (d0, d1), B by (d0, d2).
        #[test]
        fn no_suppressed_cell_can_be_worked_out(
            records in prop::collection::vec((0u8..3, 0u8..4, 0u8..3, 0u16..400), 1..120),
        ) {
            let count = |dims: [usize; 2]| {
                let mut cells: BTreeMap<Vec<Option<String>>, BTreeSet<u16>> = BTreeMap::new();
                for r in &records {
                    let v = [r.0, r.1, r.2];
                    cells.entry(dims.iter().map(|&d| Some(v[d].to_string())).collect()).or_default().insert(r.3);
                }
                cells.into_iter().map(|(key, persons)| Cell { key, persons: persons.len() as u64 }).collect::<Vec<_>>()
            };
            let a = Table { dimensions: vec!["d0", "d1"], cells: count([0, 1]) };
            let b = Table { dimensions: vec!["d0", "d2"], cells: count([0, 2]) };
            let tables = [a, b];
            match suppress(&tables, 5) {
                Ok(s) => {
                    let flat = s.concat();
                    let cells: Vec<&Cell> = tables.iter().flat_map(|t| &t.cells).collect();
                    let eqs = equations(&tables);
                    let found: Vec<usize> = exposed(&flat, &eqs).into_iter().chain(peel(&flat, &eqs)).collect();
                    prop_assert!(found.is_empty(), "suppressed cells {found:?} can be worked out");
                    for (c, s) in cells.iter().zip(&flat) {
                        prop_assert_eq!(*s == Primary, c.persons < 5);
                    }
                }
                // Only when too few records leave nothing to hide behind.
                Err(e) => {
                    prop_assert_eq!(e, Error::Unprotectable { threshold: 5 });
                    prop_assert!(tables.iter().any(|t| t.cells.len() < 3));
                }
            }
        }
    }
}
