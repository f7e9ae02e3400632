//! Settings that change while the proxy runs. `SIGHUP` and the admin
//! console's `RELOAD` read the configuration again (file, environment,
//! flags), validate it whole, and apply it only when it is valid: an
//! invalid one is refused with its reason and the old one stays.
//!
//! What a reload changes (docs/operations.md, "Reload"; `config::settings`
//! says it per key):
//! - at once, also for open sessions: `branches.protected`,
//!   `log.level`, `log.slow_statement_threshold` (when statements are
//!   timed), `metrics.max_branch_labels` (for branches not labelled yet),
//!   `metrics.drift_check_interval` (from the check after the current
//!   wait), `admin.*`, `shutdown_timeout` (read when shutdown begins);
//! - for connections opened afterwards: `tls.*` (certificate, key, mode),
//!   `handshake_timeout`, `max_message_size`, `relay_buffer_size`;
//! - nothing until a restart: the settings [`restart_only`] lists. A
//!   changed one is reported and its running value kept.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use super::ProxyContext;
use crate::admin::scram::Verifier;
use crate::config::{settings, Config, ConfigError};

/// Reads the configuration again, as at startup.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Applies a new `log.level` filter to the running logger.
pub type LogReloader = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Settings read by open sessions' hooks, changed in place by a reload.
#[derive(Debug, Default)]
pub struct Tunables {
    /// `branches.protected`: read only when a session sends DDL.
    pub protected: RwLock<Vec<String>>,
    /// `log.slow_statement_threshold` in nanoseconds; 0: off.
    pub slow_ns: AtomicU64,
    /// `time_travel.versioned_tables`: read when a table is created.
    pub versioned_tables: RwLock<Vec<String>>,
}

impl Tunables {
    pub fn new(config: &Config) -> Arc<Self> {
        let t = Arc::new(Self::default());
        t.apply(config);
        t
    }

    fn apply(&self, config: &Config) {
        *self.protected.write().unwrap_or_else(|e| e.into_inner()) =
            config.branches.protected.clone();
        self.slow_ns.store(
            config.log.slow_statement_threshold.as_nanos() as u64,
            Relaxed,
        );
        *self
            .versioned_tables
            .write()
            .unwrap_or_else(|e| e.into_inner()) = config.time_travel.versioned_tables.clone();
    }

    /// Whether DDL sent directly is refused on `branch`.
    pub fn is_protected(&self, branch: &str) -> bool {
        self.protected
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|b| b == branch)
    }
}

/// The admin console's roles, with their secrets parsed.
#[derive(Debug, Default)]
pub struct AdminRoles {
    pub roles: std::collections::BTreeMap<String, Verifier>,
    /// Key of the mock secrets for unknown roles: derived from the
    /// configured secrets, so it is the same after a restart (an unknown
    /// role's salt never changes, like a real one's) and unknown to anyone
    /// who does not know them.
    pub mock_key: [u8; 32],
}

impl AdminRoles {
    /// From a validated configuration (unparsable secrets are left out;
    /// `Config::validate` refuses them first).
    pub fn from_config(config: &Config) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"pgbranch admin console mock secrets\0");
        for (name, secret) in &config.admin.roles {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(secret.as_bytes());
            h.update([0]);
        }
        Self {
            mock_key: h.finalize().into(),
            roles: config
                .admin
                .roles
                .iter()
                .filter_map(|(name, secret)| Some((name.clone(), Verifier::parse(secret).ok()?)))
                .collect(),
        }
    }
}

/// Settings that take effect only when pgbranch restarts: what the
/// listeners, the runtime and the upstream connector were built from.
pub fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    // `config::settings` says which keys need a restart; a key changed
    // when its shown value did (a changed password in upstream.url is
    // masked alike, so it goes unreported).
    settings(old)
        .into_iter()
        .zip(settings(new))
        .filter(|(a, b)| a.applies == crate::config::Applies::Restart && a.value != b.value)
        .map(|(a, _)| a.key)
        .collect()
}

/// Copies the restart-only settings of `running` into `new`, so the
/// configuration in force says what actually runs.
pub fn keep_restart_only(running: &Config, new: &mut Config) {
    new.listen = running.listen.clone();
    new.unix_socket_dir = running.unix_socket_dir.clone();
    new.max_client_connections = running.max_client_connections;
    new.workers = running.workers;
    new.connect_timeout = running.connect_timeout;
    new.upstream = running.upstream.clone();
    new.embedded = running.embedded.clone();
    new.log.format = running.log.format;
    new.history.enabled = running.history.enabled;
    new.metrics.listen = running.metrics.listen.clone();
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Settings now in force with a new value.
    pub applied: Vec<String>,
    /// Settings that changed in the file but wait for a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload was refused (the old configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this pgbranch was started without a configuration source to read again")]
    NoSource,
    #[error("{0}")]
    Invalid(String),
}

/// The TLS acceptor a configuration asks for (`None`: TLS not offered).
pub fn client_tls(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) if config.client_tls_enabled() => Ok(Some(
            tokio_rustls::TlsAcceptor::from(super::tls::server_config(cert, key)?),
        )),
        _ => Ok(None),
    }
}

impl ProxyContext {
    /// Reads the configuration again and applies it; see the module
    /// documentation for what changes when. An invalid configuration
    /// (unreadable file, bad value, unloadable certificate) changes
    /// nothing.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let source = self.reload_source.get().ok_or(ReloadError::NoSource)?;
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = source().map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let old = self.config();
        let mut needs_restart = restart_only(&old, &new);
        // Settings whose machinery was not started: they would change
        // nothing until a restart.
        let idle: &[(&'static str, bool)] = &[
            (
                "log.slow_statement_threshold",
                !self.timed && old.log.slow_statement_threshold != new.log.slow_statement_threshold,
            ),
            (
                "metrics.max_branch_labels",
                old.metrics.listen.is_empty()
                    && old.metrics.max_branch_labels != new.metrics.max_branch_labels,
            ),
            (
                "metrics.drift_check_interval",
                old.metrics.listen.is_empty()
                    && old.metrics.drift_check_interval != new.metrics.drift_check_interval,
            ),
        ];
        needs_restart.extend(idle.iter().filter(|(_, idle)| *idle).map(|(k, _)| *k));
        if needs_restart.contains(&"log.slow_statement_threshold") {
            new.log.slow_statement_threshold = old.log.slow_statement_threshold;
        }
        if old.metrics.listen.is_empty() {
            new.metrics.max_branch_labels = old.metrics.max_branch_labels;
            new.metrics.drift_check_interval = old.metrics.drift_check_interval;
        }
        keep_restart_only(&old, &mut new);
        // Everything that can fail, before anything changes.
        let tls = client_tls(&new).map_err(ReloadError::Invalid)?;
        let mut applied: Vec<String> = settings(&old)
            .into_iter()
            .zip(settings(&new))
            .filter(|(a, b)| a.value != b.value && !needs_restart.contains(&a.key))
            .map(|(a, _)| a.key.to_string())
            .collect();
        if old.admin.roles != new.admin.roles && !applied.iter().any(|k| k == "admin.roles") {
            applied.push("admin.roles".into());
        }
        // A reload re-reads certificate files even when their names did
        // not change (a renewed certificate under the same name).
        if tls.is_some() && !applied.iter().any(|k| k.starts_with("tls.")) {
            applied.push("tls (certificate files read again)".into());
        }
        if old.log.level != new.log.level {
            if let Some(set_level) = self.log_reloader.get() {
                set_level(&new.log.level).map_err(ReloadError::Invalid)?;
            }
        }
        self.tunables.apply(&new);
        self.metrics
            .statements
            .set_max_branch_labels(new.metrics.max_branch_labels);
        *self.admin.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(AdminRoles::from_config(&new));
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(super::Live {
            config: Arc::new(new),
            tls,
        });
        Ok(ReloadReport {
            applied,
            needs_restart,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_are_reported_and_kept() {
        let old = Config::default();
        let mut new = Config {
            listen: "127.0.0.1:7777".into(),
            ..Config::default()
        };
        new.metrics.listen = String::new();
        new.branches.protected = vec!["main".into()];
        assert_eq!(restart_only(&old, &new), ["listen", "metrics.listen"]);
        keep_restart_only(&old, &mut new);
        assert!(restart_only(&old, &new).is_empty());
        assert_eq!(new.branches.protected, ["main"]);
    }

    #[test]
    fn keep_restart_only_covers_every_restart_only_setting() {
        let old = Config::default();
        let mut new = Config {
            listen: "127.0.0.1:1".into(),
            unix_socket_dir: Some("/tmp/x".into()),
            max_client_connections: 7,
            workers: 3,
            connect_timeout: std::time::Duration::from_secs(9),
            ..Config::default()
        };
        new.upstream.url = Some("postgres://h/db".into());
        new.upstream.tls = crate::config::UpstreamTlsMode::Require;
        new.upstream.ca_file = Some("/tmp/ca".into());
        new.embedded.data_dir = Some("/tmp/d".into());
        new.embedded.pg_bindir = Some("/tmp/b".into());
        new.log.format = crate::config::LogFormat::Json;
        new.history.enabled = false;
        new.metrics.listen = String::new();
        let restart: Vec<&str> = settings(&old)
            .into_iter()
            .filter(|s| s.applies == crate::config::Applies::Restart)
            .map(|s| s.key)
            .collect();
        assert_eq!(restart_only(&old, &new), restart, "every one changed");
        keep_restart_only(&old, &mut new);
        assert!(restart_only(&old, &new).is_empty());
    }

    #[test]
    fn tunables_follow_the_config() {
        let mut c = Config::default();
        c.branches.protected = vec!["main".into()];
        c.log.slow_statement_threshold = std::time::Duration::from_millis(5);
        let t = Tunables::new(&c);
        assert!(t.is_protected("main"));
        assert!(!t.is_protected("feature"));
        assert_eq!(t.slow_ns.load(Relaxed), 5_000_000);
        c.branches.protected.clear();
        t.apply(&c);
        assert!(!t.is_protected("main"));
    }
}
