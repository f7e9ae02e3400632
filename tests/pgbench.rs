//! pgbench through the proxy: initialisation (COPY, VACUUM, DDL), then
//! read-only and read-write runs in every query mode (simple, extended,
//! prepared), each with every transaction processed and none failed.

mod common;

use common::*;

const CLIENTS: u32 = 4;
const THREADS: u32 = 2;
const TXNS: u32 = 200;

/// Runs pgbench against the proxy and returns its stdout (asserting exit
/// success). Async, so the in-process proxy keeps running.
async fn pgbench(proxy: &TestProxy, db: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(pg_bin("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .arg(db)
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pgbench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// The value after `prefix` on the line that starts with it.
fn line_value<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
        .trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_clean_in_every_query_mode() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;

    pgbench(&proxy, &db, &["-i", "-s", "1", "-q"]).await;
    let direct = connect(&cluster().direct(&db)).await;
    let accounts: i64 = direct
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(accounts, 100_000, "pgbench -i loaded every row");

    let expected = format!("{}/{}", CLIENTS * TXNS, CLIENTS * TXNS);
    for mode in ["simple", "extended", "prepared"] {
        for script in ["-S", "-N"] {
            let history_before: i64 = direct
                .query_one("SELECT count(*) FROM pgbench_history", &[])
                .await
                .unwrap()
                .get(0);
            let stdout = pgbench(
                &proxy,
                &db,
                &[
                    script,
                    "-M",
                    mode,
                    "-c",
                    &CLIENTS.to_string(),
                    "-j",
                    &THREADS.to_string(),
                    "-t",
                    &TXNS.to_string(),
                    "-n",
                ],
            )
            .await;
            let what = format!("pgbench {script} -M {mode}");
            assert_eq!(line_value(&stdout, "query mode:"), mode, "{what}\n{stdout}");
            assert_eq!(
                line_value(&stdout, "number of transactions actually processed:"),
                expected,
                "{what}\n{stdout}"
            );
            let failed = line_value(&stdout, "number of failed transactions:");
            assert!(
                failed.starts_with("0 "),
                "{what}: failed {failed}\n{stdout}"
            );
            // The server did the work: -N inserts one history row per
            // transaction, -S none.
            let history_after: i64 = direct
                .query_one("SELECT count(*) FROM pgbench_history", &[])
                .await
                .unwrap()
                .get(0);
            let inserted = if script == "-N" {
                (CLIENTS * TXNS) as i64
            } else {
                0
            };
            assert_eq!(history_after - history_before, inserted, "{what}");
        }
    }
    proxy.stop().await;
}
