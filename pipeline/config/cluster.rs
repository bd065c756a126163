//! `[cluster]`: the Ballista scheduler that runs the queries, and how the nodes of the cluster talk to each other.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The scheduler's port when `cluster.scheduler` names none.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;
/// An executor's Flight port when `--listen` names none.
pub const DEFAULT_EXECUTOR_PORT: u16 = 50051;

/// `[cluster]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClusterSettings {
    scheduler: Option<String>,
    ca_certificate: Option<PathBuf>,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    executor_memory_limit: Option<String>,
}

/// `[cluster]`, resolved.
#[derive(Debug, Clone, Default)]
pub struct ClusterSettings {
    /// Set: `ladu sql`, `stats`, `publish` and `serve` run their queries there.
    pub scheduler: Option<Endpoint>,
    /// Mutual TLS between ladu, the scheduler and the executors.
    pub tls: Option<ClusterTls>,
    /// Where an executor keeps its shuffle files (and spills); a folder of its own under the system's temporary folder if unset.
    pub work_dir: Option<PathBuf>,
    /// An executor's memory pool; `sql.memory_limit` if unset.
    pub executor_memory_limit: Option<u64>,
}

/// A host and port of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `df://host:port`, `host:port` or `host` (port 50050).
    pub fn parse(text: &str) -> Option<Endpoint> {
        let rest = text.strip_prefix("df://").unwrap_or(text).trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal is written in brackets.
            Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.starts_with('[')) => {
                (host, port.parse().ok()?)
            }
            None => (rest, DEFAULT_SCHEDULER_PORT),
            Some(_) => return None,
        };
        let valid = !host.is_empty() && !host.contains(['/', '@', '?', '#', ' ']);
        valid.then(|| Endpoint { host: host.to_owned(), port })
    }

    /// The address gRPC clients dial: `https://` under TLS.
    pub fn url(&self, tls: bool) -> String {
        format!("{}://{}:{}", if tls { "https" } else { "http" }, self.host, self.port)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

/// Certificates of mutual TLS (PEM): each node presents its own, and accepts only peers the CA signed.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub ca_certificate: PathBuf,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl RawClusterSettings {
    /// Resolve, adding what is wrong to `problems`.
    pub(super) fn resolve(self, resolve: &dyn Fn(&Path) -> PathBuf, problems: &mut Vec<String>) -> ClusterSettings {
        let scheduler = self.scheduler.as_deref().and_then(|text| {
            let parsed = Endpoint::parse(text);
            if parsed.is_none() {
                problems.push(format!("cluster.scheduler: `{text}` is not an address: give df://host:port"));
            }
            parsed
        });
        let tls = match (&self.ca_certificate, &self.certificate, &self.private_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => {
                Some(ClusterTls { ca_certificate: resolve(ca), certificate: resolve(cert), private_key: resolve(key) })
            }
            _ => {
                problems.push(
                    "cluster: mutual TLS needs all three of `ca_certificate`, `certificate` and `private_key`".into(),
                );
                None
            }
        };
        let executor_memory_limit = self.executor_memory_limit.as_deref().and_then(|text| {
            super::parse_memory_limit(text)
                .map_err(|problem| problems.push(format!("cluster.executor_memory_limit: {problem}")))
                .ok()
        });
        ClusterSettings { scheduler, tls, work_dir: self.work_dir.as_deref().map(resolve), executor_memory_limit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_are_read_as_written() {
        let e = |h: &str, p| Some(Endpoint { host: h.into(), port: p });
        assert_eq!(Endpoint::parse("df://sched.example:50050"), e("sched.example", 50050));
        assert_eq!(Endpoint::parse("10.0.0.5:6000"), e("10.0.0.5", 6000));
        assert_eq!(Endpoint::parse("df://localhost"), e("localhost", DEFAULT_SCHEDULER_PORT));
        assert_eq!(Endpoint::parse("df://[::1]:7000"), e("[::1]", 7000));
        for bad in ["", "df://", "df://host:port", "df://host:70000", "df://a b:1", "df://u@h:1", "::1"] {
            assert_eq!(Endpoint::parse(bad), None, "{bad}");
        }
        assert_eq!(Endpoint::parse("df://h:1").unwrap().url(true), "https://h:1");
    }
}
