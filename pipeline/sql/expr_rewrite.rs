//! Replaces expressions of a plan node by equal ones, bottom up, each keeping its name (for the rules that do only that).

use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan};

/// `plan` with every expression rewritten by `rewrite` from the leaves up. A rewritten
/// expression keeps its name, so the columns of the result, and what refers to them above,
/// stay (as DataFusion's simplifier keeps them); grouping sets keep their own aliasing.
pub fn rewrite_named(
    plan: LogicalPlan,
    rewrite: impl Fn(Expr) -> Transformed<Expr>,
) -> DfResult<Transformed<LogicalPlan>> {
    let names = NamePreserver::new(&plan);
    let mut each = |e: Expr| {
        let name = names.save(&e);
        Ok(e.transform_up(|e| Ok(rewrite(e)))?.update_data(|e| name.restore(e)))
    };
    plan.map_expressions(|e| match e {
        Expr::GroupingSet(_) => e.map_children(&mut each),
        e => each(e),
    })
}
