//! Semi-joins (`EXISTS`, `IN`) look up each key once: the side they test against is made distinct first.
//!
//! A semi-join asks only whether a row's key occurs on the other side.
//! DataFusion builds its hash table from every row of that side and, for a
//! probe, gathers every matching row before keeping one: with a patient's
//! invoices tested against their prescriptions, five or more matches per
//! probe, 0.7 µs a row (`EXISTS` against 5M prescriptions took three times
//! DuckDB's time). Grouping that side by its join keys first (one row per
//! person) leaves one match per probe and a hash table a fifth of the size.
//! It applies where the join has no condition beyond equal keys and the
//! tested side's keys are plain columns, so its answers are the same rows.

use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::logical_plan::{Aggregate, Join};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// Logical optimizer rule: the tested side of a semi-join is grouped by its keys.
#[derive(Debug, Default)]
pub struct DistinctSemiJoinKeys;

impl OptimizerRule for DistinctSemiJoinKeys {
    fn name(&self) -> &str {
        "ladu_distinct_semi_join_keys"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else { return Ok(Transformed::no(plan)) };
        if join.filter.is_some() || join.on.is_empty() {
            return Ok(Transformed::no(plan));
        }
        // Not anti-joins: DataFusion builds those on the kept side where it is the smaller
        // (`NOT EXISTS` of residents against invoices), and grouping the invoices first then
        // costs a fifth more time and memory (measured on the SQL suite's s15).
        let tested_is_right = match join.join_type {
            JoinType::LeftSemi => true,
            JoinType::RightSemi => false,
            _ => return Ok(Transformed::no(plan)),
        };
        let (tested, keys): (&Arc<LogicalPlan>, Vec<&Expr>) = if tested_is_right {
            (&join.right, join.on.iter().map(|(_, r)| r).collect())
        } else {
            (&join.left, join.on.iter().map(|(l, _)| l).collect())
        };
        if !keys.iter().all(|k| matches!(k, Expr::Column(_))) || distinct_already(tested) {
            return Ok(Transformed::no(plan));
        }
        // Grouped by the key columns, the tested side's output columns keep their names,
        // so the join's `on` still names them.
        let group: Vec<Expr> = keys.into_iter().cloned().collect();
        let distinct = Arc::new(LogicalPlan::Aggregate(Aggregate::try_new(Arc::clone(tested), group, Vec::new())?));
        let (left, right) =
            if tested_is_right { (Arc::clone(&join.left), distinct) } else { (distinct, Arc::clone(&join.right)) };
        let rewritten = Join::try_new(
            left,
            right,
            join.on.clone(),
            None,
            join.join_type,
            join.join_constraint,
            join.null_equality,
            join.null_aware,
        )?;
        Ok(Transformed::yes(LogicalPlan::Join(rewritten)))
    }
}

/// Is `plan` already one row per key: a grouping with no aggregates, or a `DISTINCT`
/// (seen through a projection, such as the one the pseudonym group keys put above it)?
fn distinct_already(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(a) => a.aggr_expr.is_empty(),
        LogicalPlan::Distinct(_) => true,
        LogicalPlan::Projection(p) => distinct_already(&p.input),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::*;

    async fn context(rule: bool) -> SessionContext {
        let mut state = datafusion::execution::SessionStateBuilder::new().with_default_features();
        if rule {
            state = state.with_optimizer_rule(Arc::new(DistinctSemiJoinKeys));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.sql("CREATE TABLE a (k INT, v INT) AS VALUES (1, 10), (1, 11), (2, 20), (3, 30), (NULL, 40)")
            .await
            .unwrap();
        ctx.sql("CREATE TABLE b (k INT, w INT) AS VALUES (1, 1), (1, 2), (1, 3), (3, 4), (NULL, 5), (4, 6)")
            .await
            .unwrap();
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    #[tokio::test]
    async fn semi_joins_answer_as_before_and_look_up_distinct_keys() {
        let (with, without) = (context(true).await, context(false).await);
        for sql in [
            "SELECT * FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)",
            "SELECT * FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)",
            "SELECT * FROM a WHERE k IN (SELECT k FROM b)",
            "SELECT * FROM a WHERE k NOT IN (SELECT k FROM b)",
            "SELECT * FROM a WHERE k NOT IN (SELECT k FROM b WHERE k IS NOT NULL)",
            "SELECT * FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > a.v - 10)",
            "SELECT count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) AND v > 10",
        ] {
            assert_eq!(rows(&with, sql).await, rows(&without, sql).await, "{sql}");
        }
        let plan = with
            .sql("EXPLAIN SELECT * FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
        assert!(text.contains("Aggregate: groupBy=[[__correlated_sq_1.k]], aggr=[[]]"), "{text}");
    }
}
