//! `pgbranch branch create | list | drop`, `pgbranch merge` and
//! `pgbranch diff <branch> <other>`: the branch commands straight against
//! a database (no proxy needed), as the role in the URL. They call the
//! same SQL functions as the commands through the proxy.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::history::{connect, connect_migrated, DbUrl};
use crate::history::report::{self, Definition};

#[derive(Subcommand, Debug)]
pub enum BranchCommand {
    /// Create a branch: a copy of the parent's versioned schemas.
    Create {
        #[command(flatten)]
        db: DbUrl,
        /// Name of the new branch.
        name: String,
        /// Branch to copy (default: main).
        #[arg(long, default_value = "main")]
        from: String,
        /// Copy the rows too (default: schema only).
        #[arg(long)]
        with_data: bool,
    },
    /// List the branches.
    List {
        #[command(flatten)]
        db: DbUrl,
    },
    /// Drop a branch and its schemas.
    Drop {
        #[command(flatten)]
        db: DbUrl,
        name: String,
        /// No error when it does not exist.
        #[arg(long)]
        if_exists: bool,
        /// Drop it even while sessions use it.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    #[command(flatten)]
    pub db: DbUrl,
    /// The branch to merge.
    pub name: String,
    /// The branch to merge into (default and only choice: its parent).
    #[arg(long)]
    pub into: Option<String>,
    /// Show the plan (or the conflicts) without applying anything.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn branch(command: BranchCommand) -> Result<ExitCode> {
    match command {
        BranchCommand::Create {
            db,
            name,
            from,
            with_data,
        } => {
            let client = connect_migrated(&db.database_url, "checking the pgbranch schema").await?;
            let statement = format!(
                "pgbranch branch create {name} --from {from}{}",
                if with_data { " --with-data" } else { "" }
            );
            let row = client
                .query_one(
                    "SELECT objects, tables, rows_copied FROM pgbranch.create_branch($1, $2, $3, $4, NULL)",
                    &[&name, &from, &with_data, &statement],
                )
                .await?;
            let (objects, tables, rows): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            println!("created branch {name} from {from}: {objects} objects");
            if with_data {
                println!("copied {rows} rows of {tables} tables");
            }
            Ok(ExitCode::SUCCESS)
        }
        BranchCommand::List { db } => {
            let client = connect(&db.database_url).await?;
            let rows = client
                .query(
                    "SELECT name, coalesce(parent, ''), coalesce(parent_version::text, ''), \
                            to_char(created_at, 'YYYY-MM-DD HH24:MI:SS'), created_by::text, version, \
                            pg_size_pretty(size) \
                     FROM pgbranch.list_branches()",
                    &[],
                )
                .await
                .context("reading the branches (is pgbranch set up in this database?)")?;
            println!(
                "{:<24} {:<16} {:>6} {:<19} {:<12} {:>7} {:>10}",
                "name", "parent", "base", "created at", "created by", "version", "size"
            );
            for r in rows {
                println!(
                    "{:<24} {:<16} {:>6} {:<19} {:<12} {:>7} {:>10}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                    r.get::<_, i64>(5),
                    r.get::<_, String>(6)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BranchCommand::Drop {
            db,
            name,
            if_exists,
            force,
        } => {
            let client = connect(&db.database_url).await?;
            let row = client
                .query_one(
                    "SELECT dropped FROM pgbranch.drop_branch($1, $2, $3)",
                    &[&name, &if_exists, &force],
                )
                .await?;
            if row.get::<_, bool>(0) {
                println!("dropped branch {name}");
            } else {
                println!("branch {name} does not exist, skipping");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `pgbranch merge`: exit status 1 when there are conflicts.
pub async fn merge(args: MergeArgs) -> Result<ExitCode> {
    let client = connect(&args.db.database_url).await?;
    let rows = client
        .query(
            "SELECT step, coalesce(branch_version::text, ''), object_type, identity, \
                    coalesce(statement, ''), status \
             FROM pgbranch.merge_branch($1, $2, $3, NULL, current_setting('search_path'))",
            &[&args.name, &args.into, &args.dry_run],
        )
        .await?;
    let conflicts = rows
        .iter()
        .filter(|r| r.get::<_, String>(5) == "conflict")
        .count();
    if conflicts > 0 {
        println!("{conflicts} conflict(s): changed on both sides since the branch started");
        for r in &rows {
            println!("  {} {}", r.get::<_, String>(2), r.get::<_, String>(3));
        }
        return Ok(ExitCode::from(1));
    }
    if rows.is_empty() {
        println!("nothing to merge");
    }
    for r in &rows {
        println!(
            "-- {} (branch version {}): {}",
            r.get::<_, String>(5),
            r.get::<_, String>(1),
            r.get::<_, String>(3)
        );
        println!("{};", r.get::<_, String>(4));
    }
    Ok(ExitCode::SUCCESS)
}

/// `pgbranch diff <branch> [<other>]`: unified diff from `other` (default:
/// the branch's parent) to `branch`; exit status 1 when they differ.
pub async fn diff(database_url: &str, branch: &str, other: Option<&str>) -> Result<ExitCode> {
    let client = connect(database_url).await?;
    let rows = client
        .query(
            "SELECT object_type, identity, definition, other_definition, \
                    (SELECT coalesce($2, parent, 'main') FROM pgbranch.branches WHERE name = $1) \
             FROM pgbranch.diff_branches($1, $2)",
            &[&branch, &other],
        )
        .await?;
    let other_name = rows
        .first()
        .and_then(|r| r.get::<_, Option<String>>(4))
        .unwrap_or_else(|| other.unwrap_or("main").to_string());
    let side = |col: usize| -> Vec<Definition> {
        rows.iter()
            .filter_map(|r| {
                r.get::<_, Option<String>>(col)
                    .map(|definition| Definition {
                        object_type: r.get(0),
                        identity: r.get(1),
                        definition,
                    })
            })
            .collect()
    };
    print!(
        "{}",
        report::diff_named(&side(3), &side(2), &other_name, branch)
    );
    Ok(if rows.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
