//! Helpers for the plan rules' unit tests: write a table's files, run a statement on a context and print its answer.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::warehouse::CommittedFile;

/// Writes `batch` as the Parquet file `path` under `dir` (folders made), and its manifest entry, of
/// commit 1 with `partition`'s values.
pub fn write_file(
    dir: &Path,
    path: String,
    batch: &RecordBatch,
    props: Option<WriterProperties>,
    partition: BTreeMap<String, String>,
) -> CommittedFile {
    let file = dir.join(&path);
    std::fs::create_dir_all(file.parent().expect("a file in a folder")).expect("a folder for the file");
    let out = std::fs::File::create(&file).expect("a new file");
    let mut writer = ArrowWriter::try_new(out, batch.schema(), props).expect("a writer");
    writer.write(batch).expect("written");
    writer.close().expect("closed");
    let bytes = std::fs::metadata(&file).expect("written").len();
    CommittedFile { bytes, path, rows: batch.num_rows() as u64, sha256: String::new(), partition, commit: 1 }
}

/// The statement's batches, run on a runtime of its own.
pub fn collect(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async { ctx.sql(sql).await.expect("plans").collect().await.expect("runs") })
}

/// The statement's answer as a printed table.
pub fn run(ctx: &SessionContext, sql: &str) -> String {
    pretty_format_batches(&collect(ctx, sql)).expect("prints").to_string()
}
