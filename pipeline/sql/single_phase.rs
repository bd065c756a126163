//! Aggregates that keep every value (`median`, percentiles, `DISTINCT`, `array_agg`) grouped in one phase after the repartition, not two.
//!
//! DataFusion aggregates in two phases: each input partition aggregates
//! what it reads, the partial states are repartitioned by group, and a final
//! phase merges them. That pays for aggregates whose state is small (a sum,
//! a count). A median's state is every value of its group: the partial phase
//! gathers them all, emits them again as lists, and the final phase gathers
//! them a second time (`median(amount)` by care type over 10M invoices kept
//! about three copies of the amounts). Here such a grouped aggregate
//! repartitions its input rows by the group keys and aggregates once, each
//! group in one partition (`SinglePartitioned`): the same answer, one copy.

use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

/// Physical optimizer rule: a grouped two-phase aggregate with an aggregate that keeps every value becomes one phase.
#[derive(Debug, Default)]
pub struct SinglePhase;

impl PhysicalOptimizerRule for SinglePhase {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match one_phase(&node)? {
            Some(single) => Ok(Transformed::yes(single)),
            None => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_single_phase"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Does the aggregate's state hold every value it is given?
fn keeps_every_value(aggregate: &AggregateFunctionExpr) -> bool {
    aggregate.is_distinct()
        || matches!(aggregate.fun().name(), "median" | "percentile_cont" | "quantile_cont" | "array_agg" | "string_agg")
}

/// `node` in one phase, if it is the final phase of such an aggregate over a repartition of its partial phase.
fn one_phase(node: &Arc<dyn ExecutionPlan>) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(last) = node.downcast_ref::<AggregateExec>() else { return Ok(None) };
    let Some(spread) = last.input().downcast_ref::<RepartitionExec>() else { return Ok(None) };
    let Some(first) = spread.input().downcast_ref::<AggregateExec>() else { return Ok(None) };
    let &Partitioning::Hash(_, partitions) = spread.partitioning() else { return Ok(None) };
    let eligible = *last.mode() == AggregateMode::FinalPartitioned
        && *first.mode() == AggregateMode::Partial
        && !spread.preserve_order()
        && first.group_expr().is_single()
        && !first.group_expr().is_empty()
        && first.limit_options().is_none()
        && last.limit_options().is_none()
        && first.dynamic_expressions_produced().is_empty()
        && first.aggr_expr().iter().any(|a| keeps_every_value(a));
    if !eligible {
        return Ok(None);
    }
    let rows = RepartitionExec::try_new(
        Arc::clone(first.input()),
        Partitioning::Hash(first.group_expr().input_exprs(), partitions),
    )?;
    let single = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        first.group_expr().clone(),
        first.aggr_expr().to_vec(),
        first.filter_expr().to_vec(),
        Arc::new(rows),
        first.input_schema(),
    )?;
    // The same columns as the final phase gave, or the plan stays as it was.
    let same = single.schema().fields().len() == last.schema().fields().len()
        && single
            .schema()
            .fields()
            .iter()
            .zip(last.schema().fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    Ok(same.then(|| Arc::new(single) as Arc<dyn ExecutionPlan>))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::testing::run;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    fn context(rows: &[(u8, i64, i64)], size: usize, rule: bool) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(3).with_batch_size(4);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(SinglePhase));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("a", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batches: Vec<RecordBatch> = rows
            .chunks(size.max(1))
            .map(|chunk| {
                let k = StringArray::from_iter_values(chunk.iter().map(|r| format!("k{}", r.0)));
                let a = Int64Array::from_iter_values(chunk.iter().map(|r| r.1));
                let v = Int64Array::from_iter_values(chunk.iter().map(|r| r.2));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(a), Arc::new(v)])
                    .expect("columns match the schema")
            })
            .collect();
        let mut parts = vec![Vec::new(); 2];
        for (i, b) in batches.into_iter().enumerate() {
            parts[i % 2].push(b);
        }
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).expect("a table"))).expect("a fresh context");
        ctx
    }

    const QUERIES: [(&str, bool); 4] = [
        ("SELECT k, median(v) AS m, count(*) AS n FROM t GROUP BY k ORDER BY k", true),
        (
            "SELECT substr(k, 1, 1) AS c, a % 3 AS r, percentile_cont(0.9) WITHIN GROUP (ORDER BY CAST(v AS DOUBLE)) AS p, \
             count(DISTINCT a) AS d, sum(DISTINCT v) AS s FROM t GROUP BY substr(k, 1, 1), a % 3 ORDER BY 1, 2",
            true,
        ),
        ("SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k ORDER BY k", false),
        ("SELECT median(v) AS m FROM t", false),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn one_phase_answers_as_two(
            rows in prop::collection::vec((0..5u8, 0..7i64, -50..50i64), 1..80),
            size in 1usize..20,
        ) {
            let (ours, theirs) = (context(&rows, size, true), context(&rows, size, false));
            for (sql, applies) in QUERIES {
                let plan = run(&ours, &format!("EXPLAIN {sql}"));
                prop_assert_eq!(plan.contains("mode=SinglePartitioned"), applies, "{}", plan);
                prop_assert_eq!(run(&ours, sql), run(&theirs, sql), "{}", sql);
            }
        }
    }
}
