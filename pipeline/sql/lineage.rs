//! Where each column of a query's result comes from: the warehouse columns it is derived from, traced through the plan.
//!
//! A result column's lineage is the set of (table, column) of the tables it
//! reads that its values are computed from, through projections, filters,
//! joins, aggregates, windows, unions, subquery aliases, CTEs and curated
//! views; whether it is *plain* (those values themselves, passed on by
//! column references alone); and whether it could be decided at all (a
//! recursive query, a subquery inside an expression or an unknown node make
//! it undecided, which a careful reader treats as "derived from anything").

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
fn expression(expr: &Expr, input: &LogicalPlan, columns: &[Lineage]) -> Lineage {
    let subquery = expr
        .exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_))))
        .unwrap_or(true);
    if subquery {
        return Lineage::undecided();
    }
    let plain = referenced(expr).is_some();
    let schema = input.schema();
    let mut parts = Vec::new();
    for c in expr.column_refs() {
        match schema.index_of_column(c).ok().and_then(|i| columns.get(i)) {
            Some(l) => parts.push(l.clone()),
            None => return Lineage::undecided(),
        }
    }
    Lineage::derived(&parts, plain)
}

/// The column an expression only names (perhaps under an alias).
pub fn referenced(e: &Expr) -> Option<&datafusion::common::Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => referenced(&a.expr),
        _ => None,
    }
}
