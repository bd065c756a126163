//! `ladu cluster scheduler` and `ladu cluster executor`: Ballista's scheduler and executor, embedded, running ladu's plans.
//!
//! Both are Ballista's own (the ballista crates, on ladu's DataFusion),
//! with what ladu adds registered: the scheduler rebuilds a plan's warehouse
//! tables from the shared warehouse ([`sql::remote::WarehouseTables`]) and
//! plans with ladu's rules; executors run stages with ladu's operators and
//! capped functions under one memory pool. Tasks are pulled by executors
//! (Ballista's pull-staged policy): the scheduler never dials an executor, and
//! holds an idle executor's poll until a stage is runnable ([`long_poll`]).
//! Neither node ever loads the key: none of what they run needs it.

mod long_poll;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::error::BallistaError;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_core::utils::create_grpc_server;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::flight_service::BallistaFlightService;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::create_scheduler;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tokio::sync::Notify;

use self::long_poll::LongPoll;
use crate::config::Settings;
use crate::config::cluster::Endpoint;
use crate::sql;
use crate::sql::codec::{LogicalCodec, PhysicalCodec};
use crate::sql::remote::{Tls, WarehouseTables, executor_functions, node_state};

/// Seconds after a job ends before its shuffle files and result are removed
/// from the executors: the time a client has to take the result.
const JOB_DATA_KEPT_SECONDS: u64 = 60;
/// An executor reports every so many seconds; one silent for `EXECUTOR_TIMEOUT_SECONDS` is lost
/// and its tasks run again elsewhere.
const HEARTBEAT_SECONDS: u64 = 2;
const EXECUTOR_TIMEOUT_SECONDS: u64 = 6;
/// Job folders an executor still holds this long after their last change are removed
/// (for jobs whose end it was never told of).
const STALE_JOB_SECONDS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sql(#[from] sql::Error),
    #[error("the {node} stopped: {message}")]
    Ballista { node: &'static str, message: String },
    #[error("cannot prepare the executor's work folder {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the {0}'s threads: {1}")]
    Runtime(&'static str, std::io::Error),
    #[error("give the scheduler's address: `--scheduler df://host:port`, or `cluster.scheduler` in the config")]
    NoScheduler,
    #[error(
        "under TLS an executor listening on every address needs `--advertise HOST`: the name its certificate holds"
    )]
    NoAdvertise,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Run a scheduler listening on `listen` until SIGTERM or SIGINT.
pub fn scheduler(settings: &Settings, listen: SocketAddr, advertise: Option<String>) -> Result<()> {
    let tls = settings.cluster.tls.as_ref().map(Tls::load).transpose()?;
    let tables = Arc::new(WarehouseTables::new(settings)?);
    let runtime = runtime("scheduler")?;
    let failed = |e: ballista_core::error::BallistaError| Error::Ballista { node: "scheduler", message: e.to_string() };
    // Planning only: executors run the plans, under their own pools.
    let env = RuntimeEnvBuilder::new().build_arc().map_err(|e| sql::Error::Engine(e.to_string()))?;
    let node_settings = settings.clone();
    let mut config = SchedulerConfig {
        bind_host: listen.ip().to_string(),
        bind_port: listen.port(),
        external_host: advertise.unwrap_or_else(|| listen.ip().to_string()),
        scheduling_policy: TaskSchedulingPolicy::PullStaged,
        finished_job_data_clean_up_interval_seconds: JOB_DATA_KEPT_SECONDS,
        executor_timeout_seconds: EXECUTOR_TIMEOUT_SECONDS,
        expire_dead_executor_interval_seconds: HEARTBEAT_SECONDS,
        no_executors_grace_period_seconds: EXECUTOR_TIMEOUT_SECONDS,
        ..SchedulerConfig::default()
    };
    config.override_logical_codec = Some(Arc::new(LogicalCodec::rebuilding(Arc::clone(&tables) as _)));
    config.override_physical_codec = Some(Arc::new(PhysicalCodec::default()));
    config.override_session_builder =
        Some(Arc::new(move |config: SessionConfig| Ok(node_state(&node_settings, config, Arc::clone(&env)))));
    let work = Arc::new(Notify::new());
    config.on_work_available = Some(long_poll::on_work_available(Arc::clone(&work)));
    let served = runtime.block_on(async {
        let failed_server = |e: tonic::transport::Error| Error::Ballista { node: "scheduler", message: e.to_string() };
        let cluster = BallistaCluster::new_from_config(&config).await.map_err(failed)?;
        let (decoding, encoding) =
            (config.grpc_server_max_decoding_message_size, config.grpc_server_max_encoding_message_size);
        let server: SchedulerServer<LogicalPlanNode, PhysicalPlanNode> =
            create_scheduler(cluster, Arc::new(config)).await.map_err(failed)?;
        // Ballista's service behind tonic's own server, which has TLS, and behind long polls.
        let service = SchedulerGrpcServer::new(LongPoll::new(server, work))
            .max_decoding_message_size(decoding as usize)
            .max_encoding_message_size(encoding as usize);
        let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
        if let Some(tls) = &tls {
            builder = builder.tls_config(tls.server()).map_err(failed_server)?;
        }
        tracing::info!(%listen, tls = tls.is_some(), "cluster scheduler listening");
        let served = builder.add_service(service).serve_with_shutdown(listen, stopped()).await.map_err(failed_server);
        tracing::info!("cluster scheduler stopped");
        served
    });
    // The runtime's tasks hold the tables too; they go first, and the tables (with their
    // own runtime, which may not be dropped from a task) after, outside any runtime.
    drop(runtime);
    drop(tables);
    served
}

/// What an executor is told on the command line.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Its Arrow Flight port (shuffle files and results).
    pub listen: SocketAddr,
    /// The host name others reach it by; its listen address if unset (for a wildcard one, the address it connects from).
    pub advertise: Option<String>,
    /// `cluster.scheduler` if unset.
    pub scheduler: Option<Endpoint>,
    /// `cluster.work_dir` if unset.
    pub work_dir: Option<PathBuf>,
    /// Tasks it runs at once.
    pub slots: usize,
}

/// Run an executor until SIGTERM or SIGINT; then it finishes its tasks and removes its shuffle files.
pub fn executor(settings: &Settings, options: ExecutorOptions) -> Result<()> {
    let scheduler = options.scheduler.or_else(|| settings.cluster.scheduler.clone()).ok_or(Error::NoScheduler)?;
    let (work_dir, made) = work_dir(options.work_dir.or_else(|| settings.cluster.work_dir.clone()))?;
    let limit = settings.cluster.executor_memory_limit.unwrap_or(settings.sql.memory_limit);
    // One pool for every task of this executor, which the capped functions take from too.
    let env = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(limit as usize)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![work_dir.join("spill")])),
        )
        .build_arc()
        .map_err(|e| sql::Error::Engine(e.to_string()))?;
    let functions = executor_functions(settings, Arc::clone(&env));
    let runtime = runtime("executor")?;
    let work = work_dir.to_string_lossy().into_owned();
    // The name others reach it by: given, or the address it listens on. Left to the scheduler
    // (the address it connects from) only for a wildcard address, and never under TLS, whose
    // scheduler cannot see that address and whose certificates must name the host.
    let advertise = options.advertise.or_else(|| {
        let ip = options.listen.ip();
        (!ip.is_unspecified()).then(|| ip.to_string())
    });
    if advertise.is_none() && settings.cluster.tls.is_some() {
        return Err(Error::NoAdvertise);
    }
    let mut config = ExecutorProcessConfig {
        bind_host: options.listen.ip().to_string(),
        external_host: advertise,
        port: options.listen.port(),
        scheduler_host: scheduler.host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        scheduler_port: scheduler.port,
        vcores: options.slots,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: Some(work),
        job_data_ttl_seconds: STALE_JOB_SECONDS,
        job_data_clean_up_interval_seconds: JOB_DATA_KEPT_SECONDS,
        executor_heartbeat_interval_seconds: HEARTBEAT_SECONDS,
        // Unbounded here: the runtime below brings the bounded pool.
        memory_pool_size: Some(0),
        override_function_registry: Some(Arc::new(functions)),
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| Ok(Arc::clone(&env)))),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    if let Some(tls) = settings.cluster.tls.as_ref().map(Tls::load).transpose()? {
        // Its shuffle reads from other executors, its polls of the scheduler, its Flight service.
        let session = tls.on_client(SessionConfig::new_with_ballista());
        config.override_config_producer = Some(Arc::new(move || session.clone()));
        config.override_create_grpc_client_endpoint = Some(tls.endpoints());
        config.override_arrow_flight_service = Some(Arc::new(move |work_dir, address, mut shutdown, grpc| {
            let server = create_grpc_server(&grpc).tls_config(tls.server());
            tokio::spawn(async move {
                server?
                    .add_service(FlightServiceServer::new(BallistaFlightService::new(work_dir)))
                    .serve_with_shutdown(address, async move { shutdown.recv().await })
                    .await
                    .map_err(BallistaError::TonicError)
            })
        }));
    }
    tracing::info!(listen = %options.listen, %scheduler, work_dir = %work_dir.display(), "cluster executor starting");
    let ran = runtime.block_on(start_executor_process(Arc::new(config)));
    if made {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    ran.map_err(|e| Error::Ballista { node: "executor", message: e.to_string() })
}

/// The executor's work folder, readable by its user alone, and whether it was made here (to be removed at the end).
fn work_dir(configured: Option<PathBuf>) -> Result<(PathBuf, bool)> {
    use std::os::unix::fs::DirBuilderExt;
    let (dir, made) = match configured {
        Some(dir) => (dir, false),
        None => (std::env::temp_dir().join(format!("ladu-executor-{}", std::process::id())), true),
    };
    let failed = |source| Error::WorkDir { path: dir.clone(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(failed)?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join("spill")).map_err(failed)?;
    Ok((dir, made))
}

fn runtime(node: &'static str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(format!("ladu-{node}"))
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(node, e))
}

/// Resolves at SIGTERM or SIGINT.
async fn stopped() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
