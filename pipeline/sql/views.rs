//! Curated views: `queries/views/<name>.sql`, one query each, opening with a comment saying what it answers.
//!
//! Views load in file-name order, so a view may read the views before it.
//! Each is planned twice: against every table, where an error is the view's
//! own and is reported with its file name, and against the role's tables,
//! where an error means the view reads something the role may not see, and
//! the view is left out for that role.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::prelude::SessionContext;

use super::query_files::{self, QueryFile};
use super::{Error, Result, sandbox};

/// Folder of the views under the queries folder.
pub const DIR: &str = "views";

/// Whether a role can read a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    Yes,
    /// It reads a table or column hidden from the role.
    No,
    /// Left out until this table has data.
    Waiting(String),
}

/// A view's name, description, and whether the role can read it.
pub type Loaded = (String, String, Readable);

/// Register every view in `dir` in `ctx`; `full` (when the role sees less
/// than everything) is a context with every table, where views are checked.
/// A view reading a table in `empty` (configured, nothing committed yet) is
/// left out until there is data.
pub fn load(
    runtime: &tokio::runtime::Runtime,
    ctx: &SessionContext,
    full: Option<&SessionContext>,
    dir: &Path,
    empty: &BTreeSet<String>,
) -> Result<Vec<Loaded>> {
    let mut loaded = Vec::new();
    for view in query_files::read_dir(dir).map_err(|e| Error::View { file: e.file, message: e.message })? {
        // Against every table: an error here is the view's own.
        match runtime.block_on(register(full.unwrap_or(ctx), &view, empty)) {
            Err(Problem::NoData(table)) => {
                tracing::debug!("view {} is left out: table {table} has no data yet", view.name);
                loaded.push((view.name, view.description, Readable::Waiting(table)));
                continue;
            }
            Err(Problem::Bad(message)) => return Err(Error::View { file: view.path, message }),
            Ok(()) => {}
        }
        // Against the role's tables: an error means the view reads something hidden from the role.
        let readable = full.is_none() || runtime.block_on(register(ctx, &view, empty)).is_ok();
        if !readable {
            tracing::debug!("view {} reads a table or column hidden from this role", view.name);
        }
        loaded.push((view.name, view.description, if readable { Readable::Yes } else { Readable::No }));
    }
    Ok(loaded)
}

/// Why a view could not be registered.
enum Problem {
    /// It reads a table with nothing committed yet.
    NoData(String),
    Bad(String),
}

async fn register(ctx: &SessionContext, view: &QueryFile, empty: &BTreeSet<String>) -> Result<(), Problem> {
    let state = ctx.state();
    let bad = |e: datafusion::error::DataFusionError| Problem::Bad(e.strip_backtrace().to_string());
    let statement = state.sql_to_statement(&view.sql, &state.config().options().sql_parser.dialect).map_err(bad)?;
    if let Some(reason) = sandbox::refusal(&statement) {
        return Err(Problem::Bad(format!("a view is one SELECT query: {reason}")));
    }
    for reference in state.resolve_table_references(&statement).map_err(bad)? {
        let table = reference.table();
        let base = table.strip_suffix(super::tables::HISTORY_SUFFIX).unwrap_or(table);
        if empty.contains(base) {
            return Err(Problem::NoData(base.to_owned()));
        }
    }
    let plan = state.statement_to_plan(statement).await.map_err(bad)?;
    sandbox::sql_options().verify_plan(&plan).map_err(bad)?;
    ctx.register_table(view.name.as_str(), Arc::new(ViewTable::new(plan, Some(view.sql.clone())))).map_err(bad)?;
    Ok(())
}
