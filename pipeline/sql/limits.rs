//! Bounds on a statement that DataFusion does not set: how deep a recursive query may go, and how large a value may grow.
//!
//! [`BoundedRecursion`] puts a [`DepthLimitExec`] over the recursive term of
//! every `WITH RECURSIVE` query: the term is executed once per iteration,
//! and the node stops the query when the iterations pass
//! `sql.max_recursion_depth`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// What a statement stopped by a limit says.
pub const RECURSION_STOPPED: &str = "a recursive query went deeper than `sql.max_recursion_depth`";

/// Physical optimizer rule: every recursive query's recursive term counts its iterations.
#[derive(Debug)]
pub struct BoundedRecursion {
    pub max_depth: usize,
}

impl PhysicalOptimizerRule for BoundedRecursion {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.downcast_ref::<RecursiveQueryExec>().is_none() {
                return Ok(Transformed::no(node));
            }
            let children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
            let [static_term, recursive_term] = children.as_slice() else { return Ok(Transformed::no(node)) };
            let limited = Arc::new(DepthLimitExec::new(Arc::clone(recursive_term), self.max_depth));
            let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
            Ok(Transformed::yes(node.replace_children(vec![Arc::clone(static_term), limited], options)?))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ladu_bounded_recursion"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input through, and fails once it has been executed more than `max` times.
#[derive(Debug)]
pub struct DepthLimitExec {
    input: Arc<dyn ExecutionPlan>,
    max: usize,
    /// Executions so far, shared by the copies DataFusion makes of the node between iterations.
    depth: Arc<AtomicUsize>,
}

impl DepthLimitExec {
    fn new(input: Arc<dyn ExecutionPlan>, max: usize) -> DepthLimitExec {
        DepthLimitExec { input, max, depth: Arc::new(AtomicUsize::new(0)) }
    }
}

impl DisplayAs for DepthLimitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DepthLimitExec: max_depth={}", self.max)
    }
}

impl ExecutionPlan for DepthLimitExec {
    fn name(&self) -> &str {
        "DepthLimitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("DepthLimitExec has one input".into()));
        }
        Ok(Arc::new(DepthLimitExec { input: children.swap_remove(0), max: self.max, depth: Arc::clone(&self.depth) }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        if depth > self.max {
            return Err(DataFusionError::Execution(format!("{RECURSION_STOPPED} ({})", self.max)));
        }
        self.input.execute(partition, context)
    }
}
