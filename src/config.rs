//! Configuration: one typed struct, loaded from TOML, overridden by
//! `PGBRANCH_*` environment variables and then by command-line flags,
//! validated at load with errors that name the offending key.
//!
//! Every option is documented in `docs/configuration.md` and shown in
//! `config/pgbranch.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration{}: {message}", origin.as_deref().map(|o| format!(" in {o}")).unwrap_or_default())]
    Parse {
        origin: Option<String>,
        message: String,
    },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// TCP address clients connect to.
    pub listen: String,
    /// Directory for a Unix socket `.s.PGSQL.<port>` (port of `listen`).
    pub unix_socket_dir: Option<PathBuf>,
    /// Most client connections served at once; more are refused (53300).
    pub max_client_connections: usize,
    /// Largest client message accepted, in bytes; larger ones close the
    /// connection with 08P01.
    pub max_message_size: usize,
    /// Time allowed for TLS negotiation, startup and authentication.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Time allowed to open a TCP connection to the upstream.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// On SIGTERM/SIGINT: how long open transactions may run before their
    /// sessions are closed.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// Size of each relay buffer (two per connection), in bytes.
    pub relay_buffer_size: usize,
    /// Runtime threads: 1 (default) runs every session on one
    /// current-thread runtime, which costs the least CPU per statement; 0 =
    /// one per core.
    pub workers: usize,
    pub upstream: UpstreamConfig,
    pub tls: TlsConfig,
    pub embedded: EmbeddedConfig,
    pub log: LogConfig,
    pub history: HistoryConfig,
    pub branches: BranchesConfig,
    pub metrics: MetricsConfig,
    pub admin: AdminConfig,
    pub time_travel: TimeTravelConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            unix_socket_dir: None,
            max_client_connections: 10_000,
            max_message_size: 256 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            relay_buffer_size: 32 * 1024,
            workers: 1,
            upstream: UpstreamConfig::default(),
            tls: TlsConfig::default(),
            embedded: EmbeddedConfig::default(),
            log: LogConfig::default(),
            history: HistoryConfig::default(),
            branches: BranchesConfig::default(),
            metrics: MetricsConfig::default(),
            admin: AdminConfig::default(),
            time_travel: TimeTravelConfig::default(),
        }
    }
}

/// Where the database is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `postgres://[user@]host[:port][/db]` or `host=... port=...`; a host
    /// starting with `/` is a Unix socket directory. Empty = embedded
    /// PostgreSQL. Clients always log in with their own user and database;
    /// the URL's user and database serve the proxy's own probes.
    pub url: Option<String>,
    /// TLS to the upstream.
    pub tls: UpstreamTlsMode,
    /// CA certificates (PEM) trusted for `verify-ca` / `verify-full`.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS, certificate not checked (as libpq's `sslmode=require`).
    Require,
    /// TLS, certificate chain checked against `ca_file`.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

/// TLS offered to clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `disable`, `allow` (TLS when the client asks; default) or `require`
    /// (TCP clients without TLS are refused).
    pub mode: ClientTlsMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    Disable,
    #[default]
    Allow,
    Require,
}

/// The embedded PostgreSQL started when no upstream is configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Data directory (created on first run).
    pub data_dir: Option<PathBuf>,
    /// Directory holding `initdb`, `pg_ctl` and `postgres`.
    pub pg_bindir: Option<PathBuf>,
}

/// The operations endpoint (`docs/metrics.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and
    /// `/readyz`; empty = off (and statements are not timed at all).
    pub listen: String,
    /// Branches that get a label of their own in the per-statement
    /// metrics; the rest are reported as `other`.
    pub max_branch_labels: usize,
    /// How often `pgbranch_schema_drift_objects` is checked in each
    /// database sessions used; `0` = never.
    #[serde(deserialize_with = "duration")]
    pub drift_check_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9930".into(),
            max_branch_labels: 20,
            drift_check_interval: Duration::ZERO,
        }
    }
}

/// Row history of system-versioned tables (`docs/time-travel.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeTravelConfig {
    /// Tables created through pgbranch whose name matches one of these
    /// patterns (`schema.table`, `*` matching any characters, e.g.
    /// `public.*`) are system-versioned at once.
    pub versioned_tables: Vec<String>,
    /// How long a row version is kept after it ended; `0` = for ever.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// Per table (`schema.table` as `pgbranch.versioned_tables` names it):
    /// a retention that replaces the global one (`"0"`: for ever).
    pub retention_by_table: std::collections::BTreeMap<String, String>,
    /// How often pruning runs (only with a retention).
    #[serde(deserialize_with = "duration")]
    pub prune_interval: Duration,
    /// Row versions deleted per transaction while pruning.
    pub prune_batch: usize,
}

impl Default for TimeTravelConfig {
    fn default() -> Self {
        Self {
            versioned_tables: Vec::new(),
            retention: Duration::ZERO,
            retention_by_table: Default::default(),
            prune_interval: Duration::from_secs(60),
            prune_batch: 10_000,
        }
    }
}

impl TimeTravelConfig {
    /// Whether pruning has anything to do.
    pub fn prunes(&self) -> bool {
        !self.retention.is_zero()
            || self
                .retention_by_table
                .values()
                .any(|d| parse_duration(d).is_ok_and(|d| !d.is_zero()))
    }

    /// Whether a table named `schema.table` (unquoted, as the server
    /// stores it) matches `versioned_tables`.
    pub fn auto_versioned(&self, qualified: &str) -> bool {
        self.versioned_tables
            .iter()
            .any(|p| glob_match(p.as_bytes(), qualified.as_bytes()))
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

/// The admin console (`docs/operations.md`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Roles allowed into the admin console (the virtual database
    /// `pgbranch`), each with its SCRAM-SHA-256 secret
    /// (`pgbranch admin-secret` makes one). Empty: no console, and a
    /// database named `pgbranch` is relayed like any other.
    pub roles: std::collections::BTreeMap<String, String>,
    /// How long `PAUSE` waits for sessions to finish their transactions
    /// before it answers anyway (the pause stays in force).
    #[serde(deserialize_with = "duration")]
    pub pause_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            roles: Default::default(),
            pause_timeout: Duration::from_secs(60),
        }
    }
}

/// Role names only: the secrets stay out of logs and debug output.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("roles", &self.roles.keys().collect::<Vec<_>>())
            .field("pause_timeout", &self.pause_timeout)
            .finish()
    }
}

/// DDL history (`docs/history.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Record every DDL statement in the `pgbranch` schema of the database
    /// it changes. Off: DDL passes unrecorded and costs nothing.
    pub enabled: bool,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Schema branches (`docs/branches.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BranchesConfig {
    /// Branches on which DDL sent directly is refused (42501); changes
    /// reach them by MERGE BRANCH. E.g. `["main"]`.
    pub protected: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `pgbranch=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Statements that take at least this long are logged (WARN) with
    /// their duration and their text without literals; `0` = off.
    #[serde(deserialize_with = "duration")]
    pub slow_statement_threshold: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            slow_statement_threshold: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Accepts `"30s"`, `"500ms"`, `"2m"` or a number of seconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 30s, 2m)"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" | "min" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86_400)),
        other => Err(format!("unknown duration unit `{other}` in `{text}`")),
    }
}

/// Sections of the config file; `PGBRANCH_<SECTION>_<KEY>` targets them.
const SECTIONS: [&str; 9] = [
    "upstream",
    "tls",
    "embedded",
    "log",
    "history",
    "branches",
    "metrics",
    "admin",
    "time_travel",
];

/// Overrides from the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub unix_socket_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub pg_bindir: Option<PathBuf>,
    pub metrics_listen: Option<String>,
}

impl Config {
    /// Loads defaults ← `file` ← environment (`PGBRANCH_*`) ← `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        origin: Some(path.display().to_string()),
                        message: syntax_error(&text, &e),
                    })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("PGBRANCH_") else {
                continue;
            };
            // PGBRANCH_CONFIG names the file itself; it is not a setting.
            if rest == "CONFIG" {
                continue;
            }
            // PGBRANCH_LOG is the customary short form of the log filter.
            let key = match rest {
                "LOG" => "log_level".to_string(),
                _ => rest.to_ascii_lowercase(),
            };
            apply_env(&mut table, &key, &value, &name)?;
        }
        let mut config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: file.map(|p| p.display().to_string()),
                    message: e.message().to_string(),
                })?;
        if let Some(l) = &overrides.listen {
            config.listen = l.clone();
        }
        if let Some(u) = &overrides.upstream {
            config.upstream.url = Some(u.clone());
        }
        if let Some(d) = &overrides.unix_socket_dir {
            config.unix_socket_dir = Some(d.clone());
        }
        if let Some(d) = &overrides.data_dir {
            config.embedded.data_dir = Some(d.clone());
        }
        if let Some(m) = &overrides.metrics_listen {
            config.metrics.listen = m.clone();
        }
        if let Some(d) = &overrides.pg_bindir {
            config.embedded.pg_bindir = Some(d.clone());
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if let Some(url) = &self.upstream.url {
            crate::proxy::upstream::UpstreamTarget::from_url(url)
                .map_err(|e| invalid("upstream.url", e))?;
        }
        if self.max_client_connections == 0 {
            invalid_err("max_client_connections", "must be at least 1")?;
        }
        if self.max_message_size < 1024 {
            invalid_err("max_message_size", "must be at least 1024 bytes")?;
        }
        if self.relay_buffer_size < 1024 || self.relay_buffer_size > 16 * 1024 * 1024 {
            invalid_err("relay_buffer_size", "must be between 1 KiB and 16 MiB")?;
        }
        if self.handshake_timeout.is_zero() {
            invalid_err("handshake_timeout", "must be positive")?;
        }
        if self.connect_timeout.is_zero() {
            invalid_err("connect_timeout", "must be positive")?;
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => invalid_err("tls.key_file", "required when tls.cert_file is set")?,
            (None, Some(_)) => invalid_err("tls.cert_file", "required when tls.key_file is set")?,
            (None, None) if self.tls.mode == ClientTlsMode::Require => {
                invalid_err("tls.mode", "`require` needs tls.cert_file and tls.key_file")?
            }
            _ => {}
        }
        for (key, path) in [
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
            ("upstream.ca_file", &self.upstream.ca_file),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    invalid_err(key, format!("{} is not a readable file", p.display()))?;
                }
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            invalid_err(
                "log.level",
                format!("`{}` is not a valid filter: {e}", self.log.level),
            )?;
        }
        for (role, secret) in &self.admin.roles {
            if role.is_empty() {
                invalid_err("admin.roles", "a role name is empty")?;
            }
            if let Err(e) = crate::admin::scram::Verifier::parse(secret) {
                invalid_err(
                    "admin.roles",
                    format!("the secret of role `{role}` is not a SCRAM-SHA-256 secret ({e}); make one with `pgbranch admin-secret`"),
                )?;
            }
        }
        for (table, d) in &self.time_travel.retention_by_table {
            if let Err(e) = parse_duration(d) {
                invalid_err("time_travel.retention_by_table", format!("{table}: {e}"))?;
            }
        }
        for p in &self.time_travel.versioned_tables {
            if !p.contains('.') {
                invalid_err(
                    "time_travel.versioned_tables",
                    format!("`{p}` must name schema.table (e.g. public.* or public.orders)"),
                )?;
            }
        }
        if self.time_travel.prune_batch == 0 {
            invalid_err("time_travel.prune_batch", "must be at least 1")?;
        }
        if self.time_travel.prune_interval.is_zero() {
            invalid_err("time_travel.prune_interval", "must be positive")?;
        }
        if self.metrics.max_branch_labels == 0 {
            invalid_err("metrics.max_branch_labels", "must be at least 1")?;
        }
        if matches!(
            self.upstream.tls,
            UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull
        ) && self.upstream.ca_file.is_none()
        {
            invalid_err("upstream.ca_file", "required for verify-ca and verify-full")?;
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|e| invalid("listen", format!("`{}`: {e}", self.listen)))
    }

    /// Whether TLS is offered to clients.
    pub fn client_tls_enabled(&self) -> bool {
        self.tls.mode != ClientTlsMode::Disable && self.tls.cert_file.is_some()
    }
}

/// When a changed setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// At reload, also in open sessions.
    Reload,
    /// At reload, for connections opened afterwards.
    NewConnections,
    /// Only when pgbranch restarts.
    Restart,
}

impl Applies {
    pub fn label(self) -> &'static str {
        match self {
            Applies::Reload => "reload",
            Applies::NewConnections => "reload (new connections)",
            Applies::Restart => "restart",
        }
    }
}

/// One setting as the admin console's SHOW CONFIG prints it.
#[derive(Debug, Clone)]
pub struct Setting {
    pub key: &'static str,
    /// The value as text; secrets are masked.
    pub value: String,
    pub applies: Applies,
}

/// Every setting of `c`, in the order of config/pgbranch.toml, with
/// passwords and admin secrets masked.
pub fn settings(c: &Config) -> Vec<Setting> {
    use Applies::*;
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let secs = |d: Duration| format!("{}ms", d.as_millis());
    let mode = |m: &dyn std::fmt::Debug| format!("{m:?}").to_ascii_lowercase();
    let upstream_tls = match c.upstream.tls {
        UpstreamTlsMode::Disable => "disable",
        UpstreamTlsMode::Require => "require",
        UpstreamTlsMode::VerifyCa => "verify-ca",
        UpstreamTlsMode::VerifyFull => "verify-full",
    };
    let row = |key, value: String, applies| Setting {
        key,
        value,
        applies,
    };
    vec![
        row("listen", c.listen.clone(), Restart),
        row("unix_socket_dir", path(&c.unix_socket_dir), Restart),
        row(
            "max_client_connections",
            c.max_client_connections.to_string(),
            Restart,
        ),
        row(
            "max_message_size",
            c.max_message_size.to_string(),
            NewConnections,
        ),
        row(
            "handshake_timeout",
            secs(c.handshake_timeout),
            NewConnections,
        ),
        row("connect_timeout", secs(c.connect_timeout), Restart),
        row("shutdown_timeout", secs(c.shutdown_timeout), Reload),
        row(
            "relay_buffer_size",
            c.relay_buffer_size.to_string(),
            NewConnections,
        ),
        row("workers", c.workers.to_string(), Restart),
        row(
            "upstream.url",
            c.upstream
                .url
                .as_deref()
                .map(crate::proxy::upstream::redact_password)
                .unwrap_or_else(|| "(embedded)".into()),
            Restart,
        ),
        row("upstream.tls", upstream_tls.into(), Restart),
        row("upstream.ca_file", path(&c.upstream.ca_file), Restart),
        row("tls.cert_file", path(&c.tls.cert_file), NewConnections),
        row("tls.key_file", path(&c.tls.key_file), NewConnections),
        row("tls.mode", mode(&c.tls.mode), NewConnections),
        row("embedded.data_dir", path(&c.embedded.data_dir), Restart),
        row("embedded.pg_bindir", path(&c.embedded.pg_bindir), Restart),
        row("log.level", c.log.level.clone(), Reload),
        row("log.format", mode(&c.log.format), Restart),
        row(
            "log.slow_statement_threshold",
            secs(c.log.slow_statement_threshold),
            Reload,
        ),
        row("history.enabled", c.history.enabled.to_string(), Restart),
        row(
            "branches.protected",
            c.branches.protected.join(", "),
            Reload,
        ),
        row("metrics.listen", c.metrics.listen.clone(), Restart),
        row(
            "metrics.max_branch_labels",
            c.metrics.max_branch_labels.to_string(),
            Reload,
        ),
        row(
            "metrics.drift_check_interval",
            secs(c.metrics.drift_check_interval),
            Reload,
        ),
        row(
            "admin.roles",
            c.admin.roles.keys().cloned().collect::<Vec<_>>().join(", "),
            Reload,
        ),
        row("admin.pause_timeout", secs(c.admin.pause_timeout), Reload),
        row(
            "time_travel.versioned_tables",
            c.time_travel.versioned_tables.join(", "),
            Reload,
        ),
        row(
            "time_travel.retention",
            secs(c.time_travel.retention),
            Reload,
        ),
        row(
            "time_travel.retention_by_table",
            c.time_travel
                .retention_by_table
                .iter()
                .map(|(t, d)| format!("{t}={d}"))
                .collect::<Vec<_>>()
                .join(", "),
            Reload,
        ),
        row(
            "time_travel.prune_interval",
            secs(c.time_travel.prune_interval),
            Reload,
        ),
        row(
            "time_travel.prune_batch",
            c.time_travel.prune_batch.to_string(),
            Reload,
        ),
    ]
}

fn invalid_err(key: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(invalid(key, message))
}

/// A TOML syntax error without the quoted source line, which may hold a
/// secret (an upstream password, an admin secret): the message and where.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{} (line {line}, column {column})", e.message())
        }
        None => e.message().to_string(),
    }
}

/// Applies one `PGBRANCH_*` variable to the TOML table.
fn apply_env(table: &mut toml::Table, key: &str, raw: &str, var: &str) -> Result<(), ConfigError> {
    // Values that parse as TOML (numbers, booleans, arrays) keep their
    // type; anything else is a string.
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    if SECTIONS.contains(&key) {
        return Err(ConfigError::Parse {
            origin: Some(var.to_string()),
            message: format!(
                "`{key}` is a section; set one of its keys, e.g. PGBRANCH_{}_<KEY>",
                key.to_ascii_uppercase()
            ),
        });
    }
    let (target, field) = match SECTIONS.iter().find(|s| key.starts_with(&format!("{s}_"))) {
        Some(section) => {
            let field = &key[section.len() + 1..];
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = entry else {
                return Err(ConfigError::Parse {
                    origin: Some(var.to_string()),
                    message: format!("`{section}` is not a table"),
                });
            };
            (t, field)
        }
        None => (table, key),
    };
    // Paths and URLs must stay strings even when they look like numbers.
    let value = match (&value, field) {
        (toml::Value::String(_), _) => value,
        (_, f) if f.ends_with("_file") || f.ends_with("_dir") || f == "url" || f == "listen" => {
            toml::Value::String(raw.to_string())
        }
        _ => value,
    };
    target.insert(field.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml_text).unwrap();
        Config::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            &Overrides::default(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, vec![], &Overrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:6432");
        assert!(c.upstream.url.is_none());
        assert_eq!(c.handshake_timeout, Duration::from_secs(30));
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        let c = load(
            "listen = \"127.0.0.1:7000\"\nhandshake_timeout = \"250ms\"\n[upstream]\nurl = \"postgres://a@h:1/db\"\n",
            &[
                ("PGBRANCH_LISTEN", "127.0.0.1:7001"),
                ("PGBRANCH_MAX_MESSAGE_SIZE", "4096"),
                ("PGBRANCH_LOG_FORMAT", "json"),
                ("PGBRANCH_LOG", "debug"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:7001");
        assert_eq!(c.max_message_size, 4096);
        assert_eq!(c.handshake_timeout, Duration::from_millis(250));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.upstream.url.as_deref(), Some("postgres://a@h:1/db"));

        let c = Config::load(
            None,
            vec![("PGBRANCH_UPSTREAM_URL".into(), "postgres://x@y/z".into())],
            &Overrides {
                upstream: Some("host=/tmp port=5".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.upstream.url.as_deref(), Some("host=/tmp port=5"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("lisen = \"x\"", &[]).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = load("listen = \"nope\"", &[]).unwrap_err().to_string();
        assert!(e.contains("`listen`"), "{e}");
        let e = load(
            "[tls]\ncert_file = \"/nonexistent\"\nkey_file = \"/nonexistent\"",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tls.cert_file"), "{e}");
        let e = load("handshake_timeout = \"3 fortnights\"", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fortnights"), "{e}");
        let e = load("[upstream]\ntls = \"verify-full\"", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream.ca_file"), "{e}");
        let e = load("", &[("PGBRANCH_UPSTREAM", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGBRANCH_UPSTREAM_<KEY>"), "{e}");
        let e = load("", &[("PGBRANCH_UPSTREAM_URL", "postgres://h:notaport/db")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream.url"), "{e}");
    }

    #[test]
    fn example_config_file_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pgbranch.toml");
        let c = Config::load(Some(&path), vec![], &Overrides::default()).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.max_message_size, d.max_message_size);
        assert_eq!(c.relay_buffer_size, d.relay_buffer_size);
        assert_eq!(c.handshake_timeout, d.handshake_timeout);
        assert_eq!(c.shutdown_timeout, d.shutdown_timeout);
        assert_eq!(c.tls.mode, d.tls.mode);
        assert_eq!(c.log.level, d.log.level);
        assert_eq!(c.branches.protected, d.branches.protected);
        assert_eq!(c.metrics.max_branch_labels, d.metrics.max_branch_labels);
        assert_eq!(
            c.log.slow_statement_threshold,
            d.log.slow_statement_threshold
        );
        assert_eq!(
            c.metrics.drift_check_interval,
            d.metrics.drift_check_interval
        );
        assert_eq!(c.admin.pause_timeout, d.admin.pause_timeout);
        assert!(c.admin.roles.is_empty());
        assert_eq!(c.time_travel.retention, d.time_travel.retention);
        assert_eq!(c.time_travel.prune_interval, d.time_travel.prune_interval);
        assert_eq!(c.time_travel.prune_batch, d.time_travel.prune_batch);
        assert!(c.time_travel.versioned_tables.is_empty());
        assert!(c.time_travel.retention_by_table.is_empty());
    }

    #[test]
    fn admin_roles_need_scram_secrets_and_levels_must_parse() {
        let secret = crate::admin::scram::Verifier::from_password("pw").to_string();
        let c = load(&format!("[admin]\nroles = {{ ops = \"{secret}\" }}"), &[]).unwrap();
        assert!(c.admin.roles.contains_key("ops"));
        assert!(
            !format!("{c:?}").contains("SCRAM-SHA-256$"),
            "no secret in Debug"
        );
        let e = load("[admin]\nroles = { ops = \"hunter2\" }", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("admin.roles") && e.contains("admin-secret"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = load("[log]\nlevel = \"pgbranch=loud\"", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level"), "{e}");
    }

    #[test]
    fn protected_branches_come_from_the_environment_as_a_list() {
        let c = Config::load(
            None,
            vec![(
                "PGBRANCH_BRANCHES_PROTECTED".to_string(),
                "[\"main\", \"release/1\"]".to_string(),
            )],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.branches.protected, ["main", "release/1"]);
    }

    #[test]
    fn syntax_errors_do_not_quote_the_line() {
        let e = load(
            "listen = \"127.0.0.1:1\"\n[upstream]\nurl = \"postgres://u:hunter2@h/db\" x\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn versioned_table_patterns_match_whole_names() {
        let t = TimeTravelConfig {
            versioned_tables: vec!["public.*".into(), "app.orders".into()],
            ..TimeTravelConfig::default()
        };
        assert!(t.auto_versioned("public.users"));
        assert!(t.auto_versioned("app.orders"));
        assert!(!t.auto_versioned("app.orders_old"));
        assert!(!t.auto_versioned("other.users"));
        assert!(!t.prunes());
        let e = load("[time_travel]\nversioned_tables = [\"users\"]", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("time_travel.versioned_tables"), "{e}");
        let c = load(
            "[time_travel]\nretention = \"30d\"\nretention_by_table = { \"public.audit\" = \"7d\" }",
            &[],
        )
        .unwrap();
        assert_eq!(c.time_travel.retention, Duration::from_secs(30 * 86_400));
        assert!(c.time_travel.prunes());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("x").is_err());
    }
}
