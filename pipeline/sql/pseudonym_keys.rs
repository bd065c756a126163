//! Groups on pseudonym columns by the 128-bit number their hex digits spell, not by their text.
//!
//! "Per person" questions group on `person_id`, a million or more distinct
//! 32-character strings. DataFusion keeps string group keys in a byte map
//! and compares them with `memcmp`: half of "the ten costliest patients"
//! went there. A pseudonym is a 128-bit number written in hex, so this rule
//! groups on that number (carried as a `Decimal128`, which DataFusion groups
//! as a plain integer) and turns the groups back into text above the
//! aggregate. It applies only where the grouped column is, through column
//! references alone, a pseudonym column of a warehouse table (from the
//! source configs), so every value is a pseudonym; should one not be, the
//! query fails rather than group it wrongly.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, StringBuilder};
use arrow::datatypes::{DataType, Decimal128Type};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result as DfResult, exec_err};
use datafusion::logical_expr::logical_plan::{Aggregate, Projection};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use crate::pseudonym::{pseudonym_bits, pseudonym_from_bits};

/// The type that carries a pseudonym's number through the aggregate; any `i128` bit pattern.
const KEY_TYPE: DataType = DataType::Decimal128(38, 0);

/// Logical optimizer rule: group keys that are pseudonym columns are grouped by number.
#[derive(Debug)]
pub struct PseudonymGroupKeys {
    /// (table, column) of every pseudonym column, `_history` tables included.
    columns: HashSet<(String, String)>,
}

impl PseudonymGroupKeys {
    pub fn new(columns: HashSet<(String, String)>) -> PseudonymGroupKeys {
        PseudonymGroupKeys { columns }
    }

    /// Is `column` of `plan`'s output, through column references alone, a warehouse table's pseudonym column?
    fn is_pseudonym(&self, plan: &LogicalPlan, column: &Column) -> bool {
        match plan {
            LogicalPlan::TableScan(scan) => {
                scan.table_name.schema() != Some("information_schema")
                    && self.columns.contains(&(scan.table_name.table().to_owned(), column.name.clone()))
            }
            LogicalPlan::Projection(p) => match p.schema.index_of_column(column).map(|i| &p.expr[i]) {
                Ok(e) => referenced(e).is_some_and(|c| self.is_pseudonym(&p.input, c)),
                Err(_) => false,
            },
            LogicalPlan::SubqueryAlias(s) => match s.schema.index_of_column(column) {
                Ok(i) => {
                    let (qualifier, field) = s.input.schema().qualified_field(i);
                    self.is_pseudonym(&s.input, &Column::new(qualifier.cloned(), field.name()))
                }
                Err(_) => false,
            },
            LogicalPlan::Join(j) => {
                if j.left.schema().has_column(column) {
                    self.is_pseudonym(&j.left, column)
                } else {
                    j.right.schema().has_column(column) && self.is_pseudonym(&j.right, column)
                }
            }
            LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Repartition(_)
            | LogicalPlan::Window(_) => {
                let input = plan.inputs()[0];
                input.schema().has_column(column) && self.is_pseudonym(input, column)
            }
            // Unions, values, aggregates and the rest may hold other text.
            _ => false,
        }
    }
}

/// The column an expression only names (perhaps under an alias).
fn referenced(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => referenced(&a.expr),
        _ => None,
    }
}

impl OptimizerRule for PseudonymGroupKeys {
    fn name(&self) -> &str {
        "ladu_pseudonym_group_keys"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else { return Ok(Transformed::no(plan)) };
        if aggregate.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
            return Ok(Transformed::no(plan));
        }
        let schema = &aggregate.schema;
        let mut group = Vec::with_capacity(aggregate.group_expr.len());
        // What the projection above the new aggregate gives, field for field as the old one did.
        let mut outputs = Vec::with_capacity(schema.fields().len());
        for (i, e) in aggregate.group_expr.iter().enumerate() {
            let (qualifier, field) = schema.qualified_field(i);
            match referenced(e) {
                Some(c) if field.data_type() == &DataType::Utf8 && self.is_pseudonym(&aggregate.input, c) => {
                    let key = format!("__ladu_pseudonym_key_{i}");
                    group.push(Expr::Column(c.clone()).call(PseudonymKey::udf()).alias(&key));
                    outputs.push(
                        Expr::Column(Column::new_unqualified(key))
                            .call(PseudonymText::udf())
                            .alias_qualified(qualifier.cloned(), field.name()),
                    );
                }
                _ => {
                    group.push(e.clone());
                    outputs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
                }
            }
        }
        if group == aggregate.group_expr {
            return Ok(Transformed::no(plan));
        }
        for i in aggregate.group_expr.len()..schema.fields().len() {
            let (qualifier, field) = schema.qualified_field(i);
            outputs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
        }
        let grouped = Aggregate::try_new(Arc::clone(&aggregate.input), group, aggregate.aggr_expr.clone())?;
        let projection = Projection::try_new(outputs, Arc::new(LogicalPlan::Aggregate(grouped)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

/// Calls a scalar function on one argument.
trait Call {
    fn call(self, udf: ScalarUDF) -> Expr;
}

impl Call for Expr {
    fn call(self, udf: ScalarUDF) -> Expr {
        Arc::new(udf).call(vec![self])
    }
}

/// `pseudonym_key(text)`: a pseudonym's number; an error for text that is not a pseudonym.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PseudonymKey {
    signature: Signature,
}

impl PseudonymKey {
    fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(PseudonymKey {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for PseudonymKey {
    fn name(&self) -> &str {
        "pseudonym_key"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(KEY_TYPE)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [text] = args.args.as_slice() else { return exec_err!("pseudonym_key takes one argument") };
        let text = text.to_array(args.number_rows)?;
        let text = text.as_string::<i32>();
        let mut keys = Vec::with_capacity(text.len());
        for i in 0..text.len() {
            if text.is_null(i) {
                keys.push(0);
                continue;
            }
            match pseudonym_bits(text.value(i).as_bytes()) {
                Some(bits) => keys.push(bits as i128),
                // The value itself stays out of the message: it may be anything.
                None => return exec_err!("a value of a pseudonym column is not a pseudonym (32 lowercase hex digits)"),
            }
        }
        let keys = Decimal128Array::new(keys.into(), text.nulls().cloned()).with_data_type(KEY_TYPE);
        Ok(ColumnarValue::Array(Arc::new(keys) as ArrayRef))
    }
}

/// `pseudonym_text(number)`: the pseudonym a number from [`PseudonymKey`] stands for.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PseudonymText {
    signature: Signature,
}

impl PseudonymText {
    fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(PseudonymText { signature: Signature::exact(vec![KEY_TYPE], Volatility::Immutable) })
    }
}

impl ScalarUDFImpl for PseudonymText {
    fn name(&self) -> &str {
        "pseudonym_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [keys] = args.args.as_slice() else { return exec_err!("pseudonym_text takes one argument") };
        let keys = keys.to_array(args.number_rows)?;
        let keys = keys.as_primitive::<Decimal128Type>();
        let mut text = StringBuilder::with_capacity(keys.len(), keys.len() * 32);
        for key in keys.iter() {
            text.append_option(key.map(|k| pseudonym_from_bits(k as u128)).as_ref().map(|p| p.as_str()));
        }
        Ok(ColumnarValue::Array(Arc::new(text.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// Table `t`: `p` a pseudonym column, `s` other text, `v` a number; with or without the rule.
    fn context(p: &[Option<String>], s: &[&str], rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Utf8, true),
            Field::new("s", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter(p.iter().cloned())),
                Arc::new(StringArray::from_iter_values(s.iter().copied())),
                Arc::new(Int64Array::from_iter_values(0..p.len() as i64)),
            ],
        )
        .expect("columns match the schema");
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(7);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            let columns = HashSet::from([("t".to_owned(), "p".to_owned())]);
            state = state.with_optimizer_rule(Arc::new(PseudonymGroupKeys::new(columns)));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let halves = batch.num_rows() / 2;
        let parts = vec![vec![batch.slice(0, halves)], vec![batch.slice(halves, batch.num_rows() - halves)]];
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).expect("a table"))).expect("registers");
        ctx
    }

    fn run(ctx: &SessionContext, sql: &str) -> DfResult<String> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            let batches = ctx.sql(sql).await?.collect().await?;
            Ok(pretty_format_batches(&batches)?.to_string())
        })
    }

    /// Grouped queries, and whether the rule groups their pseudonyms by number.
    const QUERIES: [(&str, bool); 8] = [
        ("SELECT p, count(*) AS n, sum(v) AS total FROM t GROUP BY p ORDER BY p", true),
        ("SELECT count(DISTINCT p) AS persons FROM t", true),
        ("SELECT s, count(DISTINCT p) AS persons, min(p) AS first FROM t GROUP BY s ORDER BY s", true),
        (
            "WITH x AS (SELECT p AS person, v FROM t WHERE v > 2) \
             SELECT y.person, sum(y.v) AS total FROM x y GROUP BY y.person ORDER BY 1",
            true,
        ),
        ("SELECT a.p, count(*) AS n FROM t a JOIN t b ON a.p = b.p GROUP BY a.p ORDER BY 1", true),
        ("SELECT upper(p) AS u, count(*) AS n FROM t GROUP BY upper(p) ORDER BY 1", false),
        ("SELECT p, count(*) AS n FROM (SELECT p FROM t UNION ALL SELECT 'x') GROUP BY p ORDER BY p", false),
        ("SELECT s, count(*) AS n FROM t GROUP BY s ORDER BY s", false),
    ];

    fn pseudonym(i: u8) -> String {
        format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn groups_agree_with_grouping_by_text(
            rows in prop::collection::vec((prop::option::of(0..8u8), 0..3u8), 1..60),
        ) {
            let p: Vec<Option<String>> = rows.iter().map(|(p, _)| p.map(pseudonym)).collect();
            let s: Vec<&str> = rows.iter().map(|(_, s)| ["a", "b", "c"][usize::from(*s)]).collect();
            let ours = context(&p, &s, true);
            let theirs = context(&p, &s, false);
            for (sql, applies) in QUERIES {
                let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
                prop_assert_eq!(plan.contains("pseudonym_key"), applies, "{}", plan);
                prop_assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{}", sql);
            }
        }
    }

    /// A value that is not a pseudonym fails the query, and the message does not repeat it.
    #[test]
    fn text_that_is_not_a_pseudonym_is_an_error_without_the_value() {
        let p = [Some(pseudonym(1)), Some("38001010009".to_owned())];
        let ctx = context(&p, &["a", "b"], true);
        let err = run(&ctx, "SELECT p, count(*) FROM t GROUP BY p").expect_err("not a pseudonym");
        let message = err.to_string();
        assert!(message.contains("is not a pseudonym"), "{message}");
        assert!(!message.contains("38001010009"), "{message}");
    }
}
