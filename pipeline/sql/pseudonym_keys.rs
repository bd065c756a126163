//! Groups and counts distinct pseudonyms by the 128-bit number their hex digits spell, not by their text.
//!
//! "Per person" questions group on `person_id`, a million or more distinct
//! 32-character strings. DataFusion keeps string group keys in a byte map
//! and compares them with `memcmp`: half of "the ten costliest patients"
//! went there. A pseudonym is a 128-bit number written in hex, so this rule
//! groups on that number (carried as two `UInt64` halves, which DataFusion
//! groups as plain integers; no Arrow integer type holds every 128-bit
//! value) and turns the groups back into text above the aggregate. A
//! `count(DISTINCT …)` of pseudonyms that DataFusion does not turn into a
//! grouping (several distinct counts in one aggregate) counts the 128 bits
//! instead, carried as the `i128` of a `Decimal128`: DataFusion counts those
//! in a set of 16-byte values (a `Decimal256`, which holds the number as a
//! number, took twice the memory). It applies only
//! where the column is, through column references and unions alone, a
//! pseudonym column of a warehouse table (from the source configs), so every
//! value is a pseudonym; should one not be, the query fails rather than
//! group it wrongly. A join on pseudonyms matches the halves too, and the
//! pseudonyms leave it as the text of their halves, so that neither its hash
//! table nor the repartitions below it carry the 32 characters; a grouping, a
//! count or another join above takes those halves rather than the text.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, StringBuilder, UInt64Array};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, UInt64Type};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, JoinType, Result as DfResult, exec_err};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::logical_plan::{Aggregate, Distinct, Filter, Join, Projection, SubqueryAlias};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use super::lineage;
use crate::pseudonym::{pseudonym_bits, pseudonym_from_bits, pseudonym_half_bits};

/// The function of this rule called `name`, for a plan decoded on another node.
pub fn function(name: &str) -> Option<ScalarUDF> {
    [PseudonymKey::udf(Half::High), PseudonymKey::udf(Half::Low), PseudonymText::udf(), PseudonymNumber::udf()]
        .into_iter()
        .find(|f| f.name() == name)
}

/// The type of each half of a pseudonym's number as it goes through the aggregate.
const KEY_TYPE: DataType = DataType::UInt64;

/// Logical optimizer rule: group keys that are pseudonym columns are grouped by number.
#[derive(Debug)]
pub struct PseudonymGroupKeys {
    /// (table, column) of every pseudonym column, `_history` tables included.
    columns: HashSet<(String, String)>,
}

impl PseudonymGroupKeys {
    pub fn new(columns: HashSet<(String, String)>) -> PseudonymGroupKeys {
        PseudonymGroupKeys { columns }
    }

    /// Is `column` of `plan`'s output, through column references and unions alone, a warehouse table's pseudonym column?
    fn is_pseudonym(&self, plan: &LogicalPlan, column: &Column) -> bool {
        let Ok(i) = plan.schema().index_of_column(column) else { return false };
        self.holds_pseudonyms(plan, i)
    }

    /// Is every value of `plan`'s output column `i` a value of a pseudonym column?
    fn holds_pseudonyms(&self, plan: &LogicalPlan, i: usize) -> bool {
        match plan {
            // A union's column is its inputs' columns at the same place (`SELECT person_id FROM a UNION …`).
            LogicalPlan::Union(u) => u.inputs.iter().all(|input| self.holds_pseudonyms(input, i)),
            LogicalPlan::SubqueryAlias(a) => self.holds_pseudonyms(&a.input, i),
            LogicalPlan::Distinct(Distinct::All(input)) => self.holds_pseudonyms(input, i),
            LogicalPlan::Filter(f) => self.holds_pseudonyms(&f.input, i),
            LogicalPlan::Sort(s) => self.holds_pseudonyms(&s.input, i),
            LogicalPlan::Limit(l) => self.holds_pseudonyms(&l.input, i),
            // A join's output is its left input's columns, then its right's (semi- and anti-joins one side's).
            LogicalPlan::Join(j) => {
                let width = j.left.schema().fields().len();
                match j.join_type {
                    JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                        i < width && self.holds_pseudonyms(&j.left, i)
                    }
                    JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                        i < j.right.schema().fields().len() && self.holds_pseudonyms(&j.right, i)
                    }
                    _ if i < width => self.holds_pseudonyms(&j.left, i),
                    _ => self.holds_pseudonyms(&j.right, i - width),
                }
            }
            LogicalPlan::Aggregate(a) if i < a.group_expr.len() => match unaliased(&a.group_expr[i]) {
                Expr::Column(c) => self.is_pseudonym(&a.input, c),
                _ => false,
            },
            LogicalPlan::Window(w) if i < w.input.schema().fields().len() => self.holds_pseudonyms(&w.input, i),
            // The text of a pseudonym's halves (a join's key, see `join_by_number`) is a pseudonym
            // whatever the halves were computed from.
            LogicalPlan::Projection(p) => match p.expr.get(i).map(unaliased) {
                Some(Expr::Column(c)) => self.is_pseudonym(&p.input, c),
                Some(e) => text_of_halves(e).is_some(),
                None => false,
            },
            _ => lineage::of(plan).get(i).is_some_and(|l| {
                l.plain && l.decided && !l.sources.is_empty() && l.sources.iter().all(|s| self.columns.contains(s))
            }),
        }
    }

    /// `join` matching pseudonyms by number: each side gains the halves of its pseudonym keys as
    /// columns, the join matches those, and a projection above gives the join's own columns back.
    fn join_by_number(&self, join: &Join) -> DfResult<Option<LogicalPlan>> {
        fn pseudonym<'a>(rule: &PseudonymGroupKeys, input: &LogicalPlan, e: &'a Expr) -> Option<&'a Column> {
            lineage::referenced(e).filter(|c| {
                input.schema().qualified_field_from_column(c).is_ok_and(|(_, f)| f.data_type() == &DataType::Utf8)
                    && rule.is_pseudonym(input, c)
            })
        }
        let pairs: Vec<(usize, &Column, &Column)> = (join.on.iter().enumerate())
            .filter_map(|(k, (l, r))| Some((k, pseudonym(self, &join.left, l)?, pseudonym(self, &join.right, r)?)))
            .collect();
        // NOT IN's null-aware anti join takes one key.
        if pairs.is_empty() || join.null_aware {
            return Ok(None);
        }
        let name = |side: &str, k: usize, half: Half| format!("__ladu_join_key_{side}{k}_{}", half.suffix());
        let keyed =
            |input: &Arc<LogicalPlan>, side: &str, columns: Vec<(usize, &Column)>| -> DfResult<Arc<LogicalPlan>> {
                let mut input = Arc::clone(input);
                let mut exprs: Vec<Expr> = input.schema().columns().into_iter().map(Expr::Column).collect();
                for (k, c) in columns {
                    let names = [Half::High, Half::Low].map(|half| name(side, k, half));
                    // A key that a join or a grouping below gave as the text of its halves is
                    // matched by those halves as they are.
                    if let Some(exposed) = Self::expose_halves(&input, c, &names)? {
                        input = Arc::new(exposed);
                        exprs.extend(names.map(|n| Expr::Column(Column::new_unqualified(n))));
                        continue;
                    }
                    for (half, name) in [Half::High, Half::Low].into_iter().zip(names) {
                        exprs.push(Expr::Column(c.clone()).call(PseudonymKey::udf(half)).alias(name));
                    }
                }
                Ok(Arc::new(LogicalPlan::Projection(Projection::try_new(exprs, input)?)))
            };
        let left = keyed(&join.left, "l", pairs.iter().map(|&(k, l, _)| (k, l)).collect())?;
        let right = keyed(&join.right, "r", pairs.iter().map(|&(k, _, r)| (k, r)).collect())?;
        let mut on = Vec::with_capacity(join.on.len() + pairs.len());
        for (k, pair) in join.on.iter().enumerate() {
            if pairs.iter().any(|&(p, _, _)| p == k) {
                for half in [Half::High, Half::Low] {
                    let key = |side| Expr::Column(Column::new_unqualified(name(side, k, half)));
                    on.push((key("l"), key("r")));
                }
            } else {
                on.push(pair.clone());
            }
        }
        let joined = Join::try_new(
            left,
            right,
            on,
            join.filter.clone(),
            join.join_type,
            join.join_constraint,
            join.null_equality,
            join.null_aware,
        )?;
        // Each pseudonym key column leaves the join as the text of its halves rather than as
        // itself: the hash table and the repartitions below hold 16 bytes of it, not 16 and its 32
        // characters (s13's hash table of 1M sick-leave rows: 139 → 96 MB). An outer join's
        // missing side has no halves, so its text is null as the column's was.
        let texts: Vec<(&Column, Expr)> = pairs
            .iter()
            .flat_map(|&(k, l, r)| [(l, "l", k), (r, "r", k)])
            .map(|(c, side, k)| {
                let half = |half| Expr::Column(Column::new_unqualified(name(side, k, half)));
                (c, Arc::new(PseudonymText::udf()).call(vec![half(Half::High), half(Half::Low)]))
            })
            .collect();
        let columns = (join.schema.columns().into_iter())
            .map(|c| match texts.iter().find(|(key, _)| **key == c) {
                Some((_, text)) => text.clone().alias_qualified(c.relation.clone(), &c.name),
                None => Expr::Column(c),
            })
            .collect();
        Ok(Some(LogicalPlan::Projection(Projection::try_new(columns, Arc::new(LogicalPlan::Join(joined)))?)))
    }

    /// `plan` with two more columns, `names`, holding the halves that its column `c` is the text
    /// of: found where a projection spells `c` as `pseudonym_text(high, low)` (as a join on
    /// pseudonyms or a grouping by them leaves it), through projections, filters and aliases that
    /// pass `c` on as it is. `None` where `c` is spelled otherwise, or a name is taken.
    fn expose_halves(plan: &LogicalPlan, c: &Column, names: &[String; 2]) -> DfResult<Option<LogicalPlan>> {
        if names.iter().any(|n| plan.schema().has_column_with_unqualified_name(n)) {
            return Ok(None);
        }
        // The halves of `e`, a projection's expression over `below`, and what the projection is then over.
        let halves = |below: &LogicalPlan, e: &Expr| -> DfResult<Option<(LogicalPlan, [Expr; 2])>> {
            let exposed = names.clone().map(|n| Expr::Column(Column::new_unqualified(n)));
            Ok(match unaliased(e) {
                Expr::Column(d) => Self::expose_halves(below, d, names)?.map(|b| (b, exposed)),
                e => text_of_halves(e).map(|[high, low]| (below.clone(), [high.clone(), low.clone()])),
            })
        };
        Ok(match plan {
            LogicalPlan::Projection(p) => {
                let Ok(i) = p.schema.index_of_column(c) else { return Ok(None) };
                let Some((input, [high, low])) = halves(&p.input, &p.expr[i])? else { return Ok(None) };
                let mut exprs = p.expr.clone();
                exprs.extend([high.alias(&names[0]), low.alias(&names[1])]);
                Some(LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?))
            }
            LogicalPlan::Filter(f) => match Self::expose_halves(&f.input, c, names)? {
                Some(input) => Some(LogicalPlan::Filter(Filter::try_new(f.predicate.clone(), Arc::new(input))?)),
                None => None,
            },
            // `JOIN (SELECT person_id, … GROUP BY person_id) i`: the alias names the subquery's columns anew.
            LogicalPlan::SubqueryAlias(a) => {
                let Ok(i) = a.schema.index_of_column(c) else { return Ok(None) };
                let (qualifier, field) = a.input.schema().qualified_field(i);
                let inner = Column::new(qualifier.cloned(), field.name());
                match Self::expose_halves(&a.input, &inner, names)? {
                    Some(input) => {
                        Some(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(input), a.alias.clone())?))
                    }
                    None => None,
                }
            }
            _ => None,
        })
    }

    /// `aggregate`, where it groups or counts by the number of a pseudonym that its input spells
    /// from two halves (`pseudonym_text(high, low)`, as a join on pseudonyms gives them), taking
    /// the halves themselves: the text is neither made nor read back. The input gains the halves
    /// as columns; its text column goes when nothing else reads it.
    fn from_halves(aggregate: &Aggregate) -> DfResult<Option<LogicalPlan>> {
        let LogicalPlan::Projection(projection) = aggregate.input.as_ref() else { return Ok(None) };
        // The halves that output column `c` of the projection is the text of, and its place.
        let halves_of = |e: &Expr| -> Option<(usize, [Expr; 2])> {
            let Expr::Column(c) = e else { return None };
            let i = projection.schema.index_of_column(c).ok()?;
            let [high, low] = text_of_halves(unaliased(projection.expr.get(i)?))?;
            Some((i, [high.clone(), low.clone()]))
        };
        let mut added: Vec<Expr> = Vec::new();
        let mut half_column = |i: usize, half: Half, e: &Expr| {
            let name = format!("__ladu_halves_{i}_{}", half.suffix());
            if !added.iter().any(|a| matches!(a, Expr::Alias(a) if a.name == name)) {
                added.push(e.clone().alias(&name));
            }
            Expr::Column(Column::new_unqualified(name))
        };
        let schema = &aggregate.schema;
        let mut group = Vec::with_capacity(aggregate.group_expr.len());
        for (k, e) in aggregate.group_expr.iter().enumerate() {
            let key = match unaliased(e) {
                Expr::ScalarFunction(f) => [Half::High, Half::Low]
                    .into_iter()
                    .find(|&half| f.func.name() == PseudonymKey::name_of(half))
                    .zip(f.args.first().and_then(halves_of)),
                _ => None,
            };
            group.push(match key {
                Some((half, (i, halves))) => {
                    let index = if half == Half::High { 0 } else { 1 };
                    half_column(i, half, &halves[index]).alias(schema.field(k).name())
                }
                None => e.clone(),
            });
        }
        let width = aggregate.group_expr.len();
        let mut aggr = Vec::with_capacity(aggregate.aggr_expr.len());
        for (k, e) in aggregate.aggr_expr.iter().enumerate() {
            let by_halves = match unaliased(e) {
                Expr::AggregateFunction(AggregateFunction { func, params }) => match params.args.as_slice() {
                    [Expr::ScalarFunction(f)] if f.func.name() == PseudonymNumber::NAME => {
                        f.args.first().and_then(halves_of).map(|(i, [high, low])| {
                            let halves = vec![half_column(i, Half::High, &high), half_column(i, Half::Low, &low)];
                            vec![Arc::new(PseudonymNumber::udf()).call(halves)]
                        })
                    }
                    // `count(DISTINCT person_id) … GROUP BY x`, which DataFusion turns into a count of
                    // the groups of (x, person_id), counts the groups' pseudonyms, spelled back
                    // from their halves: a pseudonym is null exactly where its high half is, so
                    // that half is counted and no text is made.
                    [arg] if func.name() == "count" && !params.distinct => {
                        halves_of(arg).map(|(i, [high, _])| vec![half_column(i, Half::High, &high)])
                    }
                    _ => None,
                }
                .map(|args| {
                    let mut params = params.clone();
                    params.args = args;
                    let name = aggregate.schema.field(width + k).name();
                    Expr::AggregateFunction(AggregateFunction { func: Arc::clone(func), params }).alias(name)
                }),
                _ => None,
            };
            aggr.push(by_halves.unwrap_or_else(|| e.clone()));
        }
        if added.is_empty() {
            return Ok(None);
        }
        let mut exprs = projection.expr.clone();
        exprs.extend(added);
        let input = Projection::try_new(exprs, Arc::clone(&projection.input))?;
        let aggregate = Aggregate::try_new(Arc::new(LogicalPlan::Projection(input)), group, aggr)?;
        Ok(Some(LogicalPlan::Aggregate(aggregate)))
    }

    /// `count(DISTINCT c)` of a pseudonym column `c`, counting its number instead, under the same name.
    fn distinct_count_by_number(&self, input: &LogicalPlan, e: &Expr, name: &str) -> Option<Expr> {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = e else { return None };
        let [Expr::Column(c)] = params.args.as_slice() else { return None };
        if func.name() != "count" || !params.distinct || !params.order_by.is_empty() {
            return None;
        }
        let (_, field) = input.schema().qualified_field_from_column(c).ok()?;
        if field.data_type() != &DataType::Utf8 || !self.is_pseudonym(input, c) {
            return None;
        }
        let mut params = params.clone();
        params.args = vec![Expr::Column(c.clone()).call(PseudonymNumber::udf())];
        let counted = Expr::AggregateFunction(AggregateFunction { func: Arc::clone(func), params });
        Some(counted.alias(name))
    }
}

impl OptimizerRule for PseudonymGroupKeys {
    fn name(&self) -> &str {
        "ladu_pseudonym_group_keys"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        if let LogicalPlan::Join(join) = &plan {
            return Ok(match self.join_by_number(join)? {
                Some(joined) => Transformed::yes(joined),
                None => Transformed::no(plan),
            });
        }
        let LogicalPlan::Aggregate(aggregate) = &plan else { return Ok(Transformed::no(plan)) };
        if aggregate.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
            return Ok(Transformed::no(plan));
        }
        if let Some(from_halves) = Self::from_halves(aggregate)? {
            return Ok(Transformed::yes(from_halves));
        }
        let schema = &aggregate.schema;
        let mut group = Vec::with_capacity(aggregate.group_expr.len());
        // What the projection above the new aggregate gives, field for field as the old one did.
        let mut outputs = Vec::with_capacity(schema.fields().len());
        for (i, e) in aggregate.group_expr.iter().enumerate() {
            let (qualifier, field) = schema.qualified_field(i);
            match lineage::referenced(e) {
                Some(c) if field.data_type() == &DataType::Utf8 && self.is_pseudonym(&aggregate.input, c) => {
                    let mut key = |half: Half| {
                        let name = format!("__ladu_pseudonym_key_{i}_{}", half.suffix());
                        group.push(Expr::Column(c.clone()).call(PseudonymKey::udf(half)).alias(&name));
                        Expr::Column(Column::new_unqualified(name))
                    };
                    let (hi, lo) = (key(Half::High), key(Half::Low));
                    outputs.push(
                        Arc::new(PseudonymText::udf())
                            .call(vec![hi, lo])
                            .alias_qualified(qualifier.cloned(), field.name()),
                    );
                }
                _ => {
                    group.push(e.clone());
                    outputs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
                }
            }
        }
        let width = aggregate.group_expr.len();
        let aggr: Vec<Expr> = (aggregate.aggr_expr.iter().enumerate())
            .map(|(i, e)| {
                let name = schema.field(width + i).name();
                self.distinct_count_by_number(&aggregate.input, e, name).unwrap_or_else(|| e.clone())
            })
            .collect();
        let same_groups = group == aggregate.group_expr;
        if same_groups && aggr == aggregate.aggr_expr {
            return Ok(Transformed::no(plan));
        }
        let grouped = Aggregate::try_new(Arc::clone(&aggregate.input), group, aggr)?;
        if same_groups {
            // The same output, field for field: the counts keep their names.
            return Ok(Transformed::yes(LogicalPlan::Aggregate(grouped)));
        }
        for i in width..schema.fields().len() {
            let (qualifier, field) = schema.qualified_field(i);
            outputs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
        }
        let projection = Projection::try_new(outputs, Arc::new(LogicalPlan::Aggregate(grouped)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

/// `e` without the aliases around it.
fn unaliased(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unaliased(&a.expr),
        e => e,
    }
}

/// The two halves whose text `e` is, where `e` is `pseudonym_text(high, low)`.
fn text_of_halves(e: &Expr) -> Option<[&Expr; 2]> {
    match e {
        Expr::ScalarFunction(f) if f.func.name() == PseudonymText::NAME => match f.args.as_slice() {
            [high, low] => Some([high, low]),
            _ => None,
        },
        _ => None,
    }
}

/// Calls a scalar function on one argument.
trait Call {
    fn call(self, udf: ScalarUDF) -> Expr;
}

impl Call for Expr {
    fn call(self, udf: ScalarUDF) -> Expr {
        Arc::new(udf).call(vec![self])
    }
}

/// Which 64 bits of a pseudonym's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Half {
    High,
    Low,
}

impl Half {
    fn suffix(self) -> &'static str {
        match self {
            Half::High => "hi",
            Half::Low => "lo",
        }
    }
}

/// `pseudonym_key_hi(text)`, `pseudonym_key_lo(text)`: one half of a
/// pseudonym's number; an error for text that is not a pseudonym.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PseudonymKey {
    half: Half,
    signature: Signature,
}

impl PseudonymKey {
    fn name_of(half: Half) -> &'static str {
        match half {
            Half::High => "pseudonym_key_hi",
            Half::Low => "pseudonym_key_lo",
        }
    }

    fn udf(half: Half) -> ScalarUDF {
        ScalarUDF::new_from_impl(PseudonymKey {
            half,
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for PseudonymKey {
    fn name(&self) -> &str {
        Self::name_of(self.half)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(KEY_TYPE)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [text] = args.args.as_slice() else { return exec_err!("{} takes one argument", self.name()) };
        let text = text.to_array(args.number_rows)?;
        let text = text.as_string::<i32>();
        let mut keys = Vec::with_capacity(text.len());
        for i in 0..text.len() {
            if text.is_null(i) {
                keys.push(0);
                continue;
            }
            // Each half reads its own digits; with the other half's, every digit is checked.
            match pseudonym_half_bits(text.value(i).as_bytes(), self.half == Half::High) {
                Some(bits) => keys.push(bits),
                // The value itself stays out of the message: it may be anything.
                None => return exec_err!("a value of a pseudonym column is not a pseudonym (32 lowercase hex digits)"),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(UInt64Array::new(keys.into(), text.nulls().cloned())) as ArrayRef))
    }
}

/// `pseudonym_text(high, low)`: the pseudonym whose number's halves [`PseudonymKey`] gave.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PseudonymText {
    signature: Signature,
}

impl PseudonymText {
    const NAME: &str = "pseudonym_text";

    fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(PseudonymText {
            signature: Signature::exact(vec![KEY_TYPE, KEY_TYPE], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for PseudonymText {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [high, low] = args.args.as_slice() else { return exec_err!("pseudonym_text takes two arguments") };
        let (high, low) = (high.to_array(args.number_rows)?, low.to_array(args.number_rows)?);
        let (high, low) = (high.as_primitive::<UInt64Type>(), low.as_primitive::<UInt64Type>());
        let mut text = StringBuilder::with_capacity(high.len(), high.len() * 32);
        for (h, l) in high.iter().zip(low.iter()) {
            let bits = h.zip(l).map(|(h, l)| u128::from(h) << 64 | u128::from(l));
            text.append_option(bits.map(pseudonym_from_bits).as_ref().map(|p| p.as_str()));
        }
        Ok(ColumnarValue::Array(Arc::new(text.finish())))
    }
}

/// `pseudonym_number(text)`: a pseudonym's 128 bits as the `i128` of a
/// `Decimal128(38, 0)` (two's complement); an error for text that is not a pseudonym.
///
/// Only `count(DISTINCT …)` reads it, as a set of `i128` that it never reads
/// as numbers: most pseudonyms are above the 38 digits the type promises, so
/// the values are not meant to be shown or computed with.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PseudonymNumber {
    signature: Signature,
}

impl PseudonymNumber {
    const NAME: &str = "pseudonym_number";
    const TYPE: DataType = DataType::Decimal128(38, 0);

    fn udf() -> ScalarUDF {
        let text = TypeSignature::Exact(vec![DataType::Utf8]);
        let halves = TypeSignature::Exact(vec![KEY_TYPE, KEY_TYPE]);
        ScalarUDF::new_from_impl(PseudonymNumber {
            signature: Signature::one_of(vec![text, halves], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for PseudonymNumber {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(Self::TYPE)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let text = match args.args.as_slice() {
            [text] => text.to_array(args.number_rows)?,
            [high, low] => {
                // The halves of a pseudonym that `pseudonym_text` would spell (see `from_halves`).
                let (high, low) = (high.to_array(args.number_rows)?, low.to_array(args.number_rows)?);
                let (high, low) = (high.as_primitive::<UInt64Type>(), low.as_primitive::<UInt64Type>());
                let numbers = (high.values().iter().zip(low.values()))
                    .map(|(&h, &l)| (u128::from(h) << 64 | u128::from(l)) as i128)
                    .collect::<Vec<i128>>();
                let nulls = NullBuffer::union(high.nulls(), low.nulls());
                let numbers = Decimal128Array::new(numbers.into(), nulls).with_data_type(Self::TYPE);
                return Ok(ColumnarValue::Array(Arc::new(numbers)));
            }
            _ => return exec_err!("pseudonym_number takes a pseudonym or its two halves"),
        };
        let text = text.as_string::<i32>();
        let mut numbers = Vec::with_capacity(text.len());
        for i in 0..text.len() {
            if text.is_null(i) {
                numbers.push(0);
                continue;
            }
            match pseudonym_bits(text.value(i).as_bytes()) {
                Some(bits) => numbers.push(bits as i128),
                None => return exec_err!("a value of a pseudonym column is not a pseudonym (32 lowercase hex digits)"),
            }
        }
        let numbers = Decimal128Array::new(numbers.into(), text.nulls().cloned()).with_data_type(Self::TYPE);
        Ok(ColumnarValue::Array(Arc::new(numbers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// Table `t`: `p` a pseudonym column, `s` other text, `v` a number; with or without the rule.
    fn context(p: &[Option<String>], s: &[&str], rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Utf8, true),
            Field::new("s", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter(p.iter().cloned())),
                Arc::new(StringArray::from_iter_values(s.iter().copied())),
                Arc::new(Int64Array::from_iter_values(0..p.len() as i64)),
            ],
        )
        .expect("columns match the schema");
        let config = SessionConfig::new().with_target_partitions(2).with_batch_size(7);
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features();
        if rule {
            let columns = HashSet::from([("t".to_owned(), "p".to_owned())]);
            state = state.with_optimizer_rule(Arc::new(PseudonymGroupKeys::new(columns)));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let halves = batch.num_rows() / 2;
        let parts = vec![vec![batch.slice(0, halves)], vec![batch.slice(halves, batch.num_rows() - halves)]];
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).expect("a table"))).expect("registers");
        ctx
    }

    fn run(ctx: &SessionContext, sql: &str) -> DfResult<String> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            let batches = ctx.sql(sql).await?.collect().await?;
            Ok(pretty_format_batches(&batches)?.to_string())
        })
    }

    /// Grouped queries, and whether the rule groups their pseudonyms by number.
    const QUERIES: [(&str, bool); 11] = [
        ("SELECT p, count(*) AS n, sum(v) AS total FROM t GROUP BY p ORDER BY p", true),
        ("SELECT count(*) AS n FROM (SELECT p FROM t WHERE v < 5 UNION SELECT p FROM t WHERE v > 20)", true),
        ("SELECT p FROM t WHERE v < 5 UNION SELECT p FROM t WHERE v > 20 ORDER BY p", true),
        ("SELECT count(DISTINCT p) AS persons FROM t", true),
        ("SELECT s, count(DISTINCT p) AS persons, min(p) AS first FROM t GROUP BY s ORDER BY s", true),
        (
            "WITH x AS (SELECT p AS person, v FROM t WHERE v > 2) \
             SELECT y.person, sum(y.v) AS total FROM x y GROUP BY y.person ORDER BY 1",
            true,
        ),
        ("SELECT a.p, count(*) AS n FROM t a JOIN t b ON a.p = b.p GROUP BY a.p ORDER BY 1", true),
        ("SELECT upper(p) AS u, count(*) AS n FROM t GROUP BY upper(p) ORDER BY 1", false),
        ("SELECT p, count(*) AS n FROM (SELECT p FROM t UNION ALL SELECT 'x') GROUP BY p ORDER BY p", false),
        ("SELECT s, count(*) AS n FROM t GROUP BY s ORDER BY s", false),
        ("SELECT p FROM t UNION SELECT s FROM t ORDER BY p", false),
    ];

    /// Aggregates with several distinct counts, and whether the rule counts their pseudonyms by number.
    const DISTINCT_COUNTS: [(&str, bool); 5] = [
        ("SELECT count(DISTINCT p) AS persons, count(DISTINCT s) AS kinds, count(*) AS n FROM t", true),
        // A pseudonym that left a join as the text of its halves is still one.
        ("SELECT count(DISTINCT a.p) AS persons, count(DISTINCT b.v) AS n FROM t a JOIN t b ON a.p = b.p", true),
        ("SELECT s, count(DISTINCT p), count(DISTINCT v) FROM t GROUP BY s ORDER BY s", true),
        ("SELECT count(DISTINCT upper(p)), count(DISTINCT s) FROM t", false),
        ("SELECT count(DISTINCT v), count(DISTINCT s) FROM t", false),
    ];

    /// Joins, and whether the rule matches their pseudonyms by number.
    const JOINS: [(&str, bool); 12] = [
        ("SELECT a.p, a.v, b.v AS w FROM t a JOIN t b ON a.p = b.p ORDER BY 2, 3", true),
        (
            "SELECT a.v, b.p, c.v AS w FROM t a JOIN t b ON a.p = b.p FULL JOIN t c ON c.p = b.p \
             ORDER BY 1, 3, 2",
            true,
        ),
        (
            "SELECT a.v, b.n FROM t a LEFT JOIN (SELECT p, count(*) AS n FROM t WHERE v > 3 GROUP BY p) b \
             ON b.p = a.p ORDER BY 1",
            true,
        ),
        ("SELECT a.v, b.v AS w FROM t a LEFT JOIN t b ON a.p = b.p AND a.s = b.s ORDER BY 1, 2", true),
        ("SELECT a.v, b.v AS w, b.p FROM t a FULL JOIN t b ON b.p = a.p ORDER BY 1, 2", true),
        ("SELECT v FROM t a WHERE EXISTS (SELECT 1 FROM t b WHERE b.p = a.p AND b.v > 3) ORDER BY v", true),
        ("SELECT v FROM t a WHERE NOT EXISTS (SELECT 1 FROM t b WHERE b.p = a.p AND b.v > 3) ORDER BY v", true),
        ("SELECT v FROM t WHERE p IN (SELECT p FROM t WHERE v > 3) ORDER BY v", true),
        // NOT IN's null-aware anti join takes one key.
        ("SELECT v FROM t WHERE p NOT IN (SELECT p FROM t WHERE v > 3) ORDER BY v", false),
        ("SELECT count(*) AS n FROM t a JOIN t b ON a.s = b.s", false),
        ("SELECT count(*) AS n FROM t a JOIN t b ON a.p = b.s", false),
        ("SELECT count(*) AS n FROM t a JOIN t b ON upper(a.p) = upper(b.p)", false),
    ];

    /// Pseudonym `i` of a small pool: the lowest, the highest, around the
    /// largest number a `Decimal128(38, 0)` holds (10^38), and spread between.
    fn pseudonym(i: u8) -> String {
        const TEN_TO_38: u128 = 100_000_000_000_000_000_000_000_000_000_000_000_000;
        let bits = match i {
            0 => 0,
            1 => u128::MAX,
            2 => TEN_TO_38 - 1,
            3 => TEN_TO_38,
            4 => u128::MAX - 1,
            5 => 1 << 64,
            _ => u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
        };
        format!("{bits:032x}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn groups_agree_with_grouping_by_text(
            rows in prop::collection::vec((prop::option::of(0..10u8), 0..3u8), 1..60),
        ) {
            let p: Vec<Option<String>> = rows.iter().map(|(p, _)| p.map(pseudonym)).collect();
            let s: Vec<&str> = rows.iter().map(|(_, s)| ["a", "b", "c"][usize::from(*s)]).collect();
            let ours = context(&p, &s, true);
            let theirs = context(&p, &s, false);
            for (sql, applies) in QUERIES {
                let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
                prop_assert_eq!(plan.contains("pseudonym_key_hi"), applies, "{}", plan);
                prop_assert!(!plan.contains("Decimal128"), "{}", plan);
                prop_assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{}", sql);
            }
            for (sql, applies) in JOINS {
                let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
                prop_assert_eq!(plan.contains("__ladu_join_key"), applies, "{}", plan);
                prop_assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{}", sql);
            }
            for (sql, applies) in DISTINCT_COUNTS {
                let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
                prop_assert_eq!(plan.contains("pseudonym_number"), applies, "{}", plan);
                // The same columns, names included, and the same counts.
                prop_assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{}", sql);
            }
        }
    }

    /// Every pseudonym's number, the highest included, survives the key's
    /// type: the halves are valid values of their type (a `Decimal128(38, 0)`
    /// holds only numbers below 10^38, about 30 % of pseudonyms) and give the
    /// pseudonym back.
    #[test]
    fn keys_hold_pseudonyms_at_the_top_of_the_range() {
        let p: Vec<Option<String>> = (0..10).map(|i| Some(pseudonym(i))).collect();
        let ctx = context(&p, &["a"; 10], false);
        ctx.register_udf(PseudonymKey::udf(Half::High));
        ctx.register_udf(PseudonymKey::udf(Half::Low));
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let batches = runtime
            .block_on(async {
                ctx.sql("SELECT p, pseudonym_key_hi(p), pseudonym_key_lo(p) FROM t").await?.collect().await
            })
            .expect("runs");
        for b in &batches {
            for key in [b.column(1), b.column(2)] {
                key.to_data().validate_full().expect("valid data");
                if let Some(d) = key.as_primitive_opt::<arrow::datatypes::Decimal128Type>() {
                    d.validate_decimal_precision(d.precision()).expect("every key within the type's precision");
                }
            }
            let (text, hi, lo) = (b.column(0).as_string::<i32>(), b.column(1), b.column(2));
            let (hi, lo) = (hi.as_primitive::<UInt64Type>(), lo.as_primitive::<UInt64Type>());
            for i in 0..b.num_rows() {
                let bits = u128::from(hi.value(i)) << 64 | u128::from(lo.value(i));
                assert_eq!(pseudonym_from_bits(bits).as_str(), text.value(i));
            }
        }
    }

    /// A pseudonym a join matches on leaves it as the text of its halves: the side that holds it
    /// carries only the halves into the join (and the hash table); grouped or counted above the
    /// join it is taken by those halves; and the answer is the same.
    #[test]
    fn joined_pseudonyms_cross_the_join_as_their_halves() {
        let p: Vec<Option<String>> = (0..12).map(|i| (i % 5 != 4).then(|| pseudonym(i % 4))).collect();
        let ours = context(&p, &["a"; 12], true);
        let theirs = context(&p, &["a"; 12], false);
        for sql in [
            "SELECT a.p, b.v FROM t a JOIN t b ON a.p = b.p ORDER BY 2, 1",
            "SELECT a.v, b.p FROM t a LEFT JOIN t b ON a.p = b.p AND b.v > 6 ORDER BY 1, 2",
        ] {
            let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
            let physical = plan.split("physical_plan").nth(1).expect("a physical plan");
            let join = physical.lines().position(|l| l.contains("HashJoinExec")).expect("a hash join");
            let below: Vec<&str> = physical.lines().skip(join + 1).collect();
            assert!(physical.lines().take(join).any(|l| l.contains("pseudonym_text(__ladu_join_key")), "{plan}");
            // Below the join `p` is read only to compute its halves.
            for line in &below {
                let carried = line.matches("p@").count();
                let halved = line.matches("pseudonym_key_hi(p@").count() + line.matches("pseudonym_key_lo(p@").count();
                assert!(!line.contains("ProjectionExec") || carried == halved, "{line}\n{plan}");
            }
            assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{sql}");
        }
        // Grouped above the join, and through another join, it is still grouped by number.
        for sql in [
            "SELECT a.p, count(*) AS n FROM t a JOIN t b ON a.p = b.p GROUP BY a.p ORDER BY 1",
            "SELECT b.p, count(*) AS n FROM t a JOIN t b ON a.p = b.p JOIN t c ON c.p = b.p GROUP BY b.p ORDER BY 1",
        ] {
            let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
            assert!(plan.contains("__ladu_pseudonym_key_0_hi") && plan.contains("__ladu_join_key_l0_hi"), "{plan}");
            // By the halves the join matched, not by its text read back.
            assert!(plan.contains("gby=[__ladu_halves_0_hi@0 as __ladu_pseudonym_key_0_hi"), "{plan}");
            assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{sql}");
        }
        // A join on what a join or a grouping below gave matches the halves they matched or grouped
        // by: each table's pseudonyms are made into halves once, and no text is made to be read back.
        for (sql, tables) in [
            (
                "SELECT b.p, count(*) AS n FROM t a JOIN t b ON a.p = b.p JOIN t c ON c.p = b.p GROUP BY b.p ORDER BY 1",
                3,
            ),
            (
                "SELECT a.v, b.v AS w, c.p, c.v AS x FROM t a JOIN t b ON a.p = b.p LEFT JOIN t c ON c.p = a.p \
                 ORDER BY 1, 2, 4",
                3,
            ),
            (
                "SELECT c.p, count(*) AS n FROM t a JOIN t b ON a.p = b.p AND a.s = b.s RIGHT JOIN t c \
                 ON b.p = c.p AND c.v > 3 GROUP BY c.p ORDER BY 1",
                3,
            ),
            (
                "SELECT a.v, b.p, b.n FROM t a JOIN (SELECT p, count(*) AS n FROM t GROUP BY p) b ON b.p = a.p \
                 WHERE b.n > 1 ORDER BY 1",
                2,
            ),
        ] {
            let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
            let physical = plan.split("physical_plan").nth(1).expect("a physical plan");
            assert_eq!(physical.matches("pseudonym_key_hi(").count(), tables, "{plan}");
            assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{sql}");
        }
        let sql = "SELECT count(DISTINCT a.p) AS persons, count(DISTINCT b.v) AS n FROM t a JOIN t b ON a.p = b.p";
        let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
        assert!(plan.contains("pseudonym_number(__ladu_halves_0_hi, __ladu_halves_0_lo)"), "{plan}");
        assert!(!plan.contains("pseudonym_text"), "{plan}");
        assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{sql}");
    }

    /// `count(DISTINCT p) … GROUP BY x`, which DataFusion answers by counting the groups of (x, p),
    /// counts them by their halves: no pseudonym is spelled out to be counted.
    #[test]
    fn distinct_counts_by_group_spell_no_pseudonym() {
        let p: Vec<Option<String>> = (0..40).map(|i| (i % 7 != 6).then(|| pseudonym(i % 9))).collect();
        let s: Vec<&str> = (0..40).map(|i| ["ab", "ac", "b"][i % 3]).collect();
        let ours = context(&p, &s, true);
        let theirs = context(&p, &s, false);
        for sql in [
            "SELECT substr(s, 1, 1) AS x, count(DISTINCT p) AS persons FROM t GROUP BY substr(s, 1, 1) ORDER BY 1",
            "SELECT a.s, count(DISTINCT b.p) AS persons FROM t a JOIN t b ON a.p = b.p AND b.v > 5 GROUP BY a.s \
             ORDER BY 1",
            "SELECT s, count(DISTINCT p) AS persons, count(DISTINCT p) FILTER (WHERE v > 9) AS later FROM t \
             GROUP BY s ORDER BY 1",
        ] {
            let plan = run(&ours, &format!("EXPLAIN {sql}")).expect("plans");
            assert!(!plan.contains("pseudonym_text"), "{plan}");
            assert_eq!(run(&ours, sql).expect("runs"), run(&theirs, sql).expect("runs"), "{sql}");
        }
    }

    /// Every pseudonym's bits, the highest included, are one `i128` each that spells the pseudonym.
    #[test]
    fn numbers_hold_pseudonyms_at_the_top_of_the_range() {
        let p: Vec<Option<String>> = (0..10).map(|i| Some(pseudonym(i))).chain([None]).collect();
        let ctx = context(&p, &["a"; 11], false);
        ctx.register_udf(PseudonymNumber::udf());
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let batches = runtime
            .block_on(async { ctx.sql("SELECT p, pseudonym_number(p) FROM t").await?.collect().await })
            .expect("runs");
        for b in &batches {
            let (text, number) = (b.column(0).as_string::<i32>(), b.column(1));
            number.to_data().validate_full().expect("valid data");
            let number = number.as_primitive::<arrow::datatypes::Decimal128Type>();
            for i in 0..b.num_rows() {
                assert_eq!(number.is_null(i), text.is_null(i));
                if text.is_valid(i) {
                    assert_eq!(pseudonym_from_bits(number.value(i) as u128).as_str(), text.value(i));
                }
            }
        }
    }

    /// A value that is not a pseudonym fails the query (whichever half of it is wrong), and the message does not repeat it.
    #[test]
    fn text_that_is_not_a_pseudonym_is_an_error_without_the_value() {
        let upper = |at: usize| {
            let mut p = pseudonym(1).into_bytes();
            p[at] = b'X';
            String::from_utf8(p).expect("ASCII")
        };
        for not in ["38001010009".to_owned(), upper(3), upper(29)] {
            let p = [Some(pseudonym(1)), Some(not.clone())];
            let ctx = context(&p, &["a", "b"], true);
            let err = run(&ctx, "SELECT p, count(*) FROM t GROUP BY p").expect_err("not a pseudonym");
            let message = err.to_string();
            assert!(message.contains("is not a pseudonym"), "{message}");
            assert!(!message.contains(&not), "{message}");
        }
    }
}
