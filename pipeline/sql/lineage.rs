//! Where each column of a query's result comes from: the warehouse columns it is derived from, traced through the plan.
//!
//! A result column's lineage is the set of (table, column) of the tables it
//! reads that its values are computed from, through projections, filters,
//! joins, aggregates, windows, unions, subquery aliases, CTEs and curated
//! views; whether it is *plain* (those values themselves, passed on by
//! column references alone); and whether it could be decided at all (a
//! recursive query or an unknown node makes it undecided, which a careful
//! reader treats as "derived from anything"). A subquery inside an
//! expression adds its result's columns and the outer columns it reads.

use std::collections::BTreeSet;

use datafusion::common::JoinType;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::tables::HISTORY_SUFFIX;

/// The lineage of one result column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lineage {
    /// (table, column) it is computed from; `<table>_history` is named as `<table>`.
    pub sources: BTreeSet<(String, String)>,
    /// The source column's own values, passed on by column references alone.
    pub plain: bool,
    /// Could it be traced? Undecided lineage may come from anything.
    pub decided: bool,
}

impl Lineage {
    fn column(table: &str, column: &str) -> Lineage {
        let table = table.strip_suffix(HISTORY_SUFFIX).unwrap_or(table);
        Lineage { sources: BTreeSet::from([(table.to_owned(), column.to_owned())]), plain: true, decided: true }
    }

    fn undecided() -> Lineage {
        Lineage { sources: BTreeSet::new(), plain: false, decided: false }
    }

    /// Computed from all of `parts`: their sources, plain only if `plain` and there is one part.
    fn derived<'a>(parts: impl IntoIterator<Item = &'a Lineage>, plain: bool) -> Lineage {
        let mut out = Lineage { sources: BTreeSet::new(), plain, decided: true };
        let mut n = 0;
        for p in parts {
            n += 1;
            out.sources.extend(p.sources.iter().cloned());
            out.plain &= p.plain;
            out.decided &= p.decided;
        }
        out.plain &= n == 1;
        out
    }

    /// Is it derived from a column named as in `names` (any case), or undecided?
    pub fn derives_from_any(&self, names: &[String]) -> bool {
        !self.decided || self.sources.iter().any(|(_, c)| names.iter().any(|n| n.eq_ignore_ascii_case(c)))
    }
}

/// The lineage of each output column of `plan`, in order.
pub fn of(plan: &LogicalPlan) -> Vec<Lineage> {
    let width = plan.schema().fields().len();
    let same_as_input = |input: &LogicalPlan| {
        let l = of(input);
        if l.len() == width { l } else { vec![Lineage::undecided(); width] }
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            // A curated view is traced through its own plan; a table ends the trace.
            let full: Vec<Lineage> = match scan.source.get_logical_plan() {
                Some(view) => of(&view),
                None => {
                    // ladu's tables are bare names; anything else keeps its schema in the name.
                    let table = match scan.table_name.schema() {
                        None => scan.table_name.table().to_owned(),
                        Some(_) => scan.table_name.to_string(),
                    };
                    scan.source.schema().fields().iter().map(|f| Lineage::column(&table, f.name())).collect()
                }
            };
            match &scan.projection {
                Some(p) => p.iter().map(|&i| full.get(i).cloned().unwrap_or_else(Lineage::undecided)).collect(),
                None => full,
            }
        }
        LogicalPlan::Projection(p) => {
            let input = of(&p.input);
            p.expr.iter().map(|e| expression(e, &p.input, &input)).collect()
        }
        LogicalPlan::Filter(f) => same_as_input(&f.input),
        LogicalPlan::Sort(s) => same_as_input(&s.input),
        LogicalPlan::Limit(l) => same_as_input(&l.input),
        LogicalPlan::Repartition(r) => same_as_input(&r.input),
        LogicalPlan::SubqueryAlias(s) => same_as_input(&s.input),
        LogicalPlan::Subquery(s) => same_as_input(&s.subquery),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => same_as_input(input),
        LogicalPlan::Join(j) => {
            let (left, right) = (of(&j.left), of(&j.right));
            let mut out = match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
                _ => left.into_iter().chain(right).collect(),
            };
            // A mark column says whether a row found a match: derived from the join keys.
            while out.len() < width {
                let keys: Vec<Lineage> = j
                    .on
                    .iter()
                    .flat_map(|(l, r)| [expression(l, &j.left, &of(&j.left)), expression(r, &j.right, &of(&j.right))])
                    .collect();
                out.push(Lineage::derived(&keys, false));
            }
            if out.len() == width { out } else { vec![Lineage::undecided(); width] }
        }
        LogicalPlan::Aggregate(a) => {
            if a.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
                return vec![Lineage::undecided(); width];
            }
            let input = of(&a.input);
            let mut out: Vec<Lineage> = a.group_expr.iter().map(|e| expression(e, &a.input, &input)).collect();
            out.extend(a.aggr_expr.iter().map(|e| Lineage { plain: false, ..expression(e, &a.input, &input) }));
            if out.len() == width { out } else { vec![Lineage::undecided(); width] }
        }
        LogicalPlan::Window(w) => {
            let input = of(&w.input);
            let mut out = input.clone();
            out.extend(w.window_expr.iter().map(|e| Lineage { plain: false, ..expression(e, &w.input, &input) }));
            if out.len() == width { out } else { vec![Lineage::undecided(); width] }
        }
        LogicalPlan::Union(u) => {
            let inputs: Vec<Vec<Lineage>> = u.inputs.iter().map(|i| of(i)).collect();
            (0..width)
                .map(|i| {
                    let parts: Vec<&Lineage> = inputs.iter().filter_map(|l| l.get(i)).collect();
                    if parts.len() == inputs.len() { Lineage::derived(parts, false) } else { Lineage::undecided() }
                })
                .collect()
        }
        // Literals and nothing: derived from no column.
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
            vec![Lineage { sources: BTreeSet::new(), plain: false, decided: true }; width]
        }
        _ => vec![Lineage::undecided(); width],
    }
}

/// The lineage of `expr`, evaluated over `input` whose columns' lineages are `columns`.
/// A subquery in it adds every column of its result, and the outer columns it reads.
fn expression(expr: &Expr, input: &LogicalPlan, columns: &[Lineage]) -> Lineage {
    let schema = input.schema();
    let of_column = |c: &datafusion::common::Column| schema.index_of_column(c).ok().and_then(|i| columns.get(i));
    let mut parts = Vec::new();
    for c in expr.column_refs() {
        match of_column(c) {
            Some(l) => parts.push(l.clone()),
            None => return Lineage::undecided(),
        }
    }
    let mut subqueries = Vec::new();
    let _ = expr.apply(|e| {
        match e {
            Expr::ScalarSubquery(s) | Expr::Exists(datafusion::logical_expr::expr::Exists { subquery: s, .. }) => {
                subqueries.push(s.clone())
            }
            Expr::InSubquery(i) => subqueries.push(i.subquery.clone()),
            _ => {}
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    for s in &subqueries {
        parts.extend(of(&s.subquery));
        for outer in &s.outer_ref_columns {
            match outer {
                Expr::OuterReferenceColumn(_, c) => match of_column(c) {
                    Some(l) => parts.push(l.clone()),
                    None => return Lineage::undecided(),
                },
                _ => return Lineage::undecided(),
            }
        }
    }
    Lineage::derived(&parts, referenced(expr).is_some())
}

/// The column an expression only names (perhaps under an alias).
pub fn referenced(e: &Expr) -> Option<&datafusion::common::Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => referenced(&a.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::catalog::view::ViewTable;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    fn context() -> SessionContext {
        let ctx = SessionContext::new();
        let table = |cols: &[&str]| {
            let schema =
                Arc::new(Schema::new(cols.iter().map(|c| Field::new(*c, DataType::Int64, true)).collect::<Vec<_>>()));
            Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap())
        };
        ctx.register_table("population", table(&["person_id", "birth_year", "sex"])).unwrap();
        ctx.register_table("invoices_history", table(&["person_id", "amount"])).unwrap();
        ctx
    }

    /// Each output column's (plain, decided, sources as `table.column`).
    fn trace(ctx: &SessionContext, sql: &str) -> Vec<(bool, bool, Vec<String>)> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let plan = runtime.block_on(async { ctx.state().create_logical_plan(sql).await }).unwrap();
        of(&plan)
            .into_iter()
            .map(|l| (l.plain, l.decided, l.sources.iter().map(|(t, c)| format!("{t}.{c}")).collect()))
            .collect()
    }

    fn col(plain: bool, sources: &[&str]) -> (bool, bool, Vec<String>) {
        (plain, true, sources.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn columns_are_traced_through_the_plan() {
        let ctx = context();
        assert_eq!(
            trace(
                &ctx,
                "SELECT person_id AS p, birth_year / 10 AS d, CASE WHEN sex = 1 THEN 'm' END AS s, 7 AS k FROM population"
            ),
            [
                col(true, &["population.person_id"]),
                col(false, &["population.birth_year"]),
                col(false, &["population.sex"]),
                col(false, &[])
            ]
        );
        assert_eq!(
            trace(
                &ctx,
                "WITH x AS (SELECT person_id AS who FROM invoices_history) SELECT y.who, count(*) AS n FROM x y GROUP BY y.who"
            ),
            [col(true, &["invoices.person_id"]), col(false, &[])],
            "a CTE, an alias, a group key; `_history` names its table"
        );
        assert_eq!(
            trace(
                &ctx,
                "SELECT p.sex, sum(i.amount) AS s FROM population p JOIN invoices_history i USING (person_id) GROUP BY p.sex"
            ),
            [col(true, &["population.sex"]), col(false, &["invoices.amount"])]
        );
        assert_eq!(
            trace(&ctx, "SELECT sex FROM population UNION ALL SELECT amount FROM invoices_history"),
            [col(false, &["invoices.amount", "population.sex"])]
        );
        assert_eq!(
            trace(&ctx, "SELECT (SELECT max(birth_year) FROM population q WHERE q.sex = p.sex) AS m FROM population p"),
            [col(false, &["population.birth_year", "population.sex"])],
            "a correlated subquery: its result and the outer column it reads"
        );
        assert_eq!(
            trace(&ctx, "SELECT row_number() OVER (PARTITION BY sex ORDER BY birth_year) AS r FROM population"),
            [col(false, &["population.birth_year", "population.sex"])]
        );
    }

    #[test]
    fn views_are_traced_and_recursion_is_undecided() {
        let ctx = context();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let view = runtime
            .block_on(async { ctx.state().create_logical_plan("SELECT birth_year AS yob FROM population").await })
            .unwrap();
        ctx.register_table("v", Arc::new(ViewTable::new(view, None))).unwrap();
        assert_eq!(trace(&ctx, "SELECT yob AS y FROM v"), [col(true, &["population.birth_year"])]);
        let recursive =
            trace(&ctx, "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r");
        assert_eq!(recursive, [(false, false, vec![])]);
    }
}
