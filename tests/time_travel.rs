//! Time travel: system-versioned tables, AS OF queries, as-of sessions.

mod common;
use common::*;

/// A fresh database behind a new proxy (`config`), `setup` run and
/// `tables` system-versioned (each ALTER sent alone, as it must be), with
/// a client on main.
async fn versioned_db(
    config: pgbranch::config::Config,
    setup: &str,
    tables: &[&str],
) -> (String, TestProxy, tokio_postgres::Client) {
    let db = cluster().fresh_db();
    let proxy = start_proxy(config).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.batch_execute(setup).await.unwrap();
    for t in tables {
        c.batch_execute(&format!("ALTER TABLE {t} ADD SYSTEM VERSIONING"))
            .await
            .unwrap();
    }
    (db, proxy, c)
}

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
    let said = simple_rows(&c, "ALTER TABLE public.\"Item\" ADD SYSTEM VERSIONING").await;
    assert_eq!(said, [["system versioning enabled for public.\"Item\""]]);
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

/// One moment of the workload: the database's time, and the rows then.
struct Moment {
    at: String,
    rows: Vec<(i32, String, i64)>,
}

/// The rows of `orders` now, as (id, client, qty), and the time, read in
/// one transaction: versions committed before it began are valid at that
/// time.
async fn snapshot(c: &tokio_postgres::Client, client_col: &str) -> Moment {
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let at: String = scalar(c, "SELECT now()::text").await;
    let rows = c
        .query(
            &format!("SELECT id, {client_col}, qty::bigint FROM orders ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    c.batch_execute("COMMIT").await.unwrap();
    Moment { at, rows }
}

fn rows_of(rows: &[tokio_postgres::Row]) -> Vec<(i32, String, i64)> {
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn every_as_of_answer_matches_the_truth_captured_at_the_time() {
    use futures_util::SinkExt;
    let (_db, proxy, c) = versioned_db(test_config(), "CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, qty int NOT NULL, note text)", &["orders"]).await;
    let mut moments = vec![snapshot(&c, "customer").await];
    let steps: &[&str] = &[
        "INSERT INTO orders VALUES (1, 'ann', 1, 'a'), (2, 'bob', 2, 'b'), (3, 'cy', 3, 'c'), (4, 'di', 4, 'd'), (5, 'ed', 5, 'e')",
        "UPDATE orders SET qty = qty * 10 WHERE id IN (1, 2)",
        "DELETE FROM orders WHERE id = 3",
        "UPDATE orders SET id = 40 WHERE id = 4",
        "BEGIN; INSERT INTO orders VALUES (6, 'fay', 6, NULL); UPDATE orders SET qty = 66 WHERE id = 6; UPDATE orders SET qty = 11 WHERE id = 1; DELETE FROM orders WHERE id = 2; COMMIT",
        "BEGIN; UPDATE orders SET qty = 0; DELETE FROM orders; ROLLBACK",
        "INSERT INTO orders VALUES (1, 'ann', 111, NULL), (7, 'gus', 7, NULL) ON CONFLICT (id) DO UPDATE SET qty = excluded.qty",
        "MERGE INTO orders o USING (VALUES (5, 55), (8, 8)) v(id, qty) ON o.id = v.id
         WHEN MATCHED THEN UPDATE SET qty = v.qty
         WHEN NOT MATCHED THEN INSERT VALUES (v.id, 'hal', v.qty, NULL)",
    ];
    for step in steps {
        c.batch_execute(step).await.unwrap();
        moments.push(snapshot(&c, "customer").await);
    }
    // COPY FROM STDIN.
    let sink = c
        .copy_in("COPY orders (id, customer, qty) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"9\tivy\t9\n10\tjo\t10\n"))
        .await
        .unwrap();
    sink.as_mut().finish().await.unwrap();
    moments.push(snapshot(&c, "customer").await);
    c.batch_execute("TRUNCATE orders").await.unwrap();
    moments.push(snapshot(&c, "customer").await);
    c.batch_execute("INSERT INTO orders VALUES (1, 'ann', 1000, NULL), (2, 'bob', 2000, NULL)")
        .await
        .unwrap();
    moments.push(snapshot(&c, "customer").await);
    // Schema changes through the proxy: history follows today's columns.
    c.batch_execute("ALTER TABLE orders ADD COLUMN region text")
        .await
        .unwrap();
    c.batch_execute("UPDATE orders SET region = 'north' WHERE id = 1")
        .await
        .unwrap();
    let region_at = moments.len();
    moments.push(snapshot(&c, "customer").await);
    c.batch_execute("ALTER TABLE orders RENAME COLUMN customer TO client")
        .await
        .unwrap();
    c.batch_execute("ALTER TABLE orders DROP COLUMN note")
        .await
        .unwrap();
    c.batch_execute("ALTER TABLE orders ALTER COLUMN qty TYPE bigint")
        .await
        .unwrap();
    c.batch_execute("UPDATE orders SET qty = qty + 1 WHERE id = 2")
        .await
        .unwrap();
    moments.push(snapshot(&c, "client").await);

    // Every moment, through every syntax, in both protocols.
    for (i, m) in moments.iter().enumerate() {
        let at = &m.at;
        for form in [
            format!("FROM orders AS OF TIMESTAMP '{at}'"),
            format!("FROM orders FOR SYSTEM_TIME AS OF '{at}'"),
            format!(
                "FROM public.orders FOR SYSTEM_TIME AS OF TIMESTAMP '{at}'::timestamptz AS orders"
            ),
        ] {
            let sql = format!("SELECT id, client, qty FROM (SELECT * {form}) s ORDER BY id");
            let simple: Vec<(i32, String, i64)> = simple_rows(&c, &sql)
                .await
                .into_iter()
                .map(|r| (r[0].parse().unwrap(), r[1].clone(), r[2].parse().unwrap()))
                .collect();
            assert_eq!(simple, m.rows, "moment {i}, simple: {sql}");
            let extended = rows_of(&c.query(&sql, &[]).await.unwrap());
            assert_eq!(extended, m.rows, "moment {i}, extended: {sql}");
        }
        // A bind parameter as the time; a join; a CTE.
        let bound = rows_of(
            &c.query(
                "SELECT o.id, o.client, o.qty FROM orders FOR SYSTEM_TIME AS OF $1::text o ORDER BY o.id",
                &[at],
            )
            .await
            .unwrap(),
        );
        assert_eq!(bound, m.rows, "moment {i}, bound");
        let joined = rows_of(
            &c.query(
                &format!(
                    "WITH past AS (SELECT * FROM orders AS OF TIMESTAMP '{at}')
                     SELECT t.id, t.client, t.qty FROM past t JOIN orders FOR SYSTEM_TIME AS OF '{at}' u ON u.id = t.id ORDER BY t.id"
                ),
                &[],
            )
            .await
            .unwrap(),
        );
        assert_eq!(joined, m.rows, "moment {i}, joined");
        // A column that did not exist yet reads NULL.
        let regions: i64 = scalar(
            &c,
            &format!("SELECT count(region) FROM orders AS OF TIMESTAMP '{at}'"),
        )
        .await;
        assert_eq!(regions, i64::from(i >= region_at), "moment {i}, regions");
    }
    // Ranges and ALL expose each version's validity.
    let versions: i64 = scalar(
        &c,
        "SELECT count(*) FROM orders FOR SYSTEM_TIME ALL WHERE id = 1",
    )
    .await;
    assert!(versions >= 6, "{versions}");
    let first = &moments[1].at;
    let last = &moments.last().unwrap().at;
    let spans: Vec<String> = column(
        &c,
        &format!(
            "SELECT qty || ' ' || (pgbranch_valid_to = 'infinity') FROM orders FOR SYSTEM_TIME BETWEEN '{first}' AND '{last}' WHERE id = 2 ORDER BY pgbranch_valid_from"
        ),
    )
    .await;
    assert_eq!(
        spans,
        ["2 false", "20 false", "2000 false", "2001 true"],
        "bob's versions"
    );
    let before: i64 = scalar(
        &c,
        &format!("SELECT count(*) FROM orders FOR SYSTEM_TIME FROM '{first}' TO '{first}'"),
    )
    .await;
    // FROM a TO b: versions that began before b and ended after a; with
    // a = b, the rows valid at a (none began exactly then).
    assert_eq!(before, moments[1].rows.len() as i64, "FROM a TO a");
    // The time before history began, and a table without history.
    let e = c
        .query(
            "SELECT * FROM orders AS OF TIMESTAMP now() - interval '1 day'",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023");
    assert!(message(&e).contains("has no history before"), "{e:?}");
    c.batch_execute("CREATE TABLE plain (id int PRIMARY KEY)")
        .await
        .unwrap();
    let e = c
        .simple_query("SELECT * FROM plain AS OF TIMESTAMP now()")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000");
    assert!(
        message(&e).contains("system versioning is not enabled"),
        "{e:?}"
    );
    let e = c
        .simple_query("SELECT * FROM orders FOR SYSTEM_TIME SOMETIME")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42601", "{e:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn an_as_of_session_sees_every_versioned_table_then_and_writes_nothing() {
    let (db, proxy, c) = versioned_db(
        test_config(),
        "CREATE TABLE acct (id int PRIMARY KEY, balance int);
         CREATE TABLE plain (id int PRIMARY KEY, label text);
         CREATE SEQUENCE tick;
         INSERT INTO acct VALUES (1, 10), (2, 20);
         INSERT INTO plain VALUES (1, 'live-one'), (2, 'live-two')",
        &["acct"],
    )
    .await;
    let then = snapshot_time(&c).await;
    c.batch_execute("UPDATE acct SET balance = balance * 100; DELETE FROM acct WHERE id = 2; INSERT INTO acct VALUES (3, 30)")
        .await
        .unwrap();
    // Options cannot hold a space unescaped: ISO 8601 with a T.
    let at = then.replace(' ', "T");
    let past = connect(&format!(
        "{} options='-c as_of={at}'",
        proxy.conn_str("postgres", &db)
    ))
    .await;
    // The application's own SQL, unchanged, sees the past.
    let q = "SELECT a.id || ':' || a.balance || ':' || coalesce(p.label, '-') FROM acct a LEFT JOIN plain p USING (id) ORDER BY a.id";
    let simple: Vec<String> = simple_rows(&past, q)
        .await
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    // acct as it was; plain (not versioned) as it is.
    assert_eq!(simple, ["1:10:live-one", "2:20:live-two"]);
    let extended: Vec<String> = column(&past, q).await;
    assert_eq!(extended, simple);
    // Live sessions are unaffected.
    let live: Vec<String> = column(&c, q).await;
    assert_eq!(live, ["1:1000:live-one", "3:30:-"]);
    // Writes are refused with 25006, naming the time.
    for write in [
        "INSERT INTO acct VALUES (9, 9)",
        "UPDATE plain SET label = 'x'",
        "CREATE TABLE nope (id int)",
    ] {
        let e = past.simple_query(write).await.unwrap_err();
        assert_eq!(code(&e), "25006", "{write}: {e:?}");
        assert!(message(&e).contains("read-only session as of"), "{e:?}");
        let e = past.execute(write, &[]).await.unwrap_err();
        assert_eq!(code(&e), "25006", "{write} (extended): {e:?}");
    }
    // A write the proxy cannot see is refused by PostgreSQL itself.
    let e = past
        .simple_query("SELECT nextval('tick')")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006", "{e:?}");
    assert!(message(&e).contains("read-only transaction"), "{e:?}");
    // An as_of that is not a time ends the connection with the reason.
    let bad = tokio_postgres::connect(
        &format!(
            "{} options='-c as_of=yesterdayish'",
            proxy.conn_str("postgres", &db)
        ),
        tokio_postgres::NoTls,
    )
    .await;
    let e = bad.err().expect("refused");
    assert_eq!(code(&e), "22007", "{e:?}");
    proxy.stop().await;
}

/// The database's time after everything committed so far.
async fn snapshot_time(c: &tokio_postgres::Client) -> String {
    scalar(c, "SELECT now()::text").await
}

#[tokio::test]
async fn restore_table_brings_a_moment_back_as_new_history_and_drop_keeps_history() {
    let (_db, proxy, c) = versioned_db(test_config(), "CREATE TABLE item (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, doubled int GENERATED ALWAYS AS (n * 2) STORED, n int);
         INSERT INTO item (name, n) VALUES ('a', 1), ('b', 2), ('c', 3)", &["item"]).await;
    let good = snapshot_time(&c).await;
    let rows = "SELECT id || ':' || name || ':' || n || ':' || doubled FROM item ORDER BY id";
    let before: Vec<String> = column(&c, rows).await;
    // The bad change.
    c.batch_execute("UPDATE item SET n = 0 WHERE id = 1; DELETE FROM item WHERE id = 2; INSERT INTO item (name, n) VALUES ('z', 26)")
        .await
        .unwrap();
    let bad = snapshot_time(&c).await;
    let after_bad: Vec<String> = column(&c, rows).await;
    let said: String = scalar(&c, &format!("RESTORE TABLE item TO TIMESTAMP '{good}'")).await;
    assert!(said.contains("1 deleted, 1 updated, 1 inserted"), "{said}");
    assert_eq!(column::<String>(&c, rows).await, before);
    // The restore is history too: it can be undone.
    c.batch_execute(&format!("RESTORE TABLE item TO '{bad}'"))
        .await
        .unwrap();
    assert_eq!(column::<String>(&c, rows).await, after_bad);
    // In a transaction block, rolled back: nothing changes.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("RESTORE TABLE item TO '{good}'"))
        .await
        .unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(column::<String>(&c, rows).await, after_bad);
    c.execute(&format!("RESTORE TABLE item TO '{good}'"), &[])
        .await
        .unwrap();
    assert_eq!(column::<String>(&c, rows).await, before);
    let e = c
        .simple_query("RESTORE TABLE item TO now() - interval '1 year'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023");

    // DROP TABLE: the table goes, its history stays (and is marked so).
    let now = snapshot_time(&c).await;
    c.batch_execute("CREATE TABLE other (id int PRIMARY KEY)")
        .await
        .unwrap();
    c.batch_execute("ALTER TABLE other ADD SYSTEM VERSIONING")
        .await
        .unwrap();
    c.batch_execute("DROP TABLE item").await.unwrap();
    let dropped: i64 = scalar(
        &c,
        "SELECT count(*) FROM pgbranch.versioned_tables WHERE relid IS NULL AND dropped_at IS NOT NULL AND table_name = 'public.item'",
    )
    .await;
    assert_eq!(dropped, 1);
    let kept: i64 = scalar(
        &c,
        &format!(
            "SELECT count(*) FROM (SELECT DISTINCT ON (id) * FROM pgbranch_history.item_1
             WHERE pgbranch_valid_from <= '{now}'
             ORDER BY id, pgbranch_seq DESC) v
             WHERE NOT pgbranch_deleted"
        ),
    )
    .await;
    assert_eq!(kept, 3);
    // The other versioned table still answers AS OF.
    let n: i64 = scalar(&c, "SELECT count(*) FROM other AS OF TIMESTAMP now()").await;
    assert_eq!(n, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn create_branch_as_of_fills_versioned_tables_with_their_past_rows() {
    let (db, proxy, c) = versioned_db(
        test_config(),
        "CREATE TABLE acct (id int PRIMARY KEY, balance int);
         CREATE TABLE entry (id int PRIMARY KEY, acct int REFERENCES acct, amount int);
         CREATE TABLE note (id int PRIMARY KEY, body text);
         INSERT INTO acct VALUES (1, 10), (2, 20);
         INSERT INTO entry VALUES (1, 1, 5), (2, 2, 7);
         INSERT INTO note VALUES (1, 'live')",
        &["acct", "entry"],
    )
    .await;
    let then = snapshot_time(&c).await;
    c.batch_execute(
        "DELETE FROM entry WHERE acct = 2; DELETE FROM acct WHERE id = 2;
         UPDATE acct SET balance = 99; INSERT INTO acct VALUES (3, 30);
         UPDATE note SET body = 'changed'",
    )
    .await
    .unwrap();
    c.batch_execute(&format!(
        "CREATE BRANCH past FROM main AS OF TIMESTAMP '{then}' WITH DATA"
    ))
    .await
    .unwrap();
    let b = connect(&on_branch(&proxy, &db, "past")).await;
    let acct: Vec<String> = column(&b, "SELECT id || ':' || balance FROM acct ORDER BY id").await;
    assert_eq!(acct, ["1:10", "2:20"]);
    let entry: Vec<String> = column(&b, "SELECT id || ':' || acct FROM entry ORDER BY id").await;
    assert_eq!(
        entry,
        ["1:1", "2:2"],
        "the foreign keys hold on the past rows"
    );
    // Tables without history are copied as they are now.
    let note: String = scalar(&b, "SELECT body FROM note").await;
    assert_eq!(note, "changed");
    // Main is untouched.
    let main: Vec<String> = column(&c, "SELECT id || ':' || balance FROM acct ORDER BY id").await;
    assert_eq!(main, ["1:99", "3:30"]);
    // AS OF needs WITH DATA, and a time within the history.
    let e = c
        .batch_execute(&format!("CREATE BRANCH nodata AS OF '{then}'"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    let e = c
        .batch_execute("CREATE BRANCH early AS OF now() - interval '1 day' WITH DATA")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e:?}");
    let none: i64 = scalar(
        &c,
        "SELECT count(*) FROM pgbranch.branches WHERE name IN ('nodata', 'early')",
    )
    .await;
    assert_eq!(none, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn retention_prunes_old_versions_in_batches_and_moves_the_start_of_history() {
    let mut config = test_config();
    // Long enough for the first count below on a loaded machine.
    config.time_travel.retention = std::time::Duration::from_secs(2);
    config
        .time_travel
        .retention_by_table
        .insert("public.kept".into(), "0".into());
    config.time_travel.prune_interval = std::time::Duration::from_millis(50);
    config.time_travel.prune_batch = 2;
    let (_db, proxy, c) = versioned_db(config, "CREATE TABLE pruned (id int PRIMARY KEY, n int); CREATE TABLE kept (id int PRIMARY KEY, n int);
         INSERT INTO pruned VALUES (1, 0); INSERT INTO kept VALUES (1, 0)", &["pruned", "kept"]).await;
    let early = snapshot_time(&c).await;
    for _ in 0..5 {
        c.batch_execute("UPDATE pruned SET n = n + 1; UPDATE kept SET n = n + 1")
            .await
            .unwrap();
    }
    let ended = |table: &'static str| {
        let c = &c;
        async move {
            scalar::<i64>(
                c,
                // Versions another one replaced (no row was deleted).
                &format!("SELECT count(*) - count(DISTINCT id) FROM pgbranch_history.{table}"),
            )
            .await
        }
    };
    assert_eq!(ended("pruned_1").await, 5);
    wait_for("the ended versions to be pruned", || async {
        ended("pruned_1").await == 0
    })
    .await;
    // The current version stays; the table with retention 0 keeps all.
    let n: i32 = scalar(&c, "SELECT n FROM pruned AS OF TIMESTAMP now()").await;
    assert_eq!(n, 5);
    assert_eq!(ended("kept_2").await, 5);
    // Before what is gone, AS OF is refused rather than incomplete.
    let e = c
        .query(
            &format!("SELECT * FROM pruned AS OF TIMESTAMP '{early}'"),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e:?}");
    let n: i32 = scalar(&c, &format!("SELECT n FROM kept AS OF TIMESTAMP '{early}'")).await;
    assert_eq!(n, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn tables_are_versioned_at_creation_by_clause_or_by_pattern() {
    let db = cluster().fresh_db();
    let mut config = test_config();
    config.time_travel.versioned_tables = vec!["audit.*".into()];
    let proxy = start_proxy(config).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    let versioned = || {
        column::<String>(
            &c,
            "SELECT table_name FROM pgbranch.versioned_tables ORDER BY id",
        )
    };
    // The clause, in simple protocol; the table answers AS OF at once.
    let rows = simple_rows(
        &c,
        "CREATE TABLE orders (id int PRIMARY KEY, qty int) WITH SYSTEM VERSIONING",
    )
    .await;
    assert!(
        rows.is_empty(),
        "the client sees only its CREATE TABLE: {rows:?}"
    );
    c.batch_execute("INSERT INTO orders VALUES (1, 1)")
        .await
        .unwrap();
    let n: i64 = scalar(&c, "SELECT count(*) FROM orders AS OF TIMESTAMP now()").await;
    assert_eq!(n, 1);
    // The pattern: audit.* is versioned, public.* is not.
    c.batch_execute("CREATE SCHEMA audit; CREATE TABLE audit.log (id int PRIMARY KEY); CREATE TABLE plain (id int PRIMARY KEY)")
        .await
        .unwrap();
    assert_eq!(
        versioned().await,
        ["public.orders"],
        "several statements: not matched"
    );
    c.batch_execute("CREATE TABLE audit.events (id int PRIMARY KEY)")
        .await
        .unwrap();
    c.batch_execute("CREATE TABLE audit.nokey (x int)")
        .await
        .unwrap();
    assert_eq!(versioned().await, ["public.orders", "audit.events"]);
    // The extended protocol: the clause, and a pattern.
    c.execute(
        "CREATE TABLE ext (id int PRIMARY KEY) WITH SYSTEM VERSIONING",
        &[],
    )
    .await
    .unwrap();
    c.execute("CREATE TABLE audit.more (id int PRIMARY KEY)", &[])
        .await
        .unwrap();
    assert_eq!(
        versioned().await,
        ["public.orders", "audit.events", "public.ext", "audit.more"]
    );
    c.execute("INSERT INTO ext VALUES (1)", &[]).await.unwrap();
    let n: i64 = scalar(&c, "SELECT count(*) FROM ext AS OF TIMESTAMP now()").await;
    assert_eq!(n, 1);
    // The recorded history shows the statement as the client sent it.
    let recorded: Vec<String> = column(
        &c,
        "SELECT statement FROM pgbranch.schema_history WHERE statement LIKE 'CREATE TABLE orders%'",
    )
    .await;
    assert_eq!(
        recorded,
        ["CREATE TABLE orders (id int PRIMARY KEY, qty int)"],
        "recorded without the clause"
    );
    // On a branch the clause is refused.
    c.batch_execute("CREATE BRANCH b").await.unwrap();
    let b = connect(&on_branch(&proxy, &db, "b")).await;
    let e = b
        .batch_execute("CREATE TABLE x (id int PRIMARY KEY) WITH SYSTEM VERSIONING")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn set_pgbranch_as_of_moves_a_session_into_the_past_and_back() {
    let (db, proxy, c) = versioned_db(
        test_config(),
        "CREATE TABLE acct (id int PRIMARY KEY, balance int); INSERT INTO acct VALUES (1, 10)",
        &["acct"],
    )
    .await;
    let then = snapshot_time(&c).await;
    c.batch_execute("UPDATE acct SET balance = 20")
        .await
        .unwrap();
    let s = connect(&proxy.conn_str("postgres", &db)).await;
    let balance = || scalar::<i32>(&s, "SELECT balance FROM acct WHERE id = 1");
    let shown = || async { simple_rows(&s, "SHOW pgbranch.as_of").await[0][0].clone() };
    assert_eq!(shown().await, "off");
    assert_eq!(balance().await, 20);
    s.batch_execute(&format!("SET pgbranch.as_of = '{then}'"))
        .await
        .unwrap();
    assert_eq!(balance().await, 10);
    assert!(shown().await.starts_with(&then[..19]), "{}", shown().await);
    let e = s
        .batch_execute("UPDATE acct SET balance = 0")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006");
    // An invalid time changes nothing.
    let e = s
        .batch_execute("SET pgbranch.as_of = 'not a time'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22007", "{e:?}");
    assert_eq!(balance().await, 10);
    // A Query of its own.
    let e = s
        .batch_execute("SELECT 1; SET pgbranch.as_of = 'yesterday'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    // Not inside a transaction block.
    s.batch_execute("BEGIN").await.unwrap();
    let e = s.batch_execute("RESET pgbranch.as_of").await.unwrap_err();
    assert_eq!(code(&e), "25001");
    s.batch_execute("ROLLBACK").await.unwrap();
    s.batch_execute("RESET pgbranch.as_of").await.unwrap();
    assert_eq!(shown().await, "off");
    assert_eq!(balance().await, 20);
    s.batch_execute("UPDATE acct SET balance = 21")
        .await
        .unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn versioning_apply_versions_existing_tables_and_history_follows_select_grants() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.batch_execute(
        "CREATE TABLE secret (id int PRIMARY KEY, v text); INSERT INTO secret VALUES (1, 'x');
         CREATE TABLE nokey (v text)",
    )
    .await
    .unwrap();
    c.batch_execute("CREATE SCHEMA other; CREATE TABLE other.t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let out = pgbranch_cli(&[
        "versioning",
        "apply",
        "--database-url",
        &db_url(&db),
        "--pattern",
        "public.*",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("system versioning enabled for public.secret"),
        "{text}"
    );
    assert!(text.contains("1 table(s) versioned"), "{text}");
    let out = pgbranch_cli(&["versioning", "list", "--database-url", &db_url(&db)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("public.secret"), "{text}");
    assert!(!text.contains("other.t"), "{text}");

    // History is readable by whoever may read the table, no one else.
    c.batch_execute("DROP ROLE IF EXISTS tt_reader; CREATE ROLE tt_reader LOGIN")
        .await
        .unwrap();
    let reader = connect(&proxy.conn_str("tt_reader", &db)).await;
    let as_of = "SELECT v FROM secret AS OF TIMESTAMP now()";
    let e = reader.query(as_of, &[]).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e:?}");
    c.batch_execute("GRANT SELECT ON secret TO tt_reader")
        .await
        .unwrap();
    let v: String = scalar(&reader, as_of).await;
    assert_eq!(v, "x");
    c.batch_execute("REVOKE SELECT ON secret FROM tt_reader")
        .await
        .unwrap();
    let e = reader.query(as_of, &[]).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e:?}");
    // Writing history needs no privilege on it.
    c.batch_execute("GRANT INSERT, UPDATE ON secret TO tt_reader")
        .await
        .unwrap();
    reader
        .batch_execute("INSERT INTO secret VALUES (2, 'y')")
        .await
        .unwrap();
    let n: i64 = scalar(&c, "SELECT count(*) FROM secret AS OF TIMESTAMP now()").await;
    assert_eq!(n, 2);
    proxy.stop().await;
}

#[tokio::test]
async fn overlapping_transactions_never_give_a_key_two_versions() {
    let (db, proxy, b) = versioned_db(
        test_config(),
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (7, 'before')",
        &["t"],
    )
    .await;
    // A begins first; B begins later, changes row 7 and commits; then A
    // changes it too (READ COMMITTED: it sees B's row) and commits.
    let a = connect(&proxy.conn_str("postgres", &db)).await;
    a.batch_execute("BEGIN").await.unwrap();
    let a_start: String = scalar(&a, "SELECT now()::text").await;
    b.batch_execute("UPDATE t SET v = 'b' WHERE id = 7")
        .await
        .unwrap();
    let b_start: String = scalar(&b, "SELECT now()::text").await;
    a.batch_execute("UPDATE t SET v = 'a' WHERE id = 7; COMMIT")
        .await
        .unwrap();
    // At every moment, one version of key 7: A's from A's start on.
    for at in [&a_start, &b_start, &snapshot_time(&b).await] {
        let seen: Vec<String> = column(
            &b,
            &format!("SELECT v FROM t AS OF TIMESTAMP '{at}' WHERE id = 7"),
        )
        .await;
        assert_eq!(seen, ["a"], "as of {at}");
    }
    // The ranges agree: no two versions of the key overlap, and B's value
    // (replaced when it began) is in none.
    let spans: Vec<String> = column(
        &b,
        "SELECT v FROM t FOR SYSTEM_TIME ALL WHERE id = 7 ORDER BY pgbranch_valid_from",
    )
    .await;
    assert_eq!(spans, ["before", "a"]);
    let overlaps: i64 = scalar(
        &b,
        "SELECT count(*) FROM (SELECT * FROM t FOR SYSTEM_TIME ALL) x
         JOIN (SELECT * FROM t FOR SYSTEM_TIME ALL) y ON x.id = y.id AND x.v < y.v
          AND x.pgbranch_valid_from < y.pgbranch_valid_to
          AND y.pgbranch_valid_from < x.pgbranch_valid_to",
    )
    .await;
    assert_eq!(overlaps, 0);
    proxy.stop().await;
}
