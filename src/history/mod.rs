//! DDL version history: every schema change that passes through the proxy
//! is recorded in-band, in the client's own transaction, in the
//! `pgbranch` schema of the database it changes (`docs/history.md`).
//!
//! - [`migrate`]: the metadata schema and its numbered migrations.
//! - [`record`]: the statements injected to record a change.
//! - [`hook`]: the relay hook that finds DDL and injects them.
//! - [`commands`]: `SHOW SCHEMA HISTORY` / `SHOW SCHEMA DRIFT`.
//! - [`report`]: what the CLI reads and prints (log, show, diff, export).

pub mod commands;
pub mod hook;
pub mod migrate;
pub mod record;
pub mod report;
