//! The rule engine: turns delivered string fields into checked, pseudonymised,
//! generalised Arrow record batches, one per partition. Pure: no I/O.
//!
//! A row is checked whole before anything of it is appended, so a rejected
//! row leaves nothing behind; every problem in it is reported, never its value.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::config::source::{
    ColumnRule, DateFormat, DecimalSeparator, Generalisation, META_COMMIT, META_EXTRACT_DATE, META_EXTRACT_SEQ,
    META_LINE, PartitionPart, RECORD_ID, SourceConfig, ValueType,
};
use crate::ingest::values;
use crate::pseudonym::{Key, Pseudonym, Pseudonymiser, isikukood};
use crate::warehouse::writer::ColumnLayout;

/// Precision and scale of money columns (euros and cents).
pub const MONEY_PRECISION: u8 = 15;
pub const MONEY_SCALE: i8 = 2;
/// Time zone of timestamp columns as stored.
pub const STORED_TZ: &str = "UTC";

/// Access to the string fields of a parsed chunk; `None` for an empty field.
pub trait Fields: Sync {
    fn field(&self, column: usize, row: usize) -> Option<&str>;
}

/// A problem with one value of one row, reported to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line: u64,
    /// Delivered column name; empty when the problem is the whole row.
    pub column: String,
    pub reason: String,
}

/// Initial row capacity of a partition's builders.
const INITIAL_ROWS: usize = 1024;

/// Partition of a row: `year * 100 + month` (month 0 when not partitioned by month), or 0.
pub type PartitionKey = u32;

/// What a chunk of rows became.
#[derive(Debug, Default)]
pub struct Processed {
    pub batches: Vec<(PartitionKey, RecordBatch)>,
    pub rejections: Vec<Rejection>,
    pub rows_rejected: u64,
}

/// Values that are the same for every row of a delivery.
#[derive(Debug, Clone, Copy)]
pub struct RowMeta {
    pub extract_date: i32,
    pub extract_seq: i32,
    pub commit: i64,
}

#[derive(Clone)]
enum Op {
    Keep { ty: ValueType, values: Arc<[String]> },
    Pseudonymise { ps: Pseudonymiser, check: IdCheck },
    Generalise(Generalisation),
}

#[derive(Clone, Copy)]
enum IdCheck {
    Isikukood,
    WorkerCode,
    /// Record keys and reference numbers: any non-empty text.
    Any,
}

#[derive(Clone)]
struct Step {
    /// Index of the delivered column in the chunk.
    input: usize,
    /// Delivered column name (for rejection reports).
    name: String,
    op: Op,
    optional: bool,
    /// Output column, or `None` when only the partition uses it.
    output: usize,
}

#[derive(Clone, Copy)]
enum Val<'a> {
    Null,
    Str(&'a str),
    Static(&'static str),
    Pseudo(Pseudonym),
    Date(i32),
    Ts(i64),
    Money(i128),
    Int(i32),
    Long(i64),
    YearMonth(i32, u32),
}

/// A source's rules compiled against one delivery's header.
#[derive(Clone)]
pub struct Plan {
    steps: Vec<Step>,
    /// Header indices the steps read, ascending.
    inputs: Vec<usize>,
    /// Step producing `record_id` when the key column's own output is not `record_id`.
    /// When the record key's own output is not `record_id` (population: it is
    /// `person_id`), its pseudonym is copied: (from output, to output).
    record_id_copy: Option<(usize, usize)>,
    partition: Option<(usize, Vec<PartitionPart>)>,
    date_format: DateFormat,
    decimal: DecimalSeparator,
    schema: SchemaRef,
    meta: RowMeta,
    /// Output columns to sort each row group by.
    sort_columns: Vec<usize>,
}

/// Output schema of a source: record_id, the rules' columns in config order, row metadata.
pub fn output_schema(source: &SourceConfig) -> SchemaRef {
    let mut fields = vec![Field::new(RECORD_ID, DataType::Utf8, false)];
    for (col, rule) in &source.columns {
        let nullable = rule.optional();
        let (name, ty) = match rule {
            ColumnRule::Drop { .. } => continue,
            ColumnRule::Keep { ty, name, .. } => (name.as_deref().unwrap_or(col), keep_type(*ty)),
            ColumnRule::Pseudonymise { name, .. } => {
                if name == RECORD_ID {
                    continue;
                }
                (name.as_str(), DataType::Utf8)
            }
            ColumnRule::Generalise { to, name, .. } => {
                (name.as_str(), if *to == Generalisation::Year { DataType::Int32 } else { DataType::Utf8 })
            }
        };
        fields.push(Field::new(name, ty, nullable));
    }
    fields.push(Field::new(META_EXTRACT_DATE, DataType::Date32, false));
    fields.push(Field::new(META_EXTRACT_SEQ, DataType::Int32, false));
    fields.push(Field::new(META_COMMIT, DataType::Int64, false));
    fields.push(Field::new(META_LINE, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

fn keep_type(ty: ValueType) -> DataType {
    match ty {
        ValueType::Date => DataType::Date32,
        ValueType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some(STORED_TZ.into())),
        ValueType::Money => DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE),
        ValueType::Integer => DataType::Int32,
        _ => DataType::Utf8,
    }
}

impl Plan {
    /// Compile `source`'s rules for a delivery whose header is `header`.
    /// The caller has checked that header and config name the same columns.
    pub fn new(source: &SourceConfig, header: &[String], key: &Key, meta: RowMeta) -> Plan {
        let schema = output_schema(source);
        let index_of = |name: &str| header.iter().position(|h| h == name).expect("header checked against config");
        let out_index = |name: &str| schema.index_of(name).expect("schema built from config");
        let mut steps = Vec::new();
        let mut record_id_copy = None;
        for (col, rule) in &source.columns {
            let op = match rule {
                ColumnRule::Drop { .. } => continue,
                ColumnRule::Keep { ty, values, .. } => {
                    Op::Keep { ty: *ty, values: values.clone().unwrap_or_default().into() }
                }
                ColumnRule::Pseudonymise { kind, .. } => Op::Pseudonymise {
                    ps: Pseudonymiser::new(key, kind),
                    check: match kind.as_str() {
                        "isikukood" => IdCheck::Isikukood,
                        "worker_code" => IdCheck::WorkerCode,
                        _ => IdCheck::Any,
                    },
                },
                ColumnRule::Generalise { to, .. } => Op::Generalise(*to),
            };
            let name = crate::config::source::output_name(col, rule).expect("not a drop");
            let step = Step {
                input: index_of(col),
                name: col.clone(),
                op,
                optional: rule.optional(),
                output: out_index(name),
            };
            if *col == source.record_key && name != RECORD_ID {
                record_id_copy = Some((step.output, out_index(RECORD_ID)));
            }
            steps.push(step);
        }
        let partition = source.partition_by.as_ref().map(|p| {
            let step = steps.iter().position(|s| s.name == p.column).expect("partition column is kept");
            (step, p.parts.clone())
        });
        let sort_columns = source.sort_by.iter().filter_map(|c| schema.index_of(c).ok()).collect();
        let mut inputs: Vec<usize> = steps.iter().map(|s| s.input).collect();
        inputs.sort_unstable();
        inputs.dedup();
        Plan {
            steps,
            inputs,
            record_id_copy,
            partition,
            date_format: source.date_format,
            decimal: source.decimal_separator,
            schema,
            meta,
            sort_columns,
        }
    }

    /// How the writer should treat the output columns.
    pub fn column_layout(&self) -> ColumnLayout {
        ColumnLayout {
            sort: self.sort_columns.clone(),
            unique: self.unique_columns(),
            constant: [META_EXTRACT_DATE, META_EXTRACT_SEQ, META_COMMIT].map(str::to_owned).to_vec(),
        }
    }

    /// Output columns whose values are (nearly) all distinct: pseudonyms,
    /// amounts, timestamps and line numbers, for which a Parquet dictionary
    /// costs time and, for amounts, even space (measured: 10M invoices,
    /// −13 % CPU and −4 % bytes without one on `amount`).
    fn unique_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self
            .steps
            .iter()
            .filter(|s| {
                matches!(s.op, Op::Pseudonymise { .. } | Op::Keep { ty: ValueType::Money | ValueType::Timestamp, .. })
            })
            .map(|s| self.schema.field(s.output).name().clone())
            .collect();
        cols.push(RECORD_ID.to_owned());
        cols.push(META_LINE.to_owned());
        cols.sort();
        cols.dedup();
        cols
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Header indices of the delivered columns the rules read, ascending.
    pub fn inputs(&self) -> &[usize] {
        &self.inputs
    }

    /// Check and transform rows `rows` of a chunk whose rows start on `lines`.
    pub fn process(&self, fields: &dyn Fields, lines: &[u64], rows: std::ops::Range<usize>) -> Processed {
        let mut out = Processed::default();
        let mut parts: Vec<(PartitionKey, Builders)> = Vec::new();
        let mut vals: Vec<Val> = vec![Val::Null; self.schema.fields().len()];
        for row in rows.clone() {
            let line = lines[row];
            let mut ok = true;
            let mut key: PartitionKey = 0;
            for (i, step) in self.steps.iter().enumerate() {
                let raw = fields.field(step.input, row).map(trim).filter(|s| !s.is_empty());
                let v = match raw {
                    None if step.optional => Ok(Val::Null),
                    None => Err("missing value"),
                    Some(s) => self.apply(&step.op, s),
                };
                match v {
                    Ok(v) => {
                        vals[step.output] = v;
                        if let Some((p, parts)) = &self.partition
                            && *p == i
                        {
                            match partition_key(v, parts) {
                                Some(k) => key = k,
                                None => {
                                    ok = false;
                                    out.rejections.push(Rejection {
                                        line,
                                        column: step.name.clone(),
                                        reason: "no partition date".into(),
                                    });
                                }
                            }
                        }
                    }
                    Err(reason) => {
                        out.rejections.push(Rejection { line, column: step.name.clone(), reason: reason.into() });
                        ok = false;
                    }
                }
            }
            if !ok {
                out.rows_rejected += 1;
                continue;
            }
            if let Some((from, to)) = self.record_id_copy {
                vals[to] = vals[from];
            }
            let n = vals.len();
            vals[n - 4] = Val::Date(self.meta.extract_date);
            vals[n - 3] = Val::Int(self.meta.extract_seq);
            vals[n - 2] = Val::Long(self.meta.commit);
            vals[n - 1] = Val::Long(line as i64);
            let b = match parts.iter().position(|(k, _)| *k == key) {
                Some(i) => &mut parts[i].1,
                None => {
                    // Rows spread over partitions: start small and let builders grow, so
                    // that no batch carries capacity for rows it never got.
                    parts.push((key, Builders::new(&self.schema, (rows.len() / 16).max(INITIAL_ROWS).min(rows.len()))));
                    &mut parts.last_mut().expect("just pushed").1
                }
            };
            b.append(&vals);
        }
        out.batches = parts.into_iter().map(|(k, b)| (k, b.finish(&self.schema))).collect();
        out
    }

    fn apply<'a>(&self, op: &Op, s: &'a str) -> Result<Val<'a>, &'static str> {
        match op {
            Op::Pseudonymise { ps, check } => {
                let id = match check {
                    IdCheck::Isikukood => {
                        let id = isikukood::normalise(s);
                        if !isikukood::is_valid(id) {
                            return Err("invalid isikukood (length, birth date or check digit)");
                        }
                        id
                    }
                    IdCheck::WorkerCode => {
                        let id = s;
                        if !values::is_worker_code(id) {
                            return Err("invalid worker code (expected D and five digits)");
                        }
                        id
                    }
                    IdCheck::Any => s,
                };
                Ok(Val::Pseudo(ps.pseudonym(id.as_bytes())))
            }
            Op::Keep { ty, values } => self.keep(*ty, values, s),
            Op::Generalise(g) => match g {
                Generalisation::Year => {
                    let d = values::parse_date(s, self.date_format).ok_or(self.date_error())?;
                    Ok(Val::Int(values::year_month_of_days(d).0))
                }
                Generalisation::YearMonth => {
                    let date = match values::parse_date(s, self.date_format) {
                        Some(d) => values::date_of_days(d),
                        None => values::parse_timestamp(s)
                            .and_then(values::tallinn_date)
                            .map(Some)
                            .ok_or(self.date_error())?,
                    }
                    .ok_or(self.date_error())?;
                    Ok(Val::YearMonth(chrono::Datelike::year(&date), chrono::Datelike::month(&date)))
                }
                Generalisation::AgeBand => values::parse_integer(s)
                    .and_then(values::age_band)
                    .map(Val::Static)
                    .ok_or("invalid age (expected whole years 0-130)"),
                Generalisation::County => values::county_of_ehak(s).map(Val::Static).ok_or("unknown EHAK county code"),
                Generalisation::CountyFromAddress => {
                    values::county_of_address(s).map(Val::Static).ok_or("the address names no county")
                }
            },
        }
    }

    fn date_error(&self) -> &'static str {
        match self.date_format {
            DateFormat::Iso => "invalid date (expected YYYY-MM-DD)",
            DateFormat::DayMonthYear => "invalid date (expected DD.MM.YYYY)",
        }
    }

    fn keep<'a>(&self, ty: ValueType, allowed: &[String], s: &'a str) -> Result<Val<'a>, &'static str> {
        let check = |ok: bool, reason: &'static str| if ok { Ok(Val::Str(s)) } else { Err(reason) };
        match ty {
            ValueType::String => Ok(Val::Str(s)),
            ValueType::Enum => check(allowed.iter().any(|v| v == s), "not one of the allowed values"),
            ValueType::Date => values::parse_date(s, self.date_format).map(Val::Date).ok_or(self.date_error()),
            ValueType::Timestamp => values::parse_timestamp(s)
                .map(Val::Ts)
                .ok_or("invalid timestamp (expected YYYY-MM-DDTHH:MM:SS with optional +HH:MM)"),
            ValueType::Money => values::parse_money(s, self.decimal.byte()).map(Val::Money).ok_or(match self.decimal {
                DecimalSeparator::Comma => "invalid amount (expected euros with a decimal comma)",
                DecimalSeparator::Point => "invalid amount (expected euros with a decimal point)",
            }),
            ValueType::Integer => values::parse_integer(s).map(Val::Int).ok_or("invalid whole number"),
            ValueType::Regcode => check(values::is_regcode(s), "invalid register code (expected 8 digits)"),
            ValueType::Icd10 => check(values::is_icd10(s), "invalid ICD-10 code"),
            ValueType::Atc => check(values::is_atc(s), "invalid ATC code"),
            ValueType::Ehak => check(values::county_of_ehak(s).is_some(), "unknown EHAK county code"),
            ValueType::Country => check(values::is_country(s), "invalid country code (expected ISO 3166 alpha-3)"),
        }
    }
}

/// `s` without surrounding whitespace; Unicode whitespace (a no-break space
/// from a spreadsheet) only looked for where an end is not ASCII.
fn trim(s: &str) -> &str {
    let s = s.trim_ascii();
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(z)) if !a.is_ascii() || !z.is_ascii() => s.trim(),
        _ => s,
    }
}

fn partition_key(v: Val, parts: &[PartitionPart]) -> Option<PartitionKey> {
    use chrono::Datelike;
    let (year, month) = match v {
        Val::Date(d) => values::year_month_of_days(d),
        Val::Ts(ms) => values::tallinn_date(ms).map(|d| (d.year(), d.month()))?,
        _ => return None,
    };
    let year = u32::try_from(year).ok()?;
    let month = if parts.contains(&PartitionPart::Month) { month } else { 0 };
    Some(year * 100 + month)
}

enum ColBuilder {
    Str(StringBuilder),
    Date(Date32Builder),
    Ts(TimestampMillisecondBuilder),
    Money(Decimal128Builder),
    I32(Int32Builder),
    I64(Int64Builder),
}

struct Builders(Vec<ColBuilder>);

impl Builders {
    fn new(schema: &Schema, capacity: usize) -> Self {
        Builders(
            schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Date32 => ColBuilder::Date(Date32Builder::with_capacity(capacity)),
                    DataType::Timestamp(_, tz) => ColBuilder::Ts(
                        TimestampMillisecondBuilder::with_capacity(capacity).with_timezone_opt(tz.clone()),
                    ),
                    DataType::Decimal128(p, s) => ColBuilder::Money(
                        Decimal128Builder::with_capacity(capacity)
                            .with_precision_and_scale(*p, *s)
                            .expect("valid money precision"),
                    ),
                    DataType::Int32 => ColBuilder::I32(Int32Builder::with_capacity(capacity)),
                    DataType::Int64 => ColBuilder::I64(Int64Builder::with_capacity(capacity)),
                    _ => ColBuilder::Str(StringBuilder::with_capacity(capacity, capacity * 16)),
                })
                .collect(),
        )
    }

    fn append(&mut self, vals: &[Val]) {
        for (b, v) in self.0.iter_mut().zip(vals) {
            match (b, *v) {
                (ColBuilder::Str(b), Val::Null) => b.append_null(),
                (ColBuilder::Str(b), Val::Str(s)) => b.append_value(s),
                (ColBuilder::Str(b), Val::Static(s)) => b.append_value(s),
                (ColBuilder::Str(b), Val::Pseudo(p)) => b.append_value(p.as_str()),
                (ColBuilder::Str(b), Val::YearMonth(y, m)) => b.append_value(format!("{y:04}-{m:02}")),
                (ColBuilder::Date(b), Val::Date(d)) => b.append_value(d),
                (ColBuilder::Ts(b), Val::Ts(t)) => b.append_value(t),
                (ColBuilder::Money(b), Val::Money(m)) => b.append_value(m),
                (ColBuilder::I32(b), Val::Int(i)) => b.append_value(i),
                (ColBuilder::I64(b), Val::Long(i)) => b.append_value(i),
                (ColBuilder::Date(b), _) => b.append_null(),
                (ColBuilder::Ts(b), _) => b.append_null(),
                (ColBuilder::Money(b), _) => b.append_null(),
                (ColBuilder::I32(b), _) => b.append_null(),
                (ColBuilder::I64(b), _) => b.append_null(),
                (ColBuilder::Str(b), _) => b.append_null(),
            }
        }
    }

    fn finish(self, schema: &SchemaRef) -> RecordBatch {
        let columns: Vec<ArrayRef> = self
            .0
            .into_iter()
            .map(|b| match b {
                ColBuilder::Str(mut b) => Arc::new(b.finish()) as ArrayRef,
                ColBuilder::Date(mut b) => Arc::new(b.finish()),
                ColBuilder::Ts(mut b) => Arc::new(b.finish()),
                ColBuilder::Money(mut b) => Arc::new(b.finish()),
                ColBuilder::I32(mut b) => Arc::new(b.finish()),
                ColBuilder::I64(mut b) => Arc::new(b.finish()),
            })
            .collect();
        RecordBatch::try_new(schema.clone(), columns).expect("builders follow the schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use std::path::Path;

    struct Rows(Vec<Vec<Option<String>>>);
    impl Fields for Rows {
        fn field(&self, column: usize, row: usize) -> Option<&str> {
            self.0[row][column].as_deref()
        }
    }

    fn source(name: &str) -> SourceConfig {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sources").join(format!("{name}.toml"));
        SourceConfig::load(&p).unwrap()
    }

    fn key() -> Key {
        Key::from_hex(&"00".repeat(32)).unwrap()
    }

    const META: RowMeta = RowMeta { extract_date: 19_800, extract_seq: 0, commit: 1 };

    fn invoices(rows: &[[&str; 10]]) -> (Plan, Processed) {
        let src = source("treatment_invoices");
        let header: Vec<String> =
            crate::sample_data::header("treatment_invoices").iter().map(|s| s.to_string()).collect();
        let plan = Plan::new(&src, &header, &key(), META);
        let data =
            Rows(rows.iter().map(|r| r.iter().map(|s| (!s.is_empty()).then(|| s.to_string())).collect()).collect());
        let lines: Vec<u64> = (2..2 + rows.len() as u64).collect();
        let p = plan.process(&data, &lines, 0..rows.len());
        (plan, p)
    }

    const GOOD: [&str; 10] = [
        "INV1",
        "'38001010009 ",
        "90006399",
        "Tartu Ülikooli Kliinikum",
        "J06.9",
        "AMB",
        "123,45",
        "2024-03-05",
        "2024-03-05",
        "2024-03-10",
    ];

    #[test]
    fn a_good_row_is_pseudonymised_and_partitioned() {
        let (plan, p) = invoices(&[GOOD]);
        assert!(p.rejections.is_empty(), "{:?}", p.rejections);
        assert_eq!(p.batches.len(), 1);
        let (k, batch) = &p.batches[0];
        assert_eq!(*k, 202403);
        let person = batch.column(plan.schema().index_of("person_id").unwrap()).as_string::<i32>();
        let expected = Pseudonymiser::new(&key(), "isikukood").pseudonym(b"38001010009");
        assert_eq!(person.value(0), expected.as_str());
        let rid = batch.column(0).as_string::<i32>();
        assert_eq!(rid.value(0), Pseudonymiser::new(&key(), "invoice_id").pseudonym(b"INV1").as_str());
        let amount = batch.column(plan.schema().index_of("amount").unwrap());
        assert_eq!(amount.as_primitive::<arrow::datatypes::Decimal128Type>().value(0), 12345);
        assert_eq!(
            crate::warehouse::writer::partition_dirs(*k, &[PartitionPart::Year, PartitionPart::Month]),
            ["year=2024", "month=3"]
        );
    }

    #[test]
    fn ascii_and_unicode_whitespace_around_values_is_trimmed() {
        let mut row = GOOD;
        row[5] = "\u{a0}AMB\u{a0}";
        row[4] = " J06.9\t";
        let (plan, p) = invoices(&[row]);
        assert!(p.rejections.is_empty(), "{:?}", p.rejections);
        let care = p.batches[0].1.column(plan.schema().index_of("care_type").unwrap()).clone();
        assert_eq!(care.as_string::<i32>().value(0), "AMB");
        assert_eq!(trim("\u{2003}x y "), "x y");
        assert_eq!(trim("  "), "");
    }

    #[test]
    fn every_problem_of_a_bad_row_is_reported_without_its_value() {
        let mut bad = GOOD;
        bad[1] = "38001010008";
        bad[6] = "12.5";
        bad[7] = "05.03.2024";
        bad[0] = "";
        let (_, p) = invoices(&[GOOD, bad]);
        assert_eq!(p.rows_rejected, 1);
        let cols: Vec<&str> = p.rejections.iter().map(|r| r.column.as_str()).collect();
        assert_eq!(cols, ["invoice_id", "isikukood", "amount", "start_date"]);
        assert!(p.rejections.iter().all(|r| r.line == 3));
        for r in &p.rejections {
            for v in bad {
                assert!(v.is_empty() || !r.reason.contains(v), "{r:?}");
            }
        }
        assert_eq!(p.batches[0].1.num_rows(), 1);
    }

    #[test]
    fn generalisations() {
        let src = source("population");
        let header: Vec<String> = src.columns.keys().cloned().collect();
        let plan = Plan::new(&src, &header, &key(), META);
        let mut row: Vec<Option<String>> = vec![None; header.len()];
        let set = |row: &mut Vec<Option<String>>, c: &str, v: &str| {
            row[header.iter().position(|h| h == c).unwrap()] = Some(v.to_owned())
        };
        set(&mut row, "isikukood", "38001010009");
        set(&mut row, "first_name", "Mari");
        set(&mut row, "last_name", "Tamm");
        set(&mut row, "birth_date", "1980-01-01");
        set(&mut row, "sex", "M");
        set(&mut row, "citizenship", "EST");
        set(&mut row, "residence_ehak", "0078");
        set(&mut row, "residence_address", "Tamme 5, Tartu linn, Tartu maakond");
        set(&mut row, "death_date", "2023-11-30");
        set(&mut row, "death_record_no", "SR-1");
        let p = plan.process(&Rows(vec![row]), &[2], 0..1);
        assert!(p.rejections.is_empty(), "{:?}", p.rejections);
        let b = &p.batches[0].1;
        let col = |n: &str| b.column(plan.schema().index_of(n).unwrap()).clone();
        assert_eq!(col("birth_year").as_primitive::<arrow::datatypes::Int32Type>().value(0), 1980);
        assert_eq!(col("county").as_string::<i32>().value(0), "Tartu");
        assert_eq!(col("death_month").as_string::<i32>().value(0), "2023-11");
        assert_eq!(col("record_id").as_string::<i32>().value(0), col("person_id").as_string::<i32>().value(0));
        assert!(plan.schema().index_of("first_name").is_err());
        assert!(col("death_record_id").is_valid(0));
    }
}
