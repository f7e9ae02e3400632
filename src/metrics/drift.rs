//! `pgbranch_schema_drift_objects`: objects whose live definition differs
//! from the recorded history on branch `main`, per database, as
//! `pgbranch.drift('main')` counts them.
//!
//! Background work, so only when configured (DESIGN.md, "No privilege
//! escalation"): every `metrics.drift_check_interval` (default 0: never),
//! a background task opens one
//! connection per watched database as the upstream URL's user (the
//! proxy's own probes' role) and runs the count. Watched: the databases
//! client sessions used since pgbranch started, at most
//! [`MAX_DATABASES`]. A database without pgbranch's metadata, or that the
//! probe role cannot reach, has no series (the reason is logged at DEBUG).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tracing::debug;

use crate::proxy::ProxyContext;

/// Most databases watched (label values of the gauge).
pub const MAX_DATABASES: usize = 100;

/// Time allowed for one database's check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The last count per watched database (`None`: not known).
#[derive(Debug, Default)]
pub struct DriftGauge {
    counts: DashMap<String, Option<i64>>,
}

impl DriftGauge {
    /// A session used `database`: watch it.
    pub fn watch(&self, database: &str) {
        if !self.counts.contains_key(database) && self.counts.len() < MAX_DATABASES {
            self.counts.entry(database.to_string()).or_insert(None);
        }
    }

    fn set(&self, database: &str, count: Option<i64>) {
        if let Some(mut v) = self.counts.get_mut(database) {
            *v = count;
        }
    }

    /// Appends the gauge in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP pgbranch_schema_drift_objects Objects whose live definition differs from pgbranch's recorded history on branch main (changed outside pgbranch), per database; checked every metrics.drift_check_interval.\n");
        out.push_str("# TYPE pgbranch_schema_drift_objects gauge\n");
        let mut rows: Vec<(String, i64)> = self
            .counts
            .iter()
            .filter_map(|e| Some((e.key().clone(), (*e.value())?)))
            .collect();
        rows.sort();
        for (db, n) in rows {
            let _ = writeln!(
                out,
                "pgbranch_schema_drift_objects{{database=\"{}\"}} {n}",
                super::stmt::escape(&db)
            );
        }
    }

    /// The databases client sessions used (at most [`MAX_DATABASES`]).
    pub fn databases(&self) -> Vec<String> {
        self.counts.iter().map(|e| e.key().clone()).collect()
    }
}

/// Checks the watched databases every `metrics.drift_check_interval`
/// (read again after each round, so a reload changes it; `0`: off) until
/// shutdown.
pub async fn run(ctx: Arc<ProxyContext>) {
    loop {
        let interval = ctx.config().metrics.drift_check_interval;
        let wait = if interval.is_zero() {
            // Off: look again later, in case a reload turns it on.
            Duration::from_secs(5)
        } else {
            interval
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if interval.is_zero() {
            continue;
        }
        for db in ctx.metrics.drift.databases() {
            let count = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                r = tokio::time::timeout(CHECK_TIMEOUT, count(&ctx, &db)) => r,
            };
            let count = match count {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    debug!(database = %db, error = %e, "drift check failed");
                    None
                }
                Err(_) => {
                    debug!(database = %db, "drift check timed out");
                    None
                }
            };
            ctx.metrics.drift.set(&db, count);
        }
    }
}

/// `pgbranch.drift('main')`'s row count in `database`; `None` when the
/// database has no pgbranch metadata.
async fn count(ctx: &ProxyContext, database: &str) -> Result<Option<i64>, String> {
    let probe = crate::proxy::probe::Probe::connect(ctx, database).await?;
    let client = &probe.client;
    let exists = client
        .query_one("SELECT to_regnamespace('pgbranch') IS NOT NULL", &[])
        .await
        .map_err(|e| e.to_string())?
        .get::<_, bool>(0);
    let n = if exists {
        let row = client
            .query_one("SELECT count(*) FROM pgbranch.drift('main')", &[])
            .await
            .map_err(|e| e.to_string())?;
        Some(row.get::<_, i64>(0))
    } else {
        None
    };
    probe.close().await;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_counts_are_rendered_and_databases_are_capped() {
        let g = DriftGauge::default();
        g.watch("shop");
        g.watch("blog");
        g.set("shop", Some(3));
        let mut out = String::new();
        g.render(&mut out);
        assert!(
            out.contains("pgbranch_schema_drift_objects{database=\"shop\"} 3\n"),
            "{out}"
        );
        assert!(!out.contains("blog"), "{out}");
        for i in 0..2 * MAX_DATABASES {
            g.watch(&format!("db{i}"));
        }
        assert_eq!(g.databases().len(), MAX_DATABASES);
    }
}
