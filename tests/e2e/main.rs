//! End-to-end tests: the real `ladu` binary on real files, one temp folder per test,
//! cross-checked with independent implementations (Python's hmac, python-stdnum, pyarrow).
//! One test crate, a module per stage, so polars is linked into one test binary only.

mod util;

mod check;
mod cluster;
mod crash;
mod expire;
mod growth;
mod hardening;
mod hostile;
mod ingest;
mod keys;
mod open_data;
mod privacy;
mod pseudonym;
mod rekey;
mod release;
mod run;
mod serve;
mod sql;
mod subject;
