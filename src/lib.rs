//! pgbranch: a PostgreSQL wire-protocol proxy that gives an ordinary
//! database schema branches, DDL history, time travel and latency metrics.
//!
//! Module map: [`protocol`] (wire format, no I/O), [`proxy`] (listener,
//! sessions, relay, cancel, TLS), [`sql`] (statement splitting and DDL
//! classification, no I/O), [`history`] (DDL history), [`metrics`] (Prometheus metrics and the
//! health endpoint), [`config`],
//! [`embedded`] (the private PostgreSQL of `pgbranch serve` without an
//! upstream), [`cli`].

pub mod admin;
pub mod branch;
pub mod cli;
pub mod config;
pub mod embedded;
pub mod history;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod sql;
pub mod timetravel;
