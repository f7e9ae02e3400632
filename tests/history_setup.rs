//! Setting up the history metadata: the first DDL in a database racing
//! from many connections, `pgbranch init` racing with itself and being
//! idempotent, and `pgbranch log --since`.

mod common;

use common::*;
use pgbranch::history::migrate::latest_version;

/// Every migration this build knows, in order.
fn all_migrations() -> Vec<i32> {
    (1..=latest_version() as i32).collect()
}

async fn migrations(db: &str) -> Vec<i32> {
    let direct = connect(&cluster().direct(db)).await;
    column(
        &direct,
        "SELECT version FROM pgbranch.migrations ORDER BY version",
    )
    .await
}

#[tokio::test]
async fn first_ddl_from_many_connections_sets_up_history_once() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    // Every connection is open before any of them changes the schema.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(&proxy.conn_str("postgres", &db)).await);
    }
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                c.simple_query(&format!("CREATE TABLE first_{i} (x int)"))
                    .await
                    .map(|_| ())
            } else {
                c.execute(&format!("CREATE TABLE first_{i} (x int)"), &[])
                    .await
                    .map(|_| ())
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every first DDL succeeds");
    }
    assert_eq!(migrations(&db).await, all_migrations());
    let direct = connect(&cluster().direct(&db)).await;
    let versions: Vec<i64> = column(
        &direct,
        "SELECT version FROM pgbranch.schema_history ORDER BY version",
    )
    .await;
    assert_eq!(versions, (0..=8).collect::<Vec<i64>>());
}

#[tokio::test]
async fn init_is_idempotent_and_safe_to_race() {
    let db = cluster().fresh_db();
    let url = db_url(&db);
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(PGBRANCH_BIN)
                .args(["init", "--database-url", &url])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for out in &outputs {
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("is at version {}", latest_version())),
            "{text}"
        );
    }
    let out = pgbranch_cli(&["init", "--database-url", &url]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(migrations(&db).await, all_migrations());
    let direct = connect(&cluster().direct(&db)).await;
    let baselines: Vec<(i64, String, String)> = direct
        .query(
            "SELECT version, object_type, object_identity FROM pgbranch.schema_history \
             WHERE action = 'baseline'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // One baseline, at version 0, describing no single object.
    assert_eq!(baselines, [(0, String::new(), String::new())]);
}

#[tokio::test]
async fn init_refuses_a_foreign_pgbranch_schema() {
    let db = cluster().fresh_db();
    cluster().psql_socket(&db, "CREATE SCHEMA pgbranch");
    let out = pgbranch_cli(&["init", "--database-url", &db_url(&db)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
}

#[tokio::test]
async fn log_filters_by_time_and_cli_errors_are_clear() {
    let db = cluster().fresh_db();
    let url = db_url(&db);
    // Without history yet: a clear error, exit status 2.
    let out = pgbranch_cli(&["log", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pgbranch init"));

    let proxy = start_proxy(test_config()).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE dated (x int)").await.unwrap();
    let out = pgbranch_cli(&["log", "--database-url", &url, "--since", "2000-01-01"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("version ")
            .count(),
        2
    );
    let out = pgbranch_cli(&["log", "--database-url", &url, "--since", "2999-01-01"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let out = pgbranch_cli(&["log", "--database-url", &url, "--limit", "1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("version ")
            .count(),
        1
    );
    // A password in the URL never shows up in errors.
    let out = pgbranch_cli(&[
        "log",
        "--database-url",
        "postgres://u:topsecret@127.0.0.1:1/db",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("topsecret"), "{err}");
}

#[tokio::test]
async fn two_proxies_share_one_gapless_version_sequence() {
    let db = cluster().fresh_db();
    let a = start_proxy(test_config()).await;
    let b = start_proxy(test_config()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let conn = if i % 2 == 0 { &a } else { &b }.conn_str("postgres", &db);
        tasks.push(tokio::spawn(async move {
            let c = connect(&conn).await;
            for j in 0..5 {
                c.simple_query(&format!(
                    "CREATE TABLE p_{i}_{j} (x int); ALTER TABLE p_{i}_{j} ADD COLUMN y int"
                ))
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let direct = connect(&cluster().direct(&db)).await;
    let versions: Vec<i64> = column(
        &direct,
        "SELECT version FROM pgbranch.schema_history ORDER BY version",
    )
    .await;
    assert_eq!(versions, (0..=80).collect::<Vec<i64>>());
    // Each table's ALTER comes after its CREATE.
    let misordered: i64 = scalar(
        &direct,
        "SELECT count(*) FROM pgbranch.schema_history c JOIN pgbranch.schema_history a \
             ON a.object_identity = c.object_identity AND a.action = 'alter' \
             WHERE c.action = 'create' AND a.version < c.version",
    )
    .await;
    assert_eq!(misordered, 0);
}

#[tokio::test]
async fn a_pgbranch_schema_owned_by_an_untrusted_role_is_never_run() {
    let db = cluster().fresh_db();
    cluster().psql_socket(
        &db,
        &format!(
            "GRANT CREATE ON DATABASE {db} TO pgb_plain; \
             CREATE TABLE public.trap_log (who name); GRANT INSERT ON public.trap_log TO PUBLIC"
        ),
    );
    let proxy = start_proxy(test_config()).await;
    // Through the proxy, pgb_plain (neither superuser nor database owner)
    // may not set history up, so its schema change is refused.
    let plain = connect(&proxy.conn_str("pgb_plain", &db)).await;
    let err = plain.simple_query("CREATE SCHEMA mine").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    // Directly, it prepares a trap for whoever changes the schema next.
    let direct_plain = connect(&format!(
        "host=127.0.0.1 port={} user=pgb_plain dbname={db}",
        cluster().port
    ))
    .await;
    direct_plain
        .batch_execute(
            "CREATE SCHEMA pgbranch; \
             CREATE FUNCTION pgbranch.trap() RETURNS int LANGUAGE sql \
               AS $$ INSERT INTO public.trap_log VALUES (current_user) RETURNING 1000 $$; \
             CREATE VIEW pgbranch.migrations AS SELECT pgbranch.trap() AS version; \
             CREATE FUNCTION pgbranch.ddl_begin(text, text) RETURNS void LANGUAGE sql \
               AS $$ INSERT INTO public.trap_log VALUES (current_user) $$",
        )
        .await
        .unwrap();
    // A superuser changing the schema through the proxy is refused, and
    // none of pgb_plain's code ran as the superuser.
    let su = connect(&proxy.conn_str("postgres", &db)).await;
    let err = su.simple_query("CREATE TABLE t (x int)").await.unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code().code(), "42501");
    assert!(e.message().contains("pgb_plain"), "{e:?}");
    let err = su.execute("CREATE TABLE t (x int)", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    let direct = connect(&cluster().direct(&db)).await;
    let ran: i64 = scalar(&direct, "SELECT count(*) FROM public.trap_log").await;
    assert_eq!(ran, 0);
    let out = pgbranch_cli(&["init", "--database-url", &db_url(&db)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a superuser"));
}

#[tokio::test]
async fn ddl_hidden_in_a_do_block_is_not_recorded_but_shows_as_drift() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE seen (x int)").await.unwrap();
    c.simple_query("DO $$ BEGIN EXECUTE 'CREATE TABLE hidden (x int)'; END $$")
        .await
        .unwrap();
    let direct = connect(&cluster().direct(&db)).await;
    let recorded: Vec<String> = column(
        &direct,
        "SELECT object_identity FROM pgbranch.schema_history WHERE action = 'create'",
    )
    .await;
    assert_eq!(recorded, ["public.seen"]);
    let drift: Vec<(String, String)> = c
        .query("SHOW SCHEMA DRIFT", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("identity"), r.get("change")))
        .collect();
    assert_eq!(drift, [("public.hidden".to_string(), "added".to_string())]);
}
