//! `median` of decimals of up to 18 digits (amounts) grouped with each value kept in 8 bytes, not 16.
//!
//! A grouped median keeps every value of its group until the end.
//! DataFusion keeps a `Decimal128` in 16 bytes, though the warehouse's
//! amounts have at most 18 digits and fit in 8: `median(amount)` by care
//! type over 10M invoices held 160 MB of values (in growing vectors, up to
//! twice that). This `median` is DataFusion's in every respect but one:
//! grouped over a `Decimal128` of precision 18 or less, it gives DataFusion's
//! own accumulator the values as `Decimal64` (exactly the same numbers) and
//! widens what it hands back. The median of two middle values is their sum
//! halved, truncated, in either width alike; the states between phases keep
//! the `Decimal128` lists DataFusion's `median` has.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::Result as DfResult;
use datafusion::functions_aggregate::median::Median;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo};
use datafusion::logical_expr::{GroupsAccumulator, Signature};

/// Most digits a `Decimal64` holds.
const NARROW_DIGITS: u8 = 18;

/// DataFusion's `median`, with grouped decimals of up to 18 digits kept in 8 bytes each.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct CompactMedian(Median);

impl CompactMedian {
    /// The function, to register in place of DataFusion's `median`.
    pub fn udaf() -> Arc<AggregateUDF> {
        Arc::new(AggregateUDF::new_from_impl(CompactMedian::default()))
    }
}

/// The narrow type of a decimal type that has one.
fn narrow(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Decimal128(p, s) if *p <= NARROW_DIGITS => Some(DataType::Decimal64(*p, *s)),
        _ => None,
    }
}

/// A list of `t` as the median's state has it.
fn list_of(t: &DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(t.clone(), true)))
}

impl AggregateUDFImpl for CompactMedian {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn signature(&self) -> &Signature {
        self.0.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.0.return_type(arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        self.0.state_fields(args)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        self.0.accumulator(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.0.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn GroupsAccumulator>> {
        let wide = args.expr_fields.first().map(|f| f.data_type().clone());
        let Some((wide, narrow)) = wide.and_then(|w| narrow(&w).map(|n| (w, n))) else {
            return self.0.create_groups_accumulator(args);
        };
        let fields: Vec<FieldRef> =
            args.expr_fields.iter().map(|f| Arc::new(f.as_ref().clone().with_data_type(narrow.clone()))).collect();
        let narrow_args = AccumulatorArgs {
            return_field: Arc::new(args.return_field.as_ref().clone().with_data_type(narrow.clone())),
            expr_fields: &fields,
            ..args
        };
        let inner = self.0.create_groups_accumulator(narrow_args)?;
        Ok(Box::new(Narrowed { inner, wide, narrow }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.0.documentation()
    }
}

/// DataFusion's grouped median over the narrow type, taking and giving the wide one.
struct Narrowed {
    inner: Box<dyn GroupsAccumulator>,
    wide: DataType,
    narrow: DataType,
}

impl std::fmt::Debug for Narrowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Narrowed({} as {})", self.wide, self.narrow)
    }
}

impl Narrowed {
    /// The values (or lists of them) of the wide type cast to the narrow one; exact, since the
    /// precision fits, and an error (not a null) for a value beyond its precision.
    fn narrowed(&self, values: &[ArrayRef], list: bool) -> DfResult<Vec<ArrayRef>> {
        let to = if list { list_of(&self.narrow) } else { self.narrow.clone() };
        let strict = arrow::compute::CastOptions { safe: false, ..Default::default() };
        Ok(values.iter().map(|v| arrow::compute::cast_with_options(v, &to, &strict)).collect::<Result<_, _>>()?)
    }

    /// The state lists of the narrow type widened.
    fn widened_lists(&self, states: Vec<ArrayRef>) -> DfResult<Vec<ArrayRef>> {
        let to = list_of(&self.wide);
        Ok(states.iter().map(|s| arrow::compute::cast(s, &to)).collect::<Result<_, _>>()?)
    }
}

impl GroupsAccumulator for Narrowed {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        let values = self.narrowed(values, false)?;
        self.inner.update_batch(&values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        Ok(arrow::compute::cast(&self.inner.evaluate(emit_to)?, &self.wide)?)
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        let states = self.inner.state(emit_to)?;
        self.widened_lists(states)
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> DfResult<()> {
        let values = self.narrowed(values, true)?;
        self.inner.merge_batch(&values, group_indices, total_num_groups)
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> DfResult<Vec<ArrayRef>> {
        let states = self.inner.convert_to_state(&self.narrowed(values, false)?, opt_filter)?;
        self.widened_lists(states)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::testing::run;
    use arrow::array::{Decimal128Array, Int32Array, RecordBatch};
    use arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// A session over `t(g, a)`: `a` a `Decimal128(precision, 2)`, in batches of three rows over
    /// two partitions; with this median or DataFusion's.
    fn context(rows: &[(i32, Option<i128>)], precision: u8, ours: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int32, false),
            Field::new("a", DataType::Decimal128(precision, 2), true),
        ]));
        let batches: Vec<RecordBatch> = rows
            .chunks(3)
            .map(|chunk| {
                let g = Int32Array::from_iter_values(chunk.iter().map(|r| r.0));
                let a = Decimal128Array::from_iter(chunk.iter().map(|r| r.1))
                    .with_precision_and_scale(precision, 2)
                    .expect("a valid decimal type");
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(g), Arc::new(a)]).expect("a batch")
            })
            .collect();
        let (even, odd): (Vec<_>, Vec<_>) = batches.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let partitions = [even, odd].map(|p| p.into_iter().map(|(_, b)| b).collect::<Vec<_>>());
        let table = MemTable::try_new(schema, partitions.to_vec()).expect("a table");
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        if ours {
            ctx.register_udaf(CompactMedian::udaf().as_ref().clone());
        }
        ctx.register_table("t", Arc::new(table)).expect("registered");
        ctx
    }

    const QUERIES: [&str; 4] = [
        "SELECT g, median(a) AS m, count(a) AS n FROM t GROUP BY g ORDER BY g",
        "SELECT median(a) AS m FROM t",
        "SELECT g % 2 AS h, median(a) FILTER (WHERE g > 1) AS m FROM t GROUP BY g % 2 ORDER BY h",
        "SELECT g, median(DISTINCT a) AS m FROM t GROUP BY g ORDER BY g",
    ];

    fn rows(largest: i128) -> impl Strategy<Value = Vec<(i32, Option<i128>)>> {
        let amount = prop_oneof![Just(largest), Just(-largest), -largest..=largest, -1000i128..1000];
        prop::collection::vec((0..4i32, prop::option::weighted(0.9, amount)), 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The same medians as DataFusion's, at the largest values 18 digits hold (where two
        /// middle values' sum needs more than 18) and in the types it leaves alone.
        #[test]
        fn same_medians_as_datafusion(rows in rows(10i128.pow(18) - 1), wide in any::<bool>()) {
            let precision = if wide { 38 } else { 18 };
            let (ours, theirs) = (context(&rows, precision, true), context(&rows, precision, false));
            for sql in QUERIES {
                prop_assert_eq!(run(&ours, sql), run(&theirs, sql), "{}", sql);
            }
        }
    }

    /// Grouped, the values are kept narrow (half the bytes of DataFusion's accumulator).
    #[test]
    fn grouped_amounts_are_kept_in_eight_bytes() {
        let amount = Arc::new(Field::new("a", DataType::Decimal128(12, 2), true));
        let schema = Schema::new(vec![amount.as_ref().clone()]);
        let exprs: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>> =
            vec![Arc::new(datafusion::physical_expr::expressions::Column::new("a", 0))];
        let fields = vec![Arc::clone(&amount)];
        let args = AccumulatorArgs {
            return_field: Arc::clone(&amount),
            schema: &schema,
            ignore_nulls: false,
            order_bys: &[],
            is_reversed: false,
            name: "median(a)",
            is_distinct: false,
            exprs: &exprs,
            expr_fields: &fields,
        };
        let values: ArrayRef = Arc::new(
            Decimal128Array::from_iter_values(0..100_000i128).with_precision_and_scale(12, 2).expect("a decimal"),
        );
        let groups: Vec<usize> = (0..100_000).map(|i| i % 2).collect();
        let mut sizes = Vec::new();
        for median in [
            CompactMedian::default().create_groups_accumulator(args.clone()),
            Median::default().create_groups_accumulator(args.clone()),
        ] {
            let mut median = median.expect("an accumulator");
            median.update_batch(&[Arc::clone(&values)], &groups, None, 2).expect("added");
            sizes.push(median.size());
            let medians = median.evaluate(EmitTo::All).expect("medians");
            assert_eq!(medians.data_type(), &DataType::Decimal128(12, 2));
        }
        assert!(sizes[0] <= sizes[1] / 2 + 256, "{sizes:?}");
    }
}
