//! Expressions of one short text column (`substr(main_diagnosis, 1, 3)`) worked out once per entry of the Parquet page's dictionary, not once per row.
//!
//! Diagnosis chapters, medicine groups and the like are taken from a text
//! column of a few hundred values by `substr`, `LIKE`, `CASE` or `upper`,
//! and DataFusion works each out on every row: `substr` over 10M invoices
//! was 0.5 s of CPU. Where a projection or an aggregate's keys compute
//! such an expression on a column that comes straight from a warehouse scan
//! and is dictionary-encoded in every file, this rule has the scan keep the
//! column as a dictionary and wraps the expression as [`OnDictionaries`]:
//! it is computed for each entry (and for null) and each row takes its
//! entry's answer. Every expression keeps its type as planned, so nothing
//! above changes. It runs after [`super::dictionary_groups`], which takes
//! the aggregates grouped by such columns themselves.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::Result as DfResult;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use super::dictionary_groups::{OnDictionaries, read_as_dictionaries, rebuilt_scan};

/// Physical optimizer rule: projections and aggregate keys that compute on one dictionary-encoded
/// text column of a warehouse scan compute once per entry.
#[derive(Debug, Default)]
pub struct DictionaryExpressions;

impl PhysicalOptimizerRule for DictionaryExpressions {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let rewritten = if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                on_projection(p)?
            } else if let Some(a) = node.downcast_ref::<AggregateExec>() {
                on_keys(a)?
            } else if let Some(scan) = node.downcast_ref::<DataSourceExec>() {
                on_scan(scan)?
            } else {
                None
            };
            Ok(match rewritten {
                Some(n) => Transformed::yes(n),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_dictionary_expressions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The text columns of `schema` (by index) that one of `exprs` computes on alone: more than
/// reading the column, and the same for every row that has the same value.
fn computed_on(exprs: &[&Arc<dyn PhysicalExpr>], schema: &Schema) -> BTreeSet<usize> {
    let mut columns = BTreeSet::new();
    for e in exprs {
        if e.downcast_ref::<Column>().is_some() || is_volatile(e) {
            continue;
        }
        if let [c] = collect_columns(e).iter().collect::<Vec<_>>()[..]
            && schema.field(c.index()).data_type() == &DataType::Utf8View
        {
            columns.insert(c.index());
        }
    }
    columns
}

/// The names of `columns` in `schema`.
fn names(columns: &BTreeSet<usize>, schema: &Schema) -> BTreeSet<String> {
    columns.iter().map(|&c| schema.field(c).name().clone()).collect()
}

/// The projection with the text columns it computes on read as dictionaries, if it can be.
fn on_projection(p: &ProjectionExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let schema = p.input().schema();
    let columns = computed_on(&p.expr().iter().map(|e| &e.expr).collect::<Vec<_>>(), &schema);
    if columns.is_empty() {
        return Ok(None);
    }
    let Some(input) = read_as_dictionaries(p.input(), &columns)? else { return Ok(None) };
    let names = names(&columns, &schema);
    let exprs = (p.expr().iter())
        .map(|e| Ok(ProjectionExpr { expr: OnDictionaries::wrap(&e.expr, &names, &schema)?, alias: e.alias.clone() }))
        .collect::<DfResult<Vec<_>>>()?;
    Ok(Some(Arc::new(ProjectionExec::try_new(exprs, input)?)))
}

/// The aggregate (of rows, not of partial states) with the text columns its keys compute on read as
/// dictionaries, where its aggregates do not read them.
fn on_keys(a: &AggregateExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let group = a.group_expr();
    let of_rows = matches!(a.mode(), AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned);
    if !of_rows || !group.is_single() || a.limit_options().is_some() || !a.dynamic_expressions_produced().is_empty() {
        return Ok(None);
    }
    let schema = a.input().schema();
    let columns = computed_on(&group.expr().iter().map(|(e, _)| e).collect::<Vec<_>>(), &schema);
    let arguments = a.aggr_expr().iter().flat_map(|x| x.expressions()).chain(a.filter_expr().iter().flatten().cloned());
    if columns.is_empty() || arguments.flat_map(|e| collect_columns(&e)).any(|c| columns.contains(&c.index())) {
        return Ok(None);
    }
    let Some(input) = read_as_dictionaries(a.input(), &columns)? else { return Ok(None) };
    let names = names(&columns, &schema);
    let keys = (group.expr().iter())
        .map(|(e, name)| Ok((OnDictionaries::wrap(e, &names, &schema)?, name.clone())))
        .collect::<DfResult<Vec<_>>>()?;
    let aggregate = AggregateExec::try_new(
        *a.mode(),
        PhysicalGroupBy::new_single(keys),
        a.aggr_expr().to_vec(),
        a.filter_expr().to_vec(),
        input,
        a.input_schema(),
    )?;
    Ok(Some(Arc::new(aggregate)))
}

/// The scan with the text columns that its own projection computes on read as dictionaries.
fn on_scan(scan: &DataSourceExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else { return Ok(None) };
    let Some(source) = config.file_source().downcast_ref::<ParquetSource>() else { return Ok(None) };
    let Some(projection) = config.file_source().projection() else { return Ok(None) };
    let schema = source.table_schema().table_schema();
    let columns = computed_on(&projection.iter().map(|p| &p.expr).collect::<Vec<_>>(), schema);
    // Partition columns are not text; a column read as a dictionary already is not a view.
    let columns: BTreeSet<usize> = columns.into_iter().filter(|&c| c < config.file_schema().fields().len()).collect();
    if columns.is_empty() {
        return Ok(None);
    }
    let names = names(&columns, schema);
    let wrapped = (projection.iter())
        .map(|p| Ok(ProjectionExpr { expr: OnDictionaries::wrap(&p.expr, &names, schema)?, alias: p.alias.clone() }))
        .collect::<DfResult<Vec<_>>>()?;
    rebuilt_scan(config, source, &names, &ProjectionExprs::new(wrapped))
}
