//! Text columns of pseudonyms held as the 16 bytes their hex digits spell while an operator buffers them, and given back as the same text.
//!
//! A pseudonym read as `Utf8View` costs 48 bytes a row (a 16-byte view and
//! its 32 characters); a sort by person buffers a whole partition of them.
//! As `FixedSizeBinary(16)` the same values take 16 bytes, and their bytes
//! order as the text does (lowercase hex digits sort as the nibbles they
//! spell), so a sort can compare them as they are.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result as DfResult;

use crate::pseudonym::{PSEUDONYM_LEN, pseudonym_bits};

/// The compact type: a pseudonym's 128-bit number, big-endian.
pub(super) const COMPACT: DataType = DataType::FixedSizeBinary(16);

/// Is `t` a text type whose columns may hold pseudonyms?
pub(super) fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// `column` as 16 bytes a row, if it is text and every value that is not null is a pseudonym.
pub(super) fn compact(column: &dyn Array) -> Option<ArrayRef> {
    let n = column.len();
    let mut bytes = vec![0u8; n * 16];
    let mut put = |i: usize, s: &[u8]| -> Option<()> {
        bytes[i * 16..i * 16 + 16].copy_from_slice(&pseudonym_bits(s)?.to_be_bytes());
        Some(())
    };
    let valid = |i: usize| column.is_valid(i);
    match column.data_type() {
        DataType::Utf8 => {
            let c = column.as_string::<i32>();
            (0..n).filter(|&i| valid(i)).try_for_each(|i| put(i, c.value(i).as_bytes()))?;
        }
        DataType::LargeUtf8 => {
            let c = column.as_string::<i64>();
            (0..n).filter(|&i| valid(i)).try_for_each(|i| put(i, c.value(i).as_bytes()))?;
        }
        DataType::Utf8View => {
            let c = column.as_string_view();
            (0..n).filter(|&i| valid(i)).try_for_each(|i| put(i, c.value(i).as_bytes()))?;
        }
        _ => return None,
    }
    let nulls = column.logical_nulls();
    Some(Arc::new(FixedSizeBinaryArray::new(16, Buffer::from_vec(bytes), nulls)))
}

/// A compacted column (see [`compact`]) as text of type `to` again: the same characters, the same nulls.
pub(super) fn expand(column: &dyn Array, to: &DataType) -> DfResult<ArrayRef> {
    let c = column.as_fixed_size_binary();
    let mut text = vec![0u8; c.len() * PSEUDONYM_LEN];
    let mut lengths = Vec::with_capacity(c.len());
    let mut end = 0;
    for i in 0..c.len() {
        if c.is_valid(i) {
            crate::hex::encode_into(c.value(i), &mut text[end..end + PSEUDONYM_LEN]);
            end += PSEUDONYM_LEN;
            lengths.push(PSEUDONYM_LEN);
        } else {
            lengths.push(0);
        }
    }
    text.truncate(end);
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths);
    // Hex digits are ASCII, so the text is valid UTF-8 without checking it again.
    let strings = StringArray::try_new(offsets, Buffer::from_vec(text), c.nulls().cloned())?;
    match to {
        DataType::Utf8 => Ok(Arc::new(strings)),
        _ => Ok(arrow::compute::cast(&strings, to)?),
    }
}

/// `batch` with column `i` replaced by `column`, its field's type changed to match.
pub(super) fn replace_column(batch: &RecordBatch, i: usize, column: ArrayRef) -> DfResult<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = fields[i].clone().with_data_type(column.data_type().clone());
    let mut columns = batch.columns().to_vec();
    columns[i] = column;
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `batch` with every compacted column given back as text of the type `schema` has for it.
pub(super) fn expand_batch(batch: RecordBatch, schema: &SchemaRef) -> DfResult<RecordBatch> {
    if batch.schema_ref().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(
            |(c, f)| if c.data_type() == f.data_type() { Ok(Arc::clone(c)) } else { expand(c.as_ref(), f.data_type()) },
        )
        .collect::<DfResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{LargeStringArray, StringViewArray};
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            any::<u128>().prop_map(|v| Some(format!("{v:032x}"))),
            Just(Some(format!("{:032x}", u128::MAX))),
            Just(Some(format!("{:032x}", 0))),
        ]
    }

    proptest! {
        /// Text of pseudonyms comes back as the same text, in each text type, and orders as its bytes do.
        #[test]
        fn pseudonyms_round_trip_and_keep_their_order(values in prop::collection::vec(value(), 0..40)) {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(values.clone())),
                Arc::new(LargeStringArray::from(values.clone())),
                Arc::new(StringViewArray::from(values.clone())),
            ];
            for column in columns {
                let small = compact(column.as_ref()).expect("pseudonyms compact");
                prop_assert_eq!(small.data_type(), &COMPACT);
                prop_assert_eq!(small.null_count(), column.null_count());
                prop_assert_eq!(&expand(small.as_ref(), column.data_type())?, &column);
            }
            let small = compact(&StringArray::from(values.clone())).expect("pseudonyms compact");
            let small = small.as_fixed_size_binary();
            for i in 0..values.len() {
                for j in 0..values.len() {
                    if let (Some(a), Some(b)) = (&values[i], &values[j]) {
                        prop_assert_eq!(small.value(i).cmp(small.value(j)), a.cmp(b));
                    }
                }
            }
        }

        /// One value that is not a pseudonym (wrong case, length or digit) and the column stays text.
        #[test]
        fn other_text_is_not_compacted(
            values in prop::collection::vec(value(), 0..20),
            other in prop_oneof!["[0-9A-F]{32}", "[0-9a-f]{31}", "[0-9a-f]{33}", "[0-9a-g]{31}g", Just(String::new())],
            at in any::<prop::sample::Index>(),
        ) {
            let mut values = values;
            values.insert(at.index(values.len() + 1), Some(other));
            prop_assert!(compact(&StringViewArray::from(values)).is_none());
        }
    }

    #[test]
    fn columns_that_are_not_text_are_not_compacted() {
        assert!(compact(&arrow::array::Int64Array::from(vec![1, 2])).is_none());
        assert!(is_text(&DataType::Utf8View) && !is_text(&COMPACT));
    }
}
