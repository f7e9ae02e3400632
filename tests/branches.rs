//! Schema branches through the proxy: creating a branch of a realistic
//! schema (tests/fixtures/realistic_schema.sql) compares equal to its
//! parent object by object, WITH DATA row by row; a session on a branch
//! sees and changes only the branch; names, concurrency, drop, protect.

mod common;

use common::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

const SCHEMA: &str = include_str!("fixtures/realistic_schema.sql");
const DATA: &str = include_str!("fixtures/realistic_data.sql");

/// A fresh database holding the realistic schema and its rows.
async fn shop_db() -> String {
    let db = cluster().fresh_db();
    let direct = connect(&cluster().direct(&db)).await;
    direct.batch_execute(SCHEMA).await.unwrap();
    direct.batch_execute(DATA).await.unwrap();
    db
}

/// A shop database, a proxy, a session on main and one on a new schema-only
/// branch `name`.
async fn with_branch(
    config: pgbranch::config::Config,
    name: &str,
) -> (String, TestProxy, Client, Client) {
    let db = shop_db().await;
    let proxy = start_proxy(config).await;
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    main.simple_query(&format!("CREATE BRANCH {name}"))
        .await
        .unwrap();
    let b = connect(&on_branch(&proxy, &db, name)).await;
    (db, proxy, main, b)
}

/// Every object of a branch's versioned schemas: (type, identity) →
/// definition, in logical names.
async fn objects(c: &Client, branch: &str) -> Vec<(String, String, String)> {
    c.query(
        "SELECT object_type, identity, definition FROM pgbranch.branch_objects($1, true) \
         WHERE object_type <> 'schema' ORDER BY 1, 2",
        &[&branch],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Digest of every table's rows, per table.
async fn table_digests(c: &Client, schema: &str) -> Vec<(String, String)> {
    let tables: Vec<String> = c
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let q = format!(
            "SELECT count(*)::text || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') \
             FROM ONLY \"{}\".\"{}\" x",
            schema.replace('"', "\"\""),
            t
        );
        out.push((t, c.query_one(&q, &[]).await.unwrap().get(0)));
    }
    out
}

#[tokio::test]
async fn a_branch_of_a_realistic_schema_equals_its_parent() {
    let db = shop_db().await;
    let proxy = start_proxy(test_config()).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    let rows = c
        .simple_query("CREATE BRANCH feature")
        .await
        .expect("CREATE BRANCH");
    assert!(
        rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get("branch") == Some("feature"))),
        "{rows:?}"
    );
    let main = objects(&c, "main").await;
    let branch = objects(&c, "feature").await;
    // The fixture's kinds are all there.
    for kind in [
        "table",
        "view",
        "materialized view",
        "index",
        "sequence",
        "function",
        "procedure",
        "trigger",
        "type",
    ] {
        assert!(main.iter().any(|o| o.0 == kind), "fixture lacks {kind}");
    }
    assert!(main.iter().filter(|o| o.0 == "table").count() >= 20);
    assert_eq!(branch, main);
    // DIFF BRANCH agrees, in both protocols.
    assert!(c
        .query("DIFF BRANCH feature", &[])
        .await
        .unwrap()
        .is_empty());
    // Schema-only: tables are empty, sequences continue from the parent.
    let direct = connect(&cluster().direct(&db)).await;
    let n: i64 = scalar(&direct, "SELECT count(*) FROM \"public@feature\".customers").await;
    assert_eq!(n, 0);
    let (main_seq, branch_seq): (i64, i64) = {
        let r = direct
            .query_one(
                "SELECT (SELECT last_value FROM public.order_number_seq), \
                        (SELECT last_value FROM \"public@feature\".order_number_seq)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(branch_seq, main_seq);
}

#[tokio::test]
async fn with_data_copies_every_row_and_a_branch_of_a_branch_too() {
    let db = shop_db().await;
    let proxy = start_proxy(test_config()).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE BRANCH full WITH DATA")
        .await
        .unwrap();
    c.simple_query("CREATE BRANCH sub FROM full WITH DATA")
        .await
        .unwrap();
    let direct = connect(&cluster().direct(&db)).await;
    let main = table_digests(&direct, "public").await;
    assert!(main.len() >= 20);
    assert!(main.iter().all(|(_, d)| !d.starts_with("0:")), "{main:?}");
    assert_eq!(table_digests(&direct, "public@full").await, main);
    assert_eq!(table_digests(&direct, "public@sub").await, main);
    assert_eq!(objects(&c, "sub").await, objects(&c, "main").await);
    // The branch remembers where it came from.
    let r = direct
        .query_one(
            "SELECT parent, parent_version, with_data FROM pgbranch.branches WHERE name = 'sub'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Option<String>>(0).as_deref(), Some("full"));
    assert_eq!(r.get::<_, Option<i64>>(1), Some(0));
    assert!(r.get::<_, bool>(2));
}

#[tokio::test]
async fn a_branch_session_sees_and_changes_only_its_branch() {
    let db = shop_db().await;
    let proxy = start_proxy(test_config()).await;
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    main.simple_query("CREATE BRANCH feature WITH DATA")
        .await
        .unwrap();
    let direct = connect(&cluster().direct(&db)).await;
    let before: (i64, i64) = {
        let r = direct
            .query_one(
                "SELECT (SELECT count(*) FROM public.reviews), (SELECT count(*) FROM public.wishlists)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(before.0 > 0 && before.1 > 0);
    let b = connect(&on_branch(&proxy, &db, "feature")).await;
    let path: String = scalar(&b, "SHOW search_path").await;
    assert_eq!(path, "\"$user\", \"public@feature\"");
    let current: String = scalar(&b, "SHOW pgbranch.branch").await;
    assert_eq!(current, "feature");
    // DDL, DML, qualified names, TRUNCATE and sequences, in both protocols.
    b.batch_execute(
        "ALTER TABLE customers ADD COLUMN nickname text; \
         CREATE TABLE public.feature_flags (id int PRIMARY KEY); \
         INSERT INTO public.feature_flags VALUES (1); \
         DELETE FROM \"public\".reviews; \
         TRUNCATE wishlists; \
         SELECT nextval('public.order_number_seq')",
    )
    .await
    .unwrap();
    b.execute("UPDATE public.products SET price = price * 2", &[])
        .await
        .unwrap();
    let flags: i64 = scalar(&b, "SELECT count(*) FROM public.feature_flags").await;
    assert_eq!(flags, 1);
    // main is untouched.
    let untouched: (bool, i64, i64, i64) = {
        let r = direct
            .query_one(
                "SELECT to_regclass('public.feature_flags') IS NULL, \
                        (SELECT count(*) FROM public.reviews), \
                        (SELECT count(*) FROM public.wishlists), \
                        (SELECT last_value FROM public.order_number_seq)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(untouched, (true, before.0, before.1, 5000));
    let cols: i64 = scalar(
        &direct,
        "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'public' AND column_name = 'nickname'",
    )
    .await;
    assert_eq!(cols, 0);
    let branch_reviews: i64 =
        scalar(&direct, "SELECT count(*) FROM \"public@feature\".reviews").await;
    assert_eq!(branch_reviews, 0);
    // The branch's history: its own versions, logical names.
    let history: Vec<(i64, String, String)> = direct
        .query(
            "SELECT version, object_identity, statement FROM pgbranch.schema_history \
             WHERE branch = 'feature' ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(history[0].0, 0);
    assert_eq!(history[1].1, "public.customers");
    assert_eq!(
        (history[2].1.as_str(), history[2].2.as_str()),
        (
            "public.feature_flags",
            "CREATE TABLE public.feature_flags (id int PRIMARY KEY)"
        )
    );
    let main_versions: i64 = scalar(
        &direct,
        "SELECT count(*) FROM pgbranch.schema_history WHERE branch = 'main'",
    )
    .await;
    assert_eq!(main_versions, 1, "only main's baseline");
    // DIFF shows the branch's changes with both definitions.
    let diff: Vec<(String, String, String)> = main
        .query("DIFF BRANCH feature", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("object_type"), r.get("identity"), r.get("change")))
        .collect();
    assert!(diff.contains(&("table".into(), "public.customers".into(), "changed".into())));
    assert!(diff.contains(&(
        "table".into(),
        "public.feature_flags".into(),
        "added".into()
    )));
    // Introspection the way ORMs do it sees the branch's tables.
    let listed: Vec<String> = column(
        &b,
        "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name = 'feature_flags'",
    )
    .await;
    assert_eq!(listed, ["feature_flags"]);
    // RESET returns to the branch's path.
    b.batch_execute("SET search_path = pg_catalog; RESET search_path")
        .await
        .unwrap();
    let path: String = scalar(&b, "SHOW search_path").await;
    assert_eq!(path, "\"$user\", \"public@feature\"");
    // SET search_path naming public names the branch's copy.
    b.batch_execute("SET search_path TO public").await.unwrap();
    let path: String = scalar(&b, "SHOW search_path").await;
    assert_eq!(path, "\"public@feature\"");
}

#[tokio::test]
async fn unknown_and_invalid_branches_are_refused_at_connect() {
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    // No pgbranch schema at all yet.
    let e = tokio_postgres::connect(&on_branch(&proxy, &db, "nope"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(code(&e), "3D000");
    assert!(e
        .as_db_error()
        .unwrap()
        .hint()
        .unwrap()
        .contains("CREATE BRANCH"));
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    main.simple_query("CREATE BRANCH exists").await.unwrap();
    let e = tokio_postgres::connect(&on_branch(&proxy, &db, "nope"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(code(&e), "3D000");
    let e = tokio_postgres::connect(&on_branch(&proxy, &db, "bad;name"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(code(&e), "42602");
    // The database-name form selects too.
    let c = connect(&proxy.conn_str("postgres", &format!("{db}/exists"))).await;
    let current: String = scalar(&c, "SHOW pgbranch.branch").await;
    assert_eq!(current, "exists");
    // Bad commands are errors with their SQLSTATE, not forwarded.
    for (sql, state) in [
        ("CREATE BRANCH", "42601"),
        ("CREATE BRANCH \"a b\"", "42602"),
        ("CREATE BRANCH exists", "42710"),
        ("CREATE BRANCH x FROM nope", "3D000"),
        ("DROP BRANCH nope", "3D000"),
        ("DROP BRANCH main", "42809"),
    ] {
        let e = main.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e), state, "{sql}: {e}");
    }
    main.simple_query("DROP BRANCH IF EXISTS nope")
        .await
        .unwrap();
}

#[tokio::test]
async fn two_creations_of_one_name_one_wins_and_a_failed_one_leaves_nothing() {
    let db = shop_db().await;
    let proxy = start_proxy(test_config()).await;
    // The two creations come through two proxy instances.
    let other = start_proxy(test_config()).await;
    let a = connect(&proxy.conn_str("postgres", &db)).await;
    let b = connect(&other.conn_str("postgres", &db)).await;
    a.simple_query("SELECT 1").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    a.simple_query("CREATE BRANCH race").await.unwrap();
    let b_pid: i32 = scalar(&b, "SELECT pg_backend_pid()").await;
    let second = tokio::spawn(async move { b.simple_query("CREATE BRANCH race").await });
    let direct = connect(&cluster().direct(&db)).await;
    // The second waits for the first's branch row.
    wait_for("the second creation to wait for a lock", || async {
        direct
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&b_pid],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    a.batch_execute("COMMIT").await.unwrap();
    let e = second.await.unwrap().expect_err("second creation fails");
    assert_eq!(code(&e), "42710", "{e}");
    // A creation that fails midway (after its schemas and objects were
    // made: a role that may create schemas but not read a table asks for
    // its rows) leaves no schema and no branch row.
    let role = format!("halfway_{}", db.replace('-', "_"));
    direct
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CREATE ON DATABASE \"{db}\" TO {role}; \
             GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}; \
             REVOKE SELECT ON public.payments FROM {role}"
        ))
        .await
        .unwrap();
    let r = connect(&proxy.conn_str(&role, &db)).await;
    let e = r
        .simple_query("CREATE BRANCH xhalf WITH DATA")
        .await
        .err()
        .unwrap();
    assert_eq!(code(&e), "42501", "{e}");
    assert!(
        e.as_db_error()
            .unwrap()
            .detail()
            .unwrap()
            .contains("payments"),
        "{e:?}"
    );
    let left: i64 = scalar(
        &direct,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%@x%') \
                  + (SELECT count(*) FROM pgbranch.branches WHERE name LIKE 'x%')",
    )
    .await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn drop_waits_for_sessions_unless_forced_and_show_branches_lists() {
    let db = shop_db().await;
    let proxy = start_proxy(test_config()).await;
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    main.simple_query("CREATE BRANCH busy WITH DATA")
        .await
        .unwrap();
    main.simple_query("CREATE BRANCH idle").await.unwrap();
    let list: Vec<(String, Option<String>, i64)> = main
        .query("SHOW BRANCHES", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("name"), r.get("parent"), r.get("size")))
        .collect();
    assert_eq!(
        list.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        ["main", "busy", "idle"]
    );
    assert_eq!(list[1].1.as_deref(), Some("main"));
    assert!(list[1].2 > 0);
    let user = connect(&on_branch(&proxy, &db, "busy")).await;
    user.simple_query("SELECT 1").await.unwrap();
    let e = main.simple_query("DROP BRANCH busy").await.err().unwrap();
    assert_eq!(code(&e), "55006", "{e}");
    main.simple_query("DROP BRANCH idle").await.unwrap();
    main.simple_query("DROP BRANCH busy FORCE").await.unwrap();
    let direct = connect(&cluster().direct(&db)).await;
    let left: i64 = scalar(
        &direct,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%@%') \
                  + (SELECT count(*) FROM pgbranch.branches WHERE name <> 'main') \
                  + (SELECT count(*) FROM pgbranch.schema_history WHERE branch <> 'main')",
    )
    .await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn protected_main_refuses_ddl_but_branches_may_change() {
    let db = shop_db().await;
    let mut config = test_config();
    config.branches.protected = vec!["main".into()];
    let proxy = start_proxy(config).await;
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    for sql in [
        "CREATE TABLE nope (x int)",
        "ALTER TABLE customers ADD y int",
    ] {
        let e = main.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e), "42501");
        assert!(e
            .as_db_error()
            .unwrap()
            .hint()
            .unwrap()
            .contains("MERGE BRANCH"));
        let e = main.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(code(&e), "42501");
    }
    main.simple_query("CREATE BRANCH work").await.unwrap();
    let b = connect(&on_branch(&proxy, &db, "work")).await;
    b.simple_query("CREATE TABLE yes (x int)").await.unwrap();
    // DML on main still works.
    main.execute("UPDATE customers SET full_name = full_name", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_role_that_may_not_create_schemas_cannot_create_branches() {
    let db = shop_db().await;
    let direct = connect(&cluster().direct(&db)).await;
    let role = format!("nobranch_{}", db.replace('-', "_"));
    direct
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA public TO {role}; \
             REVOKE CREATE ON DATABASE \"{db}\" FROM PUBLIC"
        ))
        .await
        .unwrap();
    let proxy = start_proxy(test_config()).await;
    // The metadata exists (set up by the owner).
    let owner = connect(&proxy.conn_str("postgres", &db)).await;
    owner.simple_query("CREATE BRANCH ok").await.unwrap();
    let c = connect(&proxy.conn_str(&role, &db)).await;
    let e = c.simple_query("CREATE BRANCH mine").await.err().unwrap();
    assert_eq!(code(&e), "42501", "{e}");
    let e = c.simple_query("DROP BRANCH ok").await.err().unwrap();
    assert_eq!(
        e.as_db_error().map(|d| d.code()),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{e}"
    );
}

#[tokio::test]
async fn psql_creates_migrates_and_diffs_a_branch() {
    let db = shop_db().await;
    let proxy = start_proxy(test_config()).await;
    let main_conn = proxy.conn_str("postgres", &db);
    let (ok, out, err) = psql(&main_conn, &["-c", "CREATE BRANCH feature"]).await;
    assert!(ok, "{out}{err}");
    let branch_conn = on_branch(&proxy, &db, "feature");
    let (ok, out, err) = psql(
        &branch_conn,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "ALTER TABLE customers ADD COLUMN loyalty_tier text NOT NULL DEFAULT 'basic'",
            "-c",
            "CREATE INDEX customers_tier ON customers (loyalty_tier)",
            "-c",
            "\\d customers",
            // COPY naming public reaches the branch's table (whose column
            // main does not have).
            "-c",
            "COPY (SELECT DISTINCT loyalty_tier FROM public.customers) TO STDOUT",
            "-c",
            "COPY public.customers (loyalty_tier) TO STDOUT",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("loyalty_tier"), "{out}");
    assert!(out.contains("customers_tier"), "{out}");
    let (ok, out, err) = psql(&main_conn, &["-A", "-t", "-c", "DIFF BRANCH feature"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("public.customers|changed"), "{out}");
    assert!(out.contains("public.customers_tier|added"), "{out}");
    let (ok, out, _) = psql(&main_conn, &["-A", "-t", "-c", "\\d customers"]).await;
    assert!(ok);
    assert!(!out.contains("loyalty_tier"), "main unchanged: {out}");
    let (ok, out, err) = psql(&main_conn, &["-c", "MERGE BRANCH feature"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("applied"), "{out}");
    let (ok, out, _) = psql(&main_conn, &["-c", "\\d customers"]).await;
    assert!(ok);
    assert!(out.contains("loyalty_tier"), "main merged: {out}");
    assert!(out.contains("customers_tier"), "main merged: {out}");
}

/// Columns of `public.customers` on main.
async fn main_customer_columns(direct: &Client) -> Vec<String> {
    column(
        direct,
        "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'customers' ORDER BY ordinal_position",
    )
    .await
}

#[tokio::test]
async fn merge_replays_the_branch_on_main_and_records_it_as_merged() {
    let db = shop_db().await;
    let mut config = test_config();
    config.branches.protected = vec!["main".into()];
    let proxy = start_proxy(config).await;
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    main.simple_query("CREATE BRANCH feature").await.unwrap();
    let b = connect(&on_branch(&proxy, &db, "feature")).await;
    b.batch_execute("ALTER TABLE customers ADD COLUMN tier text DEFAULT 'basic'")
        .await
        .unwrap();
    b.execute(
        "CREATE TABLE public.flags (id int PRIMARY KEY, customer_id bigint REFERENCES customers (id))",
        &[],
    )
    .await
    .unwrap();
    b.batch_execute("CREATE INDEX customers_tier ON public.customers (tier)")
        .await
        .unwrap();
    let direct = connect(&cluster().direct(&db)).await;
    let before = main_customer_columns(&direct).await;
    // The plan, in both protocols; nothing changes.
    let plan: Vec<(String, String)> = main
        .query("MERGE BRANCH feature DRY RUN", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("statement"), r.get("status")))
        .collect();
    assert_eq!(plan.len(), 3, "{plan:?}");
    assert!(plan.iter().all(|(_, s)| s == "planned"));
    assert_eq!(
        plan[1].0,
        "CREATE TABLE public.flags (id int PRIMARY KEY, customer_id bigint REFERENCES customers (id))"
    );
    assert_eq!(main_customer_columns(&direct).await, before);
    // The merge (into a protected main: allowed).
    let applied = main.simple_query("MERGE BRANCH feature").await.unwrap();
    let rows = applied
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 3);
    let mut expected = before.clone();
    expected.push("tier".into());
    assert_eq!(main_customer_columns(&direct).await, expected);
    let exists: bool = scalar(&direct, "SELECT to_regclass('public.flags') IS NOT NULL AND to_regclass('public.customers_tier') IS NOT NULL").await;
    assert!(exists);
    assert!(main
        .query("DIFF BRANCH feature", &[])
        .await
        .unwrap()
        .is_empty());
    let merged: Vec<(i64, Option<String>, Option<i64>, String)> = direct
        .query(
            "SELECT version, merged_from, merged_version, object_identity FROM pgbranch.schema_history \
             WHERE branch = 'main' ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(merged.len(), 4, "{merged:?}");
    assert_eq!(
        merged[2],
        (2, Some("feature".into()), Some(2), "public.flags".into())
    );
    // Merging again replays only what is new on the branch.
    assert!(main
        .query("MERGE BRANCH feature", &[])
        .await
        .unwrap()
        .is_empty());
    b.batch_execute("COMMENT ON TABLE flags IS 'feature flags'")
        .await
        .unwrap();
    let again = main.query("MERGE BRANCH feature", &[]).await.unwrap();
    assert_eq!(again.len(), 1);
    let comment: Option<String> =
        scalar(&direct, "SELECT obj_description('public.flags'::regclass)").await;
    assert_eq!(comment.as_deref(), Some("feature flags"));
}

#[tokio::test]
async fn conflicts_are_listed_and_nothing_is_applied() {
    let (db, _proxy, main, b) = with_branch(test_config(), "feature").await;
    b.batch_execute(
        "CREATE TABLE harmless (x int); ALTER TABLE customers ADD COLUMN on_branch int",
    )
    .await
    .unwrap();
    main.batch_execute("ALTER TABLE customers ADD COLUMN on_main int")
        .await
        .unwrap();
    let e = main
        .simple_query("MERGE BRANCH feature")
        .await
        .expect_err("conflict");
    assert_eq!(code(&e), "55000", "{e}");
    let db_err = e.as_db_error().unwrap();
    assert_eq!(db_err.detail(), Some("table public.customers"));
    let conflicts: Vec<(String, String)> = main
        .query("MERGE BRANCH feature DRY RUN", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("identity"), r.get("status")))
        .collect();
    assert_eq!(
        conflicts,
        [("public.customers".to_string(), "conflict".to_string())]
    );
    let direct = connect(&cluster().direct(&db)).await;
    let applied: bool = scalar(&direct, "SELECT to_regclass('public.harmless') IS NOT NULL").await;
    assert!(!applied, "nothing applied");
}

#[tokio::test]
async fn a_merge_that_fails_on_main_data_rolls_back_and_names_the_statement() {
    let (db, _proxy, main, b) = with_branch(test_config(), "feature").await;
    // Fine on the branch's empty table, not on main's rows.
    b.batch_execute(
        "CREATE TABLE first_ok (x int); ALTER TABLE customers ADD COLUMN required int NOT NULL",
    )
    .await
    .unwrap();
    let direct = connect(&cluster().direct(&db)).await;
    let e = main
        .simple_query("MERGE BRANCH feature")
        .await
        .expect_err("the NOT NULL fails on main");
    assert_eq!(code(&e), "23502", "{e}");
    let db_err = e.as_db_error().unwrap();
    assert!(db_err.message().contains("branch version 2"), "{db_err:?}");
    assert_eq!(
        db_err.detail(),
        Some("Statement: ALTER TABLE customers ADD COLUMN required int NOT NULL")
    );
    let (table, rows): (bool, i64) = {
        let r = direct
            .query_one(
                "SELECT to_regclass('public.first_ok') IS NOT NULL, \
                 (SELECT count(*) FROM pgbranch.schema_history WHERE branch = 'main')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((table, rows), (false, 1), "nothing of the merge is left");
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = pgbranch_cli(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_creates_lists_diffs_merges_and_drops() {
    let db = shop_db().await;
    let url = db_url(&db);
    let u = ["--database-url", url.as_str()];
    let (code, out, err) = cli(&[&["branch", "create", "cli-b", "--with-data"][..], &u].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created branch cli-b from main"), "{out}");
    let (code, out, err) = cli(&[&["branch", "list"][..], &u].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("cli-b ")), "{out}");
    let (code, out, _) = cli(&[&["diff", "main", "cli-b"][..], &u].concat());
    assert_eq!((code, out.as_str()), (0, ""), "no difference yet");
    // A change on the branch, through the proxy.
    let proxy = start_proxy(test_config()).await;
    let b = connect(&on_branch(&proxy, &db, "cli-b")).await;
    b.batch_execute("ALTER TABLE tags ADD COLUMN colour text")
        .await
        .unwrap();
    let (code, out, _) = cli(&[&["diff", "main", "cli-b"][..], &u].concat());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--- table public.tags (main)"), "{out}");
    assert!(out.contains("+++ table public.tags (cli-b)"), "{out}");
    assert!(out.contains("+    colour text"), "{out}");
    let (code, out, err) = cli(&[&["merge", "cli-b", "--dry-run"][..], &u].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ALTER TABLE tags ADD COLUMN colour text;"),
        "{out}"
    );
    let (code, out, err) = cli(&[&["merge", "cli-b"][..], &u].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("-- applied"), "{out}");
    drop(b);
    // The session's lock goes with its connection: wait until it is gone.
    let direct = connect(&cluster().direct(&db)).await;
    wait_for("the branch session to end", || async {
        direct
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
    let (code, out, err) = cli(&[&["branch", "drop", "cli-b"][..], &u].concat());
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&[&["branch", "drop", "cli-b"][..], &u].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[tokio::test]
async fn extensions_in_a_versioned_schema_are_reported_with_the_fix() {
    let db = cluster().fresh_db();
    let direct = connect(&cluster().direct(&db)).await;
    direct
        .batch_execute("CREATE EXTENSION citext SCHEMA public; CREATE TABLE users (email citext)")
        .await
        .unwrap();
    let proxy = start_proxy(test_config()).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    let e = c
        .simple_query("CREATE BRANCH ext")
        .await
        .expect_err("refused");
    assert_eq!(code(&e), "0A000", "{e}");
    let d = e.as_db_error().unwrap();
    assert!(d.detail().unwrap().contains("citext"), "{d:?}");
    assert!(d.hint().unwrap().contains("ALTER EXTENSION"), "{d:?}");
    // The fix works: with the extension in a shared schema on the path,
    // the branch is created and its table uses the shared type.
    direct
        .batch_execute(&format!(
            "CREATE SCHEMA extensions; ALTER EXTENSION citext SET SCHEMA extensions; \
             ALTER DATABASE \"{db}\" SET search_path = \"$user\", public, extensions"
        ))
        .await
        .unwrap();
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE BRANCH ext").await.unwrap();
    let b = connect(&format!(
        "{} options='-c branch=ext -c search_path=public,extensions'",
        proxy.conn_str("postgres", &db)
    ))
    .await;
    b.batch_execute("INSERT INTO users VALUES ('A@x.org'); CREATE TABLE more (e citext)")
        .await
        .unwrap();
    let n: i64 = scalar(&b, "SELECT count(*) FROM users WHERE email = 'a@X.ORG'").await;
    assert_eq!(n, 1);
    // Without a search_path of its own, a session starts from the one the
    // database sets, mapped: the shared schema stays on it.
    for _ in 0..2 {
        let d = connect(&on_branch(&proxy, &db, "ext")).await;
        let path: String = scalar(&d, "SHOW search_path").await;
        assert_eq!(path, "\"$user\", \"public@ext\", \"extensions\"");
        d.batch_execute("CREATE TEMP TABLE t (e citext)")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn set_pgbranch_branch_switches_an_idle_session_and_reset_keeps_it_there() {
    let db = shop_db().await;
    let mut config = test_config();
    config.branches.protected = vec!["main".into()];
    let proxy = start_proxy(config).await;
    let c = connect(&proxy.conn_str("postgres", &db)).await;
    c.simple_query("CREATE BRANCH sw").await.unwrap();
    // Refused inside a transaction block, and in the extended protocol.
    c.batch_execute("BEGIN").await.unwrap();
    let e = c
        .simple_query("SET pgbranch.branch = 'sw'")
        .await
        .expect_err("in a transaction");
    assert_eq!(code(&e), "25001");
    c.batch_execute("ROLLBACK").await.unwrap();
    // In the extended protocol too, also inside a transaction block.
    c.batch_execute("BEGIN").await.unwrap();
    let e = c
        .execute("SET pgbranch.branch = 'sw'", &[])
        .await
        .expect_err("extended, in a transaction");
    assert_eq!(code(&e), "25001");
    c.batch_execute("ROLLBACK").await.unwrap();
    c.execute("SET pgbranch.branch = 'sw'", &[]).await.unwrap();
    let on: String = scalar(&c, "SHOW pgbranch.branch").await;
    assert_eq!(on, "sw");
    let path: String = scalar(&c, "SHOW search_path").await;
    assert_eq!(path, "\"$user\", \"public@sw\"");
    c.execute("RESET pgbranch.branch", &[]).await.unwrap();
    let path: String = scalar(&c, "SHOW search_path").await;
    assert_eq!(path, "\"$user\", public");
    let e = c
        .simple_query("SET pgbranch.branch = 'nope'")
        .await
        .expect_err("unknown");
    assert_eq!(code(&e), "3D000");
    // The switch: branch, path, protection and DDL recording follow.
    c.simple_query("SET pgbranch.branch = 'sw'").await.unwrap();
    let show = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, String>(0) }
    };
    assert_eq!(show("SHOW pgbranch.branch").await, "sw");
    assert_eq!(show("SHOW search_path").await, "\"$user\", \"public@sw\"");
    c.batch_execute("CREATE TABLE public.only_on_sw (x int)")
        .await
        .unwrap();
    // RESET and DISCARD do not fall back to main's path, in both protocols.
    c.batch_execute("RESET search_path").await.unwrap();
    assert_eq!(show("SHOW search_path").await, "\"$user\", \"public@sw\"");
    c.batch_execute("SET search_path = pg_catalog")
        .await
        .unwrap();
    c.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(show("SHOW search_path").await, "\"$user\", \"public@sw\"");
    c.execute("DISCARD ALL", &[]).await.unwrap();
    assert_eq!(show("SHOW search_path").await, "\"$user\", \"public@sw\"");
    c.execute("RESET ALL", &[]).await.unwrap();
    assert_eq!(show("SHOW search_path").await, "\"$user\", \"public@sw\"");
    let n: i64 = scalar(&c, "SELECT count(*) FROM only_on_sw").await;
    assert_eq!(n, 0);
    // Back to the branch selected at connect time: protected again.
    c.simple_query("RESET pgbranch.branch").await.unwrap();
    assert_eq!(show("SHOW pgbranch.branch").await, "main");
    assert_eq!(show("SHOW search_path").await, "\"$user\", public");
    let e = c
        .simple_query("CREATE TABLE no (x int)")
        .await
        .expect_err("main is protected");
    assert_eq!(code(&e), "42501");
    let direct = connect(&cluster().direct(&db)).await;
    let recorded: i64 = scalar(&direct, "SELECT count(*) FROM pgbranch.schema_history WHERE branch = 'sw' AND object_identity = 'public.only_on_sw'").await;
    assert_eq!(recorded, 1);
}

#[tokio::test]
async fn the_startup_parameter_selects_a_branch_too() {
    use common::raw::RawConn;
    let db = cluster().fresh_db();
    let proxy = start_proxy(test_config()).await;
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    main.simple_query("CREATE BRANCH by-param").await.unwrap();
    let (mut r, _) = RawConn::connect(
        proxy.port(),
        &[
            ("user", b"postgres"),
            ("database", db.as_bytes()),
            ("pgbranch.branch", b"by-param"),
        ],
    )
    .await;
    r.send_query_bytes(b"SHOW search_path").await;
    let rows: Vec<String> = r
        .until_ready()
        .await
        .into_iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| pgbranch::protocol::backend::data_row_text(&body).remove(0))
        .collect();
    assert_eq!(rows, ["\"$user\", \"public@by-param\""]);
}
