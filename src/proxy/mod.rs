//! The proxy: listener, per-connection sessions, startup and
//! authentication relay, the relay loop, cancel requests, TLS.

pub mod cancel;
pub mod hooks;
pub mod probe;
pub mod relay;
pub mod reload;
pub mod selection;
pub mod server;
pub mod session;
pub mod sessions;
pub mod stream;
pub mod tls;
pub mod upstream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::config::Config;

/// What every session of one proxy shares.
pub struct ProxyContext {
    /// The configuration in force and the TLS it offers (a reload
    /// replaces both at once).
    live: RwLock<Arc<Live>>,
    pub connector: Arc<upstream::Connector>,
    pub cancel: Arc<cancel::CancelMap>,
    pub hooks: Arc<dyn hooks::HookFactory>,
    pub metrics: Arc<crate::metrics::ProxyMetrics>,
    /// Settings open sessions read as they go (reloadable).
    pub tunables: Arc<reload::Tunables>,
    /// The admin console's roles (reloadable).
    admin: RwLock<Arc<reload::AdminRoles>>,
    /// Established sessions and the PAUSE gate.
    pub sessions: Arc<sessions::Sessions>,
    /// How to read the configuration again (SIGHUP, RELOAD).
    pub(crate) reload_source: OnceLock<reload::ConfigSource>,
    pub(crate) log_reloader: OnceLock<reload::LogReloader>,
    /// Statements are timed (the metrics hook is installed): decided at
    /// start.
    pub(crate) timed: bool,
    /// One reload at a time.
    pub(crate) reloading: std::sync::Mutex<()>,
    /// Per database: the versioned schemas its branches copy, as the
    /// database last said (`public` until then).
    pub versioned_schemas: dashmap::DashMap<String, Vec<String>>,
    /// Per (database, user): the search_path configured with ALTER
    /// ROLE/DATABASE ... SET, as the database last said (none: the
    /// server default).
    pub default_paths: dashmap::DashMap<(String, String), String>,
    /// Graceful shutdown: stop accepting, close sessions when idle.
    pub shutdown: StopSignal,
    /// The shutdown timeout passed: close every session now.
    pub force: StopSignal,
}

/// A stop signal: a token to wait on, and a flag that the relay reads on
/// every wake-up (`CancellationToken::is_cancelled` locks a mutex that
/// every session's token shares).
#[derive(Clone, Default)]
pub struct StopSignal {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl StopSignal {
    /// Raises the flag, then wakes every waiter (which then sees it).
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// The token, for what waits on it alone.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// What a reload replaces in one step.
pub struct Live {
    pub config: Arc<Config>,
    /// TLS offered to clients (`None`: not offered).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl ProxyContext {
    /// The configuration and TLS in force, read together.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.live().config.clone()
    }

    /// The admin console's roles now.
    pub fn admin_roles(&self) -> Arc<reload::AdminRoles> {
        self.admin.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
