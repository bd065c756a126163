//! Logging in: TLS, SCRAM-SHA-256 against the users file, client certificates, lockouts, cancel requests.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::sasl::scram::ScramServerAuth;
use pgwire::api::auth::{
    DefaultServerParameterProvider, finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::{Authentication, PasswordMessageFamily, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, ProtocolVersion};
use serde_json::Value;

use super::users::{Users, Verifier};
use super::wire::{Auth, Conn, Handlers};
use super::{AUDIT_LOGIN, Error, Result, connection_fields};
use crate::config::serve::CertificateField;
use crate::pseudonym::isikukood::redact;
use crate::sql::Stop;

/// The one SASL mechanism offered.
const SCRAM: &str = "SCRAM-SHA-256";
/// Keys the lockout remembers at most; beyond, the oldest are forgotten.
const LOCKOUT_KEYS: usize = 100_000;

/// Too many failed logins for a user, or from an address, lock further
/// attempts out for a while.
pub struct Lockout {
    max: u32,
    window: Duration,
    lock: Duration,
    keys: Mutex<HashMap<String, Failures>>,
}

#[derive(Default)]
struct Failures {
    recent: Vec<Instant>,
    locked_until: Option<Instant>,
}

impl Lockout {
    pub fn new(max: u32, window: Duration, lock: Duration) -> Lockout {
        Lockout { max, window, lock, keys: Mutex::new(HashMap::new()) }
    }

    /// Is any of `keys` locked out now?
    pub fn locked(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        let held = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.iter().any(|k| held.get(k).and_then(|f| f.locked_until).is_some_and(|until| now < until))
    }

    /// Count a failure against each of `keys`; true when one is now locked out.
    pub fn failed(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        let mut held = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.len() >= LOCKOUT_KEYS {
            held.retain(|_, f| {
                f.locked_until.is_some_and(|u| now < u) || f.recent.last().is_some_and(|t| now - *t < self.window)
            });
        }
        let mut locked = false;
        for key in keys {
            let f = held.entry(key.clone()).or_default();
            f.recent.retain(|t| now - *t < self.window);
            f.recent.push(now);
            if f.recent.len() >= self.max as usize {
                f.locked_until = Some(now + self.lock);
                f.recent.clear();
                locked = true;
            }
        }
        locked
    }
}

/// The TLS acceptor of `serve.tls_certificate` and `serve.tls_key`; with
/// `client_ca`, clients may present a certificate it issued (and are
/// refused if they present another).
pub fn tls_acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<pgwire::tokio::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |path: &Path, message: String| Error::Tls { path: path.to_owned(), message };
    let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| tls(path, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(path, e.to_string()))?;
        if certs.is_empty() {
            return Err(tls(path, "holds no PEM certificate".into()));
        }
        Ok(certs)
    };
    let chain = read_certs(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(key, format!("no private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(cert, e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| tls(ca, e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls(ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, private).map_err(|e| tls(cert, e.to_string()))?;
    // PostgreSQL 17's direct TLS (sslnegotiation=direct) names this protocol.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// The value of `field` in the subject of the certificate `der`.
pub fn certificate_field(der: &[u8], field: CertificateField) -> Option<String> {
    let oid: &[u8] = match field {
        CertificateField::SerialNumber => &[85, 4, 5],
        CertificateField::CommonName => &[85, 4, 3],
        CertificateField::EmailAddress => &[42, 134, 72, 134, 247, 13, 1, 9, 1],
    };
    let cert = x509_certificate::X509Certificate::from_der(der).ok()?;
    let subject = cert.subject_name();
    subject.iter().flat_map(|rdn| rdn.iter()).find(|atv| atv.typ.as_ref() == oid).and_then(|atv| atv.to_string().ok())
}

/// An error that ends the connection.
fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message)))
}

impl Handlers {
    /// Refuse a login: audited, counted against the user and the address, told to the client.
    fn refuse(&self, conn: &Conn, user: &str, method: &str, reason: &str, error: PgWireError) -> PgWireError {
        let keys = lockout_keys(user, conn);
        let locked = self.server.lockout.failed(&keys);
        let mut fields = connection_fields(conn.id, conn.peer, Some(user));
        fields.insert("outcome".into(), Value::from("failed"));
        fields.insert("method".into(), Value::from(method));
        fields.insert("reason".into(), Value::from(redact(reason).into_owned()));
        if locked {
            fields.insert("locked_for_s".into(), Value::from(self.server.settings.serve.lockout.as_secs()));
        }
        self.server.audit(AUDIT_LOGIN, fields);
        error
    }

    /// Refuse a login before any credential was checked (not counted as a failure).
    fn turn_away(&self, conn: &Conn, user: &str, outcome: &str, reason: &str, error: PgWireError) -> PgWireError {
        let mut fields = connection_fields(conn.id, conn.peer, Some(user));
        fields.insert("outcome".into(), Value::from(outcome));
        fields.insert("reason".into(), Value::from(redact(reason).into_owned()));
        self.server.audit(AUDIT_LOGIN, fields);
        error
    }

    /// Logged in: open the session, tell the client its cancel key, audit.
    async fn admit<C>(&self, client: &mut C, conn: &Arc<Conn>, user: &str, role: &str, method: &str) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let server = Arc::clone(&self.server);
        let mut fields = connection_fields(conn.id, conn.peer, Some(user));
        let (role_name, session_fields) = (role.to_owned(), fields.clone());
        let opened = tokio::task::spawn_blocking(move || server.open_session(&role_name, session_fields)).await;
        let session = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let message = format!("cannot open a session as role {role}: {e}");
                return Err(self.turn_away(
                    conn,
                    user,
                    "error",
                    &message,
                    fatal("XX000", redact(&message).into_owned()),
                ));
            }
            Err(e) => return Err(fatal("XX000", format!("cannot open a session: {e}"))),
        };
        let secret = match client.protocol_version() {
            ProtocolVersion::PROTOCOL3_0 => SecretKey::I32(rand::random::<i32>()),
            _ => {
                let mut bytes = vec![0u8; 32];
                rand::fill(&mut bytes[..]);
                SecretKey::Bytes(bytes.into())
            }
        };
        client.set_pid_and_secret_key(conn.pid(), secret.clone());
        conn.logged_in(user, role, session, secret);
        fields.insert("outcome".into(), Value::from("ok"));
        fields.insert("method".into(), Value::from(method));
        fields.insert("role".into(), Value::from(role));
        fields.insert("tls".into(), Value::from(client.is_secure()));
        self.server.audit(AUDIT_LOGIN, fields);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = super::query::SERVER_VERSION.to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.time_zone = "UTC".to_owned();
        finish_authentication(client, &parameters).await
    }
}

/// A SASL initial response's mechanism and data, read without trusting its
/// lengths (pgwire's own reading panics on a short message).
fn initial_response(message: PasswordMessageFamily) -> Option<(String, bytes::Bytes)> {
    match message {
        PasswordMessageFamily::Raw(body) => {
            let nul = body.iter().position(|b| *b == 0)?;
            let method = std::str::from_utf8(&body[..nul]).ok()?.to_owned();
            let rest = &body[nul + 1..];
            let length = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            let data = &rest[4..];
            match length {
                -1 if data.is_empty() => Some((method, bytes::Bytes::new())),
                n if usize::try_from(n).ok() == Some(data.len()) => Some((method, bytes::Bytes::copy_from_slice(data))),
                _ => None,
            }
        }
        PasswordMessageFamily::SASLInitialResponse(m) => Some((m.auth_method, m.data.unwrap_or_default())),
        _ => None,
    }
}

fn lockout_keys(user: &str, conn: &Conn) -> Vec<String> {
    vec![format!("user:{user}"), format!("address:{}", conn.peer.ip())]
}

#[async_trait]
impl pgwire::api::auth::StartupHandler for Handlers {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = Conn::of(client)?;
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let Some(user) = client.metadata().get(METADATA_USER).cloned() else {
                    return Err(fatal("28000", "no user name given".into()));
                };
                let serve = &self.server.settings.serve;
                if self.server.tls.is_some() && !client.is_secure() {
                    let why = "this server takes TLS connections only (sslmode=require)";
                    return Err(self.turn_away(&conn, &user, "refused", why, fatal("28000", why.into())));
                }
                if self.server.lockout.locked(&lockout_keys(&user, &conn)) {
                    let why = "too many failed logins for this user or from this address; try again later";
                    return Err(self.turn_away(&conn, &user, "locked", why, fatal("28000", why.into())));
                }
                let users = Users::load(&serve.users_file).map_err(|e| fatal("XX000", e.to_string()))?;
                if let Some(field) = conn.certificate.as_deref() {
                    // A certificate the CA issued logs in its own user, and no other.
                    return match users.by_certificate(field) {
                        Some((name, u)) if name == user => {
                            let role = u.role.clone();
                            self.admit(client, &conn, &user, &role, "certificate").await
                        }
                        _ => {
                            let why = format!("the client certificate does not belong to user \"{user}\"");
                            let error =
                                fatal("28000", format!("certificate authentication failed for user \"{user}\""));
                            Err(self.refuse(&conn, &user, "certificate", &why, error))
                        }
                    };
                }
                let (verifier, known) =
                    match users.get(&user).and_then(|u| u.password.as_deref()).and_then(Verifier::parse) {
                        Some(v) => (v, true),
                        None => (Verifier::decoy(&user, &self.server.decoy_secret), false),
                    };
                *conn.auth.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Auth::ScramFirst { verifier, known };
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::SASL(vec![SCRAM.to_owned()]))).await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
                let step = std::mem::replace(
                    &mut *conn.auth.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                    Auth::Done,
                );
                let failed = || fatal("28P01", format!("password authentication failed for user \"{user}\""));
                match step {
                    Auth::ScramFirst { verifier, known } => {
                        let Some((method, data)) = initial_response(message) else {
                            let why = "not a SASL initial response: only SCRAM-SHA-256 is offered";
                            return Err(self.refuse(&conn, &user, "password", why, fatal("28000", why.into())));
                        };
                        if method != SCRAM {
                            let why = format!("{} is not offered; use SCRAM-SHA-256", redact(&method));
                            return Err(self.refuse(&conn, &user, "password", &why, fatal("28000", why.clone())));
                        }
                        let (server_first, waiting) = ScramServerAuth::new()
                            .on_client_first_message_with_secret(&data, verifier.secret())
                            .map_err(|e| self.refuse(&conn, &user, "password", &e.to_string(), failed()))?;
                        *conn.auth.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Auth::ScramFinal { waiting: Box::new(waiting), known };
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(
                                server_first.into_bytes().into(),
                            )))
                            .await?;
                        Ok(())
                    }
                    Auth::ScramFinal { waiting, known } => {
                        let last = match message {
                            PasswordMessageFamily::Raw(body) => body.freeze(),
                            PasswordMessageFamily::SASLResponse(r) => r.data,
                            _ => bytes::Bytes::new(),
                        };
                        match waiting.on_client_final_message(&last) {
                            Ok(server_final) if known => {
                                client
                                    .feed(PgWireBackendMessage::Authentication(Authentication::SASLFinal(
                                        server_final.into_bytes().into(),
                                    )))
                                    .await?;
                                let users = Users::load(&self.server.settings.serve.users_file)
                                    .map_err(|e| fatal("XX000", e.to_string()))?;
                                let role = users.get(&user).map(|u| u.role.clone()).ok_or_else(failed)?;
                                self.admit(client, &conn, &user, &role, "password").await
                            }
                            Ok(_) => Err(self.refuse(&conn, &user, "password", "no such user", failed())),
                            Err(_) => Err(self.refuse(&conn, &user, "password", "wrong password", failed())),
                        }
                    }
                    Auth::Done => Err(fatal("08P01", "unexpected authentication message".into())),
                }
            }
            _ => Err(fatal("08P01", "unexpected message before login".into())),
        }
    }
}

#[async_trait]
impl CancelHandler for Handlers {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let target = {
            let connections = self.server.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            u64::try_from(request.pid).ok().and_then(|id| connections.get(&id)).and_then(std::sync::Weak::upgrade)
        };
        // A wrong key is ignored, as PostgreSQL ignores it: nothing is told to whoever sent it.
        match target {
            Some(conn) if conn.cancel_key_matches(&request.secret_key) => {
                tracing::debug!(connection = conn.id, "cancel request");
                if let Some(stopper) = conn.stopper() {
                    stopper.stop(Stop::Cancel);
                }
            }
            _ => tracing::debug!(pid = request.pid, "cancel request for no connection of this key"),
        }
    }
}
