//! History retention: every `time_travel.prune_interval`, in each
//! database client sessions used, deletes row versions that ended longer
//! ago than their table's retention, `time_travel.prune_batch` at a time
//! (one short transaction each, so no long lock), as the upstream URL's
//! user — who must own schema pgbranch or have been granted EXECUTE on
//! `pgbranch.prune_history`. Runs only when a retention is configured.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::config::{parse_duration, TimeTravelConfig};
use crate::proxy::probe::Probe;
use crate::proxy::ProxyContext;

/// Prunes until shutdown (reads the configuration again every round, so a
/// reload changes retention, interval and batch).
pub async fn run(ctx: Arc<ProxyContext>) {
    loop {
        let config = ctx.config().time_travel.clone();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.prune_interval) => {}
        }
        if !config.prunes() {
            continue;
        }
        for db in ctx.metrics.drift.databases() {
            let pruned = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                r = prune(&ctx, &db, &config) => r,
            };
            match pruned {
                Ok(0) => {}
                Ok(n) => {
                    info!(database = %db, versions = n, "history retention: old row versions deleted")
                }
                Err(e) => debug!(database = %db, error = %e, "history retention did not run"),
            }
        }
    }
}

/// One database: batches until fewer than a batch remain.
async fn prune(
    ctx: &ProxyContext,
    database: &str,
    config: &TimeTravelConfig,
) -> Result<u64, String> {
    let probe = Probe::connect(ctx, database).await?;
    let client = &probe.client;
    let ready: bool = client
        .query_one(
            "SELECT to_regprocedure('pgbranch.prune_history(bigint, text[], bigint[], integer)') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if !ready {
        probe.close().await;
        return Ok(0);
    }
    let (tables, millis): (Vec<String>, Vec<i64>) = config
        .retention_by_table
        .iter()
        .filter_map(|(t, d)| Some((t.clone(), parse_duration(d).ok()?.as_millis() as i64)))
        .unzip();
    let default = config.retention.as_millis() as i64;
    let batch = config.prune_batch.min(i32::MAX as usize) as i32;
    let mut total = 0u64;
    loop {
        let n: i64 = match client
            .query_one(
                "SELECT pgbranch.prune_history($1, $2, $3, $4)",
                &[&default, &tables, &millis, &batch],
            )
            .await
        {
            Ok(row) => row.get(0),
            Err(e) => {
                warn!(database, error = %e, "history retention failed (the upstream URL's user must own schema pgbranch or be granted EXECUTE on pgbranch.prune_history)");
                break;
            }
        };
        total += n as u64;
        if n < i64::from(batch) {
            break;
        }
        // Let other work in between batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    probe.close().await;
    Ok(total)
}
