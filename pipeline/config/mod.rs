//! Configuration: `ladu.toml` (paths, key) and one file per source in `sources/`.

pub mod source;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use source::{ColumnRule, Generalisation, SourceConfig, ValueType};

/// Config file used when neither `--config` nor `$LADU_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "config/ladu.toml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "LADU_CONFIG";
/// Folder of source configs, relative to the config file's folder.
pub const DEFAULT_SOURCES_DIR: &str = "sources";
/// Rows per Parquet row group (DESIGN.md: ~128k, not the 1M default).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
/// Bytes of decoded CSV handed to Polars at a time.
pub const DEFAULT_CHUNK_BYTES: usize = 16 * 1024 * 1024;
/// zstd level of the warehouse's Parquet files.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `ladu.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    /// File holding the pseudonymisation key (hex). Never the key itself.
    key_file: PathBuf,
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
}

/// Ingest tuning, all optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Bytes of decoded CSV parsed at a time; bounds memory.
    pub chunk_bytes: usize,
    /// zstd compression level (1–22).
    pub zstd_level: i32,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            zstd_level: DEFAULT_ZSTD_LEVEL,
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
}

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file it was read from.
    pub file: PathBuf,
    pub key_file: PathBuf,
    pub create_key_if_missing: bool,
    pub paths: Paths,
    pub ingest: IngestSettings,
    /// Every source, sorted by name.
    pub sources: Vec<SourceConfig>,
}

impl Settings {
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
        if raw.ingest.chunk_bytes < 4096 {
            problems.push("ingest.chunk_bytes: must be at least 4096".to_owned());
        }
        if !(1..=22).contains(&raw.ingest.zstd_level) {
            problems.push("ingest.zstd_level: must be between 1 and 22".to_owned());
        }
        if !problems.is_empty() {
            return Err(Error::Invalid { path: path.to_owned(), problems });
        }
        let sources_dir = resolve(raw.sources_dir.as_deref().unwrap_or(Path::new(DEFAULT_SOURCES_DIR)));
        let sources = source::load_dir(&sources_dir)?;
        Ok(Settings {
            file: path.to_owned(),
            key_file: resolve(&raw.key_file),
            create_key_if_missing: raw.create_key_if_missing,
            paths: Paths {
                inbox: resolve(&raw.paths.inbox),
                warehouse: resolve(&raw.paths.warehouse),
                outbox: resolve(&raw.paths.outbox),
                audit: resolve(&raw.paths.audit),
                site: resolve(&raw.paths.site),
            },
            ingest: raw.ingest,
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
}
