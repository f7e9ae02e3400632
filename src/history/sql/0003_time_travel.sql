-- Migration 3: row history for system-versioned tables (time travel).
--
-- A versioned table keeps its rows untouched; every version of every row
-- lives in a history table of schema pgbranch_history, append-only:
-- pgbranch_valid_from (transaction time), pgbranch_seq (order within a
-- transaction), pgbranch_deleted (a tombstone: the key's row was
-- deleted), then the table's columns. A version is valid from its
-- pgbranch_valid_from until the next version of its key begins.
-- Statement-level AFTER triggers with transition tables write the history
-- (one call per statement, whatever the number of rows; no history row
-- is ever updated, so writing leaves no dead tuples). AS OF queries go
-- through per-table SQL functions the planner inlines, so a primary-key
-- lookup uses the history's (key, pgbranch_valid_from, pgbranch_seq)
-- index:
--
--   pgbranch_history.as_of(NULL::t, at, session)      -> SETOF t
--   pgbranch_history.versions(NULL::t, from, to, incl) -> t's columns,
--                                                         pgbranch_valid_from,
--                                                         pgbranch_valid_to
--
-- PostgreSQL picks the overload by the row type of `NULL::t`, so the
-- table's name is resolved by its own search_path. Tables without
-- versioning reach polymorphic fallbacks that explain the error (or, for
-- as-of sessions, read the live table).
--
-- Who may do what: the table's owner enables and disables versioning
-- (the triggers are created as that role); the history tables and the
-- functions writing them belong to the owner of schema pgbranch, so
-- writing history needs no privilege on it, and reading it needs the
-- SELECT privilege on the table (mirrored onto the history table).

CREATE SCHEMA pgbranch_history;
GRANT USAGE ON SCHEMA pgbranch_history TO PUBLIC;
-- Orders the versions a transaction writes (they share its time).
CREATE SEQUENCE pgbranch_history.version_seq;

CREATE TABLE pgbranch.versioned_tables (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL once the table is dropped (its history stays).
    relid        oid,
    -- The table's name as of the last change pgbranch saw.
    table_name   text NOT NULL,
    history      name NOT NULL UNIQUE,
    -- History columns of the primary key.
    key_columns  name[] NOT NULL,
    enabled_at   timestamptz NOT NULL,
    -- AS OF before this is refused: history is complete from here on.
    history_from timestamptz NOT NULL,
    dropped_at   timestamptz,
    -- Columns, types and privileges the generated objects were made for.
    signature    text NOT NULL
);
CREATE UNIQUE INDEX versioned_tables_relid ON pgbranch.versioned_tables (relid)
    WHERE relid IS NOT NULL;

-- Which history column holds which table column (attnum is stable across
-- renames).
CREATE TABLE pgbranch.versioned_columns (
    table_id bigint NOT NULL REFERENCES pgbranch.versioned_tables ON DELETE CASCADE,
    attnum   smallint NOT NULL,
    name     name NOT NULL,
    PRIMARY KEY (table_id, attnum)
);
GRANT SELECT ON pgbranch.versioned_tables, pgbranch.versioned_columns TO PUBLIC;

-- What the generated objects depend on: columns (number, name, type,
-- collation), the primary key, and the SELECT grants.
CREATE FUNCTION pgbranch.versioning_signature(p_relid oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT coalesce((SELECT string_agg(format('%s:%s:%s:%s', a.attnum, a.attname,
                                             format_type(a.atttypid, a.atttypmod), a.attcollation),
                                      ',' ORDER BY a.attnum)
                     FROM pg_attribute a
                     WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped), '')
        || '|' || coalesce((SELECT array_to_string(k.conkey, ',') FROM pg_constraint k
                            WHERE k.conrelid = p_relid AND k.contype = 'p'), '')
        || '|' || coalesce((SELECT c.relacl::text || c.relowner::text || c.relrowsecurity::text
                            FROM pg_class c WHERE c.oid = p_relid), '')
$fn$;

-- Refuses a time outside the table's history.
CREATE FUNCTION pgbranch.check_as_of(p_id bigint, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v pgbranch.versioned_tables;
BEGIN
    SELECT * INTO v FROM pgbranch.versioned_tables WHERE id = p_id;
    IF p_at IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = format('AS OF time for table %s is NULL', v.table_name);
    END IF;
    IF p_at < v.history_from THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('table %s has no history before %s (asked for %s)',
                             v.table_name, v.history_from, p_at),
            HINT = 'Versioning was enabled (or history pruned up to) then; ask for a later time.';
    END IF;
    RETURN true;
END
$fn$;

CREATE FUNCTION pgbranch.check_range(p_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_from IS NULL OR p_to IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = format('FOR SYSTEM_TIME bounds for table %s must not be NULL',
                             (SELECT table_name FROM pgbranch.versioned_tables WHERE id = p_id));
    END IF;
    IF p_from <> '-infinity' THEN
        PERFORM pgbranch.check_as_of(p_id, p_from);
    END IF;
    RETURN true;
END
$fn$;

-- Tables without versioning: explicit AS OF is an error; as-of sessions
-- read them live.
CREATE FUNCTION pgbranch_history.as_of(p_row anyelement, p_at timestamptz, p_session boolean)
RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_rel regclass := (SELECT t.typrelid::regclass FROM pg_type t
                       WHERE t.oid = pg_typeof(p_row) AND t.typrelid <> 0);
BEGIN
    IF v_rel IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42809',
            MESSAGE = format('AS OF needs a table, not type %s', pg_typeof(p_row));
    END IF;
    IF p_session THEN
        RETURN QUERY EXECUTE format('SELECT * FROM %s', v_rel);
        RETURN;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '55000',
        MESSAGE = format('table %s has no history: system versioning is not enabled for it', v_rel),
        HINT = format('ALTER TABLE %s ADD SYSTEM VERSIONING keeps its history from then on.', v_rel);
END
$fn$;

CREATE FUNCTION pgbranch_history.versions(p_row anyelement, p_from timestamptz,
                                          p_to timestamptz, p_inclusive boolean)
RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '55000',
        MESSAGE = format('table %s has no history: system versioning is not enabled for it',
                         (SELECT t.typrelid::regclass FROM pg_type t WHERE t.oid = pg_typeof(p_row))),
        HINT = 'ALTER TABLE ... ADD SYSTEM VERSIONING keeps its history from then on.';
END
$fn$;

-- (Re)creates the history table's missing columns, the trigger functions
-- and the AS OF functions of versioned table p_id after its columns,
-- key or grants changed. Runs as the owner of schema pgbranch.
CREATE FUNCTION pgbranch.versioning_generate(p_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning AS $fn$
DECLARE
    v        pgbranch.versioned_tables;
    v_h      text;
    v_cols   text;     -- history column list
    v_src    text;     -- n.<table column> list
    v_keys   text;     -- h.k = o.k AND ...
    v_nkeys  text;     -- h.k = n.k AND ...
    v_nokeys text;     -- n.k = o.k AND ...
    v_wkeys  text;     -- w.k = h.k AND ...
    v_hkeys  text;     -- h.k, ...
    v_tomb   text;     -- o.k or NULL per column
    v_typed  text;     -- name type, ... for RETURNS TABLE
    v_rel    text;
    r        record;
    v_grantee text;
    v_added  text[] := '{}';
BEGIN
    SELECT * INTO v FROM pgbranch.versioned_tables WHERE id = p_id FOR UPDATE;
    v_rel := v.relid::regclass::text;
    v_h := format('pgbranch_history.%I', v.history);

    -- Columns: renamed, dropped, added, retyped (history follows today's
    -- columns; a column that did not exist yet reads NULL).
    FOR r IN
        SELECT c.attnum, a.attnum AS new_attnum, c.name AS old_name, a.attname AS new_name,
               format_type(a.atttypid, a.atttypmod) AS type_name, a.attcollation, a.atttypid
        FROM (SELECT * FROM pgbranch.versioned_columns WHERE table_id = p_id) c
        FULL JOIN (SELECT * FROM pg_attribute
                   WHERE attrelid = v.relid AND attnum > 0 AND NOT attisdropped) a
               ON a.attnum = c.attnum
        ORDER BY coalesce(c.attnum, a.attnum)
    LOOP
        IF r.new_name IS NULL THEN
            EXECUTE format('ALTER TABLE %s DROP COLUMN %I', v_h, r.old_name);
            DELETE FROM pgbranch.versioned_columns WHERE table_id = p_id AND attnum = r.attnum;
        ELSIF r.old_name IS NULL THEN
            EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s%s', v_h, r.new_name, r.type_name,
                           CASE WHEN r.attcollation <> 0
                                     AND r.attcollation <> (SELECT typcollation FROM pg_type WHERE oid = r.atttypid)
                                THEN ' COLLATE ' || r.attcollation::regcollation::text ELSE '' END);
            INSERT INTO pgbranch.versioned_columns (table_id, attnum, name)
            VALUES (p_id, r.new_attnum, r.new_name);
            v_added := v_added || r.new_name;
        ELSE
            IF r.old_name <> r.new_name THEN
                EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', v_h, r.old_name, r.new_name);
                UPDATE pgbranch.versioned_columns SET name = r.new_name
                WHERE table_id = p_id AND attnum = r.attnum;
            END IF;
            IF (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                WHERE attrelid = (v_h)::regclass AND attname = r.new_name) <> r.type_name THEN
                EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s USING %I::%s',
                               v_h, r.new_name, r.type_name, r.new_name, r.type_name);
            END IF;
        END IF;
    END LOOP;

    SELECT string_agg(format('%I', c.name), ', ' ORDER BY a.attnum),
           string_agg(format('n.%I', a.attname), ', ' ORDER BY a.attnum),
           string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
    INTO v_cols, v_src, v_typed
    FROM pg_attribute a
    JOIN pgbranch.versioned_columns c ON c.table_id = p_id AND c.attnum = a.attnum
    WHERE a.attrelid = v.relid AND a.attnum > 0 AND NOT a.attisdropped;

    -- The primary key (a table must keep one while versioned).
    SELECT array_agg(c.name ORDER BY k.ord),
           string_agg(format('h.%I = o.%I', c.name, a.attname), ' AND ' ORDER BY k.ord),
           string_agg(format('h.%I = n.%I', c.name, a.attname), ' AND ' ORDER BY k.ord),
           string_agg(format('n.%I = o.%I', a.attname, a.attname), ' AND ' ORDER BY k.ord),
           string_agg(format('w.%1$I = h.%1$I', c.name), ' AND ' ORDER BY k.ord),
           string_agg(format('h.%I', c.name), ', ' ORDER BY k.ord)
    INTO v.key_columns, v_keys, v_nkeys, v_nokeys, v_wkeys, v_hkeys
    FROM pg_constraint p
    CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = v.relid AND a.attnum = k.attnum
    JOIN pgbranch.versioned_columns c ON c.table_id = p_id AND c.attnum = k.attnum
    WHERE p.conrelid = v.relid AND p.contype = 'p';
    IF v_keys IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('table %s is system-versioned and must keep a primary key', v_rel),
            HINT = 'DROP SYSTEM VERSIONING first, or replace the primary key in one ALTER TABLE statement.';
    END IF;
    -- A tombstone holds the key only.
    SELECT string_agg(CASE WHEN a.attnum = ANY (p.conkey) THEN format('o.%I', a.attname) ELSE 'NULL' END,
                      ', ' ORDER BY a.attnum)
    INTO v_tomb
    FROM pg_attribute a
    JOIN pgbranch.versioned_columns c ON c.table_id = p_id AND c.attnum = a.attnum
    CROSS JOIN (SELECT conkey FROM pg_constraint WHERE conrelid = v.relid AND contype = 'p') p
    WHERE a.attrelid = v.relid AND a.attnum > 0 AND NOT a.attisdropped;
    -- A column added with a value (a DEFAULT) has it in the current
    -- versions too; older versions read NULL.
    IF cardinality(v_added) > 0 THEN
        EXECUTE format('UPDATE %1$s h SET %2$s FROM %3$s o WHERE %4$s AND NOT h.pgbranch_deleted
                          AND NOT EXISTS (SELECT 1 FROM %1$s w WHERE %5$s
                                          AND w.pgbranch_seq > h.pgbranch_seq)',
                       v_h,
                       (SELECT string_agg(format('%1$I = o.%1$I', c), ', ') FROM unnest(v_added) c),
                       v_rel, v_keys, v_wkeys);
    END IF;
    EXECUTE format('DROP INDEX IF EXISTS pgbranch_history.%I', v.history || '_key');
    EXECUTE format('CREATE INDEX %I ON %s (%s, pgbranch_seq)', v.history || '_key', v_h,
                   (SELECT string_agg(format('%I', k), ', ') FROM unnest(v.key_columns) k));

    -- The trigger function: SECURITY DEFINER (writing history needs no
    -- privilege on it), only for the table it was made for, one SQL
    -- statement per call. History is append-only: a change adds a version
    -- (a delete, a tombstone) that begins at the transaction's time;
    -- pgbranch_seq orders the versions of a key as they were written (a
    -- transaction that began earlier but wrote later comes after), and a
    -- version ends where a later-written version of its key begins. Only
    -- TRUNCATE reads the history.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION pgbranch_history.%1$I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $b$
        DECLARE
            v_start timestamptz := now();
        BEGIN
            IF TG_RELID <> %2$s THEN
                RAISE EXCEPTION 'pgbranch history trigger used on the wrong table';
            END IF;
            IF TG_OP = 'INSERT' THEN
                INSERT INTO %3$s (pgbranch_valid_from, %6$s)
                SELECT v_start, %7$s FROM pgbranch_new n;
            ELSIF TG_OP = 'UPDATE' THEN
                INSERT INTO %3$s (pgbranch_valid_from, pgbranch_deleted, %6$s)
                SELECT v_start, false, %7$s FROM pgbranch_new n
                UNION ALL
                SELECT v_start, true, %8$s FROM pgbranch_old o
                WHERE NOT EXISTS (SELECT 1 FROM pgbranch_new n WHERE %9$s);
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO %3$s (pgbranch_valid_from, pgbranch_deleted, %6$s)
                SELECT v_start, true, %8$s FROM pgbranch_old o;
            ELSE
                INSERT INTO %3$s (pgbranch_valid_from, pgbranch_deleted, %6$s)
                SELECT v_start, true, %8$s
                FROM (SELECT DISTINCT ON (%10$s) h.*
                      FROM %3$s h ORDER BY %10$s, h.pgbranch_seq DESC) o
                WHERE NOT o.pgbranch_deleted;
            END IF;
            RETURN NULL;
        END
        $b$ $f$, v.history || '_write', v.relid, v_h, v_keys, v_nkeys, v_cols, v_src,
        v_tomb, v_nokeys, v_hkeys);

    -- AS OF functions: LANGUAGE sql, STABLE, not SECURITY DEFINER and
    -- without SET, so that the planner inlines them (a condition on the
    -- key then reaches the history's key index). $2 and $3 rather than
    -- names: a table column may be called like a parameter. A NULL time
    -- reaches the check (coalesce keeps the planner from folding it away).
    EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.as_of(%s, timestamptz, boolean)', v_rel);
    EXECUTE format($f$
        CREATE FUNCTION pgbranch_history.as_of(%1$s, timestamptz, boolean) RETURNS SETOF %1$s
        LANGUAGE sql STABLE AS $b$
            SELECT %2$s FROM (
                SELECT DISTINCT ON (%5$s) h.* FROM %3$s h
                WHERE h.pgbranch_valid_from <= coalesce($2, 'infinity')
                ORDER BY %5$s, h.pgbranch_seq DESC) h
            WHERE NOT h.pgbranch_deleted AND pgbranch.check_as_of(%4$s, $2)
        $b$ $f$, v_rel, v_cols, v_h, p_id, v_hkeys);
    EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.versions(%s, timestamptz, timestamptz, boolean)', v_rel);
    EXECUTE format($f$
        CREATE FUNCTION pgbranch_history.versions(%1$s, timestamptz, timestamptz, boolean)
        RETURNS TABLE (%2$s, pgbranch_valid_from timestamptz, pgbranch_valid_to timestamptz)
        LANGUAGE sql STABLE AS $b$
            SELECT %3$s, h.pgbranch_valid_from, h.pgbranch_valid_to FROM (
                SELECT h.*, coalesce(min(h.pgbranch_valid_from) OVER (
                           PARTITION BY %6$s ORDER BY h.pgbranch_seq
                           ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING),
                           'infinity') AS pgbranch_valid_to
                FROM %4$s h) h
            WHERE NOT h.pgbranch_deleted
              AND h.pgbranch_valid_from < h.pgbranch_valid_to
              AND h.pgbranch_valid_to > coalesce($2, 'infinity')
              AND (h.pgbranch_valid_from < coalesce($3, '-infinity')
                   OR ($4 AND h.pgbranch_valid_from = $3))
              AND pgbranch.check_range(%5$s, $2, $3)
        $b$ $f$, v_rel, v_typed, v_cols, v_h, p_id, v_hkeys);

    -- Who may read the table may read its history (table-level SELECT;
    -- roles with column privileges only get none).
    -- Everyone's access is rebuilt from the table's ACL (a REVOKE on the
    -- table removes the history access it gave).
    FOR v_grantee IN
        SELECT DISTINCT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END
        FROM pg_class c, aclexplode(c.relacl) x
        WHERE c.oid = (v_h)::regclass AND x.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s', v_h, v_grantee);
    END LOOP;
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', v_h);
    -- With row-level security (enabled after versioning), the history
    -- would show rows the policies hide: no one gets it.
    FOR v_grantee IN
        SELECT DISTINCT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END
        FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) x
        WHERE c.oid = v.relid AND x.privilege_type = 'SELECT' AND NOT c.relrowsecurity
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO %s', v_h, v_grantee);
    END LOOP;

    UPDATE pgbranch.versioned_tables
    SET table_name = v_rel, key_columns = v.key_columns,
        signature = pgbranch.versioning_signature(v.relid)
    WHERE id = p_id;
END
$fn$;

-- Creates the history of p_table (SECURITY DEFINER part of
-- enable_versioning). Returns the trigger function's name.
CREATE FUNCTION pgbranch.versioning_prepare(p_table regclass) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    c     pg_class;
    v_id  bigint;
    v_h   text;
BEGIN
    SELECT * INTO c FROM pg_class WHERE oid = p_table;
    IF NOT pg_has_role(pgbranch.invoker(), c.relowner, 'USAGE') THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('must be owner of table %s', p_table);
    END IF;
    IF c.relkind <> 'r' THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('%s is not an ordinary table: pgbranch versions ordinary tables only', p_table),
            HINT = 'Partitioned tables, views and foreign tables cannot be system-versioned yet.';
    END IF;
    IF c.relispartition THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('%s is a partition: pgbranch versions ordinary tables only', p_table);
    END IF;
    IF EXISTS (SELECT 1 FROM pgbranch.branch_schemas s
               WHERE s.physical = (SELECT nspname FROM pg_namespace WHERE oid = c.relnamespace)
                 AND s.branch <> 'main') THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('table %s belongs to a branch: system versioning is kept on main only', p_table);
    END IF;
    IF c.relpersistence <> 'p' THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('table %s is temporary or unlogged: pgbranch versions permanent tables only', p_table);
    END IF;
    IF c.relnamespace IN ('pgbranch'::regnamespace, 'pgbranch_history'::regnamespace) THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('table %s belongs to pgbranch', p_table);
    END IF;
    IF c.relrowsecurity THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('table %s has row-level security: its history could show rows its policies hide', p_table),
            HINT = 'pgbranch does not version tables with row-level security yet.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_table AND contype = 'p') THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('table %s has no primary key: pgbranch versions tables with a primary key', p_table),
            HINT = 'Add a primary key; the history tells row versions apart by it.';
    END IF;
    IF EXISTS (SELECT 1 FROM pgbranch.versioned_tables WHERE relid = p_table) THEN
        RAISE EXCEPTION USING ERRCODE = '42710',
            MESSAGE = format('table %s is already system-versioned', p_table);
    END IF;
    INSERT INTO pgbranch.versioned_tables (relid, table_name, history, key_columns,
                                           enabled_at, history_from, signature)
    VALUES (p_table, p_table::text, 'pending', '{}', now(), now(), '')
    RETURNING id INTO v_id;
    v_h := left(c.relname, 40) || '_' || v_id;
    UPDATE pgbranch.versioned_tables SET history = v_h WHERE id = v_id;
    EXECUTE format('CREATE TABLE pgbranch_history.%I (
                        pgbranch_valid_from timestamptz NOT NULL,
                        pgbranch_seq bigint NOT NULL DEFAULT nextval(''pgbranch_history.version_seq''),
                        pgbranch_deleted boolean NOT NULL DEFAULT false)', v_h);
    PERFORM pgbranch.versioning_generate(v_id);
    -- The rows there are now: versions starting now.
    EXECUTE format('INSERT INTO pgbranch_history.%I (pgbranch_valid_from, %s) SELECT now(), %s FROM %s n',
                   v_h,
                   (SELECT string_agg(format('%I', name), ', ' ORDER BY attnum) FROM pgbranch.versioned_columns WHERE table_id = v_id),
                   (SELECT string_agg(format('n.%I', a.attname), ', ' ORDER BY a.attnum)
                    FROM pg_attribute a JOIN pgbranch.versioned_columns vc ON vc.table_id = v_id AND vc.attnum = a.attnum
                    WHERE a.attrelid = p_table),
                   p_table);
    RETURN format('pgbranch_history.%I', v_h || '_write');
END
$fn$;

-- ALTER TABLE t ADD SYSTEM VERSIONING. Runs as the caller, who must own
-- the table (the triggers are made as that role).
CREATE FUNCTION pgbranch.enable_versioning(p_table regclass) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_fn text;
BEGIN
    -- One change of a table's versioning at a time.
    PERFORM pg_advisory_xact_lock(1885828214, p_table::oid::integer);
    v_fn := pgbranch.versioning_prepare(p_table);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS pgbranch_new FOR EACH STATEMENT EXECUTE FUNCTION %s()', p_table, v_fn);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS pgbranch_old NEW TABLE AS pgbranch_new FOR EACH STATEMENT EXECUTE FUNCTION %s()', p_table, v_fn);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS pgbranch_old FOR EACH STATEMENT EXECUTE FUNCTION %s()', p_table, v_fn);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()', p_table, v_fn);
    RETURN format('system versioning enabled for %s', p_table);
END
$fn$;

-- Tables created through pgbranch whose schema.table matches a configured
-- pattern (time_travel.versioned_tables: * for any characters) are
-- versioned at once; one without a primary key is left unversioned, with
-- a notice.
CREATE FUNCTION pgbranch.enable_versioning_matching(p_table regclass, p_patterns text[])
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_name text;
BEGIN
    SELECT n.nspname || '.' || c.relname INTO v_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = p_table AND c.relkind = 'r' AND c.relpersistence = 'p';
    IF EXISTS (SELECT 1 FROM pgbranch.versioned_tables WHERE relid = p_table) THEN
        RETURN NULL;
    END IF;
    IF v_name IS NULL OR NOT EXISTS (
        SELECT 1 FROM unnest(p_patterns) g
        -- (chr(92): a backslash, whatever standard_conforming_strings says)
        WHERE v_name LIKE replace(replace(replace(replace(g, chr(92), chr(92) || chr(92)),
                                                  '%', chr(92) || '%'),
                                          '_', chr(92) || '_'), '*', '%')) THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_table AND contype = 'p') THEN
        RAISE NOTICE 'table % matches time_travel.versioned_tables but has no primary key: not system-versioned', p_table;
        RETURN NULL;
    END IF;
    RETURN pgbranch.enable_versioning(p_table);
END
$fn$;

-- The SECURITY DEFINER part of disable_versioning: drops the history.
CREATE FUNCTION pgbranch.versioning_forget(p_table regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v pgbranch.versioned_tables;
BEGIN
    SELECT * INTO v FROM pgbranch.versioned_tables WHERE relid = p_table;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('table %s is not system-versioned', p_table);
    END IF;
    IF NOT pg_has_role(pgbranch.invoker(), (SELECT relowner FROM pg_class WHERE oid = p_table), 'USAGE') THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('must be owner of table %s', p_table);
    END IF;
    EXECUTE format('DROP FUNCTION pgbranch_history.as_of(%s, timestamptz, boolean)', p_table);
    EXECUTE format('DROP FUNCTION pgbranch_history.versions(%s, timestamptz, timestamptz, boolean)', p_table);
    EXECUTE format('DROP TABLE pgbranch_history.%I', v.history);
    EXECUTE format('DROP FUNCTION pgbranch_history.%I() CASCADE', v.history || '_write');
    DELETE FROM pgbranch.versioned_tables WHERE id = v.id;
END
$fn$;

-- ALTER TABLE t DROP SYSTEM VERSIONING: the triggers and the history go.
CREATE FUNCTION pgbranch.disable_versioning(p_table regclass) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(1885828214, p_table::oid::integer);
    EXECUTE format('DROP TRIGGER IF EXISTS pgbranch_versioning_insert ON %s', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS pgbranch_versioning_update ON %s', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS pgbranch_versioning_delete ON %s', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS pgbranch_versioning_truncate ON %s', p_table);
    PERFORM pgbranch.versioning_forget(p_table);
    RETURN format('system versioning disabled for %s; its history is dropped', p_table);
END
$fn$;

-- After a recorded schema change: versioned tables whose columns, key or
-- grants changed get their history and functions regenerated; dropped
-- ones keep their history (marked dropped).
CREATE FUNCTION pgbranch.versioning_after_ddl() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v pgbranch.versioned_tables;
BEGIN
    FOR v IN SELECT * FROM pgbranch.versioned_tables WHERE relid IS NOT NULL ORDER BY id LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = v.relid) THEN
            -- Its history stays until retention removes it.
            UPDATE pgbranch.versioned_tables SET relid = NULL, dropped_at = now() WHERE id = v.id;
        ELSIF pgbranch.versioning_signature(v.relid) IS DISTINCT FROM v.signature
              OR v.table_name <> v.relid::regclass::text THEN
            PERFORM pgbranch.versioning_generate(v.id);
        END IF;
    END LOOP;
END
$fn$;

-- RESTORE TABLE t TO TIMESTAMP at: the rows become those of that moment,
-- by the smallest change (rows deleted, updated, inserted by key), in the
-- caller's transaction and with the caller's privileges; the triggers
-- record the restore as new history, so it can be undone the same way.
CREATE FUNCTION pgbranch.restore_table(p_table regclass, p_at timestamptz) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v        pgbranch.versioned_tables;
    v_past   text;
    v_keys   text;
    v_cols   text;
    v_set    text;
    v_del    bigint;
    v_upd    bigint;
    v_ins    bigint;
BEGIN
    SELECT * INTO v FROM pgbranch.versioned_tables WHERE relid = p_table;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('table %s has no history: system versioning is not enabled for it', p_table);
    END IF;
    PERFORM pgbranch.check_as_of(v.id, p_at);
    v_past := format('pgbranch_history.as_of(NULL::%s, %L::timestamptz, false)', p_table, p_at);
    SELECT string_agg(format('x.%1$I = p.%1$I', a.attname), ' AND ')
    INTO v_keys
    FROM pg_constraint k, unnest(k.conkey) AS c(attnum)
    JOIN pg_attribute a ON a.attrelid = p_table AND a.attnum = c.attnum
    WHERE k.conrelid = p_table AND k.contype = 'p';
    -- Generated columns are computed again; identity columns are written.
    SELECT string_agg(format('%I', attname), ', ' ORDER BY attnum),
           string_agg(format('%1$I = p.%1$I', attname), ', ' ORDER BY attnum)
               FILTER (WHERE attidentity <> 'a')
    INTO v_cols, v_set
    FROM pg_attribute
    WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('DELETE FROM %s x WHERE NOT EXISTS (SELECT 1 FROM %s p WHERE %s)',
                   p_table, v_past, v_keys);
    GET DIAGNOSTICS v_del = ROW_COUNT;
    EXECUTE format('UPDATE %s x SET %s FROM %s p WHERE %s AND ROW(%s) IS DISTINCT FROM ROW(%s)',
                   p_table, v_set, v_past, v_keys,
                   (SELECT string_agg(format('x.%I', attname), ', ' ORDER BY attnum) FROM pg_attribute
                    WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped AND attgenerated = ''),
                   (SELECT string_agg(format('p.%I', attname), ', ' ORDER BY attnum) FROM pg_attribute
                    WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped AND attgenerated = ''));
    GET DIAGNOSTICS v_upd = ROW_COUNT;
    EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s p WHERE NOT EXISTS (SELECT 1 FROM %s x WHERE %s)',
                   p_table, v_cols, v_cols, v_past, p_table, v_keys);
    GET DIAGNOSTICS v_ins = ROW_COUNT;
    RETURN format('restored %s to %s: %s deleted, %s updated, %s inserted',
                  p_table, p_at, v_del, v_upd, v_ins);
END
$fn$;

-- CREATE BRANCH name FROM main AS OF TIMESTAMP at WITH DATA: the
-- branch's copies of system-versioned tables get their rows of then
-- (create_branch reads the setting); other tables are copied as they are
-- now, and every table has today's columns.
CREATE FUNCTION pgbranch.create_branch_as_of(
    p_name text, p_parent text, p_at timestamptz,
    p_statement text DEFAULT NULL, p_client_addr text DEFAULT NULL
) RETURNS TABLE (branch text, parent text, objects bigint, tables bigint, rows_copied bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_parent <> 'main' THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('CREATE BRANCH ... AS OF needs FROM main: only main keeps row history (asked for %s)', p_parent);
    END IF;
    IF p_at IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'CREATE BRANCH ... AS OF: the time is NULL';
    END IF;
    PERFORM set_config('pgbranch.branch_as_of', p_at::text, true);
    RETURN QUERY SELECT * FROM pgbranch.create_branch(p_name, p_parent, true, p_statement, p_client_addr);
    PERFORM set_config('pgbranch.branch_as_of', '', true);
END
$fn$;

-- Retention: deletes up to p_batch versions that ended before now() minus
-- their table's retention in ms (p_tables / p_ms, else p_default_ms;
-- 0 keeps them for ever), table by table, and moves history_from past
-- what is gone. A dropped table's history goes when the drop is that old.
-- Returns how many versions it deleted: the caller repeats, one short
-- transaction per call, until fewer than p_batch.
-- Only the owner of schema pgbranch (and roles it grants EXECUTE to) may
-- call it: it destroys history.
CREATE FUNCTION pgbranch.prune_history(p_default_ms bigint, p_tables text[],
                                       p_ms bigint[], p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v        pgbranch.versioned_tables;
    v_keep   bigint;
    v_cutoff timestamptz;
    v_n      bigint;
    v_total  bigint := 0;
    v_same   text;
BEGIN
    FOR v IN SELECT * FROM pgbranch.versioned_tables ORDER BY id LOOP
        v_keep := coalesce(p_ms[array_position(p_tables, v.table_name)], p_default_ms);
        CONTINUE WHEN v_keep IS NULL OR v_keep <= 0;
        v_cutoff := now() - make_interval(secs => v_keep / 1000.0);
        v_same := (SELECT string_agg(format('w.%1$I = h.%1$I', k), ' AND ') FROM unnest(v.key_columns) k);
        IF v.relid IS NULL AND v.dropped_at < v_cutoff THEN
            -- Dropped before the cutoff: all of it goes.
            EXECUTE format('DELETE FROM pgbranch_history.%1$I WHERE ctid = ANY (ARRAY(
                                SELECT ctid FROM pgbranch_history.%1$I LIMIT %2$s))',
                           v.history, p_batch - v_total);
        ELSE
            -- A version another one replaced before the cutoff; a
            -- tombstone from before it that is all that is left of its
            -- key. (History is written in order: old versions lie at the
            -- start of the table, where this scan begins.)
            EXECUTE format('DELETE FROM pgbranch_history.%1$I WHERE ctid = ANY (ARRAY(
                                SELECT h.ctid FROM pgbranch_history.%1$I h
                                WHERE h.pgbranch_valid_from < %2$L
                                  AND (EXISTS (SELECT 1 FROM pgbranch_history.%1$I w
                                               WHERE %4$s AND w.pgbranch_valid_from <= %2$L
                                                 AND w.pgbranch_seq > h.pgbranch_seq)
                                       OR (h.pgbranch_deleted
                                           AND NOT EXISTS (SELECT 1 FROM pgbranch_history.%1$I w
                                                           WHERE %4$s AND w.pgbranch_seq <> h.pgbranch_seq)))
                                LIMIT %3$s))',
                           v.history, v_cutoff, p_batch - v_total, v_same);
        END IF;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_total := v_total + v_n;
        UPDATE pgbranch.versioned_tables SET history_from = greatest(history_from, v_cutoff)
        WHERE id = v.id AND history_from < v_cutoff;
        IF v.relid IS NULL AND v.dropped_at < v_cutoff THEN
            EXECUTE format('SELECT count(*) FROM pgbranch_history.%I', v.history) INTO v_n;
            IF v_n = 0 THEN
                EXECUTE format('DROP TABLE pgbranch_history.%I', v.history);
                EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.%I()', v.history || '_write');
                DELETE FROM pgbranch.versioned_tables WHERE id = v.id;
            END IF;
        END IF;
        EXIT WHEN v_total >= p_batch;
    END LOOP;
    RETURN v_total;
END
$fn$;
REVOKE ALL ON FUNCTION pgbranch.prune_history(bigint, text[], bigint[], integer) FROM PUBLIC;

-- Before a statement that drops tables (the proxy sends it, after
-- ddl_begin): the AS OF functions depend on their table's row type, so
-- they step aside; the record after the statement remakes those of the
-- tables that remain.
CREATE FUNCTION pgbranch.versioning_before_drop(p_branch text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v pgbranch.versioned_tables;
BEGIN
    PERFORM pgbranch.require_token(p_branch, 'ddl');
    IF p_branch <> 'main' THEN
        RETURN;
    END IF;
    FOR v IN SELECT * FROM pgbranch.versioned_tables WHERE relid IS NOT NULL LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.as_of(%s, timestamptz, boolean)',
                       v.relid::regclass);
        EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.versions(%s, timestamptz, timestamptz, boolean)',
                       v.relid::regclass);
        UPDATE pgbranch.versioned_tables SET signature = '' WHERE id = v.id;
    END LOOP;
END
$fn$;

-- Recording a change, and merging one, now keep versioned tables in step.
ALTER FUNCTION pgbranch.record_ddl(text, text, text, text, text, text, text, bigint)
    RENAME TO record_ddl_unversioned;
CREATE FUNCTION pgbranch.record_ddl(
    p_branch text, p_statement text, p_tag text, p_object_type text,
    p_identity text, p_action text, p_client_addr text, p_rows bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v bigint;
BEGIN
    v := pgbranch.record_ddl_unversioned(p_branch, p_statement, p_tag, p_object_type,
                                         p_identity, p_action, p_client_addr, p_rows);
    IF p_branch = 'main' THEN
        PERFORM pgbranch.versioning_after_ddl();
    END IF;
    RETURN v;
END
$fn$;
ALTER FUNCTION pgbranch.record_merged(text, text, bigint, text, text, text, text, text, text)
    RENAME TO record_merged_unversioned;
CREATE FUNCTION pgbranch.record_merged(
    p_target text, p_branch text, p_branch_version bigint, p_statement text, p_tag text,
    p_object_type text, p_identity text, p_action text, p_client_addr text
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v bigint;
BEGIN
    v := pgbranch.record_merged_unversioned(p_target, p_branch, p_branch_version, p_statement,
                                            p_tag, p_object_type, p_identity, p_action, p_client_addr);
    IF p_target = 'main' THEN
        PERFORM pgbranch.versioning_after_ddl();
    END IF;
    RETURN v;
END
$fn$;

REVOKE ALL ON FUNCTION pgbranch.versioning_generate(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgbranch.record_ddl(text, text, text, text, text, text, text, bigint),
    pgbranch.record_merged(text, text, bigint, text, text, text, text, text, text),
    pgbranch.versioning_signature(oid), pgbranch.check_as_of(bigint, timestamptz),
    pgbranch.check_range(bigint, timestamptz, timestamptz),
    pgbranch.versioning_prepare(regclass), pgbranch.enable_versioning(regclass),
    pgbranch.versioning_forget(regclass), pgbranch.disable_versioning(regclass),
    pgbranch.versioning_after_ddl(), pgbranch.versioning_before_drop(text),
    pgbranch.restore_table(regclass, timestamptz),
    pgbranch.create_branch_as_of(text, text, timestamptz, text, text),
    pgbranch.enable_versioning_matching(regclass, text[])
    TO PUBLIC;
