//! Regression tests from the review of schema branches: each test shows a
//! defect the first version had (the comment above it says which) and now
//! passes. Security: forged history rows, SECURITY DEFINER checks of the
//! wrong role, code of other roles run as the branch creator. Branch
//! sessions reaching main's objects. Merge: concurrency, shared schemas,
//! CONCURRENTLY, string literals.

mod common;

use common::*;
use tokio_postgres::Client;

/// A role name unique to this test's database.
fn role_name(prefix: &str, db: &str) -> String {
    format!("{prefix}_{db}")
}

/// A fresh database with `setup` run directly, a proxy, and a main session
/// (postgres, superuser) through it that has set up the metadata.
async fn setup(setup: &str) -> (String, TestProxy, Client, Client) {
    let db = cluster().fresh_db();
    let direct = connect(&cluster().direct(&db)).await;
    if !setup.is_empty() {
        direct.batch_execute(setup).await.unwrap();
    }
    let proxy = start_proxy(test_config()).await;
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    (db, proxy, main, direct)
}

/// A database whose citext lives in a shared `extensions` schema on the
/// database's search_path, a proxy, a main session, a direct connection
/// and a session on branch `ext`.
async fn extensions_db() -> (String, TestProxy, Client, Client, Client) {
    let db = cluster().fresh_db();
    let direct = connect(&cluster().direct(&db)).await;
    direct
        .batch_execute(&format!(
            "CREATE SCHEMA extensions; CREATE EXTENSION citext SCHEMA extensions; \
             ALTER DATABASE \"{db}\" SET search_path = \"$user\", public, extensions; \
             CREATE TABLE public.users (email extensions.citext)"
        ))
        .await
        .unwrap();
    let proxy = start_proxy(test_config()).await;
    let main = connect(&proxy.conn_str("postgres", &db)).await;
    main.simple_query("CREATE BRANCH ext").await.unwrap();
    let b = connect(&on_branch(&proxy, &db, "ext")).await;
    (db, proxy, main, direct, b)
}

// ---------------------------------------------------------------------------
// 1. Security
// ---------------------------------------------------------------------------

/// pgbranch.record_ddl is SECURITY DEFINER, EXECUTE to PUBLIC, and checks
/// nothing: any role can append an arbitrary statement to any branch's
/// history. MERGE BRANCH then EXECUTEs it as the role that merges.
#[tokio::test]
async fn a_statement_forged_into_a_branch_history_is_run_by_merge_as_the_merger() {
    let (db, proxy, main, direct) =
        setup("CREATE TABLE secret (v text); INSERT INTO secret VALUES ('s')").await;
    let attacker = role_name("forger", &db);
    direct
        .batch_execute(&format!("CREATE ROLE {attacker} LOGIN"))
        .await
        .unwrap();
    main.simple_query("CREATE BRANCH feature").await.unwrap();
    let a = connect(&direct_as(&attacker, &db)).await;
    // No privilege on the branch, its schemas or the table.
    let forged = a
        .query_one(
            &format!(
                "SELECT pgbranch.record_ddl('feature', 'GRANT SELECT ON secret TO {attacker}', \
                 'GRANT', 'table', 'public.secret', 'grant', NULL)"
            ),
            &[],
        )
        .await;
    // Refused: no ddl_begin in that transaction.
    let e = forged.expect_err("a history row written directly");
    assert_eq!(code(&e), "55000", "{e}");
    // The branch owner merges the branch (on which nothing was done).
    main.simple_query("MERGE BRANCH feature").await.unwrap();
    drop(proxy);
    let e = a
        .query("SELECT * FROM public.secret", &[])
        .await
        .expect_err("the attacker must still not read public.secret");
    assert_eq!(code(&e), "42501", "{e}");
}

/// pgbranch.record_merged (SECURITY DEFINER, EXECUTE to PUBLIC) lets any
/// role write versions into main's history, claiming a merge that never
/// happened.
#[tokio::test]
async fn any_role_can_write_merged_versions_into_mains_history() {
    let (db, _proxy, main, direct) = setup("CREATE TABLE t (x int)").await;
    main.simple_query("CREATE BRANCH feature").await.unwrap();
    let attacker = role_name("histforger", &db);
    direct
        .batch_execute(&format!("CREATE ROLE {attacker} LOGIN"))
        .await
        .unwrap();
    let before = scalar::<i64>(
        &direct,
        "SELECT count(*) FROM pgbranch.schema_history WHERE branch = 'main'",
    )
    .await;
    let a = connect(&direct_as(&attacker, &db)).await;
    let r = a
        .query_one(
            "SELECT pgbranch.record_merged('main', 'feature', 7, 'DROP TABLE t', 'DROP TABLE', \
             'table', 'public.t', 'drop', NULL)",
            &[],
        )
        .await;
    let after = scalar::<i64>(
        &direct,
        "SELECT count(*) FROM pgbranch.schema_history WHERE branch = 'main'",
    )
    .await;
    assert!(
        r.is_err(),
        "record_merged must refuse a role that merged nothing"
    );
    assert_eq!(after, before, "main's history must not change");
}

/// pgbranch.finish_merge is meant to let only the owner of the branch's
/// schemas move its merge base, but pg_has_role() inside a SECURITY
/// DEFINER function checks the metadata owner (here a superuser), not the
/// caller. Any role can mark another's branch as merged; the next MERGE
/// then silently skips the branch's changes.
#[tokio::test]
async fn any_role_can_mark_another_roles_branch_as_merged() {
    let (db, proxy, main, direct) = setup("CREATE TABLE t (x int)").await;
    main.simple_query("CREATE BRANCH feature").await.unwrap();
    let b = connect(&on_branch(&proxy, &db, "feature")).await;
    b.batch_execute("ALTER TABLE t ADD COLUMN y int")
        .await
        .unwrap();
    let attacker = role_name("mover", &db);
    direct
        .batch_execute(&format!("CREATE ROLE {attacker} LOGIN"))
        .await
        .unwrap();
    let a = connect(&direct_as(&attacker, &db)).await;
    let r = a
        .query("SELECT pgbranch.finish_merge('feature')", &[])
        .await;
    assert!(r.is_err(), "finish_merge outside a merge: {r:?}");
    main.simple_query("MERGE BRANCH feature").await.unwrap();
    let merged = scalar::<i64>(
        &direct,
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 't' AND column_name = 'y'",
    )
    .await;
    assert_eq!(merged, 1, "the branch's ALTER TABLE was never merged");
}

/// register_branch's has_database_privilege(current_database(), 'CREATE')
/// runs as the metadata owner: a role without CREATE on the database can
/// register branches (rows in pgbranch.branches / branch_schemas).
#[tokio::test]
async fn a_role_without_create_on_the_database_can_register_branches() {
    let (db, _proxy, main, direct) = setup("").await;
    main.simple_query("CREATE BRANCH init").await.unwrap();
    let attacker = role_name("squatter", &db);
    direct
        .batch_execute(&format!(
            "CREATE ROLE {attacker} LOGIN; REVOKE CREATE ON DATABASE \"{db}\" FROM PUBLIC"
        ))
        .await
        .unwrap();
    let a = connect(&direct_as(&attacker, &db)).await;
    let has_create: bool = scalar(
        &a,
        "SELECT has_database_privilege(current_database(), 'CREATE')",
    )
    .await;
    assert!(!has_create);
    let r = a
        .query(
            "SELECT * FROM pgbranch.register_branch('release', 'main', false)",
            &[],
        )
        .await;
    match r {
        Err(e) => assert_eq!(code(&e), "42501", "{e}"),
        Ok(_) => panic!("a role that may not create schemas registered branch \"release\""),
    }
}

/// The same current_user mistake breaks the supported non-superuser setup:
/// with the metadata owned by the database owner (no superuser), any other
/// role that may create schemas is refused by finish_branch (pg_has_role()
/// asks whether the *metadata owner* is a member of the schemas' owner).
#[tokio::test]
async fn with_a_non_superuser_metadata_owner_other_roles_cannot_create_branches() {
    let db = cluster().fresh_db();
    let owner = role_name("dbowner", &db);
    let dev = role_name("dev", &db);
    let direct = connect(&cluster().direct(&db)).await;
    direct
        .batch_execute(&format!(
            "CREATE ROLE {owner} LOGIN; CREATE ROLE {dev} LOGIN; \
             ALTER DATABASE \"{db}\" OWNER TO {owner}; \
             GRANT CREATE ON DATABASE \"{db}\" TO {dev}"
        ))
        .await
        .unwrap();
    let proxy = start_proxy(test_config()).await;
    // The database owner sets pgbranch up with its first change.
    let o = connect(&proxy.conn_str(&owner, &db)).await;
    o.simple_query("CREATE TABLE t (x int)").await.unwrap();
    let d = connect(&proxy.conn_str(&dev, &db)).await;
    let r = d.simple_query("CREATE BRANCH devwork").await;
    if let Err(e) = &r {
        panic!("a role with CREATE on the database could not create a branch: {e:?}");
    }
}

/// CREATE BRANCH re-creates every object of the parent as the creator and
/// skips ALTER ... OWNER TO, so a materialized view's query (written by
/// whichever role owns it on main) runs with the creator's privileges.
/// PostgreSQL itself runs a matview's query as its owner (REFRESH), never
/// as whoever touches it.
#[tokio::test]
async fn create_branch_runs_another_roles_matview_code_as_the_creator() {
    let db = cluster().fresh_db();
    let dev = role_name("mvdev", &db);
    let direct = connect(&cluster().direct(&db)).await;
    direct
        .batch_execute(&format!(
            "CREATE ROLE {dev} LOGIN; GRANT CREATE ON SCHEMA public TO {dev}"
        ))
        .await
        .unwrap();
    let d = connect(&direct_as(&dev, &db)).await;
    d.batch_execute(&format!(
        "CREATE FUNCTION pwn() RETURNS int LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF current_user <> '{dev}' THEN EXECUTE 'ALTER ROLE {dev} CREATEROLE'; END IF; \
           RETURN 1; \
         END $$; \
         CREATE MATERIALIZED VIEW stats AS SELECT pwn() AS n"
    ))
    .await
    .unwrap();
    let proxy = start_proxy(test_config()).await;
    let admin = connect(&proxy.conn_str("postgres", &db)).await;
    let r = admin.simple_query("CREATE BRANCH review").await;
    r.expect("CREATE BRANCH");
    let escalated: bool = direct
        .query_one(
            "SELECT rolcreaterole FROM pg_roles WHERE rolname = $1",
            &[&dev],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !escalated,
        "the developer's code ran as the superuser that created the branch"
    );
}

// ---------------------------------------------------------------------------
// 2. Correctness: branch sessions reaching main
// ---------------------------------------------------------------------------

/// enter_branch checks that the branch exists, then waits for its shared
/// lock; a DROP BRANCH that held the lock commits meanwhile, the function
/// returns no schemas, and session.rs builds the path from an empty
/// mapping: the session is "on" the branch with main's public on its path.
#[tokio::test]
async fn a_session_entering_a_branch_dropped_meanwhile_lands_on_main() {
    let (db, proxy, main, direct) = setup("CREATE TABLE t (x int)").await;
    main.simple_query("CREATE BRANCH gone").await.unwrap();
    main.batch_execute("BEGIN").await.unwrap();
    main.simple_query("DROP BRANCH gone").await.unwrap();
    let conn = on_branch(&proxy, &db, "gone");
    let joining = tokio::spawn(async move {
        tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .map(|(c, connection)| {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                c
            })
    });
    wait_for(
        "the joining session to wait for the branch lock",
        || async {
            direct
                .query_opt(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE '%enter_branch%' AND datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    main.batch_execute("COMMIT").await.unwrap();
    match joining.await.unwrap() {
        Err(e) => eprintln!("refused (expected): {e}"),
        Ok(c) => {
            let path: String = scalar(&c, "SHOW search_path").await;
            let _ = c.batch_execute("INSERT INTO t VALUES (1)").await;
            let on_main = scalar::<i64>(&direct, "SELECT count(*) FROM public.t").await;
            panic!(
                "a session on dropped branch \"gone\" was let in with search_path {path}; \
                 its INSERT put {on_main} row(s) into main's public.t"
            );
        }
    }
}

/// After SET pgbranch.branch, `SET search_path TO DEFAULT` (like RESET,
/// which is guarded) returns to the startup packet's path, which is main's;
/// it is neither rewritten nor followed by the restore.
#[tokio::test]
async fn set_search_path_to_default_after_a_switch_returns_to_main() {
    let (_db, _proxy, c, direct) = setup("CREATE TABLE t (x int)").await;
    c.simple_query("CREATE BRANCH sw").await.unwrap();
    direct
        .batch_execute("CREATE TABLE only_on_main (x int)")
        .await
        .unwrap();
    c.simple_query("SET pgbranch.branch = 'sw'").await.unwrap();
    c.batch_execute("SET search_path TO DEFAULT").await.unwrap();
    let path: String = scalar(&c, "SHOW search_path").await;
    let r = c.query("SELECT * FROM only_on_main", &[]).await;
    assert!(
        r.is_err(),
        "a session on branch sw reaches main's only_on_main (search_path {path})"
    );
}

/// A RESET prepared (extended protocol) before a switch is not marked as
/// one that resets (reset_statements is filled at Parse only while a
/// switched path exists), so executing it after the switch returns the
/// session to main's path.
#[tokio::test]
async fn a_reset_prepared_before_a_switch_returns_the_session_to_main() {
    let (_db, _proxy, c, direct) = setup("CREATE TABLE t (x int)").await;
    c.simple_query("CREATE BRANCH sw").await.unwrap();
    direct
        .batch_execute("CREATE TABLE only_on_main (x int)")
        .await
        .unwrap();
    let reset = c.prepare("RESET search_path").await.unwrap();
    c.simple_query("SET pgbranch.branch = 'sw'").await.unwrap();
    c.execute(&reset, &[]).await.unwrap();
    let path: String = scalar(&c, "SHOW search_path").await;
    let r = c.execute("INSERT INTO only_on_main VALUES (1)", &[]).await;
    let n = scalar::<i64>(&direct, "SELECT count(*) FROM public.only_on_main").await;
    assert!(
        r.is_err() && n == 0,
        "a session on branch sw wrote into main's only_on_main (search_path {path})"
    );
}

/// A branch session's ALTER ROLE / ALTER DATABASE ... SET search_path is
/// rewritten to the branch's schema, but role and database settings are
/// shared with main: main sessions of that role now run on the branch
/// (and lose public altogether once the branch is dropped).
#[tokio::test]
async fn alter_role_set_search_path_on_a_branch_moves_main_sessions_to_the_branch() {
    let (db, proxy, main, direct) = setup("CREATE TABLE t (x int)").await;
    let app = role_name("app", &db);
    direct
        .batch_execute(&format!("CREATE ROLE {app} LOGIN"))
        .await
        .unwrap();
    main.simple_query("CREATE BRANCH feature").await.unwrap();
    let b = connect(&on_branch(&proxy, &db, "feature")).await;
    b.batch_execute(&format!(
        "ALTER ROLE {app} IN DATABASE \"{db}\" SET search_path = \"$user\", public"
    ))
    .await
    .unwrap();
    let m = connect(&proxy.conn_str(&app, &db)).await;
    let path: String = scalar(&m, "SHOW search_path").await;
    assert!(
        !path.contains("public@feature"),
        "a main session of {app} runs on branch feature: search_path {path}"
    );
}

// ---------------------------------------------------------------------------
// 2. Correctness: merge
// ---------------------------------------------------------------------------

/// A branch's CREATE INDEX CONCURRENTLY is recorded, and merge_branch
/// replays it with EXECUTE inside a function, where PostgreSQL refuses it:
/// such a branch can never be merged.
#[tokio::test]
async fn a_branch_with_create_index_concurrently_cannot_be_merged() {
    let (db, proxy, main, direct) = setup("CREATE TABLE t (x int)").await;
    main.simple_query("CREATE BRANCH idx").await.unwrap();
    let b = connect(&on_branch(&proxy, &db, "idx")).await;
    b.simple_query("CREATE INDEX CONCURRENTLY t_x ON t (x)")
        .await
        .unwrap();
    // Recorded after the statement, by a Query of the proxy's own.
    wait_for("the index to be recorded on the branch", || async {
        scalar::<i64>(&direct,
            "SELECT count(*) FROM pgbranch.schema_history WHERE branch = 'idx' AND statement LIKE '%CONCURRENTLY%'",
        )
        .await
            == 1
    })
    .await;
    let r = main.simple_query("MERGE BRANCH idx").await;
    if let Err(e) = &r {
        panic!("MERGE BRANCH idx failed: {e:?}");
    }
    let n = scalar::<i64>(
        &direct,
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND indexname = 't_x'",
    )
    .await;
    assert_eq!(n, 1);
}

/// merge_branch replays with search_path = "$user", <target schemas>: the
/// shared schemas of the branch session's path (the `extensions` schema
/// docs/branches.md tells users to create) are gone, so any DDL that used
/// an extension's type or function fails to merge.
#[tokio::test]
async fn merge_loses_the_shared_extensions_schema_from_the_path() {
    let (_db, _proxy, main, direct, b) = extensions_db().await;
    let path: String = scalar(&b, "SHOW search_path").await;
    assert!(path.contains("extensions"), "{path}");
    b.batch_execute("CREATE TABLE more (e citext)")
        .await
        .unwrap();
    let r = main.simple_query("MERGE BRANCH ext").await;
    if let Err(e) = &r {
        panic!("MERGE BRANCH ext failed: {e:?}");
    }
    assert_eq!(
        scalar::<i64>(
            &direct,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'more'"
        )
        .await,
        1
    );
}

/// merge_branch reads the branch row (merged_version) before it queues
/// behind other changes of the target (ddl_begin's FOR UPDATE): a merge
/// that waited for a concurrent merge of the same branch replays the same
/// statements again.
#[tokio::test]
async fn two_concurrent_merges_of_one_branch_replay_it_twice() {
    let (db, proxy, a, direct) = setup("CREATE TABLE t (x int)").await;
    a.simple_query("CREATE BRANCH twice").await.unwrap();
    let br = connect(&on_branch(&proxy, &db, "twice")).await;
    br.batch_execute("COMMENT ON TABLE t IS 'from the branch'")
        .await
        .unwrap();
    let b = connect(&proxy.conn_str("postgres", &db)).await;
    let b_pid: i32 = scalar(&b, "SELECT pg_backend_pid()").await;
    a.batch_execute("BEGIN").await.unwrap();
    a.simple_query("MERGE BRANCH twice").await.unwrap();
    let second = tokio::spawn(async move { b.simple_query("MERGE BRANCH twice").await });
    wait_for("the second merge to wait", || async {
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
    let r = second.await.unwrap();
    r.expect("the second merge runs after the first, with nothing left to replay");
    let replays = scalar::<i64>(&direct,
        "SELECT count(*) FROM pgbranch.schema_history WHERE branch = 'main' AND merged_from = 'twice'",
    )
    .await;
    assert_eq!(
        replays, 1,
        "branch version 1 was replayed on main {replays} times"
    );
}

/// Merging a branch into a parent *branch* maps names with map_qualified,
/// a textual regexp that also rewrites data: string literals of the
/// replayed statements that spell `public.x` change on the parent.
#[tokio::test]
async fn merging_into_a_parent_branch_rewrites_string_literals() {
    let (db, proxy, main, direct) = setup("CREATE TABLE t (x int)").await;
    main.simple_query("CREATE BRANCH parent").await.unwrap();
    main.simple_query("CREATE BRANCH child FROM parent")
        .await
        .unwrap();
    let c = connect(&on_branch(&proxy, &db, "child")).await;
    c.batch_execute("COMMENT ON TABLE t IS 'replaces public.old_t'")
        .await
        .unwrap();
    let on_child: Option<String> = scalar(
        &direct,
        "SELECT obj_description('\"public@child\".t'::regclass)",
    )
    .await;
    assert_eq!(on_child.as_deref(), Some("replaces public.old_t"));
    main.simple_query("MERGE BRANCH child").await.unwrap();
    let on_parent: Option<String> = scalar(
        &direct,
        "SELECT obj_description('\"public@parent\".t'::regclass)",
    )
    .await;
    assert_eq!(on_parent.as_deref(), Some("replaces public.old_t"));
}

/// The first branch session of a (database, role) puts a path built from
/// the server default in the startup packet and only then sets the
/// configured one (ALTER DATABASE ... SET search_path) at session level:
/// RESET / DISCARD ALL (what poolers send) drop the shared `extensions`
/// schema from that session's path.
#[tokio::test]
async fn reset_on_the_first_branch_session_loses_the_configured_shared_schemas() {
    let (_db, _proxy, _main, _direct, b) = extensions_db().await;
    let before: String = scalar(&b, "SHOW search_path").await;
    assert_eq!(before, "\"$user\", \"public@ext\", \"extensions\"");
    b.batch_execute("RESET search_path").await.unwrap();
    let after: String = scalar(&b, "SHOW search_path").await;
    assert_eq!(after, before, "RESET changed the branch session's path");
}

/// A merge holds main's branch row FOR UPDATE (ddl_begin) and, at its end,
/// updates the merged branch's row (finish_merge); a DDL on that branch
/// updates the branch's row (ddl_begin, record_ddl) and, through the
/// self-referencing foreign key branches.parent, then needs main's row
/// FOR KEY SHARE. A branch DDL that starts while a merge of that branch is
/// replaying therefore deadlocks with it; and when the branch DDL does not
/// need main's row, finish_merge's `merged_version = b.version` (the
/// row's latest version, not the one whose statements were replayed)
/// marks the new change as merged without replaying it. Either way, merge
/// and branch DDL are not serialized.
#[tokio::test]
async fn a_branch_ddl_during_a_merge_of_that_branch_deadlocks() {
    let (db, proxy, main, direct) = setup("CREATE TABLE t (x int)").await;
    main.simple_query("CREATE BRANCH feature").await.unwrap();
    let b = connect(&on_branch(&proxy, &db, "feature")).await;
    b.batch_execute("ALTER TABLE t ADD COLUMN a int")
        .await
        .unwrap();
    let b_pid: i32 = scalar(&b, "SELECT pg_backend_pid()").await;
    // A reader on main holds the table, so the merge waits mid-replay.
    let reader = connect(&cluster().direct(&db)).await;
    reader
        .batch_execute("BEGIN; LOCK TABLE public.t IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let merger = connect(&proxy.conn_str("postgres", &db)).await;
    let merger_pid: i32 = scalar(&merger, "SELECT pg_backend_pid()").await;
    let merge = tokio::spawn(async move {
        let r = merger.simple_query("MERGE BRANCH feature").await;
        (merger, r)
    });
    let waiting = |pid: i32| {
        let direct = &direct;
        async move {
            direct
                .query_opt(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                    &[&pid],
                )
                .await
                .unwrap()
                .is_some()
        }
    };
    wait_for("the merge to wait for main's table", || waiting(merger_pid)).await;
    // Meanwhile, one more change on the branch, in a transaction block.
    let change = tokio::spawn(async move {
        let r = b
            .batch_execute("BEGIN; ALTER TABLE t ADD COLUMN b int; COMMIT")
            .await;
        (b, r)
    });
    // It queues behind the merge (which holds the branch's row).
    wait_for("the branch change to wait for the merge", || waiting(b_pid)).await;
    assert!(!change.is_finished());
    reader.batch_execute("COMMIT").await.unwrap();
    let (_merger, merged) = merge.await.unwrap();
    let (_b, changed) = change.await.unwrap();
    assert!(
        merged.is_ok() && changed.is_ok(),
        "merge: {merged:?}\nbranch change: {changed:?}"
    );
    // A later merge brings what is new on the branch.
    main.simple_query("MERGE BRANCH feature").await.unwrap();
    let cols: Vec<String> = column(
        &direct,
        "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 't' ORDER BY ordinal_position",
    )
    .await;
    assert_eq!(
        cols,
        ["x", "a", "b"],
        "the branch's second change was never merged"
    );
}
