//! Text columns of pseudonyms held as the 16 bytes their hex digits spell while an operator buffers them, and given back as the same text.
//!
//! A pseudonym read as `Utf8View` costs 48 bytes a row (a 16-byte view and
//! its 32 characters); a sort by person buffers a whole partition of them.
//! As `FixedSizeBinary(16)` the same values take 16 bytes, and their bytes
//! order as the text does (lowercase hex digits sort as the nibbles they
//! spell), so a sort can compare them as they are.

use std::sync::Arc;

use arrow::array::builder::make_view;
use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, GenericStringArray, RecordBatch, StringViewArray};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result as DfResult};

use crate::hex::Gathered;
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
    let valid = column.nulls().filter(|nulls| nulls.null_count() > 0);
    let each = |f: &mut dyn FnMut(usize) -> Option<()>| match valid {
        None => (0..n).try_for_each(f),
        Some(nulls) => nulls.valid_indices().try_for_each(f),
    };
    match column.data_type() {
        DataType::Utf8 => {
            let c = column.as_string::<i32>();
            each(&mut |i| put(i, c.value(i).as_bytes()))?;
        }
        DataType::LargeUtf8 => {
            let c = column.as_string::<i64>();
            each(&mut |i| put(i, c.value(i).as_bytes()))?;
        }
        DataType::Utf8View => {
            let c = column.as_string_view();
            each(&mut |i| put(i, c.value(i).as_bytes()))?;
        }
        _ => return None,
    }
    Some(Arc::new(FixedSizeBinaryArray::new(16, Buffer::from_vec(bytes), column.nulls().cloned())))
}

/// A compacted column (see [`compact`]) as text of type `to` again: the same characters, the same nulls.
pub(super) fn expand(column: &dyn Array, to: &DataType) -> DfResult<ArrayRef> {
    let indices: Vec<(usize, usize)> = (0..column.len()).map(|i| (0, i)).collect();
    gather(&[column], &indices, to)
}

/// The rows `indices` picks (array, row) from compacted `columns`, as text of type `to`: what
/// Arrow's `interleave` and then [`expand`] would give, without a row-by-row copy of the 16 bytes.
pub(super) fn gather(columns: &[&dyn Array], indices: &[(usize, usize)], to: &DataType) -> DfResult<ArrayRef> {
    let columns: Vec<&FixedSizeBinaryArray> = columns.iter().map(|c| c.as_fixed_size_binary()).collect();
    let gathered = crate::hex::gather16(&columns, indices)
        .ok_or_else(|| DataFusionError::Internal("a compacted pseudonym column holds 16-byte values".into()))?;
    let too_long =
        || DataFusionError::ResourcesExhausted("more pseudonyms in one batch than its text offsets can hold".into());
    match to {
        DataType::Utf8View => views(gathered),
        DataType::LargeUtf8 => {
            let offsets = gathered.offsets::<i64>().ok_or_else(too_long)?;
            Ok(Arc::new(GenericStringArray::<i64>::try_new(offsets, Buffer::from_vec(gathered.text), gathered.nulls)?))
        }
        _ => {
            let offsets = gathered.offsets::<i32>().ok_or_else(too_long)?;
            let strings = GenericStringArray::<i32>::try_new(offsets, Buffer::from_vec(gathered.text), gathered.nulls)?;
            Ok(arrow::compute::cast(&strings, to)?)
        }
    }
}

/// The gathered text as views, in blocks of at most [`BLOCK`] bytes (no value straddles two: each
/// starts at a multiple of 32); a row whose text is empty is null.
fn views(gathered: Gathered) -> DfResult<ArrayRef> {
    let Gathered { text, ends, nulls } = gathered;
    let views: Vec<u128> = ends
        .windows(2)
        .map(|w| match (w[0], w[1]) {
            (start, end) if start == end => 0,
            (start, end) => make_view(&text[start..end], (start / BLOCK) as u32, (start % BLOCK) as u32),
        })
        .collect();
    let blocks = if text.len() <= BLOCK {
        vec![Buffer::from_vec(text)]
    } else {
        text.chunks(BLOCK).map(Buffer::from_slice_ref).collect()
    };
    Ok(Arc::new(StringViewArray::try_new(views.into(), blocks, nulls)?))
}

/// The most bytes of text in one buffer of a view array (a multiple of a pseudonym's length).
const BLOCK: usize = PSEUDONYM_LEN << 20;

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
    use arrow::array::{LargeStringArray, StringArray, StringViewArray};
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

    /// More text than one buffer of views holds: the views point into later buffers, rightly.
    #[test]
    fn views_beyond_one_buffer() {
        let values: Vec<Option<String>> = (0..BLOCK / PSEUDONYM_LEN * 5 / 4 + 8)
            .map(|i| (i % 5 != 1).then(|| format!("{:032x}", i * 7919)))
            .collect();
        let column = StringViewArray::from(values);
        let small = compact(&column).expect("pseudonyms compact");
        let text = expand(small.as_ref(), &DataType::Utf8View).expect("expands");
        assert_eq!(text.as_string_view().data_buffers().len(), 2);
        assert_eq!(text.as_string_view(), &column);
    }

    #[test]
    fn columns_that_are_not_text_are_not_compacted() {
        assert!(compact(&arrow::array::Int64Array::from(vec![1, 2])).is_none());
        assert!(is_text(&DataType::Utf8View) && !is_text(&COMPACT));
    }
}
