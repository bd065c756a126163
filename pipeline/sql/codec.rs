//! Plans of a session as Ballista's protobuf: a table travels as its name, role and warehouse version; ladu's operators as their parameters.
//!
//! The client encodes each warehouse table of a plan as a [`TableOrigin`]
//! (never its files, rows or key); the scheduler rebuilds it from the
//! shared warehouse through [`Tables`], exactly as a local session of that
//! role would have built it. Physical plans go to the executors with
//! [`RoleFilterExec`], [`PackedSortExec`], [`SortedWindowExec`] and
//! [`PartitionGroupsExec`] as their parameters, everything else as Ballista encodes it. A table whose
//! pseudonyms a release recodes cannot be encoded at all: release
//! pseudonyms are made with the key, on the host that holds it.
//!
//! Every message starts with a tag byte saying whose it is, so ladu's and
//! Ballista's encodings are never confused.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::BoundedWindowAggExec;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::{AsExecutionPlan, PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalPlanNode};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::packed_sort::PackedSortExec;
use super::partition_groups::PartitionGroupsExec;
use super::restrict::{Restricted, RoleFilterExec};
use super::roles::Role;
use super::sorted_window::SortedWindowExec;
use super::{date_trunc, prefix_filter, pseudonym_keys};

/// Tag of a message Ballista's own codec wrote.
const BALLISTA: u8 = 0;
/// Tags of ladu's messages.
const TABLE: u8 = 1;
const ROLE_FILTER: u8 = 2;
const PACKED_SORT: u8 = 3;
const SORTED_WINDOW: u8 = 4;
const PARTITION_GROUPS: u8 = 5;

/// What a warehouse table of a session is: enough to build it again from the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableOrigin {
    /// The name the session registered it under (`invoices`, `invoices_history`, a statistic).
    pub table: String,
    /// The role whose view of it this is, as the client resolved it from its roles file.
    pub role: Role,
    /// The manifest version the session reads.
    pub version: u64,
}

/// Builds a session's table again from its origin (on the scheduler).
pub trait Tables: fmt::Debug + Send + Sync {
    fn rebuild(&self, origin: &TableOrigin) -> DfResult<Arc<dyn TableProvider>>;
}

/// Logical plans: warehouse tables as their [`TableOrigin`], the rest as Ballista encodes it.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    inner: BallistaLogicalExtensionCodec,
    /// Where tables are rebuilt; only the scheduler has it.
    tables: Option<Arc<dyn Tables>>,
}

impl LogicalCodec {
    /// The scheduler's codec, which rebuilds tables through `tables`.
    pub fn rebuilding(tables: Arc<dyn Tables>) -> LogicalCodec {
        LogicalCodec { inner: BallistaLogicalExtensionCodec::default(), tables: Some(tables) }
    }
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> DfResult<Extension> {
        match buf.split_first() {
            Some((&BALLISTA, rest)) => self.inner.try_decode(rest, inputs, ctx),
            _ => Err(unknown("logical plan node")),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        buf.push(BALLISTA);
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let Some((&TABLE, rest)) = buf.split_first() else {
            // A listing table, a file: no plan of ladu's reads one.
            return Err(DataFusionError::Plan(format!(
                "`{table_ref}` is not a table of the warehouse: the cluster reads warehouse tables only"
            )));
        };
        let origin: TableOrigin = serde_json::from_slice(rest).map_err(|e| proto(format!("a table's origin: {e}")))?;
        let tables = self.tables.as_ref().ok_or_else(|| proto("this node does not rebuild tables".into()))?;
        let table = tables.rebuild(&origin)?;
        if table.schema().fields() != schema.fields() {
            return Err(DataFusionError::Plan(format!(
                "table `{}` at warehouse version {} has other columns here than where the query was planned: \
                 do all nodes read the same warehouse and config?",
                origin.table, origin.version
            )));
        }
        Ok(table)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        let origin = node.downcast_ref::<Restricted>().and_then(Restricted::origin).ok_or_else(|| {
            DataFusionError::Plan(format!("`{table_ref}` cannot be read on the cluster: only warehouse tables travel"))
        })?;
        buf.push(TABLE);
        serde_json::to_writer(buf, origin).map_err(|e| proto(e.to_string()))
    }

    fn try_decode_file_format(&self, _buf: &[u8], _ctx: &TaskContext) -> DfResult<Arc<dyn FileFormatFactory>> {
        Err(DataFusionError::Plan("the cluster reads warehouse tables only, no files named in a query".into()))
    }

    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        ladu_function(name)
    }
}

/// Physical plans: ladu's operators as their parameters, the rest as Ballista encodes it.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

/// [`RoleFilterExec`]'s parameters; its output columns follow from its input's.
#[derive(Clone, PartialEq, Message)]
struct RoleFilterNode {
    #[prost(message, optional, tag = "1")]
    predicate: Option<PhysicalExprNode>,
    #[prost(uint64, repeated, tag = "2")]
    positions: Vec<u64>,
    #[prost(string, tag = "3")]
    role: String,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some((&tag, rest)) = buf.split_first() else { return Err(unknown("operator")) };
        if tag == BALLISTA {
            return self.inner.try_decode(rest, inputs, ctx, proto_converter);
        }
        let [input] = inputs else { return Err(proto(format!("ladu's operator (tag {tag}) has one input"))) };
        match tag {
            ROLE_FILTER => {
                let node = RoleFilterNode::decode(rest).map_err(|e| proto(e.to_string()))?;
                let schema = input.schema();
                let predicate = match &node.predicate {
                    Some(p) => Some(parse_physical_expr(p, ctx, &schema, self)?),
                    None => None,
                };
                let positions = node.positions.iter().map(|&p| p as usize).collect();
                Ok(Arc::new(RoleFilterExec::for_input(Arc::clone(input), predicate, positions, &node.role)?))
            }
            PACKED_SORT => {
                let sort = with_input(decode_plan(rest, ctx, self)?, input)?;
                let sort = sort.downcast_ref::<SortExec>().ok_or_else(|| proto("a packed sort is a sort".into()))?;
                Ok(Arc::new(PackedSortExec::new(sort.clone())))
            }
            SORTED_WINDOW => {
                let window = with_input(decode_plan(rest, ctx, self)?, input)?;
                let window = window
                    .downcast_ref::<BoundedWindowAggExec>()
                    .ok_or_else(|| proto("a sorted window is a window".into()))?;
                Ok(Arc::new(SortedWindowExec::new(window.clone())))
            }
            PARTITION_GROUPS => {
                let aggregate = with_input(decode_plan(rest, ctx, self)?, input)?;
                let aggregate = aggregate
                    .downcast_ref::<AggregateExec>()
                    .ok_or_else(|| proto("partition groups are an aggregate".into()))?;
                Ok(Arc::new(PartitionGroupsExec::new(aggregate.clone())))
            }
            _ => Err(unknown("operator")),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(filter) = node.downcast_ref::<RoleFilterExec>() {
            if filter.recodes() {
                return Err(DataFusionError::Plan(
                    "release pseudonyms are made with the key, on the ladu host: a release never runs on the cluster"
                        .into(),
                ));
            }
            let predicate = match filter.predicate() {
                Some(p) => Some(proto_converter.physical_expr_to_proto(p, self)?),
                None => None,
            };
            let positions = filter.positions().iter().map(|&p| p as u64).collect();
            buf.push(ROLE_FILTER);
            RoleFilterNode { predicate, positions, role: filter.role().to_owned() }
                .encode(buf)
                .map_err(|e| proto(e.to_string()))
        } else if let Some(sort) = node.downcast_ref::<PackedSortExec>() {
            buf.push(PACKED_SORT);
            encode_without_input(Arc::new(sort.sort().clone()), buf, self)
        } else if let Some(numbering) = node.downcast_ref::<SortedWindowExec>() {
            buf.push(SORTED_WINDOW);
            encode_without_input(Arc::new(numbering.window().clone()), buf, self)
        } else if let Some(groups) = node.downcast_ref::<PartitionGroupsExec>() {
            buf.push(PARTITION_GROUPS);
            encode_without_input(Arc::new(groups.aggregate().clone()), buf, self)
        } else {
            buf.push(BALLISTA);
            self.inner.try_encode(node, buf, proto_converter)
        }
    }

    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        ladu_function(name)
    }
}

/// `node` (one of DataFusion's, which ladu's operator stands for) with an
/// empty input of the same columns in place of its own: the input travels as
/// the extension node's input, once.
fn encode_without_input(node: Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>, codec: &PhysicalCodec) -> DfResult<()> {
    let [input] = node.children()[..] else { return Err(proto("ladu's operators have one input".into())) };
    let placeholder: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(input.schema()));
    let detached = Arc::clone(&node).replace_children(vec![placeholder], recompute())?;
    PhysicalPlanNode::try_from_physical_plan(detached, codec)?.encode(buf).map_err(|e| proto(e.to_string()))
}

fn decode_plan(buf: &[u8], ctx: &TaskContext, codec: &PhysicalCodec) -> DfResult<Arc<dyn ExecutionPlan>> {
    PhysicalPlanNode::decode(buf).map_err(|e| proto(e.to_string()))?.try_into_physical_plan(ctx, codec)
}

fn with_input(node: Arc<dyn ExecutionPlan>, input: &Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    node.replace_children(vec![Arc::clone(input)], recompute())
}

fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// ladu's own functions, which plans name: the pseudonym group keys, dates truncated.
fn ladu_function(name: &str) -> DfResult<Arc<ScalarUDF>> {
    pseudonym_keys::function(name)
        .or_else(|| date_trunc::function(name))
        .or_else(|| prefix_filter::function(name))
        .map(Arc::new)
        .ok_or_else(|| DataFusionError::Plan(format!("function `{name}` is not known on this node")))
}

fn unknown(what: &str) -> DataFusionError {
    proto(format!("a {what} of an unknown kind: are all nodes of the cluster running the same ladu?"))
}

fn proto(message: String) -> DataFusionError {
    DataFusionError::Internal(format!("cannot decode a plan from the cluster: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudonym::Pseudonymiser;
    use crate::pseudonym::key::Key;
    use crate::sql::restrict::Recode;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::logical_expr::{col, lit};
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    fn table() -> Arc<dyn TableProvider> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("person_id", DataType::Utf8, false),
            Field::new("provider", DataType::Utf8, false),
            Field::new("amount", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a".repeat(32), "b".repeat(32), "c".repeat(32)])),
                Arc::new(StringArray::from(vec!["p1", "p2", "p1"])),
                Arc::new(Int64Array::from(vec![3, 1, 2])),
            ],
        )
        .unwrap();
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
    }

    async fn plan(ctx: &SessionContext, table: Restricted, sql: &str) -> Arc<dyn ExecutionPlan> {
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap()
    }

    fn round_trip(ctx: &SessionContext, plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let codec = PhysicalCodec::default();
        let bytes = PhysicalPlanNode::try_from_physical_plan(plan, &codec)?.encode_to_vec();
        PhysicalPlanNode::decode(bytes.as_slice()).unwrap().try_into_physical_plan(&ctx.task_ctx(), &codec)
    }

    #[tokio::test]
    async fn ladus_operators_travel_and_answer_the_same() {
        let ctx = SessionContext::new();
        let restricted =
            Restricted::new(table(), &["amount".into()], Some(col("provider").eq(lit("p1"))), "provider:p1", None)
                .unwrap();
        let sorted = PackedSortExec::new(SortExec::new(
            [datafusion::physical_expr::PhysicalSortExpr::new_default(Arc::new(
                datafusion::physical_expr::expressions::Column::new("person_id", 0),
            ))]
            .into(),
            plan(&ctx, restricted, "SELECT person_id, provider FROM t").await,
        ));
        let original: Arc<dyn ExecutionPlan> = Arc::new(sorted);
        let decoded = round_trip(&ctx, Arc::clone(&original)).unwrap();
        let shown = |p: &Arc<dyn ExecutionPlan>| displayable(p.as_ref()).indent(true).to_string();
        assert_eq!(shown(&decoded), shown(&original));
        assert!(shown(&decoded).contains("PackedSortExec") && shown(&decoded).contains("RoleFilterExec"));
        let rows = |p| async { datafusion::physical_plan::collect(p, ctx.task_ctx()).await.unwrap() };
        let (a, b) = (rows(original).await, rows(decoded).await);
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&a).unwrap().to_string(),
            arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string()
        );
        assert_eq!(a.iter().map(RecordBatch::num_rows).sum::<usize>(), 2, "the role's two rows");
    }

    #[tokio::test]
    async fn partition_groups_travel_and_answer_the_same() {
        use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
        use datafusion::physical_plan::aggregates::AggregateMode;
        let ctx = SessionContext::new();
        let restricted = Restricted::new(table(), &["person_id".into()], None, "analyst", None).unwrap();
        let plan =
            plan(&ctx, restricted, "SELECT provider, sum(amount) AS s, count(*) AS n FROM t GROUP BY provider").await;
        // The codec does not judge whether the keys are partition columns: any partial aggregate will do here.
        let original = plan
            .transform_up(|node| match node.downcast_ref::<AggregateExec>() {
                Some(a) if *a.mode() == AggregateMode::Partial => {
                    Ok(Transformed::yes(Arc::new(PartitionGroupsExec::new(a.clone())) as Arc<dyn ExecutionPlan>))
                }
                _ => Ok(Transformed::no(node)),
            })
            .data()
            .unwrap();
        let decoded = round_trip(&ctx, Arc::clone(&original)).unwrap();
        let shown = |p: &Arc<dyn ExecutionPlan>| displayable(p.as_ref()).indent(true).to_string();
        assert_eq!(shown(&decoded), shown(&original));
        assert!(shown(&decoded).contains("PartitionGroupsExec"), "{}", shown(&decoded));
        let rows = |p| async { datafusion::physical_plan::collect(p, ctx.task_ctx()).await.unwrap() };
        let printed = |b: &[RecordBatch]| arrow::util::pretty::pretty_format_batches(b).unwrap().to_string();
        let (a, b) = (printed(&rows(original).await), printed(&rows(decoded).await));
        let sorted = |s: &str| {
            let mut lines: Vec<&str> = s.lines().collect();
            lines.sort();
            lines.join("\n")
        };
        assert_eq!(sorted(&a), sorted(&b));
        assert!(a.contains("| p1       | 5 | 2 |"), "{a}");
    }

    #[tokio::test]
    async fn release_pseudonyms_never_leave_in_a_plan() {
        let ctx = SessionContext::new();
        let key = Key::from_hex(&"ab".repeat(32)).unwrap();
        let recode = Recode {
            columns: vec!["person_id".into()],
            pseudonymiser: Arc::new(Pseudonymiser::for_release(&key, "r")),
        };
        let restricted = Restricted::new(table(), &[], None, "release", Some(&recode)).unwrap();
        let origin = TableOrigin { table: "t".into(), role: Role::everything(), version: 1 };
        assert!(restricted.with_origin(origin).origin().is_none(), "a recoding table has no origin to travel by");
        let restricted = Restricted::new(table(), &[], None, "release", Some(&recode)).unwrap();
        let e = round_trip(&ctx, plan(&ctx, restricted, "SELECT person_id FROM t").await).unwrap_err();
        assert!(e.to_string().contains("release pseudonyms are made with the key"), "{e}");
    }

    #[test]
    fn a_table_travels_as_its_origin_and_nothing_else_is_read() {
        let codec = LogicalCodec::default();
        let origin = TableOrigin { table: "t_history".into(), role: Role::everything(), version: 7 };
        let restricted = Restricted::new(table(), &[], None, "analyst", None).unwrap().with_origin(origin.clone());
        let mut buf = Vec::new();
        codec.try_encode_table_provider(&TableReference::bare("t_history"), Arc::new(restricted), &mut buf).unwrap();
        assert_eq!(buf[0], TABLE);
        assert_eq!(serde_json::from_slice::<TableOrigin>(&buf[1..]).unwrap(), origin);
        // A provider other than a warehouse table cannot travel; bytes other than an origin are refused.
        assert!(codec.try_encode_table_provider(&TableReference::bare("m"), table(), &mut Vec::new()).is_err());
        let ctx = SessionContext::new();
        let e = codec
            .try_decode_table_provider(b"\x00listing", &TableReference::bare("x"), table().schema(), &ctx.task_ctx())
            .unwrap_err();
        assert!(e.to_string().contains("not a table of the warehouse"), "{e}");
    }
}
