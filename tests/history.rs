//! DDL history through the proxy, against real PostgreSQL: what is
//! recorded, atomicity with the client's transaction in both protocols,
//! statements that cannot run in a transaction block, concurrency, drift,
//! the SQL commands, and the CLI.

mod common;

use common::*;
use tokio_postgres::SimpleQueryMessage;

/// One recorded row, as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    version: i64,
    object_type: String,
    identity: String,
    action: String,
    tag: String,
    statement: String,
}

/// The recorded history of `main`, version order, read directly.
async fn history(db: &str) -> Vec<Row> {
    let direct = connect(&cluster().direct(db)).await;
    direct
        .query(
            "SELECT version, object_type, object_identity, action, command_tag, statement \
             FROM pgbranch.schema_history WHERE branch = 'main' ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Row {
            version: r.get(0),
            object_type: r.get(1),
            identity: r.get(2),
            action: r.get(3),
            tag: r.get(4),
            statement: r.get(5),
        })
        .collect()
}

/// Recorded rows other than the baseline.
async fn changes(db: &str) -> Vec<Row> {
    history(db)
        .await
        .into_iter()
        .filter(|r| r.action != "baseline")
        .collect()
}

/// The statements of the recorded rows other than the baseline.
async fn recorded_statements(db: &str) -> Vec<String> {
    changes(db).await.into_iter().map(|r| r.statement).collect()
}

async fn proxy() -> TestProxy {
    start_proxy(test_config()).await
}

async fn table_exists(db: &str, name: &str) -> bool {
    let direct = connect(&cluster().direct(db)).await;
    direct
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

fn command_counts(msgs: &[SimpleQueryMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_statement_family_is_recorded_with_type_identity_and_action() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    // (statement, object type, identity, action, tag)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        ("CREATE TABLE users (id int PRIMARY KEY, name text)", "table", "public.users", "create", "CREATE TABLE"),
        ("CREATE INDEX users_name_idx ON users (name)", "index", "public.users_name_idx", "create", "CREATE INDEX"),
        ("CREATE VIEW v AS SELECT id, name FROM users", "view", "public.v", "create", "CREATE VIEW"),
        ("CREATE MATERIALIZED VIEW mv AS SELECT id FROM users", "materialized view", "public.mv", "create", "SELECT 0"),
        ("CREATE SEQUENCE s START 10", "sequence", "public.s", "create", "CREATE SEQUENCE"),
        ("CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'", "function", "public.add(integer,integer)", "create", "CREATE FUNCTION"),
        ("CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$", "procedure", "public.p()", "create", "CREATE PROCEDURE"),
        ("CREATE FUNCTION trg_fn() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$", "function", "public.trg_fn()", "create", "CREATE FUNCTION"),
        ("CREATE TRIGGER trg BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION trg_fn()", "trigger", "trg on public.users", "create", "CREATE TRIGGER"),
        ("CREATE TYPE mood AS ENUM ('sad', 'happy')", "type", "public.mood", "create", "CREATE TYPE"),
        ("ALTER TYPE mood ADD VALUE 'ok'", "type", "public.mood", "alter", "ALTER TYPE"),
        ("CREATE DOMAIN posint AS int CHECK (VALUE > 0)", "domain", "public.posint", "create", "CREATE DOMAIN"),
        ("CREATE SCHEMA app", "schema", "app", "create", "CREATE SCHEMA"),
        ("CREATE EXTENSION citext", "extension", "citext", "create", "CREATE EXTENSION"),
        ("CREATE POLICY pol ON users USING (true)", "policy", "pol on public.users", "create", "CREATE POLICY"),
        ("CREATE RULE r AS ON UPDATE TO v DO INSTEAD NOTHING", "rule", "r on public.v", "create", "CREATE RULE"),
        ("COMMENT ON TABLE users IS 'people who log in'", "table", "public.users", "comment", "COMMENT"),
        ("GRANT SELECT ON users TO pgb_plain", "table", "public.users", "grant", "GRANT"),
        ("REVOKE SELECT ON users FROM pgb_plain", "table", "public.users", "revoke", "REVOKE"),
        ("ALTER TABLE users ADD COLUMN email text", "table", "public.users", "alter", "ALTER TABLE"),
        ("ALTER TABLE users RENAME TO people", "table", "users", "rename", "ALTER TABLE"),
        ("SELECT * INTO people_copy FROM people", "table", "public.people_copy", "create", "SELECT 0"),
        ("CREATE TABLE answers AS SELECT 42 AS x", "table", "public.answers", "create", "SELECT 1"),
        ("DROP VIEW v", "view", "public.v", "drop", "DROP VIEW"),
        ("DROP FUNCTION add(integer, integer)", "function", "public.add(integer,integer)", "drop", "DROP FUNCTION"),
    ];
    for (sql, ..) in cases {
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // Not schema changes: not recorded.
    c.batch_execute(
        "CREATE TEMP TABLE scratch (x int); INSERT INTO people VALUES (1, 'a'); SELECT 1; \
         TRUNCATE people_copy; ANALYZE people; REFRESH MATERIALIZED VIEW mv",
    )
    .await
    .unwrap();
    let rows = changes(&db).await;
    assert_eq!(rows.len(), cases.len(), "{rows:#?}");
    for (i, (row, (sql, ty, id, action, tag))) in rows.iter().zip(cases).enumerate() {
        assert_eq!(row.version, i as i64 + 1);
        assert_eq!(row.statement, *sql);
        assert_eq!(
            (
                row.object_type.as_str(),
                row.identity.as_str(),
                row.action.as_str(),
                row.tag.as_str()
            ),
            (*ty, *id, *action, *tag),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn multi_statement_queries_record_each_ddl_and_keep_the_client_responses() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    let sql = "/* migration 7 */ CREATE TABLE a (x int); INSERT INTO a VALUES (1), (2);\n\
               CREATE TABLE \"B;\" (y text DEFAULT 'x;y'); SELECT $$;$$ AS s; -- done";
    let msgs = c.simple_query(sql).await.unwrap();
    // Exactly what PostgreSQL answers directly.
    let direct_db = cluster().fresh_db();
    let direct = connect(&cluster().direct(&direct_db)).await;
    let expected = direct.simple_query(sql).await.unwrap();
    assert_eq!(command_counts(&msgs), command_counts(&expected));
    assert_eq!(command_counts(&msgs), vec![0, 2, 0, 1]);
    let rows = changes(&db).await;
    let stmts: Vec<_> = rows.iter().map(|r| r.statement.as_str()).collect();
    assert_eq!(
        stmts,
        [
            "CREATE TABLE a (x int)",
            "CREATE TABLE \"B;\" (y text DEFAULT 'x;y')"
        ]
    );
    assert_eq!(rows[1].identity, "public.\"B;\"");
}

#[tokio::test]
async fn extended_protocol_ddl_is_recorded() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    assert_eq!(c.execute("CREATE TABLE e (x int)", &[]).await.unwrap(), 0);
    let stmt = c.prepare("ALTER TABLE e ADD COLUMN y int").await.unwrap();
    c.execute(&stmt, &[]).await.unwrap();
    // Ordinary prepared statements around it are untouched.
    let n: i64 = c
        .query_one("SELECT count(*) FROM e WHERE x = $1", &[&1i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // A failing DDL in the extended protocol records nothing.
    let err = c.execute("CREATE TABLE e (x int)", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P07");
    // In a transaction that rolls back: nothing.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    tx.execute("CREATE TABLE gone (x int)", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute("CREATE TABLE kept (x int)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let rows = changes(&db).await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.action.as_str(), r.identity.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("create", "public.e"),
            ("alter", "public.e"),
            ("create", "public.kept")
        ]
    );
    assert!(!table_exists(&db, "gone").await);
}

#[tokio::test]
async fn commit_rollback_failure_and_savepoints() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.batch_execute("BEGIN; CREATE TABLE r1 (x int); ROLLBACK")
        .await
        .unwrap();
    c.batch_execute("BEGIN; CREATE TABLE c1 (x int); COMMIT")
        .await
        .unwrap();
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("CREATE TABLE r2 (x int)").await.unwrap();
    c.simple_query("ROLLBACK").await.unwrap();
    // A failing statement: the client gets the server's error, no row.
    let err = c.simple_query("CREATE TABLE c1 (x int)").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P07");
    // The second statement of an implicit transaction fails: the first
    // DDL rolls back with it, and so does its row.
    let err = c
        .batch_execute("CREATE TABLE r3 (x int); SELECT 1/0")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");
    c.batch_execute(
        "BEGIN; SAVEPOINT s; CREATE TABLE sp1 (x int); ROLLBACK TO SAVEPOINT s; \
         CREATE TABLE sp2 (x int); SAVEPOINT t; ALTER TABLE sp2 ADD COLUMN y int; RELEASE SAVEPOINT t; COMMIT",
    )
    .await
    .unwrap();
    // A transaction that fails later.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("CREATE TABLE r4 (x int)").await.unwrap();
    assert!(c.simple_query("SELECT 1/0").await.is_err());
    c.simple_query("COMMIT").await.unwrap();
    let rows = changes(&db).await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.action.as_str(), r.identity.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("create", "public.c1"),
            ("create", "public.sp2"),
            ("alter", "public.sp2")
        ]
    );
    for t in ["r1", "r2", "r3", "r4", "sp1"] {
        assert!(!table_exists(&db, t).await, "{t}");
    }
    let versions: Vec<_> = history(&db).await.iter().map(|r| r.version).collect();
    assert_eq!(versions, [0, 1, 2, 3], "gapless despite the rollbacks");
}

#[tokio::test]
async fn concurrently_forms_are_recorded_after_they_succeed() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE t (x int, y int)")
        .await
        .unwrap();
    c.simple_query("CREATE INDEX CONCURRENTLY t_x ON t (x)")
        .await
        .unwrap();
    // Extended protocol.
    c.execute("CREATE INDEX CONCURRENTLY t_y ON t (y)", &[])
        .await
        .unwrap();
    // Failing: nothing recorded.
    let err = c
        .simple_query("CREATE INDEX CONCURRENTLY nope ON missing (x)")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    // Inside a block the server refuses it: nothing recorded.
    assert!(c
        .batch_execute("BEGIN; CREATE INDEX CONCURRENTLY t_z ON t (x); COMMIT")
        .await
        .is_err());
    c.simple_query("ROLLBACK").await.unwrap();
    c.simple_query("DROP INDEX CONCURRENTLY t_x").await.unwrap();
    // The session goes on normally.
    c.simple_query("SELECT 1").await.unwrap();
    let rows = changes(&db).await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.object_type.as_str(),
                r.identity.as_str(),
                r.tag.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("create", "table", "public.t", "CREATE TABLE"),
            ("create", "index", "public.t_x", "CREATE INDEX"),
            ("create", "index", "public.t_y", "CREATE INDEX"),
            ("drop", "index", "public.t_x", "DROP INDEX"),
        ]
    );
}

#[tokio::test]
async fn concurrent_ddl_from_many_connections_gets_gapless_versions() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    // Initialise first so that every connection races on DDL only.
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE seed (x int)").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let conn = proxy.conn_str("postgres", &db);
        tasks.push(tokio::spawn(async move {
            let c = connect(&conn).await;
            for j in 0..10 {
                if j % 2 == 0 {
                    c.simple_query(&format!("CREATE TABLE c_{i}_{j} (x int)"))
                        .await
                        .unwrap();
                } else {
                    c.execute(&format!("CREATE TABLE c_{i}_{j} (x int)"), &[])
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = history(&db).await;
    let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
    assert_eq!(versions, (0..=81).collect::<Vec<i64>>());
    let direct = connect(&cluster().direct(&db)).await;
    let ids: Vec<i64> = column(
        &direct,
        "SELECT id FROM pgbranch.schema_history ORDER BY version",
    )
    .await;
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "global order follows versions"
    );
}

#[tokio::test]
async fn drift_is_detected_and_reported() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE tracked (x int)")
        .await
        .unwrap();
    let drift = c.simple_query("SHOW SCHEMA DRIFT").await.unwrap();
    assert_eq!(command_counts(&drift), [0]);
    // Changes made around the proxy.
    cluster().psql_socket(
        &db,
        "CREATE TABLE sneaky (x int); ALTER TABLE tracked ADD COLUMN y int",
    );
    let drift = c.simple_query("SHOW SCHEMA DRIFT").await.unwrap();
    let found: Vec<(String, String, String)> = drift
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap().to_string(),
                r.get(1).unwrap().to_string(),
                r.get(2).unwrap().to_string(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "table".to_string(),
                "public.sneaky".to_string(),
                "added".to_string()
            ),
            (
                "table".to_string(),
                "public.tracked".to_string(),
                "changed".to_string()
            ),
        ]
    );
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", cluster().port);
    let out = std::process::Command::new(PGBRANCH_BIN)
        .args(["drift", "--database-url", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("added table public.sneaky"), "{text}");
    // The next change through the proxy first records the drift.
    c.simple_query("CREATE TABLE later (x int)").await.unwrap();
    let rows = changes(&db).await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.action.as_str(), r.identity.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("create", "public.tracked"),
            ("drift", ""),
            ("create", "public.later")
        ]
    );
    let out = std::process::Command::new(PGBRANCH_BIN)
        .args(["drift", "--database-url", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test]
async fn show_schema_history_in_both_protocols() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.batch_execute(
        "CREATE TABLE h1 (x int); CREATE TABLE h2 (x int); ALTER TABLE h1 ADD COLUMN y int",
    )
    .await
    .unwrap();
    let rows = c.query("SHOW SCHEMA HISTORY", &[]).await.unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get("version")).collect();
    assert_eq!(versions, [3, 2, 1, 0]);
    let rows = c
        .query("SHOW SCHEMA HISTORY FOR h1 LIMIT 1", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].get::<_, String>("statement"),
        "ALTER TABLE h1 ADD COLUMN y int"
    );
    let msgs = c
        .simple_query("show schema history for public.h1;")
        .await
        .unwrap();
    assert_eq!(command_counts(&msgs), [2]);
    // Not a history command: the server's own answer.
    let err = c
        .simple_query("SHOW SCHEMA HISTORY LIMIT lots")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42601");
}

#[tokio::test]
async fn a_role_that_cannot_set_up_history_cannot_change_the_schema_unrecorded() {
    let db = cluster().fresh_db();
    cluster().psql_socket(&db, "GRANT CREATE ON SCHEMA public TO pgb_plain");
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("pgb_plain", &db)).await;
    let err = c
        .simple_query("CREATE TABLE mine (x int)")
        .await
        .unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "42501");
    assert!(
        db_err.hint().unwrap().contains("pgbranch init"),
        "{db_err:?}"
    );
    assert!(!table_exists(&db, "mine").await);
    let err = c
        .execute("CREATE TABLE mine (x int)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    // Set up by the owner with the CLI, the same role's DDL is recorded
    // as that role.
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", cluster().port);
    let out = std::process::Command::new(PGBRANCH_BIN)
        .args(["init", "--database-url", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    c.simple_query("CREATE TABLE mine (x int)").await.unwrap();
    let direct = connect(&cluster().direct(&db)).await;
    let role: String = scalar(
        &direct,
        "SELECT role::text FROM pgbranch.schema_history WHERE version = 1",
    )
    .await;
    assert_eq!(role, "pgb_plain");
    // pgb_plain may not read the history unless granted.
    let err = c.simple_query("SHOW SCHEMA HISTORY").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    // ... nor write rows through the recording function's tables.
    let err = c
        .simple_query("DELETE FROM pgbranch.schema_history")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
}

#[tokio::test]
async fn history_off_records_nothing() {
    let db = cluster().fresh_db();
    let mut config = test_config();
    config.history.enabled = false;
    let proxy = start_proxy(config).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE t (x int)").await.unwrap();
    assert!(!table_exists(&db, "pgbranch.schema_history").await);
}

#[tokio::test]
async fn baseline_captures_existing_objects() {
    let db = cluster().fresh_db();
    cluster().psql_socket(&db, "CREATE TABLE before (x int PRIMARY KEY)");
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("ALTER TABLE before ADD COLUMN y int")
        .await
        .unwrap();
    let direct = connect(&cluster().direct(&db)).await;
    let defs: Vec<(i64, String)> = direct
        .query(
            "SELECT version, definition FROM pgbranch.object_versions \
             WHERE identity = 'public.before' ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(defs.len(), 2);
    assert_eq!(defs[0].0, 0);
    assert!(!defs[0].1.contains(" y "), "{}", defs[0].1);
    assert!(defs[1].1.contains(" y "), "{}", defs[1].1);
}

async fn live_objects(db: &str) -> Vec<(String, String, String)> {
    let direct = connect(&cluster().direct(db)).await;
    direct
        .query(
            "SELECT object_type, identity, definition FROM pgbranch.schema_objects() ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn cli_log_show_diff_and_export_replay() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    for sql in [
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)",
        "ALTER TABLE items ADD COLUMN price numeric(10,2) DEFAULT 0",
        "CREATE INDEX items_name ON items (name)",
        "CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 10",
        "COMMENT ON TABLE items IS 'what we sell; all of it'",
        "CREATE FUNCTION total() RETURNS numeric LANGUAGE sql AS $$ SELECT sum(price) FROM items $$",
    ] {
        c.simple_query(sql).await.unwrap();
    }
    let url = db_url(&db);

    let out = pgbranch_cli(&["log", "--database-url", &url]);
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8(out.stdout).unwrap();
    for v in 0..=6 {
        assert!(log.contains(&format!("version {v} ")), "{log}");
    }
    assert!(
        log.contains("| CREATE INDEX items_name ON items (name)"),
        "{log}"
    );
    let out = pgbranch_cli(&["log", "--database-url", &url, "--object", "public.cheap"]);
    let log = String::from_utf8(out.stdout).unwrap();
    assert_eq!(log.matches("version ").count(), 1, "{log}");

    let out = pgbranch_cli(&["show", "items", "--at", "1", "--database-url", &url]);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("public.items"), "{shown}");
    assert!(!shown.contains("price"), "{shown}");
    let out = pgbranch_cli(&["show", "items", "--database-url", &url]);
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("price"), "{shown}");
    let out = pgbranch_cli(&["show", "nothing", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(2));

    let out = pgbranch_cli(&["diff", "--from", "1", "--to", "2", "--database-url", &url]);
    assert!(out.status.success(), "{out:?}");
    let diff = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(lines[0], "--- table public.items (version 1)", "{diff}");
    assert_eq!(lines[1], "+++ table public.items (version 2)", "{diff}");
    assert!(lines[2].starts_with("@@ -"), "{diff}");
    let added: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert!(
        added.iter().any(|l| l.contains("price numeric(10,2)")),
        "{diff}"
    );
    let out = pgbranch_cli(&["diff", "--from", "2", "--to", "4", "--database-url", &url]);
    let diff = String::from_utf8(out.stdout).unwrap();
    assert!(
        diff.contains("--- /dev/null\n+++ index public.items_name (version 4)"),
        "{diff}"
    );
    assert!(diff.contains("+++ view public.cheap (version 4)"), "{diff}");

    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let out = pgbranch_cli(&[
        "export",
        "--from",
        "1",
        "--dir",
        dir_s,
        "--database-url",
        &url,
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "0001_create_table_public_items.sql",
            "0002_alter_table_public_items.sql",
            "0003_create_index_public_items_name.sql",
            "0004_create_view_public_cheap.sql",
            "0005_comment_table_public_items.sql",
            "0006_create_function_public_total.sql",
        ]
    );
    // Replayed on an empty database, the files reproduce the schema.
    let replay = cluster().fresh_db();
    for f in &files {
        let (ok, _, err) = psql(
            &cluster().direct(&replay),
            &[
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                dir.path().join(f).to_str().unwrap(),
            ],
        )
        .await;
        assert!(ok, "{f}: {err}");
    }
    let out = pgbranch_cli(&["init", "--database-url", &db_url(&replay)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(live_objects(&replay).await, live_objects(&db).await);
}

#[tokio::test]
async fn a_proxy_killed_during_a_ddl_storm_loses_nothing_and_invents_nothing() {
    let db = cluster().fresh_db();
    let proxy = ProxyProcess::start(&cluster().tcp_url(), &[], &[]);
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        proxy.port
    );
    connect(&conn)
        .await
        .simple_query("CREATE TABLE k_seed (x int)")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let Ok((c, connection)) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await else {
                return;
            };
            tokio::spawn(connection);
            for j in 0.. {
                let r = match j % 3 {
                    0 => c.simple_query(&format!("CREATE TABLE k_{i}_{j} (x int)")).await.map(|_| ()),
                    1 => c.execute(&format!("CREATE TABLE k_{i}_{j} (x int)"), &[]).await.map(|_| ()),
                    _ => c
                        .batch_execute(&format!(
                            "BEGIN; CREATE TABLE k_{i}_{j} (x int); CREATE INDEX ON k_{i}_{j} (x); COMMIT"
                        ))
                        .await,
                };
                if r.is_err() {
                    return;
                }
            }
        }));
    }
    let direct = connect(&cluster().direct(&db)).await;
    wait_for("40 recorded CREATE TABLE", || async {
        direct
            .query_one(
                "SELECT count(*) >= 40 FROM pgbranch.schema_history WHERE command_tag = 'CREATE TABLE'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    })
    .await;
    let mut proxy = proxy;
    proxy.child.kill().unwrap(); // SIGKILL
    proxy.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    // Backends of the killed sessions end (and roll back) on their own.
    wait_for("killed sessions to end", || async {
        direct
            .query_one(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    })
    .await;
    let proxy = ProxyProcess::start(&cluster().tcp_url(), &[], &[]);
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        proxy.port
    );
    connect(&conn)
        .await
        .simple_query("CREATE TABLE k_after (x int)")
        .await
        .unwrap();

    let tables: Vec<String> = column(
        &direct,
        "SELECT 'public.' || relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'k\\_%' \
             AND relnamespace = 'public'::regnamespace ORDER BY 1",
    )
    .await;
    let created: Vec<String> = column(
        &direct,
        "SELECT object_identity FROM pgbranch.schema_history \
             WHERE action = 'create' AND object_type = 'table' ORDER BY 1",
    )
    .await;
    assert!(tables.len() > 40, "{tables:?}");
    assert_eq!(
        created, tables,
        "exactly one CREATE row per existing table, none for others"
    );
    let gapless: bool = scalar(&direct, "SELECT array_agg(version ORDER BY version) = array(SELECT generate_series(0, max(version)) FROM pgbranch.schema_history) \
             FROM pgbranch.schema_history").await;
    assert!(gapless);
    let drift: i64 = scalar(&direct, "SELECT count(*) FROM pgbranch.drift('main')").await;
    assert_eq!(drift, 0, "the recorded state matches the live schema");
}

#[tokio::test]
async fn large_binds_stream_past_the_hook_and_ddl_portals_stay_exact() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.execute("CREATE TABLE blobs (b text)", &[]).await.unwrap();
    let big = "x".repeat(3 * 1024 * 1024);
    let insert = c.prepare("INSERT INTO blobs VALUES ($1)").await.unwrap();
    c.execute(&insert, &[&big]).await.unwrap();
    let ddl = c
        .prepare("ALTER TABLE blobs ADD COLUMN n int")
        .await
        .unwrap();
    c.execute(&insert, &[&big]).await.unwrap();
    c.execute(&ddl, &[]).await.unwrap();
    c.execute(&insert, &[&big]).await.unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM blobs WHERE length(b) = $1",
            &[&(big.len() as i32)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let got: Vec<_> = recorded_statements(&db).await;
    assert_eq!(
        got,
        [
            "CREATE TABLE blobs (b text)",
            "ALTER TABLE blobs ADD COLUMN n int"
        ]
    );
}

#[tokio::test]
async fn recording_functions_cannot_be_hijacked_through_pg_temp() {
    // pgbranch set up by a superuser: its SECURITY DEFINER functions run
    // as that superuser. A role that may only connect and create
    // temporary objects must not get them to run its code.
    let db = cluster().fresh_db();
    let out = pgbranch_cli(&["init", "--database-url", &db_url(&db)]);
    assert!(out.status.success(), "{out:?}");
    cluster().psql_socket(
        &db,
        "CREATE TABLE owner_only (who text); REVOKE ALL ON owner_only FROM PUBLIC",
    );
    let plain = connect(&direct_as("pgb_plain", &db)).await;
    plain
        .batch_execute(
            "CREATE FUNCTION pg_temp.evil() RETURNS boolean LANGUAGE plpgsql AS \
             $$BEGIN INSERT INTO public.owner_only VALUES (current_user); RETURN true; END$$; \
             CREATE TEMP VIEW pg_depend AS \
             SELECT d.* FROM pg_catalog.pg_depend d WHERE pg_temp.evil(); \
             CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.evil())",
        )
        .await
        .unwrap();
    for call in [
        "SELECT pgbranch.ddl_begin('main', 'x')",
        "SELECT pgbranch.record_ddl('main', 'x', 'CREATE TABLE', 'table', 'x', 'create', 'x')",
        "SELECT * FROM pgbranch.drift('main')",
        "SELECT pgbranch.schema_fingerprint()",
    ] {
        // Whatever the outcome (pgb_plain may not read object_state), the
        // temporary objects must not have been used.
        let _ = plain.batch_execute(call).await;
    }
    let who = cluster().psql_socket(&db, "SELECT count(*) FROM owner_only");
    assert_eq!(who.trim(), "0", "pgb_plain's code ran as the owner");
    // Every function of the metadata schema pins its search_path so, but
    // check_as_of: called by every AS OF query, it qualifies every name
    // and operator instead, and runs as its caller.
    let unpinned = cluster().psql_socket(
        &db,
        "SELECT string_agg(p.proname, ', ') FROM pg_proc p \
         WHERE p.pronamespace = 'pgbranch'::regnamespace \
           AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false) \
           AND NOT (p.proname = 'check_as_of' AND NOT p.prosecdef)",
    );
    assert_eq!(unpinned.trim(), "", "functions without a safe search_path");
}

/// Frames for the extended-protocol run of `sql` on the unnamed statement
/// and portal (Parse, Bind, Execute), without Sync.
fn extended(sql: &str) -> Vec<u8> {
    use pgbranch::protocol::put_message;
    let mut out = Vec::new();
    let mut parse = vec![0];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    put_message(&mut out, b'P', &parse);
    put_message(&mut out, b'B', &[0, 0, 0, 0, 0, 0, 0, 0]);
    put_message(&mut out, b'E', &[0, 0, 0, 0, 0]);
    out
}

const SYNC: &[u8] = &[b'S', 0, 0, 0, 4];

/// A raw connection through `proxy` to `db` as postgres.
async fn raw(proxy: &TestProxy, db: &str) -> RawConn {
    RawConn::connect(
        proxy.port(),
        &[("user", b"postgres"), ("database", db.as_bytes())],
    )
    .await
    .0
}

/// A database with table `t (x int)`, a proxy, and a raw connection that
/// has sent `first` and `second` as two pipelined Query messages.
async fn two_queries_on_table_t(first: &str, second: &str) -> (String, TestProxy, RawConn) {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE t (x int)").await.unwrap();
    let mut r = raw(&proxy, &db).await;
    let mut bytes = pgbranch::protocol::query_message(first);
    bytes.extend(pgbranch::protocol::query_message(second));
    r.send(&bytes).await;
    (db, proxy, r)
}

/// Message tags of `msgs`, as a string.
fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.0 as char).collect()
}

#[tokio::test]
async fn a_concurrent_index_behind_a_pipelined_error_is_recorded() {
    let (db, _proxy, mut r) =
        two_queries_on_table_t("SELECT 1/0", "CREATE INDEX CONCURRENTLY t_x ON t (x)").await;
    assert_eq!(tags(&r.until_ready_allow_errors().await), "EZ");
    assert_eq!(tags(&r.until_ready().await), "CZ");
    r.send(&pgbranch::protocol::query_message("SELECT 1")).await;
    assert_eq!(tags(&r.until_ready().await), "TDCZ");
    let got: Vec<_> = recorded_statements(&db).await;
    assert_eq!(
        got,
        [
            "CREATE TABLE t (x int)",
            "CREATE INDEX CONCURRENTLY t_x ON t (x)"
        ]
    );
}

#[tokio::test]
async fn a_failed_concurrent_index_behind_a_pipelined_index_is_not_recorded() {
    // The first statement's CommandComplete says CREATE INDEX too.
    let (db, _proxy, mut r) = two_queries_on_table_t(
        "CREATE INDEX t_x ON t (x)",
        "CREATE INDEX CONCURRENTLY nope ON missing (x)",
    )
    .await;
    assert_eq!(tags(&r.until_ready().await), "CZ");
    assert_eq!(tags(&r.until_ready_allow_errors().await), "EZ");
    r.send(&pgbranch::protocol::query_message("SELECT 1")).await;
    assert_eq!(tags(&r.until_ready().await), "TDCZ");
    let got: Vec<_> = recorded_statements(&db).await;
    assert_eq!(
        got,
        ["CREATE TABLE t (x int)", "CREATE INDEX t_x ON t (x)"],
        "no row for the index that failed"
    );
}

#[tokio::test]
async fn a_concurrent_index_is_recorded_before_pipelined_statements_run() {
    // The client sends a BEGIN right behind the index (simple and extended
    // protocol), then rolls that transaction back: the record must not
    // have joined it.
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE t (x int, y int)")
        .await
        .unwrap();
    let mut r = raw(&proxy, &db).await;
    let mut bytes = pgbranch::protocol::query_message("CREATE INDEX CONCURRENTLY t_x ON t (x)");
    bytes.extend(pgbranch::protocol::query_message("BEGIN"));
    r.send(&bytes).await;
    assert_eq!(tags(&r.until_ready().await), "CZ");
    assert_eq!(tags(&r.until_ready().await), "CZ");
    r.send(&pgbranch::protocol::query_message("ROLLBACK")).await;
    assert_eq!(tags(&r.until_ready().await), "CZ");

    let mut bytes = extended("CREATE INDEX CONCURRENTLY t_y ON t (y)");
    bytes.extend_from_slice(SYNC);
    bytes.extend(extended("BEGIN"));
    bytes.extend_from_slice(SYNC);
    r.send(&bytes).await;
    assert_eq!(tags(&r.until_ready().await), "12CZ");
    assert_eq!(tags(&r.until_ready().await), "12CZ");
    r.send(&pgbranch::protocol::query_message("ROLLBACK")).await;
    assert_eq!(tags(&r.until_ready().await), "CZ");

    let got: Vec<_> = recorded_statements(&db).await;
    assert_eq!(
        got,
        [
            "CREATE TABLE t (x int, y int)",
            "CREATE INDEX CONCURRENTLY t_x ON t (x)",
            "CREATE INDEX CONCURRENTLY t_y ON t (y)"
        ]
    );
}

#[tokio::test]
async fn a_concurrent_index_that_cannot_be_recorded_warns_without_breaking_the_session() {
    // History is not set up and pgb_plain may not set it up: the index
    // (which cannot be refused in advance: it runs alone) is built, and
    // the failed record must not reach the client as an ErrorResponse it
    // never asked for.
    let db = cluster().fresh_db();
    cluster().psql_socket(
        &db,
        "CREATE TABLE t (x int, y int); ALTER TABLE t OWNER TO pgb_plain; \
         GRANT CREATE ON SCHEMA public TO pgb_plain",
    );
    let proxy = proxy().await;
    let (c, mut messages) = connect_with_messages(&proxy.conn_str("pgb_plain", &db)).await;
    c.simple_query("CREATE INDEX CONCURRENTLY t_x ON t (x)")
        .await
        .unwrap();
    c.execute("CREATE INDEX CONCURRENTLY t_y ON t (y)", &[])
        .await
        .unwrap();
    let rows = c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(command_counts(&rows), [1]);
    let mut warnings = 0;
    while let Ok(m) = messages.try_recv() {
        if let tokio_postgres::AsyncMessage::Notice(n) = m {
            assert_eq!(n.severity(), "WARNING");
            assert!(n.message().contains("could not record"), "{n:?}");
            warnings += 1;
        }
    }
    assert_eq!(warnings, 2);
    assert!(table_exists(&db, "t_x").await && table_exists(&db, "t_y").await);
}

#[tokio::test]
async fn ddl_committed_before_a_refused_concurrent_index_in_the_same_query_is_recorded() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    // The server refuses the index (a multi-statement Query is a
    // transaction block), but the COMMIT has committed the table.
    let err = c
        .batch_execute("CREATE TABLE a (x int); COMMIT; CREATE INDEX CONCURRENTLY a_x ON a (x)")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "25001");
    assert!(table_exists(&db, "a").await);
    let got: Vec<_> = recorded_statements(&db).await;
    assert_eq!(got, ["CREATE TABLE a (x int)"]);
}

#[tokio::test]
async fn an_unterminated_statement_is_not_completed_by_the_injected_record() {
    // PostgreSQL alone rejects this Query (the string never ends). Spliced
    // before the record, the echo of the statement inside it would close
    // the string, and the rest of the line is a comment: the table would
    // be created and the record never run.
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE seen (x int)").await.unwrap();
    for sql in [
        "CREATE TABLE sneaky (x text DEFAULT ')-- ",
        "CREATE TABLE sneaky (x text DEFAULT $$)-- ",
        "CREATE TABLE sneaky (x int /* ",
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), "42601", "{sql}: {err}");
    }
    assert!(!table_exists(&db, "sneaky").await);
    let got: Vec<_> = recorded_statements(&db).await;
    assert_eq!(got, ["CREATE TABLE seen (x int)"]);
}

/// The error a Query gets, as (SQLSTATE, position).
async fn query_error(c: &tokio_postgres::Client, sql: &str) -> (String, Option<u32>) {
    let err = c.simple_query(sql).await.unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    let position = match db.position() {
        Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
        _ => None,
    };
    (db.code().code().to_string(), position)
}

#[tokio::test]
async fn error_positions_point_into_the_query_the_client_sent() {
    let db = cluster().fresh_db();
    let direct_db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    let direct = connect(&cluster().direct(&direct_db)).await;
    for sql in [
        "CREATE TABLE t (x nosuchtype)",
        "CREATE TABLE t (x int,)",
        "SELECT 1; CREATE TABLE a (x int); SELECT nocol FROM a",
        "CREATE TABLE b (x int); ALTER TABLE b ADD COLUMN y nosuchtype",
        "CREATE TABLE c (x int); SELEC 1",
        "CREATE TABLE \"é€\" (x int); CREATE TABLE \"ü\" (y int); SELECT nocol FROM \"ü\"",
        "CREATE TABLE \"ö\" (x int); CREATE TABLE e (y nosuchtype)",
        "CREATE TABLE \"ø\" (x int); SELECT 1; SELEC 1",
    ] {
        let got = query_error(&c, sql).await;
        let want = query_error(&direct, sql).await;
        assert!(want.1.is_some(), "{sql}: {want:?}");
        assert_eq!(got, want, "{sql}");
    }
}

#[tokio::test]
async fn transactions_that_end_inside_one_query_are_each_set_up_and_locked() {
    // A migration file sent as one Query: the first transaction rolls
    // back, and with it the metadata schema its DDL created.
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.batch_execute(
        "BEGIN; CREATE TABLE a (x int); ROLLBACK; \
         BEGIN; CREATE TABLE b (x int); SAVEPOINT s; CREATE TABLE c (x int); \
         ROLLBACK TO SAVEPOINT s; CREATE TABLE d (x int); COMMIT",
    )
    .await
    .unwrap();
    let got: Vec<_> = recorded_statements(&db).await;
    assert_eq!(got, ["CREATE TABLE b (x int)", "CREATE TABLE d (x int)"]);
}

/// Sends `script` (raw frames, then CopyData/CopyDone when `copy` is
/// given) through the proxy and straight to the server, each to its own
/// fresh database, and returns the message tags each side answered with.
async fn both_ways(proxy: &TestProxy, script: &[u8], copy: Option<&[u8]>) -> (String, String) {
    let mut out = Vec::new();
    for port in [proxy.port(), cluster().port] {
        let db = cluster().fresh_db();
        let mut r = RawConn::connect(port, &[("user", b"postgres"), ("database", db.as_bytes())])
            .await
            .0;
        r.send(script).await;
        let mut msgs = Vec::new();
        loop {
            let m = r.recv().await;
            if m.0 == b'G' {
                if let Some(data) = copy {
                    let mut frames = Vec::new();
                    pgbranch::protocol::put_message(&mut frames, b'd', data);
                    pgbranch::protocol::put_message(&mut frames, b'c', &[]);
                    r.send(&frames).await;
                }
            }
            let done = m.0 == b'Z';
            msgs.push(m);
            if done {
                break;
            }
        }
        out.push(tags(&msgs));
    }
    (out.remove(0), out.remove(0))
}

#[tokio::test]
async fn copy_and_empty_statements_around_ddl_answer_as_postgres_does() {
    let proxy = proxy().await;
    for sql in [
        "CREATE TABLE cp (x int); COPY cp FROM STDIN; SELECT count(*) FROM cp",
        "CREATE TABLE co AS SELECT 1 AS x; COPY co TO STDOUT; CREATE INDEX ON co (x)",
        ";; CREATE TABLE e (x int);; /* c */ ; SELECT 1;",
        "/* only */ -- comments\n",
        "CREATE TABLE f (x int); SELECT 1/0; CREATE TABLE g (x int)",
    ] {
        let script = pgbranch::protocol::query_message(sql);
        let (got, want) = both_ways(&proxy, &script, Some(b"1\n2\n")).await;
        assert_eq!(got, want, "{sql}");
    }
}

#[tokio::test]
async fn pipelined_extended_ddl_with_errors_answers_as_postgres_does() {
    let proxy = proxy().await;
    let q = pgbranch::protocol::query_message;
    let cases: Vec<Vec<u8>> = vec![
        // DDL, then an error in the same batch, then DDL in the next.
        [
            extended("CREATE TABLE a (x int)"),
            extended("SELECT 1/0"),
            SYNC.to_vec(),
            extended("CREATE TABLE b (x int)"),
            SYNC.to_vec(),
        ]
        .concat(),
        // A failing DDL, then more behind it.
        [
            extended("CREATE TABLE c (x nosuchtype)"),
            extended("CREATE TABLE d (x int)"),
            SYNC.to_vec(),
            q("SELECT 1"),
        ]
        .concat(),
        // DDL in an aborted transaction block, in both protocols.
        [
            q("BEGIN"),
            q("SELECT 1/0"),
            extended("CREATE TABLE e (x int)"),
            SYNC.to_vec(),
            q("CREATE TABLE f (x int)"),
            q("ROLLBACK"),
        ]
        .concat(),
        // A concurrent index behind a failed batch: skipped with it.
        [
            extended("SELECT 1/0"),
            extended("CREATE INDEX CONCURRENTLY nope ON nothing (x)"),
            SYNC.to_vec(),
            q("SELECT 1"),
        ]
        .concat(),
    ];
    for script in cases {
        // Count the ReadyForQuery messages to expect.
        let mut readies = 0;
        let mut at = 0;
        while at < script.len() {
            if matches!(script[at], b'S' | b'Q') {
                readies += 1;
            }
            at += 1 + pgbranch::protocol::read_u32(&script, at + 1) as usize;
        }
        let mut got = Vec::new();
        for port in [proxy.port(), cluster().port] {
            let db = cluster().fresh_db();
            let mut r =
                RawConn::connect(port, &[("user", b"postgres"), ("database", db.as_bytes())])
                    .await
                    .0;
            r.send(&script).await;
            let mut all = String::new();
            for _ in 0..readies {
                all.push_str(&tags(&r.until_ready_allow_errors().await));
            }
            got.push(all);
        }
        assert_eq!(got[0], got[1], "{script:?}");
    }
}

#[tokio::test]
async fn a_huge_error_streams_through_the_history_hook() {
    // The hook reads errors, but a client can make one as large as it
    // likes: the proxy must not hold it whole.
    let db = cluster().fresh_db();
    let url = cluster().tcp_url();
    let proxy = tokio::task::spawn_blocking(move || ProxyProcess::start(&url, &[], &[]))
        .await
        .unwrap();
    let mut r = RawConn::connect(
        proxy.port,
        &[("user", b"postgres"), ("database", db.as_bytes())],
    )
    .await
    .0;
    r.send(&pgbranch::protocol::query_message(
        "SELECT repeat('x', 150000000)::int",
    ))
    .await;
    let msgs = r.until_ready_allow_errors().await;
    assert_eq!(tags(&msgs), "EZ");
    assert!(msgs[0].1.len() > 150_000_000);
    let (_, hwm) = rss_kib(proxy.pid());
    assert!(hwm < 100 * 1024, "proxy peak RSS {hwm} KiB");
    // The session goes on.
    r.send(&pgbranch::protocol::query_message(
        "CREATE TABLE after_error (x int)",
    ))
    .await;
    assert_eq!(tags(&r.until_ready().await), "CZ");
}

#[tokio::test]
async fn a_statement_behind_a_history_command_is_not_swallowed_into_its_object_name() {
    let db = cluster().fresh_db();
    let proxy = proxy().await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE TABLE h (x int)").await.unwrap();
    // Not a history command (the commands stand alone): the server's own
    // answer, and certainly not a silently dropped second statement.
    let err = c
        .simple_query("SHOW SCHEMA HISTORY FOR h; CREATE TABLE behind (x int)")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42601");
    // A quoted name may hold a semicolon.
    c.simple_query("CREATE TABLE \"a;b\" (x int)")
        .await
        .unwrap();
    let msgs = c
        .simple_query("SHOW SCHEMA HISTORY FOR \"a;b\";")
        .await
        .unwrap();
    assert_eq!(command_counts(&msgs), [1]);
}
