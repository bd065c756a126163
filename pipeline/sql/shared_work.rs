//! Work a plan does twice, done once: an aggregate that appears more than once (a CTE read twice) is computed once and its rows handed to each reader.
//!
//! DataFusion inlines a CTE at each reference, so `WITH c AS (… GROUP BY …)
//! SELECT … FROM c CROSS JOIN (SELECT sum(…) FROM c)` scans and groups the
//! table twice. PostgreSQL computes such a CTE once. This rule finds
//! identical subtrees of the physical plan whose root is an aggregate (a
//! reduced result, so that keeping its rows costs little) and replaces each
//! with a [`SharedExec`] over one shared copy: the first reader of each
//! output partition computes it, charging its rows to the memory pool, and
//! every reader gets the same rows. Subtrees with volatile functions (two
//! `random()` are two draws), dynamic filters (each fed by its own join) or a
//! recursive query's work table are left alone.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Volatility;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, displayable};
use futures::future::{BoxFuture, Shared as SharedFuture};
use futures::{FutureExt, StreamExt, TryStreamExt};

/// Physical optimizer rule: identical aggregate subtrees become [`SharedExec`]s over one copy.
#[derive(Debug, Default)]
pub struct SharedWork;

impl PhysicalOptimizerRule for SharedWork {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        plan.apply(|node| {
            if let Some(key) = shareable(node) {
                *seen.entry(key).or_default() += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if seen.values().all(|&n| n < 2) {
            return Ok(plan);
        }
        // Outermost first: a shared subtree's own repeated parts are shared with it.
        let mut shared: HashMap<String, Arc<Shared>> = HashMap::new();
        plan.transform_down(|node| {
            let Some(key) = shareable(&node) else { return Ok(Transformed::no(node)) };
            let readers = seen.get(&key).copied().unwrap_or(0);
            if readers < 2 {
                return Ok(Transformed::no(node));
            }
            let one = shared.entry(key).or_insert_with(|| Arc::new(Shared::new(Arc::clone(&node), readers)));
            let exec = Arc::new(SharedExec { shared: Arc::clone(one) }) as Arc<dyn ExecutionPlan>;
            Ok(Transformed::new(exec, true, TreeNodeRecursion::Jump))
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_shared_work"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A subtree's text with every node's parameters: equal for subtrees that compute the same rows.
fn fingerprint(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}

/// An aggregate's final result, over nothing whose two runs could differ: its fingerprint.
fn shareable(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let finished = plan.downcast_ref::<AggregateExec>().is_some_and(|a| {
        matches!(
            a.mode(),
            AggregateMode::Final
                | AggregateMode::FinalPartitioned
                | AggregateMode::Single
                | AggregateMode::SinglePartitioned
        )
    });
    if !finished || reads_work_table(plan) || volatile(plan) {
        return None;
    }
    let key = fingerprint(plan);
    (!key.contains("DynamicFilter")).then_some(key)
}

fn reads_work_table(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found |= node.name() == "WorkTableExec";
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

fn volatile(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let volatile_expr = |e: &Arc<dyn PhysicalExpr>| {
        e.exists(|x| {
            Ok(x.downcast_ref::<ScalarFunctionExpr>()
                .is_some_and(|f| f.fun().signature().volatility == Volatility::Volatile))
        })
    };
    let _ = plan.apply(|node| {
        node.apply_expressions(&mut |e| {
            found |= volatile_expr(e)?;
            Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        })?;
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

type Partition = SharedFuture<BoxFuture<'static, Result<Arc<Rows>, Arc<DataFusionError>>>>;

/// A partition's rows, charged to the memory pool for as long as they are kept.
#[derive(Debug)]
struct Rows {
    batches: Vec<RecordBatch>,
    _charged: MemoryReservation,
}

/// One copy of a subtree and, per output partition, its rows once the first reader asked for them.
#[derive(Debug)]
pub struct Shared {
    plan: Arc<dyn ExecutionPlan>,
    readers: usize,
    partitions: Mutex<HashMap<usize, Partition>>,
}

impl Shared {
    fn new(plan: Arc<dyn ExecutionPlan>, readers: usize) -> Shared {
        Shared { plan, readers, partitions: Mutex::new(HashMap::new()) }
    }

    /// Partition `partition`'s rows, computed by whichever reader asks first.
    fn rows(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<Partition> {
        let mut partitions =
            self.partitions.lock().map_err(|_| DataFusionError::Internal("a shared result's lock".into()))?;
        if let Some(rows) = partitions.get(&partition) {
            return Ok(rows.clone());
        }
        let stream = self.plan.execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("SharedExec[{partition}]")).register(context.memory_pool());
        let rows: BoxFuture<'static, _> = async move {
            let batches: Vec<RecordBatch> = stream
                .and_then(|batch| {
                    let charged = reservation.try_grow(batch.get_array_memory_size()).map(|()| batch);
                    futures::future::ready(charged)
                })
                .try_collect()
                .await
                .map_err(Arc::new)?;
            Ok(Arc::new(Rows { batches, _charged: reservation }))
        }
        .boxed();
        let rows = rows.shared();
        partitions.insert(partition, rows.clone());
        Ok(rows)
    }
}

/// Reads a [`Shared`] subtree: the rows its first reader computed.
#[derive(Debug)]
pub struct SharedExec {
    shared: Arc<Shared>,
}

impl DisplayAs for SharedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedExec: computed once for {} readers", self.shared.readers)
    }
}

impl ExecutionPlan for SharedExec {
    fn name(&self) -> &str {
        "SharedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.shared.plan.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.shared.plan]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        match children.as_slice() {
            [child] if Arc::ptr_eq(child, &self.shared.plan) => Ok(self),
            // A changed copy is this reader's alone.
            [child] => Ok(Arc::clone(child)),
            _ => Err(DataFusionError::Internal("a shared subtree has one child".into())),
        }
    }

    /// Run again (a recursive query's step): computed afresh, for this reader alone.
    fn reset_state(self: Arc<Self>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Arc::clone(&self.shared.plan).reset_state()
    }

    /// The shared subtree's rows, unchanged.
    fn statistics_from_inputs(&self, input: &[Arc<Statistics>], _args: &StatisticsArgs) -> DfResult<Arc<Statistics>> {
        input.first().cloned().ok_or_else(|| DataFusionError::Internal("a shared subtree has one child".into()))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let rows = self.shared.rows(partition, context)?;
        let schema = self.shared.plan.schema();
        let stream = futures::stream::once(rows)
            .map(|rows| match rows {
                Ok(rows) => {
                    futures::stream::iter((0..rows.batches.len()).map(move |i| Ok(rows.batches[i].clone()))).boxed()
                }
                Err(e) => futures::stream::once(async move { Err(DataFusionError::Shared(e)) }).boxed(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::testing::run;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn context(rule: bool) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(3);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(SharedWork));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let schema =
            Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("v", DataType::Int64, false)]));
        let batch = |keys: &[&str], values: &[i64]| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(keys.to_vec())), Arc::new(Int64Array::from(values.to_vec()))],
            )
            .expect("columns match the schema")
        };
        let parts = vec![
            vec![batch(&["a", "b", "a"], &[1, 2, 3]), batch(&["c", "a"], &[4, 5])],
            vec![batch(&["b", "c", "d"], &[6, 7, 8])],
        ];
        ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), parts).expect("a table")))
            .expect("a fresh context");
        ctx
    }

    #[test]
    fn a_cte_read_twice_is_computed_once_with_the_same_answer() {
        let (ours, theirs) = (context(true), context(false));
        for sql in [
            "WITH c AS (SELECT k, sum(v) AS s FROM t GROUP BY k) \
             SELECT c.k, c.s, x.total FROM c CROSS JOIN (SELECT sum(s) AS total FROM c) x ORDER BY c.k",
            "WITH c AS (SELECT k, sum(v) AS s FROM t GROUP BY k) SELECT count(*) FROM c WHERE s > (SELECT avg(s) FROM c)",
            "WITH c AS (SELECT k, count(*) AS n FROM t GROUP BY k) \
             SELECT * FROM c UNION ALL SELECT * FROM c ORDER BY 1, 2",
        ] {
            let plan = run(&ours, &format!("EXPLAIN {sql}"));
            assert!(plan.contains("SharedExec: computed once for 2 readers"), "{plan}");
            assert!(!run(&theirs, &format!("EXPLAIN {sql}")).contains("SharedExec"));
            assert_eq!(run(&ours, sql), run(&theirs, sql), "{sql}");
        }
    }

    #[test]
    fn volatile_or_unrepeated_work_is_not_shared() {
        let ctx = context(true);
        for sql in [
            "WITH c AS (SELECT k, sum(v * random()) AS s FROM t GROUP BY k) \
             SELECT * FROM c CROSS JOIN (SELECT sum(s) AS total FROM c) x",
            "WITH c AS (SELECT k, sum(v) AS s FROM t WHERE random() < 0.5 GROUP BY k) \
             SELECT * FROM c CROSS JOIN (SELECT sum(s) AS total FROM c) x",
            "SELECT k, sum(v) FROM t GROUP BY k",
            "SELECT x.k, s, m FROM (SELECT k, sum(v) AS s FROM t GROUP BY k) x \
             JOIN (SELECT k, max(v) AS m FROM t GROUP BY k) y ON x.k = y.k",
        ] {
            let plan = run(&ctx, &format!("EXPLAIN {sql}"));
            assert!(!plan.contains("SharedExec"), "{sql}\n{plan}");
        }
    }
}
