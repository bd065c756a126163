//! Arrow values to PostgreSQL's wire formats (text and binary), and bound parameters back.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use bytes::{BufMut, BytesMut};
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::DataRow;

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

/// The PostgreSQL type a column of `data_type` is sent as.
pub fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => Type::BYTEA,
        _ => Type::TEXT,
    }
}

/// The Arrow type a parameter declared as `pg` is read as, where there is one.
pub fn arrow_type(pg: &Type) -> Option<DataType> {
    Some(match *pg {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    })
}

/// Row description of a result: each column's name, type and format.
pub fn fields(schema: &arrow::datatypes::Schema, format: impl Fn(usize) -> FieldFormat) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let info = FieldInfo::new(f.name().clone(), None, None, pg_type(f.data_type()), format(i));
            match f.data_type() {
                // numeric(p, s): ((p << 16) | s) + 4, as PostgreSQL packs it.
                DataType::Decimal128(p, s) if *s >= 0 => {
                    info.with_type_modifier(((i32::from(*p) << 16) | i32::from(*s as u8)) + 4)
                }
                _ => info,
            }
        })
        .collect()
}

/// Why a value cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot send column `{column}` ({data_type}) to the client: {message}")]
pub struct EncodeError {
    pub column: String,
    pub data_type: DataType,
    pub message: String,
}

/// Encodes batches into `DataRow`s for one result's row description.
pub struct Encoder {
    fields: Arc<Vec<FieldInfo>>,
}

impl Encoder {
    pub fn new(fields: Arc<Vec<FieldInfo>>) -> Encoder {
        Encoder { fields }
    }

    /// The rows of `batch`, and the bytes they take on the wire.
    pub fn rows(&self, batch: &RecordBatch) -> Result<(Vec<DataRow>, u64), EncodeError> {
        // Columns without a binary or text form of their own go as their Arrow text.
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .zip(batch.schema().fields())
            .map(|(c, f)| match pg_type(f.data_type()) {
                Type::TEXT if !matches!(c.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                    shown_as_text(c, f)
                }
                _ => Ok(Arc::clone(c)),
            })
            .collect::<Result<_, _>>()?;
        let mut rows = Vec::with_capacity(batch.num_rows());
        let mut bytes = 0u64;
        let mut buf = BytesMut::with_capacity(64 * batch.num_columns());
        for row in 0..batch.num_rows() {
            for (i, column) in columns.iter().enumerate() {
                let binary = self.fields[i].format() == FieldFormat::Binary;
                if column.is_null(row) {
                    buf.put_i32(-1);
                    continue;
                }
                let at = buf.len();
                buf.put_i32(0);
                value(column, row, binary, &mut buf);
                let len = (buf.len() - at - 4) as i32;
                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            bytes += buf.len() as u64 + 7;
            rows.push(DataRow::new(buf.split(), columns.len() as i16));
        }
        Ok((rows, bytes))
    }
}

fn shown_as_text(column: &ArrayRef, field: &Field) -> Result<ArrayRef, EncodeError> {
    let options = arrow::util::display::FormatOptions::default();
    arrow::compute::cast_with_options(
        column,
        &DataType::Utf8,
        &arrow::compute::CastOptions { safe: false, format_options: options },
    )
    .map_err(|e| EncodeError {
        column: field.name().clone(),
        data_type: field.data_type().clone(),
        message: e.to_string(),
    })
}

/// One non-null value, in the text or binary format of [`pg_type`].
fn value(column: &ArrayRef, row: usize, binary: bool, buf: &mut BytesMut) {
    use std::fmt::Write;
    macro_rules! int {
        ($t:ty, $as:ty) => {{
            let v = column.as_primitive::<$t>().value(row) as $as;
            if binary {
                buf.put_slice(&v.to_be_bytes())
            } else {
                let _ = write!(Text(buf), "{v}");
            }
        }};
    }
    match column.data_type() {
        DataType::Boolean => {
            let v = column.as_boolean().value(row);
            if binary { buf.put_u8(u8::from(v)) } else { buf.put_u8(if v { b't' } else { b'f' }) }
        }
        DataType::Int8 => int!(Int8Type, i16),
        DataType::Int16 => int!(Int16Type, i16),
        DataType::UInt8 => int!(UInt8Type, i16),
        DataType::Int32 => int!(Int32Type, i32),
        DataType::UInt16 => int!(UInt16Type, i32),
        DataType::Int64 => int!(Int64Type, i64),
        DataType::UInt32 => int!(UInt32Type, i64),
        DataType::UInt64 => numeric(i128::from(column.as_primitive::<UInt64Type>().value(row)), 0, binary, buf),
        DataType::Decimal128(_, scale) => {
            numeric(column.as_primitive::<Decimal128Type>().value(row), *scale, binary, buf)
        }
        DataType::Float32 => {
            let v = column.as_primitive::<Float32Type>().value(row);
            if binary { buf.put_f32(v) } else { float(f64::from(v), &v.to_string(), buf) }
        }
        DataType::Float64 => {
            let v = column.as_primitive::<Float64Type>().value(row);
            if binary { buf.put_f64(v) } else { float(v, &v.to_string(), buf) }
        }
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>().value(row);
            if binary {
                buf.put_i32((i64::from(days) - PG_EPOCH_DAYS) as i32);
            } else {
                // 719 163 days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
                let shown = i32::try_from(i64::from(days) + 719_163)
                    .ok()
                    .and_then(chrono::NaiveDate::from_num_days_from_ce_opt);
                let _ = match shown {
                    Some(d) => write!(Text(buf), "{}", d.format("%Y-%m-%d")),
                    None => write!(Text(buf), "{days}"),
                };
            }
        }
        DataType::Timestamp(unit, tz) => {
            let raw = match unit {
                TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(row).saturating_mul(1_000_000),
                TimeUnit::Millisecond => {
                    column.as_primitive::<TimestampMillisecondType>().value(row).saturating_mul(1000)
                }
                TimeUnit::Microsecond => column.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row) / 1000,
            };
            if binary {
                buf.put_i64(raw.saturating_sub(PG_EPOCH_MICROS));
            } else {
                let t = chrono::DateTime::from_timestamp_micros(raw).unwrap_or_default().naive_utc();
                let _ = write!(Text(buf), "{}", t.format("%Y-%m-%d %H:%M:%S%.f"));
                if tz.is_some() {
                    buf.put_slice(b"+00");
                }
            }
        }
        DataType::Utf8 => buf.put_slice(column.as_string::<i32>().value(row).as_bytes()),
        DataType::LargeUtf8 => buf.put_slice(column.as_string::<i64>().value(row).as_bytes()),
        DataType::Utf8View => buf.put_slice(column.as_string_view().value(row).as_bytes()),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            let bytes: &[u8] = match column.data_type() {
                DataType::Binary => column.as_binary::<i32>().value(row),
                DataType::LargeBinary => column.as_binary::<i64>().value(row),
                DataType::BinaryView => column.as_binary_view().value(row),
                _ => column.as_fixed_size_binary().value(row),
            };
            if binary {
                buf.put_slice(bytes);
            } else {
                buf.put_slice(b"\\x");
                buf.put_slice(crate::hex::encode(bytes).as_bytes());
            }
        }
        // Everything else was cast to text by `Encoder::rows`.
        other => unreachable!("{other} is sent as text"),
    }
}

/// A float as PostgreSQL prints it (shortest round-trip digits).
fn float(v: f64, shown: &str, buf: &mut BytesMut) {
    if v.is_nan() {
        buf.put_slice(b"NaN");
    } else if v.is_infinite() {
        buf.put_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        buf.put_slice(shown.as_bytes());
    }
}

/// `value × 10^-scale` as `numeric`: text, or PostgreSQL's binary form
/// (base-10000 digits, a weight, a sign and a display scale).
fn numeric(value: i128, scale: i8, binary: bool, buf: &mut BytesMut) {
    let negative = value < 0;
    let magnitude = value.unsigned_abs();
    let scale = i32::from(scale);
    // Digits of the magnitude, then split at the scale.
    let digits = magnitude.to_string();
    let (int_part, frac_part) = if scale > 0 {
        let scale = scale as usize;
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (i, f) = padded.split_at(padded.len() - scale);
        (i.to_owned(), f.to_owned())
    } else {
        (format!("{digits}{}", "0".repeat((-scale) as usize)), String::new())
    };
    if !binary {
        if negative {
            buf.put_u8(b'-');
        }
        buf.put_slice(int_part.as_bytes());
        if !frac_part.is_empty() {
            buf.put_u8(b'.');
            buf.put_slice(frac_part.as_bytes());
        }
        return;
    }
    // Group the integer part from the right and the fraction from the left into base-10000 digits.
    let int_part = int_part.trim_start_matches('0');
    let int_pad = (4 - int_part.len() % 4) % 4;
    let int_digits = format!("{}{int_part}", "0".repeat(int_pad));
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let frac_digits = format!("{frac_part}{}", "0".repeat(frac_pad));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).map_or(0, |t| t.parse().unwrap_or(0))).collect()
    };
    let mut groups = group(&int_digits);
    let weight = groups.len() as i16 - 1;
    groups.extend(group(&frac_digits));
    // Leading and trailing zero groups are not sent.
    let mut weight = weight;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    buf.put_i16(groups.len() as i16);
    buf.put_i16(weight);
    buf.put_u16(if negative && !groups.is_empty() { 0x4000 } else { 0 });
    buf.put_u16(scale.max(0) as u16);
    for g in groups {
        buf.put_i16(g);
    }
}

/// `write!` into a `BytesMut`.
struct Text<'a>(&'a mut BytesMut);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// Why a bound parameter cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("parameter ${index}: {message}")]
pub struct ParameterError {
    pub index: usize,
    pub message: String,
}

/// A parameter's bytes as the value the statement expects: read as its
/// declared type (`declared`, from the client) in the client's format, then
/// cast to what the plan expects (`expected`), text otherwise.
pub fn parameter(
    index: usize,
    bytes: Option<&[u8]>,
    binary: bool,
    declared: Option<&Type>,
    expected: Option<&DataType>,
) -> Result<ScalarValue, ParameterError> {
    let err = |message: String| ParameterError { index, message };
    let declared_type = declared.and_then(arrow_type);
    let target = expected.cloned().or_else(|| declared_type.clone()).unwrap_or(DataType::Utf8);
    let Some(bytes) = bytes else {
        return ScalarValue::try_from(&target).map_err(|e| err(e.to_string()));
    };
    let read = if binary {
        let ty = declared.ok_or_else(|| err("a binary parameter needs its type declared".into()))?;
        let fixed = |n: usize| -> Result<&[u8], ParameterError> {
            (bytes.len() == n).then_some(bytes).ok_or_else(|| err(format!("{ty} takes {n} bytes, not {}", bytes.len())))
        };
        match *ty {
            Type::BOOL => ScalarValue::Boolean(Some(fixed(1)?[0] != 0)),
            Type::INT2 => ScalarValue::Int16(Some(i16::from_be_bytes(fixed(2)?.try_into().unwrap_or_default()))),
            Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default()))),
            Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default()))),
            Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default()))),
            Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default()))),
            Type::DATE => {
                let days = i64::from(i32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default())) + PG_EPOCH_DAYS;
                ScalarValue::Date32(Some(days as i32))
            }
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let micros =
                    i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default()).saturating_add(PG_EPOCH_MICROS);
                let tz = (*ty == Type::TIMESTAMPTZ).then(|| Arc::from("UTC"));
                ScalarValue::TimestampMicrosecond(Some(micros), tz)
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                ScalarValue::Utf8(Some(text(bytes).map_err(err)?.to_owned()))
            }
            _ => return Err(err(format!("binary {ty} is not read; send it in text format"))),
        }
    } else {
        let text = text(bytes).map_err(err)?;
        let as_type = declared_type.unwrap_or_else(|| target.clone());
        ScalarValue::try_from_string(text.to_owned(), &as_type).map_err(|e| {
            err(format!("`{}` is not a {as_type}: {}", crate::pseudonym::isikukood::redact(text), e.strip_backtrace()))
        })?
    };
    if read.data_type() == target {
        return Ok(read);
    }
    read.cast_to(&target).map_err(|e| err(format!("cannot be read as {target}: {}", e.strip_backtrace())))
}

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int32Array, StringArray};
    use arrow::datatypes::Schema;

    fn encoded(v: i128, scale: i8) -> Vec<u8> {
        let mut b = BytesMut::new();
        numeric(v, scale, true, &mut b);
        b.to_vec()
    }

    #[test]
    fn numerics_in_postgresqls_binary_form() {
        // 12345.67: digits [1, 2345, 6700], weight 1, scale 2.
        assert_eq!(encoded(1_234_567, 2), [0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0x09, 0x29, 0x1a, 0x2c]);
        // -0.05: digits [500], weight -1, negative.
        assert_eq!(encoded(-5, 2), [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4]);
        // 0 with scale 2: no digits.
        assert_eq!(encoded(0, 2), [0, 0, 0, 0, 0, 0, 0, 2]);
        // 10000: one digit 1 of weight 1.
        assert_eq!(encoded(10_000, 0), [0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
        let mut t = BytesMut::new();
        numeric(-5, 2, false, &mut t);
        assert_eq!(&t[..], b"-0.05");
    }

    #[test]
    fn rows_in_text_and_binary() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![Some(7), None])),
                Arc::new(StringArray::from(vec![Some("ä"), Some("x")])),
                Arc::new(Decimal128Array::from(vec![Some(150), None]).with_precision_and_scale(10, 2).unwrap()),
            ],
        )
        .unwrap();
        let text = Encoder::new(Arc::new(fields(&schema, |_| FieldFormat::Text)));
        let (rows, _) = text.rows(&batch).unwrap();
        assert_eq!(&rows[0].data[..], b"\0\0\0\x017\0\0\0\x02\xc3\xa4\0\0\0\x041.50");
        assert_eq!(&rows[1].data[..], b"\xff\xff\xff\xff\0\0\0\x01x\xff\xff\xff\xff");
        let binary = Encoder::new(Arc::new(fields(&schema, |_| FieldFormat::Binary)));
        let (rows, _) = binary.rows(&batch).unwrap();
        assert_eq!(&rows[0].data[..4 + 4], b"\0\0\0\x04\0\0\0\x07");
    }

    #[test]
    fn parameters_are_read_as_declared_and_cast_as_expected() {
        let p = parameter(1, Some(b"42"), false, None, Some(&DataType::Int64)).unwrap();
        assert_eq!(p, ScalarValue::Int64(Some(42)));
        let p = parameter(1, Some(&7i32.to_be_bytes()), true, Some(&Type::INT4), Some(&DataType::Int64)).unwrap();
        assert_eq!(p, ScalarValue::Int64(Some(7)));
        let p = parameter(2, Some(b"x"), false, None, None).unwrap();
        assert_eq!(p, ScalarValue::Utf8(Some("x".into())));
        assert!(parameter(1, Some(b"abc"), false, Some(&Type::INT4), None).is_err());
        assert!(parameter(1, Some(&[1, 2]), true, Some(&Type::INT4), None).is_err());
        assert!(parameter(1, Some(b"\xff"), false, None, None).is_err());
    }
}
