//! ladu: the pseudonymised data warehouse of a national health information system.
//!
//! Registry extracts flow down one path, and the code is laid out by its stages:
//!
//! - [`config`]: `ladu.toml` and one rule file per source; used by every stage.
//! - [`pseudonym`]: the key, keyed HMAC pseudonyms and personal-code checks (no I/O);
//!   [`keyfile`] reads and writes the key file; [`custody`] loads the key from it or
//!   through a PKCS#11 token; [`keyshares`] splits it into shares for backup.
//! - [`ingest`]: deliveries → checked, pseudonymised Arrow batches → the warehouse.
//! - [`warehouse`]: the Parquet layout, the manifest and atomic commits.
//! - [`sql`]: read-only SQL over the committed warehouse, as a role, every statement audited.
//! - [`stats`]: statistics computed through `sql`, committed through `warehouse`.
//! - [`publish`]: open data computed through `sql`, disclosure-controlled, written to the site.
//! - [`serve`]: `ladu serve`, the warehouse over the PostgreSQL protocol: logins, a `sql` session per connection.
//! - [`cluster`]: `ladu cluster`, the scheduler and executors of a Ballista cluster that runs `sql`'s queries.
//! - [`run`]: the nightly job: ingest, statistics, publish, a run report.
//! - [`check`]: verifies the warehouse, the audit chain and the site (reads only).
//! - [`audit`]: the hash-chained log of every processing step; used by every stage.
//! - [`sample_data`]: synthetic deliveries in the providers' exact formats.
//! - [`logs`]: log lines on stderr, redacted of anything shaped like a personal code.
//! - [`durable`] and [`hex`]: durable file writes and hex encoding, for all of the above.
//!
//! Start reading at [`ingest::run`]; the binary (`main.rs`) only parses flags,
//! calls into these modules and maps their errors to exit codes.

pub mod audit;
pub mod check;
pub mod cluster;
pub mod config;
pub mod custody;
pub mod durable;
pub mod hex;
pub mod ingest;
pub mod keyfile;
pub mod keyshares;
pub mod logs;
pub mod progress;
pub mod pseudonym;
pub mod publish;
pub mod release;
pub mod report;
pub mod run;
pub mod sample_data;
pub mod serve;
pub mod sql;
pub mod stats;
pub mod subject;
pub mod warehouse;
