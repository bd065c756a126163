//! Sessions whose queries run on a Ballista cluster, and what its scheduler and executors build to run them as ladu would.
//!
//! The client keeps everything of a session but execution: the sandbox,
//! the role's catalog, planning and the audit entries. Its plans go to the
//! scheduler with each warehouse table as a [`TableOrigin`]; the scheduler
//! rebuilds those tables from the shared warehouse ([`WarehouseTables`]) and
//! plans physically with ladu's rules ([`node_state`]); executors run the
//! stages with ladu's operators and capped functions ([`executor_functions`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use ballista_core::extension::{EndpointOverrideFn, SessionConfigExt, SessionStateExt};
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::prelude::{SessionConfig, SessionContext};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::codec::{LogicalCodec, PhysicalCodec, TableOrigin, Tables};
use super::roles::Role;
use super::{
    Engine, Error, Result, Snapshot, dictionary_exprs, dictionary_groups, limits, new_context, register_tables,
    sandbox, shared_work,
};
use crate::config::Settings;
use crate::config::cluster::{ClusterTls, Endpoint};
use crate::warehouse::manifest;

/// How long a client waits for the scheduler to answer its first connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Warehouse versions, and roles' catalogs, a scheduler keeps built.
const KEPT: usize = 16;

/// `ctx` (new, no tables yet) with its queries run on the cluster's scheduler at `endpoint`.
pub(super) fn upgrade(ctx: SessionContext, settings: &Settings, endpoint: &Endpoint) -> Result<SessionContext> {
    let tls = settings.cluster.tls.as_ref().map(Tls::load).transpose()?;
    reachable(endpoint)?;
    let state = ctx.state();
    let pool = Arc::clone(&state.runtime_env().memory_pool);
    let mut config = state.config().clone();
    if let Some(tls) = &tls {
        config = tls.on_client(config);
    }
    let config = distributable(config)
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()))
        .with_ballista_job_name("ladu")
        // Ballista's adaptive planner answered a UNION ALL of aggregates with some of its rows
        // repeated (measured); the static planner answers as a local session does.
        .with_ballista_adaptive_query_planner(false);
    let state = SessionStateBuilder::new_from_existing(state).with_config(config).build();
    let state = state
        .upgrade_for_ballista(endpoint.url(tls.is_some()))
        .map_err(|e| Error::Engine(format!("cannot set up the session for the cluster: {e}")))?;
    let ctx = SessionContext::new_with_state(state);
    // The upgrade brought back every function DataFusion has: the session offers ladu's set, capped.
    sandbox::remove_unoffered_functions(&ctx, &[]);
    limits::cap_values(&ctx, pool, settings.sql.max_value_bytes);
    Ok(ctx)
}

/// The cluster's mutual TLS, read from its PEM files: every connection
/// between ladu and the nodes presents this node's certificate and accepts
/// only a peer whose certificate the CA signed.
#[derive(Clone)]
pub struct Tls {
    ca: Certificate,
    identity: Identity,
}

impl Tls {
    pub fn load(files: &ClusterTls) -> Result<Tls> {
        let read = |path: &Path| {
            let failed = |problem: String| Error::ClusterTls { path: path.to_owned(), problem };
            let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
            if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(failed("not a PEM file".into()));
            }
            Ok(bytes)
        };
        let ca = Certificate::from_pem(read(&files.ca_certificate)?);
        let identity = Identity::from_pem(read(&files.certificate)?, read(&files.private_key)?);
        Ok(Tls { ca, identity })
    }

    /// What the servers of a node (the scheduler's gRPC, an executor's Flight) accept.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone()).client_ca_root(self.ca.clone())
    }

    /// Every gRPC connection a node or ladu opens: over TLS with this node's certificate.
    /// Ballista dials the scheduler from an executor as `http://`: that becomes `https://` here.
    pub fn endpoints(&self) -> EndpointOverrideFn {
        let tls = ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone());
        Arc::new(move |endpoint: tonic::transport::Endpoint| {
            let endpoint = match endpoint.uri().to_string().strip_prefix("http://") {
                Some(rest) => tonic::transport::Endpoint::from_shared(format!("https://{rest}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true),
                None => endpoint,
            };
            Ok(endpoint.tls_config(tls.clone())?)
        })
    }

    /// `config` of a session whose connections (to the scheduler, to executors for results and shuffles) use TLS.
    pub fn on_client(&self, config: SessionConfig) -> SessionConfig {
        config.with_ballista_use_tls(true).with_ballista_override_create_grpc_client_endpoint(self.endpoints())
    }
}

/// Fails at once, with [`Error::Unreachable`], if nothing answers at the scheduler's address.
fn reachable(endpoint: &Endpoint) -> Result<()> {
    use std::net::ToSocketAddrs;
    let unreachable = |problem: String| Error::Unreachable { scheduler: endpoint.to_string(), problem };
    let host = endpoint.host.trim_start_matches('[').trim_end_matches(']');
    let addresses = (host, endpoint.port).to_socket_addrs().map_err(|e| unreachable(e.to_string()))?;
    let mut last = None;
    for address in addresses {
        match std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e.to_string()),
        }
    }
    Err(unreachable(last.unwrap_or_else(|| "the name has no address".into())))
}

/// A session state as ladu builds it, on a node of the cluster: ladu's rules
/// and limits, Ballista's planning rules, and the functions sessions offer.
pub fn node_state(settings: &Settings, config: SessionConfig, env: Arc<RuntimeEnv>) -> SessionState {
    let pool = Arc::clone(&env.memory_pool);
    let state = super::ladu_state(settings, distributable(config), env);
    let rules = ballista_core::optimizer::with_ballista_optimizer_rules(state.optimizers());
    // Stopping a statement on the cluster cancels its job: joins and unions need no
    // cooperative wrapper there, which Ballista's stage planner does not see through
    // (a union under one read each of its inputs' partitions more than once).
    // Nor do stages share work in memory: a shared subtree is Ballista's to plan, twice. A file's
    // columns read as dictionaries are a property of the scan's files that its plan does not carry.
    let local_only = [
        limits::Interruptible.name(),
        shared_work::SharedWork.name(),
        dictionary_groups::DictionaryGroups.name(),
        dictionary_exprs::DictionaryExpressions.name(),
    ];
    let physical: Vec<_> =
        state.physical_optimizers().iter().filter(|r| !local_only.contains(&r.name())).cloned().collect();
    let state = SessionStateBuilder::new_from_existing(state)
        .with_optimizer_rules(rules)
        .with_physical_optimizer_rules(physical)
        .build();
    let ctx = SessionContext::new_with_state(state);
    sandbox::remove_unoffered_functions(&ctx, &[]);
    limits::cap_values(&ctx, pool, settings.sql.max_value_bytes);
    ctx.state()
}

/// `config` without what cannot cross Ballista's stages, whatever the
/// client's settings (sent one by one, they turn some back on): DataFusion's
/// dynamic filters (Ballista turns off only their umbrella setting; a join's
/// filter, made before the adaptive planner swaps the join's inputs, fails the
/// stage and the job hangs) and scalar subqueries planned as their own
/// operator (whose expression cannot be decoded apart from it).
fn distributable(mut config: SessionConfig) -> SessionConfig {
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_physical_uncorrelated_scalar_subquery = false;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    config
}

/// The functions an executor runs plans with: those sessions offer, capped under its memory pool.
pub fn executor_functions(settings: &Settings, env: Arc<RuntimeEnv>) -> BallistaFunctionRegistry {
    let state = node_state(settings, SessionConfig::new_with_ballista(), env);
    BallistaFunctionRegistry::from(&state)
}

/// A role's view of a warehouse version: its tables by name.
type Catalog = Arc<BTreeMap<String, Arc<dyn TableProvider>>>;

/// The scheduler's warehouse: tables rebuilt from their origin, as a session of that role would build them.
pub struct WarehouseTables {
    settings: Settings,
    engine: Engine,
    snapshots: Mutex<HashMap<u64, Arc<Snapshot>>>,
    catalogs: Mutex<HashMap<(String, u64), Catalog>>,
}

impl std::fmt::Debug for WarehouseTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WarehouseTables({})", self.settings.paths.warehouse.display())
    }
}

impl WarehouseTables {
    pub fn new(settings: &Settings) -> Result<WarehouseTables> {
        Ok(WarehouseTables {
            settings: settings.clone(),
            engine: Engine::new(settings)?,
            snapshots: Mutex::default(),
            catalogs: Mutex::default(),
        })
    }

    /// `role`'s tables at `version`, built on a thread of their own: opening
    /// a version runs queries on the engine's runtime, which may not be
    /// entered from the scheduler's.
    fn catalog(&self, role: &Role, version: u64) -> DfResult<Catalog> {
        let key = (serde_json::to_string(role).map_err(|e| DataFusionError::Internal(e.to_string()))?, version);
        if let Some(c) = lock(&self.catalogs).get(&key) {
            return Ok(Arc::clone(c));
        }
        let built = std::thread::scope(|s| {
            s.spawn(|| self.build(role, version)).join().unwrap_or_else(|_| Err(Error::Engine("panicked".into())))
        })
        .map_err(|e| DataFusionError::Plan(format!("the scheduler cannot open warehouse version {version}: {e}")))?;
        let mut catalogs = lock(&self.catalogs);
        if catalogs.len() >= KEPT {
            catalogs.clear();
        }
        catalogs.insert(key, Arc::clone(&built));
        Ok(built)
    }

    fn build(&self, role: &Role, version: u64) -> Result<Catalog> {
        let snapshot = self.snapshot(version)?;
        let ctx = new_context(&self.settings, Arc::clone(&self.engine.env))?;
        let manifest = &snapshot.manifest;
        let names =
            register_tables(&ctx, &self.settings, manifest, &snapshot.committed, &snapshot.superseded, role, None)?;
        let mut tables = BTreeMap::new();
        for name in names.keys() {
            let table = self
                .engine
                .runtime
                .block_on(ctx.table_provider(name.as_str()))
                .map_err(|source| Error::Table { table: name.clone(), source })?;
            tables.insert(name.clone(), table);
        }
        Ok(Arc::new(tables))
    }

    fn snapshot(&self, version: u64) -> Result<Arc<Snapshot>> {
        if let Some(s) = lock(&self.snapshots).get(&version) {
            return Ok(Arc::clone(s));
        }
        let manifest = manifest::load_version(&self.settings.paths.warehouse, version)?;
        let snapshot = Arc::new(Snapshot::open(&self.settings, &self.engine, manifest)?);
        let mut snapshots = lock(&self.snapshots);
        if snapshots.len() >= KEPT {
            snapshots.clear();
        }
        snapshots.insert(version, Arc::clone(&snapshot));
        Ok(snapshot)
    }
}

impl Tables for WarehouseTables {
    fn rebuild(&self, origin: &TableOrigin) -> DfResult<Arc<dyn TableProvider>> {
        let catalog = self.catalog(&origin.role, origin.version)?;
        catalog.get(&origin.table).cloned().ok_or_else(|| {
            DataFusionError::Plan(format!(
                "role {} reads no table `{}` at warehouse version {}",
                origin.role.name, origin.table, origin.version
            ))
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
