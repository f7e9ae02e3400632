//! Time travel: system-versioned tables, AS OF queries, as-of sessions.

mod common;
use common::*;

/// The server's message of an error.
fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// The database's clock, as the history records it.
async fn db_now(c: &tokio_postgres::Client) -> String {
    scalar(c, "SELECT now()::text").await
}

#[tokio::test]
async fn history_functions_answer_as_of_through_sql() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.batch_execute("CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO acct VALUES (1, 'ann', 10), (2, 'bob', 20)")
        .await
        .unwrap();
    let msg: String = scalar(&c, "SELECT pgbranch.enable_versioning('acct')").await;
    assert!(msg.contains("enabled"), "{msg}");
    let t0 = db_now(&c).await;
    c.batch_execute("UPDATE acct SET balance = balance + 5 WHERE id = 1")
        .await
        .unwrap();
    let t1 = db_now(&c).await;
    c.batch_execute("BEGIN; DELETE FROM acct WHERE id = 2; INSERT INTO acct VALUES (3, 'cy', 30); UPDATE acct SET balance = 31 WHERE id = 3; COMMIT")
        .await
        .unwrap();
    let t2 = db_now(&c).await;
    c.batch_execute("BEGIN; UPDATE acct SET balance = 0; ROLLBACK")
        .await
        .unwrap();
    c.batch_execute("UPDATE acct SET id = 10 WHERE id = 1")
        .await
        .unwrap();
    let at = |t: &str| {
        format!("SELECT id || ':' || balance FROM pgbranch_history.as_of(NULL::acct, '{t}', false) ORDER BY id")
    };
    assert_eq!(column::<String>(&c, &at(&t0)).await, ["1:10", "2:20"]);
    assert_eq!(column::<String>(&c, &at(&t1)).await, ["1:15", "2:20"]);
    assert_eq!(column::<String>(&c, &at(&t2)).await, ["1:15", "3:31"]);
    let now = db_now(&c).await;
    assert_eq!(column::<String>(&c, &at(&now)).await, ["3:31", "10:15"]);
    let e = c
        .query(
            "SELECT * FROM pgbranch_history.as_of(NULL::acct, now() - interval '1 day', false)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");
    c.batch_execute("CREATE TABLE plain (id int PRIMARY KEY)")
        .await
        .unwrap();
    let e = c
        .query(
            "SELECT * FROM pgbranch_history.as_of(NULL::plain, now(), false)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000", "{e}");
    // Inlined: the planner sees the history table and its key index.
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = column(
        &c,
        &format!(
            "EXPLAIN SELECT * FROM pgbranch_history.as_of(NULL::acct, '{now}', false) WHERE id = 3"
        ),
    )
    .await;
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Scan") && plan.contains("on acct_1 h"),
        "{plan}"
    );
    assert!(
        plan.contains("id = 3") && !plan.contains("Function Scan"),
        "{plan}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn alter_table_add_and_drop_system_versioning_through_the_proxy() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.batch_execute("CREATE TABLE \"Item\" (id int PRIMARY KEY, name text); INSERT INTO \"Item\" VALUES (1, 'a')")
        .await
        .unwrap();
    // Simple protocol: one row saying what happened.
    let rows = c
        .simple_query("ALTER TABLE public.\"Item\" ADD SYSTEM VERSIONING")
        .await
        .unwrap();
    let said: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["system versioning enabled for public.\"Item\""]);
    let versioned: i64 = scalar(&c, "SELECT count(*) FROM pgbranch.versioned_tables").await;
    assert_eq!(versioned, 1);
    // Twice is an error; a table without a primary key is refused.
    let e = c
        .batch_execute("ALTER TABLE \"Item\" ADD SYSTEM VERSIONING")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42710");
    c.batch_execute("CREATE TABLE nokey (x int)").await.unwrap();
    let e = c
        .batch_execute("ALTER TABLE nokey ADD SYSTEM VERSIONING")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    assert!(message(&e).contains("primary key"), "{e:?}");
    // Extended protocol drops it; the history goes with it.
    c.execute("ALTER TABLE \"Item\" DROP SYSTEM VERSIONING", &[])
        .await
        .unwrap();
    let versioned: i64 = scalar(&c, "SELECT count(*) FROM pgbranch.versioned_tables").await;
    assert_eq!(versioned, 0);
    let triggers: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = '\"Item\"'::regclass",
    )
    .await;
    assert_eq!(triggers, 0);
    // A role that does not own the table may not version it.
    c.batch_execute("CREATE ROLE tt_other LOGIN").await.ok();
    let other = connect(&proxy.conn_str("tt_other", &db)).await;
    let e = other
        .batch_execute("ALTER TABLE \"Item\" ADD SYSTEM VERSIONING")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    proxy.stop().await;
}
