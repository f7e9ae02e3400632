-- Migration 4: history is written without capturing old rows on UPDATE;
-- AS OF on views.
-- time_travel.sql (run just before) redefined the functions; here every
-- versioned table gets its trigger functions regenerated and its triggers
-- made again: the UPDATE trigger no longer captures an OLD TABLE, and the
-- row-level rekey trigger writes the tombstones of keys an UPDATE changes.
-- Views that read versioned tables get AS OF functions of their own
-- (versioning_views), listed in pgbranch.versioned_views.
-- Making triggers needs the table's owner: a role that is not a member of
-- every such owner cannot upgrade (nothing is half-done).
CREATE TABLE pgbranch.versioned_views (
    relid oid PRIMARY KEY,
    -- The as_of function's body, as last generated.
    body  text NOT NULL
);
GRANT SELECT ON pgbranch.versioned_views TO PUBLIC;
-- Owned like the rest of schema pgbranch (the functions that write it,
-- made by migration 3, keep their owner when a superuser upgrades).
DO $owner$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE pgbranch.versioned_views OWNER TO %I',
        (SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace WHERE nspname = 'pgbranch'));
END
$owner$;

DO $m4$
DECLARE
    v pgbranch.versioned_tables;
BEGIN
    FOR v IN SELECT * FROM pgbranch.versioned_tables WHERE relid IS NOT NULL ORDER BY id LOOP
        IF NOT pg_catalog.pg_has_role((SELECT relowner FROM pg_catalog.pg_class WHERE oid = v.relid), 'USAGE') THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = pg_catalog.format('pgbranch metadata needs an upgrade that remakes the triggers of system-versioned table %s, and role %I does not own it', v.relid::regclass, current_user),
                HINT = 'Run "pgbranch init --database-url <url>" once as a superuser (or as a role that owns every system-versioned table).';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                       WHERE conrelid = v.relid AND contype = 'p') THEN
            -- Its key was dropped without pgbranch: it keeps its old
            -- triggers (which still work) until it gets one again.
            RAISE WARNING 'system-versioned table % has no primary key: its history triggers were not upgraded', v.relid::regclass;
            CONTINUE;
        END IF;
        PERFORM pgbranch.versioning_generate(v.id);
        PERFORM pgbranch.versioning_triggers(v.relid::regclass);
    END LOOP;
    PERFORM pgbranch.versioning_views();
END
$m4$;
