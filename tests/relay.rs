//! The relay with real clients: simple and extended protocol, pipelining,
//! startup parameters, branch selection at startup, NOTIFY and PIDs.

mod common;

use common::*;

#[tokio::test]
async fn simple_and_extended_queries_pass_through() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let client = connect(&proxy.conn_str("postgres", &db)).await;

    // Simple protocol, several statements in one Query message.
    let msgs = client
        .simple_query("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT v FROM t ORDER BY id")
        .await
        .unwrap();
    let rows: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["a", "b"]);

    // Extended protocol with parameters and a prepared statement.
    let stmt = client
        .prepare("SELECT v FROM t WHERE id = $1")
        .await
        .unwrap();
    let row = client.query_one(&stmt, &[&2i32]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "b");

    // Errors come back with their SQLSTATE and the session goes on.
    let err = client
        .query("SELECT * FROM missing_table", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    proxy.stop().await;
}

#[tokio::test]
async fn pipelined_extended_queries_keep_their_order() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let client = connect(&proxy.conn_str("postgres", &db)).await;
    let stmt = client.prepare("SELECT $1::int * 2").await.unwrap();
    // tokio-postgres pipelines concurrent queries on one connection.
    let futures: Vec<_> = (0..200i32)
        .map(|i| {
            let c = &client;
            let s = &stmt;
            async move { c.query_one(s, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
        })
        .collect();
    let results = futures_util::future::join_all(futures).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), 2 * i as i32);
    }
    // A failing statement in the middle of a pipeline fails alone.
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1", &[]),
        client.query_one("SELECT 1/0", &[]),
        client.query_one("SELECT 3", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(
        b.unwrap_err().code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn startup_parameters_reach_the_server_unchanged() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let conn = format!(
        "{} application_name=relaytest options='-c datestyle=SQL,DMY -c intervalstyle=iso_8601 -c branch=main -c extra_float_digits=1'",
        proxy.conn_str("postgres", &db)
    );
    let client = connect(&conn).await;
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('datestyle'), current_setting('intervalstyle'), current_setting('extra_float_digits'), current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "relaytest");
    assert_eq!(row.get::<_, String>(1), "SQL, DMY");
    assert_eq!(row.get::<_, String>(2), "iso_8601");
    assert_eq!(row.get::<_, String>(3), "1");
    assert_eq!(row.get::<_, String>(4), db);
    // The branch selection was removed: the server never saw it.
    let err = client
        .query_one("SELECT current_setting('branch')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn branch_selection_forms_and_errors() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let base = proxy.conn_str("postgres", &db);
    // Every way of selecting main works, including db/branch.
    for extra in [
        "options='-c branch=main'",
        "options='-cbranch=main'",
        "options='--branch=main'",
        "options='-c pgbranch.branch=main'",
    ] {
        let client = connect(&format!("{base} {extra}")).await;
        client.simple_query("SELECT 1").await.unwrap();
    }
    let client = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}/main",
        proxy.port()
    ))
    .await;
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), db);

    // Another branch: a clear error until branches exist.
    let err = tokio_postgres::connect(
        &format!("{base} options='-c branch=feature'"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("branch refused");
    let db_err = err.as_db_error().expect("server error");
    assert_eq!(db_err.code().code(), "3D000");
    assert!(db_err.message().contains("feature"), "{}", db_err.message());

    // Conflicting selections.
    let err = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}/a options='-c branch=b'",
            proxy.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("conflict refused");
    assert_eq!(err.as_db_error().unwrap().code().code(), "22023");

    // Invalid names never reach SQL.
    let (ok, _, stderr) = psql(
        &format!("{base} options='-c branch=x;drop'"),
        &["-c", "select 1"],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("invalid branch name"), "{stderr}");

    // Replication connections are refused clearly.
    let (ok, _, stderr) = psql(
        &format!("{base} replication=database"),
        &["-c", "IDENTIFY_SYSTEM"],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("replication connections are not supported"),
        "{stderr}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn notifications_carry_the_real_backend_pid() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let (client, mut rx) = connect_with_messages(&proxy.conn_str("postgres", &db)).await;
    let other = connect(&proxy.conn_str("postgres", &db)).await;
    let my_pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let other_pid: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("LISTEN chan").await.unwrap();
    client.batch_execute("NOTIFY chan, 'self'").await.unwrap();
    other.batch_execute("NOTIFY chan, 'other'").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let tokio_postgres::AsyncMessage::Notification(n) =
            rx.recv().await.expect("notification")
        {
            seen.push((n.process_id(), n.payload().to_string()));
        }
    }
    assert!(seen.contains(&(my_pid, "self".to_string())), "{seen:?}");
    assert!(seen.contains(&(other_pid, "other".to_string())), "{seen:?}");
    proxy.stop().await;
}

/// PostgreSQL uses the last copy of a repeated startup parameter; the proxy
/// must read the same one, or `replication=false, replication=database`
/// would slip a walsender past the refusal.
#[tokio::test]
async fn repeated_startup_parameters_are_read_as_the_server_reads_them() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut raw = RawConn::new(tcp);
    let startup = pgbranch::protocol::startup::StartupMessage {
        version: pgbranch::protocol::PROTOCOL_3_0,
        params: [
            ("user", "postgres"),
            ("database", db.as_str()),
            ("replication", "false"),
            ("replication", "database"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect(),
    };
    raw.send(&startup.encode()).await;
    let (tag, body) = raw.recv().await;
    assert_eq!(tag, b'E');
    assert_eq!(
        pgbranch::protocol::backend::error_code(&body).as_deref(),
        Some("0A000")
    );

    proxy.stop().await;
}

/// During COPY FROM STDIN the server ignores Sync, so the Sync that
/// tokio-postgres and libpq send with the COPY's Execute gets no
/// ReadyForQuery. The response queue must know: afterwards the session is
/// idle, and graceful shutdown closes it at once instead of waiting for
/// the shutdown timeout.
#[tokio::test]
async fn copy_in_over_the_extended_protocol_leaves_the_session_idle() {
    use futures_util::SinkExt;
    let db = cluster().fresh_db();
    let mut config = test_config();
    config.shutdown_timeout = std::time::Duration::from_secs(120);
    let proxy = start_proxy(config).await;
    let client = connect(&proxy.conn_str("postgres", &db)).await;
    client
        .batch_execute("CREATE TABLE c (v int)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\n2\n3\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 3);
    // The session goes on normally...
    let n: i64 = client
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // ...and is idle: shutdown closes it without waiting 120 s.
    tokio::time::timeout(std::time::Duration::from_secs(30), proxy.stop())
        .await
        .expect("idle session closed at shutdown");
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed()
            || err
                .as_db_error()
                .is_some_and(|e| e.code().code() == "57P01"),
        "{err}"
    );
}
