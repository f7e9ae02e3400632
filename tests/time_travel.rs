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
    let t0 = snapshot_time(&c).await;
    c.batch_execute("UPDATE acct SET balance = balance + 5 WHERE id = 1")
        .await
        .unwrap();
    let t1 = snapshot_time(&c).await;
    c.batch_execute("BEGIN; DELETE FROM acct WHERE id = 2; INSERT INTO acct VALUES (3, 'cy', 30); UPDATE acct SET balance = 31 WHERE id = 3; COMMIT")
        .await
        .unwrap();
    let t2 = snapshot_time(&c).await;
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
    let now = snapshot_time(&c).await;
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
    let at: String = snapshot_time(c).await;
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
    let past = connect(&as_of_session(&proxy, &db, &then)).await;
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

/// A connection string for an as-of session at `at` (a time as
/// `now()::text` prints it).
fn as_of_session(proxy: &TestProxy, db: &str, at: &str) -> String {
    // Options cannot hold a space unescaped: ISO 8601 with a T.
    format!(
        "{} options='-c as_of={}'",
        proxy.conn_str("postgres", db),
        at.replace(' ', "T")
    )
}

/// `select` (`SELECT ... FROM table`, one text column) read AS OF the
/// database's time now, then `rest` (ORDER BY, WHERE ...).
async fn as_of_now(c: &tokio_postgres::Client, select: &str, rest: &str) -> Vec<String> {
    let now = snapshot_time(c).await;
    column(c, &format!("{select} AS OF TIMESTAMP '{now}' {rest}")).await
}

/// A versioned `acct` whose row 1 had balance 10 at `then` and has 20
/// now: (database, proxy, then).
async fn balance_was_10_then_20() -> (String, TestProxy, String) {
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
    (db, proxy, then)
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
    let results = simple_results(
        &c,
        "CREATE TABLE orders (id int PRIMARY KEY, qty int) WITH SYSTEM VERSIONING",
    )
    .await;
    let rows: Vec<&Vec<String>> = results.iter().flatten().collect();
    assert!(
        rows.is_empty(),
        "the client sees only its CREATE TABLE: {rows:?}"
    );
    assert_eq!(results.len(), 1, "one result: {results:?}");
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
        ["public.orders", "audit.log"],
        "several statements: matched one by one"
    );
    c.batch_execute("CREATE TABLE audit.events (id int PRIMARY KEY)")
        .await
        .unwrap();
    c.batch_execute("CREATE TABLE audit.nokey (x int)")
        .await
        .unwrap();
    assert_eq!(
        versioned().await,
        ["public.orders", "audit.log", "audit.events"]
    );
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
        [
            "public.orders",
            "audit.log",
            "audit.events",
            "public.ext",
            "audit.more"
        ]
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
    // A table that cannot be versioned is not created either: alone, in
    // the extended protocol, and with another CREATE TABLE in its Query.
    let e = c
        .batch_execute("CREATE TABLE unkeyed (x int) WITH SYSTEM VERSIONING")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    let e = c
        .execute("CREATE TABLE unkeyed (x int) WITH SYSTEM VERSIONING", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    let e = c
        .batch_execute(
            "CREATE TABLE ok1 (id int PRIMARY KEY);
             CREATE UNLOGGED TABLE u (id int PRIMARY KEY) WITH SYSTEM VERSIONING",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    let left: Vec<String> = column(
        &c,
        "SELECT relname::text FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relname IN ('unkeyed', 'ok1', 'u')",
    )
    .await;
    assert_eq!(
        left,
        Vec::<String>::new(),
        "a refused versioning created a table"
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
    let (db, proxy, then) = balance_was_10_then_20().await;
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

    // The extended protocol (what JDBC and most drivers send): the same.
    let x = connect(&proxy.conn_str("postgres", &db)).await;
    let balance = || scalar::<i32>(&x, "SELECT balance FROM acct WHERE id = 1");
    let shown = || scalar::<String>(&x, "SHOW pgbranch.as_of");
    assert_eq!(shown().await, "off");
    // A SHOW prepared now answers with the time of its Parse (documented).
    let show = x.prepare("SHOW pgbranch.as_of").await.unwrap();
    x.execute(&format!("SET pgbranch.as_of = '{then}'"), &[])
        .await
        .unwrap();
    assert_eq!(balance().await, 10);
    assert!(shown().await.starts_with(&then[..19]), "{}", shown().await);
    let prepared: String = x.query_one(&show, &[]).await.unwrap().get(0);
    assert_eq!(prepared, "off");
    let e = x
        .execute("UPDATE acct SET balance = 0", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006", "{e:?}");
    let e = x
        .execute("SET pgbranch.as_of = 'not a time'", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22007", "{e:?}");
    assert_eq!(balance().await, 10);
    x.batch_execute("BEGIN").await.unwrap();
    let e = x.execute("RESET pgbranch.as_of", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25001", "{e:?}");
    x.batch_execute("ROLLBACK").await.unwrap();
    x.execute("RESET pgbranch.as_of", &[]).await.unwrap();
    assert_eq!(shown().await, "off");
    assert_eq!(balance().await, 21);
    // Prepared once, executed again and again (as drivers that cache
    // statements do): each Execute moves the session.
    let set = x
        .prepare(&format!("SET pgbranch.as_of = '{then}'"))
        .await
        .unwrap();
    let reset = x.prepare("RESET pgbranch.as_of").await.unwrap();
    for _ in 0..2 {
        x.execute(&set, &[]).await.unwrap();
        assert_eq!(balance().await, 10);
        x.execute(&reset, &[]).await.unwrap();
        assert_eq!(balance().await, 21);
    }
    x.execute("UPDATE acct SET balance = 22", &[])
        .await
        .unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn only_reset_all_and_discard_all_end_an_as_of_session_once_the_server_agrees() {
    let (db, proxy, then) = balance_was_10_then_20().await;
    let set = format!("SET pgbranch.as_of = '{then}'");
    for (name, simple) in [("simple", true), ("extended", false)] {
        let s = connect(&proxy.conn_str("postgres", &db)).await;
        let run = |sql: &'static str| {
            let s = &s;
            async move {
                if simple {
                    s.batch_execute(sql).await
                } else {
                    s.execute(sql, &[]).await.map(|_| ())
                }
            }
        };
        let balance = || scalar::<i32>(&s, "SELECT balance FROM acct WHERE id = 1");
        s.batch_execute(&set).await.unwrap();
        assert_eq!(balance().await, 10, "{name}");
        // Another setting's RESET leaves the session in the past.
        run("RESET statement_timeout").await.unwrap();
        assert_eq!(balance().await, 10, "{name}: after RESET statement_timeout");
        // A RESET ALL the server refuses (aborted transaction) changes
        // nothing.
        s.batch_execute("BEGIN").await.unwrap();
        assert!(s.batch_execute("SELECT 1/0").await.is_err());
        assert!(run("RESET ALL").await.is_err());
        s.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(balance().await, 10, "{name}: after a failed RESET ALL");
        let e = s
            .batch_execute("UPDATE acct SET balance = 0")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "25006", "{name}");
        // RESET ALL returns it to the present, on both sides.
        run("RESET ALL").await.unwrap();
        assert_eq!(balance().await, 20, "{name}: after RESET ALL");
        s.batch_execute("UPDATE acct SET balance = 20")
            .await
            .unwrap();
        s.batch_execute(&set).await.unwrap();
        assert_eq!(balance().await, 10, "{name}");
        run("DISCARD ALL").await.unwrap();
        assert_eq!(balance().await, 20, "{name}: after DISCARD ALL");
    }
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
    let a_start: String = snapshot_time(&a).await;
    b.batch_execute("UPDATE t SET v = 'b' WHERE id = 7")
        .await
        .unwrap();
    let after_b: String = snapshot_time(&b).await;
    a.batch_execute("UPDATE t SET v = 'a' WHERE id = 7; COMMIT")
        .await
        .unwrap();
    // At every moment, one version of key 7: A's from A's start on.
    for at in [&a_start, &after_b, &snapshot_time(&b).await] {
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

/// (id, v) of `k`, ordered, read with `sql`.
async fn pairs(c: &tokio_postgres::Client, sql: &str) -> Vec<(i64, i32)> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i32>(1)))
        .collect()
}

#[tokio::test]
async fn key_changes_bulk_updates_and_key_type_changes_keep_history_right() {
    let (db, proxy, c) = versioned_db(
        test_config(),
        "CREATE TABLE k (id int PRIMARY KEY, v int);
         INSERT INTO k SELECT g, 0 FROM generate_series(1, 20000) g",
        &["k"],
    )
    .await;
    let read = "SELECT id::bigint, v FROM k ORDER BY id";
    // UPDATE captures the new rows only; key changes go to a row trigger
    // limited to the key columns.
    let shape: Vec<String> = column(
        &c,
        "SELECT tgname || ':' || coalesce(tgoldtable, '-') || ':' || coalesce(tgnewtable, '-')
                || ':' || coalesce(pgbranch.versioning_rekey_columns(oid)::text, '')
         FROM pg_trigger
         WHERE tgrelid = 'k'::regclass AND (tgname LIKE '%update' OR tgname LIKE '%rekey')
         ORDER BY tgname",
    )
    .await;
    assert_eq!(
        shape,
        [
            "pgbranch_versioning_rekey:-:-:{1}",
            "pgbranch_versioning_update:-:pgbranch_new:"
        ]
    );
    // One session: a one-row update, then a bulk one (with the old rows
    // captured, the plan made for one row joined them quadratically).
    c.batch_execute("UPDATE k SET v = 1 WHERE id = 5; UPDATE k SET v = v + 1")
        .await
        .unwrap();
    let t0 = snapshot_time(&c).await;
    let at_t0 = pairs(&c, read).await;
    // Keys shifted, moved twice in a transaction, changed by ON CONFLICT
    // and MERGE, and set to themselves.
    c.batch_execute(
        "UPDATE k SET id = id + 100000 WHERE id <= 3;
         BEGIN;
         UPDATE k SET id = -id WHERE id BETWEEN 10 AND 12;
         UPDATE k SET id = -id + 50000 WHERE id BETWEEN -12 AND -10;
         COMMIT;
         INSERT INTO k VALUES (20, 7) ON CONFLICT (id) DO UPDATE SET id = 200000, v = 8;
         MERGE INTO k USING (VALUES (30)) s(id) ON k.id = s.id
             WHEN MATCHED THEN UPDATE SET id = 300000;
         UPDATE k SET id = id, v = 9 WHERE id = 40",
    )
    .await
    .unwrap();
    let t1 = snapshot_time(&c).await;
    let at_t1 = pairs(&c, read).await;
    let of = |t: &str| format!("SELECT id::bigint, v FROM k AS OF TIMESTAMP '{t}' ORDER BY id");
    assert_eq!(pairs(&c, &of(&t0)).await, at_t0);
    assert_eq!(pairs(&c, &of(&t1)).await, at_t1);
    assert!(at_t1.contains(&(200000, 8)) && !at_t1.iter().any(|r| r.0 == 20));
    // A row trigger ran only for rows whose key changed: 3 + 3 + 3 + 1 + 1
    // tombstones.
    let tombstones: i64 = scalar(
        &c,
        "SELECT count(*) FROM pgbranch_history.k_1 WHERE pgbranch_deleted",
    )
    .await;
    assert_eq!(tombstones, 11);

    // A key changed by a BEFORE trigger of the table, in an UPDATE that
    // does not name the key.
    c.batch_execute(
        "CREATE FUNCTION renumber() RETURNS trigger LANGUAGE plpgsql AS
             'BEGIN IF NEW.v = 77 THEN NEW.id := NEW.id + 700000; END IF; RETURN NEW; END';
         CREATE TRIGGER renumber BEFORE UPDATE ON k FOR EACH ROW EXECUTE FUNCTION renumber()",
    )
    .await
    .unwrap();
    // The rekey trigger, limited to UPDATEs that name the key, then looks
    // at every UPDATE (and again not, once the trigger is gone).
    let rekey_columns = "SELECT tgattr::text FROM pg_trigger
                         WHERE tgrelid = 'k'::regclass AND tgname = 'pgbranch_versioning_rekey'";
    assert_eq!(scalar::<String>(&c, rekey_columns).await, "");
    c.batch_execute("UPDATE k SET v = 77 WHERE id = 50; DROP TRIGGER renumber ON k")
        .await
        .unwrap();
    assert_eq!(scalar::<String>(&c, rekey_columns).await, "1");
    let t1b = snapshot_time(&c).await;
    let at_t1b = pairs(&c, read).await;
    assert!(at_t1b.contains(&(700050, 77)) && !at_t1b.iter().any(|r| r.0 == 50));
    assert_eq!(pairs(&c, &of(&t1b)).await, at_t1b);
    // The key column's type changes through pgbranch (the rekey trigger
    // steps aside and comes back); directly, PostgreSQL refuses while
    // the trigger depends on the column.
    let direct = connect(&db_url(&db)).await;
    let e = direct
        .batch_execute("ALTER TABLE k ALTER COLUMN id TYPE bigint")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    c.batch_execute("ALTER TABLE k ALTER COLUMN id TYPE bigint")
        .await
        .unwrap();
    c.batch_execute("UPDATE k SET id = 5000000000 WHERE id = 100001")
        .await
        .unwrap();
    let t2 = snapshot_time(&c).await;
    let at_t2 = pairs(&c, "SELECT id, v FROM k ORDER BY id").await;
    assert!(at_t2.contains(&(5_000_000_000, 1)));
    for (t, want) in [(&t0, &at_t0), (&t1, &at_t1), (&t1b, &at_t1b), (&t2, &at_t2)] {
        assert_eq!(&pairs(&c, &of(t)).await, want, "as of {t}");
    }
    // A new primary key: the rekey trigger follows it.
    c.batch_execute("ALTER TABLE k DROP CONSTRAINT k_pkey, ADD PRIMARY KEY (id, v)")
        .await
        .unwrap();
    let attrs: String = scalar(
        &c,
        "SELECT pgbranch.versioning_rekey_columns(oid)::text FROM pg_trigger
         WHERE tgrelid = 'k'::regclass AND tgname = 'pgbranch_versioning_rekey'",
    )
    .await;
    assert_eq!(attrs, "{1,2}");
    proxy.stop().await;
}

#[tokio::test]
async fn history_triggers_ignore_the_writers_search_path() {
    let (db, proxy, c) = versioned_db(
        test_config(),
        "CREATE TABLE h (id int PRIMARY KEY, v text); INSERT INTO h VALUES (1, 'a');
         DROP ROLE IF EXISTS tt_hostile; CREATE ROLE tt_hostile LOGIN;
         GRANT INSERT, UPDATE, DELETE, SELECT, TRIGGER ON h TO tt_hostile;
         CREATE SCHEMA hostile AUTHORIZATION tt_hostile",
        &["h"],
    )
    .await;
    // The trigger functions run as the owner of schema pgbranch without a
    // SET search_path of their own: nothing in them may resolve through
    // the writer's. A writer puts operators and a type that would run its
    // code first in its search_path, then writes.
    let w = connect(&proxy.conn_str("tt_hostile", &db)).await;
    w.batch_execute(
        "CREATE FUNCTION hostile.boom(text, text) RETURNS boolean LANGUAGE plpgsql
             AS 'BEGIN RAISE EXCEPTION ''hostile code ran as %'', current_user; END';
         CREATE FUNCTION hostile.boom_oid(oid, oid) RETURNS boolean LANGUAGE plpgsql
             AS 'BEGIN RAISE EXCEPTION ''hostile code ran as %'', current_user; END';
         CREATE OPERATOR hostile.= (LEFTARG = text, RIGHTARG = text, FUNCTION = hostile.boom);
         CREATE OPERATOR hostile.<> (LEFTARG = oid, RIGHTARG = oid, FUNCTION = hostile.boom_oid);
         CREATE TYPE pg_temp.timestamptz AS (x int);
         SET search_path = hostile, pg_catalog, public;
         INSERT INTO public.h VALUES (2, 'b');
         UPDATE public.h SET v = 'c' WHERE id = 1;
         UPDATE public.h SET id = 3 WHERE id = 2;
         DELETE FROM public.h WHERE id = 1",
    )
    .await
    .unwrap();
    let seen = as_of_now(&c, "SELECT id || v FROM h", "ORDER BY id").await;
    assert_eq!(seen, ["3b"]);
    // The hostile operator is in effect in the writer's session (so the
    // writes above did meet it), and the writer's own AS OF read, which
    // runs check_as_of (no SET search_path either), is not fooled.
    let e = w
        .batch_execute("SELECT 'a'::text = 'b'::text")
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("hostile code ran"), "{e:?}");
    let now = snapshot_time(&c).await;
    let seen: Vec<String> = simple_rows(
        &w,
        &format!("SELECT id || v FROM public.h AS OF TIMESTAMP '{now}'"),
    )
    .await
    .into_iter()
    .map(|mut r| r.remove(0))
    .collect();
    assert_eq!(seen, ["3b"]);
    // Nor may the writer (with TRIGGER on the table) make the history
    // functions write what it wants: deleted rows as current versions.
    let e = w
        .batch_execute(
            "CREATE TRIGGER forged AFTER DELETE ON public.h REFERENCING OLD TABLE AS pgbranch_new
                 FOR EACH STATEMENT EXECUTE FUNCTION pgbranch_history.h_1_write();
             DELETE FROM public.h",
        )
        .await
        .unwrap_err();
    assert!(message(&e).contains("wrong table"), "{e:?}");
    let e = w
        .batch_execute(
            "CREATE TRIGGER forged AFTER INSERT ON public.h
                 FOR EACH ROW EXECUTE FUNCTION pgbranch_history.h_1_rekey();
             INSERT INTO public.h VALUES (9, 'z')",
        )
        .await
        .unwrap_err();
    assert!(message(&e).contains("wrong table"), "{e:?}");
    let config: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_proc
         WHERE pronamespace = 'pgbranch_history'::regnamespace AND prosecdef
           AND proconfig IS NULL AND proname IN ('h_1_write', 'h_1_rekey')",
    )
    .await;
    assert_eq!(config, 2);
    proxy.stop().await;
}

#[tokio::test]
async fn migration_4_remakes_the_triggers_of_tables_versioned_before_it() {
    // pgbranch set up by the database's owner (not a superuser); the
    // versioned table belongs to another role (which the owner of schema
    // pgbranch, writing its history, may not read).
    let db = cluster().fresh_db();
    let direct = connect(&db_url(&db)).await;
    direct
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS tt_dbowner; CREATE ROLE tt_dbowner LOGIN;
             ALTER DATABASE {db} OWNER TO tt_dbowner;
             GRANT CREATE ON SCHEMA public TO tt_dbowner"
        ))
        .await
        .unwrap();
    let proxy = start_proxy(test_config()).await;
    let owner = connect(&proxy.conn_str("tt_dbowner", &db)).await;
    owner
        .batch_execute("CREATE TABLE by_owner (a int)")
        .await
        .unwrap();
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.batch_execute(
        "CREATE TABLE m (id int PRIMARY KEY, v int); INSERT INTO m VALUES (1, 0), (2, 0)",
    )
    .await
    .unwrap();
    c.batch_execute("ALTER TABLE m ADD SYSTEM VERSIONING")
        .await
        .unwrap();
    // Put the table back into migration 3's shape: the UPDATE trigger
    // captured old rows, the function set its search_path, no rekey
    // trigger.
    direct
        .batch_execute(
            "DROP TRIGGER pgbranch_versioning_rekey ON m;
             DROP TRIGGER pgbranch_versioning_update ON m;
             CREATE TRIGGER pgbranch_versioning_update AFTER UPDATE ON m
                 REFERENCING OLD TABLE AS pgbranch_old NEW TABLE AS pgbranch_new
                 FOR EACH STATEMENT EXECUTE FUNCTION pgbranch_history.m_1_write();
             ALTER FUNCTION pgbranch_history.m_1_write() SET search_path = pg_catalog, pg_temp;
             DROP FUNCTION pgbranch_history.m_1_rekey();
             DROP FUNCTION pgbranch.versioning_views(), pgbranch.versioning_lend(regclass[]),
                 pgbranch.versioning_unlend(regclass[]), pgbranch.versioning_rekey_trigger(regclass),
                 pgbranch.versioning_triggers(regclass), pgbranch.versioning_check_triggers(),
                 pgbranch.versioning_before_alter(text, regclass),
                 pgbranch.versioning_rekey_columns(oid), pgbranch.versioning_rekey_all_rows(oid),
                 pgbranch.versioning_step_aside(), pgbranch.versioning_before_merged_drop(text, text),
                 pgbranch.versioning_drop_triggers(regclass), pgbranch.primary_key_columns(oid);
             DROP TABLE pgbranch.versioned_views;
             DELETE FROM pgbranch.migrations WHERE version = 4",
        )
        .await
        .unwrap();
    // The owner of schema pgbranch may upgrade it, but not remake the
    // triggers of a table it does not own: refused, nothing half-done.
    let e = owner
        .batch_execute("CREATE TABLE by_owner_2 (a int)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    assert!(
        message(&e).contains("system-versioned table m"),
        "{}",
        message(&e)
    );
    let version: i32 = scalar(&c, "SELECT max(version) FROM pgbranch.migrations").await;
    assert_eq!(version, 3, "the refused upgrade left nothing");
    let untouched: Vec<String> = column(
        &c,
        "SELECT tgname || ':' || coalesce(tgoldtable, '-') FROM pg_trigger
         WHERE tgrelid = 'm'::regclass AND tgname LIKE 'pgbranch_versioning_%' ORDER BY 1",
    )
    .await;
    assert!(
        untouched.contains(&"pgbranch_versioning_update:pgbranch_old".to_string())
            && !untouched
                .iter()
                .any(|t| t.starts_with("pgbranch_versioning_rekey")),
        "{untouched:?}"
    );
    let views_table: bool =
        scalar(&c, "SELECT to_regclass('pgbranch.versioned_views') IS NULL").await;
    assert!(views_table, "migration 4's table appeared");
    let created: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_class WHERE relname = 'by_owner_2'",
    )
    .await;
    assert_eq!(created, 0);
    // The next recorded change by a role that may, upgrades.
    c.batch_execute("CREATE TABLE other (a int)").await.unwrap();
    let version: i32 = scalar(&c, "SELECT max(version) FROM pgbranch.migrations").await;
    assert_eq!(version, 4);
    // What the superuser's upgrade created belongs to the schema's owner.
    let foreign: Vec<String> = column(
        &c,
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace IN ('pgbranch'::regnamespace, 'pgbranch_history'::regnamespace)
           AND p.proowner <> 'tt_dbowner'::regrole
         UNION ALL
         SELECT 'versioned_views' FROM pg_class
         WHERE oid = 'pgbranch.versioned_views'::regclass AND relowner <> 'tt_dbowner'::regrole",
    )
    .await;
    assert_eq!(foreign, Vec::<String>::new());
    let shape: Vec<String> = column(
        &c,
        "SELECT tgname || ':' || coalesce(tgoldtable, '-') FROM pg_trigger
         WHERE tgrelid = 'm'::regclass AND tgname IN ('pgbranch_versioning_update', 'pgbranch_versioning_rekey')
         ORDER BY tgname",
    )
    .await;
    assert_eq!(
        shape,
        [
            "pgbranch_versioning_rekey:-",
            "pgbranch_versioning_update:-"
        ]
    );
    let config: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_proc WHERE proname = 'm_1_write' AND proconfig IS NULL",
    )
    .await;
    assert_eq!(config, 1);
    // And history keeps being right, key changes included.
    c.batch_execute("UPDATE m SET id = 3 WHERE id = 1; UPDATE m SET v = 5")
        .await
        .unwrap();
    let seen = as_of_now(&c, "SELECT id || ':' || v FROM m", "ORDER BY id").await;
    assert_eq!(seen, ["2:5", "3:5"]);
    owner
        .batch_execute("CREATE TABLE by_owner_2 (a int)")
        .await
        .unwrap();
    // The owner of schema pgbranch (who writes history) may not read m:
    // enabling versioning and filling a new column's current values
    // borrowed SELECT for their transaction only.
    c.batch_execute("ALTER TABLE m ADD COLUMN w int DEFAULT 7")
        .await
        .unwrap();
    let seen = as_of_now(&c, "SELECT id || ':' || w FROM m", "ORDER BY id").await;
    assert_eq!(seen, ["2:7", "3:7"]);
    let lent: bool = scalar(
        &c,
        "SELECT has_table_privilege('tt_dbowner', 'm', 'SELECT')",
    )
    .await;
    assert!(!lent);
    proxy.stop().await;
}

#[tokio::test]
async fn views_over_versioned_tables_answer_as_of_and_in_as_of_sessions() {
    let (db, proxy, c) = versioned_db(
        test_config(),
        "CREATE TABLE orders (id int PRIMARY KEY, client text, qty int);
         CREATE TABLE clients (name text PRIMARY KEY, city text);
         INSERT INTO clients VALUES ('ann', 'Oslo'), ('bob', 'Rome');
         INSERT INTO orders VALUES (1, 'ann', 10), (2, 'bob', 7), (3, 'ann', 2)",
        &["orders"],
    )
    .await;
    // A join with an unversioned table, a view over it, a view without
    // aliases, and one reading no versioned table.
    c.batch_execute(
        "CREATE VIEW big_orders AS
             SELECT o.id, o.client, c.city, o.qty FROM orders o JOIN clients c ON c.name = o.client
             WHERE o.qty > 5;
         CREATE VIEW totals AS SELECT client, sum(qty)::int AS total FROM big_orders GROUP BY client;
         CREATE VIEW unaliased AS SELECT orders.id, orders.qty FROM orders;
         CREATE VIEW labelled AS SELECT o.id, 'public.orders o' AS src, 'public.orders' AS src2 FROM orders o;
         CREATE VIEW plain AS SELECT * FROM clients",
    )
    .await
    .unwrap();
    let big = "SELECT id || ':' || client || ':' || city || ':' || qty FROM big_orders";
    let tot = "SELECT client || ':' || total FROM totals";
    let una = "SELECT id || ':' || qty FROM unaliased";
    let read = |q: &str, at: Option<&str>| {
        let from = q.split(" FROM ").nth(1).unwrap().to_string();
        let q = match at {
            Some(t) => q.replace(
                &format!(" FROM {from}"),
                &format!(" FROM {from} AS OF TIMESTAMP '{t}'"),
            ),
            None => q.to_string(),
        };
        format!("{q} ORDER BY 1")
    };
    let t0 = snapshot_time(&c).await;
    let mut then = Vec::new();
    for q in [big, tot, una] {
        then.push(column::<String>(&c, &read(q, None)).await);
    }
    assert_eq!(then[0], ["1:ann:Oslo:10", "2:bob:Rome:7"]);
    c.batch_execute(
        "UPDATE orders SET qty = 1 WHERE id = 2; DELETE FROM orders WHERE id = 1;
         INSERT INTO orders VALUES (4, 'bob', 50); UPDATE clients SET city = 'Bern' WHERE name = 'bob'",
    )
    .await
    .unwrap();
    // Explicit AS OF on each view, simple and extended protocol: the
    // versioned table as it was, the unversioned one as it is.
    let live_city = |row: &str| row.replace("Rome", "Bern");
    for (i, q) in [big, tot, una].into_iter().enumerate() {
        let want: Vec<String> = if i == 0 {
            then[0].iter().map(|r| live_city(r)).collect()
        } else {
            then[i].clone()
        };
        let sql = read(q, Some(&t0));
        assert_eq!(column::<String>(&c, &sql).await, want, "{sql}");
        let simple: Vec<String> = simple_rows(&c, &sql)
            .await
            .into_iter()
            .map(|mut r| r.remove(0))
            .collect();
        assert_eq!(simple, want, "{sql}");
    }
    // String literals naming the table stay as they are.
    let labels: Vec<String> = column(
        &c,
        &format!("SELECT DISTINCT src || '|' || src2 FROM labelled AS OF TIMESTAMP '{t0}'"),
    )
    .await;
    assert_eq!(labels, ["public.orders o|public.orders"]);
    // An as-of session sees the views then, its SQL unchanged.
    let past = connect(&as_of_session(&proxy, &db, &t0)).await;
    assert_eq!(column::<String>(&past, &read(tot, None)).await, then[1]);
    assert_eq!(column::<String>(&past, &read(una, None)).await, then[2]);
    // A view reading no versioned table has no past; ranges need a table.
    let e = c
        .query(&read("SELECT name FROM plain", Some(&t0)), &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000", "{e}");
    assert!(
        message(&e).contains("reads no system-versioned table"),
        "{e}"
    );
    for range in [
        "ALL".to_string(),
        format!("FROM '{t0}' TO now()"),
        format!("BETWEEN '{t0}' AND now()"),
    ] {
        let e = c
            .query(
                &format!("SELECT * FROM big_orders FOR SYSTEM_TIME {range}"),
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), "0A000", "{range}: {e}");
    }
    // The view's function reads history with the reader's privileges: a
    // role that may read the view (live) but not its table may not read
    // it in the past.
    c.batch_execute(
        "DROP ROLE IF EXISTS tt_view_reader; CREATE ROLE tt_view_reader LOGIN;
         GRANT SELECT ON unaliased TO tt_view_reader",
    )
    .await
    .unwrap();
    let reader = connect(&proxy.conn_str("tt_view_reader", &db)).await;
    assert_eq!(column::<String>(&reader, &read(una, None)).await.len(), 3);
    let e = reader.query(&read(una, Some(&t0)), &[]).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    // Straight to PostgreSQL (not through pgbranch), the view cannot be
    // dropped: its function depends on its row type.
    let direct = connect(&db_url(&db)).await;
    let e = direct
        .batch_execute("DROP VIEW unaliased")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "2BP01", "{e}");
    // Views follow their definitions: replaced with a new column, then
    // dropped, through pgbranch.
    c.batch_execute(
        "CREATE OR REPLACE VIEW unaliased AS SELECT orders.id, orders.qty, orders.client FROM orders",
    )
    .await
    .unwrap();
    let seen: Vec<String> = column(
        &c,
        &format!("SELECT id || ':' || client FROM unaliased AS OF TIMESTAMP '{t0}' ORDER BY id"),
    )
    .await;
    assert_eq!(seen, ["1:ann", "2:bob", "3:ann"]);
    c.batch_execute("DROP VIEW totals").await.unwrap();
    c.batch_execute("DROP VIEW big_orders").await.unwrap();
    assert_eq!(column::<String>(&c, &read(una, Some(&t0))).await, then[2]);
    let listed: i64 = scalar(&c, "SELECT count(*) FROM pgbranch.versioned_views").await;
    assert_eq!(listed, 2);
    // A rename through pgbranch keeps the view's past.
    c.batch_execute("ALTER VIEW unaliased RENAME TO una2")
        .await
        .unwrap();
    assert_eq!(
        column::<String>(&c, &read(&una.replace("unaliased", "una2"), Some(&t0))).await,
        then[2]
    );
    c.batch_execute("DROP OWNED BY tt_view_reader; DROP ROLE tt_view_reader")
        .await
        .unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn versioning_commands_work_inside_a_multi_statement_query() {
    let (db, proxy, c) = versioned_db(test_config(), "SELECT 1", &[]).await;
    // A migration file sent as one Query.
    c.batch_execute(
        "CREATE TABLE a (id int PRIMARY KEY, v text) WITH SYSTEM VERSIONING;
         INSERT INTO a VALUES (1, 'x'), (2, 'y');
         CREATE TABLE b (id int PRIMARY KEY);
         ALTER TABLE b ADD SYSTEM VERSIONING;
         INSERT INTO b VALUES (1);
         CREATE INDEX a_v ON a (v);",
    )
    .await
    .unwrap();
    let versioned: Vec<String> = column(
        &c,
        "SELECT table_name FROM pgbranch.versioned_tables ORDER BY 1",
    )
    .await;
    assert_eq!(versioned, ["public.a", "public.b"]);
    let t0 = snapshot_time(&c).await;
    // The client sees one result per statement of its own (simple
    // protocol): none of the proxy's.
    let results = simple_results(
        &c,
        &format!(
            "UPDATE a SET v = 'z'; SELECT count(*) FROM a WHERE v = 'z';
             RESTORE TABLE a TO TIMESTAMP '{t0}'; SELECT string_agg(v, ',' ORDER BY id) FROM a"
        ),
    )
    .await;
    assert_eq!(results.len(), 4, "one result per statement: {results:?}");
    let rows: Vec<Vec<String>> = results.into_iter().flatten().collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0], ["2"]);
    assert!(rows[1][0].starts_with("restored public.a"), "{rows:?}");
    assert_eq!(rows[2], ["x,y"]);
    // The other statements of such a Query keep their AS OF clauses, and
    // the proxy's statements (the check, the versioning of a created
    // table) give the client no result.
    let results = simple_results(
        &c,
        &format!(
            "CREATE TABLE c2 (id int PRIMARY KEY) WITH SYSTEM VERSIONING;
             SELECT count(*) FROM a AS OF TIMESTAMP '{t0}'; SELECT count(*) FROM c2"
        ),
    )
    .await;
    assert_eq!(results.len(), 3, "one result per statement: {results:?}");
    let rows: Vec<Vec<String>> = results.into_iter().flatten().collect();
    assert_eq!(rows, [["2"], ["0"]]);
    // Recorded like any schema change; dropped again in a batch.
    let recorded: i64 = scalar(
        &c,
        "SELECT count(*) FROM pgbranch.schema_history WHERE command_tag IN ('CREATE TABLE', 'CREATE INDEX')",
    )
    .await;
    assert_eq!(recorded, 4);
    // An error before the replaced statement points into the client's text.
    let e = c
        .batch_execute("SELECT nosuchcol FROM b; ALTER TABLE b DROP SYSTEM VERSIONING")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42703", "{e}");
    let position = e.as_db_error().and_then(|d| d.position()).cloned();
    assert_eq!(
        position,
        Some(tokio_postgres::error::ErrorPosition::Original(8)),
        "{e:?}"
    );
    c.batch_execute("ALTER TABLE b DROP SYSTEM VERSIONING; INSERT INTO b VALUES (2)")
        .await
        .unwrap();
    let versioned: Vec<String> =
        column(&c, "SELECT table_name FROM pgbranch.versioned_tables").await;
    assert_eq!(versioned, ["public.a", "public.c2"]);
    // Off main, refused as alone.
    c.batch_execute("CREATE BRANCH side FROM main")
        .await
        .unwrap();
    let side = connect(&on_branch(&proxy, &db, "side")).await;
    let e = side
        .batch_execute("SELECT 1; ALTER TABLE b ADD SYSTEM VERSIONING")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    proxy.stop().await;
}

#[tokio::test]
async fn merging_a_branch_changes_and_drops_versioned_objects_on_main() {
    let (db, proxy, c) = versioned_db(
        test_config(),
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');
         CREATE TABLE gone (id int PRIMARY KEY); CREATE VIEW tv AS SELECT id, v FROM t",
        &["t", "gone"],
    )
    .await;
    c.batch_execute("CREATE BRANCH feature FROM main")
        .await
        .unwrap();
    let b = connect(&on_branch(&proxy, &db, "feature")).await;
    // On the branch: a dropped view over a versioned table, a key type
    // change, a dropped versioned table.
    b.batch_execute("DROP VIEW tv").await.unwrap();
    b.batch_execute("ALTER TABLE t ALTER COLUMN id TYPE bigint")
        .await
        .unwrap();
    b.batch_execute("DROP TABLE gone").await.unwrap();
    drop(b);
    c.batch_execute("MERGE BRANCH feature").await.unwrap();
    let ty: String = scalar(
        &c,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = 't'::regclass AND attname = 'id'",
    )
    .await;
    assert_eq!(ty, "bigint");
    let left: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_class WHERE relname IN ('tv', 'gone') AND relkind IN ('v', 'r')",
    )
    .await;
    assert_eq!(left, 0);
    // History still answers, and key changes still end old keys.
    c.batch_execute("UPDATE t SET id = 5000000000 WHERE id = 1")
        .await
        .unwrap();
    let seen = as_of_now(&c, "SELECT id || ':' || v FROM t", "").await;
    assert_eq!(seen, ["5000000000:a"]);
    let dropped: i64 = scalar(
        &c,
        "SELECT count(*) FROM pgbranch.versioned_tables WHERE dropped_at IS NOT NULL",
    )
    .await;
    assert_eq!(dropped, 1);
    proxy.stop().await;
}
