//! `ladu serve`: the warehouse over the PostgreSQL wire protocol, a role-restricted SQL session per login.
//!
//! Each connection ([`wire`]) logs in as a user of the users file
//! ([`users`], [`login`]) and then gets a [`Session`] of its own, as that
//! user's role: `ladu sql --role <role>` over the network ([`query`]). The
//! sessions share one engine (threads and one memory pool) and the opened
//! warehouse version; a new version is opened for the statements that start
//! after it is committed. Logins, statements and disconnects are audited.

mod catalog;
pub mod encode;
pub mod login;
mod query;
pub mod users;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::pseudonym::isikukood::redact;
use crate::sql::{self, Engine, Session, Snapshot, Stop, Stopper};
use crate::warehouse::manifest;

/// Audit entry kinds of the server.
pub const AUDIT_SERVE: &str = "serve";
pub const AUDIT_LOGIN: &str = "login";
pub const AUDIT_DISCONNECT: &str = "disconnect";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "refusing to listen on {addr} without TLS: set serve.tls_certificate and serve.tls_key, or listen on a loopback address"
    )]
    PlainOnNetwork { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {path}: {message}")]
    Tls { path: PathBuf, message: String },
    #[error("the users file {path}: {problems}")]
    UsersRoles { path: PathBuf, problems: String },
    #[error(transparent)]
    Users(#[from] users::Error),
    #[error(transparent)]
    Sql(#[from] sql::Error),
    #[error(transparent)]
    Roles(#[from] sql::roles::Error),
    #[error(transparent)]
    Warehouse(#[from] crate::warehouse::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    #[error("the server failed: {0}")]
    Runtime(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every connection shares.
pub struct Server {
    /// The configuration, with `sql.statement_timeout` set to the server's.
    settings: Settings,
    engine: Engine,
    audit: AuditLog,
    /// The newest warehouse version opened so far.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    lockout: login::Lockout,
    /// Decoy verifiers for unknown users are derived from this, so that they
    /// differ between servers and stay the same within one.
    decoy_secret: [u8; 32],
    next_connection: AtomicU64,
    /// Live connections: their cancel keys and sessions' stoppers.
    connections: Mutex<HashMap<u64, Weak<wire::Conn>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Reads what clients ask of `pg_catalog`.
    catalog: catalog::Parser,
}

impl Server {
    fn new(settings: &Settings) -> Result<Server> {
        let mut settings = settings.clone();
        settings.sql.statement_timeout = settings.serve.statement_timeout;
        let audit = AuditLog::new(&settings.paths.audit);
        audit.check_appendable()?;
        let tls = match &settings.serve.tls {
            Some((cert, key)) => Some(login::tls_acceptor(cert, key, settings.serve.client_ca.as_deref())?),
            None => None,
        };
        check_users(&settings)?;
        let mut decoy_secret = [0u8; 32];
        getrandom::fill(&mut decoy_secret).map_err(|e| Error::Runtime(format!("no random numbers: {e}")))?;
        let serve = &settings.serve;
        let lockout = login::Lockout::new(serve.max_login_failures, serve.login_window, serve.lockout);
        Ok(Server {
            engine: Engine::new(&settings)?,
            audit,
            snapshot: Mutex::new(None),
            tls,
            lockout,
            decoy_secret,
            next_connection: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
            shutdown: tokio::sync::watch::channel(false).0,
            catalog: catalog::Parser::new(),
            settings,
        })
    }

    /// The newest committed warehouse version, opened (shared with every
    /// session reading it). Blocks: call it where blocking is allowed.
    fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let root = &self.settings.paths.warehouse;
        let newest = manifest::latest_version(root)?;
        let mut held = self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = held.as_ref()
            && s.version() == newest
        {
            return Ok(Arc::clone(s));
        }
        let opened = Arc::new(Snapshot::open(&self.settings, &self.engine, manifest::load_latest(root)?)?);
        tracing::info!(version = opened.version(), "serving warehouse version");
        *held = Some(Arc::clone(&opened));
        Ok(opened)
    }

    /// A session as `role` on the newest version, auditing with `fields`. Blocks.
    fn open_session(&self, role: &str, fields: Map<String, Value>) -> Result<Session> {
        let snapshot = self.snapshot()?;
        let roles = sql::roles::Roles::load(&self.settings.sql.roles_file, &table_names(&self.settings, &snapshot))?;
        let role = roles.role(Some(role))?;
        let mut session = Session::open_shared(&self.settings, self.audit.clone(), &self.engine, snapshot, role)?;
        session.set_audit_fields(fields);
        Ok(session)
    }

    /// Append an audit entry from a task of the engine.
    fn audit(&self, kind: &str, fields: Map<String, Value>) {
        let appended = tokio::task::block_in_place(|| self.audit.append(kind, fields));
        if let Err(e) = appended {
            tracing::error!(error = %e, "cannot write an audit entry");
        }
    }

    fn stoppers(&self) -> Vec<Stopper> {
        let connections = self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        connections.values().filter_map(Weak::upgrade).filter_map(|c| c.stopper()).collect()
    }
}

/// Every table name a roles file may name: configured and committed.
fn table_names(settings: &Settings, snapshot: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> = settings.sources.iter().map(|s| s.table.clone()).collect();
    names.extend(snapshot.tables().map(str::to_owned));
    names.sort();
    names.dedup();
    names
}

/// Every user's role must be a role of the roles file (or a provider's).
fn check_users(settings: &Settings) -> Result<()> {
    let users = users::Users::load(&settings.serve.users_file)?;
    let names: Vec<String> = settings.sources.iter().map(|s| s.table.clone()).collect();
    let roles = sql::roles::Roles::load(&settings.sql.roles_file, &names)?;
    let problems: Vec<String> = users
        .users
        .iter()
        .filter_map(|(name, u)| roles.role(Some(&u.role)).err().map(|e| format!("user {name}: {e}")))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::UsersRoles { path: settings.serve.users_file.clone(), problems: problems.join("; ") })
    }
}

/// Run the server until SIGTERM or SIGINT; `listen` overrides `serve.listen`.
pub fn serve(settings: &Settings, listen: Option<SocketAddr>) -> Result<()> {
    let addr = listen.unwrap_or(settings.serve.listen);
    if settings.serve.tls.is_none() && !addr.ip().is_loopback() {
        return Err(Error::PlainOnNetwork { addr });
    }
    let server = Arc::new(Server::new(settings)?);
    // A connection that fails on an internal error ends alone; what it was
    // handling may hold anything a client sent, so only the place is told.
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!("ladu serve: a connection ended on an internal error{place}");
    }));
    // Connections run on threads of their own, apart from the engine's: a
    // query step that holds an engine thread for minutes must not keep a
    // cancel request, a time limit or another client waiting.
    let connections = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ladu-serve")
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    // The last hold on the engine is let go here, outside the runtime, which may not drop it.
    let keep = Arc::clone(&server);
    let served = connections.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        // Opened before the first login, so that a broken warehouse stops the start.
        let first = Arc::clone(&server);
        tokio::task::spawn_blocking(move || first.snapshot())
            .await
            .map_err(|e| Error::Runtime(e.to_string()))??;
        let mut fields = Map::new();
        fields.insert("event".into(), Value::from("start"));
        fields.insert("listen".into(), Value::from(local.to_string()));
        fields.insert("tls".into(), Value::from(server.tls.is_some()));
        server.audit(AUDIT_SERVE, fields);
        eprintln!("ladu serve: listening on {local}{}", if server.tls.is_some() { " (TLS)" } else { "" });
        let limit = Arc::new(tokio::sync::Semaphore::new(server.settings.serve.max_connections));
        // Connections beyond the limit are told so; beyond twice the limit, closed at once.
        let spare = Arc::new(tokio::sync::Semaphore::new(server.settings.serve.max_connections));
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let mut tasks = tokio::task::JoinSet::new();
        let signal = loop {
            tokio::select! {
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                // Ended connections' tasks are reaped as they end.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let permit = match Arc::clone(&limit).try_acquire_owned() {
                        Ok(p) => wire::Admission::Admitted(p),
                        Err(_) => match Arc::clone(&spare).try_acquire_owned() {
                            Ok(p) => wire::Admission::TooMany(p),
                            Err(_) => continue,
                        },
                    };
                    let server = Arc::clone(&server);
                    tasks.spawn(wire::connection(server, tcp, peer, permit));
                }
            }
        };
        drop(listener);
        tracing::info!("{signal}: no new connections; statements may finish for {:?}", server.settings.serve.shutdown_grace);
        let _ = server.shutdown.send(true);
        let grace = tokio::time::sleep(server.settings.serve.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    for stopper in server.stoppers() {
                        stopper.stop(Stop::Shutdown);
                    }
                    // Then a little longer for them to say so and close.
                    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
                    tasks.abort_all();
                    break;
                }
            }
        }
        let mut fields = Map::new();
        fields.insert("event".into(), Value::from("stop"));
        fields.insert("signal".into(), Value::from(signal));
        server.audit(AUDIT_SERVE, fields);
        Ok(())
    });
    connections.shutdown_timeout(Duration::from_secs(5));
    drop(keep);
    served
}

/// Audit fields naming a connection.
fn connection_fields(id: u64, peer: SocketAddr, user: Option<&str>) -> Map<String, Value> {
    let mut fields = Map::new();
    if let Some(user) = user {
        fields.insert("login".into(), Value::from(redact(user).into_owned()));
    }
    fields.insert("client".into(), Value::from(peer.ip().to_string()));
    fields.insert("connection".into(), Value::from(id));
    fields
}

/// Seconds since `t`, for audit entries.
fn seconds_since(t: Instant) -> f64 {
    (t.elapsed().as_millis() as f64) / 1000.0
}
