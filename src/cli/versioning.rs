//! `pgbranch versioning apply | list`: system versioning straight against
//! a database, as the role in the URL (who must own the tables it
//! versions). `apply` versions the existing tables that match
//! `time_travel.versioned_tables` (from `--config`) or `--pattern`: the
//! proxy versions matching tables when they are created through it, this
//! brings the ones that already exist.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::history::{connect, connect_migrated, DbUrl};
use crate::config::{Config, Overrides};

#[derive(Subcommand, Debug)]
pub enum VersioningCommand {
    /// Version the existing tables whose schema.table matches the
    /// patterns (tables without a primary key are skipped).
    Apply {
        #[command(flatten)]
        db: DbUrl,
        /// Configuration file whose time_travel.versioned_tables to use.
        #[arg(long, env = "PGBRANCH_CONFIG")]
        config: Option<PathBuf>,
        /// A pattern (schema.table, * for any characters); repeatable;
        /// replaces the configuration's.
        #[arg(long = "pattern")]
        patterns: Vec<String>,
    },
    /// List the versioned tables and the size of their history.
    List {
        #[command(flatten)]
        db: DbUrl,
    },
}

pub async fn versioning(command: VersioningCommand) -> Result<ExitCode> {
    match command {
        VersioningCommand::Apply {
            db,
            config,
            patterns,
        } => {
            let patterns = if patterns.is_empty() {
                Config::load(config.as_deref(), std::env::vars(), &Overrides::default())?
                    .time_travel
                    .versioned_tables
            } else {
                patterns
            };
            if patterns.is_empty() {
                anyhow::bail!(
                    "no patterns: give --pattern schema.table (e.g. public.*) or a --config with time_travel.versioned_tables"
                );
            }
            let client = connect_migrated(&db.database_url, "checking the pgbranch schema").await?;
            let rows = client
                .query(
                    "SELECT c.oid::regclass::text, pgbranch.enable_versioning_matching(c.oid::regclass, $1)
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind = 'r' AND c.relpersistence = 'p'
                       AND n.nspname NOT IN ('pgbranch', 'pgbranch_history', 'information_schema')
                       AND left(n.nspname, 3) <> 'pg_'
                       AND NOT EXISTS (SELECT 1 FROM pgbranch.versioned_tables v WHERE v.relid = c.oid)
                     ORDER BY 1",
                    &[&patterns],
                )
                .await
                .context("versioning the matching tables")?;
            let mut versioned = 0;
            for r in &rows {
                if let Some(said) = r.get::<_, Option<String>>(1) {
                    println!("{said}");
                    versioned += 1;
                }
            }
            println!("{versioned} table(s) versioned");
            Ok(ExitCode::SUCCESS)
        }
        VersioningCommand::List { db } => {
            let client = connect(&db.database_url).await?;
            let rows = client
                .query(
                    "SELECT v.table_name, to_char(v.enabled_at, 'YYYY-MM-DD HH24:MI:SS'),
                            to_char(v.history_from, 'YYYY-MM-DD HH24:MI:SS'),
                            CASE WHEN v.relid IS NULL THEN 'dropped' ELSE '' END,
                            pg_size_pretty(pg_total_relation_size(format('pgbranch_history.%I', v.history)::regclass))
                     FROM pgbranch.versioned_tables v ORDER BY v.id",
                    &[],
                )
                .await
                .context("reading the versioned tables (is pgbranch set up in this database?)")?;
            println!(
                "{:<32} {:<19} {:<19} {:<8} {:>10}",
                "table", "enabled at", "history from", "state", "history"
            );
            for r in rows {
                println!(
                    "{:<32} {:<19} {:<19} {:<8} {:>10}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
