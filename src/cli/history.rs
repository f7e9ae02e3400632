//! `pgbranch init | log | show | diff | drift | export`: the DDL history
//! read straight from a database (no proxy needed), as the role in the URL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::history::migrate::{latest_version, migrate_sql};
use crate::history::report::{self, LogFilter};

#[derive(clap::Args, Debug)]
pub struct DbArgs {
    /// Database to read, e.g. postgres://user@host:5432/app (TLS is not
    /// supported here yet: use a local or trusted network path).
    #[arg(long, env = "PGBRANCH_DATABASE_URL")]
    pub database_url: String,
    /// Branch whose history to read.
    #[arg(long, default_value = "main")]
    pub branch: String,
}

/// Just the database.
#[derive(clap::Args, Debug)]
pub struct DbUrl {
    /// Database, e.g. postgres://user@host:5432/app.
    #[arg(long, env = "PGBRANCH_DATABASE_URL")]
    pub database_url: String,
}

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Only versions that changed this object (e.g. public.users).
    #[arg(long)]
    pub object: Option<String>,
    /// Only versions recorded at or after this time (e.g. 2026-11-01).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many versions.
    #[arg(long)]
    pub limit: Option<i64>,
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The object, e.g. public.users, users, or public.f(integer).
    pub object: String,
    /// The version to show it at (default: the latest).
    #[arg(long)]
    pub at: Option<i64>,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Two branches (`pgbranch diff main feature`: what feature changes
    /// against main), or one (against its parent). Without them: two
    /// versions of --branch.
    #[arg(num_args = 0..=2)]
    pub branches: Vec<String>,
    #[arg(long, required_unless_present = "branches")]
    pub from: Option<i64>,
    /// Default: the latest version.
    #[arg(long)]
    pub to: Option<i64>,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// First version to export (1 = the first recorded change).
    #[arg(long, default_value_t = 1)]
    pub from: i64,
    /// Last version (default: the latest).
    #[arg(long)]
    pub to: Option<i64>,
    /// Directory to write the files into (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
}

/// Runs one command on a current-thread runtime.
pub fn run(fut: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(fut)
}

pub(super) async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| {
            format!(
                "connecting to {}",
                crate::proxy::upstream::redact_password(url)
            )
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("database connection ended: {e}");
        }
    });
    Ok(client)
}

/// [`connect`], then the pgbranch schema created or brought up to date
/// (`what` says why, in the error).
pub(super) async fn connect_migrated(
    url: &str,
    what: &'static str,
) -> Result<tokio_postgres::Client> {
    let client = connect(url).await?;
    client.batch_execute(migrate_sql()).await.context(what)?;
    Ok(client)
}

/// Fails with a hint when the database has no pgbranch history.
async fn require_history(client: &tokio_postgres::Client) -> Result<()> {
    let row = client
        .query_one(
            "SELECT to_regclass('pgbranch.schema_history') IS NOT NULL",
            &[],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        bail!("this database has no pgbranch history yet: run `pgbranch init --database-url ...` or change its schema through the proxy");
    }
    Ok(())
}

pub async fn init(args: DbArgs) -> Result<ExitCode> {
    let client = connect_migrated(&args.database_url, "creating the pgbranch schema").await?;
    let row = client
        .query_one(
            "SELECT current_database()::text, max(version) FROM pgbranch.migrations",
            &[],
        )
        .await?;
    let db: String = row.get(0);
    let version: i32 = row.get(1);
    println!(
        "pgbranch metadata in database {db} is at version {version} (this pgbranch: {})",
        latest_version()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn log(args: LogArgs) -> Result<ExitCode> {
    let client = connect(&args.db.database_url).await?;
    require_history(&client).await?;
    let entries = report::log(
        &client,
        &LogFilter {
            branch: args.db.branch,
            object: args.object,
            since: args.since,
            limit: args.limit,
        },
    )
    .await?;
    print!("{}", report::format_log(&entries));
    Ok(ExitCode::SUCCESS)
}

pub async fn show(args: ShowArgs) -> Result<ExitCode> {
    let client = connect(&args.db.database_url).await?;
    require_history(&client).await?;
    let version = match args.at {
        Some(v) => v,
        None => report::current_version(&client, &args.db.branch).await?,
    };
    let defs = report::definitions_at(&client, &args.db.branch, version).await?;
    let found: Vec<_> = defs
        .iter()
        .filter(|d| report::names(d, &args.object))
        .collect();
    if found.is_empty() {
        bail!(
            "no object named {} exists at version {version}",
            args.object
        );
    }
    for d in found {
        println!("-- {} {} at version {version}", d.object_type, d.identity);
        println!("{}", d.definition);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn diff(args: DiffArgs) -> Result<ExitCode> {
    match args.branches.as_slice() {
        [branch] => return super::branch::diff(&args.db.database_url, branch, None).await,
        [base, branch] => {
            return super::branch::diff(&args.db.database_url, branch, Some(base)).await
        }
        _ => {}
    }
    let Some(from) = args.from else {
        bail!("give two branches (pgbranch diff main feature) or --from VERSION");
    };
    let client = connect(&args.db.database_url).await?;
    require_history(&client).await?;
    let to = match args.to {
        Some(v) => v,
        None => report::current_version(&client, &args.db.branch).await?,
    };
    let old = report::definitions_at(&client, &args.db.branch, from).await?;
    let new = report::definitions_at(&client, &args.db.branch, to).await?;
    print!("{}", report::diff_definitions(&old, &new, from, to));
    Ok(ExitCode::SUCCESS)
}

pub async fn drift(args: DbArgs) -> Result<ExitCode> {
    let client = connect(&args.database_url).await?;
    require_history(&client).await?;
    let rows = client
        .query(
            "SELECT object_type, identity, change FROM pgbranch.drift($1)",
            &[&args.branch],
        )
        .await?;
    if rows.is_empty() {
        println!("no drift: the live schema matches the recorded history");
        return Ok(ExitCode::SUCCESS);
    }
    println!("drift: {} object(s) changed outside pgbranch", rows.len());
    for r in rows {
        println!(
            "  {} {} {}",
            r.get::<_, String>(2),
            r.get::<_, String>(0),
            r.get::<_, String>(1)
        );
    }
    Ok(ExitCode::from(1))
}

pub async fn export(args: ExportArgs) -> Result<ExitCode> {
    let client = connect(&args.db.database_url).await?;
    require_history(&client).await?;
    if args.from < 1 {
        bail!("--from must be 1 or more: version 0 is the baseline, which holds no statement to replay");
    }
    let entries = report::log(
        &client,
        &LogFilter {
            branch: args.db.branch.clone(),
            ..LogFilter::default()
        },
    )
    .await?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let mut n = 0;
    for e in entries
        .iter()
        .filter(|e| e.version >= args.from && args.to.is_none_or(|to| e.version <= to))
        .filter(|e| e.action != "drift")
    {
        let path = args.dir.join(report::export_file_name(
            e.version,
            &e.action,
            &e.object_type,
            &e.identity,
        ));
        std::fs::write(&path, report::export_file_text(e))
            .with_context(|| format!("writing {}", path.display()))?;
        n += 1;
    }
    println!("wrote {n} migration file(s) to {}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}
