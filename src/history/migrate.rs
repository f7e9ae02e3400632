//! The metadata schema and its numbered migrations.
//!
//! Everything pgbranch keeps lives in the `pgbranch` schema of each served
//! database. [`migrate_sql`] builds one `DO` block that brings it to the
//! latest version: it returns at once when the schema is current (the
//! common case, one catalog lookup), and otherwise applies each missing
//! migration exactly once under an advisory lock, so several sessions or
//! proxies starting together are safe. The block runs in-band as the
//! connected role, inside that role's transaction (so a DDL statement and
//! the schema that records it commit together), or from `pgbranch init`.
//! A role that may not create the schema gets an error saying how to fix
//! it, and the DDL that needed it does not run.

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`: SQL files run in order.
/// Migrations 2 and 3 run objects.sql again: 2 gave `schema_objects`
/// schema filters, 3 leaves out the system-versioning triggers
/// (objects.sql is written to be re-run). create_branch.sql is re-run the
/// same way: 3 teaches CREATE BRANCH to read history (AS OF). So are
/// time_travel.sql (4 brings its functions up to date and remakes the
/// versioned tables' triggers) and merge_branch.sql (4 adds the steps
/// before DROP and ALTER TABLE of versioned tables).
const MIGRATIONS: &[&[&str]] = &[
    &[
        include_str!("sql/objects.sql"),
        include_str!("sql/0001_history.sql"),
    ],
    &[
        include_str!("sql/objects.sql"),
        include_str!("sql/create_branch.sql"),
        include_str!("sql/merge_branch.sql"),
        include_str!("sql/0002_branches.sql"),
    ],
    &[
        include_str!("sql/objects.sql"),
        include_str!("sql/0003_time_travel.sql"),
        include_str!("sql/time_travel.sql"),
        include_str!("sql/create_branch.sql"),
    ],
    &[
        include_str!("sql/time_travel.sql"),
        include_str!("sql/0004_versioning_writes.sql"),
        include_str!("sql/merge_branch.sql"),
    ],
];

/// Advisory lock key held while migrating ("pgbr").
const LOCK_KEY: i64 = 0x7067_6272;

/// The latest metadata version this build knows.
pub fn latest_version() -> usize {
    MIGRATIONS.len()
}

/// The dollar-quote tag for the `k`-th distinct migration file.
fn tag(k: usize) -> String {
    format!("$pgbranch_f{k}$")
}

/// A `DO` block that creates or upgrades the `pgbranch` schema (built
/// once per process).
pub fn migrate_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(build_migrate_sql)
}

/// The distinct files of [`MIGRATIONS`], in first-use order (several
/// migrations run the same re-runnable file).
fn distinct_files() -> Vec<&'static str> {
    let mut files: Vec<&'static str> = Vec::new();
    for sql in MIGRATIONS.iter().flat_map(|m| m.iter()) {
        if !files.contains(sql) {
            files.push(sql);
        }
    }
    files
}

fn build_migrate_sql() -> String {
    let latest = latest_version();
    let files = distinct_files();
    // Each file's text stands once, in a block entered only to migrate
    // (its variables are not even assigned when the schema is current):
    // the block goes out before every recorded change.
    let mut steps = String::from("    DECLARE\n");
    for (k, sql) in files.iter().enumerate() {
        let t = tag(k);
        steps.push_str(&format!("        f{k} text := {t}{sql}{t};\n"));
    }
    steps.push_str("    BEGIN\n");
    for (i, migration) in MIGRATIONS.iter().enumerate() {
        let n = i + 1;
        steps.push_str(&format!("    IF v < {n} THEN\n"));
        for sql in *migration {
            let k = files
                .iter()
                .position(|f| f == sql)
                .expect("every file is listed");
            steps.push_str(&format!("        EXECUTE f{k};\n"));
        }
        steps.push_str(&format!(
            "        INSERT INTO pgbranch.migrations (version) VALUES ({n});\n    END IF;\n"
        ));
    }
    steps.push_str("    END;\n");
    format!(
        r#"DO $pgbranch_migrate$
DECLARE
    v integer := 0;
    has_schema boolean;
    has_table boolean;
    owner_name name;
    untrusted boolean;
BEGIN
    -- Existence is read with plain queries, not to_regclass(): a name
    -- lookup that fails leaves a negative catalog-cache entry that waiting
    -- for the advisory lock does not clear, so a session that queued
    -- behind the one creating the schema would still not see it.
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'pgbranch' AND c.relname = 'migrations')
    INTO has_table;
    -- Nothing in a pgbranch schema runs unless its owner is trusted: a
    -- superuser, the database owner, or the current role itself. Any other
    -- owner could have put code there (a view, a function without SECURITY
    -- DEFINER) that would run with the privileges of whoever changes the
    -- schema through the proxy.
    SELECT r.rolname, NOT (r.rolsuper
                OR r.oid = (SELECT datdba FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
                OR r.rolname = current_user)
    INTO owner_name, untrusted
    FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
    WHERE n.nspname = 'pgbranch';
    IF untrusted THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = pg_catalog.format('pgbranch will not use schema "pgbranch" in database %I: its owner %I is neither a superuser nor the database owner', pg_catalog.current_database(), owner_name),
            HINT = 'Code in that schema would run with your privileges. Drop it, or have a superuser ALTER SCHEMA pgbranch OWNER TO the database owner after checking its contents.';
    END IF;
    IF has_table THEN
        EXECUTE 'SELECT coalesce(max(version), 0) FROM pgbranch.migrations' INTO v;
        IF v >= {latest} THEN
            RETURN;
        END IF;
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock({LOCK_KEY});
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgbranch'),
           EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'pgbranch' AND c.relname = 'migrations')
    INTO has_schema, has_table;
    IF NOT has_table THEN
        IF has_schema THEN
            RAISE EXCEPTION USING ERRCODE = '42P06',
                MESSAGE = pg_catalog.format('a schema "pgbranch" already exists in database %I but pgbranch did not create it', pg_catalog.current_database()),
                HINT = 'Rename or drop that schema; pgbranch keeps its history there.';
        END IF;
        -- Only a role that every later caller may trust sets it up (see
        -- the owner check above).
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                       WHERE r.rolname = current_user
                         AND (r.rolsuper OR r.oid = (SELECT datdba FROM pg_catalog.pg_database
                                                     WHERE datname = pg_catalog.current_database()))) THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = pg_catalog.format('pgbranch cannot record this schema change: DDL history is not set up in database %I, and role %I may not set it up (only the database owner or a superuser may)', pg_catalog.current_database(), current_user),
                HINT = 'Run "pgbranch init --database-url <url>" once as the database owner (or change the schema once through the proxy as that owner). pgbranch refuses DDL it cannot record.';
        END IF;
        CREATE SCHEMA pgbranch;
        CREATE TABLE pgbranch.migrations (
            version    integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now(),
            applied_by name NOT NULL DEFAULT session_user
        );
        GRANT USAGE ON SCHEMA pgbranch TO PUBLIC;
        GRANT SELECT ON pgbranch.migrations TO PUBLIC;
    ELSE
        EXECUTE 'SELECT coalesce(max(version), 0) FROM pgbranch.migrations' INTO v;
        IF v >= {latest} THEN
            RETURN;
        END IF;
        IF NOT pg_catalog.pg_has_role((SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'pgbranch'), 'USAGE') THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = pg_catalog.format('pgbranch metadata in database %I is at version %s and this pgbranch needs version {latest}; role %I may not upgrade it', pg_catalog.current_database(), v, current_user),
                HINT = 'Run "pgbranch init --database-url <url>" as the owner of schema pgbranch.';
        END IF;
    END IF;
{steps}END
$pgbranch_migrate$"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_texts_do_not_contain_their_quote_tags() {
        for (k, sql) in distinct_files().iter().enumerate() {
            assert!(!sql.contains(&tag(k)));
            assert!(!sql.contains("$pgbranch_migrate$"));
        }
    }

    #[test]
    fn each_file_stands_once_in_the_block() {
        let sql = migrate_sql();
        for (k, file) in distinct_files().iter().enumerate() {
            assert_eq!(sql.matches(file).count(), 1, "file {k}");
        }
        let total: usize = MIGRATIONS.iter().flat_map(|m| m.iter()).count();
        assert!(distinct_files().len() < total);
    }

    #[test]
    fn every_migration_is_applied_once_in_order() {
        let sql = migrate_sql();
        for n in 1..=latest_version() {
            assert_eq!(
                sql.matches(&format!("VALUES ({n});")).count(),
                1,
                "migration {n}"
            );
        }
    }
}
