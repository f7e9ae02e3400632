//! The operations endpoint: /healthz, /readyz following the upstream, and
//! /metrics counting connections, refusals, sessions and setup times.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one HTTP request and returns (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// The value of one sample line (`name{labels} value`).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Every line is a comment or `name{labels} value` (the text format).
fn assert_prometheus_text(text: &str) {
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(name.starts_with("pgbranch_"), "{line}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
    }
}

/// `promtool check metrics` (the Debian package `prometheus`) accepts the
/// scrape: names, types, HELP, histogram layout.
fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: apt-get install -y --no-install-recommends prometheus");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics_config() -> pgbranch::config::Config {
    let mut config = test_config();
    config.metrics.listen = "127.0.0.1:0".into();
    config
}

#[tokio::test]
async fn metrics_count_connections_refusals_and_sessions() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(metrics_config()).await;
    let m = proxy.metrics_addr.expect("metrics endpoint listens");
    assert_eq!(http(m, "GET", "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http(m, "GET", "/readyz").await, (200, "ready\n".into()));

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&proxy.conn_str("postgres", &db)).await);
    }
    // A wrong password: the server refuses the session.
    let bad = format!(
        "host=127.0.0.1 port={} user=pgb_scram password=wrong dbname={db}",
        proxy.port()
    );
    assert!(tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .is_err());

    let (status, text) = http(m, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_prometheus_text(&text);
    assert_eq!(sample(&text, "pgbranch_connections_accepted_total"), 4.0);
    assert_eq!(
        sample(
            &text,
            "pgbranch_connections_refused_total{reason=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "pgbranch_connections_refused_total{reason=\"limit\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(&text, "pgbranch_client_sessions{branch=\"main\"}"),
        3.0
    );
    assert_eq!(
        sample(&text, "pgbranch_upstream_connect_seconds_count"),
        4.0
    );
    assert_eq!(sample(&text, "pgbranch_auth_seconds_count"), 3.0);
    assert!(
        text.contains("# TYPE pgbranch_auth_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("pgbranch_build_info{version=\""), "{text}");

    drop(clients);
    wait_for("sessions to close", || async {
        let (_, text) = http(m, "GET", "/metrics").await;
        sample(&text, "pgbranch_client_sessions{branch=\"main\"}") == 0.0
    })
    .await;

    assert_eq!(http(m, "GET", "/nope").await.0, 404);
    assert_eq!(http(m, "POST", "/metrics").await.0, 405);
    let (status, body) = http(m, "HEAD", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, ""));
}

#[tokio::test]
async fn connection_limit_refusals_are_counted() {
    let db = cluster().fresh_db();
    let mut config = metrics_config();
    config.max_client_connections = 1;
    let proxy = start_proxy(config).await;
    let m = proxy.metrics_addr.unwrap();
    let _held = connect(&proxy.conn_str("postgres", &db)).await;
    let err = tokio_postgres::connect(&proxy.conn_str("postgres", &db), tokio_postgres::NoTls)
        .await
        .err()
        .expect("over the limit");
    assert_eq!(err.code().unwrap().code(), "53300");
    let (_, text) = http(m, "GET", "/metrics").await;
    assert_eq!(
        sample(
            &text,
            "pgbranch_connections_refused_total{reason=\"limit\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn readyz_follows_the_upstream() {
    // A stand-in upstream: readiness means it accepts connections.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    let proxy = start_proxy_to(
        metrics_config(),
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    )
    .await;
    let m = proxy.metrics_addr.unwrap();
    assert_eq!(http(m, "GET", "/readyz").await.0, 200);
    drop(upstream);
    let (status, body) = http(m, "GET", "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("does not accept connections"), "{body}");
    // Liveness does not depend on the upstream.
    assert_eq!(http(m, "GET", "/healthz").await.0, 200);
    let _back = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    assert_eq!(http(m, "GET", "/readyz").await.0, 200);
}

#[tokio::test]
async fn a_busy_metrics_address_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config();
    config.metrics.listen = taken.local_addr().unwrap().to_string();
    let err = pgbranch::proxy::server::Server::bind(config, &cluster().tcp_url())
        .await
        .err()
        .expect("bind fails");
    assert!(err.to_string().contains("metrics.listen"), "{err}");
}

/// `pgbranch_statement_duration_seconds_count` for one label set (0 when
/// the series is absent: empty series are not exported).
fn statements(text: &str, branch: &str, kind: &str, protocol: &str) -> f64 {
    let series = format!(
        "pgbranch_statement_duration_seconds_count{{branch=\"{branch}\",kind=\"{kind}\",protocol=\"{protocol}\"}}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn statement_histograms_count_what_the_workload_sent() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(metrics_config()).await;
    let m = proxy.metrics_addr.unwrap();
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    // Simple protocol.
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    for sql in [
        "SELECT 1",
        "SELECT 1; SELECT 2",
        "INSERT INTO t VALUES (1, 'a')",
        "INSERT INTO t VALUES (2, 'b')",
        "UPDATE t SET v = 'c' WHERE id = 1",
        "DELETE FROM t WHERE id = 2",
        "BEGIN",
        "INSERT INTO t VALUES (3, 'c')",
        "COMMIT",
        "SET application_name = 'metrics-test'",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
    assert!(c.batch_execute("SELECT * FROM missing").await.is_err());
    assert!(c
        .batch_execute("INSERT INTO t VALUES (1, 'dup')")
        .await
        .is_err());
    // Extended protocol.
    for i in 0..3 {
        let _: i32 = c.query_one("SELECT $1::int", &[&i]).await.unwrap().get(0);
    }
    c.execute("UPDATE t SET v = $1 WHERE id = 3", &[&"d"])
        .await
        .unwrap();
    assert!(c.query("SELECT * FROM missing_too", &[]).await.is_err());

    let (_, text) = http(m, "GET", "/metrics").await;
    assert_prometheus_text(&text);
    promtool_check_metrics(&text);
    for (kind, protocol, n) in [
        ("ddl", "simple", 1.0),
        ("select", "simple", 3.0),
        ("insert", "simple", 4.0),
        ("update", "simple", 1.0),
        ("delete", "simple", 1.0),
        ("transaction", "simple", 2.0),
        ("other", "simple", 1.0),
        ("select", "extended", 3.0),
        ("update", "extended", 1.0),
    ] {
        assert_eq!(
            statements(&text, "main", kind, protocol),
            n,
            "{kind} {protocol}\n{text}"
        );
    }
    // The extended SELECT on a missing table fails at Parse: never executed.
    assert_eq!(statements(&text, "main", "other", "extended"), 0.0);
    assert_eq!(sample(&text, "pgbranch_errors_total{class=\"42\"}"), 2.0);
    assert_eq!(sample(&text, "pgbranch_errors_total{class=\"23\"}"), 1.0);
    assert_eq!(
        sample(
            &text,
            "pgbranch_ddl_statements_total{branch=\"main\",action=\"create\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "pgbranch_transaction_duration_seconds_count"),
        1.0
    );
    // Overhead: one observation per timed statement (13 simple, 4 executed).
    assert_eq!(sample(&text, "pgbranch_proxy_overhead_seconds_count"), 17.0);
    assert!(sample(&text, "pgbranch_client_bytes_received_total") > 0.0);
    assert!(sample(&text, "pgbranch_client_bytes_sent_total") > 0.0);
    // Buckets are cumulative and end with +Inf = count.
    let inf = sample(
        &text,
        "pgbranch_statement_duration_seconds_bucket{branch=\"main\",kind=\"select\",protocol=\"simple\",le=\"+Inf\"}",
    );
    assert_eq!(inf, 3.0);
}

#[tokio::test]
async fn branch_labels_are_capped_and_follow_a_switch() {
    let db = cluster().fresh_db();
    let mut config = metrics_config();
    config.metrics.max_branch_labels = 2;
    let proxy = start_proxy(config).await;
    let m = proxy.metrics_addr.unwrap();
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    for b in ["b1", "b2", "b3"] {
        main.batch_execute(&format!("CREATE BRANCH {b}"))
            .await
            .unwrap();
    }
    let on = |b: &str| {
        format!(
            "{} options='-c branch={b}'",
            proxy.conn_str("postgres", &db)
        )
    };
    let s1 = connect(&on("b1")).await;
    let s2 = connect(&on("b2")).await;
    let s3 = connect(&on("b3")).await;
    for s in [&s1, &s2, &s3] {
        s.batch_execute("SELECT 1").await.unwrap();
    }
    // main switches to b3 and runs one more.
    main.batch_execute("SET pgbranch.branch = 'b3'")
        .await
        .unwrap();
    main.batch_execute("SELECT 1").await.unwrap();
    let (_, text) = http(m, "GET", "/metrics").await;
    assert_prometheus_text(&text);
    // Three CREATE BRANCH and the SET pgbranch.branch, on main.
    assert_eq!(statements(&text, "main", "pgbranch_command", "simple"), 4.0);
    assert_eq!(statements(&text, "b1", "select", "simple"), 1.0);
    assert_eq!(
        statements(&text, "other", "select", "simple"),
        3.0,
        "{text}"
    );
    assert!(!text.contains("branch=\"b2\""), "{text}");
    assert!(!text.contains("branch=\"b3\""), "{text}");
    assert_eq!(
        sample(&text, "pgbranch_client_sessions{branch=\"main\"}"),
        0.0
    );
    assert_eq!(
        sample(&text, "pgbranch_client_sessions{branch=\"b1\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "pgbranch_client_sessions{branch=\"other\"}"),
        3.0
    );
}

#[tokio::test]
async fn slow_statements_are_logged_without_their_literals() {
    let db = cluster().fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pgbranch.log");
    let port = free_port();
    let mut child = std::process::Command::new(PGBRANCH_BIN)
        .args(["serve", "--upstream", &cluster().tcp_url(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("PGBRANCH_LOG", "warn")
        .env("PGBRANCH_METRICS_LISTEN", "")
        .env("PGBRANCH_LOG_SLOW_STATEMENT_THRESHOLD", "40ms")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("pgbranch to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let c = connect(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname={db}"
    ))
    .await;
    c.batch_execute("SELECT 'fast-and-quiet'").await.unwrap();
    c.batch_execute("SELECT pg_sleep(0.1), 'secret-simple'")
        .await
        .unwrap();
    c.query("SELECT pg_sleep($1), 'secret-extended'", &[&0.1f64])
        .await
        .unwrap();
    wait_for("two slow statements in the log", || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("slow statement")
            .count()
            == 2
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("secret"), "{text}");
    assert!(!text.contains("quiet"), "{text}");
    assert!(text.contains("SELECT pg_sleep(?), ?"), "{text}");
    assert!(text.contains("SELECT pg_sleep($1), ?"), "{text}");
    assert!(text.contains("protocol=\"extended\""), "{text}");
    // Not a terminal: no colour codes in the log.
    assert!(!text.contains('\u{1b}'), "{text}");
}

#[tokio::test]
async fn rewrites_are_counted_by_kind_and_unreadable_ddl_is_counted() {
    let db = cluster().fresh_db();
    let mut config = metrics_config();
    config.branches.protected = vec!["guarded".into()];
    let proxy = start_proxy(config).await;
    let m = proxy.metrics_addr.expect("metrics endpoint listens");
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    // history: two DDL statements, one simple and one extended.
    main.batch_execute("CREATE TABLE t (id int)").await.unwrap();
    main.execute("CREATE TABLE u (id int)", &[]).await.unwrap();
    // command: two branch commands.
    main.batch_execute("CREATE BRANCH feature").await.unwrap();
    main.batch_execute("CREATE BRANCH guarded").await.unwrap();
    // Ordinary statements on main are not rewritten.
    main.batch_execute("SELECT * FROM t").await.unwrap();
    // branch_names: two statements naming a schema on a branch; names
    // without a schema reach the branch through search_path, unchanged.
    let feature = connect(&on_branch(&proxy, &db, "feature")).await;
    feature.batch_execute("SELECT * FROM t").await.unwrap();
    feature.query("SELECT * FROM public.u", &[]).await.unwrap();
    feature
        .batch_execute("INSERT INTO public.t VALUES (1)")
        .await
        .unwrap();
    // refused: DDL on the protected branch.
    let guarded = connect(&on_branch(&proxy, &db, "guarded")).await;
    let e = guarded.batch_execute("DROP TABLE t").await.unwrap_err();
    assert_eq!(code(&e), "42501");
    // DDL whose object cannot be read: forwarded as is.
    let e = main.batch_execute("DROP TABLE").await.unwrap_err();
    assert_eq!(code(&e), "42601");

    let (_, text) = http(m, "GET", "/metrics").await;
    assert_prometheus_text(&text);
    promtool_check_metrics(&text);
    let kind = |k: &str| sample(&text, &format!("pgbranch_rewrites_total{{kind=\"{k}\"}}"));
    assert_eq!(kind("command"), 2.0, "{text}");
    assert_eq!(kind("branch_names"), 2.0, "{text}");
    assert_eq!(kind("refused"), 1.0, "{text}");
    // The two CREATE TABLEs, and the unreadable DROP TABLE (wrapped all
    // the same: its failure is recorded nowhere).
    assert_eq!(kind("history"), 3.0, "{text}");
    assert_eq!(kind("path_restore"), 0.0, "{text}");
    assert_eq!(sample(&text, "pgbranch_unparsed_statements_total"), 1.0);
    proxy.stop().await;
}

#[tokio::test]
async fn the_drift_gauge_counts_changes_made_outside_pgbranch() {
    let db = cluster().fresh_db();
    let mut config = metrics_config();
    config.metrics.drift_check_interval = std::time::Duration::from_millis(50);
    let proxy = start_proxy(config).await;
    let m = proxy.metrics_addr.expect("metrics endpoint listens");
    let series = format!("pgbranch_schema_drift_objects{{database=\"{db}\"}}");
    let drift = || async {
        let (_, text) = http(m, "GET", "/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<f64>().ok())
    };
    let app = connect(&proxy.conn_str("postgres", &db)).await;
    let direct = connect(&cluster().direct(&db)).await;
    // Made before pgbranch's metadata exists: part of its baseline.
    direct
        .batch_execute("CREATE TABLE before (id int)")
        .await
        .unwrap();

    app.batch_execute("CREATE TABLE t (id int)").await.unwrap();
    wait_for("the gauge to show no drift", || async {
        drift().await == Some(0.0)
    })
    .await;
    direct
        .batch_execute("CREATE TABLE behind_its_back (id int); ALTER TABLE t ADD COLUMN x int")
        .await
        .unwrap();
    wait_for("the gauge to count two drifted objects", || async {
        drift().await == Some(2.0)
    })
    .await;
    // The next recorded change records the drift first.
    app.batch_execute("CREATE TABLE u (id int)").await.unwrap();
    wait_for("the gauge to return to 0", || async {
        drift().await == Some(0.0)
    })
    .await;
    let (_, text) = http(m, "GET", "/metrics").await;
    promtool_check_metrics(&text);
    proxy.stop().await;
}
