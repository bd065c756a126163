//! The `ladu` command: parses flags, calls the library, maps errors to exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ladu::audit::AuditLog;
use ladu::config::Settings;
use ladu::ingest::{self, Outcome};
use ladu::keyfile::{self, KeyError};
use ladu::pseudonym::{Key, Keys};
use ladu::sample_data;
use ladu::sql;

/// `println!` for results: a closed pipe (`ladu releases | head`) ends the
/// process quietly with exit 0, as the reader wanted no more; every command
/// has finished its work, and its audit entry, before it prints.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            closed_stdout(e);
        }
    }};
}

/// `print!` for results, as [`out!`].
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            closed_stdout(e);
        }
    }};
}

/// Standard output failed: exit 0 when the reader closed it, else 1.
fn closed_stdout(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(Exit::Failure as i32);
}

/// Did writing results fail because the reader closed standard output?
fn broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let io = match e.downcast_ref::<arrow::error::ArrowError>() {
            Some(arrow::error::ArrowError::IoError(_, io)) => Some(io),
            _ => e.downcast_ref::<std::io::Error>(),
        };
        if io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Exit codes, documented in the README.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// Everything done (rows may have been rejected and reported).
    Ok = 0,
    /// A failure stopped the command; the warehouse is as it was before it.
    Failure = 1,
    /// Bad command-line usage (clap's own code, and an unreadable `-f` file).
    Usage = 2,
    /// Configuration or key error: nothing was done.
    Config = 3,
    /// Some deliveries were refused; the others were committed.
    Refused = 4,
    /// `ladu sql`: a statement was interrupted (SIGINT, 128 + 2); it is audited as such.
    Interrupted = 130,
    /// `ladu sql`: a statement was terminated (SIGTERM, 128 + 15); it is audited as such.
    Terminated = 143,
}

#[derive(Parser)]
#[command(name = "ladu", version, about = "Pseudonymised health-data warehouse")]
struct Cli {
    /// Config file (default: $LADU_CONFIG, else config/ladu.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log lines as text, or as JSON objects (one per line) for a log collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The nightly job: ingest every new delivery, refresh the statistics, publish the open data.
    Run,
    /// Verify the warehouse (files, checksums, key), the audit chain and the site's checksums.
    Check {
        /// Check everything but the key (which cannot be read here); without this, an unreadable key is a problem.
        #[arg(long)]
        skip_key: bool,
    },
    /// Write a new random key (mode 0600); never overwrites.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Ingest new deliveries from the inbox (or the given files) into the warehouse.
    Ingest {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Delivery files to ingest instead of the inbox.
        files: Vec<PathBuf>,
    },
    /// Write synthetic deliveries for every source.
    SampleData {
        #[arg(long)]
        out: PathBuf,
        /// Rows per source.
        #[arg(long, default_value_t = 300)]
        rows: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Deliberately invalid rows per source.
        #[arg(long, default_value_t = 4)]
        invalid: usize,
        /// Only these sources (repeatable).
        #[arg(long = "only")]
        only: Vec<String>,
        /// Extract date of the deliveries (YYYY-MM-DD).
        #[arg(long, default_value = "2024-03-31")]
        date: chrono::NaiveDate,
        /// Number of the first record (its record key), so that deliveries can follow one another.
        #[arg(long, default_value_t = 1)]
        first_record: usize,
    },
    /// Query the warehouse with SQL as a role: read-only, every statement audited.
    ///
    /// SQL comes from -c, -f, or standard input; on a terminal, an interactive shell starts.
    Sql {
        /// Statements to run, separated by `;`.
        #[arg(short = 'c', long = "command", value_name = "SQL", conflicts_with = "file")]
        command: Option<String>,
        /// A file of statements separated by `;`.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// The role to query as (default: `default_role` of the roles file).
        #[arg(long)]
        role: Option<String>,
        /// How results are written.
        #[arg(long, value_enum, default_value_t = sql::Format::Table)]
        format: sql::Format,
        /// Write results to this new file instead of standard output.
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace the --output file if it exists.
        #[arg(long, requires = "output")]
        force: bool,
    },
    /// Rewrite each partition holding more than one file as one file, in one commit (every row and version kept).
    Compact {
        /// Only this table.
        #[arg(long)]
        table: Option<String>,
    },
    /// Remove the rows past their source's retention period (`retention` in the source's config), in one commit, then recompute the statistics.
    Expire {
        /// Only this table.
        #[arg(long)]
        table: Option<String>,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: count the periods back from this day (YYYY-MM-DD) instead of today.
        #[arg(long, value_name = "DATE", requires = "dry_run")]
        as_of: Option<chrono::NaiveDate>,
    },
    /// Rotate the key: over-encrypt every pseudonym of the warehouse (and ladu's records of releases) under a new key generation, in one commit.
    Rekey {
        /// The new generation: a key file from `ladu keygen` (with `[key]`, a wrapped key file from `ladu key wrap --out`).
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
    },
    /// Compute the statistics of queries/statistics/ into the warehouse (tables `stats_<name>`).
    Stats {
        /// Only these statistics (repeatable); by default all.
        #[arg(long = "only", value_name = "NAME")]
        only: Vec<String>,
    },
    /// Publish the open datasets of queries/open_data/ to the site folder, with disclosure control.
    Publish,
    /// Release a query's result to a registered recipient, under the recipient's own pseudonyms.
    ///
    /// The query runs as the `release` role; its result is checked for
    /// re-identification risk, written as Parquet, CSV and release.json, and audited.
    Release {
        /// The recipient's id in the recipients file.
        #[arg(long)]
        recipient: String,
        /// A file holding one SQL query.
        #[arg(long, value_name = "FILE")]
        query: PathBuf,
        /// A new folder for the release's files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The information request or contract reference.
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// Release although a group of persons is smaller than `release.min_group_size`; the reason is audited.
        #[arg(long, value_name = "REASON")]
        accept_risk: Option<String>,
    },
    /// List the releases to recipients (the account of disclosures, from the audit log).
    Releases {
        /// Only releases on or after this date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
        /// Only releases to this recipient.
        #[arg(long)]
        recipient: Option<String>,
    },
    /// Everything held about one person (GDPR art. 15), found by their personal code.
    ///
    /// The code comes from --isikukood, --isikukood-file, or standard input
    /// (typed without echo on a terminal); it is never printed or logged.
    Subject {
        /// The personal code (visible to other users in the process list: prefer a file or standard input).
        #[arg(long, value_name = "CODE", conflicts_with = "isikukood_file")]
        isikukood: Option<String>,
        /// A file holding the personal code (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        isikukood_file: Option<PathBuf>,
        /// Write the whole answer as JSON to this new file (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The request's reference.
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// When the request was received (YYYY-MM-DD), for the response time.
        #[arg(long, value_name = "DATE")]
        received: Option<chrono::NaiveDate>,
    },
    /// Serve the warehouse over the PostgreSQL protocol to the users of the users file.
    ///
    /// Each login gets its own session as the user's role, as `ladu sql --role`
    /// would; logins, statements and disconnects are audited. Stops on SIGTERM.
    Serve {
        /// Address to listen on (default: `serve.listen`; port 0 picks a free port).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<std::net::SocketAddr>,
    },
    /// A node of a Ballista cluster that runs the queries of `ladu sql`, `stats`, `publish` and `serve`.
    ///
    /// Every node reads the warehouse at `paths.warehouse`, read-only, and
    /// never the key. Set `cluster.scheduler` for ladu to send queries there.
    Cluster {
        #[command(subcommand)]
        node: ClusterNode,
    },
    /// The users of `ladu serve`: their roles and how they log in.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Reports for a supervisory authority.
    Report {
        #[command(subcommand)]
        report: Report,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// The key's custody and backup: wrap it under a PKCS#11 token; split it into shares, any threshold of which rebuild it.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Split the configured key into share files (mode 0600) in a new folder; any THRESHOLD rebuild it.
    Split {
        #[arg(long)]
        shares: usize,
        #[arg(long)]
        threshold: usize,
        #[arg(long)]
        out: PathBuf,
        /// Which generation of the key (1 = `key_file`; default the newest, after `ladu rekey`).
        #[arg(long, value_name = "N")]
        generation: Option<usize>,
    },
    /// Rebuild a key from share files into a new key file (or, with --wrap, straight under the token of `[key]`), checking its fingerprint.
    Join {
        /// Share files (at least the threshold they name).
        #[arg(required = true)]
        shares: Vec<PathBuf>,
        #[arg(long, required_unless_present = "wrap", conflicts_with = "wrap")]
        out: Option<PathBuf>,
        /// Encrypt the rebuilt key under the token of `[key]` into its `wrapped_key_file`; no plain key file is written.
        #[arg(long)]
        wrap: bool,
    },
    /// Encrypt a key under the PKCS#11 token of `[key]` into its `wrapped_key_file` (mode 0600); the plain key is never written.
    Wrap {
        /// A new random key, made in memory.
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        new: bool,
        /// The plain key file to wrap (remove it afterwards; keep shares of it offline).
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// First make the wrapping key on the token: AES-256, sensitive, never extractable.
        #[arg(long)]
        create_wrapping_key: bool,
        /// Write here instead of `key.wrapped_key_file` (a new generation for `ladu rekey`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Report {
    /// What is stored, for how long, who has access, whether use is logged, releases and subject-access requests (Markdown).
    Processing {
        /// First day of the period (default: a year before --to).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day of the period (default: today).
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
    },
}

#[derive(Subcommand)]
enum ClusterNode {
    /// The scheduler: plans each query and hands its tasks to the executors. Stops on SIGTERM.
    Scheduler {
        /// Address to listen on for ladu and the executors.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
        listen: std::net::SocketAddr,
        /// The host name others reach it by (default: the listen address).
        #[arg(long, value_name = "HOST")]
        advertise: Option<String>,
    },
    /// An executor: runs tasks, keeps their shuffle files, serves results. Stops on SIGTERM,
    /// after its running tasks, and removes its shuffle files.
    Executor {
        /// Address of its Arrow Flight service (shuffle files and results).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
        listen: std::net::SocketAddr,
        /// The host name others reach it by (default: the address it connects to the scheduler from).
        #[arg(long, value_name = "HOST")]
        advertise: Option<String>,
        /// The scheduler (default: `cluster.scheduler`).
        #[arg(long, value_name = "df://HOST:PORT", value_parser = parse_endpoint)]
        scheduler: Option<ladu::config::cluster::Endpoint>,
        /// Folder for shuffle files and spills (default: `cluster.work_dir`, else a new temporary folder).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Tasks run at once (default: the machine's cores).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        slots: Option<u16>,
    },
}

fn parse_endpoint(text: &str) -> Result<ladu::config::cluster::Endpoint, String> {
    ladu::config::cluster::Endpoint::parse(text).ok_or_else(|| "give df://host:port".to_owned())
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user; the password is typed twice without echo, or read from --password-file.
    Add {
        name: String,
        /// A role of the roles file, or provider:<regcode>.
        #[arg(long)]
        role: String,
        /// Read the password from this file (`-`: standard input) instead of the terminal.
        #[arg(long, value_name = "FILE", conflicts_with = "no_password")]
        password_file: Option<PathBuf>,
        /// No password: the user logs in with a client certificate only.
        #[arg(long, requires = "certificate_file")]
        no_password: bool,
        /// A file (`-`: standard input) holding the value of the certificate subject field
        /// (`serve.certificate_user_field`) that logs this user in; kept only as its SHA-256.
        #[arg(long, value_name = "FILE")]
        certificate_file: Option<PathBuf>,
        /// An operating-system user who may run `ladu sql --role <role>` on the host (repeatable).
        #[arg(long = "os-user", value_name = "NAME")]
        os_users: Vec<String>,
    },
    /// Set a user's password.
    Passwd {
        name: String,
        /// Read the password from this file (`-`: standard input) instead of the terminal.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Remove a user.
    Remove { name: String },
    /// List the users, their roles and login methods (never a verifier).
    List,
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the hash chain; names the first bad line.
    Verify,
    /// Print entries as JSON lines.
    Show {
        /// Only entries of this kind (e.g. ingest).
        #[arg(long)]
        kind: Option<String>,
        /// Only entries on or after this date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
    },
}

/// An error and the exit code it maps to.
struct Failed(Exit, String);

impl<E: std::fmt::Display> From<(Exit, E)> for Failed {
    fn from((code, e): (Exit, E)) -> Self {
        Failed(code, e.to_string())
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap quotes what was typed, which may be a personal code.
            let text = e.render().to_string();
            let text = ladu::pseudonym::isikukood::redact(&text);
            if e.use_stderr() {
                eprint!("{text}");
            } else {
                out_raw!("{text}");
            }
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let format = cli.log_format;
    init_logging(cli.verbose, cli.quiet, format);
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(Failed(code, message)) => {
            // Messages may quote what the user typed (a statement, a path): never a personal code.
            let message = ladu::pseudonym::isikukood::redact(&message);
            match format {
                LogFormat::Text => eprintln!("error: {message}"),
                LogFormat::Json => tracing::error!(exit_code = code as u8, "{message}"),
            }
            ExitCode::from(code as u8)
        }
    }
}

/// Keep freed chunk buffers in the process instead of returning them to the
/// system and faulting fresh zeroed pages in for the next chunk (measured:
/// page faults were 14 % of an ingest's CPU time; this cut the time ~10 %).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_ARENA_MAX: i32 = -8;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
            mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

fn init_logging(verbose: u8, quiet: bool, format: LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    // Ballista's client logs a failed job that the command reports as its error anyway.
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "ladu={level},warn,ballista_core::execution_plans::distributed_query=off"
    ));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(ladu::logs::stderr).with_target(false);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn run(cli: Cli) -> Result<Exit, Failed> {
    let progress = std::io::stderr().is_terminal() && !cli.quiet;
    let config = cli.config.as_deref();
    match cli.command {
        Command::Keygen { out } => keygen(&out),
        Command::SampleData { out, rows, seed, invalid, only, date, first_record } => {
            let opts = sample_data::Options { rows, seed, invalid, sources: only, extract_date: date, first_record };
            sample_data(&out, opts)
        }
        Command::Ingest { source, files } => ingest(config, ingest::Options { source, files, progress }),
        Command::Sql { command, file, role, format, output, force } => {
            sql(config, command, file, role, format, output.map(|p| (p, force)))
        }
        Command::Run => nightly(config, progress),
        Command::Check { skip_key } => check(config, skip_key),
        Command::Stats { only } => stats(config, &only, progress),
        Command::Compact { table } => compact(config, table.as_deref()),
        Command::Expire { table, dry_run, as_of } => expire(config, table.as_deref(), dry_run, as_of),
        Command::Rekey { new_key } => rekey(config, &new_key),
        Command::Publish => publish(config, progress),
        Command::Release { recipient, query, out, request_id, accept_risk } => {
            release(config, &recipient, &query, &out, request_id.as_deref(), accept_risk.as_deref())
        }
        Command::Releases { since, recipient } => releases(config, since, recipient.as_deref()),
        Command::Subject { isikukood, isikukood_file, out, request_id, received } => {
            subject(config, isikukood, isikukood_file.as_deref(), out.as_deref(), request_id.as_deref(), received)
        }
        Command::Report { report: Report::Processing { from, to } } => report_processing(config, from, to),
        Command::Serve { listen } => serve(config, listen),
        Command::Cluster { node } => cluster(config, node),
        Command::User { action } => user(config, action),
        Command::Audit { action } => audit(config, action),
        Command::Key { action } => key(config, action),
    }
}

/// `ladu key split`, `join` and `wrap`: audited; an entry names files and the fingerprint, never a share.
fn key(config: Option<&Path>, action: KeyAction) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let audit = AuditLog::new(&settings.paths.audit);
    audit.check_appendable().map_err(|e| (Exit::Failure, e))?;
    let mut fields = serde_json::Map::new();
    match action {
        KeyAction::Split { shares, threshold, out, generation } => {
            let keys = load_key(&settings)?;
            let n = generation.unwrap_or(keys.all().len());
            let Some(key) = n.checked_sub(1).and_then(|i| keys.all().get(i)) else {
                return Err(Failed(
                    Exit::Usage,
                    format!("--generation {n}: the key has generations 1 to {}", keys.all().len()),
                ));
            };
            let files = ladu::keyshares::split(key, shares, threshold, &out).map_err(|e| (Exit::Config, e))?;
            fields.insert("action".into(), "split".into());
            fields.insert("fingerprint".into(), ladu::pseudonym::fingerprint(key).into());
            fields.insert("shares".into(), shares.into());
            fields.insert("threshold".into(), threshold.into());
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            fields.insert("files".into(), names.clone().into());
            audit.append("key", fields).map_err(|e| (Exit::Failure, e))?;
            for name in names {
                out!("{name}");
            }
            eprintln!(
                "wrote {shares} shares; any {threshold} rebuild the key: keep them apart, each with its own keeper"
            );
        }
        KeyAction::Join { shares, out, wrap } => {
            let joined = ladu::keyshares::join(&shares).map_err(|e| (Exit::Config, e))?;
            let out = match out {
                Some(out) => {
                    keyfile::write(&out, &joined.key).map_err(|e| (Exit::Config, e))?;
                    out
                }
                None => {
                    debug_assert!(wrap);
                    let key = Key::from_secret(joined.key.clone()).map_err(|e| (Exit::Config, e))?;
                    wrap_key(&settings, &key, false, None)?.wrapped_key_file
                }
            };
            fields.insert("action".into(), "join".into());
            fields.insert("fingerprint".into(), joined.fingerprint.clone().into());
            fields.insert("shares_given".into(), shares.len().into());
            fields.insert("threshold".into(), joined.threshold.into());
            fields.insert("out".into(), out.display().to_string().into());
            fields.insert("wrapped".into(), wrap.into());
            audit.append("key", fields).map_err(|e| (Exit::Failure, e))?;
            eprintln!("rebuilt the key with fingerprint {} into {} (mode 0600)", joined.fingerprint, out.display());
        }
        KeyAction::Wrap { new, from, create_wrapping_key, out } => {
            let key = match &from {
                Some(file) => keyfile::load(file).map_err(|e| (Exit::Config, e))?,
                None => {
                    debug_assert!(new);
                    ladu::custody::new_key().map_err(|e| (Exit::Config, e))?
                }
            };
            let done = wrap_key(&settings, &key, create_wrapping_key, out.as_deref())?;
            let custody = settings.key.as_ref().expect("wrap_key checked [key]");
            fields.insert("action".into(), "wrap".into());
            fields.insert("fingerprint".into(), done.fingerprint.clone().into());
            fields.insert("from".into(), from.map_or_else(|| "new".to_owned(), |f| f.display().to_string()).into());
            fields.insert("token".into(), custody.token.clone().into());
            fields.insert("wrapping_key".into(), custody.wrapping_key.clone().into());
            fields.insert("created_wrapping_key".into(), done.created_wrapping_key.into());
            fields.insert("out".into(), done.wrapped_key_file.display().to_string().into());
            audit.append("key", fields).map_err(|e| (Exit::Failure, e))?;
            out!("{}", done.wrapped_key_file.display());
            eprintln!(
                "wrapped the key with fingerprint {} under `{}` of the token `{}`{}",
                done.fingerprint,
                custody.wrapping_key,
                custody.token,
                if done.created_wrapping_key { " (made now)" } else { "" }
            );
        }
    }
    Ok(Exit::Ok)
}

/// Wrap `key` under the token `[key]` configures, or say that none is configured.
fn wrap_key(
    settings: &Settings,
    key: &Key,
    create: bool,
    out: Option<&Path>,
) -> Result<ladu::custody::WrapOutcome, Failed> {
    let Some(custody) = &settings.key else {
        return Err(Failed(
            Exit::Config,
            format!(
                "{} has no `[key]` table: configure the PKCS#11 token first (README, \"Keeping the key in an HSM\")",
                settings.file.display()
            ),
        ));
    };
    let mut custody = custody.clone();
    if let Some(out) = out {
        custody.wrapped_key_file = out.to_owned();
    }
    ladu::custody::wrap(&custody, key, create).map_err(|e| (Exit::Config, e).into())
}

fn keygen(out: &Path) -> Result<Exit, Failed> {
    keyfile::generate(out).map_err(|e| (Exit::Config, e))?;
    eprintln!("wrote a new key to {} (mode 0600); keep a backup in a safe place", out.display());
    Ok(Exit::Ok)
}

fn sample_data(out: &Path, opts: sample_data::Options) -> Result<Exit, Failed> {
    let written = sample_data::generate(out, &opts).map_err(|e| (Exit::Failure, e))?;
    for (path, rows) in written {
        out!("{}\t{rows} rows", path.display());
    }
    Ok(Exit::Ok)
}

fn ingest(config: Option<&Path>, opts: ingest::Options) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let key = load_key(&settings)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let summary = ingest::run(&settings, &key, &audit, &opts).map_err(|e| (ingest_exit(&e), e))?;
    print_summary(&summary);
    Ok(if summary.refused() > 0 { Exit::Refused } else { Exit::Ok })
}

/// Once `ladu serve` has users, `ladu sql` on the host is for operators: a
/// `--role` is taken only by an OS user the users file lists for it, or by
/// the service user (`serve.service_user`).
fn check_os_user(settings: &Settings, role: &str) -> Result<(), Failed> {
    use ladu::serve::users::Users;
    if !settings.serve.users_file.exists() {
        return Ok(());
    }
    let users = Users::load(&settings.serve.users_file).map_err(|e| (Exit::Config, e))?;
    let me = ladu::audit::os_user();
    if settings.serve.service_user.as_deref() == Some(me.as_str()) {
        return Ok(());
    }
    let tables: Vec<String> = settings.sources.iter().map(|s| s.table.clone()).collect();
    let roles = sql::roles::Roles::load(&settings.sql.roles_file, &tables).map_err(|e| (Exit::Config, e))?;
    let wanted = roles.role(Some(role)).map_err(|e| (Exit::Config, e))?.name;
    if users.roles_of_os_user(&me).any(|r| r == wanted) {
        return Ok(());
    }
    Err(Failed(
        Exit::Config,
        format!(
            "OS user {me} may not use role {wanted}: {} lists the OS users of each role (`ladu user add … --os-user {me}`), \
             and serve.service_user may take any",
            settings.serve.users_file.display()
        ),
    ))
}

fn serve(config: Option<&Path>, listen: Option<std::net::SocketAddr>) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    ladu::serve::serve(&settings, listen).map_err(|e| {
        let code = match &e {
            ladu::serve::Error::Bind { .. } | ladu::serve::Error::Runtime(_) | ladu::serve::Error::Audit(_) => {
                Exit::Failure
            }
            ladu::serve::Error::Sql(e) => sql_exit(e),
            ladu::serve::Error::Warehouse(e) => warehouse_exit(e),
            _ => Exit::Config,
        };
        Failed(code, e.to_string())
    })?;
    Ok(Exit::Ok)
}

fn cluster(config: Option<&Path>, node: ClusterNode) -> Result<Exit, Failed> {
    use ladu::cluster::{Error, ExecutorOptions};
    let settings = load_settings(config)?;
    let ran = match node {
        ClusterNode::Scheduler { listen, advertise } => ladu::cluster::scheduler(&settings, listen, advertise),
        ClusterNode::Executor { listen, advertise, scheduler, work_dir, slots } => {
            let slots = slots.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
            ladu::cluster::executor(&settings, ExecutorOptions { listen, advertise, scheduler, work_dir, slots })
        }
    };
    ran.map_err(|e| {
        let code = match &e {
            Error::Sql(e) => sql_exit(e),
            Error::NoScheduler | Error::NoAdvertise => Exit::Usage,
            Error::WorkDir { .. } => Exit::Config,
            Error::Ballista { .. } | Error::Runtime(..) => Exit::Failure,
        };
        Failed(code, e.to_string())
    })?;
    Ok(Exit::Ok)
}

fn user(config: Option<&Path>, action: UserAction) -> Result<Exit, Failed> {
    use ladu::serve::users::{self, User, Users};
    let settings = load_settings(config)?;
    let path = &settings.serve.users_file;
    let mut all = Users::load(path).map_err(|e| (Exit::Config, e))?;
    let failed = |e: users::Error| match e {
        users::Error::Read { .. } | users::Error::Parse { .. } | users::Error::Invalid { .. } => {
            Failed(Exit::Config, e.to_string())
        }
        users::Error::Write { .. } => Failed(Exit::Failure, e.to_string()),
        _ => Failed(Exit::Usage, e.to_string()),
    };
    let check_role = |role: &str| -> Result<(), Failed> {
        let tables: Vec<String> = settings.sources.iter().map(|s| s.table.clone()).collect();
        let roles = sql::roles::Roles::load(&settings.sql.roles_file, &tables).map_err(|e| (Exit::Config, e))?;
        roles.role(Some(role)).map(drop).map_err(|e| (Exit::Usage, e).into())
    };
    let mut fields = serde_json::Map::new();
    let action_name = match action {
        UserAction::Add { name, role, password_file, no_password, certificate_file, os_users } => {
            check_role(&role)?;
            let password = if no_password { None } else { Some(new_password(password_file.as_deref())?) };
            let certificate = match certificate_file {
                None => None,
                Some(p) => {
                    let text = read_secret(&p, "the certificate field")?;
                    Some(users::certificate_digest(text.trim()))
                }
            };
            let user = User {
                role: role.clone(),
                password: password.map(|p| users::Verifier::new(&p).to_string()),
                certificate,
                os_users,
            };
            all.add(&name, user).map_err(failed)?;
            fields.insert("name".into(), name.clone().into());
            fields.insert("role".into(), role.into());
            "add"
        }
        UserAction::Passwd { name, password_file } => {
            all.get_mut(&name, path).map_err(failed)?;
            let password = new_password(password_file.as_deref())?;
            all.get_mut(&name, path).map_err(failed)?.password = Some(users::Verifier::new(&password).to_string());
            fields.insert("name".into(), name.clone().into());
            "passwd"
        }
        UserAction::Remove { name } => {
            let removed = all.remove(&name, path).map_err(failed)?;
            fields.insert("name".into(), name.clone().into());
            fields.insert("role".into(), removed.role.into());
            "remove"
        }
        UserAction::List => {
            out!("{:<24} {:<24} {:<22} os users", "user", "role", "login");
            for (name, u) in &all.users {
                let methods: Vec<&str> =
                    [u.password.as_ref().map(|_| "password"), u.certificate.as_ref().map(|_| "certificate")]
                        .into_iter()
                        .flatten()
                        .collect();
                out!("{name:<24} {:<24} {:<22} {}", u.role, methods.join(", "), u.os_users.join(", "));
            }
            return Ok(Exit::Ok);
        }
    };
    all.save(path).map_err(failed)?;
    fields.insert("action".into(), action_name.into());
    fields.insert("users_file".into(), path.display().to_string().into());
    AuditLog::new(&settings.paths.audit).append("user", fields).map_err(|e| (Exit::Failure, e))?;
    eprintln!("{action_name}: {} updated", path.display());
    Ok(Exit::Ok)
}

/// A new password: from a file (`-`: standard input), else typed twice without echo.
fn new_password(file: Option<&Path>) -> Result<zeroize::Zeroizing<String>, Failed> {
    use ladu::serve::users::check_password;
    let password = match file {
        Some(p) => {
            let text = zeroize::Zeroizing::new(read_secret(p, "the password")?);
            zeroize::Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        None if std::io::stdin().is_terminal() => {
            let read = |prompt: &str| {
                rpassword::prompt_password(prompt)
                    .map(zeroize::Zeroizing::new)
                    .map_err(|e| Failed(Exit::Usage, format!("cannot read the password: {e}")))
            };
            let first = read("new password (not shown): ")?;
            let again = read("the same again: ")?;
            check_password(&first, Some(&again)).map_err(|e| (Exit::Usage, e))?;
            first
        }
        None => {
            return Err(Failed(
                Exit::Usage,
                "standard input is not a terminal: give the password with --password-file FILE (or - for standard input)".into(),
            ));
        }
    };
    check_password(&password, None).map_err(|e| (Exit::Usage, e))?;
    Ok(password)
}

/// A short secret from a file, `-` meaning standard input.
fn read_secret(path: &Path, value: &str) -> Result<String, Failed> {
    if path == Path::new("-") {
        return read_bounded(std::io::stdin().lock(), "standard input", value);
    }
    let file =
        std::fs::File::open(path).map_err(|e| Failed(Exit::Usage, format!("cannot read {}: {e}", path.display())))?;
    read_bounded(file, &path.display().to_string(), value)
}

fn sql(
    config: Option<&Path>,
    command: Option<String>,
    file: Option<PathBuf>,
    role: Option<String>,
    format: sql::Format,
    output: Option<(PathBuf, bool)>,
) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    if let Some((path, force)) = &output {
        settings.check_output(path, *force).map_err(|e| (Exit::Usage, e))?;
    }
    let force = output.as_ref().is_some_and(|(_, f)| *f);
    let path = output.map(|(p, _)| p);
    let mut out = sql::Output::new(format, path.as_deref(), force).map_err(|e| (Exit::Usage, e))?;
    if let Some(role) = role.as_deref() {
        check_os_user(&settings, role)?;
    }
    let session = sql::Session::open(&settings, AuditLog::new(&settings.paths.audit), role.as_deref())
        .map_err(|e| (sql_exit(&e), e))?;
    let interactive = command.is_none() && file.is_none() && std::io::stdin().is_terminal();
    if !interactive {
        // The shell listens once its line editor has taken the terminal's signals.
        session.stop_on_signals().map_err(|e| (sql_exit(&e), e))?;
    }
    let result = if let Some(text) = command {
        sql::shell::run_text(&session, &text, &mut out)
    } else if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| (Exit::Usage, format!("cannot read SQL file {}: {e}", path.display())))?;
        sql::shell::run_text(&session, &text, &mut out)
    } else if std::io::stdin().is_terminal() {
        sql::shell::interactive(&session, &mut out)
    } else {
        sql::shell::run_lines(&session, std::io::stdin().lock(), &mut out)
    };
    match result {
        // The reader closed the pipe (`| head`): the statement was audited; no more wanted.
        Err(e) if broken_pipe(&e) => Ok(Exit::Ok),
        Err(e) => Err((sql_exit(&e), e).into()),
        Ok(()) => Ok(Exit::Ok),
    }
}

/// `ladu run`.
fn nightly(config: Option<&Path>, progress: bool) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let key = load_key(&settings)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let report = match ladu::run::run(&settings, &key, &audit, progress) {
        Ok(report) => report,
        Err(f) => {
            let ladu::run::Failed { error: e, report } = *f;
            let code = match &e {
                ladu::run::Error::Ingest(e) => ingest_exit(e),
                ladu::run::Error::Stats(e) => stats_exit(e),
                ladu::run::Error::Compact(ladu::run::compact::Error::Warehouse(e)) => warehouse_exit(e),
                ladu::run::Error::Expire(ladu::run::expire::Error::Warehouse(e)) => warehouse_exit(e),
                ladu::run::Error::Publish(e) => publish_exit(e),
                _ => Exit::Failure,
            };
            let report = report.map(|p| format!("\nrun report: {}", p.display())).unwrap_or_default();
            return Err(Failed(code, format!("{e}{report}")));
        }
    };
    print_summary(&report.ingest);
    if let Some(s) = &report.stats {
        let computed = s.statistics.iter().filter(|(_, o)| matches!(o, ladu::stats::Outcome::Computed { .. }));
        out!("statistics: {} computed of {}", computed.count(), s.statistics.len());
    }
    if let Some(p) = &report.publish {
        out!("published release {} ({} datasets)", p.release, p.datasets.len());
    }
    let took: Vec<String> =
        report.steps.iter().map(|(step, s)| format!("{} {s} s", step.trim_end_matches("_seconds"))).collect();
    out!("took: {}", took.join(", "));
    out!("run report: {}", report.path.display());
    Ok(if report.ingest.refused() > 0 { Exit::Refused } else { Exit::Ok })
}

fn check(config: Option<&Path>, skip_key: bool) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let (key, key_problem) = if skip_key {
        out!("key not checked: --skip-key was given");
        (None, None)
    } else {
        match ladu::custody::load(&settings) {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(format!("{e}; the key was not checked (give --skip-key to check without it)"))),
        }
    };
    let mut findings = ladu::check::run(&settings, key.as_ref(), &AuditLog::new(&settings.paths.audit));
    findings.problems.extend(key_problem);
    for (what, n) in &findings.checked {
        out!("checked {n} {what}");
    }
    for p in &findings.problems {
        out!("PROBLEM: {p}");
    }
    if findings.problems.is_empty() {
        out!("no problems found");
        Ok(Exit::Ok)
    } else {
        Err(Failed(Exit::Failure, format!("{} problem(s) found", findings.problems.len())))
    }
}

fn stats(config: Option<&Path>, only: &[String], progress: bool) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let summary = ladu::stats::run(&settings, &audit, only, progress).map_err(|e| (stats_exit(&e), e))?;
    for (table, outcome) in &summary.statistics {
        match outcome {
            ladu::stats::Outcome::Computed { rows } => out!("{table:<40} {rows:>9} rows"),
            ladu::stats::Outcome::Unchanged => out!("{table:<40} unchanged"),
            ladu::stats::Outcome::NoData { table: missing } => {
                out!("{table:<40} skipped: table {missing} has no committed data yet")
            }
        }
    }
    match summary.commit {
        Some(v) => out!("committed warehouse version {v}"),
        None => out!("nothing to commit"),
    }
    Ok(Exit::Ok)
}

fn compact(config: Option<&Path>, table: Option<&str>) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let outcome = ladu::run::compact::run(&settings, &audit, table, 1).map_err(|e| {
        let code = match &e {
            ladu::run::compact::Error::Warehouse(ladu::warehouse::Error::UnknownTable { .. }) => Exit::Config,
            ladu::run::compact::Error::Warehouse(w) => warehouse_exit(w),
            ladu::run::compact::Error::Audit(_) => Exit::Failure,
        };
        (code, e)
    })?;
    for c in &outcome.compacted {
        out!("{}/{}: {} files -> {}, {} rows", c.table, c.partition, c.files_before, c.files_after, c.rows);
    }
    for (partition, why) in &outcome.skipped {
        out!("{partition}: left as it is ({why})");
    }
    match outcome.commit {
        Some(v) => out!("committed warehouse version {v}"),
        None => out!("nothing to compact"),
    }
    Ok(Exit::Ok)
}

fn expire(
    config: Option<&Path>,
    table: Option<&str>,
    dry_run: bool,
    as_of: Option<chrono::NaiveDate>,
) -> Result<Exit, Failed> {
    use ladu::run::expire::Error as E;
    let settings = load_settings(config)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let today = as_of.unwrap_or_else(ladu::warehouse::expire::today);
    let outcome = ladu::run::expire::run(&settings, &audit, table, today, dry_run).map_err(|e| {
        let code = match &e {
            E::NoRetention { .. } | E::Warehouse(ladu::warehouse::Error::UnknownTable { .. }) => Exit::Config,
            E::Warehouse(w) => warehouse_exit(w),
            E::Audit(_) => Exit::Failure,
        };
        (code, e)
    })?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for e in &outcome.expired {
        out!(
            "{}: {verb} {} rows dated before {} by {} ({} of them current; {} files whole, {} rewritten); oldest {} kept: {}",
            e.table,
            e.rows,
            e.cutoff,
            e.column,
            e.current_rows,
            e.files_removed,
            e.files_rewritten,
            e.column,
            e.oldest_kept.as_deref().unwrap_or("-")
        );
    }
    for t in &outcome.kept_forever {
        out!("{t}: no retention period set; keeps everything");
    }
    match outcome.commit {
        Some(v) => {
            out!("committed warehouse version {v}");
            let summary = ladu::stats::run(&settings, &audit, &[], false).map_err(|e| (stats_exit(&e), e))?;
            if let Some(v) = summary.commit {
                out!("statistics recomputed: committed warehouse version {v}");
            }
        }
        None if dry_run => out!("dry run: nothing removed"),
        None => out!("nothing past its retention period"),
    }
    Ok(Exit::Ok)
}

fn rekey(config: Option<&Path>, new_key: &Path) -> Result<Exit, Failed> {
    use ladu::run::rekey::Error as E;
    let settings = load_settings(config)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let keys = load_key(&settings)?;
    let new = ladu::custody::load_one(&settings, new_key).map_err(|e| (Exit::Config, e))?;
    let outcome = ladu::run::rekey::run(&settings, &audit, &keys, new).map_err(|e| {
        let code = match &e {
            E::SameKey { .. } | E::Empty | E::Warehouse(ladu::warehouse::Error::NoSource { .. }) => Exit::Config,
            E::Warehouse(w) => warehouse_exit(w),
            _ => Exit::Failure,
        };
        (code, e)
    })?;
    for r in &outcome.rekeyed {
        out!("{}: {} rows in {} files, columns {}", r.table, r.rows, r.files, r.columns.join(", "));
    }
    for d in &outcome.dropped {
        out!("{d}: held pseudonyms; computed again");
    }
    out!("records of releases over-encrypted: {}", outcome.records.len());
    out!("committed warehouse version {}: key generations {}", outcome.commit, outcome.generations.join(" → "));
    let summary = ladu::stats::run(&settings, &audit, &[], false).map_err(|e| (stats_exit(&e), e))?;
    if let Some(v) = summary.commit {
        out!("statistics recomputed: committed warehouse version {v}");
    }
    eprintln!(
        "now list {} last in `key_generations` of {}: until then, ingest, release and subject access refuse the configured key",
        new_key.display(),
        settings.file.display()
    );
    Ok(Exit::Ok)
}

fn publish(config: Option<&Path>, progress: bool) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let summary = ladu::publish::run(&settings, &audit, progress).map_err(|e| (publish_exit(&e), e))?;
    for d in &summary.datasets {
        out!(
            "{:<40} {:>7} rows, {} suppressed (fewer persons), {} suppressed (totals)",
            d.name,
            d.rows,
            d.primary,
            d.secondary
        );
    }
    for (name, table) in &summary.waiting {
        out!("{name:<40} left out: table {table} has no committed data yet");
    }
    out!("published release {} at {}", summary.release, summary.path.display());
    Ok(Exit::Ok)
}

fn release(
    config: Option<&Path>,
    recipient: &str,
    query: &Path,
    out: &Path,
    request_id: Option<&str>,
    accept_risk: Option<&str>,
) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    // The folder's emptiness the release checks itself.
    settings.check_output(out, true).map_err(|e| (Exit::Usage, e))?;
    let key = load_key(&settings)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let request = ladu::release::Request { recipient, query_file: query, out, request_id, accept_risk };
    let r = ladu::release::run(&settings, &key, &audit, &request).map_err(|e| (release_exit(&e), e))?;
    let risk = &r.risk;
    match risk.smallest_group {
        Some(k) => out!(
            "re-identification risk over {}: smallest group {k} {} (minimum {}), {} of {} rows in smaller groups",
            risk.quasi_identifiers.join(", "),
            risk.counted,
            risk.min_group_size,
            risk.rows_in_small_groups,
            risk.rows
        ),
        None => out!("re-identification risk: the result returns no quasi-identifier"),
    }
    if risk.too_high() {
        out!("the risk was accepted: {}", ladu::pseudonym::isikukood::redact(accept_risk.unwrap_or_default()));
    }
    out!(
        "released {} to {recipient}: {} rows, release pseudonyms in {} -> {}",
        r.id,
        r.rows,
        if r.pseudonym_columns.is_empty() { "no column".to_owned() } else { r.pseudonym_columns.join(", ") },
        r.out.display()
    );
    Ok(Exit::Ok)
}

fn releases(config: Option<&Path>, since: Option<chrono::NaiveDate>, recipient: Option<&str>) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let entries = ladu::release::record::account(&audit, since).map_err(|e| (Exit::Failure, e))?;
    out!("{:<24}  {:<12}  {:<16}  {:<16}  {:>9}  columns", "time", "release", "recipient", "request", "rows");
    for e in entries {
        let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
        if recipient.is_some_and(|r| r != s("recipient")) {
            continue;
        }
        let columns: Vec<&str> = e
            .get("columns")
            .and_then(|c| c.as_array())
            .map(|c| c.iter().filter_map(|c| c.get("name").and_then(|n| n.as_str())).collect())
            .unwrap_or_default();
        out!(
            "{:<24}  {:<12}  {:<16}  {:<16}  {:>9}  {}",
            s("time"),
            s("release"),
            s("recipient"),
            s("request_id"),
            e.get("rows").and_then(|r| r.as_u64()).unwrap_or(0),
            columns.join(",")
        );
    }
    Ok(Exit::Ok)
}

fn subject(
    config: Option<&Path>,
    isikukood: Option<String>,
    isikukood_file: Option<&Path>,
    out: Option<&Path>,
    request_id: Option<&str>,
    received: Option<chrono::NaiveDate>,
) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    if let Some(out) = out {
        settings.check_output(out, false).map_err(|e| (Exit::Usage, e))?;
    }
    let code = read_code(isikukood, isikukood_file)?;
    let key = load_key(&settings)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let request = ladu::subject::Request { code: &code, request_id, received, out };
    let answer = ladu::subject::run(&settings, &key, &audit, &request).map_err(|e| (subject_exit(&e), e))?;
    out_raw!("{}", answer.text);
    if let Some(out) = out {
        out!("\nthe whole answer (every row, as JSON): {}", out.display());
    }
    Ok(Exit::Ok)
}

fn report_processing(
    config: Option<&Path>,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let audit = AuditLog::new(&settings.paths.audit);
    let to = to.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let from = from.unwrap_or_else(|| to - chrono::Days::new(365));
    let md = ladu::report::processing(&settings, &audit, from, to).map_err(|e| {
        let code = match &e {
            ladu::report::Error::Sql(e) => sql_exit(e),
            ladu::report::Error::Roles(_) | ladu::report::Error::Users(_) => Exit::Config,
            ladu::report::Error::Period { .. } => Exit::Usage,
            ladu::report::Error::Audit(_) => Exit::Failure,
        };
        (code, e)
    })?;
    out_raw!("{md}");
    Ok(Exit::Ok)
}

fn audit(config: Option<&Path>, action: AuditAction) -> Result<Exit, Failed> {
    let settings = load_settings(config)?;
    let log = AuditLog::new(&settings.paths.audit);
    match action {
        AuditAction::Verify => {
            let v = ladu::audit::verify(&log).map_err(|e| (Exit::Failure, e))?;
            out!("audit log {} is intact: {} entries", log.path().display(), v.entries);
        }
        AuditAction::Show { kind, since } => {
            let filter = ladu::audit::Filter { kind, from: since, to: None };
            for e in log.select(&filter).map_err(|e| (Exit::Failure, e))? {
                out!("{e}");
            }
        }
    }
    Ok(Exit::Ok)
}

/// Warehouse errors: a damaged or unreadable manifest and a wrong key are
/// configuration errors (exit 3); anything else stopped the command (exit 1).
fn warehouse_exit(e: &ladu::warehouse::Error) -> Exit {
    use ladu::warehouse::Error as E;
    match e {
        E::WrongKey { .. } | E::NoManifest { .. } | E::Corrupt { .. } => Exit::Config,
        _ => Exit::Failure,
    }
}

/// Configuration and key errors: nothing was done (exit 3); anything else stopped the command (exit 1).
fn ingest_exit(e: &ingest::Error) -> Exit {
    match e {
        ingest::Error::Config(_) | ingest::Error::UnknownSource { .. } => Exit::Config,
        ingest::Error::Warehouse(e) => warehouse_exit(e),
        _ => Exit::Failure,
    }
}

fn sql_exit(e: &sql::Error) -> Exit {
    match e {
        sql::Error::Roles(_)
        | sql::Error::View { .. }
        | sql::Error::Unreachable { .. }
        | sql::Error::ClusterTls { .. } => Exit::Config,
        sql::Error::Warehouse(e) => warehouse_exit(e),
        sql::Error::Stopped { stop: sql::Stop::Interrupt, .. } => Exit::Interrupted,
        sql::Error::Stopped { stop: sql::Stop::Terminate, .. } => Exit::Terminated,
        _ => Exit::Failure,
    }
}

fn stats_exit(e: &ladu::stats::Error) -> Exit {
    match e {
        ladu::stats::Error::File(_) | ladu::stats::Error::Unknown { .. } => Exit::Config,
        ladu::stats::Error::Sql(e) => sql_exit(e),
        ladu::stats::Error::Warehouse(e) => warehouse_exit(e),
        _ => Exit::Failure,
    }
}

fn publish_exit(e: &ladu::publish::Error) -> Exit {
    match e {
        ladu::publish::Error::Dataset(_) | ladu::publish::Error::NoDatasets { .. } => Exit::Config,
        ladu::publish::Error::Sql(e) => sql_exit(e),
        ladu::publish::Error::Warehouse(e) => warehouse_exit(e),
        _ => Exit::Failure,
    }
}

fn release_exit(e: &ladu::release::Error) -> Exit {
    use ladu::release::Error as E;
    match e {
        E::Recipients(_) | E::WrongKey { .. } => Exit::Config,
        E::QueryFile { .. } | E::NotOneQuery { .. } | E::OutExists { .. } | E::DuplicateColumn { .. } => Exit::Usage,
        E::TooRisky { .. } => Exit::Refused,
        E::Sql(e) => sql_exit(e),
        _ => Exit::Failure,
    }
}

fn subject_exit(e: &ladu::subject::Error) -> Exit {
    use ladu::subject::Error as E;
    match e {
        E::InvalidCode | E::OutExists { .. } => Exit::Usage,
        E::WrongKey { .. } => Exit::Config,
        E::Sql(e) => sql_exit(e),
        _ => Exit::Failure,
    }
}

/// The personal code for `ladu subject`: from the flag, a file, or standard
/// input (on a terminal, typed without echo). Never printed.
fn read_code(flag: Option<String>, file: Option<&Path>) -> Result<String, Failed> {
    let from_stdin = || {
        if std::io::stdin().is_terminal() {
            rpassword::prompt_password("personal code (not shown): ")
                .map_err(|e| Failed(Exit::Usage, format!("cannot read the personal code: {e}")))
        } else {
            read_bounded(std::io::stdin().lock(), "standard input", "one personal code")
        }
    };
    match (flag, file) {
        (Some(code), _) => Ok(code),
        (None, Some(p)) if p == Path::new("-") => from_stdin(),
        (None, Some(p)) => {
            let file = std::fs::File::open(p)
                .map_err(|e| Failed(Exit::Usage, format!("cannot read the personal code from {}: {e}", p.display())))?;
            read_bounded(file, &p.display().to_string(), "one personal code")
        }
        (None, None) => from_stdin(),
    }
}

/// Bytes a file or standard input holding one personal code may have (the
/// code, whitespace, a line ending): more is refused at once, unread.
const CODE_INPUT_BYTES: u64 = 256;

/// The text of `input` (`what`), which may hold at most [`CODE_INPUT_BYTES`] and should hold `value`.
fn read_bounded(input: impl std::io::Read, what: &str, value: &str) -> Result<String, Failed> {
    use std::io::Read;
    let mut bytes = Vec::new();
    input
        .take(CODE_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failed(Exit::Usage, format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > CODE_INPUT_BYTES {
        return Err(Failed(
            Exit::Usage,
            format!("{what} holds more than {CODE_INPUT_BYTES} bytes: give a file or input holding {value}"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| Failed(Exit::Usage, format!("{what} is not text: give {value}")))
}

fn load_settings(flag: Option<&Path>) -> Result<Settings, Failed> {
    let path = Settings::locate(flag);
    Settings::load(&path).map_err(|e| Failed(Exit::Config, e.to_string()))
}

/// The key's generations as configured; a sample setup's missing key file is made first.
fn load_key(settings: &Settings) -> Result<Keys, Failed> {
    if settings.key.is_none()
        && settings.create_key_if_missing
        && matches!(keyfile::load(&settings.key_file), Err(KeyError::Missing { .. }))
    {
        keyfile::generate(&settings.key_file).map_err(|e| (Exit::Config, e))?;
        eprintln!(
            "made a new key at {} because `create_key_if_missing = true` in {}",
            settings.key_file.display(),
            settings.file.display()
        );
    }
    ladu::custody::load(settings).map_err(|e| (Exit::Config, e).into())
}

fn print_summary(summary: &ingest::Summary) {
    let (mut rows, mut rejected) = (0u64, 0u64);
    for d in &summary.deliveries {
        let name = d.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match &d.outcome {
            Outcome::Committed { rows: r, rejected: j, report } => {
                rows += r;
                rejected += j;
                let rep = report.as_ref().map(|p| format!(" (report: {})", p.display())).unwrap_or_default();
                out!("{:<20} {name:<40} committed {r:>9} rows, rejected {j} rows{rep} in {:.2}s", d.source, d.seconds);
            }
            Outcome::AlreadyIngested => out!("{:<20} {name:<40} already ingested, skipped", d.source),
            Outcome::Refused { reason, .. } => out!("{:<20} {name:<40} REFUSED: {reason}", d.source),
        }
    }
    let refused = summary.refused();
    match summary.commit {
        Some(v) => {
            out!("committed warehouse version {v}: {rows} rows, {rejected} rows rejected, {refused} deliveries refused")
        }
        None => out!("nothing new to commit ({refused} deliveries refused)"),
    }
}
