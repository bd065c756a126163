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
    /// Which scans of a table (numbered in the order they are met) its
    /// values come from: two columns from one scan describe the same rows.
    pub rows: BTreeSet<usize>,
    /// The source column's own values, passed on by column references alone.
    pub plain: bool,
    /// Could it be traced? Undecided lineage may come from anything.
    pub decided: bool,
}

impl Lineage {
    fn column(table: &str, column: &str, scan: usize) -> Lineage {
        let table = table.strip_suffix(HISTORY_SUFFIX).unwrap_or(table);
        Lineage {
            sources: BTreeSet::from([(table.to_owned(), column.to_owned())]),
            rows: BTreeSet::from([scan]),
            plain: true,
            decided: true,
        }
    }

    fn undecided() -> Lineage {
        Lineage { sources: BTreeSet::new(), rows: BTreeSet::new(), plain: false, decided: false }
    }

    /// Computed from all of `parts`: their sources, plain only if `plain` and there is one part.
    fn derived<'a>(parts: impl IntoIterator<Item = &'a Lineage>, plain: bool) -> Lineage {
        let mut out = Lineage { sources: BTreeSet::new(), rows: BTreeSet::new(), plain, decided: true };
        let mut n = 0;
        for p in parts {
            n += 1;
            out.sources.extend(p.sources.iter().cloned());
            out.rows.extend(p.rows.iter().copied());
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

/// A plan's result columns traced, and the columns its joins equate.
#[derive(Debug, Default)]
pub struct Traced {
    pub columns: Vec<Lineage>,
    /// Pairs of plain columns an equi-join made equal (`a.person_id = b.person_id`).
    pub joined: Vec<(Lineage, Lineage)>,
}

/// The lineage of each output column of `plan`, in order.
pub fn of(plan: &LogicalPlan) -> Vec<Lineage> {
    trace(plan).columns
}

/// [`of`], with the equalities the plan's joins make.
pub fn trace(plan: &LogicalPlan) -> Traced {
    let mut tracer = Tracer::default();
    let columns = tracer.of(plan);
    Traced { columns, joined: tracer.joined }
}

#[derive(Default)]
struct Tracer {
    scans: usize,
    joined: Vec<(Lineage, Lineage)>,
}

impl Tracer {
    fn of(&mut self, plan: &LogicalPlan) -> Vec<Lineage> {
        let width = plan.schema().fields().len();
        let fits = |l: Vec<Lineage>| if l.len() == width { l } else { vec![Lineage::undecided(); width] };
        match plan {
            LogicalPlan::TableScan(scan) => {
                // A curated view is traced through its own plan; a table ends the trace.
                let full: Vec<Lineage> = match scan.source.get_logical_plan() {
                    Some(view) => self.of(&view),
                    None => {
                        self.scans += 1;
                        // ladu's tables are bare names; anything else keeps its schema in the name.
                        let table = match scan.table_name.schema() {
                            None => scan.table_name.table().to_owned(),
                            Some(_) => scan.table_name.to_string(),
                        };
                        let fields = scan.source.schema();
                        fields.fields().iter().map(|f| Lineage::column(&table, f.name(), self.scans)).collect()
                    }
                };
                match &scan.projection {
                    Some(p) => p.iter().map(|&i| full.get(i).cloned().unwrap_or_else(Lineage::undecided)).collect(),
                    None => full,
                }
            }
            LogicalPlan::Projection(p) => {
                let input = self.of(&p.input);
                p.expr.iter().map(|e| self.expression(e, &p.input, &input)).collect()
            }
            LogicalPlan::Filter(f) => fits(self.of(&f.input)),
            LogicalPlan::Sort(s) => fits(self.of(&s.input)),
            LogicalPlan::Limit(l) => fits(self.of(&l.input)),
            LogicalPlan::Repartition(r) => fits(self.of(&r.input)),
            LogicalPlan::SubqueryAlias(s) => fits(self.of(&s.input)),
            LogicalPlan::Subquery(s) => fits(self.of(&s.subquery)),
            LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => fits(self.of(input)),
            LogicalPlan::Join(j) => {
                let (left, right) = (self.of(&j.left), self.of(&j.right));
                let mut keys: Vec<(Lineage, Lineage)> =
                    j.on.iter()
                        .map(|(l, r)| (self.expression(l, &j.left, &left), self.expression(r, &j.right, &right)))
                        .collect();
                // Before the optimizer, `ON a = b` is still a filter: its column equalities are keys too.
                let conjuncts = j.filter.as_ref().map(datafusion::logical_expr::utils::split_conjunction);
                for e in conjuncts.into_iter().flatten() {
                    if let Expr::BinaryExpr(b) = e
                        && b.op == datafusion::logical_expr::Operator::Eq
                        && referenced(&b.left).is_some()
                        && referenced(&b.right).is_some()
                    {
                        let side = |this: &mut Self, e: &Expr| {
                            let l = this.expression(e, &j.left, &left);
                            if l.decided { l } else { this.expression(e, &j.right, &right) }
                        };
                        let pair = (side(self, &b.left), side(self, &b.right));
                        keys.push(pair);
                    }
                }
                self.joined.extend(keys.iter().filter(|(l, r)| l.plain && r.plain).cloned());
                let mut out = match j.join_type {
                    JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                    JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
                    _ => left.into_iter().chain(right).collect(),
                };
                // A mark column says whether a row found a match: derived from the join keys.
                if out.len() < width {
                    let mark = Lineage::derived(keys.iter().flat_map(|(l, r)| [l, r]), false);
                    out.resize(width, mark);
                }
                fits(out)
            }
            LogicalPlan::Aggregate(a) => {
                if a.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
                    return vec![Lineage::undecided(); width];
                }
                let input = self.of(&a.input);
                let mut out: Vec<Lineage> = a.group_expr.iter().map(|e| self.expression(e, &a.input, &input)).collect();
                for e in &a.aggr_expr {
                    out.push(Lineage { plain: false, ..self.expression(e, &a.input, &input) });
                }
                fits(out)
            }
            LogicalPlan::Window(w) => {
                let input = self.of(&w.input);
                let mut out = input.clone();
                for e in &w.window_expr {
                    out.push(Lineage { plain: false, ..self.expression(e, &w.input, &input) });
                }
                fits(out)
            }
            LogicalPlan::Union(u) => {
                let inputs: Vec<Vec<Lineage>> = u.inputs.iter().map(|i| self.of(i)).collect();
                (0..width)
                    .map(|i| {
                        let parts: Vec<&Lineage> = inputs.iter().filter_map(|l| l.get(i)).collect();
                        if parts.len() == inputs.len() { Lineage::derived(parts, false) } else { Lineage::undecided() }
                    })
                    .collect()
            }
            // Literals and nothing: derived from no column.
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                vec![Lineage { decided: true, ..Lineage::default() }; width]
            }
            _ => vec![Lineage::undecided(); width],
        }
    }

    /// The lineage of `expr`, evaluated over `input` whose columns' lineages are `columns`.
    /// A subquery in it adds every column of its result, and the outer columns it reads.
    fn expression(&mut self, expr: &Expr, input: &LogicalPlan, columns: &[Lineage]) -> Lineage {
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
            for outer in &s.outer_ref_columns {
                match outer {
                    Expr::OuterReferenceColumn(_, c) => match of_column(c) {
                        Some(l) => parts.push(l.clone()),
                        None => return Lineage::undecided(),
                    },
                    _ => return Lineage::undecided(),
                }
            }
            parts.extend(self.of(&s.subquery));
        }
        Lineage::derived(&parts, referenced(expr).is_some())
    }
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
