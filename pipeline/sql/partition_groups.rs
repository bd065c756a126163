//! An aggregate grouped by partition columns only adds each batch to its group whole, without hashing its rows.
//!
//! A partition column (`year`, `month`) has one value in each file, so a
//! batch read from a file is one group, or a few where batches of several
//! files were put together. DataFusion's aggregate still hashes and
//! looks up every row's group: `GROUP BY year, month` over 10M invoices spent
//! 12 ns a row there, several times what the sums themselves took. Here a
//! batch whose keys are all equal is added to its one group at once (an
//! aggregate of a fixed-size state over a batch without nulls is computed
//! whole with Arrow's kernels and merged as a partial state); any
//! other batch is grouped row by row with DataFusion's own group table. The
//! accumulators are DataFusion's, so it emits what DataFusion's node would
//! (the states for a final phase, or the values). Only where
//! the keys are partition columns by construction: there are then at most
//! as many groups as files, and the group table stays small.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, StatisticsArgs,
};

use super::batch_groups;
use super::restrict::RoleFilterExec;

/// Physical optimizer rule: a partial or one-phase aggregate whose keys are all partition columns becomes a [`PartitionGroupsExec`].
#[derive(Debug, Default)]
pub struct PartitionGroups;

impl PhysicalOptimizerRule for PartitionGroups {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match node.downcast_ref::<AggregateExec>() {
            Some(aggregate) if eligible(aggregate) => {
                Ok(Transformed::yes(Arc::new(PartitionGroupsExec::new(aggregate.clone())) as Arc<dyn ExecutionPlan>))
            }
            _ => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "ladu_partition_groups"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial (or only) aggregate of plain aggregates, grouped (without grouping sets) by partition columns only.
fn eligible(aggregate: &AggregateExec) -> bool {
    batch_groups::plain_grouping(aggregate)
        && (aggregate.group_expr().expr().iter())
            .all(|(e, _)| e.downcast_ref::<Column>().is_some_and(|c| is_partition_column(aggregate.input(), c.index())))
}

/// Is column `index` of `plan`'s output a partition column of a file scan, passed on unchanged?
fn is_partition_column(plan: &Arc<dyn ExecutionPlan>, index: usize) -> bool {
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        return p
            .expr()
            .get(index)
            .and_then(|e| e.expr.downcast_ref::<Column>())
            .is_some_and(|c| is_partition_column(p.input(), c.index()));
    }
    if let Some(f) = plan.downcast_ref::<FilterExec>() {
        let index = match f.projection() {
            Some(projection) => match projection.get(index) {
                Some(&i) => i,
                None => return false,
            },
            None => index,
        };
        return is_partition_column(f.input(), index);
    }
    if let Some(r) = plan.downcast_ref::<RoleFilterExec>() {
        return !r.recodes() && r.positions().get(index).is_some_and(|&i| is_partition_column(r.children()[0], i));
    }
    if plan.downcast_ref::<RepartitionExec>().is_some() {
        return is_partition_column(plan.children()[0], index);
    }
    let Some(scan) = plan.downcast_ref::<DataSourceExec>() else { return false };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else { return false };
    let table_index = match config.file_source().projection() {
        Some(projection) => match projection.iter().nth(index).and_then(|p| p.expr.downcast_ref::<Column>()) {
            Some(c) => c.index(),
            None => return false,
        },
        None => index,
    };
    table_index >= config.file_schema().fields().len()
        && table_index < config.file_schema().fields().len() + config.table_partition_cols().len()
}

/// Computes the aggregate it stands for (which it keeps for everything but execution) a batch at a time.
#[derive(Debug)]
pub struct PartitionGroupsExec {
    aggregate: AggregateExec,
    metrics: ExecutionPlanMetricsSet,
}

impl PartitionGroupsExec {
    pub fn new(aggregate: AggregateExec) -> PartitionGroupsExec {
        PartitionGroupsExec { aggregate, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// The aggregate node it stands for.
    pub fn aggregate(&self) -> &AggregateExec {
        &self.aggregate
    }
}

impl DisplayAs for PartitionGroupsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        batch_groups::describe(f, "PartitionGroupsExec", &self.aggregate)
    }
}

impl ExecutionPlan for PartitionGroupsExec {
    fn name(&self) -> &str {
        "PartitionGroupsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        let aggregate = Arc::new(self.aggregate.clone()).replace_children(children, recompute)?;
        match aggregate.downcast_ref::<AggregateExec>() {
            Some(a) if eligible(a) => Ok(Arc::new(PartitionGroupsExec::new(a.clone()))),
            // Its keys no longer partition columns: DataFusion's node is right.
            _ => Ok(aggregate),
        }
    }

    fn statistics_from_inputs(&self, input: &[Arc<Statistics>], args: &StatisticsArgs) -> DfResult<Arc<Statistics>> {
        self.aggregate.statistics_from_inputs(input, args)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.aggregate.child_stats_requests(partition)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        batch_groups::execute(
            &self.aggregate,
            self.aggregate.input(),
            &self.metrics,
            "PartitionGroupsExec",
            partition,
            context,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::testing::run;
    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use parquet::arrow::ArrowWriter;
    use proptest::prelude::*;

    /// A row: year, month, which of its partition's files, a nullable value, a key.
    type Row = (i32, i32, usize, Option<i64>, u8);

    /// Writes the rows as hive-partitioned Parquet files under `dir`.
    fn write(dir: &std::path::Path, rows: &[Row]) -> SchemaRef {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("d", DataType::Float64, false),
            Field::new("k", DataType::Utf8, false),
        ]));
        let mut files: std::collections::BTreeMap<(i32, i32, usize), Vec<&Row>> = Default::default();
        for r in rows {
            files.entry((r.0, r.1, r.2)).or_default().push(r);
        }
        for ((year, month, file), rows) in files {
            let folder = dir.join(format!("year={year}/month={month}"));
            std::fs::create_dir_all(&folder).unwrap();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(rows.iter().map(|r| r.3).collect::<Int64Array>()),
                    Arc::new(rows.iter().map(|r| r.3.unwrap_or(0) as f64 / 4.0).collect::<Float64Array>()),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| format!("k{}", r.4)))),
                ],
            )
            .unwrap();
            let out = std::fs::File::create(folder.join(format!("part-{file}.parquet"))).unwrap();
            let mut writer = ArrowWriter::try_new(out, schema.clone(), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
        schema
    }

    fn context(dir: &std::path::Path, schema: SchemaRef, rule: bool) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(3);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(PartitionGroups));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("year".into(), DataType::Int32), ("month".into(), DataType::Int32)]);
        let url = ListingTableUrl::parse(dir.to_str().unwrap()).unwrap();
        let table =
            ListingTable::try_new(ListingTableConfig::new(url).with_listing_options(options).with_schema(schema))
                .unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// Each query, and whether the rule applies to it.
    const QUERIES: [(&str, bool); 8] = [
        (
            "SELECT year, month, count(*) AS n, count(v) AS c, sum(v) AS s, avg(v) AS a, max(v) AS hi, min(d) AS lo \
             FROM t GROUP BY year, month ORDER BY 1, 2",
            true,
        ),
        ("SELECT month, sum(v) AS s, count(*) AS n FROM t WHERE k <> 'k1' GROUP BY month ORDER BY 1", true),
        // Fixed-size states of other types, which a batch of one group merges whole.
        (
            "SELECT year, month, avg(CAST(v AS DOUBLE)) AS f, sum(CAST(v AS DECIMAL(12, 2))) AS dec, \
             bit_or(v) AS bits, bool_or(v IS NULL) AS any_null, max(k) AS k FROM t GROUP BY year, month ORDER BY 1, 2",
            true,
        ),
        ("SELECT year, month, median(v) AS m, bool_and(v > 0) AS b FROM t GROUP BY month, year ORDER BY 1, 2", true),
        ("SELECT year, k, count(*) AS n, sum(v) AS s FROM t GROUP BY year, k ORDER BY 1, 2", false),
        ("SELECT year + 1 AS y, count(*) AS n FROM t GROUP BY year + 1 ORDER BY 1", false),
        ("SELECT year, count(DISTINCT v) AS n FROM t GROUP BY year ORDER BY 1", false),
        ("SELECT count(*) AS n, sum(v) AS s FROM t", false),
    ];

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        prop::collection::vec(
            (2023..2026i32, 1..4i32, 0..3usize, prop::option::weighted(0.8, -1000..1000i64), 0..3u8),
            0..120,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// With the rule or without, every query has the same answer; the
        /// rule applies exactly to the aggregates by partition columns.
        #[test]
        fn same_answers_as_datafusion(rows in rows()) {
            let dir = tempfile::tempdir().unwrap();
            let schema = write(dir.path(), &rows);
            let (ours, theirs) = (context(dir.path(), schema.clone(), true), context(dir.path(), schema, false));
            for (sql, applies) in QUERIES {
                prop_assert_eq!(run(&ours, sql), run(&theirs, sql), "{}", sql);
                let plan = run(&ours, &format!("EXPLAIN {sql}"));
                prop_assert_eq!(plan.contains("PartitionGroupsExec"), applies && !rows.is_empty(), "{}", plan);
            }
        }
    }
}
