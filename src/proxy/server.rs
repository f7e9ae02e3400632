//! The listener: accepts TCP (and optionally Unix-socket) clients, bounds
//! the number of connections, and runs graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::cancel::CancelMap;
use super::hooks::{HookFactory, NoHooks};
use super::reload::{
    self, AdminRoles, ConfigSource, LogReloader, ReloadError, ReloadReport, Tunables,
};
use super::sessions::Sessions;
use super::stream::Stream;
use super::upstream::{Connector, UpstreamTarget};
use super::{session, Live, ProxyContext};
use crate::config::Config;
use crate::history::hook::HistoryHooks;
use crate::metrics::hook::MetricsHooks;
use crate::metrics::{http, ProxyMetrics, Refusal};
use crate::protocol::backend::PgError;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("{0}")]
    Tls(String),
}

/// Stops or reloads a running server.
#[derive(Clone)]
pub struct ServerHandle {
    ctx: Arc<ProxyContext>,
}

impl ServerHandle {
    /// Starts graceful shutdown: no new connections; sessions close when
    /// idle or when the shutdown timeout passes.
    pub fn shutdown(&self) {
        self.ctx.shutdown.cancel();
    }

    /// Closes every session now, as when the shutdown timeout passes.
    pub fn force_shutdown(&self) {
        self.ctx.shutdown.cancel();
        self.ctx.force.cancel();
    }

    /// Resolves once shutdown has begun (a signal, or the admin console's
    /// SHUTDOWN).
    pub async fn shutdown_started(&self) {
        self.ctx.shutdown.cancelled().await
    }

    /// Reads the configuration again and applies it (SIGHUP).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.ctx.reload()
    }
}

/// A bound, not yet running proxy.
pub struct Server {
    ctx: Arc<ProxyContext>,
    tcp: TcpListener,
    unix: Option<(UnixListener, PathBuf)>,
    /// The `/metrics`, `/healthz`, `/readyz` endpoint, when configured.
    metrics: Option<TcpListener>,
}

impl Server {
    /// Binds the listeners. `upstream_url` overrides `config.upstream.url`
    /// (the embedded default passes its own).
    /// The hooks follow the configuration: DDL history when enabled.
    pub async fn bind(config: Config, upstream_url: &str) -> Result<Self, StartError> {
        let tunables = Tunables::new(&config);
        let hooks: Arc<dyn HookFactory> = if config.history.enabled {
            Arc::new(HistoryHooks {
                tunables: tunables.clone(),
            })
        } else {
            Arc::new(NoHooks)
        };
        Self::bind_inner(config, upstream_url, hooks, tunables).await
    }

    pub async fn bind_with_hooks(
        config: Config,
        upstream_url: &str,
        hooks: Arc<dyn HookFactory>,
    ) -> Result<Self, StartError> {
        let tunables = Tunables::new(&config);
        Self::bind_inner(config, upstream_url, hooks, tunables).await
    }

    async fn bind_inner(
        config: Config,
        upstream_url: &str,
        hooks: Arc<dyn HookFactory>,
        tunables: Arc<Tunables>,
    ) -> Result<Self, StartError> {
        let proxy_metrics = ProxyMetrics::new(config.metrics.max_branch_labels);
        // Statements are timed only when someone can read the figures (or
        // slow ones are logged).
        let timed =
            !(config.metrics.listen.is_empty() && config.log.slow_statement_threshold.is_zero());
        let hooks: Arc<dyn HookFactory> = if !timed {
            hooks
        } else {
            Arc::new(MetricsHooks {
                inner: hooks,
                metrics: proxy_metrics.statements.clone(),
                tunables: tunables.clone(),
            })
        };
        let target = UpstreamTarget::from_url(upstream_url).map_err(StartError::Upstream)?;
        let connector = Connector::new(target, &config.upstream, config.connect_timeout)
            .map_err(StartError::Upstream)?;
        let tls = reload::client_tls(&config).map_err(StartError::Tls)?;
        let addr = config.listen.clone();
        let tcp = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: addr.clone(),
                source,
            })?;
        let port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
        let unix = match &config.unix_socket_dir {
            Some(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                // A socket file left by a previous run that is not served
                // any more is removed; a live one makes bind fail below.
                if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
                    let _ = std::fs::remove_file(&path);
                }
                let l = UnixListener::bind(&path).map_err(|source| StartError::Listen {
                    addr: path.display().to_string(),
                    source,
                })?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777));
                Some((l, path))
            }
            None => None,
        };
        let metrics = match config.metrics.listen.as_str() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Listen {
                        addr: format!("{addr} (metrics.listen)"),
                        source,
                    })?,
            ),
        };
        let admin = RwLock::new(Arc::new(AdminRoles::from_config(&config)));
        let ctx = Arc::new(ProxyContext {
            live: RwLock::new(Arc::new(Live {
                config: Arc::new(config),
                tls,
            })),
            connector: Arc::new(connector),
            cancel: Arc::new(CancelMap::default()),
            hooks,
            metrics: proxy_metrics,
            tunables,
            admin,
            sessions: Arc::new(Sessions::default()),
            reload_source: OnceLock::new(),
            log_reloader: OnceLock::new(),
            timed,
            reloading: std::sync::Mutex::new(()),
            versioned_schemas: dashmap::DashMap::new(),
            default_paths: dashmap::DashMap::new(),
            shutdown: super::StopSignal::default(),
            force: super::StopSignal::default(),
        });
        Ok(Self {
            ctx,
            tcp,
            unix,
            metrics,
        })
    }

    /// Address of the metrics endpoint, when it listens.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn unix_socket_path(&self) -> Option<&PathBuf> {
        self.unix.as_ref().map(|(_, p)| p)
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            ctx: self.ctx.clone(),
        }
    }

    /// Where SIGHUP and the admin console's RELOAD read the configuration
    /// again, and how a new `log.level` reaches the logger. Without a
    /// source, a reload is refused.
    pub fn set_reload(&self, source: ConfigSource, log: Option<LogReloader>) {
        let _ = self.ctx.reload_source.set(source);
        if let Some(log) = log {
            let _ = self.ctx.log_reloader.set(log);
        }
    }

    /// Live cancel keys (one per established session).
    pub fn cancel_map(&self) -> Arc<CancelMap> {
        self.ctx.cancel.clone()
    }

    /// Serves until shutdown, then waits for sessions (up to the
    /// configured timeout) and returns.
    pub async fn run(self) {
        let Server {
            ctx,
            tcp,
            unix,
            metrics,
        } = self;
        let tracker = TaskTracker::new();
        if let Some(listener) = metrics {
            let endpoint = Arc::new(http::Endpoint {
                metrics: ctx.metrics.clone(),
                connector: ctx.connector.clone(),
            });
            // Stops with the listener; open probes are not waited for.
            tokio::spawn(http::serve(
                listener,
                endpoint,
                ctx.shutdown.token().clone(),
            ));
            // Only worth checking when someone scrapes the figure.
            tokio::spawn(crate::metrics::drift::run(ctx.clone()));
        }
        // History retention (it idles while none is configured).
        tokio::spawn(crate::timetravel::retention::run(ctx.clone()));
        let limit = Arc::new(Semaphore::new(ctx.config().max_client_connections));
        let (unix_listener, unix_path) = match unix {
            Some((l, p)) => (Some(l), Some(p)),
            None => (None, None),
        };
        info!(listen = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(), upstream = %ctx.connector.target.addr, "pgbranch is accepting connections");
        loop {
            let accepted = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                r = tcp.accept() => r.map(|(s, peer)| {
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), peer.to_string())
                }),
                r = accept_unix(unix_listener.as_ref()) => r.map(|s| (Stream::Unix(s), "[local]".to_string())),
            };
            let (mut stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            ctx.metrics.connections_accepted.increment(1);
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                ctx.metrics.refused(Refusal::Limit);
                tracker.spawn(async move {
                    let e = PgError::fatal("53300", "sorry, too many clients already")
                        .with_hint("raise max_client_connections in the pgbranch configuration");
                    let _ = stream.write_all(&e.to_bytes()).await;
                });
                continue;
            };
            let ctx = ctx.clone();
            tracker.spawn(async move {
                session::serve(ctx, stream, peer).await;
                drop(permit);
            });
        }
        drop(tcp);
        drop(unix_listener);
        if let Some(p) = unix_path {
            let _ = std::fs::remove_file(p);
        }
        tracker.close();
        let open = tracker.len();
        let shutdown_timeout = ctx.config().shutdown_timeout;
        if open > 0 {
            info!(sessions = open, timeout = ?shutdown_timeout, "waiting for sessions to finish");
        }
        // PAUSE must not hold up the exit.
        ctx.sessions.gate.resume();
        if tokio::time::timeout(shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                sessions = tracker.len(),
                "shutdown timeout passed; closing remaining sessions"
            );
            ctx.force.cancel();
            tracker.wait().await;
        }
        info!("pgbranch stopped");
    }
}

async fn accept_unix(l: Option<&UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}
