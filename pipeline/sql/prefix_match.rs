//! Prefix tests written with `substr` or `left` (`substr(atc_code, 1, 1) = 'C'`) become `starts_with`, which DataFusion turns into a `LIKE 'C%'` that skips row groups.
//!
//! Analysts select a level of a code by its prefix: the chapter of an ICD-10
//! diagnosis, the first three or five characters of an ATC code. Written as
//! `substr(code, 1, n) = 'lit'`, DataFusion cuts a new string from every row
//! and compares it (81 ms of 5M prescriptions' 100), and cannot use the row
//! groups' minimum and maximum. Where `lit` has exactly `n` characters the
//! test is the same as `starts_with(code, 'lit')`, NULL for NULL as before;
//! other lengths are left as they are (a shorter `lit` asks for equality, a
//! longer one is never true). The rule runs first, before DataFusion's
//! simplifier turns `starts_with` into `LIKE` and before a test used twice
//! is taken out as a common expression.

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use super::expr_rewrite;

/// Logical optimizer rule: `substr(x, 1, n) = 'lit'` and `left(x, n) = 'lit'` with `n` characters in `lit` are `starts_with(x, 'lit')`.
#[derive(Debug, Default)]
pub struct PrefixMatch;

impl OptimizerRule for PrefixMatch {
    fn name(&self) -> &str {
        "ladu_prefix_match"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        expr_rewrite::rewrite_named(plan, prefix_test)
    }
}

/// `e` as a `starts_with` (negated for `<>`), where it is a prefix test of the whole literal.
fn prefix_test(e: Expr) -> Transformed<Expr> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else { return Transformed::no(e) };
    if !matches!(op, Operator::Eq | Operator::NotEq) {
        return Transformed::no(e);
    }
    let found = cut_prefix(left, right).or_else(|| cut_prefix(right, left));
    let Some((text, prefix)) = found else { return Transformed::no(e) };
    let test = datafusion::functions::string::starts_with().call(vec![text, prefix]);
    Transformed::yes(if *op == Operator::Eq { test } else { Expr::Not(Box::new(test)) })
}

/// (x, 'lit') where `cut` is `substr(x, 1, n)` or `left(x, n)` and `literal` a string of `n` characters.
fn cut_prefix(cut: &Expr, literal: &Expr) -> Option<(Expr, Expr)> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = cut else { return None };
    let (text, length) = match (func.name(), args.as_slice()) {
        ("substr", [text, start, length]) if integer(start) == Some(1) => (text, length),
        ("left", [text, length]) => (text, length),
        _ => return None,
    };
    let Expr::Literal(value, _) = literal else { return None };
    let s = value.try_as_str().flatten()?;
    let n = integer(length)?;
    (n > 0 && usize::try_from(n).ok()? == s.chars().count()).then(|| (text.clone(), literal.clone()))
}

/// The value of an integer literal.
fn integer(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v),
        Expr::Literal(ScalarValue::Int32(Some(v)), _) => Some(i64::from(*v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sql::testing::run;
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// Table `t` with one text column `c` (views, as the warehouse's text is read), with or without the rule.
    fn context(values: &[Option<String>], rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![Field::new("c", DataType::Utf8View, true)]));
        let column = arrow::compute::cast(&StringArray::from(values.to_vec()), &DataType::Utf8View).expect("casts");
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column]).expect("a batch");
        let mut state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features();
        if rule {
            state = state.with_optimizer_rules(first(Arc::new(PrefixMatch)));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("a table")))
            .expect("registers");
        ctx
    }

    /// Prefix tests, and whether the rule makes them `starts_with` (which DataFusion shows as `LIKE`).
    const TESTS: [(&str, bool); 10] = [
        ("substr(c, 1, 1) = 'C'", true),
        ("substr(c, 1, 2) = '%_'", true),
        ("'C09' = substring(c, 1, 3)", true),
        ("left(c, 2) = 'Jõ'", true),
        ("substr(c, 1, 2) <> 'J0'", true),
        ("substr(c, 1, 3) = 'C'", false),
        ("substr(c, 1, 1) = 'C0'", false),
        ("substr(c, 2, 1) = 'C'", false),
        ("substr(c, 1, 0) = ''", false),
        ("substr(c, 1, 1) < 'C'", false),
    ];

    /// DataFusion's rules with `rule` before them.
    fn first(
        rule: Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>,
    ) -> Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> {
        std::iter::once(rule).chain(datafusion::optimizer::Optimizer::new().rules).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Every test keeps the same rows and gives the same values, NULL for NULL.
        #[test]
        fn prefix_tests_keep_the_same_rows(values in prop::collection::vec(prop::option::of("[CJõ0-9%_]{0,4}"), 1..40)) {
            let (ours, theirs) = (context(&values, true), context(&values, false));
            for (test, applies) in TESTS {
                let filter = format!("SELECT c FROM t WHERE {test} ORDER BY c");
                let plan = run(&ours, &format!("EXPLAIN {filter}"));
                prop_assert_eq!(plan.contains("LIKE") || plan.contains("starts_with"), applies, "{}", plan);
                let shown = format!("SELECT c, {test} AS hit FROM t ORDER BY c, hit");
                // Unnamed, grouped: the same column names, and the grouping above still finds its column.
                let grouped = format!("SELECT {test}, count(*) FROM t GROUP BY {test} ORDER BY 1");
                let plan = run(&ours, &format!("EXPLAIN {grouped}"));
                prop_assert_eq!(plan.contains("LIKE") || plan.contains("starts_with"), applies, "{}", plan);
                for sql in [filter, shown, grouped] {
                    prop_assert_eq!(run(&ours, &sql), run(&theirs, &sql), "{}", sql);
                }
            }
        }
    }
}
