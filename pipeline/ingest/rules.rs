//! The rule engine: turns delivered string fields into checked, pseudonymised,
//! generalised Arrow record batches, one per partition. Pure: no I/O.
//!
//! The rules run a column at a time: each one checks and converts all rows
//! of a chunk in one tight loop. Only rows that passed every rule are then
//! gathered into the partitions' batches, so a rejected row leaves nothing
//! behind; every problem in it is reported, never its value.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, FixedSizeBinaryArray, Int32Array, Int64Array, StringBuilder,
    TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::config::source::{
    ColumnRule, DateFormat, DecimalSeparator, Generalisation, META_COMMIT, META_EXTRACT_DATE, META_EXTRACT_SEQ,
    META_LINE, PartitionPart, RECORD_ID, SourceConfig, ValueType,
};
use crate::ingest::values;
use crate::pseudonym::{Keys, PSEUDONYM_LEN, Pseudonymiser, isikukood};
use crate::warehouse::ColumnLayout;

/// Precision and scale of money columns (euros and cents).
pub const MONEY_PRECISION: u8 = 15;
pub const MONEY_SCALE: i8 = 2;
/// Time zone of timestamp columns as stored.
pub const STORED_TZ: &str = "UTC";

/// The string fields of a parsed chunk, a column at a time.
pub trait Fields: Sync {
    /// The fields of `column` in rows `rows`, in order; `None` for an empty field.
    fn column(&self, column: usize, rows: Range<usize>) -> Vec<Option<&str>>;
}

/// Bytes of a pseudonym as the ingest carries it: the HMAC's first 16
/// bytes, hex-encoded only by the warehouse writer (see `Plan::batch_schema`).
pub const PSEUDONYM_BYTES: i32 = (PSEUDONYM_LEN / 2) as i32;

/// A problem with one value of one row, reported to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line: u64,
    /// Delivered column name; empty when the problem is the whole row.
    pub column: String,
    pub reason: String,
}

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
    /// Output column.
    output: usize,
}

/// One rule's results over a chunk: a value per row (the default where the
/// row was rejected or the field empty), and which rows hold a value.
struct Typed<T> {
    values: Vec<T>,
    /// `None` when every row holds a value.
    valid: Option<Vec<bool>>,
}

impl<T: Copy> Typed<T> {
    fn is_valid(&self, row: usize) -> bool {
        self.valid.as_ref().is_none_or(|v| v[row])
    }
}

/// What one rule made of a chunk's column.
enum Out<'a> {
    /// Kept text (a slice of the parsed field) or a generalisation's label.
    Str(Typed<&'a str>),
    /// Free text, with the rows whose personal codes were masked and their masked text.
    Text(Typed<&'a str>, Vec<(usize, String)>),
    Pseudo(Typed<[u8; PSEUDONYM_LEN / 2]>),
    Date(Typed<i32>),
    Ts(Typed<i64>),
    Money(Typed<i128>),
    Int(Typed<i32>),
    YearMonth(Typed<(i32, u32)>),
}

/// Problems found in a chunk: (row within the chunk, step, reason).
type Problems = Vec<(usize, usize, &'static str)>;

/// What the provider's report says of free text that held a personal code (the row is kept, masked).
pub const MASKED: &str = "personal code in free text, masked";

/// A source's rules compiled against one delivery's header.
#[derive(Clone)]
pub struct Plan {
    steps: Vec<Step>,
    /// Header indices the steps read, ascending.
    inputs: Vec<usize>,
    /// For each output column before the row metadata, the step whose
    /// results fill it. When the record key's own output is not `record_id`
    /// (population: it is `person_id`), its step fills both.
    feeds: Vec<usize>,
    partition: Option<(usize, Vec<PartitionPart>)>,
    date_format: DateFormat,
    decimal: DecimalSeparator,
    schema: SchemaRef,
    /// `schema` with pseudonyms as their 16 bytes (`FixedSizeBinary`).
    batch_schema: SchemaRef,
    meta: RowMeta,
    /// Output columns to sort each row group by.
    sort_columns: Vec<usize>,
}

/// Row metadata columns at the end of every table: extract date and
/// sequence, commit, line.
const META_COLUMNS: usize = 4;

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
    pub fn new(source: &SourceConfig, header: &[String], key: &Keys, meta: RowMeta) -> Plan {
        let schema = output_schema(source);
        let index_of = |name: &str| header.iter().position(|h| h == name).expect("header checked against config");
        let out_index = |name: &str| schema.index_of(name).expect("schema built from config");
        let mut steps = Vec::new();
        let mut feeds = vec![usize::MAX; schema.fields().len() - META_COLUMNS];
        for (col, rule) in &source.columns {
            let op = match rule {
                ColumnRule::Drop { .. } => continue,
                ColumnRule::Keep { ty, values, .. } => {
                    Op::Keep { ty: *ty, values: values.clone().unwrap_or_default().into() }
                }
                ColumnRule::Pseudonymise { kind, .. } => Op::Pseudonymise {
                    ps: Pseudonymiser::chained(key, kind),
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
            feeds[step.output] = steps.len();
            if *col == source.record_key && name != RECORD_ID {
                feeds[out_index(RECORD_ID)] = steps.len();
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
        assert!(feeds.iter().all(|&s| s < steps.len()), "every output column has a rule");
        let batch_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .enumerate()
                .map(|(o, f)| match feeds.get(o).map(|&s| &steps[s].op) {
                    Some(Op::Pseudonymise { .. }) => {
                        Field::new(f.name(), DataType::FixedSizeBinary(PSEUDONYM_BYTES), f.is_nullable())
                    }
                    _ => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        ));
        Plan {
            steps,
            inputs,
            feeds,
            partition,
            date_format: source.date_format,
            decimal: source.decimal_separator,
            schema,
            batch_schema,
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
            runs: Vec::new(),
            pseudonyms: self
                .batch_schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| matches!(f.data_type(), DataType::FixedSizeBinary(_)))
                .map(|(o, _)| o)
                .collect(),
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

    /// The table's schema, as written to the warehouse.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The schema of the batches `process` makes: the table's, except that
    /// pseudonyms are their 16 bytes, which sort as their hex does and take
    /// half the memory while rows wait for their row group.
    pub fn batch_schema(&self) -> &SchemaRef {
        &self.batch_schema
    }

    /// Header indices of the delivered columns the rules read, ascending.
    pub fn inputs(&self) -> &[usize] {
        &self.inputs
    }

    /// Check and transform rows `rows` of a chunk whose rows start on `lines`.
    pub fn process(&self, fields: &dyn Fields, lines: &[u64], rows: Range<usize>) -> Processed {
        let n = rows.len();
        let mut problems: Problems = Vec::new();
        let outs: Vec<Out> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| self.run(i, &fields.column(step.input, rows.clone()), &mut problems))
            .collect();
        let mut keys: Vec<PartitionKey> = vec![0; n];
        if let Some((p, parts)) = &self.partition {
            for (row, key) in keys.iter_mut().enumerate() {
                match partition_key(&outs[*p], row, parts) {
                    Some(k) => *key = k,
                    None => problems.push((row, *p, "no partition date")),
                }
            }
        }
        // Masked personal codes are reported, but do not reject the row.
        let mut notices: Vec<(usize, usize, &'static str)> = Vec::new();
        for (step, out) in outs.iter().enumerate() {
            if let Out::Text(_, masked) = out {
                notices.extend(masked.iter().map(|(row, _)| (*row, step, MASKED)));
            }
        }
        let mut bad = vec![false; n];
        for &(row, _, _) in &problems {
            bad[row] = true;
        }
        let lines = &lines[rows];
        let mut out = Processed {
            rows_rejected: bad.iter().filter(|&&b| b).count() as u64,
            // In line order, a row's problems in the order of its rules.
            rejections: {
                let mut all = problems;
                all.extend(notices);
                all.sort_unstable();
                all
            }
            .into_iter()
            .map(|(row, step, reason)| Rejection {
                line: lines[row],
                column: self.steps[step].name.clone(),
                reason: reason.into(),
            })
            .collect(),
            batches: Vec::new(),
        };
        // Each good row's partition (as an index into `parts`); rows of a
        // delivery tend to come in runs of one partition.
        let mut parts: Vec<(PartitionKey, usize)> = Vec::new();
        let mut part_of = vec![NO_PART; n];
        let mut last = 0;
        for row in (0..n).filter(|&r| !bad[r]) {
            if parts.get(last).is_none_or(|(k, _)| *k != keys[row]) {
                last = match parts.iter().position(|(k, _)| *k == keys[row]) {
                    Some(i) => i,
                    None => {
                        parts.push((keys[row], 0));
                        parts.len() - 1
                    }
                };
            }
            parts[last].1 += 1;
            part_of[row] = last as u32;
        }
        let sizes: Vec<usize> = parts.iter().map(|p| p.1).collect();
        // Each column is split in one pass that reads it in order.
        let mut columns: Vec<std::vec::IntoIter<ArrayRef>> =
            self.feeds.iter().map(|&s| outs[s].split(&part_of, &sizes).into_iter()).collect();
        let lines: Vec<ArrayRef> = split(lines, &part_of, &sizes)
            .into_iter()
            .map(|l| Arc::new(Int64Array::from_iter_values(l.into_iter().map(|l| l as i64))) as ArrayRef)
            .collect();
        out.batches = parts
            .iter()
            .zip(lines)
            .map(|(&(key, n), lines)| {
                let mut batch: Vec<ArrayRef> =
                    columns.iter_mut().map(|c| c.next().expect("an array per partition")).collect();
                batch.push(Arc::new(Date32Array::from(vec![self.meta.extract_date; n])));
                batch.push(Arc::new(Int32Array::from(vec![self.meta.extract_seq; n])));
                batch.push(Arc::new(Int64Array::from(vec![self.meta.commit; n])));
                batch.push(lines);
                let batch = RecordBatch::try_new(self.batch_schema.clone(), batch).expect("columns follow the schema");
                (key, batch)
            })
            .collect();
        out
    }

    /// Step `i` over a chunk's fields `raw`.
    fn run<'a>(&self, i: usize, raw: &[Option<&'a str>], problems: &mut Problems) -> Out<'a> {
        let step = &self.steps[i];
        let opt = step.optional;
        match &step.op {
            Op::Pseudonymise { ps, check } => {
                // Checked and normalised first, then hashed in one batch.
                let ids = match check {
                    IdCheck::Isikukood => typed(raw, opt, i, problems, |s| {
                        let id = isikukood::normalise(s);
                        if !isikukood::is_valid(id) {
                            return Err("invalid isikukood (length, birth date or check digit)");
                        }
                        Ok(id)
                    }),
                    IdCheck::WorkerCode => typed(raw, opt, i, problems, |s| {
                        if !values::is_worker_code(s) {
                            return Err("invalid worker code (expected D and five digits)");
                        }
                        Ok(s)
                    }),
                    IdCheck::Any => typed(raw, opt, i, problems, Ok),
                };
                Out::Pseudo(Typed { values: ps.digests(&ids.values), valid: ids.valid })
            }
            Op::Keep { ty, values } => self.keep(*ty, values, i, raw, problems),
            Op::Generalise(g) => match g {
                Generalisation::Year => Out::Int(typed(raw, opt, i, problems, |s| {
                    let d = values::parse_date(s, self.date_format).ok_or(self.date_error())?;
                    Ok(values::year_month_of_days(d).0)
                })),
                Generalisation::YearMonth => Out::YearMonth(typed(raw, opt, i, problems, |s| {
                    let date = match values::parse_date(s, self.date_format) {
                        Some(d) => values::date_of_days(d),
                        None => values::parse_timestamp(s)
                            .and_then(values::tallinn_date)
                            .map(Some)
                            .ok_or(self.date_error())?,
                    }
                    .ok_or(self.date_error())?;
                    Ok((chrono::Datelike::year(&date), chrono::Datelike::month(&date)))
                })),
                Generalisation::AgeBand => Out::Str(typed(raw, opt, i, problems, |s| {
                    values::parse_integer(s)
                        .and_then(values::age_band)
                        .ok_or("invalid age (expected whole years 0-130)")
                })),
                Generalisation::County => Out::Str(typed(raw, opt, i, problems, |s| {
                    values::county_of_ehak(s).ok_or("unknown EHAK county code")
                })),
                Generalisation::CountyFromAddress => Out::Str(typed(raw, opt, i, problems, |s| {
                    values::county_of_address(s).ok_or("the address names no county")
                })),
            },
        }
    }

    fn date_error(&self) -> &'static str {
        match self.date_format {
            DateFormat::Iso => "invalid date (expected YYYY-MM-DD)",
            DateFormat::DayMonthYear => "invalid date (expected DD.MM.YYYY)",
        }
    }

    fn keep<'a>(
        &self,
        ty: ValueType,
        allowed: &[String],
        i: usize,
        raw: &[Option<&'a str>],
        problems: &mut Problems,
    ) -> Out<'a> {
        let opt = self.steps[i].optional;
        let check =
            |test: fn(&str) -> bool, reason: &'static str| move |s: &'a str| if test(s) { Ok(s) } else { Err(reason) };
        match ty {
            ValueType::String => {
                let text = typed(raw, opt, i, problems, Ok);
                let masked = text
                    .values
                    .iter()
                    .enumerate()
                    .filter(|&(row, _)| text.is_valid(row))
                    .filter_map(|(row, v)| match isikukood::mask(v) {
                        std::borrow::Cow::Owned(m) => Some((row, m)),
                        std::borrow::Cow::Borrowed(_) => None,
                    })
                    .collect();
                Out::Text(text, masked)
            }
            ValueType::Enum => Out::Str(typed(raw, opt, i, problems, |s| {
                if allowed.iter().any(|v| v == s) { Ok(s) } else { Err("not one of the allowed values") }
            })),
            ValueType::Date => Out::Date(typed(raw, opt, i, problems, |s| {
                values::parse_date(s, self.date_format).ok_or(self.date_error())
            })),
            ValueType::Timestamp => Out::Ts(typed(raw, opt, i, problems, |s| {
                values::parse_timestamp(s)
                    .ok_or("invalid timestamp (expected YYYY-MM-DDTHH:MM:SS with optional +HH:MM)")
            })),
            ValueType::Money => {
                let reason = match self.decimal {
                    DecimalSeparator::Comma => "invalid amount (expected euros with a decimal comma)",
                    DecimalSeparator::Point => "invalid amount (expected euros with a decimal point)",
                };
                let sep = self.decimal.byte();
                Out::Money(typed(raw, opt, i, problems, |s| values::parse_money(s, sep).ok_or(reason)))
            }
            ValueType::Integer => {
                Out::Int(typed(raw, opt, i, problems, |s| values::parse_integer(s).ok_or("invalid whole number")))
            }
            ValueType::Regcode => Out::Str(typed(
                raw,
                opt,
                i,
                problems,
                check(values::is_regcode, "invalid register code (expected 8 digits)"),
            )),
            ValueType::Icd10 => Out::Str(typed(raw, opt, i, problems, check(values::is_icd10, "invalid ICD-10 code"))),
            ValueType::Atc => Out::Str(typed(raw, opt, i, problems, check(values::is_atc, "invalid ATC code"))),
            ValueType::Ehak => Out::Str(typed(
                raw,
                opt,
                i,
                problems,
                check(|s| values::county_of_ehak(s).is_some(), "unknown EHAK county code"),
            )),
            ValueType::Country => Out::Str(typed(
                raw,
                opt,
                i,
                problems,
                check(values::is_country, "invalid country code (expected ISO 3166 alpha-3)"),
            )),
        }
    }
}

/// Apply `f` to every trimmed, non-empty field of `raw` (the fields of step
/// `step`); an empty field is a null where the rule allows it.
fn typed<'a, T: Copy + Default>(
    raw: &[Option<&'a str>],
    optional: bool,
    step: usize,
    problems: &mut Problems,
    f: impl Fn(&'a str) -> Result<T, &'static str>,
) -> Typed<T> {
    let mut values = Vec::with_capacity(raw.len());
    let mut valid: Option<Vec<bool>> = None;
    for (row, field) in raw.iter().enumerate() {
        let value = match field.map(trim).filter(|s| !s.is_empty()) {
            Some(s) => f(s),
            None if optional => {
                valid.get_or_insert_with(|| vec![true; raw.len()])[row] = false;
                Ok(T::default())
            }
            None => Err("missing value"),
        };
        values.push(value.unwrap_or_else(|reason| {
            problems.push((row, step, reason));
            T::default()
        }));
    }
    Typed { values, valid }
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

fn partition_key(out: &Out, row: usize, parts: &[PartitionPart]) -> Option<PartitionKey> {
    use chrono::Datelike;
    let (year, month) = match out {
        Out::Date(t) if t.is_valid(row) => values::year_month_of_days(t.values[row]),
        Out::Ts(t) if t.is_valid(row) => values::tallinn_date(t.values[row]).map(|d| (d.year(), d.month()))?,
        _ => return None,
    };
    let year = u32::try_from(year).ok()?;
    let month = if parts.contains(&PartitionPart::Month) { month } else { 0 };
    Some(year * 100 + month)
}

/// `part_of` of a row that is in no partition (rejected).
const NO_PART: u32 = u32::MAX;

/// `values` split by partition: row `r` goes to partition `part_of[r]`,
/// which holds `sizes[p]` rows; rows in no partition are left out.
fn split<T: Copy>(values: &[T], part_of: &[u32], sizes: &[usize]) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = sizes.iter().map(|&n| Vec::with_capacity(n)).collect();
    for (&v, &p) in values.iter().zip(part_of) {
        if let Some(o) = out.get_mut(p as usize) {
            o.push(v);
        }
    }
    out
}

impl<T: Copy> Typed<T> {
    /// Values and nulls per partition (see `split`).
    fn split(&self, part_of: &[u32], sizes: &[usize]) -> Vec<(Vec<T>, Option<NullBuffer>)> {
        let values = split(&self.values, part_of, sizes);
        let nulls: Vec<Option<NullBuffer>> = match &self.valid {
            None => vec![None; sizes.len()],
            Some(valid) => split(valid, part_of, sizes)
                .into_iter()
                .map(|v| Some(NullBuffer::from(v)).filter(|n| n.null_count() > 0))
                .collect(),
        };
        values.into_iter().zip(nulls).collect()
    }
}

impl Out<'_> {
    /// This column's array for each partition (see `split`), of the batch
    /// schema's type.
    fn split(&self, part_of: &[u32], sizes: &[usize]) -> Vec<ArrayRef> {
        fn arrays<T: Copy>(
            t: &Typed<T>,
            part_of: &[u32],
            sizes: &[usize],
            f: impl Fn(Vec<T>, Option<NullBuffer>) -> ArrayRef,
        ) -> Vec<ArrayRef> {
            t.split(part_of, sizes).into_iter().map(|(v, n)| f(v, n)).collect()
        }
        let text_bytes = |t: &Typed<&str>| {
            let mut bytes = vec![0; sizes.len()];
            for (v, &p) in t.values.iter().zip(part_of) {
                if let Some(b) = bytes.get_mut(p as usize) {
                    *b += v.len();
                }
            }
            bytes
        };
        match self {
            Out::Str(t) => strings(t, part_of, sizes, &text_bytes(t), |v, b| b.append_value(v)),
            Out::Text(t, masked) if masked.is_empty() => {
                strings(t, part_of, sizes, &text_bytes(t), |v, b| b.append_value(v))
            }
            Out::Text(t, masked) => {
                // Rows in order, each masked value in place of its row's text.
                let rows: Typed<usize> = Typed { values: (0..t.values.len()).collect(), valid: t.valid.clone() };
                let text = |row: usize| match masked.binary_search_by_key(&row, |(r, _)| *r) {
                    Ok(i) => masked[i].1.as_str(),
                    Err(_) => t.values[row],
                };
                strings(&rows, part_of, sizes, &text_bytes(t), |row, b| b.append_value(text(row)))
            }
            Out::YearMonth(t) => {
                let bytes: Vec<usize> = sizes.iter().map(|n| n * 7).collect();
                strings(t, part_of, sizes, &bytes, |(y, m), b| b.append_value(format!("{y:04}-{m:02}")))
            }
            Out::Pseudo(t) => arrays(t, part_of, sizes, |v, n| {
                Arc::new(FixedSizeBinaryArray::new(PSEUDONYM_BYTES, v.into_flattened().into(), n))
            }),
            Out::Date(t) => arrays(t, part_of, sizes, |v, n| Arc::new(Date32Array::new(v.into(), n))),
            Out::Ts(t) => arrays(t, part_of, sizes, |v, n| {
                Arc::new(TimestampMillisecondArray::new(v.into(), n).with_timezone(STORED_TZ))
            }),
            Out::Money(t) => arrays(t, part_of, sizes, |v, n| {
                Arc::new(
                    Decimal128Array::new(v.into(), n)
                        .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)
                        .expect("valid money precision"),
                )
            }),
            Out::Int(t) => arrays(t, part_of, sizes, |v, n| Arc::new(Int32Array::new(v.into(), n))),
        }
    }
}

/// String arrays per partition (see `split`), `bytes[p]` bytes of text in
/// partition `p`, each value appended by `append`. One pass in row order,
/// so that the parsed text is read sequentially.
fn strings<T: Copy>(
    t: &Typed<T>,
    part_of: &[u32],
    sizes: &[usize],
    bytes: &[usize],
    append: impl Fn(T, &mut StringBuilder),
) -> Vec<ArrayRef> {
    let mut builders: Vec<StringBuilder> =
        sizes.iter().zip(bytes).map(|(&n, &b)| StringBuilder::with_capacity(n, b)).collect();
    for (row, (&v, &p)) in t.values.iter().zip(part_of).enumerate() {
        let Some(b) = builders.get_mut(p as usize) else { continue };
        match t.is_valid(row) {
            true => append(v, b),
            false => b.append_null(),
        }
    }
    builders.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use std::path::Path;

    struct Rows(Vec<Vec<Option<String>>>);
    impl Fields for Rows {
        fn column(&self, column: usize, rows: Range<usize>) -> Vec<Option<&str>> {
            rows.map(|r| self.0[r][column].as_deref()).collect()
        }
    }

    /// The pseudonym in row `row` of a batch's column `column`, as hex.
    fn hex_at(batch: &RecordBatch, column: usize, row: usize) -> String {
        batch.column(column).as_fixed_size_binary().value(row).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn source(name: &str) -> SourceConfig {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sources").join(format!("{name}.toml"));
        SourceConfig::load(&p).unwrap()
    }

    fn key() -> Keys {
        Keys::single(crate::pseudonym::Key::from_hex(&"00".repeat(32)).unwrap())
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
        let person = hex_at(batch, plan.schema().index_of("person_id").unwrap(), 0);
        let expected = Pseudonymiser::new(key().first(), "isikukood").pseudonym(b"38001010009");
        assert_eq!(person, expected.as_str());
        let rid = hex_at(batch, 0, 0);
        assert_eq!(rid, Pseudonymiser::new(key().first(), "invoice_id").pseudonym(b"INV1").as_str());
        assert_eq!(batch.schema(), *plan.batch_schema());
        assert_eq!(plan.column_layout().pseudonyms, [0, plan.schema().index_of("person_id").unwrap()]);
        let amount = batch.column(plan.schema().index_of("amount").unwrap());
        assert_eq!(amount.as_primitive::<arrow::datatypes::Decimal128Type>().value(0), 12345);
        assert_eq!(
            crate::warehouse::partition_dirs(*k, &[PartitionPart::Year, PartitionPart::Month]),
            ["year=2024", "month=3"]
        );
    }

    /// Free text kept in the warehouse that holds a valid personal code, in
    /// any written form, is stored masked; the row is kept, and the report
    /// names the line and column, never the value.
    #[test]
    fn personal_codes_in_free_text_are_masked_and_reported() {
        let mut row = GOOD;
        row[3] = "Dr Tamm 380 0101 0009 kliinik";
        let mut invalid = GOOD;
        invalid[0] = "INV2";
        invalid[3] = "Kliinik 12345678901";
        let (plan, p) = invoices(&[GOOD, row, invalid]);
        assert_eq!(p.rows_rejected, 0);
        assert_eq!(p.rejections, [Rejection { line: 3, column: "provider_name".into(), reason: MASKED.into() }]);
        let names = p.batches[0].1.column(plan.schema().index_of("provider_name").unwrap()).clone();
        let names: Vec<&str> = names.as_string::<i32>().iter().flatten().collect();
        assert_eq!(names[1], "Dr Tamm [isikukood] kliinik");
        assert_eq!(names[2], "Kliinik 12345678901", "not a valid code: kept as delivered");
        assert!(!format!("{p:?}").contains("0101 0009"));
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
        let person = plan.schema().index_of("person_id").unwrap();
        assert_eq!(hex_at(b, 0, 0), hex_at(b, person, 0));
        assert!(plan.schema().index_of("first_name").is_err());
        assert!(col("death_record_id").is_valid(0));
    }
}
