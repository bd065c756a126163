//! Writes one table's rows of a run as one zstd Parquet file per partition,
//! in row groups sorted by the table's sort columns.
//!
//! Rows are buffered per partition until a row group is full (or the memory
//! budget is reached), then sorted and written, so memory is bounded by the
//! budget, not by the size of the delivery. The columns of a row group are
//! gathered, encoded and compressed in parallel, which is most of the work
//! of an ingest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, StringArray, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{LexicographicalComparator, SortColumn, concat, interleave, interleave_record_batch, take};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::{ColumnLayout, CommittedFile, Error, Result, Transaction, partition_dirs};
use crate::config::source::RECORD_ID;

/// False-positive rate of the bloom filter on `record_id` (about 5 bytes a row).
pub const RECORD_ID_BLOOM_FPP: f64 = 1e-6;

/// Stores every column held as Parquet integers (integers, dates, times,
/// decimals of up to 18 digits) with delta encoding where it has no
/// dictionary, and falls back to it where its dictionary overflows.
/// Amounts and timestamps were plain 8-byte values, whose zstd
/// decompression was a third of a query summing 10M amounts; as bit-packed
/// deltas they take 20 bits a row here and decode several times faster.
fn delta_for_integers(
    mut props: parquet::file::properties::WriterPropertiesBuilder,
    schema: &SchemaRef,
) -> parquet::file::properties::WriterPropertiesBuilder {
    let Ok(descr) = parquet::arrow::ArrowSchemaConverter::new().convert(schema) else { return props };
    for column in descr.columns() {
        if matches!(column.physical_type(), parquet::basic::Type::INT32 | parquet::basic::Type::INT64) {
            props = props.set_column_encoding(column.path().clone(), Encoding::DELTA_BINARY_PACKED);
        }
    }
    props
}

/// Buffered bytes across all partitions above which the largest is flushed.
pub const DEFAULT_MEMORY_BUDGET: usize = 160 * 1024 * 1024;

/// SHA-256 (hex) and size of a file, read in 1 MiB pieces.
pub fn hash_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    hash_reader(File::open(path)?)
}

/// SHA-256 (hex) and size of everything `f` reads, in 1 MiB pieces.
pub fn hash_reader(mut f: impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((crate::hex::encode(&hasher.finalize()), bytes));
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
}

/// Counts and hashes bytes on their way to the file.
struct HashingWriter {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Open {
    file: SerializedFileWriter<HashingWriter>,
    columns: ArrowRowGroupWriterFactory,
    row_groups: usize,
    staged: PathBuf,
    rel: String,
    rows: u64,
}

#[derive(Default)]
struct Pending {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

/// How a column's values are gathered into a row group, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gather {
    /// One value per delivery: the first row's, repeated.
    Constant,
    /// A pseudonym's 16 bytes, written as its hex.
    Hex,
    Strings,
    /// Anything else, by Arrow's `interleave`.
    Other,
}

/// Writer of one table's partitions within a transaction.
pub struct TableWriter {
    table: String,
    schema: SchemaRef,
    partition_parts: Vec<crate::config::source::PartitionPart>,
    sort_columns: Vec<usize>,
    /// How each column's values are gathered into row groups.
    gathers: Vec<Gather>,
    props: WriterProperties,
    row_group_rows: usize,
    memory_budget: usize,
    pending: BTreeMap<u32, Pending>,
    open: BTreeMap<u32, Open>,
    buffered_bytes: usize,
}

impl TableWriter {
    pub fn new(
        table: &str,
        schema: SchemaRef,
        partition_parts: Vec<crate::config::source::PartitionPart>,
        layout: ColumnLayout,
        row_group_rows: usize,
        zstd_level: i32,
    ) -> TableWriter {
        let sort_columns = layout.sort;
        let sorting: Vec<SortingColumn> = sort_columns
            .iter()
            .map(|&c| SortingColumn { column_idx: c as i32, descending: false, nulls_first: true })
            .collect();
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level).unwrap_or_default()))
            .set_max_row_group_row_count(Some(row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Page)
            // Fewer, larger steps through the encoders; pages are still cut
            // at the default size.
            .set_write_batch_size(8192)
            .set_sorting_columns(Some(sorting))
            .set_created_by(format!("ladu {}", env!("CARGO_PKG_VERSION")));
        props = delta_for_integers(props, &schema);
        if schema.field_with_name(RECORD_ID).is_ok() {
            // A commit looks up the record ids it delivers in earlier row
            // groups (`superseded`); a commit of 200k ids prunes a row group
            // only if 200k probes all miss, hence the low false-positive rate.
            let path = ColumnPath::from(RECORD_ID);
            props = props
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path.clone(), RECORD_ID_BLOOM_FPP)
                .set_column_bloom_filter_max_ndv(path, row_group_rows as u64);
        }
        for c in layout.unique {
            let path = ColumnPath::from(c.clone());
            props = props.set_column_dictionary_enabled(path.clone(), false);
            if schema.field_with_name(&c).is_ok_and(|f| f.data_type() == &DataType::Utf8) {
                // Pseudonyms: lengths apart from the text leaves zstd less to
                // do (measured −5 % CPU of an ingest, −3 % bytes). Not prefix
                // deltas, even on the sorted column whose neighbours share
                // prefixes: they saved 1 % of its bytes, and rebuilding each
                // value from the one before made a query that reads every
                // person 3-30 % slower (per-person sums, joins, unions).
                props = props.set_column_encoding(path, Encoding::DELTA_LENGTH_BYTE_ARRAY);
            }
        }
        for c in layout.constant.iter().chain(&layout.runs) {
            // Delta encoding stores a run of one value in a few bytes, without
            // the dictionary's hashing of every row.
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(c.as_str()), false)
                .set_column_encoding(ColumnPath::from(c.as_str()), Encoding::DELTA_BINARY_PACKED);
        }
        let props = props.build();
        let gathers = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, f)| match f.data_type() {
                _ if layout.pseudonyms.contains(&c) => Gather::Hex,
                _ if layout.constant.contains(f.name()) => Gather::Constant,
                DataType::Utf8 => Gather::Strings,
                _ => Gather::Other,
            })
            .collect();
        TableWriter {
            table: table.to_owned(),
            schema,
            partition_parts,
            sort_columns,
            gathers,
            props,
            row_group_rows,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            pending: BTreeMap::new(),
            open: BTreeMap::new(),
            buffered_bytes: 0,
        }
    }

    /// Buffer `batch` for partition `key`, writing row groups as they fill.
    pub fn push(&mut self, tx: &mut Transaction, key: u32, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let size = used_bytes(&batch);
        let p = self.pending.entry(key).or_default();
        p.rows += batch.num_rows();
        p.bytes += size;
        p.batches.push(batch);
        self.buffered_bytes += size;
        if p.rows >= self.row_group_rows {
            self.flush(tx, &[key], false)?;
        }
        while self.buffered_bytes > self.memory_budget {
            let Some((&largest, _)) = self.pending.iter().max_by_key(|(_, p)| p.bytes) else { break };
            self.flush(tx, &[largest], true)?;
        }
        Ok(())
    }

    /// Sort and write what is buffered for `keys` as row groups, the
    /// partitions in parallel. Unless `whole`, only full row groups are
    /// written and the rest stays buffered.
    fn flush(&mut self, tx: &mut Transaction, keys: &[u32], whole: bool) -> Result<()> {
        let mut work = BTreeMap::new();
        for &key in keys {
            let Some(p) = self.pending.remove(&key) else { continue };
            self.buffered_bytes -= p.bytes;
            if p.rows == 0 {
                continue;
            }
            if !self.open.contains_key(&key) {
                let dirs = partition_dirs(key, &self.partition_parts);
                let (staged, rel) = tx.new_file(&self.table, &dirs);
                let file = File::create(&staged).map_err(|source| Error::Io { path: staged.clone(), source })?;
                let sink =
                    HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new(), bytes: 0 };
                // ArrowWriter records the Arrow schema in the file's metadata;
                // row groups are then written column by column.
                let (file, columns) = ArrowWriter::try_new(sink, self.schema.clone(), Some(self.props.clone()))
                    .and_then(ArrowWriter::into_serialized_writer)
                    .map_err(|source| Error::Parquet { path: staged.clone(), source })?;
                self.open.insert(key, Open { file, columns, row_groups: 0, staged, rel, rows: 0 });
            }
            work.insert(key, p);
        }
        let (schema, sort_columns, row_group_rows, gathers) =
            (&self.schema, &self.sort_columns, self.row_group_rows, &self.gathers);
        let jobs: Vec<(u32, &mut Open, Pending)> =
            self.open.iter_mut().filter_map(|(k, open)| work.remove(k).map(|p| (*k, open, p))).collect();
        let rests = jobs
            .into_par_iter()
            .map(|(key, open, p)| {
                let order = sort_order(&p.batches, sort_columns);
                let n = order.len();
                let full = if whole { n } else { n - n % row_group_rows };
                for rows in order[..full].chunks(row_group_rows) {
                    write_row_group(open, schema, gathers, &p.batches, rows)
                        .map_err(|source| Error::Parquet { path: open.staged.clone(), source })?;
                }
                open.rows += full as u64;
                // Rows left over are copied out, so that the written rows' buffers are freed.
                let rest = (full < n)
                    .then(|| (key, interleave_record_batch(&p.batches.iter().collect::<Vec<_>>(), &order[full..])));
                match rest {
                    Some((key, Ok(rest))) => Ok(Some((key, rest))),
                    Some((_, Err(e))) => Err(Error::Parquet { path: open.staged.clone(), source: e.into() }),
                    None => Ok(None),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        for (key, rest) in rests.into_iter().flatten() {
            // Rows left over wait for the partition's next row group.
            let size = used_bytes(&rest);
            let p = self.pending.entry(key).or_default();
            p.rows += rest.num_rows();
            p.bytes += size;
            p.batches.insert(0, rest);
            self.buffered_bytes += size;
        }
        Ok(())
    }

    /// Write everything buffered, close every file, and stage them in `tx`.
    pub fn finish(mut self, tx: &mut Transaction) -> Result<u64> {
        let keys: Vec<u32> = self.pending.keys().copied().collect();
        self.flush(tx, &keys, true)?;
        // Footers are written and files synced in parallel: each sync waits
        // on the disk, not the processor.
        let (parts, version) = (&self.partition_parts, tx.version());
        let closed = std::mem::take(&mut self.open)
            .into_iter()
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(key, open)| -> Result<(PathBuf, CommittedFile)> {
                let Open { file, staged, rel, rows, .. } = open;
                let err = |source| Error::Parquet { path: staged.clone(), source };
                let sink = file.into_inner().map_err(err)?;
                let HashingWriter { inner, hasher, bytes } = sink;
                let file =
                    inner.into_inner().map_err(|e| Error::Io { path: staged.clone(), source: e.into_error() })?;
                file.sync_all().map_err(|source| Error::Io { path: staged.clone(), source })?;
                let partition = partition_dirs(key, parts)
                    .into_iter()
                    .filter_map(|d| d.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                    .collect();
                let sha256 = crate::hex::encode(&hasher.finalize());
                Ok((staged, CommittedFile { path: rel, rows, bytes, sha256, partition, commit: version }))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut rows = 0;
        for (staged, file) in closed {
            rows += file.rows;
            tx.add(staged, file);
        }
        Ok(rows)
    }
}

/// Gather, encode and compress the rows `rows` of `batches` as the file's
/// next row group, one column per task.
fn write_row_group(
    open: &mut Open,
    schema: &SchemaRef,
    gathers: &[Gather],
    batches: &[RecordBatch],
    rows: &[(usize, usize)],
) -> Result<(), ParquetError> {
    let writers = open.columns.create_column_writers(open.row_groups)?;
    let chunks = writers
        .into_par_iter()
        .enumerate()
        .map(|(c, mut writer)| -> Result<ArrowColumnChunk, ParquetError> {
            let column: ArrayRef = match gathers[c] {
                Gather::Hex => {
                    let sources: Vec<&FixedSizeBinaryArray> =
                        batches.iter().map(|b| b.column(c).as_fixed_size_binary()).collect();
                    std::sync::Arc::new(gather_hex(&sources, rows)?)
                }
                Gather::Strings => {
                    let sources: Vec<&StringArray> = batches.iter().map(|b| b.column(c).as_string()).collect();
                    std::sync::Arc::new(gather_strings(&sources, rows))
                }
                Gather::Constant => {
                    let first = batches[rows[0].0].column(c).slice(rows[0].1, 1);
                    take(&first, &UInt32Array::from(vec![0; rows.len()]), None)?
                }
                Gather::Other => {
                    let sources: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
                    interleave(&sources, rows)?
                }
            };
            // Flat schema: one leaf per column.
            for leaf in compute_leaves(schema.field(c), &column)? {
                writer.write(&leaf)?;
            }
            writer.close()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut group = open.file.next_row_group()?;
    for chunk in chunks {
        chunk.append_to_row_group(&mut group)?;
    }
    group.close()?;
    open.row_groups += 1;
    Ok(())
}

/// The rows of `batches` as (batch, row), ordered by the columns
/// `sort_columns`, nulls first. The order depends only on the rows (equal
/// values keep their arrival order), so a rerun writes the same files.
fn sort_order(batches: &[RecordBatch], sort_columns: &[usize]) -> Vec<(usize, usize)> {
    let all: Vec<(usize, usize)> =
        batches.iter().enumerate().flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r))).collect();
    let Some(&first) = sort_columns.first() else { return all };
    let pseudonyms = || batches.iter().map(|b| b.column(first).as_fixed_size_binary_opt());
    if sort_columns.len() == 1 && pseudonyms().all(|p| p.is_some_and(|p| p.value_length() == 16 && p.null_count() == 0))
    {
        // Fast path for one pseudonym column: its 16 bytes as one number
        // (byte order is the order of the hex text), then arrival order.
        let mut order: Vec<(u128, u32)> = Vec::with_capacity(all.len());
        for p in pseudonyms().flatten() {
            for r in 0..p.len() {
                let key = u128::from_be_bytes(p.value(r).try_into().expect("checked: 16-byte values"));
                order.push((key, order.len() as u32));
            }
        }
        order.sort_unstable();
        return order.into_iter().map(|(_, i)| all[i as usize]).collect();
    }
    // Any other sort columns: Arrow's comparator, arrival order breaking ties.
    let cols: Vec<SortColumn> = sort_columns
        .iter()
        .map(|&c| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            SortColumn { values: concat(&parts).expect("batches share the schema"), options: None }
        })
        .collect();
    let cmp = LexicographicalComparator::try_new(&cols).expect("sort columns are sortable");
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| cmp.compare(a as usize, b as usize).then(a.cmp(&b)));
    order.into_iter().map(|i| all[i as usize]).collect()
}

/// Bytes a batch's rows occupy (not the capacity reserved behind them,
/// which the operating system does not back until it is touched).
fn used_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size()))
        .sum()
}

/// The 16-byte pseudonyms `rows` of `sources` as their lowercase hex text.
fn gather_hex(sources: &[&FixedSizeBinaryArray], rows: &[(usize, usize)]) -> Result<StringArray, ParquetError> {
    let gathered = crate::hex::gather16(sources, rows)
        .ok_or_else(|| ParquetError::General("a pseudonym column holds 16-byte values".into()))?;
    let offsets = gathered
        .offsets()
        .ok_or_else(|| ParquetError::General("a row group's pseudonyms are more text than its offsets hold".into()))?;
    // SAFETY: the text is ASCII hex, and the offsets rise from 0 to its
    // length, so every value is a valid UTF-8 slice of it.
    Ok(unsafe { StringArray::new_unchecked(offsets, gathered.text.into(), gathered.nulls) })
}

/// The strings `rows` of `sources`, as `interleave` would gather them but
/// faster for the short values of a warehouse (codes, names).
fn gather_strings(sources: &[&StringArray], rows: &[(usize, usize)]) -> StringArray {
    // First the random reads of the offsets, in a small loop so that many
    // are in flight; then the text, where a value of up to 32 bytes is
    // copied as a fixed 32-byte block (and the excess cut) rather than by
    // a call to `memcpy`.
    let spans: Vec<(u32, u32)> = rows
        .iter()
        .map(|&(b, r)| {
            let offsets = sources[b].value_offsets();
            (offsets[r] as u32, (offsets[r + 1] - offsets[r]) as u32)
        })
        .collect();
    let total: usize = spans.iter().map(|&(_, len)| len as usize).sum();
    let mut text: Vec<u8> = Vec::with_capacity(total + 32);
    for (&(start, len), &(b, _)) in spans.iter().zip(rows) {
        let values = sources[b].value_data();
        let (start, len) = (start as usize, len as usize);
        match values.get(start..start + 32) {
            Some(block) if len <= 32 => {
                let end = text.len() + len;
                text.extend_from_slice(block);
                text.truncate(end);
            }
            _ => text.extend_from_slice(&values[start..start + len]),
        }
    }
    let nulls = sources.iter().any(|s| s.null_count() > 0);
    let validity = nulls.then(|| rows.iter().map(|&(b, r)| sources[b].is_valid(r)).collect());
    let offsets = OffsetBuffer::from_lengths(spans.iter().map(|&(_, len)| len as usize));
    // SAFETY: `text` is whole values of valid string arrays, one after the
    // other, and the offsets (from their lengths) fall between them, so every
    // value is valid UTF-8. Checking again cost 1 % of an ingest.
    unsafe { StringArray::new_unchecked(offsets, text.into(), validity) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Source arrays (with nulls) and (batch, row) picks into them.
    type Picks<T> = (Vec<Vec<Option<T>>>, Vec<(usize, usize)>);

    fn picks<T: std::fmt::Debug + Clone>(value: impl Strategy<Value = T> + Clone) -> impl Strategy<Value = Picks<T>> {
        prop::collection::vec(prop::collection::vec(prop::option::weighted(0.9, value), 1..40), 1..4).prop_flat_map(
            |sources| {
                let lens: Vec<usize> = sources.iter().map(Vec::len).collect();
                let pick = (0..lens.len()).prop_flat_map(move |b| (Just(b), 0..lens[b]));
                (Just(sources), prop::collection::vec(pick, 0..100))
            },
        )
    }

    proptest! {
        /// Whatever the sort column (nullable pseudonyms, plain text), rows
        /// come out by value, nulls first, and equal values in arrival order.
        #[test]
        fn sort_order_keeps_arrival_order_among_equals(
            (sources, _) in picks(0u8..4),
            text in any::<bool>(),
        ) {
            let batches: Vec<RecordBatch> = sources
                .iter()
                .map(|s| {
                    let column: ArrayRef = if text {
                        std::sync::Arc::new(s.iter().map(|v| v.map(|v| format!("v{v}"))).collect::<StringArray>())
                    } else {
                        let bytes: Vec<Option<[u8; 16]>> = s.iter().map(|v| v.map(|v| [v; 16])).collect();
                        std::sync::Arc::new(
                            FixedSizeBinaryArray::try_from_sparse_iter_with_size(bytes.iter().map(|v| v.as_ref()), 16)
                                .unwrap(),
                        )
                    };
                    RecordBatch::try_from_iter([("k", column)]).unwrap()
                })
                .collect();
            let order = sort_order(&batches, &[0]);
            let mut expected: Vec<(usize, usize)> =
                sources.iter().enumerate().flat_map(|(b, s)| (0..s.len()).map(move |r| (b, r))).collect();
            // A stable sort of arrival order by value, None first.
            expected.sort_by_key(|&(b, r)| sources[b][r]);
            prop_assert_eq!(order, expected);
        }

        /// Short, long (past the 32-byte block) and empty strings, nulls, and
        /// values at the very end of a buffer gather as `interleave` does.
        #[test]
        fn gather_strings_agrees_with_interleave((sources, rows) in picks("[a-zõ ]{0,70}")) {
            let arrays: Vec<StringArray> = sources.iter().map(|s| StringArray::from(s.clone())).collect();
            let refs: Vec<&StringArray> = arrays.iter().collect();
            let dyns: Vec<&dyn Array> = arrays.iter().map(|a| a as &dyn Array).collect();
            let ours = gather_strings(&refs, &rows);
            let theirs = interleave(&dyns, &rows).unwrap();
            prop_assert_eq!(&ours, theirs.as_string::<i32>());
        }

        #[test]
        fn gather_hex_is_the_hex_of_the_picked_bytes((sources, rows) in picks(any::<[u8; 16]>())) {
            let arrays: Vec<FixedSizeBinaryArray> = sources
                .iter()
                .map(|s| FixedSizeBinaryArray::try_from_sparse_iter_with_size(s.iter().map(|v| v.as_ref()), 16).unwrap())
                .collect();
            let refs: Vec<&FixedSizeBinaryArray> = arrays.iter().collect();
            let ours = gather_hex(&refs, &rows).unwrap();
            let expected: StringArray = rows.iter().map(|&(b, r)| sources[b][r].map(|v| crate::hex::encode(&v))).collect();
            prop_assert_eq!(ours, expected);
        }
    }

    /// Integers, dates, timestamps and decimals of up to 18 digits are
    /// delta-encoded; text and wider decimals are not; and every value,
    /// the extremes and nulls among them, reads back as it was written.
    #[test]
    fn integer_columns_are_delta_encoded_and_read_back() {
        use arrow::array::{Date32Array, Decimal128Array, Int64Array, TimestampMicrosecondArray};
        use arrow::datatypes::{Field, Schema, TimeUnit};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use std::sync::Arc;

        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(15, 2), true),
            Field::new("wide", DataType::Decimal128(30, 2), true),
            Field::new("day", DataType::Date32, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("_line", DataType::Int64, true),
        ]));
        // As for a unique column, `amount` has no dictionary; `at`'s
        // dictionary overflows, so that the delta encoding is its fallback.
        let builder = WriterProperties::builder()
            .set_column_dictionary_enabled(ColumnPath::from("amount"), false)
            .set_column_dictionary_page_size_limit(ColumnPath::from("at"), 1024);
        let props = delta_for_integers(builder, &schema).build();
        let encoding = |c: &str| props.encoding(&ColumnPath::from(c));
        for c in ["amount", "day", "at", "_line"] {
            assert_eq!(encoding(c), Some(Encoding::DELTA_BINARY_PACKED), "{c}");
        }
        assert_eq!(encoding("name"), None);
        assert_eq!(encoding("wide"), None);

        let n = 5000i64;
        let amounts = (0..n).map(|i| match i {
            0 => Some(999_999_999_999_999),
            1 => Some(-999_999_999_999_999),
            _ => (i % 7 != 0).then(|| i128::from((i * 7919 % 499_999) - 1000)),
        });
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new((0..n).map(|i| Some(format!("n{i}"))).collect::<StringArray>()),
                Arc::new(amounts.collect::<Decimal128Array>().with_precision_and_scale(15, 2).unwrap()),
                Arc::new(
                    (0..n)
                        .map(|i| Some(i128::from(i) * 10i128.pow(20)))
                        .collect::<Decimal128Array>()
                        .with_precision_and_scale(30, 2)
                        .unwrap(),
                ),
                Arc::new(
                    (0..n).map(|i| (i % 11 != 0).then_some((i * 37 % 20_000) as i32 - 5000)).collect::<Date32Array>(),
                ),
                Arc::new(
                    (0..n)
                        .map(|i| match i {
                            0 => Some(i64::MIN),
                            1 => Some(i64::MAX),
                            _ => (i % 13 != 0).then_some(i * 1_000_003_117),
                        })
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone("UTC"),
                ),
                Arc::new(
                    (0..n).map(|i| Some(if i % 2 == 0 { i64::MAX - i } else { i64::MIN + i })).collect::<Int64Array>(),
                ),
            ],
        )
        .unwrap();
        let mut file = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut file, schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file)).unwrap();
        let chunk = |c: usize| reader.metadata().row_group(0).column(c).encodings().collect::<Vec<_>>();
        assert!(chunk(1).contains(&Encoding::DELTA_BINARY_PACKED), "{:?}", chunk(1));
        assert!(!chunk(1).contains(&Encoding::RLE_DICTIONARY), "{:?}", chunk(1));
        assert!(chunk(4).contains(&Encoding::DELTA_BINARY_PACKED), "{:?}", chunk(4));
        assert!(chunk(4).contains(&Encoding::RLE_DICTIONARY), "{:?}", chunk(4));
        let read: Vec<RecordBatch> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(arrow::compute::concat_batches(&batch.schema(), &read).unwrap(), batch);
    }
}
