//! `[serve]`: how `ladu serve` listens, whom it lets in, and its limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Address `ladu serve` listens on when neither the config nor `--listen` names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
/// Users file, relative to the config file's folder.
pub const DEFAULT_USERS_FILE: &str = "users.toml";
/// Connections served at once; one more is told so and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// A connection idle this long (no statement running) is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// A client must have logged in within this time of connecting.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest message a client may send (a statement's text, a bind's parameters).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1 << 20;
/// Failed logins (for one user, or from one address) within `login_window` that lock logins out.
pub const DEFAULT_MAX_LOGIN_FAILURES: u32 = 5;
pub const DEFAULT_LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long logins stay locked out.
pub const DEFAULT_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// After SIGTERM, running statements may finish for this long before they are cancelled.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `[serve]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServeSettings {
    listen: Option<String>,
    users_file: Option<PathBuf>,
    tls_certificate: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    certificate_user_field: Option<String>,
    max_connections: Option<usize>,
    idle_timeout: Option<String>,
    login_timeout: Option<String>,
    statement_timeout: Option<String>,
    max_result_rows: Option<u64>,
    max_result_bytes: Option<String>,
    max_message_bytes: Option<String>,
    max_login_failures: Option<u32>,
    login_window: Option<String>,
    lockout: Option<String>,
    shutdown_grace: Option<String>,
    service_user: Option<String>,
}

/// Which field of a client certificate's subject names its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateField {
    /// `serialNumber` (2.5.4.5): an Estonian ID card's personal identification code, `PNOEE-…`.
    SerialNumber,
    /// `CN` (2.5.4.3).
    CommonName,
    /// `emailAddress` (1.2.840.113549.1.9.1).
    EmailAddress,
}

impl CertificateField {
    fn parse(text: &str) -> Option<CertificateField> {
        match text {
            "serialNumber" => Some(CertificateField::SerialNumber),
            "CN" | "commonName" => Some(CertificateField::CommonName),
            "emailAddress" => Some(CertificateField::EmailAddress),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CertificateField::SerialNumber => "serialNumber",
            CertificateField::CommonName => "CN",
            CertificateField::EmailAddress => "emailAddress",
        }
    }
}

/// `[serve]`, resolved.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    /// Users, their roles and how each logs in.
    pub users_file: PathBuf,
    /// The server's certificate chain and key (PEM); both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA whose client certificates log users in; unset, no certificate logins.
    pub client_ca: Option<PathBuf>,
    pub certificate_user_field: CertificateField,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub login_timeout: Duration,
    /// Over the wire; `sql.statement_timeout` unless set.
    pub statement_timeout: Duration,
    /// A result with more rows, or more bytes on the wire, ends in an error there.
    pub max_result_rows: Option<u64>,
    pub max_result_bytes: Option<u64>,
    pub max_message_bytes: u64,
    pub max_login_failures: u32,
    pub login_window: Duration,
    pub lockout: Duration,
    pub shutdown_grace: Duration,
    /// The OS user the service runs as: `ladu sql` lets it take any role.
    pub service_user: Option<String>,
}

impl RawServeSettings {
    /// Resolve, adding what is wrong to `problems`.
    pub(super) fn resolve(
        self,
        resolve: &dyn Fn(&Path) -> PathBuf,
        sql_timeout: Duration,
        problems: &mut Vec<String>,
    ) -> ServeSettings {
        let mut duration = |key: &str, text: Option<String>, default: Duration| match text {
            None => default,
            Some(t) => super::parse_duration(&t).unwrap_or_else(|| {
                problems.push(format!("serve.{key}: give a duration such as \"30s\", \"15min\" or \"2h\""));
                default
            }),
        };
        let idle_timeout = duration("idle_timeout", self.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        let login_timeout = duration("login_timeout", self.login_timeout, DEFAULT_LOGIN_TIMEOUT);
        let statement_timeout = duration("statement_timeout", self.statement_timeout, sql_timeout);
        let login_window = duration("login_window", self.login_window, DEFAULT_LOGIN_WINDOW);
        let lockout = duration("lockout", self.lockout, DEFAULT_LOCKOUT);
        let shutdown_grace = duration("shutdown_grace", self.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen.parse().unwrap_or_else(|_| {
            problems.push(format!("serve.listen: `{listen}` is not an address such as 127.0.0.1:5433"));
            DEFAULT_LISTEN.parse().expect("the default address parses")
        });
        let tls = match (self.tls_certificate, self.tls_key) {
            (Some(c), Some(k)) => Some((resolve(&c), resolve(&k))),
            (None, None) => None,
            _ => {
                problems.push("serve.tls_certificate and serve.tls_key: give both, or neither".to_owned());
                None
            }
        };
        if self.client_ca.is_some() && tls.is_none() {
            problems.push("serve.client_ca: certificate logins need TLS (serve.tls_certificate and tls_key)".into());
        }
        let field = self.certificate_user_field.as_deref().unwrap_or("serialNumber");
        let certificate_user_field = CertificateField::parse(field).unwrap_or_else(|| {
            problems.push(format!("serve.certificate_user_field: `{field}` is not serialNumber, CN or emailAddress"));
            CertificateField::SerialNumber
        });
        let mut size = |key: &str, text: Option<String>| {
            text.and_then(|t| super::parse_size(&t).map_err(|e| problems.push(format!("serve.{key}: {e}"))).ok())
        };
        let max_result_bytes = size("max_result_bytes", self.max_result_bytes);
        let max_message_bytes = size("max_message_bytes", self.max_message_bytes).unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            problems.push("serve.max_connections: must be at least 1".to_owned());
        }
        if self.max_login_failures == Some(0) {
            problems.push("serve.max_login_failures: must be at least 1".to_owned());
        }
        ServeSettings {
            listen,
            users_file: resolve(self.users_file.as_deref().unwrap_or(Path::new(DEFAULT_USERS_FILE))),
            tls,
            client_ca: self.client_ca.as_deref().map(resolve),
            certificate_user_field,
            max_connections,
            idle_timeout,
            login_timeout,
            statement_timeout,
            max_result_rows: self.max_result_rows,
            max_result_bytes,
            max_message_bytes,
            max_login_failures: self.max_login_failures.unwrap_or(DEFAULT_MAX_LOGIN_FAILURES),
            login_window,
            lockout,
            shutdown_grace,
            service_user: self.service_user,
        }
    }
}
