//! SQL for analysts: a read-only DataFusion session over the committed warehouse, as one role sees it.
//!
//! [`Session::open`] registers, for each committed table `t`, `t_history`
//! (every version of every record) and `t` (the newest version of each
//! record), each wrapped in the role's [`restrict::Restricted`] view of it,
//! then the curated views of `queries/views/`, planned against those
//! restricted tables. [`Session::run`] refuses anything but queries
//! ([`sandbox`]), streams the result to an [`output::Output`], and appends
//! one audit entry per statement, refused and failed ones included.
//!
//! What a user typed (statements, names, paths) may hold a personal code:
//! the audit entry redacts it with [`redact`], and so must whoever prints an
//! [`Error`] (the binary and the shell do).

mod batch_groups;
pub mod codec;
pub mod compact_median;
mod compact_pseudonyms;
pub mod date_trunc;
pub mod dictionary_exprs;
pub mod dictionary_groups;
mod expr_rewrite;
pub mod limits;
pub mod lineage;
pub mod output;
pub mod packed_sort;
pub mod partition_groups;
pub mod prefix_filter;
pub mod prefix_match;
pub mod pseudonym_keys;
pub mod query_files;
pub mod remote;
pub mod restrict;
pub mod roles;
pub mod sandbox;
pub mod script;
pub mod semi_join;
pub mod shared_work;
pub mod shell;
pub mod single_phase;
pub mod sorted_window;
pub mod tables;
mod tally;
#[cfg(test)]
mod testing;
pub mod versions;
pub mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::optimizer::OptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::pseudonym::Pseudonymiser;
use crate::pseudonym::isikukood::redact;
use crate::warehouse::manifest;
use roles::{Access, Condition, Role};

/// Rows per batch: larger than DataFusion's 8192, measured faster on every query (DESIGN.md).
const BATCH_SIZE: usize = 32 * 1024;
/// Audit entry kind of a statement.
pub const AUDIT_KIND: &str = "sql";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Warehouse(#[from] crate::warehouse::Error),
    #[error("cannot read the warehouse's table {table}: {source}")]
    Table {
        table: String,
        #[source]
        source: DataFusionError,
    },
    #[error("cannot read the warehouse: {0}")]
    Open(#[from] tables::OpenError),
    #[error(transparent)]
    Roles(#[from] roles::Error),
    #[error("view {file}: {message}")]
    View { file: PathBuf, message: String },
    #[error("refused: {reason} (`ladu sql` is read-only and reads warehouse tables and views only)\n  in: {statement}")]
    Refused { statement: String, reason: String },
    #[error("{}{advice}\n  in: {statement}", source.strip_backtrace())]
    Query {
        statement: String,
        #[source]
        source: DataFusionError,
        /// What the user can do about it, if there is something.
        advice: &'static str,
    },
    #[error("{message}\n  in: {command}")]
    Command { command: String, message: String },
    #[error("the statement was stopped: {stop}, after {rows} row(s)\n  in: {statement}")]
    Stopped { statement: String, stop: Stop, rows: u64 },
    #[error("table `{table}` has no committed data yet: ingest a delivery of it first\n  in: {statement}")]
    NoData { table: String, statement: String },
    #[error(transparent)]
    Output(#[from] output::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    #[error("cannot start the SQL engine: {0}")]
    Engine(String),
    #[error(
        "the cluster's scheduler at {scheduler} cannot be reached ({problem}): start it (`ladu cluster scheduler`), \
         or remove `cluster.scheduler` from the config to run queries on this host"
    )]
    Unreachable { scheduler: String, problem: String },
    #[error("cannot use {path} for the cluster's TLS: {problem}")]
    ClusterTls { path: PathBuf, problem: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a running statement was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It ran longer than `sql.statement_timeout`.
    Timeout(std::time::Duration),
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// Its client asked for it to be cancelled (`ladu serve`).
    Cancel,
    /// The server is shutting down and its grace period is over (`ladu serve`).
    Shutdown,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Timeout(d) => write!(f, "it ran longer than `sql.statement_timeout` ({} s)", d.as_secs()),
            Stop::Interrupt => f.write_str("interrupted (SIGINT)"),
            Stop::Terminate => f.write_str("terminated (SIGTERM)"),
            Stop::Cancel => f.write_str("cancelled at its client's request"),
            Stop::Shutdown => f.write_str("the server is shutting down"),
        }
    }
}

/// What stops a running statement: set by its time limit's watchdog or by a
/// signal, each on a thread of its own, so that a step of a query that runs
/// for minutes without yielding cannot keep them from it.
#[derive(Default)]
struct StopFlag {
    /// A statement is running (signals outside statements end the process).
    running: std::sync::atomic::AtomicBool,
    stop: std::sync::Mutex<Option<Stop>>,
    arrived: tokio::sync::Notify,
}

impl StopFlag {
    fn raise(&self, stop: Stop) {
        self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(stop);
        self.arrived.notify_one();
    }

    /// Resolves when the running statement is to stop.
    async fn wait(&self) -> Stop {
        loop {
            self.arrived.notified().await;
            if let Some(stop) = self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                return stop;
            }
        }
    }

    /// Mark a statement as running (or not), forgetting any earlier stop.
    fn running(&self, running: bool) {
        self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.running.store(running, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Stop {
    /// The exit code of a process a signal ended: 128 and the signal's number.
    pub fn exit_code(self) -> i32 {
        match self {
            Stop::Interrupt => 128 + 2,
            Stop::Terminate => 128 + 15,
            Stop::Timeout(_) | Stop::Cancel | Stop::Shutdown => 1,
        }
    }

    /// The outcome an audit entry gives a statement stopped so.
    fn outcome(self) -> &'static str {
        match self {
            Stop::Timeout(_) => "timeout",
            Stop::Cancel => "cancelled",
            Stop::Interrupt | Stop::Terminate | Stop::Shutdown => "interrupted",
        }
    }
}

/// Stops the statement a session is running, from anywhere (a cancel request, a shutdown).
#[derive(Clone)]
pub struct Stopper(Arc<StopFlag>);

impl Stopper {
    pub fn stop(&self, stop: Stop) {
        if self.0.running.load(std::sync::atomic::Ordering::SeqCst) {
            self.0.raise(stop);
        }
    }
}

/// A statement checked by the sandbox and planned, its `$n` parameters not
/// yet bound (`ladu serve`'s prepared statements).
#[derive(Clone)]
pub struct Prepared {
    statement: String,
    plan: LogicalPlan,
    explain: bool,
    read: BTreeSet<String>,
    /// The context it was planned in, when not the session's own (`ladu serve`'s catalog).
    ctx: Option<SessionContext>,
}

impl Prepared {
    pub fn statement(&self) -> &str {
        &self.statement
    }

    /// Columns of its result.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(self.plan.schema().inner())
    }

    /// The type of each parameter `$1`, `$2`, …, where the plan tells it.
    pub fn parameter_types(&self) -> Vec<Option<arrow::datatypes::DataType>> {
        let types = self.plan.get_parameter_types().unwrap_or_default();
        let count = types.keys().filter_map(|k| k.strip_prefix('$')?.parse::<usize>().ok()).max().unwrap_or(0);
        (1..=count).map(|i| types.get(&format!("${i}")).cloned().flatten()).collect()
    }
}

/// A running statement's result, for a client that takes it at its own pace.
/// Its last audit entry is written when the stream ends, fails, is stopped,
/// or is dropped before its end (the client went away).
pub struct Running {
    pub schema: SchemaRef,
    pub batches: futures::stream::BoxStream<'static, Result<RecordBatch>>,
}

/// What a table is, for `\d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The newest version of each record.
    Table,
    /// Every version of every record.
    History,
    /// A curated view from `queries/views/`.
    View,
    /// A statistic materialised by `ladu stats`.
    Statistic,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::History => "history",
            Kind::View => "view",
            Kind::Statistic => "statistic",
        }
    }
}

/// A SQL session as one role.
pub struct Session {
    ctx: SessionContext,
    /// Always `Some` until dropped; replaced after a statement is stopped
    /// unless `shared`.
    runtime: std::sync::RwLock<Option<Arc<tokio::runtime::Runtime>>>,
    /// The runtime and memory pool are other sessions' too (`ladu serve`).
    shared: bool,
    /// Worker threads of a runtime.
    workers: usize,
    role: Role,
    audit: AuditLog,
    /// Manifest version the session reads.
    version: u64,
    /// Every name a query can read, with its kind and description.
    catalog: BTreeMap<String, (Kind, String)>,
    /// Every table and view of the warehouse, readable by this role or not.
    everything: BTreeSet<String>,
    /// Configured tables with nothing committed yet.
    empty: BTreeSet<String>,
    /// Views left out until a table they read has data: view → table.
    waiting: BTreeMap<String, String>,
    /// A statement running longer is stopped.
    timeout: std::time::Duration,
    /// What stops the running statement.
    stops: Arc<StopFlag>,
    /// Rows of the running statement's result written so far.
    rows_sent: std::sync::atomic::AtomicU64,
    /// Added to every audit entry (`ladu serve`: the login, client and connection).
    audit_fields: Map<String, Value>,
    /// Where its statements run: `local`, or the cluster's scheduler.
    ran_on: String,
}

/// Threads and memory that sessions run on: one session's own, or shared
/// by all of `ladu serve`'s connections (one memory pool for all, spilling).
pub struct Engine {
    runtime: Arc<tokio::runtime::Runtime>,
    env: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
}

impl Engine {
    pub fn new(settings: &Settings) -> Result<Engine> {
        Ok(Engine { runtime: Arc::new(new_runtime(settings.sql.target_partitions)?), env: new_env(settings)? })
    }

    pub fn runtime(&self) -> &Arc<tokio::runtime::Runtime> {
        &self.runtime
    }

    /// Bytes the engine's memory pool holds now.
    pub fn memory_reserved(&self) -> usize {
        self.env.memory_pool.reserved()
    }
}

impl Drop for Engine {
    /// A stopped statement's work may hold a thread in a step that runs for
    /// minutes without yielding: the engine ends without waiting for it.
    fn drop(&mut self) {
        let runtime = std::mem::replace(&mut self.runtime, Arc::new(placeholder_runtime()));
        if let Ok(runtime) = Arc::try_unwrap(runtime) {
            runtime.shutdown_background();
        }
    }
}

/// A runtime with no threads, to take an engine's place while it is dropped.
fn placeholder_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("a runtime without threads")
}

/// One committed warehouse version, opened: its tables and which of their
/// rows later versions supersede. Sessions reading that version share it.
pub struct Snapshot {
    manifest: manifest::Manifest,
    committed: BTreeMap<String, Arc<tables::CommittedTable>>,
    superseded: BTreeMap<String, versions::Superseded>,
}

impl Snapshot {
    /// Open `manifest`'s version. Call it where blocking is allowed.
    pub fn open(settings: &Settings, engine: &Engine, manifest: manifest::Manifest) -> Result<Snapshot> {
        let root = &settings.paths.warehouse;
        let pseudonyms: HashMap<&str, Vec<&str>> =
            settings.sources.iter().map(|s| (s.table.as_str(), s.pseudonym_columns().collect())).collect();
        let committed = tables::committed_tables(root, &manifest, &pseudonyms)?;
        let committed: BTreeMap<String, Arc<tables::CommittedTable>> =
            committed.into_iter().map(|(n, t)| (n, Arc::new(t))).collect();
        let ctx = new_context(settings, Arc::clone(&engine.env))?;
        let superseded = engine.runtime.block_on(find_superseded(&ctx, root, &manifest, &committed))?;
        Ok(Snapshot { manifest, committed, superseded })
    }

    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// The committed tables (statistics included).
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.manifest.tables.keys().map(String::as_str)
    }
}

impl Session {
    /// Open the committed warehouse as `role` (the roles file's default when `None`).
    pub fn open(settings: &Settings, audit: AuditLog, role: Option<&str>) -> Result<Session> {
        let (manifest, role) = latest_as(settings, role)?;
        Self::open_as(settings, audit, manifest, role, None)
    }

    /// Open the committed warehouse as `role` for a release to one recipient:
    /// every pseudonym column reads as the recipient's release pseudonyms
    /// (`pseudonymiser`, from [`Pseudonymiser::for_release`]), beneath every
    /// query. Statistics and tables no source config describes are left out,
    /// since which of their columns hold pseudonyms is not known.
    pub fn open_for_recipient(
        settings: &Settings,
        audit: AuditLog,
        role: &str,
        pseudonymiser: Pseudonymiser,
    ) -> Result<Session> {
        let (manifest, role) = latest_as(settings, Some(role))?;
        Self::open_as(settings, audit, manifest, role, Some(Arc::new(pseudonymiser)))
    }

    /// Open `manifest`'s warehouse with every table, for ladu's own commands
    /// (`ladu stats`, `ladu publish`); `purpose` names them in the audit log.
    pub fn open_for(
        settings: &Settings,
        audit: AuditLog,
        manifest: manifest::Manifest,
        purpose: &str,
    ) -> Result<Session> {
        let mut role = Role::everything();
        role.name = purpose.to_owned();
        Self::open_as(settings, audit, manifest, role, None)
    }

    fn open_as(
        settings: &Settings,
        audit: AuditLog,
        manifest: manifest::Manifest,
        role: Role,
        recode: Option<Arc<Pseudonymiser>>,
    ) -> Result<Session> {
        // Nothing is shown that cannot be logged.
        audit.check_appendable()?;
        let engine = Engine::new(settings)?;
        let snapshot = Arc::new(Snapshot::open(settings, &engine, manifest)?);
        Self::assemble(settings, audit, &engine, snapshot, role, recode, false)
    }

    /// A session as `role` on an engine and warehouse version that other
    /// sessions share (`ladu serve`: one per connection). Call it where
    /// blocking is allowed (not on one of the engine's tasks).
    pub fn open_shared(
        settings: &Settings,
        audit: AuditLog,
        engine: &Engine,
        snapshot: Arc<Snapshot>,
        role: Role,
    ) -> Result<Session> {
        audit.check_appendable()?;
        Self::assemble(settings, audit, engine, snapshot, role, None, true)
    }

    fn assemble(
        settings: &Settings,
        audit: AuditLog,
        engine: &Engine,
        snapshot: Arc<Snapshot>,
        role: Role,
        recode: Option<Arc<Pseudonymiser>>,
        shared: bool,
    ) -> Result<Session> {
        let manifest = &snapshot.manifest;
        let table_names = table_names(settings, manifest);
        let committed = &snapshot.committed;
        let ctx = new_context(settings, Arc::clone(&engine.env))?;
        // A release's pseudonyms are made with the key: its sessions run here, never on the cluster.
        let cluster = settings.cluster.scheduler.as_ref().filter(|_| recode.is_none());
        let ctx = match cluster {
            Some(endpoint) => remote::upgrade(ctx, settings, endpoint)?,
            None => ctx,
        };
        let ran_on = cluster.map_or_else(|| "local".to_owned(), |e| format!("cluster {e}"));
        let superseded = &snapshot.superseded;
        let mut catalog = register_tables(&ctx, settings, manifest, committed, superseded, &role, recode.as_ref())?;
        // Views are checked against every table when the role sees less.
        let full = if role.sees_everything() {
            None
        } else {
            let full = new_context(settings, Arc::clone(&engine.env))?;
            register_tables(&full, settings, manifest, committed, superseded, &Role::everything(), None)?;
            Some(full)
        };
        let dir = settings.paths.queries.join(views::DIR);
        let mut everything: BTreeSet<String> =
            committed.keys().flat_map(|t| [t.clone(), format!("{t}{}", tables::HISTORY_SUFFIX)]).collect();
        let empty: BTreeSet<String> = table_names.iter().filter(|t| !committed.contains_key(*t)).cloned().collect();
        everything.retain(|t| !statistic_history(manifest, t));
        let mut waiting = BTreeMap::new();
        for (name, description, readable) in views::load(&engine.runtime, &ctx, full.as_ref(), &dir, &empty)? {
            match readable {
                views::Readable::Yes => {
                    catalog.insert(name.clone(), (Kind::View, description));
                }
                views::Readable::No => {}
                views::Readable::Waiting(table) => {
                    waiting.insert(name.clone(), table);
                }
            }
            everything.insert(name);
        }
        Ok(Session {
            ctx,
            runtime: std::sync::RwLock::new(Some(Arc::clone(&engine.runtime))),
            shared,
            workers: settings.sql.target_partitions,
            role,
            audit,
            version: manifest.version,
            catalog,
            everything,
            empty,
            waiting,
            timeout: settings.sql.statement_timeout,
            stops: Arc::new(StopFlag::default()),
            rows_sent: std::sync::atomic::AtomicU64::new(0),
            audit_fields: Map::new(),
            ran_on,
        })
    }

    /// From now on, SIGINT and SIGTERM stop a running statement (audited as
    /// `interrupted`, with the rows sent so far) instead of the process;
    /// between statements they end the process as they would have.
    /// Call it after anything else that takes these signals (the shell's
    /// line editor), which this chains to.
    pub fn stop_on_signals(&self) -> Result<()> {
        let engine = |e: std::io::Error| Error::Engine(format!("cannot listen for signals: {e}"));
        // The handler only writes the signal's number to a pipe (all a handler may safely do);
        // a thread reads it and acts.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(engine(std::io::Error::last_os_error()));
        }
        let [read, write] = fds;
        for signal in [libc::SIGINT, libc::SIGTERM] {
            let byte = signal as u8;
            // SAFETY: the action only calls write(2), which is async-signal-safe, on a pipe that is never closed.
            unsafe {
                signal_hook_registry::register(signal, move || {
                    libc::write(write, (&raw const byte).cast(), 1);
                })
            }
            .map_err(engine)?;
        }
        let stops = Arc::clone(&self.stops);
        std::thread::Builder::new()
            .name("ladu-signals".into())
            .spawn(move || {
                let mut byte = 0u8;
                // SAFETY: reads one byte into `byte` from the pipe this thread owns the read end of.
                while unsafe { libc::read(read, (&raw mut byte).cast(), 1) } == 1 {
                    let stop = if i32::from(byte) == libc::SIGINT { Stop::Interrupt } else { Stop::Terminate };
                    if !stops.running.load(std::sync::atomic::Ordering::SeqCst) {
                        std::process::exit(stop.exit_code());
                    }
                    stops.raise(stop);
                }
            })
            .map_err(engine)?;
        Ok(())
    }

    /// `stream`, computed by a task of its own and handed over through a small
    /// channel: one step of a query (a join's probe, say) can take minutes
    /// without yielding, and the statement must still stop at its time limit
    /// or a signal. Dropping the returned stream ends the task at its next
    /// batch.
    fn detached(&self, mut stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let (to, mut from) = tokio::sync::mpsc::channel(2);
        // Set once the whole result was sent: a task that ended otherwise (a panic) is no result.
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&finished);
        let task = self.runtime().spawn(async move {
            while let Some(batch) = stream.next().await {
                if to.send(batch).await.is_err() {
                    return;
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let abort = task.abort_handle();
        let batches = futures::stream::poll_fn(move |cx| match from.poll_recv(cx) {
            std::task::Poll::Ready(None) => {
                abort.abort();
                if finished.load(std::sync::atomic::Ordering::SeqCst) {
                    std::task::Poll::Ready(None)
                } else {
                    finished.store(true, std::sync::atomic::Ordering::SeqCst);
                    let e = DataFusionError::Execution("the query's work ended before its result was complete".into());
                    std::task::Poll::Ready(Some(Err(e)))
                }
            }
            next => next,
        });
        // Dropped with the stream: the task is told to stop.
        let guard = AbortOnDrop(task.abort_handle());
        let batches = batches.map(move |b| {
            let _keep = &guard;
            b
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }

    fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        let runtime = self.runtime.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(runtime.as_ref().expect("the runtime lives as long as the session"))
    }

    /// A fresh runtime for the statements after a stopped one: the stopped
    /// one's work may hold the old one's threads for a while yet, and is
    /// left to end on them in the background.
    fn renew_runtime(&self) -> Result<()> {
        if self.shared {
            return Ok(());
        }
        let fresh = Arc::new(new_runtime(self.workers)?);
        let old = self.runtime.write().unwrap_or_else(std::sync::PoisonError::into_inner).replace(fresh);
        if let Some(Ok(old)) = old.map(Arc::try_unwrap) {
            old.shutdown_background();
        }
        Ok(())
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    /// Manifest version this session reads.
    pub fn warehouse_version(&self) -> u64 {
        self.version
    }

    /// Every table and view this role can read: name, kind, description.
    pub fn catalog(&self) -> impl Iterator<Item = (&str, Kind, &str)> {
        self.catalog.iter().map(|(n, (k, d))| (n.as_str(), *k, d.as_str()))
    }

    /// Columns of a table or view this role can read.
    pub fn columns(&self, name: &str) -> Option<SchemaRef> {
        if !self.catalog.contains_key(name) {
            return None;
        }
        let provider = self.runtime().block_on(self.ctx.table_provider(name)).ok()?;
        Some(provider.schema())
    }

    /// Run one statement, write its result to `out`, and audit it; returns the rows returned.
    pub fn run(&self, statement: &str, out: &mut Output) -> Result<u64> {
        self.run_reading(statement, out).map(|(rows, _)| rows)
    }

    /// [`Session::run`], also returning the tables and views the statement read.
    pub fn run_reading(&self, statement: &str, out: &mut Output) -> Result<(u64, Vec<String>)> {
        let format = format!("{:?}", out.format()).to_lowercase();
        let path = out.path().map(Path::to_owned);
        let record = Record { statement, format: &format, output: path.as_deref(), announce: true };
        self.audited(record, async |stream: SendableRecordBatchStream| {
            let mut stream = stream;
            let mut writer = out.begin(stream.schema())?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| query_error(statement, e))?;
                writer.write(&batch)?;
                self.rows_sent.fetch_add(batch.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            let rows = writer.finish()?;
            Ok((rows, rows))
        })
        .map(|(rows, read)| (rows, read.into_iter().collect()))
    }

    /// Run one query and return its whole result, audited like [`Session::run`]:
    /// for ladu's own aggregate queries, whose results are small and reach
    /// no one before their entry is written.
    pub fn collect(&self, statement: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let record = Record { statement, format: "arrow", output: None, announce: false };
        self.audited(record, async |stream: SendableRecordBatchStream| {
            let schema = stream.schema();
            let batches: Vec<RecordBatch> =
                stream.try_collect().await.map_err(|e: DataFusionError| query_error(statement, e))?;
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            Ok(((schema, batches), rows))
        })
        .map(|(result, _)| result)
    }

    /// Plan the statement, hand its result stream to `consume`, and audit it;
    /// returns `consume`'s value and the tables read. With `announce`, an
    /// entry (`outcome = "started"`) is durably in the log before `consume`
    /// sees the first row, and a failure to write it stops the statement;
    /// every statement ends with an entry of its outcome.
    fn audited<T>(
        &self,
        record: Record,
        consume: impl AsyncFnOnce(SendableRecordBatchStream) -> Result<(T, u64)>,
    ) -> Result<(T, BTreeSet<String>)> {
        let started = Instant::now();
        let mut read = BTreeSet::new();
        let mut started_seq = None;
        self.rows_sent.store(0, std::sync::atomic::Ordering::Relaxed);
        self.stops.running(true);
        // The time limit's watchdog: told the statement ended when `_ended` is dropped.
        let (_ended, ending) = std::sync::mpsc::channel::<()>();
        let (stops, timeout) = (Arc::clone(&self.stops), self.timeout);
        std::thread::spawn(move || {
            if ending.recv_timeout(timeout) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                stops.raise(Stop::Timeout(timeout));
            }
        });
        let result = self.runtime().block_on(async {
            let run = async {
                let stream = self.execute(record.statement, &mut read).await?;
                if record.announce {
                    let entry = self.entry(&record, &read, "started", 0, None);
                    started_seq = Some(self.audit.append(AUDIT_KIND, entry)?);
                }
                consume(self.detached(stream)).await
            };
            // Whichever ends first; the others, and the query's work, are dropped.
            let stop = tokio::select! {
                done = run => return done,
                stop = self.stops.wait() => stop,
            };
            let rows = self.rows_sent.load(std::sync::atomic::Ordering::Relaxed);
            Err(Error::Stopped { statement: record.statement.to_owned(), stop, rows })
        });
        if matches!(result, Err(Error::Stopped { .. }))
            && let Err(e) = self.renew_runtime()
        {
            tracing::warn!(error = %e, "the next statements share threads with the stopped one's work");
        }
        let (outcome, rows, problem) = match &result {
            Ok((_, rows)) => ("ok", *rows, None),
            Err(Error::Refused { reason, .. }) => ("refused", 0, Some(reason.clone())),
            Err(Error::Stopped { stop, rows, .. }) => (stop.outcome(), *rows, Some(stop.to_string())),
            Err(e) => ("error", 0, Some(e.to_string())),
        };
        let mut fields = self.entry(&record, &read, outcome, rows, problem.as_deref());
        fields.insert("duration_ms".into(), Value::from(started.elapsed().as_millis() as u64));
        if let Some(seq) = started_seq {
            fields.insert("started_seq".into(), Value::from(seq));
        }
        // Until its last entry is written, a signal does not end the process.
        let appended = self.audit.append(AUDIT_KIND, fields);
        self.stops.running(false);
        appended?;
        result.map(|(value, _)| (value, read))
    }

    /// The fields of a statement's audit entry.
    fn entry(
        &self,
        record: &Record,
        read: &BTreeSet<String>,
        outcome: &str,
        rows: u64,
        problem: Option<&str>,
    ) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("role".into(), Value::from(self.role.name.clone()));
        fields.insert("statement".into(), Value::from(redact(record.statement).into_owned()));
        fields.insert("tables".into(), Value::from(read.iter().cloned().collect::<Vec<_>>()));
        fields.insert("rows".into(), Value::from(rows));
        fields.insert("outcome".into(), Value::from(outcome));
        if let Some(p) = problem {
            fields.insert("error".into(), Value::from(redact(p).into_owned()));
        }
        fields.insert("warehouse_version".into(), Value::from(self.version));
        fields.insert("ran_on".into(), Value::from(self.ran_on.clone()));
        fields.insert("format".into(), Value::from(record.format));
        if let Some(p) = record.output {
            fields.insert("output".into(), Value::from(redact(&p.display().to_string()).into_owned()));
        }
        for (k, v) in &self.audit_fields {
            fields.insert(k.clone(), v.clone());
        }
        fields
    }

    /// Audit a session command answered outside the engine (`ladu serve`'s `SET`, `SHOW`, `BEGIN`, …).
    pub fn audit_command(&self, statement: &str, outcome: &str, problem: Option<&str>) -> Result<()> {
        let record = Record { statement, format: WIRE, output: None, announce: false };
        let entry = self.entry(&record, &BTreeSet::new(), outcome, 0, problem);
        self.audit.append(AUDIT_KIND, entry)?;
        Ok(())
    }

    /// Fields added to every audit entry from now on.
    pub fn set_audit_fields(&mut self, fields: Map<String, Value>) {
        self.audit_fields = fields;
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.stops))
    }

    /// Check and plan `statement` for later runs with parameters; a refused
    /// or failing statement is audited as `ladu sql` audits it.
    pub async fn prepare(&self, statement: &str) -> Result<Prepared> {
        let mut read = BTreeSet::new();
        let planned = self.plan(statement, &mut read).await;
        self.prepared(statement, planned, read, None)
    }

    /// [`Session::prepare`] for a statement already parsed, planned in `ctx`:
    /// a context beside the session's with no rows of the warehouse in it
    /// (`ladu serve`'s PostgreSQL catalog over empty tables of this role's).
    /// The same sandbox holds, and the statement may name, besides the
    /// role's tables, only what `ctx` has in `pg_catalog` and `information_schema`.
    pub async fn prepare_beside(&self, ctx: &SessionContext, statement: &str, parsed: DfStatement) -> Result<Prepared> {
        let mut read = BTreeSet::new();
        let planned = self.plan_parsed(ctx, statement, parsed, &mut read, true).await;
        self.prepared(statement, planned, read, Some(ctx.clone()))
    }

    /// Whether this role can read a table or view of this name.
    pub fn can_read(&self, name: &str) -> bool {
        self.catalog.contains_key(name)
    }

    /// The columns of a table or view this role can read, from a task.
    pub async fn schema_of(&self, name: &str) -> Option<SchemaRef> {
        if !self.catalog.contains_key(name) {
            return None;
        }
        Some(self.ctx.table_provider(name).await.ok()?.schema())
    }

    /// The threads' memory pool and spill folder statements of this session run with.
    pub fn runtime_env(&self) -> Arc<datafusion::execution::runtime_env::RuntimeEnv> {
        self.ctx.runtime_env()
    }

    fn prepared(
        &self,
        statement: &str,
        planned: Result<(LogicalPlan, bool)>,
        read: BTreeSet<String>,
        ctx: Option<SessionContext>,
    ) -> Result<Prepared> {
        match planned {
            Ok((plan, explain)) => Ok(Prepared { statement: statement.to_owned(), plan, explain, read, ctx }),
            Err(e) => {
                let record = Record { statement, format: WIRE, output: None, announce: false };
                let outcome = if matches!(e, Error::Refused { .. }) { "refused" } else { "error" };
                let problem = match &e {
                    Error::Refused { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let entry = self.entry(&record, &read, outcome, 0, Some(&problem));
                block_in_place(|| self.audit.append(AUDIT_KIND, entry))?;
                Err(e)
            }
        }
    }

    /// Run `prepared` with `parameters` bound (shown in the audit entry as
    /// `shown`, redacted): its `started` entry is in the log before this
    /// returns, and the statement is bounded by the time limit and the
    /// session's [`Stopper`] while its rows are taken.
    pub async fn start(
        &self,
        prepared: &Prepared,
        parameters: Vec<datafusion::scalar::ScalarValue>,
        shown: &[String],
    ) -> Result<Running> {
        let started = Instant::now();
        self.stops.running(true);
        let statement = prepared.statement.as_str();
        let record = Record { statement, format: WIRE, output: None, announce: true };
        let mut base = self.entry(&record, &prepared.read, "started", 0, None);
        if !shown.is_empty() {
            let shown: Vec<Value> = shown.iter().map(|p| Value::from(redact(p).into_owned())).collect();
            base.insert("parameters".into(), Value::from(shown));
        }
        let run = async {
            let failed = |e: DataFusionError| query_error(statement, e);
            let plan = if parameters.is_empty() {
                prepared.plan.clone()
            } else {
                prepared.plan.clone().with_param_values(parameters).map_err(failed)?
            };
            let ctx = prepared.ctx.as_ref().unwrap_or(&self.ctx);
            let frame = ctx.execute_logical_plan(plan).await.map_err(failed)?;
            let task = frame.task_ctx();
            let physical = frame.create_physical_plan().await.map_err(failed)?;
            // Operators start their tasks as the plan is executed: on the engine's
            // threads, not the caller's (`ladu serve`'s connections).
            let stream = {
                let _engine = self.runtime().enter();
                datafusion::physical_plan::execute_stream(physical, Arc::new(task)).map_err(failed)?
            };
            Ok::<_, Error>(self.shown_plan(stream, prepared.explain))
        };
        let stream = match run.await {
            Ok(stream) => stream,
            Err(e) => {
                self.stops.running(false);
                let mut entry = base;
                entry.insert("outcome".into(), Value::from("error"));
                entry.insert("error".into(), Value::from(redact(&e.to_string()).into_owned()));
                block_in_place(|| self.audit.append(AUDIT_KIND, entry))?;
                return Err(e);
            }
        };
        let seq = block_in_place(|| self.audit.append(AUDIT_KIND, base.clone()));
        let seq = match seq {
            Ok(seq) => seq,
            Err(e) => {
                self.stops.running(false);
                return Err(e.into());
            }
        };
        base.insert("started_seq".into(), Value::from(seq));
        let schema = stream.schema();
        let ending =
            Ending { audit: self.audit.clone(), fields: Some(base), started, rows: 0, stops: Arc::clone(&self.stops) };
        let state = Streaming {
            batches: self.detached(stream),
            ending,
            deadline: tokio::time::Instant::now() + self.timeout,
            timeout: self.timeout,
            statement: statement.to_owned(),
        };
        let batches = futures::stream::unfold(Some(state), |state| async move {
            let mut st = state?;
            let next = tokio::select! {
                biased;
                stop = st.ending.stops.wait() => Err(stop),
                _ = tokio::time::sleep_until(st.deadline) => Err(Stop::Timeout(st.timeout)),
                batch = st.batches.next() => Ok(batch),
            };
            match next {
                Ok(Some(Ok(batch))) => {
                    st.ending.rows += batch.num_rows() as u64;
                    Some((Ok(batch), Some(st)))
                }
                Ok(Some(Err(e))) => {
                    let e = query_error(&st.statement, e);
                    let _ = st.ending.finish("error", Some(&e.to_string()));
                    Some((Err(e), None))
                }
                Ok(None) => match st.ending.finish("ok", None) {
                    Ok(()) => None,
                    Err(e) => Some((Err(e.into()), None)),
                },
                Err(stop) => {
                    let _ = st.ending.finish(stop.outcome(), Some(&stop.to_string()));
                    let rows = st.ending.rows;
                    Some((Err(Error::Stopped { statement: st.statement.clone(), stop, rows }), None))
                }
            }
        });
        Ok(Running { schema, batches: Box::pin(batches) })
    }

    /// The lineage of each column of `statement`'s result, and the columns its
    /// joins equate ([`lineage`]), checked and planned as [`Session::run`]
    /// would, without running it.
    pub fn trace(&self, statement: &str) -> Result<lineage::Traced> {
        let (plan, _) = self.runtime().block_on(self.plan(statement, &mut BTreeSet::new()))?;
        Ok(lineage::trace(&plan))
    }

    /// Check and plan one statement; returns its result stream.
    async fn execute(&self, statement: &str, read: &mut BTreeSet<String>) -> Result<SendableRecordBatchStream> {
        let failed = |e: DataFusionError| query_error(statement, e);
        let (plan, explain) = self.plan(statement, read).await?;
        let frame = self.ctx.execute_logical_plan(plan).await.map_err(failed)?;
        let stream = frame.execute_stream().await.map_err(failed)?;
        Ok(self.shown_plan(stream, explain))
    }

    /// An `EXPLAIN`'s plan as the role may see it: nothing of the scans beneath its restrictions.
    fn shown_plan(&self, stream: SendableRecordBatchStream, explain: bool) -> SendableRecordBatchStream {
        if self.role.sees_everything() || !explain {
            return stream;
        }
        let schema = stream.schema();
        let hidden = stream.map(|batch| {
            let batch = batch?;
            let columns = batch
                .columns()
                .iter()
                .map(|c| match c.as_string_opt::<i32>() {
                    Some(text) => Arc::new(
                        text.iter().map(|v| v.map(sandbox::hide_beneath_role_filters)).collect::<StringArray>(),
                    ) as ArrayRef,
                    None => c.clone(),
                })
                .collect();
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, hidden))
    }

    /// Check one statement and plan it; returns the plan and whether it is an `EXPLAIN`.
    async fn plan(&self, statement: &str, read: &mut BTreeSet<String>) -> Result<(LogicalPlan, bool)> {
        let state = self.ctx.state();
        let parsed = state
            .sql_to_statement(statement, &state.config().options().sql_parser.dialect)
            .map_err(|e| query_error(statement, e))?;
        self.plan_parsed(&self.ctx, statement, parsed, read, false).await
    }

    /// Check a parsed statement and plan it in `ctx`; `beside` says that `ctx`
    /// is a context beside the session's ([`Session::prepare_beside`]).
    async fn plan_parsed(
        &self,
        ctx: &SessionContext,
        statement: &str,
        parsed: DfStatement,
        read: &mut BTreeSet<String>,
        beside: bool,
    ) -> Result<(LogicalPlan, bool)> {
        // Errors quote the statement as typed: the audit entry, and whoever prints them, redact it.
        let shown = || statement.to_owned();
        let failed = |e: DataFusionError| query_error(statement, e);
        let refused = |reason: String| Error::Refused { statement: shown(), reason };
        let state = ctx.state();
        if let Some(reason) = sandbox::refusal(&parsed) {
            return Err(refused(reason));
        }
        let restricted = !self.role.sees_everything();
        if restricted && let Some(what) = sandbox::plan_detail(&parsed) {
            return Err(refused(format!("{what}, so role {} may not run it (plain `EXPLAIN` may)", self.role.name)));
        }
        let explain = sandbox::explains(&parsed);
        for reference in state.resolve_table_references(&parsed).map_err(failed)? {
            let name = reference.table();
            let schema = reference.schema();
            if beside && self.catalog.contains_key(name) && schema.is_none_or(|s| s == "public") {
                // Its tables there are empty: an answer from them would look like the warehouse's.
                return Err(refused(format!(
                    "a statement on pg_catalog reads no table of the warehouse (`{name}`): query it on its own"
                )));
            }
            if schema.is_some_and(|s| s == "information_schema") || self.catalog.contains_key(name) {
                continue;
            }
            if beside && schema.is_some_and(|s| s == "pg_catalog") {
                continue;
            }
            if let Some(table) = self.waiting.get(name) {
                return Err(Error::NoData { table: table.clone(), statement: shown() });
            }
            if self.everything.contains(name) {
                return Err(refused(format!("role {} may not read `{name}`", self.role.name)));
            }
            if self.empty.contains(name.strip_suffix(tables::HISTORY_SUFFIX).unwrap_or(name)) {
                return Err(Error::NoData { table: name.to_owned(), statement: shown() });
            }
            if sandbox::names_a_file(&reference) {
                return Err(refused(format!("`{reference}` is a file or URL, not a table")));
            }
        }
        let plan = state.statement_to_plan(parsed).await.map_err(failed)?;
        sandbox::sql_options().verify_plan(&plan).map_err(|e| refused(e.strip_backtrace().to_string()))?;
        tables_read(&plan, read);
        Ok((plan, explain))
    }
}

impl Drop for Session {
    /// A stopped statement's work may be inside a step that runs for minutes
    /// without yielding: the session ends without waiting for it.
    fn drop(&mut self) {
        let runtime = self.runtime.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(Ok(runtime)) = runtime.map(Arc::try_unwrap) {
            runtime.shutdown_background();
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `format` of a statement's audit entry when its rows went over the wire.
const WIRE: &str = "wire";

/// Run blocking work (an audit entry's fsync) from a task of the engine.
fn block_in_place<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A running statement for [`Session::start`]'s stream.
struct Streaming {
    batches: SendableRecordBatchStream,
    ending: Ending,
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
    statement: String,
}

/// Writes a started statement's last audit entry, once: when it ends, or
/// (as interrupted) when dropped before.
struct Ending {
    audit: AuditLog,
    /// The `started` entry's fields; taken when the last entry is written.
    fields: Option<Map<String, Value>>,
    started: Instant,
    rows: u64,
    stops: Arc<StopFlag>,
}

impl Ending {
    fn finish(&mut self, outcome: &str, problem: Option<&str>) -> Result<(), crate::audit::Error> {
        let Some(mut fields) = self.fields.take() else { return Ok(()) };
        self.stops.running(false);
        fields.insert("outcome".into(), Value::from(outcome));
        fields.insert("rows".into(), Value::from(self.rows));
        fields.insert("duration_ms".into(), Value::from(self.started.elapsed().as_millis() as u64));
        if let Some(p) = problem {
            fields.insert("error".into(), Value::from(redact(p).into_owned()));
        }
        block_in_place(|| self.audit.append(AUDIT_KIND, fields)).map(drop)
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if self.fields.is_some()
            && let Err(e) = self.finish(
                "interrupted",
                Some("its result was not taken to the end (the client left, or a limit of the server ended it)"),
            )
        {
            tracing::error!(error = %e, "cannot audit the end of a statement");
        }
    }
}

/// What a statement's audit entries record besides its outcome.
struct Record<'a> {
    statement: &'a str,
    format: &'a str,
    output: Option<&'a Path>,
    /// Write an entry before the result is consumed.
    announce: bool,
}

/// The runtime statements run on.
fn new_runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("ladu-sql")
        // Timers for statement time limits; I/O for `ladu serve`'s connections.
        .enable_all()
        .build()
        .map_err(|e| Error::Engine(e.to_string()))
}

/// A failed statement: DataFusion's message, with advice where there is some.
fn query_error(statement: &str, e: DataFusionError) -> Error {
    let advice = match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => {
            "\n  (the query needs more memory than `sql.memory_limit` allows; raise it in the config)"
        }
        _ => "",
    };
    Error::Query { statement: statement.to_owned(), source: e, advice }
}

/// The newest manifest, and the role called `name` (the default role when `None`) of the roles file.
fn latest_as(settings: &Settings, name: Option<&str>) -> Result<(manifest::Manifest, Role)> {
    let manifest = manifest::load_latest(&settings.paths.warehouse)?;
    let roles = roles::Roles::load(&settings.sql.roles_file, &table_names(settings, &manifest))?;
    let role = roles.role(name)?;
    Ok((manifest, role))
}

/// Configured tables and committed ones (a source may have been retired).
fn table_names(settings: &Settings, manifest: &manifest::Manifest) -> Vec<String> {
    let mut names: Vec<String> = settings.sources.iter().map(|s| s.table.clone()).collect();
    names.extend(manifest.tables.keys().cloned());
    names.sort();
    names.dedup();
    names
}

/// Is `name` the `_history` name of a statistic (which has none)?
fn statistic_history(manifest: &manifest::Manifest, name: &str) -> bool {
    name.strip_suffix(tables::HISTORY_SUFFIX)
        .and_then(|base| manifest.tables.get(base))
        .is_some_and(|t| t.statistic.is_some())
}

pub use output::{Format, Output};

/// The superseded rows of each table whose records have versions.
async fn find_superseded(
    ctx: &SessionContext,
    root: &std::path::Path,
    manifest: &manifest::Manifest,
    committed: &BTreeMap<String, Arc<tables::CommittedTable>>,
) -> Result<BTreeMap<String, versions::Superseded>> {
    let mut found = BTreeMap::new();
    for (name, table) in committed {
        let Some(t) = manifest.tables.get(name) else { continue };
        if tables::has_versions(&table.schema()) {
            let s = versions::find(ctx, root, name, t, table.clone())
                .await
                .map_err(|source| Error::Table { table: name.clone(), source })?;
            found.insert(name.clone(), s);
        }
    }
    Ok(found)
}

/// Register each committed table the role may read, as `<table>_history` and
/// `<table>`, wrapped in the role's restriction (and, for a release, with its
/// pseudonyms recoded by `recode`); returns the catalog entries.
fn register_tables(
    ctx: &SessionContext,
    settings: &Settings,
    manifest: &manifest::Manifest,
    committed: &BTreeMap<String, Arc<tables::CommittedTable>>,
    superseded: &BTreeMap<String, versions::Superseded>,
    role: &Role,
    recode: Option<&Arc<Pseudonymiser>>,
) -> Result<BTreeMap<String, (Kind, String)>> {
    let descriptions: HashMap<&str, &str> =
        settings.sources.iter().map(|s| (s.table.as_str(), s.description.as_str())).collect();
    let mut catalog = BTreeMap::new();
    for (name, table) in committed {
        let recode = match recode {
            None => None,
            Some(pseudonymiser) => match settings.sources.iter().find(|s| &s.table == name) {
                Some(source) => Some(restrict::Recode {
                    columns: source.pseudonym_columns().map(str::to_owned).collect(),
                    pseudonymiser: pseudonymiser.clone(),
                }),
                // Which columns hold pseudonyms is not known: not for release.
                None => continue,
            },
        };
        let schema = table.schema();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let Access::Visible { hidden_columns, condition } = role.access(name, &columns) else { continue };
        let table_error = |source: DataFusionError| Error::Table { table: name.clone(), source };
        let condition = match condition {
            None => None,
            Some(c) => Some(condition_expr(ctx, schema.clone(), &c).map_err(|e| {
                Error::Roles(roles::Error::Invalid {
                    path: settings.sql.roles_file.clone(),
                    problems: vec![format!("row_filter for {name}: {}", e.strip_backtrace())],
                })
            })?),
        };
        let origin =
            |table: &str| codec::TableOrigin { table: table.to_owned(), role: role.clone(), version: manifest.version };
        let restricted = |inner: Arc<dyn TableProvider>, table: &str| {
            restrict::Restricted::new(inner, &hidden_columns, condition.clone(), &role.name, recode.as_ref())
                .map(|r| r.with_origin(origin(table)))
                .map_err(table_error)
        };
        if let Some(statistic) = manifest.tables.get(name).and_then(|t| t.statistic.as_ref()) {
            // A snapshot replaced whole at each `ladu stats`: no versions, no history.
            let table: Arc<dyn TableProvider> = table.clone();
            ctx.register_table(name.as_str(), Arc::new(restricted(table, name)?)).map_err(table_error)?;
            catalog.insert(name.clone(), (Kind::Statistic, statistic.description.clone()));
            continue;
        }
        let description = descriptions.get(name.as_str()).copied().unwrap_or("").to_owned();
        let history_name = format!("{name}{}", tables::HISTORY_SUFFIX);
        let history: Arc<dyn TableProvider> = table.clone();
        ctx.register_table(history_name.as_str(), Arc::new(restricted(history.clone(), &history_name)?))
            .map_err(table_error)?;
        catalog.insert(history_name.clone(), (Kind::History, format!("{description} (every version)")));
        if condition.is_some() && tables::has_versions(&schema) {
            // Newest among the rows the role may see: another provider's later
            // row of the same record neither hides a row of this role's nor names it.
            let visible: Arc<dyn TableProvider> = Arc::new(
                restrict::Restricted::new(history, &[], condition.clone(), &role.name, recode.as_ref())
                    .map_err(table_error)?,
            );
            let columns: Vec<Expr> =
                schema.fields().iter().map(|f| Expr::Column(Column::new_unqualified(f.name()))).collect();
            let newest = LogicalPlanBuilder::scan(history_name.as_str(), provider_as_source(visible), None)
                .and_then(|b| b.window(vec![tables::version_rank()?]))
                .and_then(|b| b.filter(col(tables::VERSION_RANK).eq(lit(1u64))))
                .and_then(|b| b.project(columns))
                .and_then(LogicalPlanBuilder::build)
                .map_err(table_error)?;
            let newest: Arc<dyn TableProvider> = Arc::new(ViewTable::new(newest, None));
            let shown = restrict::Restricted::new(newest, &hidden_columns, None, &role.name, None)
                .map_err(table_error)?
                .with_origin(origin(name));
            ctx.register_table(name.as_str(), Arc::new(shown)).map_err(table_error)?;
            catalog.insert(name.clone(), (Kind::Table, description));
        } else if let Some(superseded) = superseded.get(name) {
            let scan = |t: Arc<dyn TableProvider>| {
                LogicalPlanBuilder::scan(history_name.as_str(), provider_as_source(t), None)
                    .and_then(LogicalPlanBuilder::build)
            };
            // Files none of whose rows can be superseded are read as they are; only the others
            // are checked against the superseded rows (at 100M rows with 1 % corrections in the
            // last delivery: 1.74 s -> 0.17 s for a count).
            let split =
                if superseded.is_empty() { (None, None) } else { table.split_by_commits(&superseded.commits()) };
            let newest = match split {
                _ if superseded.is_empty() => scan(history),
                (Some(clean), Some(involved)) => scan(Arc::new(involved))
                    .and_then(|involved| superseded.remove_from(involved))
                    .and_then(|involved| LogicalPlanBuilder::from(scan(Arc::new(clean))?).union(involved)?.build()),
                (Some(clean), None) => scan(Arc::new(clean)),
                (None, _) => scan(history).and_then(|history| superseded.remove_from(history)),
            }
            .map_err(table_error)?;
            let newest: Arc<dyn TableProvider> = Arc::new(ViewTable::new(newest, None));
            ctx.register_table(name.as_str(), Arc::new(restricted(newest, name)?)).map_err(table_error)?;
            catalog.insert(name.clone(), (Kind::Table, description));
        }
    }
    Ok(catalog)
}

/// A DataFusion context with ladu's limits: bounded memory that spills, no
/// URL tables, no table functions, no table factories.
fn new_context(
    settings: &Settings,
    env: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> Result<SessionContext> {
    let pool = Arc::clone(&env.memory_pool);
    let ctx = SessionContext::new_with_state(ladu_state(settings, session_config(settings), env));
    sandbox::remove_unoffered_functions(&ctx, &[]);
    limits::cap_values(&ctx, pool, settings.sql.max_value_bytes);
    Ok(ctx)
}

/// ladu's settings of a DataFusion session.
fn session_config(settings: &Settings) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(settings.sql.target_partitions)
        .with_batch_size(BATCH_SIZE);
    // Memory a sort keeps back for merging what it spilled: DataFusion's 10 MiB, but at most
    // a sixteenth of the limit, so that small limits spill rather than fail.
    let reservation = (settings.sql.memory_limit / 16).min(10 << 20) as usize;
    config.options_mut().execution.sort_spill_reservation_bytes = reservation;
    config
}

/// A session state with ladu's rules and limits (no tables; every function DataFusion has).
fn ladu_state(
    settings: &Settings,
    config: SessionConfig,
    env: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> datafusion::execution::SessionState {
    let pseudonym_columns = settings
        .sources
        .iter()
        .flat_map(|s| s.pseudonym_columns().map(move |c| (s.table.as_str(), c)))
        .flat_map(|(table, c)| {
            [(table.to_owned(), c.to_owned()), (format!("{table}{}", tables::HISTORY_SUFFIX), c.to_owned())]
        })
        .collect();
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(env)
        .with_default_features()
        // Before DataFusion's rules: its simplifier makes the `starts_with` a `LIKE` that prunes.
        .with_optimizer_rules(
            std::iter::once(Arc::new(prefix_match::PrefixMatch) as Arc<dyn OptimizerRule + Send + Sync>)
                .chain(datafusion::optimizer::Optimizer::new().rules)
                .collect(),
        )
        .with_optimizer_rule(Arc::new(pseudonym_keys::PseudonymGroupKeys::new(pseudonym_columns)))
        .with_optimizer_rule(Arc::new(date_trunc::DateTrunc))
        .with_table_functions(HashMap::new())
        .with_table_factories(HashMap::new())
        .with_physical_optimizer_rule(Arc::new(single_phase::SinglePhase))
        .with_physical_optimizer_rule(Arc::new(partition_groups::PartitionGroups))
        .with_physical_optimizer_rule(Arc::new(dictionary_groups::DictionaryGroups))
        .with_physical_optimizer_rule(Arc::new(dictionary_exprs::DictionaryExpressions))
        .with_physical_optimizer_rule(Arc::new(prefix_filter::PrefixFilter))
        .with_physical_optimizer_rule(Arc::new(packed_sort::PackedSort))
        .with_physical_optimizer_rule(Arc::new(sorted_window::SortedWindow))
        .with_physical_optimizer_rule(Arc::new(semi_join::DistinctSemiJoinBuild))
        .with_physical_optimizer_rule(Arc::new(limits::Interruptible))
        .with_physical_optimizer_rule(Arc::new(limits::BoundedRecursion {
            max_depth: settings.sql.max_recursion_depth,
        }))
        // Last: the plan it shares is final.
        .with_physical_optimizer_rule(Arc::new(shared_work::SharedWork))
        .build();
    // In place of DataFusion's `median` (same name): grouped amounts kept in 8 bytes. A registry
    // insert, which does not fail; a failure would only leave DataFusion's own.
    if let Err(e) =
        datafusion::execution::FunctionRegistry::register_udaf(&mut state, compact_median::CompactMedian::udaf())
    {
        tracing::warn!("median keeps amounts in 16 bytes: {e}");
    }
    state
}

/// The memory pool (bounded, spilling) and spill folder of an engine.
fn new_env(settings: &Settings) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let disk = match &settings.sql.spill_dir {
        Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
        None => DiskManagerMode::OsTmpDirectory,
    };
    let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(settings.sql.memory_limit as usize));
    RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(disk))
        .build_arc()
        .map_err(|e| Error::Engine(e.to_string()))
}

/// A role's row condition as an expression over the table's columns.
fn condition_expr(ctx: &SessionContext, schema: SchemaRef, c: &Condition) -> Result<Expr, DataFusionError> {
    match c {
        Condition::Sql(text) => ctx.parse_sql_expr(text, &DFSchema::try_from(schema)?),
        Condition::CodeIn { columns, code } => Ok(columns
            .iter()
            .map(|c| col(c.as_str()).eq(lit(code.as_str())))
            .reduce(Expr::or)
            .expect("a condition names at least one column")),
    }
}

/// Names of the tables and views a plan reads, subqueries included.
fn tables_read(plan: &LogicalPlan, into: &mut BTreeSet<String>) {
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            into.insert(scan.table_name.to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
}
