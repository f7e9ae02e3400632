//! The admin console: the virtual database `pgbranch`, authenticated by
//! the proxy with SCRAM-SHA-256, answering SHOW CONNECTIONS / STATS /
//! CONFIG / VERSION / HELP, PAUSE / RESUME and SHUTDOWN through psql and
//! tokio-postgres.

mod common;
use common::*;

use std::time::Duration;

use pgbranch::admin::scram::Verifier;
use pgbranch::config::Config;

/// Only a hang guard, never a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(30);

const PASSWORD: &str = "admin pw ü";

fn admin_config() -> Config {
    let mut config = test_config();
    config
        .admin
        .roles
        .insert("ops".into(), Verifier::from_password(PASSWORD).to_string());
    // Statements are timed (SHOW STATS) when the endpoint is on.
    config.metrics.listen = "127.0.0.1:0".into();
    config
}

fn console(proxy: &TestProxy, user: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} dbname=pgbranch",
        proxy.port()
    )
}

/// psql against the console: (ok, stdout, stderr), unaligned, no headers.
async fn admin_psql(proxy: &TestProxy, password: &str, command: &str) -> (bool, String, String) {
    tokio::time::timeout(
        HANG_GUARD,
        psql_env(
            &console(proxy, "ops"),
            &["-w", "-At", "-F", "|", "-c", command],
            &[("PGPASSWORD", password)],
        ),
    )
    .await
    .expect("psql finished")
}

/// A tokio-postgres session on the console.
async fn admin_client(proxy: &TestProxy) -> tokio_postgres::Client {
    connect(&format!("{} password='{PASSWORD}'", console(proxy, "ops"))).await
}

/// Column `column` of SHOW CONNECTIONS for the session with `pid`.
async fn connection_column(
    admin: &tokio_postgres::Client,
    pid: i32,
    column: usize,
) -> Option<String> {
    simple_rows(admin, "SHOW CONNECTIONS")
        .await
        .into_iter()
        .find(|r| r[0] == pid.to_string())
        .map(|r| r[column].clone())
}

/// The console's state column for the session with `pid`.
async fn state_of(admin: &tokio_postgres::Client, pid: i32) -> Option<String> {
    connection_column(admin, pid, 7).await
}

#[tokio::test]
async fn every_console_command_answers_through_psql() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(admin_config()).await;
    let app = connect(&format!(
        "{} application_name=shop",
        proxy.conn_str("postgres", &db)
    ))
    .await;
    let pid: i32 = scalar(&app, "SELECT pg_backend_pid()").await;
    for _ in 0..7 {
        app.simple_query("SELECT 1").await.unwrap();
    }
    app.execute("CREATE TABLE t (id int)", &[]).await.unwrap();

    let (ok, out, err) = admin_psql(&proxy, PASSWORD, "SHOW HELP").await;
    assert!(ok, "{err}");
    for command in [
        "SHOW CONNECTIONS",
        "SHOW STATS",
        "RELOAD",
        "PAUSE",
        "SHUTDOWN",
    ] {
        assert!(out.contains(command), "{out}");
    }

    let (ok, out, err) = admin_psql(&proxy, PASSWORD, "SHOW CONNECTIONS").await;
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{pid}|")))
        .unwrap_or_else(|| panic!("session {pid} listed:\n{out}"))
        .to_string();
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(&fields[1..4], ["postgres", db.as_str(), "main"], "{line}");
    assert_eq!(fields[4], "shop");
    assert!(fields[5].starts_with("127.0.0.1:"), "{line}");
    assert_eq!(fields[6], "off", "{line}");
    // The state is published as the relay finishes its turn, right after
    // the client got its answer.
    let admin = admin_client(&proxy).await;
    wait_for("the session to be idle", || async {
        state_of(&admin, pid).await.as_deref() == Some("idle")
    })
    .await;
    assert!(fields[8].ends_with("+00"), "{line}");

    let (ok, out, err) = admin_psql(&proxy, PASSWORD, "SHOW STATS").await;
    assert!(ok, "{err}");
    let select = out
        .lines()
        .find(|l| l.starts_with("main|select|"))
        .unwrap_or_else(|| panic!("{out}"));
    let f: Vec<&str> = select.split('|').collect();
    assert_eq!(f[2], "8", "7 simple selects and the pid query: {select}");
    let p: Vec<f64> = f[3..7].iter().map(|v| v.parse().unwrap()).collect();
    assert!(p.iter().all(|v| *v > 0.0), "{select}");
    assert!(p[1] <= p[2] && p[2] <= p[3], "p50 <= p95 <= p99: {select}");
    assert!(out.contains("main|ddl|1|"), "{out}");

    let (ok, out, err) = admin_psql(&proxy, PASSWORD, "SHOW CONFIG").await;
    assert!(ok, "{err}");
    assert!(out.contains("admin.roles|ops|reload\n"), "{out}");
    assert!(
        out.contains("tls.mode|allow|reload (new connections)"),
        "{out}"
    );
    assert!(out.contains("listen|127.0.0.1:0|restart"), "{out}");
    assert!(
        !out.contains("SCRAM-SHA-256$"),
        "secrets never shown: {out}"
    );

    let (ok, out, err) = admin_psql(&proxy, PASSWORD, "show version; SHOW PAUSED").await;
    assert!(ok, "{err}");
    assert!(out.starts_with(env!("CARGO_PKG_VERSION")), "{out}");
    assert!(out.ends_with("off\n"), "{out}");

    // Started without a configuration source to read again.
    let (ok, _, err) = admin_psql(&proxy, PASSWORD, "RELOAD").await;
    assert!(!ok);
    assert!(err.contains("configuration not reloaded"), "{err}");

    let (ok, _, err) = admin_psql(&proxy, PASSWORD, "DROP TABLE t").await;
    assert!(!ok);
    assert!(
        err.contains("unknown admin console command: DROP TABLE t"),
        "{err}"
    );
    assert!(err.contains("SHOW HELP"), "{err}");

    // Extended protocol is refused, and the session goes on.
    let admin = admin_client(&proxy).await;
    let e = admin.query("SHOW STATS", &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000");
    assert_eq!(simple_rows(&admin, "SHOW PAUSED").await, [["off"]]);
    proxy.stop().await;
}

#[tokio::test]
async fn wrong_passwords_and_unknown_roles_are_refused_alike() {
    let proxy = start_proxy(admin_config()).await;
    let (ok, _, err) = admin_psql(&proxy, "wrong", "SHOW HELP").await;
    assert!(!ok);
    assert!(
        err.contains("password authentication failed for user \"ops\""),
        "{err}"
    );
    let (ok, _, err) = tokio::time::timeout(
        HANG_GUARD,
        psql_env(
            &console(&proxy, "intruder"),
            &["-w", "-c", "SHOW HELP"],
            &[("PGPASSWORD", PASSWORD)],
        ),
    )
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        err.contains("password authentication failed for user \"intruder\""),
        "{err}"
    );
    // A client that insists on channel binding cannot use the console.
    let (ok, _, err) = tokio::time::timeout(
        HANG_GUARD,
        psql_env(
            &format!("{} channel_binding=require", console(&proxy, "ops")),
            &["-w", "-c", "SHOW HELP"],
            &[("PGPASSWORD", PASSWORD)],
        ),
    )
    .await
    .unwrap();
    assert!(!ok, "{err}");
    proxy.stop().await;

    // Without admin roles there is no console: the name reaches the
    // upstream like any database name.
    let mut config = test_config();
    config.admin.roles.clear();
    let proxy = start_proxy(config).await;
    let (ok, _, err) = psql(&console(&proxy, "postgres"), &["-c", "SELECT 1"]).await;
    assert!(!ok);
    assert!(
        err.contains("database \"pgbranch\" does not exist"),
        "{err}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn pause_waits_for_open_transactions_and_holds_new_statements_until_resume() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(admin_config()).await;
    let admin = admin_client(&proxy).await;
    let in_tx = connect(&proxy.conn_str("postgres", &db)).await;
    let idle = connect(&proxy.conn_str("postgres", &db)).await;
    let tx_pid: i32 = scalar(&in_tx, "SELECT pg_backend_pid()").await;
    let idle_pid: i32 = scalar(&idle, "SELECT pg_backend_pid()").await;
    in_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
    wait_for("the session to be idle in transaction", || async {
        state_of(&admin, tx_pid).await.as_deref() == Some("idle in transaction")
    })
    .await;

    // PAUSE answers only once the open transaction has ended.
    let committed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pause = {
        let admin = admin_client(&proxy).await;
        let committed = committed.clone();
        tokio::spawn(async move {
            simple_rows(&admin, "PAUSE").await;
            committed.load(std::sync::atomic::Ordering::SeqCst)
        })
    };
    let paused = admin_client(&proxy).await;
    wait_for("the pause to start", || async {
        simple_rows(&paused, "SHOW PAUSED").await == [["on"]]
    })
    .await;
    // The open transaction goes on during the pause.
    in_tx.simple_query("SELECT 2").await.unwrap();
    committed.store(true, std::sync::atomic::Ordering::SeqCst);
    in_tx.simple_query("COMMIT").await.unwrap();
    assert!(
        tokio::time::timeout(HANG_GUARD, pause)
            .await
            .unwrap()
            .unwrap(),
        "PAUSE answered before the transaction ended"
    );

    // A new statement waits, unsent, until RESUME.
    let held = tokio::spawn(async move {
        let n: i32 = scalar(&idle, "SELECT 41 + 1").await;
        n
    });
    wait_for("the statement to be held", || async {
        state_of(&admin, idle_pid).await.as_deref() == Some("held")
    })
    .await;
    let direct = connect(&cluster().direct(&db)).await;
    let upstream_query: String = direct
        .query_one(
            "SELECT query FROM pg_stat_activity WHERE pid = $1",
            &[&idle_pid],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !upstream_query.contains("41 + 1"),
        "held statement reached the server: {upstream_query}"
    );
    assert!(!held.is_finished());
    simple_rows(&admin, "RESUME").await;
    assert_eq!(
        tokio::time::timeout(HANG_GUARD, held)
            .await
            .unwrap()
            .unwrap(),
        42
    );
    assert_eq!(simple_rows(&admin, "SHOW PAUSED").await, [["off"]]);
    proxy.stop().await;
}

#[tokio::test]
async fn pause_answers_after_its_timeout_with_a_warning() {
    let db = cluster().fresh_db();
    let mut config = admin_config();
    config.admin.pause_timeout = Duration::from_millis(200);
    let proxy = start_proxy(config).await;
    let in_tx = connect(&proxy.conn_str("postgres", &db)).await;
    in_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let (ok, _, err) = admin_psql(&proxy, PASSWORD, "PAUSE").await;
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "WARNING:  1 session(s) still in a transaction or running a statement after 200ms"
        ),
        "{err}"
    );
    // The pause is in force; the transaction may still finish.
    in_tx.simple_query("COMMIT").await.unwrap();
    let (_, out, _) = admin_psql(&proxy, PASSWORD, "SHOW PAUSED").await;
    assert_eq!(out, "on\n");
    let (ok, _, err) = admin_psql(&proxy, PASSWORD, "RESUME; RESUME").await;
    assert!(ok);
    assert!(err.contains("NOTICE:  not paused"), "{err}");
    in_tx.simple_query("SELECT 1").await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_from_the_console_stops_the_proxy() {
    let verifier = Verifier::from_password(PASSWORD).to_string();
    let roles = format!("{{ ops = \"{verifier}\" }}");
    let mut proxy = ProxyProcess::start(
        &cluster().tcp_url(),
        &[],
        &[("PGBRANCH_ADMIN_ROLES", roles.as_str())],
    );
    let app = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        proxy.port
    ))
    .await;
    let in_tx = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        proxy.port
    ))
    .await;
    in_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let conn = format!(
        "host=127.0.0.1 port={} user=ops dbname=pgbranch",
        proxy.port
    );
    let (ok, _, err) = psql_env(
        &conn,
        &["-w", "-c", "SHUTDOWN"],
        &[("PGPASSWORD", PASSWORD)],
    )
    .await;
    assert!(ok, "{err}");
    // The idle session is closed as by SIGTERM; the open transaction may
    // go on (shutdown_timeout).
    let e = app.simple_query("SELECT 1").await.unwrap_err();
    assert!(code(&e) == "57P01" || e.is_closed(), "{e:?}");
    in_tx.simple_query("SELECT 2").await.unwrap();
    // After a console SHUTDOWN, the first signal closes every session.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGTERM) };
    wait_for("pgbranch to exit", || {
        let exited = proxy.child.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    assert!(proxy.child.wait().unwrap().success());
    assert!(in_tx.simple_query("SELECT 3").await.is_err());
}

/// Parse/Bind/Execute (unnamed) of `sql`, then Flush: no Sync.
fn extended_without_sync(sql: &str) -> Vec<u8> {
    use pgbranch::protocol::put_message;
    let mut out = Vec::new();
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    put_message(&mut out, b'P', &parse);
    put_message(&mut out, b'B', &[0, 0, 0, 0, 0, 0, 0, 0]);
    put_message(&mut out, b'E', &[0, 0, 0, 0, 0]);
    put_message(&mut out, b'H', &[]);
    out
}

#[tokio::test]
async fn pause_counts_an_unsynced_extended_batch_as_a_transaction() {
    let db = cluster().fresh_db();
    let mut config = admin_config();
    config.admin.pause_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    let admin = admin_client(&proxy).await;
    let (mut raw, _) = raw::RawConn::connect(
        proxy.port(),
        &[("user", b"postgres"), ("database", db.as_bytes())],
    )
    .await;
    // The implicit transaction holds an advisory lock until Sync.
    raw.send(&extended_without_sync("SELECT pg_advisory_xact_lock(4242)"))
        .await;
    let mut tags = Vec::new();
    while tags.last() != Some(&b'C') {
        tags.push(raw.recv().await.0);
    }
    assert_eq!(tags, b"12DC");
    wait_for("the batch to count as a transaction", || async {
        simple_rows(&admin, "SHOW CONNECTIONS").await[0][7] == "idle in transaction"
    })
    .await;
    // PAUSE does not call that drained: it waits, then warns.
    let (ok, _, err) = admin_psql(&proxy, PASSWORD, "PAUSE").await;
    assert!(ok, "{err}");
    assert!(err.contains("1 session(s) still in a transaction"), "{err}");
    // Its Sync goes through (it ends a transaction), releasing the lock.
    let mut sync = Vec::new();
    pgbranch::protocol::put_message(&mut sync, b'S', &[]);
    raw.send(&sync).await;
    assert_eq!(raw.recv().await.0, b'Z');
    let direct = connect(&cluster().direct(&db)).await;
    let free: bool = scalar(&direct, "SELECT pg_try_advisory_xact_lock(4242)").await;
    assert!(free, "the lock was released at Sync, during the pause");
    simple_rows(&admin, "RESUME").await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_held_client_that_leaves_ends_its_session_and_its_statement_never_runs() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(admin_config()).await;
    let admin = admin_client(&proxy).await;
    let direct = connect(&cluster().direct(&db)).await;
    direct
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let (mut raw, _) = raw::RawConn::connect(
        proxy.port(),
        &[("user", b"postgres"), ("database", db.as_bytes())],
    )
    .await;
    simple_rows(&admin, "PAUSE").await;
    raw.send_query_bytes(b"INSERT INTO t VALUES (1)").await;
    wait_for("the insert to be held", || async {
        simple_rows(&admin, "SHOW CONNECTIONS")
            .await
            .iter()
            .any(|r| r[7] == "held")
    })
    .await;
    drop(raw);
    wait_for("the session to end", || async {
        simple_rows(&admin, "SHOW CONNECTIONS").await.is_empty()
    })
    .await;
    simple_rows(&admin, "RESUME").await;
    let n: i64 = scalar(&direct, "SELECT count(*) FROM t").await;
    assert_eq!(n, 0, "the held insert of a departed client ran");
    proxy.stop().await;
}

#[tokio::test]
async fn show_connections_follows_a_session_to_another_branch_and_back() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(admin_config()).await;
    let admin = admin_client(&proxy).await;
    let app = connect(&proxy.conn_str("postgres", &db)).await;
    app.batch_execute("CREATE BRANCH feature").await.unwrap();
    let pid: i32 = scalar(&app, "SELECT pg_backend_pid()").await;
    let branch_of = || connection_column(&admin, pid, 3);
    assert_eq!(branch_of().await.as_deref(), Some("main"));
    for to in ["feature", "main", "feature"] {
        app.batch_execute(&format!("SET pgbranch.branch = '{to}'"))
            .await
            .unwrap();
        // Published as the relay finishes the wake-up that forwarded the
        // answer.
        wait_for(&format!("the console to show branch {to}"), || async {
            branch_of().await.as_deref() == Some(to)
        })
        .await;
    }
    proxy.stop().await;
}
