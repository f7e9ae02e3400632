-- pgbranch metadata, migration 1: the DDL history.
--
-- Run by the migration runner (history/migrate.sql) inside one transaction,
-- under an advisory lock, as the role that initialises pgbranch; that role
-- owns everything here. Other roles record history through the SECURITY
-- DEFINER functions below and read it only when granted SELECT.
--
-- Functions run with search_path = pg_catalog, pg_temp and qualify every
-- pgbranch object, so a caller's search_path cannot redirect them. pg_temp
-- is listed last on purpose: left out, it is searched *first* for tables,
-- views and types, and a caller's temporary view named pg_depend (or
-- domain named text) would run the caller's code as the owner inside
-- the SECURITY DEFINER functions.

CREATE TABLE pgbranch.branches (
    name        text PRIMARY KEY,
    -- Last schema version recorded on this branch (0 = baseline).
    version     bigint NOT NULL DEFAULT 0,
    -- pgbranch.schema_fingerprint() after that version.
    fingerprint text,
    -- pgbranch.catalog_stamp() when the fingerprint was last confirmed.
    catalog_stamp text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgbranch.schema_history (
    -- Global order of recording.
    id               bigserial PRIMARY KEY,
    branch           text NOT NULL REFERENCES pgbranch.branches (name),
    -- Per-branch, gapless, strictly increasing.
    version          bigint NOT NULL,
    -- The statement exactly as the client sent it.
    statement        text NOT NULL,
    command_tag      text NOT NULL,
    object_type      text NOT NULL,
    object_identity  text NOT NULL,
    -- create, alter, drop, rename, comment, grant, revoke; baseline and
    -- drift for the rows pgbranch writes itself.
    action           text NOT NULL,
    -- The logged-in role (session_user) and the SET ROLE in effect.
    role             name NOT NULL,
    set_role         name,
    application_name text NOT NULL DEFAULT '',
    -- The client's address as the proxy saw it.
    client_addr      text,
    backend_pid      integer NOT NULL,
    transaction_id   bigint NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- pgbranch.schema_fingerprint() after this change.
    fingerprint      text NOT NULL,
    UNIQUE (branch, version)
);

-- Definition of every object a version changed: NULL = dropped.
CREATE TABLE pgbranch.object_versions (
    branch      text NOT NULL,
    version     bigint NOT NULL,
    object_type text NOT NULL,
    identity    text NOT NULL,
    definition  text,
    PRIMARY KEY (branch, object_type, identity, version),
    FOREIGN KEY (branch, version) REFERENCES pgbranch.schema_history (branch, version)
);
CREATE INDEX object_versions_version ON pgbranch.object_versions (branch, version);

-- The recorded definition of every live object (the last version of each).
CREATE TABLE pgbranch.object_state (
    branch      text NOT NULL,
    object_type text NOT NULL,
    identity    text NOT NULL,
    definition  text NOT NULL,
    version     bigint NOT NULL,
    PRIMARY KEY (branch, object_type, identity)
);

-- Fingerprints: the same digest over the live schema and over the
-- recorded state, so that equal fingerprints mean equal definitions.
CREATE OR REPLACE FUNCTION pgbranch.schema_fingerprint() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT md5(coalesce(string_agg(
               o.object_type || E'\x1f' || o.identity || E'\x1f' || md5(coalesce(o.definition, '')),
               E'\x1e' ORDER BY o.object_type COLLATE "C", o.identity COLLATE "C"), ''))
    FROM pgbranch.schema_objects() o
$fn$;

CREATE FUNCTION pgbranch.state_fingerprint(p_branch text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT md5(coalesce(string_agg(
               s.object_type || E'\x1f' || s.identity || E'\x1f' || md5(s.definition),
               E'\x1e' ORDER BY s.object_type COLLATE "C", s.identity COLLATE "C"), ''))
    FROM pgbranch.object_state s
    WHERE s.branch = p_branch
$fn$;

-- A cheap stamp of the catalogs that hold schema objects: row counts and
-- the sum of row xmins. Any DDL inserts, updates or deletes a row there,
-- so an unchanged stamp means an unchanged schema, at a fraction of the
-- cost of schema_fingerprint() (about 5 ms against 23 ms at 200 tables).
-- The reverse does not hold (another session's temporary table, a frozen
-- catalog row change the stamp); then the fingerprint decides.
CREATE FUNCTION pgbranch.catalog_stamp() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN md5(concat_ws(',',
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_class),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_attribute),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_attrdef),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_constraint),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_index),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_proc),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_type),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_namespace),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_trigger),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_policy),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_rewrite),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_description),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_extension),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_sequence),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_enum),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_inherits),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_statistic_ext),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_foreign_table),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_range),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_aggregate),
        (SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM pg_default_acl)));
END
$fn$;

-- Writes a new version: the history row and the objects whose definition
-- differs from the recorded state. Called with the branch row locked.
CREATE FUNCTION pgbranch.write_version(
    p_branch text, p_version bigint, p_statement text, p_tag text,
    p_object_type text, p_identity text, p_action text, p_client_addr text
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_identity text := p_identity;
    v_count    bigint;
    v_one      text;
    v_fp       text;
BEGIN
    INSERT INTO pgbranch.schema_history (
        branch, version, statement, command_tag, object_type, object_identity,
        action, role, set_role, application_name, client_addr, backend_pid,
        transaction_id, fingerprint)
    VALUES (
        p_branch, p_version, p_statement, p_tag, p_object_type, p_identity,
        p_action, session_user, nullif(current_setting('role'), 'none'),
        current_setting('application_name'), p_client_addr, pg_backend_pid(),
        txid_current(), '');

    INSERT INTO pgbranch.object_versions (branch, version, object_type, identity, definition)
    SELECT p_branch, p_version,
           coalesce(l.object_type, s.object_type), coalesce(l.identity, s.identity),
           l.definition
    FROM pgbranch.schema_objects() l
    FULL JOIN (SELECT * FROM pgbranch.object_state WHERE branch = p_branch) s
           ON s.object_type = l.object_type AND s.identity = l.identity
    WHERE l.definition IS DISTINCT FROM s.definition;

    DELETE FROM pgbranch.object_state s
    USING pgbranch.object_versions o
    WHERE o.branch = p_branch AND o.version = p_version
      AND s.branch = p_branch AND s.object_type = o.object_type AND s.identity = o.identity;
    INSERT INTO pgbranch.object_state (branch, object_type, identity, definition, version)
    SELECT branch, object_type, identity, definition, version
    FROM pgbranch.object_versions
    WHERE branch = p_branch AND version = p_version AND definition IS NOT NULL;

    v_fp := pgbranch.state_fingerprint(p_branch);

    -- The statement named the object as written; when exactly one object
    -- of that type changed, record PostgreSQL's canonical identity instead.
    SELECT count(*), min(identity) INTO v_count, v_one
    FROM pgbranch.object_versions
    WHERE branch = p_branch AND version = p_version
      -- pg_identify_object calls a domain a type.
      AND object_type = CASE p_object_type WHEN 'domain' THEN 'type' ELSE p_object_type END;
    IF v_count = 1 AND p_action NOT IN ('baseline', 'drift') THEN
        v_identity := v_one;
    END IF;

    UPDATE pgbranch.schema_history
    SET fingerprint = v_fp, object_identity = v_identity
    WHERE branch = p_branch AND version = p_version;
    UPDATE pgbranch.branches
    SET fingerprint = v_fp, catalog_stamp = pgbranch.catalog_stamp()
    WHERE name = p_branch;
END
$fn$;

-- Takes the branch's DDL lock before a change runs (so that transactions
-- changing the schema queue here rather than deadlock on it later), and
-- records changes made around the proxy since the last version as a
-- 'drift' version, so they are not attributed to the coming statement.
CREATE FUNCTION pgbranch.ddl_begin(p_branch text, p_client_addr text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_version bigint;
    v_fp      text;
    v_stamp   text;
    v_now     text;
BEGIN
    SELECT version, fingerprint, catalog_stamp INTO v_version, v_fp, v_stamp
    FROM pgbranch.branches WHERE name = p_branch FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('pgbranch: branch "%s" does not exist', p_branch);
    END IF;
    v_now := pgbranch.catalog_stamp();
    IF v_now IS NOT DISTINCT FROM v_stamp THEN
        RETURN;
    END IF;
    IF v_fp IS NOT DISTINCT FROM pgbranch.schema_fingerprint() THEN
        UPDATE pgbranch.branches SET catalog_stamp = v_now WHERE name = p_branch;
    ELSE
        UPDATE pgbranch.branches SET version = version + 1 WHERE name = p_branch
        RETURNING version INTO v_version;
        PERFORM pgbranch.write_version(p_branch, v_version,
            '-- schema changes made without pgbranch', 'DRIFT', '', '',
            'drift', p_client_addr);
    END IF;
END
$fn$;

-- Records one DDL statement that has just run in the caller's
-- transaction: the row commits or rolls back with the change.
-- p_rows: row count for statements whose tag carries one (CREATE TABLE AS).
CREATE FUNCTION pgbranch.record_ddl(
    p_branch text, p_statement text, p_tag text, p_object_type text,
    p_identity text, p_action text, p_client_addr text, p_rows bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_version bigint;
BEGIN
    UPDATE pgbranch.branches SET version = version + 1 WHERE name = p_branch
    RETURNING version INTO v_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('pgbranch: branch "%s" does not exist', p_branch);
    END IF;
    PERFORM pgbranch.write_version(p_branch, v_version, p_statement,
        CASE WHEN p_rows IS NULL THEN p_tag ELSE p_tag || ' ' || p_rows END,
        p_object_type, p_identity, p_action, p_client_addr);
    RETURN v_version;
END
$fn$;

-- Version 0: the objects that existed when the database was put under
-- pgbranch.
CREATE FUNCTION pgbranch.baseline(p_branch text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    INSERT INTO pgbranch.branches (name) VALUES (p_branch);
    PERFORM pgbranch.write_version(p_branch, 0, '-- baseline', 'BASELINE',
        '', '', 'baseline', NULL);
END
$fn$;

-- Objects whose live definition differs from the recorded one.
CREATE FUNCTION pgbranch.drift(p_branch text DEFAULT 'main')
RETURNS TABLE (object_type text, identity text, change text,
               recorded_definition text, live_definition text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT coalesce(l.object_type, s.object_type), coalesce(l.identity, s.identity),
           CASE WHEN s.identity IS NULL THEN 'added'
                WHEN l.identity IS NULL THEN 'dropped'
                ELSE 'changed' END,
           s.definition, l.definition
    FROM pgbranch.schema_objects() l
    FULL JOIN (SELECT * FROM pgbranch.object_state WHERE branch = p_branch) s
           ON s.object_type = l.object_type AND s.identity = l.identity
    WHERE l.definition IS DISTINCT FROM s.definition
    ORDER BY 1, 2
$fn$;

-- The definition of an object at a version (NULL: absent then).
CREATE FUNCTION pgbranch.definition_at(p_branch text, p_identity text, p_version bigint)
RETURNS TABLE (object_type text, identity text, version bigint, definition text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT DISTINCT ON (o.object_type) o.object_type, o.identity, o.version, o.definition
    FROM pgbranch.object_versions o
    WHERE o.branch = p_branch AND o.identity = p_identity AND o.version <= p_version
    ORDER BY o.object_type, o.version DESC
$fn$;

REVOKE ALL ON ALL TABLES IN SCHEMA pgbranch FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgbranch FROM PUBLIC;
GRANT USAGE ON SCHEMA pgbranch TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgbranch.ddl_begin(text, text),
    pgbranch.record_ddl(text, text, text, text, text, text, text, bigint),
    pgbranch.schema_objects(name[], name[]), pgbranch.schema_fingerprint(), pgbranch.catalog_stamp(),
    pgbranch.drift(text), pgbranch.definition_at(text, text, bigint),
    pgbranch.state_fingerprint(text)
    TO PUBLIC;

SELECT pgbranch.baseline('main');

-- Every role checks the metadata version before recording.
GRANT SELECT ON pgbranch.migrations TO PUBLIC;
