//! Failure behaviour against real PostgreSQL: an unreachable or restarting
//! upstream, killed backends, malformed and oversized client input, silent
//! clients, graceful shutdown of the binary, the connection limit, and
//! configuration errors.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgbranch::protocol::backend::{error_code, error_fields};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Hang guard for anything that should finish promptly.
const GUARD: Duration = Duration::from_secs(10);

type ConnTask = JoinHandle<Result<(), tokio_postgres::Error>>;

/// Connects with tokio-postgres and keeps the connection future's result,
/// which carries an unsolicited FATAL error the server (or proxy) sent.
async fn connect_watched(conn_str: &str) -> (tokio_postgres::Client, ConnTask) {
    let (client, conn) = timeout(
        GUARD,
        tokio_postgres::connect(conn_str, tokio_postgres::NoTls),
    )
    .await
    .unwrap_or_else(|_| panic!("connect {conn_str}: hangs"))
    .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
    (client, tokio::spawn(conn))
}

/// A connection attempt that must fail: returns its error.
async fn connect_err(conn_str: &str) -> tokio_postgres::Error {
    match timeout(
        GUARD,
        tokio_postgres::connect(conn_str, tokio_postgres::NoTls),
    )
    .await
    .unwrap_or_else(|_| panic!("connect {conn_str}: hangs instead of failing"))
    {
        Ok(_) => panic!("connect {conn_str}: succeeded, expected an error"),
        Err(e) => e,
    }
}

/// (SQLSTATE, severity, message) of a server error.
fn db_err(e: &tokio_postgres::Error) -> (String, String, String) {
    let d = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got: {e:?}"));
    (
        d.code().code().to_string(),
        d.severity().to_string(),
        d.message().to_string(),
    )
}

/// Waits (bounded) for a connection future to end and returns the server
/// error it ended with.
async fn conn_ended_with(task: ConnTask) -> (String, String, String) {
    let result = timeout(GUARD, task)
        .await
        .expect("the connection was not closed")
        .expect("connection task panicked");
    match result {
        Ok(()) => panic!("the connection closed without an error message"),
        Err(e) => db_err(&e),
    }
}

/// A query through a session that must now fail (not hang).
async fn query_fails(client: &tokio_postgres::Client) -> tokio_postgres::Error {
    match timeout(GUARD, client.simple_query("SELECT 1"))
        .await
        .expect("query hangs on a dead session")
    {
        Ok(_) => panic!("query succeeded on a session that should be closed"),
        Err(e) => e,
    }
}

/// One value of a one-row simple query. Tests that watch how a session
/// ends use the simple protocol only: tokio-postgres closes a prepared
/// statement (Close + Sync) in the background when it is dropped, and a
/// FATAL that arrives while that request is still open is handed to it
/// instead of ending the connection with the error.
async fn scalar(client: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = timeout(GUARD, client.simple_query(sql))
        .await
        .expect("query hangs")
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

async fn select_one(client: &tokio_postgres::Client) {
    assert_eq!(scalar(client, "SELECT 41 + 1").await, "42");
}

// ---- raw protocol helpers ----

fn startup_packet(user: &str, db: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// One backend message; `None` at a clean EOF between messages.
async fn read_msg(s: &mut TcpStream) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut hdr = [0u8; 5];
    let mut got = 0;
    while got < hdr.len() {
        let n = s.read(&mut hdr[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    assert!(len >= 4, "proxy sent a message with length {len}");
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await?;
    Ok(Some((hdr[0], body)))
}

/// Everything the proxy sends until it closes the connection.
async fn read_to_eof(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    timeout(GUARD, async {
        let mut msgs = Vec::new();
        while let Some(m) = read_msg(s).await.expect("reading from the proxy") {
            msgs.push(m);
        }
        msgs
    })
    .await
    .expect("the proxy did not close the connection")
}

/// Asserts that `msgs` is exactly one ErrorResponse; returns (code, message).
fn single_error(msgs: &[(u8, Vec<u8>)]) -> (String, String) {
    assert_eq!(
        msgs.len(),
        1,
        "expected one ErrorResponse, got tags {:?}",
        msgs.iter().map(|m| m.0 as char).collect::<String>()
    );
    let (tag, body) = &msgs[0];
    assert_eq!(*tag, b'E', "expected an ErrorResponse");
    let fields = error_fields(body);
    let field = |c: u8| {
        fields
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field(b'V'), "FATAL", "{fields:?}");
    (error_code(body).expect("SQLSTATE"), field(b'M'))
}

/// A raw session through the proxy, logged in (trust) and ready for query.
async fn raw_session(port: u16, db: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup_packet("postgres", db)).await.unwrap();
    timeout(GUARD, async {
        loop {
            let (tag, body) = read_msg(&mut s)
                .await
                .unwrap()
                .expect("proxy closed during startup");
            assert_ne!(tag, b'E', "startup failed: {:?}", error_fields(&body));
            if tag == b'Z' {
                break;
            }
        }
    })
    .await
    .expect("startup hangs");
    s
}

// ---- 1. upstream unreachable ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gives_a_clean_class_08_error() {
    // Nothing listens on this port.
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let proxy = start_proxy_to(test_config(), &url).await;
    let conn_str = proxy.conn_str("postgres", "postgres");
    for attempt in 0..2 {
        let started = Instant::now();
        let e = connect_err(&conn_str).await;
        let (code, severity, message) = db_err(&e);
        assert!(
            code.starts_with("08"),
            "attempt {attempt}: {code} {message}"
        );
        assert_eq!(severity, "FATAL");
        assert!(
            message.contains("database server cannot be reached"),
            "{message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused connection took {:?}",
            started.elapsed()
        );
    }
    let (ok, _, stderr) = timeout(GUARD, psql(&conn_str, &["-c", "SELECT 1"]))
        .await
        .expect("psql hangs");
    assert!(!ok, "psql succeeded without an upstream");
    assert!(
        stderr.contains("database server cannot be reached"),
        "{stderr}"
    );
    // Still up and still answering the same way.
    let (code, _, _) = db_err(&connect_err(&conn_str).await);
    assert!(code.starts_with("08"), "{code}");
    proxy.stop().await;
}

// ---- 2. upstream restart and killed backends ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_fails_sessions_cleanly_and_new_sessions_recover() {
    let tc = Arc::new(
        tokio::task::spawn_blocking(TestCluster::start_new)
            .await
            .unwrap(),
    );
    let proxy = start_proxy_to(test_config(), &tc.tcp_url()).await;
    let conn_str = proxy.conn_str("postgres", "postgres");
    let (s1, t1) = connect_watched(&conn_str).await;
    let (s2, t2) = connect_watched(&conn_str).await;
    select_one(&s1).await;
    select_one(&s2).await;

    let stopper = tc.clone();
    tokio::task::spawn_blocking(move || stopper.stop())
        .await
        .unwrap();

    // Both sessions end with an error, not a hang: PostgreSQL's fast
    // shutdown sends each backend's FATAL (57P01), which is relayed.
    for (client, task) in [(s1, t1), (s2, t2)] {
        let (code, severity, message) = conn_ended_with(task).await;
        assert_eq!(severity, "FATAL", "{code} {message}");
        assert!(
            code == "57P01" || code.starts_with("08"),
            "{code} {message}"
        );
        let e = query_fails(&client).await;
        assert!(client.is_closed(), "{e}");
    }

    // While the server is down: the class-08 error, every time.
    for _ in 0..2 {
        let (code, _, message) = db_err(&connect_err(&conn_str).await);
        assert!(code.starts_with("08"), "{code} {message}");
        assert!(message.contains("cannot be reached"), "{message}");
    }

    let starter = tc.clone();
    tokio::task::spawn_blocking(move || starter.start())
        .await
        .unwrap();
    // The same proxy serves the restarted server.
    let (s3, _t3) = connect_watched(&conn_str).await;
    select_one(&s3).await;
    drop(s3);
    proxy.stop().await;
    tokio::task::spawn_blocking(move || tc.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_gets_the_servers_fatal_and_others_continue() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let conn_str = proxy.conn_str("postgres", &db);
    let (victim, victim_task) = connect_watched(&conn_str).await;
    let (other, _other_task) = connect_watched(&conn_str).await;
    let (direct, _direct_task) = connect_watched(&cluster().direct(&db)).await;
    let pid: i32 = scalar(&victim, "SELECT pg_backend_pid()")
        .await
        .parse()
        .unwrap();
    let killed: bool = direct
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);

    let (code, severity, message) = conn_ended_with(victim_task).await;
    assert_eq!(
        (code.as_str(), severity.as_str()),
        ("57P01", "FATAL"),
        "{message}"
    );
    assert!(message.contains("administrator command"), "{message}");
    query_fails(&victim).await;
    assert!(victim.is_closed());

    select_one(&other).await;
    let (fresh, _t) = connect_watched(&conn_str).await;
    select_one(&fresh).await;
    select_one(&other).await;
    proxy.stop().await;
}

// ---- 3. malformed client input ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_input_closes_only_that_connection() {
    let db = cluster().fresh_db();
    let mut config = test_config();
    config.max_message_size = 64 * 1024;
    let proxy = start_proxy(config).await;
    let port = proxy.port();
    let (bystander, bystander_task) = connect_watched(&proxy.conn_str("postgres", &db)).await;
    select_one(&bystander).await;

    // (a) Startup packets with impossible lengths.
    for len in [3u32, 20_000] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&len.to_be_bytes()).await.unwrap();
        let (code, message) = single_error(&read_to_eof(&mut s).await);
        assert_eq!(code, "08P01", "length {len}: {message}");
        assert!(message.contains("startup packet"), "{message}");
        select_one(&bystander).await;
    }

    // (b) After login, a message whose length field is below 4.
    let mut s = raw_session(port, &db).await;
    s.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    let (code, message) = single_error(&read_to_eof(&mut s).await);
    assert_eq!(code, "08P01", "{message}");
    assert!(message.contains("invalid message length"), "{message}");
    select_one(&bystander).await;

    // (c) A message above max_message_size (only its header is sent).
    let mut s = raw_session(port, &db).await;
    let mut header = vec![b'Q'];
    header.extend_from_slice(&1_000_000u32.to_be_bytes());
    s.write_all(&header).await.unwrap();
    let (code, message) = single_error(&read_to_eof(&mut s).await);
    assert_eq!(code, "08P01", "{message}");
    assert!(message.contains("max_message_size"), "{message}");
    assert!(message.contains("1000000"), "{message}");

    // (d) Nothing else was affected: the bystander session is the same
    // one, and a message just under the limit passes.
    select_one(&bystander).await;
    let big = "x".repeat(60 * 1024);
    assert_eq!(
        scalar(&bystander, &format!("SELECT length('{big}')")).await,
        (60 * 1024).to_string()
    );
    let (fresh, _t) = connect_watched(&proxy.conn_str("postgres", &db)).await;
    select_one(&fresh).await;
    assert!(!bystander_task.is_finished());
    proxy.stop().await;
}

// ---- 4. handshake timeout ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_disconnects_silent_clients() {
    let mut config = test_config();
    config.handshake_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    let port = proxy.port();

    let silent = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let n = timeout(GUARD, s.read(&mut buf))
            .await
            .expect("silent client never disconnected")
            .expect("clean close");
        (n, started.elapsed())
    };
    let half = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let packet = startup_packet("postgres", "postgres");
        s.write_all(&packet[..packet.len() / 2]).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let n = timeout(GUARD, s.read(&mut buf))
            .await
            .expect("half-startup client never disconnected")
            .expect("clean close");
        (n, started.elapsed())
    };
    let ((n1, e1), (n2, e2)) = tokio::join!(silent, half);
    assert_eq!((n1, n2), (0, 0), "the proxy sent bytes instead of closing");
    for e in [e1, e2] {
        assert!(e >= Duration::from_millis(250), "closed too early: {e:?}");
    }
    // A normal client logs in well within the timeout.
    let (client, _t) = connect_watched(&proxy.conn_str("postgres", "postgres")).await;
    select_one(&client).await;
    proxy.stop().await;
}

// ---- 5. graceful shutdown of the binary ----

async fn start_binary(env: &'static [(&'static str, &'static str)]) -> ProxyProcess {
    let url = cluster().tcp_url();
    tokio::task::spawn_blocking(move || ProxyProcess::start(&url, &[], env))
        .await
        .unwrap()
}

fn sigterm(p: &ProxyProcess) {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(p.pid() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill failed");
}

/// Waits (bounded) until the listener refuses connections.
async fn wait_refusing(port: u16) {
    let deadline = Instant::now() + GUARD;
    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_exit(p: &mut ProxyProcess, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pgbranch did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count_rows(direct: &tokio_postgres::Client) -> i64 {
    direct
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_commit_then_exits_cleanly() {
    let db = cluster().fresh_db();
    let (direct, _dt) = connect_watched(&cluster().direct(&db)).await;
    direct
        .batch_execute("CREATE TABLE t (id int primary key)")
        .await
        .unwrap();
    let mut proc = start_binary(&[("PGBRANCH_SHUTDOWN_TIMEOUT", "10s")]).await;
    let conn_str = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        proc.port
    );
    let (a, a_task) = connect_watched(&conn_str).await;
    let (b, b_task) = connect_watched(&conn_str).await;
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    select_one(&b).await;

    sigterm(&proc);
    wait_refusing(proc.port).await;

    // The idle session is closed by the proxy, with its own 57P01.
    let (code, severity, message) = conn_ended_with(b_task).await;
    assert_eq!((code.as_str(), severity.as_str()), ("57P01", "FATAL"));
    assert!(message.contains("pgbranch is shutting down"), "{message}");
    query_fails(&b).await;

    // The session in a transaction may still finish it...
    assert!(!a_task.is_finished(), "session in a transaction was closed");
    a.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    timeout(GUARD, a.batch_execute("COMMIT"))
        .await
        .expect("COMMIT hangs")
        .expect("COMMIT during shutdown");
    // ...and is closed right after.
    let (code, _, message) = conn_ended_with(a_task).await;
    assert_eq!(code, "57P01", "{message}");
    query_fails(&a).await;

    let status = wait_exit(&mut proc, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(count_rows(&direct).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_closes_open_transactions_and_rolls_them_back() {
    let db = cluster().fresh_db();
    let (direct, _dt) = connect_watched(&cluster().direct(&db)).await;
    direct
        .batch_execute("CREATE TABLE t (id int primary key)")
        .await
        .unwrap();
    let mut proc = start_binary(&[("PGBRANCH_SHUTDOWN_TIMEOUT", "1s")]).await;
    let conn_str = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        proc.port
    );
    let (c, c_task) = connect_watched(&conn_str).await;
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let pid: i32 = scalar(&c, "SELECT pg_backend_pid()").await.parse().unwrap();
    // A client that connected but never finished its startup must not
    // hold the exit up either.
    let mut lingering = TcpStream::connect(("127.0.0.1", proc.port)).await.unwrap();
    lingering.write_all(&[0, 0]).await.unwrap();

    let started = Instant::now();
    sigterm(&proc);
    let status = wait_exit(&mut proc, Duration::from_secs(15)).await;
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the shutdown timeout"
    );
    assert!(
        took < Duration::from_secs(8),
        "exit took {took:?} with a 1s shutdown timeout"
    );

    let (code, _, message) = conn_ended_with(c_task).await;
    assert_eq!(code, "57P01", "{message}");
    query_fails(&c).await;
    // The upstream session ended and its transaction was rolled back.
    wait_backend_gone(&direct, pid).await;
    assert_eq!(count_rows(&direct).await, 0);
    drop(lingering);
}

// ---- 6. connection limit ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_with_53300() {
    let mut config = test_config();
    config.max_client_connections = 2;
    let proxy = start_proxy(config).await;
    let conn_str = proxy.conn_str("postgres", "postgres");
    let (c1, _t1) = connect_watched(&conn_str).await;
    let (c2, _t2) = connect_watched(&conn_str).await;
    for _ in 0..3 {
        let (code, severity, message) = db_err(&connect_err(&conn_str).await);
        assert_eq!((code.as_str(), severity.as_str()), ("53300", "FATAL"));
        assert!(message.contains("too many clients"), "{message}");
    }
    select_one(&c1).await;
    select_one(&c2).await;
    // Closing one frees its slot (bounded wait for the proxy to notice).
    drop(c1);
    let deadline = Instant::now() + GUARD;
    let c3 = loop {
        match tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                break client;
            }
            Err(e) => {
                assert_eq!(db_err(&e).0, "53300");
                assert!(Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    select_one(&c3).await;
    proxy.stop().await;
}

// ---- 7. configuration and command-line errors ----

async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(PGBRANCH_BIN);
    cmd.args(args)
        .env_remove("PGBRANCH_CONFIG")
        .env_remove("PGBRANCH_LISTEN")
        .env_remove("PGBRANCH_UPSTREAM_URL")
        // Tests run in parallel: no fixed metrics port.
        .env("PGBRANCH_METRICS_LISTEN", "")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = timeout(GUARD, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("pgbranch {args:?} did not exit"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn config_errors_exit_nonzero_and_name_the_culprit() {
    // Should the binary accept a bad config, these keep it harmless: no
    // embedded PostgreSQL, and the hang guard kills it.
    let upstream = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let listen = format!("127.0.0.1:{}", free_port());

    let (ok, stderr) = run_binary(
        &[
            "serve",
            "--config",
            "/nonexistent.toml",
            "--upstream",
            &upstream,
            "--listen",
            &listen,
        ],
        &[],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "max_message_size = 4096\nlisten_adress = \"x\"\n").unwrap();
    let (ok, stderr) = run_binary(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--upstream",
            &upstream,
            "--listen",
            &listen,
        ],
        &[],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("listen_adress"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");

    let (ok, stderr) = run_binary(
        &["serve", "--upstream", &upstream],
        &[("PGBRANCH_LISTEN", "notanaddr")],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("`listen`"), "{stderr}");
    assert!(stderr.contains("notanaddr"), "{stderr}");
}
