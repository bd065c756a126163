//! Helpers for the plan rules' unit tests: run a statement on a context and print its answer.

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

/// The statement's batches, run on a runtime of its own.
pub fn collect(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async { ctx.sql(sql).await.expect("plans").collect().await.expect("runs") })
}

/// The statement's answer as a printed table.
pub fn run(ctx: &SessionContext, sql: &str) -> String {
    pretty_format_batches(&collect(ctx, sql)).expect("prints").to_string()
}
