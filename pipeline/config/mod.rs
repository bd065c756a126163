//! Configuration: `ladu.toml` (paths, key) and one file per source in `sources/`.

pub mod cluster;
pub mod serve;
pub mod source;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use cluster::ClusterSettings;
pub use serve::ServeSettings;
pub use source::{ColumnRule, Generalisation, SourceConfig, ValueType};

/// Config file used when neither `--config` nor `$LADU_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "config/ladu.toml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "LADU_CONFIG";
/// Folder of source configs, relative to the config file's folder.
pub const DEFAULT_SOURCES_DIR: &str = "sources";
/// Rows per Parquet row group (DESIGN.md: ~128k, not the 1M default).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
/// Days a delivery moved to `paths.processed` is kept: it holds personal codes.
pub const DEFAULT_PROCESSED_RETENTION_DAYS: u32 = 30;
/// Days rejection reports and run reports are kept.
pub const DEFAULT_REPORT_RETENTION_DAYS: u32 = 365;
/// Files per partition above which `ladu run` compacts it: a month of daily deliveries.
pub const DEFAULT_COMPACT_FILES: usize = 31;
/// Bytes of decoded CSV handed to Polars at a time.
pub const DEFAULT_CHUNK_BYTES: usize = 16 * 1024 * 1024;
/// A delivery's record (a line, or lines joined by a quoted field) longer than this refuses the delivery.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Curated SQL, relative to the config file's folder.
pub const DEFAULT_QUERIES_DIR: &str = "../queries";
/// Roles file, relative to the config file's folder.
pub const DEFAULT_ROLES_FILE: &str = "roles.toml";
/// A SQL statement running longer than this is stopped.
pub const DEFAULT_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Iterations a recursive query (`WITH RECURSIVE`) may take.
pub const DEFAULT_MAX_RECURSION_DEPTH: usize = 10_000;
/// The largest single value a function or aggregate may make (`lpad`, `repeat`, `string_agg`, …).
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 16 << 20;
/// Share of the machine's memory a SQL session may use before it spills.
pub const DEFAULT_SQL_MEMORY_SHARE: f64 = 0.5;
/// zstd level of the warehouse's Parquet files.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Open data: a cell based on fewer distinct persons than this is suppressed.
pub const DEFAULT_DISCLOSURE_THRESHOLD: u64 = 5;
/// Recipients of releases, relative to the config file's folder.
pub const DEFAULT_RECIPIENTS_FILE: &str = "recipients.toml";
/// Releases: the smallest number of persons that may share one combination of quasi-identifiers.
pub const DEFAULT_MIN_GROUP_SIZE: u64 = 5;
/// Releases: result columns that, taken together, could single a person out.
pub const DEFAULT_QUASI_IDENTIFIERS: [&str; 9] = [
    "birth_year",
    "age_band",
    "patient_age_band",
    "sex",
    "patient_sex",
    "county",
    "citizenship",
    "patient_citizenship",
    "death_month",
];

/// Errors in configuration files. Each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
    #[error("no source config in {dir}: add one `<source>.toml` per source")]
    NoSources { dir: PathBuf },
    #[error("unknown source `{name}`: known sources are {known}")]
    UnknownSource { name: String, known: String },
    #[error(
        "{path} is inside {folder}, which ladu manages ({what}): write results somewhere else; ladu never lets a command's output replace its own files"
    )]
    ManagedOutput { path: PathBuf, folder: PathBuf, what: &'static str },
    #[error("{path} already exists: give another path, or --force to replace it")]
    OutputExists { path: PathBuf },
    #[error("cannot use {path} for output: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `ladu.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    /// File holding the pseudonymisation key (hex). Never the key itself.
    /// Not needed when `[key]` keeps the key under a PKCS#11 token.
    key_file: Option<PathBuf>,
    /// The key wrapped under a PKCS#11 token, instead of in `key_file`.
    #[serde(default)]
    key: Option<RawKeyCustody>,
    /// Later generations of the key (`ladu rekey`), oldest first: key files, or with `[key]` wrapped key files.
    #[serde(default)]
    key_generations: Vec<PathBuf>,
    /// Make a key at `key_file` when none exists (sample setups only).
    #[serde(default)]
    create_key_if_missing: bool,
    /// Folder of source configs.
    #[serde(default)]
    sources_dir: Option<PathBuf>,
    /// Where data comes from and goes to.
    paths: RawPaths,
    /// Tuning of the ingest.
    #[serde(default)]
    ingest: IngestSettings,
    /// The SQL engine.
    #[serde(default)]
    sql: RawSqlSettings,
    /// Open data.
    #[serde(default)]
    publish: PublishSettings,
    /// Releases to named recipients.
    #[serde(default)]
    release: RawReleaseSettings,
    /// `ladu serve`.
    #[serde(default)]
    serve: serve::RawServeSettings,
    /// Queries on a Ballista cluster.
    #[serde(default)]
    cluster: cluster::RawClusterSettings,
}

/// `[key]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyCustody {
    pkcs11_module: PathBuf,
    token: String,
    wrapping_key: String,
    wrapped_key_file: PathBuf,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
}

/// `[key]`: the warehouse key kept encrypted under a key that never leaves a PKCS#11 token.
#[derive(Debug, Clone)]
pub struct KeyCustody {
    /// The token's PKCS#11 module (a shared library).
    pub pkcs11_module: PathBuf,
    /// The token's label.
    pub token: String,
    /// Label of the AES key on the token that encrypts the warehouse key.
    pub wrapping_key: String,
    /// The warehouse key, encrypted (`ladu key wrap` writes it).
    pub wrapped_key_file: PathBuf,
    /// Where the token's user PIN comes from: never the command line.
    pub pin: PinSource,
}

/// Where a PIN is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file of mode 0600 holding the PIN (one line).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// `[release]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReleaseSettings {
    recipients_file: Option<PathBuf>,
    quasi_identifiers: Option<Vec<String>>,
    min_group_size: Option<u64>,
}

/// `[release]`: how data are released to named recipients (`ladu release`), resolved.
#[derive(Debug, Clone)]
pub struct ReleaseSettings {
    /// The registered recipients.
    pub recipients_file: PathBuf,
    /// Result columns that, returned together, could single a person out.
    pub quasi_identifiers: Vec<String>,
    /// A release is refused (unless the risk is accepted) when fewer persons
    /// than this share one combination of its quasi-identifiers.
    pub min_group_size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    /// Deliveries: `<inbox>/<source>/<source>_<YYYYMMDD>[_<seq>].csv`.
    inbox: PathBuf,
    /// The Parquet warehouse.
    warehouse: PathBuf,
    /// Rejection reports for providers: `<outbox>/<source>/`.
    outbox: PathBuf,
    /// The hash-chained audit log.
    audit: PathBuf,
    /// The open-data website directory.
    site: PathBuf,
    /// Curated SQL: `views/`, and later statistics and open data.
    #[serde(default)]
    queries: Option<PathBuf>,
    /// Where `ladu run` moves committed deliveries; unset: they stay in the inbox.
    #[serde(default)]
    processed: Option<PathBuf>,
    /// Days a moved delivery is kept in `processed` (it holds personal codes).
    #[serde(default)]
    processed_retention_days: Option<u32>,
    /// Days a rejection report is kept in the outbox.
    #[serde(default)]
    outbox_retention_days: Option<u32>,
    /// Days a run report is kept in `warehouse/_ladu/runs/`.
    #[serde(default)]
    run_reports_retention_days: Option<u32>,
}

/// `[sql]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlSettings {
    roles_file: Option<PathBuf>,
    memory_limit: Option<String>,
    spill_dir: Option<PathBuf>,
    target_partitions: Option<usize>,
    statement_timeout: Option<String>,
    max_recursion_depth: Option<usize>,
    max_value_bytes: Option<String>,
}

/// `[publish]`: how open data is published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishSettings {
    /// Cells based on fewer distinct persons than this are suppressed.
    pub threshold: u64,
    /// Public address of the site folder, ending in `/`: the catalogue's download links start with it.
    pub base_url: String,
    /// Who publishes, as the catalogue names them.
    pub publisher: String,
    /// Title of the site, in Estonian and English.
    pub title_et: String,
    pub title_en: String,
    /// Releases kept in the site folder, the newest included; older ones are
    /// removed after a publication. 0 keeps every release.
    pub keep_releases: usize,
    /// Where people write about the open data: the catalogue's contact point.
    pub contact_email: Option<String>,
    /// The country the data cover, as the EU country table codes it (the catalogue's spatial coverage).
    pub country: String,
}

impl Default for PublishSettings {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_DISCLOSURE_THRESHOLD,
            base_url: "http://localhost/".into(),
            publisher: "ladu".into(),
            title_et: "Tervise infosüsteemi andmeaida avaandmed".into(),
            title_en: "Open data of the health information system's data warehouse".into(),
            keep_releases: 0,
            contact_email: None,
            country: "EST".into(),
        }
    }
}

/// Ingest tuning, all optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Bytes of decoded CSV parsed at a time; bounds memory.
    pub chunk_bytes: usize,
    /// Longest record a delivery may hold; a longer one (an unclosed quote,
    /// a file without line breaks) refuses the delivery at once.
    pub max_record_bytes: usize,
    /// zstd compression level (1–22).
    pub zstd_level: i32,
    /// Files a partition may hold before `ladu run` compacts it into one.
    pub compact_files: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            compact_files: DEFAULT_COMPACT_FILES,
        }
    }
}

/// Resolved paths (relative ones resolved against the config file's folder).
#[derive(Debug, Clone)]
pub struct Paths {
    pub inbox: PathBuf,
    pub warehouse: PathBuf,
    pub outbox: PathBuf,
    pub audit: PathBuf,
    pub site: PathBuf,
    pub queries: PathBuf,
    /// Where `ladu run` moves committed deliveries (`None`: left in the inbox).
    pub processed: Option<PathBuf>,
    /// Days kept: a moved delivery, a rejection report, a run report.
    pub processed_retention_days: u32,
    pub outbox_retention_days: u32,
    pub run_reports_retention_days: u32,
}

/// Settings of the SQL engine (`[sql]`), resolved.
#[derive(Debug, Clone)]
pub struct SqlSettings {
    /// Roles and what each may see.
    pub roles_file: PathBuf,
    /// Bytes DataFusion may hold before it spills to disk or fails a query.
    pub memory_limit: u64,
    /// Where spill files go (the system's temporary folder when `None`).
    pub spill_dir: Option<PathBuf>,
    /// Parallel partitions of a query (the number of cores by default).
    pub target_partitions: usize,
    /// A statement running longer is stopped.
    pub statement_timeout: std::time::Duration,
    /// Iterations a recursive query may take before it is stopped.
    pub max_recursion_depth: usize,
    /// The largest single value (text, list) a function or aggregate may make.
    pub max_value_bytes: u64,
}

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file it was read from.
    pub file: PathBuf,
    /// The key file; with `[key]`, the wrapped key file.
    pub key_file: PathBuf,
    /// `[key]`: the key is wrapped under a PKCS#11 token (`None`: in `key_file`).
    pub key: Option<KeyCustody>,
    /// Later generations of the key, oldest first (files of the same kind as `key_file`).
    pub key_generations: Vec<PathBuf>,
    pub create_key_if_missing: bool,
    pub paths: Paths,
    pub ingest: IngestSettings,
    pub sql: SqlSettings,
    pub publish: PublishSettings,
    pub release: ReleaseSettings,
    pub serve: ServeSettings,
    pub cluster: ClusterSettings,
    /// Every source, sorted by name.
    pub sources: Vec<SourceConfig>,
}

impl Settings {
    /// The folders ladu manages, which no output a user names may be inside.
    pub fn managed_folders(&self) -> Vec<(&Path, &'static str)> {
        let mut folders = vec![
            (self.paths.audit.as_path(), "the audit log"),
            (self.paths.warehouse.as_path(), "the warehouse"),
            (self.paths.site.as_path(), "the open-data site"),
            (self.paths.outbox.as_path(), "the providers' outbox"),
            (self.paths.inbox.as_path(), "the inbox"),
        ];
        if let Some(p) = &self.paths.processed {
            folders.push((p.as_path(), "the processed deliveries"));
        }
        if let Some(p) = self.key_file.parent() {
            folders.push((p, "the key's folder"));
        }
        folders
    }

    /// Refuse an output path a user named that lies inside a folder ladu
    /// manages (after following any symbolic links), or, unless `force`,
    /// that names an existing file or folder.
    pub fn check_output(&self, path: &Path, force: bool) -> Result<()> {
        let err = |source| Error::Output { path: path.to_owned(), source };
        let target = resolved(path).map_err(err)?;
        for (folder, what) in self.managed_folders() {
            let Ok(folder) = resolved(folder) else { continue };
            if folder.parent().is_none() {
                continue;
            }
            if target.starts_with(&folder) {
                return Err(Error::ManagedOutput { path: path.to_owned(), folder, what });
            }
        }
        // A device or a pipe (`/dev/null`, a FIFO) is written to, not replaced.
        let replaces = match std::fs::metadata(path) {
            Ok(m) => m.is_file() || m.is_dir(),
            Err(_) => std::fs::symlink_metadata(path).is_ok(),
        };
        if !force && replaces {
            return Err(Error::OutputExists { path: path.to_owned() });
        }
        Ok(())
    }

    /// Load `ladu.toml` and every source config beside it.
    pub fn load(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        let raw: RawSettings =
            toml::from_str(&text).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| if p.is_absolute() { p.to_owned() } else { normalise(&base.join(p)) };
        let mut problems = Vec::new();
        if raw.ingest.row_group_rows == 0 {
            problems.push("ingest.row_group_rows: must be at least 1".to_owned());
        }
        for (name, days) in [
            ("paths.processed_retention_days", raw.paths.processed_retention_days),
            ("paths.outbox_retention_days", raw.paths.outbox_retention_days),
            ("paths.run_reports_retention_days", raw.paths.run_reports_retention_days),
        ] {
            if days == Some(0) {
                problems.push(format!("{name}: must be at least 1 (days)"));
            }
        }
        if raw.ingest.compact_files < 2 {
            problems.push("ingest.compact_files: must be at least 2".to_owned());
        }
        if raw.ingest.chunk_bytes < 4096 {
            problems.push("ingest.chunk_bytes: must be at least 4096".to_owned());
        }
        if raw.ingest.max_record_bytes < 1024 {
            problems.push("ingest.max_record_bytes: must be at least 1024".to_owned());
        }
        if !(1..=22).contains(&raw.ingest.zstd_level) {
            problems.push("ingest.zstd_level: must be between 1 and 22".to_owned());
        }
        let memory_limit = match raw.sql.memory_limit.as_deref() {
            None => Ok(share_of_memory(DEFAULT_SQL_MEMORY_SHARE)),
            Some(text) => parse_memory_limit(text),
        }
        .unwrap_or_else(|problem| {
            problems.push(format!("sql.memory_limit: {problem}"));
            0
        });
        let statement_timeout = match raw.sql.statement_timeout.as_deref() {
            None => Some(DEFAULT_STATEMENT_TIMEOUT),
            Some(text) => parse_duration(text),
        }
        .unwrap_or_else(|| {
            problems.push("sql.statement_timeout: give a duration such as \"30s\", \"15min\" or \"2h\"".into());
            DEFAULT_STATEMENT_TIMEOUT
        });
        if raw.sql.max_recursion_depth == Some(0) {
            problems.push("sql.max_recursion_depth: must be at least 1".to_owned());
        }
        let max_value_bytes = match raw.sql.max_value_bytes.as_deref() {
            None => Ok(DEFAULT_MAX_VALUE_BYTES),
            Some(text) => parse_memory_limit(text),
        }
        .unwrap_or_else(|problem| {
            problems.push(format!("sql.max_value_bytes: {problem}"));
            0
        });
        if raw.sql.target_partitions == Some(0) {
            problems.push("sql.target_partitions: must be at least 1".to_owned());
        }
        if raw.publish.threshold < 2 {
            problems.push("publish.threshold: must be at least 2 (a count of 1 is a person)".to_owned());
        }
        if !raw.publish.base_url.ends_with('/') || !raw.publish.base_url.contains("://") {
            problems.push("publish.base_url: must be an absolute URL ending in `/`".to_owned());
        }
        if raw.publish.contact_email.as_deref().is_some_and(|e| !e.contains('@') || e.contains(char::is_whitespace)) {
            problems.push("publish.contact_email: give an address such as opendata@example.org".to_owned());
        }
        let country = &raw.publish.country;
        if country.len() != 3 || !country.chars().all(|c| c.is_ascii_uppercase()) {
            problems.push("publish.country: give the EU country code of three capitals, such as EST".to_owned());
        }
        if raw.release.min_group_size.is_some_and(|k| k < 2) {
            problems.push("release.min_group_size: must be at least 2 (a group of 1 is a person)".to_owned());
        }
        let serve = raw.serve.resolve(&resolve, statement_timeout, &mut problems);
        let cluster = raw.cluster.resolve(&resolve, &mut problems);
        let key = raw.key.as_ref().map(|k| KeyCustody {
            pkcs11_module: resolve(&k.pkcs11_module),
            token: k.token.clone(),
            wrapping_key: k.wrapping_key.clone(),
            wrapped_key_file: resolve(&k.wrapped_key_file),
            pin: match (&k.pin_file, &k.pin_env) {
                (Some(f), None) => PinSource::File(resolve(f)),
                (None, Some(v)) => PinSource::Env(v.clone()),
                _ => {
                    problems.push("key: give the token's PIN as either `pin_file` or `pin_env`".to_owned());
                    PinSource::Env(String::new())
                }
            },
        });
        if let Some(k) = &raw.key {
            if k.token.is_empty() || k.wrapping_key.is_empty() {
                problems.push("key: `token` and `wrapping_key` name a token and a key on it".to_owned());
            }
            if raw.create_key_if_missing {
                problems.push(
                    "create_key_if_missing: not with `[key]`; make the key with `ladu key wrap --new`".to_owned(),
                );
            }
        }
        let key_file = match (&raw.key_file, &key) {
            (Some(f), None) => resolve(f),
            (None, Some(k)) => k.wrapped_key_file.clone(),
            (Some(_), Some(k)) => {
                problems.push(
                    "key_file: not with `[key]`, which keeps the key wrapped under a token; remove one".to_owned(),
                );
                k.wrapped_key_file.clone()
            }
            (None, None) => {
                problems.push(
                    "key_file: missing: the file holding the key (or a `[key]` table for a PKCS#11 token)".to_owned(),
                );
                PathBuf::new()
            }
        };
        if !problems.is_empty() {
            return Err(Error::Invalid { path: path.to_owned(), problems });
        }
        let sources_dir = resolve(raw.sources_dir.as_deref().unwrap_or(Path::new(DEFAULT_SOURCES_DIR)));
        let sources = source::load_dir(&sources_dir)?;
        Ok(Settings {
            file: path.to_owned(),
            key_file,
            key,
            key_generations: raw.key_generations.iter().map(|p| resolve(p)).collect(),
            create_key_if_missing: raw.create_key_if_missing,
            paths: Paths {
                inbox: resolve(&raw.paths.inbox),
                warehouse: resolve(&raw.paths.warehouse),
                outbox: resolve(&raw.paths.outbox),
                audit: resolve(&raw.paths.audit),
                site: resolve(&raw.paths.site),
                queries: resolve(raw.paths.queries.as_deref().unwrap_or(Path::new(DEFAULT_QUERIES_DIR))),
                processed: raw.paths.processed.as_deref().map(resolve),
                processed_retention_days: raw
                    .paths
                    .processed_retention_days
                    .unwrap_or(DEFAULT_PROCESSED_RETENTION_DAYS),
                outbox_retention_days: raw.paths.outbox_retention_days.unwrap_or(DEFAULT_REPORT_RETENTION_DAYS),
                run_reports_retention_days: raw
                    .paths
                    .run_reports_retention_days
                    .unwrap_or(DEFAULT_REPORT_RETENTION_DAYS),
            },
            ingest: raw.ingest,
            sql: SqlSettings {
                roles_file: resolve(raw.sql.roles_file.as_deref().unwrap_or(Path::new(DEFAULT_ROLES_FILE))),
                memory_limit,
                spill_dir: raw.sql.spill_dir.as_deref().map(resolve),
                target_partitions: raw
                    .sql
                    .target_partitions
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                statement_timeout,
                max_recursion_depth: raw.sql.max_recursion_depth.unwrap_or(DEFAULT_MAX_RECURSION_DEPTH),
                max_value_bytes,
            },
            publish: raw.publish,
            release: ReleaseSettings {
                recipients_file: resolve(
                    raw.release.recipients_file.as_deref().unwrap_or(Path::new(DEFAULT_RECIPIENTS_FILE)),
                ),
                quasi_identifiers: raw
                    .release
                    .quasi_identifiers
                    .unwrap_or_else(|| DEFAULT_QUASI_IDENTIFIERS.map(str::to_owned).to_vec()),
                min_group_size: raw.release.min_group_size.unwrap_or(DEFAULT_MIN_GROUP_SIZE),
            },
            serve,
            cluster,
            sources,
        })
    }

    /// The config file to use: the flag, else `$LADU_CONFIG`, else the default.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        if let Some(p) = flag {
            return p.to_owned();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    pub fn source(&self, name: &str) -> Result<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name).ok_or_else(|| Error::UnknownSource {
            name: name.to_owned(),
            known: self.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// Why `sql.memory_limit` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum MemoryLimitError {
    #[error("`{0}` is not a share between 0% and 100%")]
    Share(String),
    #[error("unknown unit `{0}`: use B, KiB, MiB, GiB, TiB or a share such as 50%")]
    Unit(String),
    #[error("`{0}` is below the minimum of 4MiB")]
    TooSmall(String),
    #[error("`{0}` is not a size such as 4GiB or 64KiB")]
    NotASize(String),
}

/// `path` made absolute, with the links of its nearest existing ancestor
/// resolved and the rest (which does not exist yet) as named.
fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let base = loop {
        match existing.canonicalize() {
            Ok(p) => break p,
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => break existing.to_owned(),
            },
        }
    };
    Ok(rest.iter().rev().fold(base, |p, n| p.join(n)))
}

/// `"90s"`, `"15min"`, `"2h"`: a positive duration.
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = t.split_at(split);
    let seconds = match unit.trim() {
        "s" => 1,
        "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    let n: u64 = number.parse().ok().filter(|n| *n > 0)?;
    Some(std::time::Duration::from_secs(n.checked_mul(seconds)?))
}

/// `"60%"` (of the machine's memory) or a size such as `"4GiB"`, `"512MiB"`, `"1000000"` bytes.
fn parse_memory_limit(text: &str) -> Result<u64, MemoryLimitError> {
    let t = text.trim();
    if let Some(pct) = t.strip_suffix('%') {
        return match pct.trim().parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(share_of_memory(p / 100.0)),
            _ => Err(MemoryLimitError::Share(text.to_owned())),
        };
    }
    match parse_size(t)? {
        bytes if bytes >= 4 << 20 => Ok(bytes),
        _ => Err(MemoryLimitError::TooSmall(text.to_owned())),
    }
}

/// A size such as `"1MiB"`, `"64KiB"` or `"1000000"` bytes.
fn parse_size(text: &str) -> Result<u64, MemoryLimitError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_bytes: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => return Err(MemoryLimitError::Unit(other.to_owned())),
    };
    match number.parse::<u64>().ok().and_then(|n| n.checked_mul(unit_bytes)) {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(MemoryLimitError::NotASize(text.to_owned())),
    }
}

/// `share` of the machine's physical memory (of 4 GiB where it cannot be read).
fn share_of_memory(share: f64) -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(4 << 30, |kib| kib * 1024);
    (total as f64 * share) as u64
}

/// Remove `.` and `dir/..` pairs without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise(Path::new("config/../var/x")), Path::new("var/x"));
        assert_eq!(normalise(Path::new("../a/./b")), Path::new("../a/b"));
        assert_eq!(normalise(Path::new("a/..")), Path::new("."));
    }

    #[test]
    fn the_shipped_config_loads_with_all_seven_sources() {
        let s = Settings::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/ladu.toml"))).unwrap();
        let names: Vec<_> = s.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ambulance_calls",
                "cancer_screening",
                "population",
                "prescriptions",
                "sick_leave",
                "treatment_invoices",
                "waiting_list"
            ]
        );
        assert!(s.paths.warehouse.starts_with(env!("CARGO_MANIFEST_DIR")));
        // The record key's pseudonym is a pseudonym column even where its rule names another column.
        let population: Vec<&str> = s.source("population").unwrap().pseudonym_columns().collect();
        assert_eq!(population, ["record_id", "person_id", "death_record_id"]);
        let invoices: Vec<&str> = s.source("treatment_invoices").unwrap().pseudonym_columns().collect();
        assert_eq!(invoices, ["record_id", "person_id"]);
    }

    #[test]
    fn memory_limits_parse_as_sizes_or_shares() {
        assert_eq!(parse_memory_limit("4GiB"), Ok(4 << 30));
        assert_eq!(parse_memory_limit(" 512MiB "), Ok(512 << 20));
        assert_eq!(parse_memory_limit("20000000"), Ok(20_000_000));
        assert_eq!(parse_memory_limit("50%"), Ok(share_of_memory(0.5)));
        assert!(share_of_memory(0.5) > 0);
        for bad in ["0%", "150%", "4GB", "1KiB", "lots", "99999999999999999999TiB"] {
            assert!(parse_memory_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ladu.toml");
        std::fs::create_dir(dir.path().join("sources")).unwrap();
        std::fs::write(
            &p,
            "key_file='k'\nkey_fle='x'\n[paths]\ninbox='i'\nwarehouse='w'\noutbox='o'\naudit='a'\nsite='s'\n",
        )
        .unwrap();
        let e = Settings::load(&p).unwrap_err().to_string();
        assert!(e.contains("key_fle") && e.contains("ladu.toml"), "{e}");
        std::fs::write(
            &p,
            "key_file='k'\n[paths]\ninbox='i'\nwarehouse='w'\noutbox='o'\naudit='a'\nsite='s'\n[ingest]\nzstd_level=0\nrow_group_rows=0\n",
        )
        .unwrap();
        let e = Settings::load(&p).unwrap_err().to_string();
        assert!(e.contains("ingest.zstd_level") && e.contains("ingest.row_group_rows"), "{e}");
    }

    #[test]
    fn the_key_is_in_a_file_or_under_a_token_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ladu.toml");
        std::fs::create_dir(dir.path().join("sources")).unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/sources/population.toml"),
            dir.path().join("sources/population.toml"),
        )
        .unwrap();
        let paths = "[paths]\ninbox='i'\nwarehouse='w'\noutbox='o'\naudit='a'\nsite='s'\n";
        let token = "[key]\npkcs11_module='/m.so'\ntoken='t'\nwrapping_key='k'\nwrapped_key_file='w.key'\n";
        let load = |text: String| {
            std::fs::write(&p, text).unwrap();
            Settings::load(&p)
        };
        let s = load(format!("{paths}{token}pin_env='PIN'\n")).unwrap();
        let k = s.key.unwrap();
        assert_eq!((k.pin, s.key_file), (PinSource::Env("PIN".into()), dir.path().join("w.key")));
        let s = load(format!("{paths}{token}pin_file='pin'\n")).unwrap();
        assert_eq!(s.key.unwrap().pin, PinSource::File(dir.path().join("pin")));
        for (text, says) in [
            (format!("{paths}{token}"), "either `pin_file` or `pin_env`"),
            (format!("{paths}{token}pin_env='P'\npin_file='f'\n"), "either `pin_file` or `pin_env`"),
            (format!("key_file='k'\n{paths}{token}pin_env='P'\n"), "key_file: not with `[key]`"),
            (paths.to_owned(), "key_file: missing"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
