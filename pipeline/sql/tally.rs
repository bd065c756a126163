//! Counts of a batch with few groups, made as partial states for DataFusion's count accumulators to merge.
//!
//! DataFusion's count adds one to each row's group in turn (`counts[g] += 1`).
//! With few groups, consecutive rows mostly hit the same slot, and each
//! addition waits for the store of the one before: counting invoices by care
//! type (q1) spent a tenth of its time there. Here each group has [`LANES`]
//! slots that rows take in turn, so additions to one group overlap, and the
//! lanes are added up once per batch; the batch's counts are then merged
//! into the groups' as a final phase merges partial counts. (Sums were tried
//! the same way and gained nothing: reading their values, not the additions,
//! is what they wait for.)

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::GroupsAccumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

/// Slots per group that consecutive rows take in turn.
const LANES: usize = 4;

/// Most groups an aggregate may have for a batch to be counted here: the lanes of every group are made per batch.
pub(super) const MAX_GROUPS: usize = 1024;

/// Is `aggregate` a plain `count` of one argument, whose state is its number of rows?
pub(super) fn is_count(aggregate: &AggregateFunctionExpr) -> bool {
    aggregate.fun().name() == "count"
        && !aggregate.is_distinct()
        && aggregate.order_bys().is_empty()
        && aggregate.expressions().len() == 1
        && aggregate.state_fields().is_ok_and(|f| matches!(f.as_slice(), [s] if s.data_type() == &DataType::Int64))
}

/// Merges the count of a batch's rows (whose argument has no nulls), each row in group `rows[i]` of
/// `total` (at most [`MAX_GROUPS`]), into a count's `accumulator`. `counts` is each group's number of
/// rows in the batch, shared by the batch's counts and made by the first.
pub(super) fn merge_count(
    accumulator: &mut dyn GroupsAccumulator,
    rows: &[usize],
    total: usize,
    counts: &mut Option<Vec<i64>>,
) -> DfResult<()> {
    let counts = counts.get_or_insert_with(|| count(rows, total));
    // Only the groups the batch has, as a partial aggregate of the batch would state them.
    let present: Vec<usize> = (0..total).filter(|&g| counts[g] > 0).collect();
    let state: ArrayRef = Arc::new(Int64Array::from_iter_values(present.iter().map(|&g| counts[g])));
    accumulator.merge_batch(&[state], &present, total)
}

/// How many of `rows` are in each group of `total`.
fn count(rows: &[usize], total: usize) -> Vec<i64> {
    let mut lanes = vec![[0i64; LANES]; total];
    let (quads, rest) = rows.as_chunks::<LANES>();
    for quad in quads {
        for (lane, &g) in quad.iter().enumerate() {
            lanes[g][lane] += 1;
        }
    }
    for &g in rest {
        lanes[g][0] += 1;
    }
    lanes.iter().map(|l| l.iter().sum()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Counts by group are those of adding each row in turn, for any number of rows (quads and
        /// the rest) and groups hit in runs or scattered.
        #[test]
        fn counts_are_those_of_adding_row_by_row(
            groups in prop_oneof![prop::collection::vec(0..7usize, 0..60), prop::collection::vec(0..2usize, 0..60)],
        ) {
            let mut counts = vec![0i64; 7];
            for &g in &groups {
                counts[g] += 1;
            }
            prop_assert_eq!(count(&groups, 7), counts);
        }
    }
}
