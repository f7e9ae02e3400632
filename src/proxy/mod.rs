//! The proxy: listener, per-connection sessions, startup and
//! authentication relay, the relay loop, cancel requests, TLS.

pub mod cancel;
pub mod hooks;
pub mod relay;
pub mod selection;
pub mod server;
pub mod session;
pub mod stream;
pub mod tls;
pub mod upstream;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// What every session of one proxy shares.
pub struct ProxyContext {
    pub config: Config,
    pub connector: Arc<upstream::Connector>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub cancel: Arc<cancel::CancelMap>,
    pub hooks: Arc<dyn hooks::HookFactory>,
    pub metrics: Arc<crate::metrics::ProxyMetrics>,
    /// Per database: the versioned schemas its branches copy, as the
    /// database last said (`public` until then).
    pub versioned_schemas: dashmap::DashMap<String, Vec<String>>,
    /// Per (database, user): the search_path configured with ALTER
    /// ROLE/DATABASE ... SET, as the database last said (none: the
    /// server default).
    pub default_paths: dashmap::DashMap<(String, String), String>,
    /// Graceful shutdown: stop accepting, close sessions when idle.
    pub shutdown: CancellationToken,
    /// The shutdown timeout passed: close every session now.
    pub force: CancellationToken,
}
