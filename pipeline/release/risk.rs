//! Re-identification risk of a release: how many persons share each combination of the quasi-identifiers it returns.
//!
//! Rows are grouped by the values of the result's quasi-identifier columns
//! (nulls form their own value). Which columns those are, and which column
//! names the person, the release decides by lineage ([`crate::sql::lineage`]),
//! not by name. A group's size counts distinct persons when the result has a
//! person column (a row without one counts as a person of its own), else
//! distinct rows: identical rows (padding, a result repeated) count once. The release's `k` is its smallest group; a group smaller than the
//! configured minimum could single a person out.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};

use super::record;
use serde::Serialize;

/// The measured risk of one release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Risk {
    /// Quasi-identifier columns of the result (empty: nothing measured).
    pub quasi_identifiers: Vec<String>,
    /// What a group's size counts: `persons` (distinct pseudonyms of the person
    /// column) or `distinct rows` (when no person column could be established).
    pub counted: &'static str,
    /// Combinations of quasi-identifier values in the result.
    pub groups: u64,
    /// The smallest group's size (`None` when there are no quasi-identifiers or no rows).
    pub smallest_group: Option<u64>,
    /// The configured minimum group size.
    pub min_group_size: u64,
    pub rows: u64,
    /// Rows in groups smaller than the minimum, and their share of all rows.
    pub rows_in_small_groups: u64,
    pub share_in_small_groups: f64,
}

impl Risk {
    /// Could a group single a person out?
    pub fn too_high(&self) -> bool {
        self.smallest_group.is_some_and(|k| k < self.min_group_size)
    }
}

/// Measures a result batch by batch, holding one entry per group and per (group, person).
pub struct RiskMeter {
    qi: Vec<usize>,
    names: Vec<String>,
    person: Option<usize>,
    converter: Option<RowConverter>,
    /// Each combination of quasi-identifier values (in Arrow's row format) and its group number.
    groups: HashMap<Box<[u8]>, u32>,
    /// Per group: rows, and rows with no person (each counts as a person of its own).
    rows_of: Vec<u64>,
    unknown_of: Vec<u64>,
    /// (group, person) pairs: a pseudonym as its 16 bytes, any other text as it is.
    persons: foldhash::HashSet<(u32, u128)>,
    other_persons: HashSet<(u32, String)>,
    /// Without a person column: the columns that tell rows apart, and each group's distinct rows.
    identity: Option<(Vec<usize>, RowConverter)>,
    distinct_rows: HashSet<(u32, Box<[u8]>)>,
    rows: u64,
}

impl RiskMeter {
    /// For results of `schema`, whose columns `qi` are the quasi-identifiers
    /// and whose column `person`, if any, holds the person's pseudonym; with
    /// no person column, each distinct row of the columns `identity` counts
    /// as one person (identical rows count once).
    pub fn new(
        schema: &SchemaRef,
        qi: Vec<usize>,
        person: Option<usize>,
        identity: Vec<usize>,
    ) -> Result<RiskMeter, ArrowError> {
        let identity = match person {
            Some(_) => None,
            None => {
                let fields = identity.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect();
                Some((identity, RowConverter::new(fields)?))
            }
        };
        let names = qi.iter().map(|&i| schema.field(i).name().clone()).collect();
        let converter = if qi.is_empty() {
            None
        } else {
            Some(RowConverter::new(qi.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect())?)
        };
        Ok(RiskMeter {
            qi,
            names,
            person,
            converter,
            groups: HashMap::new(),
            rows_of: Vec::new(),
            unknown_of: Vec::new(),
            persons: foldhash::HashSet::default(),
            other_persons: HashSet::new(),
            identity,
            distinct_rows: HashSet::new(),
            rows: 0,
        })
    }

    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        self.rows += batch.num_rows() as u64;
        let Some(converter) = &self.converter else { return Ok(()) };
        let columns: Vec<_> = self.qi.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = converter.convert_columns(&columns)?;
        let persons = match self.person {
            Some(i) => Some(arrow::compute::cast(batch.column(i), &DataType::Utf8)?),
            None => None,
        };
        let persons = persons.as_ref().map(|p| p.as_string::<i32>());
        let identities = match &self.identity {
            Some((columns, converter)) => {
                Some(converter.convert_columns(&columns.iter().map(|&i| batch.column(i).clone()).collect::<Vec<_>>())?)
            }
            None => None,
        };
        for (row, key) in keys.iter().enumerate() {
            let group = match self.groups.get(key.as_ref()) {
                Some(&g) => g,
                None => {
                    let g = self.rows_of.len() as u32;
                    self.groups.insert(key.as_ref().into(), g);
                    self.rows_of.push(0);
                    self.unknown_of.push(0);
                    g
                }
            };
            self.rows_of[group as usize] += 1;
            if let Some(identities) = &identities {
                let id = identities.row(row);
                if !self.distinct_rows.contains(&(group, Box::from(id.as_ref()))) {
                    self.distinct_rows.insert((group, id.as_ref().into()));
                }
            }
            let Some(persons) = persons else { continue };
            if persons.is_null(row) {
                self.unknown_of[group as usize] += 1;
            } else {
                let person = persons.value(row);
                match record::pseudonym_bits(person) {
                    Some(bits) => {
                        self.persons.insert((group, bits));
                    }
                    None => {
                        if !self.other_persons.contains(&(group, person.to_owned())) {
                            self.other_persons.insert((group, person.to_owned()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn finish(self, min_group_size: u64) -> Risk {
        let by_person = self.person.is_some();
        let sizes: Vec<u64> = if by_person {
            let mut sizes = self.unknown_of.clone();
            for (g, _) in &self.persons {
                sizes[*g as usize] += 1;
            }
            for (g, _) in &self.other_persons {
                sizes[*g as usize] += 1;
            }
            sizes
        } else {
            let mut sizes = vec![0; self.rows_of.len()];
            for (g, _) in &self.distinct_rows {
                sizes[*g as usize] += 1;
            }
            sizes
        };
        let rows_in_small_groups: u64 =
            sizes.iter().zip(&self.rows_of).filter(|(size, _)| **size < min_group_size).map(|(_, rows)| rows).sum();
        Risk {
            quasi_identifiers: self.names,
            counted: if by_person { "persons" } else { "distinct rows" },
            groups: sizes.len() as u64,
            smallest_group: sizes.iter().copied().min(),
            min_group_size,
            rows: self.rows,
            rows_in_small_groups,
            share_in_small_groups: if self.rows == 0 { 0.0 } else { rows_in_small_groups as f64 / self.rows as f64 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn batch(person: bool, rows: &[(Option<&str>, i64, Option<&str>)]) -> RecordBatch {
        let mut fields =
            vec![Field::new("Sex", DataType::Utf8, true), Field::new("birth_year", DataType::Int64, false)];
        let mut columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        ];
        if person {
            fields.push(Field::new("person_id", DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// The quasi-identifiers `Sex` and `birth_year`, and the person column when there is one.
    fn meter(b: &RecordBatch) -> RiskMeter {
        let person = b.schema().index_of("person_id").ok();
        RiskMeter::new(&b.schema(), vec![0, 1], person, vec![0, 1]).unwrap()
    }

    #[test]
    fn groups_count_persons_not_rows() {
        // Three rows of one person born 1980: one person, however many invoices.
        let b = batch(
            true,
            &[
                (Some("M"), 1980, Some("a")),
                (Some("M"), 1980, Some("a")),
                (Some("M"), 1980, Some("a")),
                (Some("N"), 1990, Some("b")),
                (Some("N"), 1990, Some("c")),
                (None, 1990, None),
            ],
        );
        let mut m = meter(&b);
        m.add(&b).unwrap();
        let r = m.finish(2);
        assert_eq!(r.quasi_identifiers, ["Sex", "birth_year"]);
        assert_eq!((r.counted, r.groups, r.smallest_group, r.rows), ("persons", 3, Some(1), 6));
        // The 1980 man's three rows and the row with no sex, of six.
        assert_eq!(r.rows_in_small_groups, 4);
        assert!(r.too_high());
    }

    #[test]
    fn without_person_column_rows_count_and_without_quasi_identifiers_nothing_is_measured() {
        let b = batch(false, &[(Some("M"), 1980, None), (Some("M"), 1980, None)]);
        let mut m = meter(&b);
        m.add(&b).unwrap();
        let r = m.finish(2);
        // Two identical rows are one row, however often they are repeated.
        assert_eq!((r.counted, r.smallest_group, r.too_high()), ("distinct rows", Some(1), true));
        let mut m = RiskMeter::new(&b.schema(), Vec::new(), None, Vec::new()).unwrap();
        m.add(&b).unwrap();
        let r = m.finish(5);
        assert_eq!((r.smallest_group, r.too_high(), r.rows), (None, false, 2));
    }

    proptest! {
        /// Batch boundaries do not change the measurement, and k agrees with a plain count.
        #[test]
        fn agrees_with_a_plain_count(rows in proptest::collection::vec((0..2u8, 1980..1984i64, 0..6u8), 1..60), split in 0usize..60) {
            let rows: Vec<(Option<&str>, i64, Option<String>)> =
                rows.iter().map(|(s, y, p)| {
                    // Pseudonyms and other text, counted apart.
                    let person = if *p < 3 { format!("{:032x}", p) } else { format!("p{p}") };
                    (Some(["M", "N"][*s as usize]), *y, Some(person))
                }).collect();
            let view: Vec<(Option<&str>, i64, Option<&str>)> = rows.iter().map(|(s, y, p)| (*s, *y, p.as_deref())).collect();
            let whole = batch(true, &view);
            let split = split.min(view.len());
            let mut m = meter(&whole);
            m.add(&whole.slice(0, split)).unwrap();
            m.add(&whole.slice(split, view.len() - split)).unwrap();
            let r = m.finish(3);
            let mut plain: HashMap<(Option<&str>, i64), HashSet<Option<&str>>> = HashMap::new();
            for (s, y, p) in &view {
                plain.entry((*s, *y)).or_default().insert(*p);
            }
            prop_assert_eq!(r.smallest_group, plain.values().map(|p| p.len() as u64).min());
            prop_assert_eq!(r.groups, plain.len() as u64);
            let small: u64 = view.iter().filter(|(s, y, _)| plain[&(*s, *y)].len() < 3).count() as u64;
            prop_assert_eq!(r.rows_in_small_groups, small);
        }
    }
}
