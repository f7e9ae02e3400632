//! The `pgbranch` command line: `serve` here, the history commands in
//! [`history`], the branch commands in [`branch`].

mod branch;
mod history;
mod versioning;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing::info;

use crate::config::{Config, LogFormat, Overrides};
use crate::embedded::{Cluster, ClusterOptions, PgInstall};
use crate::proxy::reload::{ConfigSource, LogReloader, ReloadError, ReloadReport};
use crate::proxy::server::{Server, ServerHandle};

#[derive(Parser, Debug)]
#[command(
    name = "pgbranch",
    version,
    about = "PostgreSQL proxy with schema branches, DDL history, time travel and latency metrics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy. Without an upstream, starts a private PostgreSQL.
    Serve(ServeArgs),
    /// Create or upgrade the pgbranch metadata schema in a database.
    Init(history::DbArgs),
    /// List recorded schema changes.
    Log(history::LogArgs),
    /// Print an object's definition, now or at a version.
    Show(history::ShowArgs),
    /// Unified diff of object definitions between two branches
    /// (`diff main feature`) or two versions (`diff --from 3`).
    Diff(history::DiffArgs),
    /// Create, list or drop branches.
    #[command(subcommand)]
    Branch(branch::BranchCommand),
    /// Merge a branch into its parent (exit status 1 on conflicts).
    Merge(branch::MergeArgs),
    /// Report objects changed outside pgbranch (exit status 1 on drift).
    Drift(history::DbArgs),
    /// Write recorded changes as numbered .sql migration files.
    Export(history::ExportArgs),
    /// Version existing tables that match patterns, or list the versioned
    /// tables (time travel).
    #[command(subcommand)]
    Versioning(versioning::VersioningCommand),
    /// Print a SCRAM-SHA-256 secret for an `[admin] roles` entry; reads
    /// the password from the first line of standard input.
    AdminSecret,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Upstream PostgreSQL, e.g. postgres://user@host:5432/db or host=/run/postgresql.
    #[arg(long)]
    pub upstream: Option<String>,
    /// Address to listen on (default 127.0.0.1:6432).
    #[arg(long)]
    pub listen: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "PGBRANCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Also listen on a Unix socket in this directory.
    #[arg(long)]
    pub unix_socket_dir: Option<PathBuf>,
    /// Data directory of the embedded PostgreSQL.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory with initdb/postgres for the embedded PostgreSQL.
    #[arg(long)]
    pub pg_bindir: Option<PathBuf>,
    /// Address of the /metrics, /healthz, /readyz endpoint (default
    /// 127.0.0.1:9930; "" turns it off).
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

/// Entry point of the binary. Returns the process exit status.
pub fn main() -> Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let ok = std::process::ExitCode::SUCCESS;
    match cli.command {
        Command::Serve(args) => serve(args).map(|()| ok),
        Command::Init(args) => history::run(history::init(args)),
        Command::Log(args) => history::run(history::log(args)),
        Command::Show(args) => history::run(history::show(args)),
        Command::Diff(args) => history::run(history::diff(args)),
        Command::Branch(command) => history::run(branch::branch(command)),
        Command::Merge(args) => history::run(branch::merge(args)),
        Command::Drift(args) => history::run(history::drift(args)),
        Command::Export(args) => history::run(history::export(args)),
        Command::AdminSecret => admin_secret().map(|()| ok),
        Command::Versioning(command) => history::run(versioning::versioning(command)),
    }
}

/// `pgbranch admin-secret`: the password comes from standard input, so it
/// appears in no process list or shell history.
fn admin_secret() -> Result<()> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprintln!("password (input is shown; pipe it in to avoid that):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    println!("{}", crate::admin::scram::Verifier::from_password(password));
    Ok(())
}

/// Installs the logger; returns how a reload changes its filter.
fn init_logging(config: &Config) -> LogReloader {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `Config::load` has checked the filter.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Json => registry.with(fmt.json()).init(),
        LogFormat::Text => registry.with(fmt).init(),
    }
    Arc::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Default data directory of the embedded PostgreSQL. Root's home is not
/// readable by the `postgres` user the server then runs as, so root uses
/// /var/lib.
fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/pgbranch/embedded");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pgbranch/embedded")
}

fn serve(args: ServeArgs) -> Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        upstream: args.upstream,
        unix_socket_dir: args.unix_socket_dir,
        data_dir: args.data_dir,
        pg_bindir: args.pg_bindir,
        metrics_listen: args.metrics_listen,
    };
    let config = Config::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    let log_reloader = init_logging(&config);
    // SIGHUP and RELOAD read the same sources again.
    let config_file = args.config.clone();
    let source: ConfigSource =
        Arc::new(move || Config::load(config_file.as_deref(), std::env::vars(), &overrides));

    // The embedded default: a private PostgreSQL under the data directory,
    // reached over its own Unix socket.
    let mut cluster = None;
    let upstream_url = match &config.upstream.url {
        Some(url) => url.clone(),
        None => {
            // The embedded server trusts every connection that reaches it:
            // only local clients may reach it through the proxy.
            let listen = config.listen_addr()?;
            if !listen.ip().is_loopback() {
                anyhow::bail!(
                    "the embedded PostgreSQL trusts every connection, so pgbranch serves it only on a loopback address (listen = {listen}); use --listen 127.0.0.1:PORT, or give --upstream for a real database"
                );
            }
            let install = PgInstall::find(config.embedded.pg_bindir.as_deref())?;
            let data_dir = config
                .embedded
                .data_dir
                .clone()
                .unwrap_or_else(default_data_dir);
            let opts = ClusterOptions {
                socket_dir: data_dir.join("socket"),
                data_dir: data_dir.join("pgdata"),
                port: 5432,
                listen_tcp: false,
                superuser: "postgres".into(),
                no_sync: false,
                settings: vec![],
            };
            eprintln!(
                "pgbranch: starting the embedded PostgreSQL in {} ...",
                data_dir.display()
            );
            let mut c =
                Cluster::init(install, opts).context("preparing the embedded PostgreSQL")?;
            c.start().context("starting the embedded PostgreSQL")?;
            let url = c.socket_url("postgres");
            cluster = Some(c);
            url
        }
    };

    let workers = if config.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.workers
    };
    // One worker: a current-thread runtime, with no cross-thread wake-ups
    // (see docs/benchmarks.md for the measurements behind the default).
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    let embedded = cluster.is_some();
    let result = runtime.block_on(async move {
        let mut signals = Signals::register().context("installing signal handlers")?;
        let server = Server::bind(config, &upstream_url).await?;
        server.set_reload(source, Some(log_reloader));
        let addr = server.local_addr();
        if embedded {
            println!(
                "pgbranch is serving the embedded PostgreSQL. Connect with:\n  psql \"host={} port={} user=postgres dbname=postgres\"",
                addr.ip(),
                addr.port()
            );
        } else {
            println!("pgbranch is listening on {addr}");
        }
        if let Some(m) = server.metrics_addr() {
            println!("metrics: http://{m}/metrics (health: /healthz, /readyz)");
        }
        let handle = server.handle();
        tokio::spawn(async move {
            tokio::select! {
                _ = signals.shutdown_requested(&handle) => {
                    info!("shutdown requested: no new connections; sessions close when idle (signal again to close them now)");
                    handle.shutdown();
                }
                // SHUTDOWN in the admin console: the next signal forces.
                _ = handle.shutdown_started() => {}
            }
            signals.shutdown_requested(&handle).await;
            info!("second shutdown signal: closing every session now");
            handle.force_shutdown();
        });
        server.run().await;
        anyhow::Ok(())
    });
    if let Some(mut c) = cluster {
        eprintln!("pgbranch: stopping the embedded PostgreSQL");
        c.stop();
    }
    result
}

/// The signals `serve` handles, registered before the listeners open so
/// that a SIGHUP sent as soon as the port answers reloads rather than
/// ends the process.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; reloads the configuration on SIGHUP.
    async fn shutdown_requested(&mut self, handle: &ServerHandle) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => log_reload(handle.reload()),
            }
        }
    }
}

/// Logs the outcome of a reload.
fn log_reload(outcome: Result<ReloadReport, ReloadError>) {
    match outcome {
        Ok(r) => {
            info!(applied = ?r.applied, "configuration reloaded");
            if !r.needs_restart.is_empty() {
                tracing::warn!(settings = ?r.needs_restart, "changed settings take effect only after a restart; their running values stay");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration not reloaded; the running configuration stays")
        }
    }
}
