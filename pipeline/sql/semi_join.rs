//! Semi- and anti-joins (`EXISTS`, `IN`, `NOT EXISTS`) whose hash table holds the side they test look up each key once: that side is made distinct first.
//!
//! A semi-join asks only whether a row's key occurs on the other side.
//! Where DataFusion builds its hash table from that other side (the smaller
//! one), it keeps every row and, for each probe, gathers every matching row
//! before keeping one: with a patient's invoices tested against their
//! prescriptions, five or more matches per probe, 0.7 µs a row (`EXISTS`
//! against 5M prescriptions took three times DuckDB's time). Grouping the
//! build side by its join keys first, within each hash partition, leaves one
//! match per probe and a hash table a fifth of the size. It applies after
//! the join order is chosen, only where the build side is the tested one
//! (`RightSemi`, `RightAnti`), there is no condition beyond equal keys, and
//! the keys are plain columns: the answers are the same rows. Where the
//! build side is the kept one (`NOT EXISTS` of residents against invoices),
//! nothing changes: grouping the invoices there made it slower (measured).

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{JoinType, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

/// Physical optimizer rule: the build side of a semi- or anti-join that holds the tested rows is grouped by its keys.
#[derive(Debug, Default)]
pub struct DistinctSemiJoinBuild;

impl PhysicalOptimizerRule for DistinctSemiJoinBuild {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else { return Ok(Transformed::no(node)) };
            match distinct_build(join)? {
                Some(rewritten) => Ok(Transformed::yes(rewritten)),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_distinct_semi_join_build"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `join` with its build side grouped by the join keys, where that keeps its answer.
fn distinct_build(join: &HashJoinExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    // The build side is the left; only these join types output the right side's rows alone.
    if !matches!(join.join_type(), JoinType::RightSemi | JoinType::RightAnti)
        || join.filter().is_some()
        || *join.partition_mode() != PartitionMode::Partitioned
        || join.left().downcast_ref::<AggregateExec>().is_some()
    {
        return Ok(None);
    }
    let mut group: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::with_capacity(join.on().len());
    let mut on = Vec::with_capacity(join.on().len());
    for (i, (left, right)) in join.on().iter().enumerate() {
        let Some(column) = left.downcast_ref::<Column>() else { return Ok(None) };
        if group.iter().any(|(_, name)| name == column.name()) {
            return Ok(None);
        }
        group.push((Arc::clone(left), column.name().to_owned()));
        // Grouped, the key columns come first, in this order.
        on.push((Arc::new(Column::new(column.name(), i)) as Arc<dyn PhysicalExpr>, Arc::clone(right)));
    }
    let build = Arc::clone(join.left());
    // In partitioned mode the build side arrives hash-partitioned on the keys:
    // each partition's distinct keys are distinct over all of them.
    let distinct = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        PhysicalGroupBy::new_single(group),
        Vec::new(),
        Vec::new(),
        Arc::clone(&build),
        build.schema(),
    )?;
    let rewritten = join
        .builder()
        .with_new_children(vec![Arc::new(distinct), Arc::clone(join.right())])?
        .with_on(on)
        .recompute_properties()
        .build_exec()?;
    Ok(Some(rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::*;

    async fn context(rule: bool) -> SessionContext {
        // Two partitions and no single-partition joins: the join is partitioned, as on a large table.
        let mut config = SessionConfig::new().with_target_partitions(2);
        config.options_mut().optimizer.hash_join_single_partition_threshold = 0;
        config.options_mut().optimizer.hash_join_single_partition_threshold_rows = 0;
        let mut state = datafusion::execution::SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(DistinctSemiJoinBuild));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.sql(
            "CREATE TABLE a (k INT, v INT) AS VALUES (1, 10), (1, 11), (2, 20), (3, 30), (NULL, 40), (5, 50), (6, 60), \
             (7, 70), (8, 80), (3, 31)",
        )
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
    async fn semi_and_anti_joins_answer_as_before_and_build_on_distinct_keys() {
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
        // The smaller side, the tested one, is built, grouped by its key.
        let join = text.lines().position(|l| l.contains("HashJoinExec: mode=Partitioned, join_type=RightSemi"));
        let grouped = text.lines().position(|l| l.contains("AggregateExec: mode=SinglePartitioned, gby=[k@0 as k]"));
        assert!(join.is_some() && grouped > join, "{text}");
    }
}
