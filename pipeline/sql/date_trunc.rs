//! `CAST(date_trunc('month', d) AS DATE)` and `extract(year FROM d)` of a date `d` computed on the date's day number, not through a timestamp.
//!
//! Analysts count by month, quarter, year or week of a date column. DataFusion
//! truncates a date by making it a nanosecond timestamp, splitting that into
//! calendar fields and back, and casting the result to a date again: 40 ns a
//! row, most of a grouped query over 5M prescriptions (s19). The first day of
//! the month, quarter, year or (Monday-based) week of a day number is a few
//! integer operations (the proleptic Gregorian calendar, as DataFusion's).
//! So are a date's year, quarter, month and day (`extract`, `date_part`),
//! which DataFusion reads by making each day a calendar date first (an age
//! at treatment is `extract(year FROM start_date) - birth_year` over every
//! invoice). Other units and other types are left to DataFusion.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Date32Array, Int32Array};
use arrow::datatypes::{DataType, Date32Type, TimeUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue, exec_err};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, lit,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use super::expr_rewrite;

/// Logical optimizer rule: a date truncated to a date by month, quarter, year or week is `trunc_date(unit, d)`.
#[derive(Debug, Default)]
pub struct DateTrunc;

impl OptimizerRule for DateTrunc {
    fn name(&self) -> &str {
        "ladu_date_trunc"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        // The types of a node's expressions are those of its one input (joins and scans are left alone).
        let inputs = plan.inputs();
        let [input] = inputs.as_slice() else { return Ok(Transformed::no(plan)) };
        let schema = Arc::clone(input.schema());
        expr_rewrite::rewrite_named(plan, |e| match truncated_date(e, &schema) {
            Transformed { data, transformed: false, .. } => date_field(data, &schema),
            done => done,
        })
    }
}

/// The function of this rule called `name`, for a plan decoded on another node.
pub fn function(name: &str) -> Option<ScalarUDF> {
    [TruncDate::udf(), DateField::udf()].into_iter().find(|udf| udf.name() == name)
}

/// `e` as `date_field(field, d)` where it is `date_part(field, d)` of a year, quarter, month or day of a date `d`.
fn date_field(e: Expr, schema: &DFSchema) -> Transformed<Expr> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = &e else { return Transformed::no(e) };
    let [Expr::Literal(field, _), date] = args.as_slice() else { return Transformed::no(e) };
    let Some(field) = field.try_as_str().flatten() else { return Transformed::no(e) };
    if func.name() != "date_part"
        || DayField::parse(field).is_none()
        || date.get_type(schema).ok() != Some(DataType::Date32)
    {
        return Transformed::no(e);
    }
    let date = date.clone();
    Transformed::yes(Arc::new(DateField::udf()).call(vec![lit(field.to_ascii_lowercase()), date]))
}

/// A field of a date that `date_field` reads off its day number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayField {
    Year,
    Quarter,
    Month,
    Day,
}

impl DayField {
    fn parse(field: &str) -> Option<DayField> {
        match field.to_ascii_lowercase().as_str() {
            "year" => Some(DayField::Year),
            "quarter" => Some(DayField::Quarter),
            "month" => Some(DayField::Month),
            "day" => Some(DayField::Day),
            _ => None,
        }
    }

    /// The field of `day` (days since 1970-01-01), which lies in `month`.
    #[inline]
    fn of(self, day: i64, month: &Month) -> i64 {
        match self {
            DayField::Year => month.year,
            DayField::Quarter => (month.month - 1) / 3 + 1,
            DayField::Month => month.month,
            DayField::Day => day - month.first + 1,
        }
    }
}

/// The days of chrono's calendar, through which DataFusion reads a date's fields (NULL outside it).
const CALENDAR_DAYS: std::ops::RangeInclusive<i32> =
    days_from_civil(-262_143, 1, 1) as i32..=days_from_civil(262_142, 12, 31) as i32;

/// `e` as `trunc_date(unit, d)` where it is `CAST(date_trunc(unit, CAST(d AS Timestamp(ns))) AS Date32)`,
/// `d` a date of `schema`.
fn truncated_date(e: Expr, schema: &DFSchema) -> Transformed<Expr> {
    let Expr::Cast(Cast { expr, field }) = &e else { return Transformed::no(e) };
    if field.data_type() != &DataType::Date32 {
        return Transformed::no(e);
    }
    let Expr::ScalarFunction(ScalarFunction { func, args }) = expr.as_ref() else { return Transformed::no(e) };
    let [Expr::Literal(unit, _), Expr::Cast(Cast { expr: date, field: timestamp })] = args.as_slice() else {
        return Transformed::no(e);
    };
    let Some(unit) = unit.try_as_str().flatten() else { return Transformed::no(e) };
    if func.name() != "date_trunc"
        || Unit::parse(unit).is_none()
        || !matches!(timestamp.data_type(), DataType::Timestamp(TimeUnit::Nanosecond, None))
        || date.get_type(schema).ok() != Some(DataType::Date32)
    {
        return Transformed::no(e);
    }
    let date = date.as_ref().clone();
    Transformed::yes(Arc::new(TruncDate::udf()).call(vec![lit(unit.to_ascii_lowercase()), date]))
}

/// A unit of `date_trunc` that starts on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Week,
    Month,
    Quarter,
    Year,
}

impl Unit {
    fn parse(unit: &str) -> Option<Unit> {
        match unit.to_ascii_lowercase().as_str() {
            "week" => Some(Unit::Week),
            "month" => Some(Unit::Month),
            "quarter" => Some(Unit::Quarter),
            "year" => Some(Unit::Year),
            _ => None,
        }
    }

    /// The first day of the unit that holds `day` (days since 1970-01-01), which lies in `month`.
    #[inline]
    fn start(self, day: i64, month: &Month) -> i64 {
        match self {
            // 1970-01-01 was a Thursday: Monday is 0 of (day + 3) mod 7.
            Unit::Week => day - (day + 3).rem_euclid(7),
            Unit::Month => month.first,
            Unit::Quarter => month.quarter_first,
            Unit::Year => month.year_first,
        }
    }
}

/// The calendar month that holds a day, with the first days of it, its quarter and its year.
///
/// A column's days mostly lie in the month of the row before (a warehouse
/// partition is a month), so [`by_month`] finds a month once for a run of its
/// days rather than per row: the calendar arithmetic was a third of a query
/// grouped by month (s19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Month {
    /// Day numbers of the month's first day and of the next month's.
    first: i64,
    next: i64,
    year: i64,
    month: i64,
    quarter_first: i64,
    year_first: i64,
}

impl Month {
    /// The month that holds `day` (days since 1970-01-01).
    fn of(day: i64) -> Month {
        let (year, month, _) = civil_from_days(day);
        let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        Month {
            first: days_from_civil(year, month, 1),
            next: days_from_civil(next_year, next_month, 1),
            year,
            month,
            quarter_first: days_from_civil(year, (month - 1) / 3 * 3 + 1, 1),
            year_first: days_from_civil(year, 1, 1),
        }
    }
}

/// `f(day, month of day)` of every day, the month found anew only where a day leaves the previous day's.
fn by_month<T>(days: &[i32], f: impl Fn(i64, &Month) -> T) -> Vec<T> {
    let Some(&first) = days.first() else { return Vec::new() };
    let mut month = Month::of(i64::from(first));
    days.iter()
        .map(|&day| {
            let day = i64::from(day);
            if !(month.first..month.next).contains(&day) {
                month = Month::of(day);
            }
            f(day, &month)
        })
        .collect()
}

/// (year, month, day) of a day number (days since 1970-01-01), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day number of (year, month, day), proleptic Gregorian (Hinnant's `days_from_civil`).
const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `trunc_date(unit, date)`: the first day of the week, month, quarter or year that holds `date`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TruncDate {
    signature: Signature,
}

impl TruncDate {
    fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(TruncDate {
            signature: Signature::exact(vec![DataType::Utf8, DataType::Date32], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for TruncDate {
    fn name(&self) -> &str {
        "trunc_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Date32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [ColumnarValue::Scalar(ScalarValue::Utf8(Some(unit))), date] = args.args.as_slice() else {
            return exec_err!("trunc_date takes a unit and a date");
        };
        let Some(unit) = Unit::parse(unit) else { return exec_err!("trunc_date knows week, month, quarter and year") };
        let dates = date.to_array(args.number_rows)?;
        let dates = dates.as_primitive::<Date32Type>();
        // A unit's start is never after its day, and before i32's range only for days of its first week or month.
        let starts = by_month(dates.values(), |day, month| i32::try_from(unit.start(day, month)).unwrap_or(i32::MIN));
        Ok(ColumnarValue::Array(Arc::new(Date32Array::new(starts.into(), dates.nulls().cloned()))))
    }
}

/// `date_field(field, date)`: the year, quarter, month or day of `date`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DateField {
    signature: Signature,
}

impl DateField {
    fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(DateField {
            signature: Signature::exact(vec![DataType::Utf8, DataType::Date32], Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for DateField {
    fn name(&self) -> &str {
        "date_field"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [ColumnarValue::Scalar(ScalarValue::Utf8(Some(field))), date] = args.args.as_slice() else {
            return exec_err!("date_field takes a field and a date");
        };
        let Some(field) = DayField::parse(field) else {
            return exec_err!("date_field knows year, quarter, month and day");
        };
        let dates = date.to_array(args.number_rows)?;
        let dates = dates.as_primitive::<Date32Type>();
        // Within i32 for every day of `CALENDAR_DAYS`.
        let fields = by_month(dates.values(), |day, month| field.of(day, month) as i32);
        let values = if dates.values().iter().all(|d| CALENDAR_DAYS.contains(d)) {
            Int32Array::new(fields.into(), dates.nulls().cloned())
        } else {
            dates.iter().zip(fields).map(|(day, v)| day.filter(|d| CALENDAR_DAYS.contains(d)).map(|_| v)).collect()
        };
        Ok(ColumnarValue::Array(Arc::new(values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::testing::run;
    use arrow::array::RecordBatch;
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// Table `t` with one date column `d`, with or without the rule.
    fn context(days: &[Option<i32>], rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Date32Array::from(days.to_vec()))])
            .expect("a batch");
        let mut state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features();
        if rule {
            state = state.with_optimizer_rule(Arc::new(DateTrunc));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("a table")))
            .expect("registers");
        ctx
    }

    /// Truncations, and whether the rule computes them on day numbers.
    const TRUNCATIONS: [(&str, bool); 7] = [
        ("CAST(date_trunc('month', d) AS DATE)", true),
        ("CAST(date_trunc('QUARTER', d) AS DATE)", true),
        ("date_trunc('year', d)::date", true),
        ("CAST(date_trunc('week', d) AS DATE)", true),
        ("CAST(date_trunc('day', d) AS DATE)", false),
        ("date_trunc('month', d)", false),
        ("CAST(date_trunc('month', CAST(d AS TIMESTAMP) + INTERVAL '1 hour') AS DATE)", false),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The same days as DataFusion's, under the same column names, grouped and not.
        #[test]
        fn truncated_dates_agree_with_datafusion(
            // 1679-10-13 to 2262-04-09: within the nanosecond timestamps DataFusion goes through, the
            // start of the year of each day included (1677's is not).
            days in prop_oneof![
                prop::collection::vec(prop::option::weighted(0.9, -106_000i32..106_750), 1..40),
                // Days a few months apart, as a partition's are: runs in one month.
                (-106_000i32..106_600).prop_flat_map(|base| {
                    prop::collection::vec(prop::option::weighted(0.9, base..base + 150), 1..40)
                }),
            ],
        ) {
            let (ours, theirs) = (context(&days, true), context(&days, false));
            for (truncation, applies) in TRUNCATIONS {
                let grouped = format!("SELECT {truncation}, count(*) FROM t GROUP BY {truncation} ORDER BY 1");
                let plan = run(&ours, &format!("EXPLAIN {grouped}"));
                prop_assert_eq!(plan.contains("trunc_date"), applies, "{}", plan);
                let shown = format!("SELECT d, {truncation} FROM t ORDER BY d");
                for sql in [grouped, shown] {
                    prop_assert_eq!(run(&ours, &sql), run(&theirs, &sql), "{}", sql);
                }
            }
        }

        /// Day numbers and calendar dates convert both ways, over the whole range of `Date32`.
        #[test]
        fn civil_dates_round_trip(day in any::<i32>()) {
            let (y, m, d) = civil_from_days(i64::from(day));
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), i64::from(day));
        }
    }

    /// Fields, and whether the rule reads them off day numbers.
    const FIELDS: [(&str, bool); 7] = [
        ("extract(year FROM d)", true),
        ("extract(QUARTER FROM d)", true),
        ("date_part('month', d)", true),
        ("extract(day FROM d)", true),
        ("extract(dow FROM d)", false),
        ("extract(year FROM CAST(d AS TIMESTAMP))", false),
        ("extract(epoch FROM d)", false),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The same fields as DataFusion's, under the same column names, grouped and not, over all of `Date32`.
        #[test]
        fn date_fields_agree_with_datafusion(
            days in prop_oneof![
                prop::collection::vec(prop::option::weighted(0.9, prop_oneof![any::<i32>(), -106_751i32..106_750]), 1..40),
                (-106_751i32..106_600).prop_flat_map(|base| {
                    prop::collection::vec(prop::option::weighted(0.9, base..base + 150), 1..40)
                }),
            ],
        ) {
            let (ours, theirs) = (context(&days, true), context(&days, false));
            // DataFusion reads the other fields through nanosecond timestamps, and fails outside them.
            let in_timestamps = days.iter().flatten().all(|d| (-106_751..106_750).contains(d));
            for (field, applies) in FIELDS.into_iter().filter(|&(_, applies)| applies || in_timestamps) {
                let grouped = format!("SELECT {field}, count(*) FROM t GROUP BY {field} ORDER BY 1");
                let plan = run(&ours, &format!("EXPLAIN {grouped}"));
                prop_assert_eq!(plan.contains("date_field"), applies, "{}", plan);
                let shown = format!("SELECT d, {field}, {field} - 1 AS before FROM t ORDER BY d");
                for sql in [grouped, shown] {
                    prop_assert_eq!(run(&ours, &sql), run(&theirs, &sql), "{}", sql);
                }
            }
        }
    }

    #[test]
    fn known_days() {
        // 2024-02-29 (19782): a Thursday of a leap year's February.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let month = Month::of(19_782);
        assert_eq!(Unit::Month.start(19_782, &month), 19_754); // 2024-02-01
        assert_eq!(Unit::Quarter.start(19_782, &month), 19_723); // 2024-01-01
        assert_eq!(Unit::Year.start(19_782, &month), 19_723);
        assert_eq!(Unit::Week.start(19_782, &month), 19_779); // Monday 2024-02-26
        assert_eq!(Unit::Week.start(-4, &Month::of(-4)), -10); // 1969-12-28, a Sunday: Monday 1969-12-22
        assert_eq!(
            [DayField::Year, DayField::Quarter, DayField::Month, DayField::Day].map(|f| f.of(19_782, &month)),
            [2024, 1, 2, 29]
        );
        assert_eq!(month.next, 19_783); // 2024-03-01
    }

    /// A month kept from the row before answers as the day's own month would, for runs of days that
    /// cross months and years forwards and backwards, and for jumps between distant days.
    #[test]
    fn kept_months_are_the_days_own() {
        let forwards: Vec<i32> = (-800..800).chain(19_700..20_200).collect();
        let backwards: Vec<i32> = forwards.iter().rev().copied().collect();
        let jumps = vec![i32::MIN, 0, i32::MAX, -1, 31, i32::MIN + 40, 59, 60, 365];
        for days in [forwards, backwards, jumps] {
            let kept = by_month(&days, |day, month| (day, *month));
            for (day, month) in kept {
                assert_eq!(month, Month::of(day), "day {day}");
                assert!((month.first..month.next).contains(&day), "day {day}");
            }
        }
    }
}
