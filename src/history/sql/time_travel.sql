-- The functions of time travel, re-runnable (CREATE OR REPLACE):
-- migration 3 creates them after 0003_time_travel.sql made the tables,
-- migration 4 brings them up to date (history written from NEW rows only,
-- key changes by a row trigger; see versioning_generate).
-- What the generated objects depend on: columns (number, name, type,
-- collation), the primary key, and the grants (but for those to the owner
-- of schema pgbranch, which versioning_lend gives and takes back).
CREATE OR REPLACE FUNCTION pgbranch.versioning_signature(p_relid oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT coalesce((SELECT string_agg(format('%s:%s:%s:%s', a.attnum, a.attname,
                                             format_type(a.atttypid, a.atttypmod), a.attcollation),
                                      ',' ORDER BY a.attnum)
                     FROM pg_attribute a
                     WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped), '')
        || '|' || coalesce((SELECT array_to_string(k.conkey, ',') FROM pg_constraint k
                            WHERE k.conrelid = p_relid AND k.contype = 'p'), '')
        || '|' || coalesce((SELECT coalesce((SELECT string_agg(format('%s:%s:%s', x.grantee, x.grantor, x.privilege_type),
                                                               ',' ORDER BY x.grantee, x.grantor, x.privilege_type)
                                                    FROM aclexplode(c.relacl) x
                                                    WHERE x.grantee <> (SELECT nspowner FROM pg_namespace
                                                                        WHERE nspname = 'pgbranch')), '')
                                   || c.relowner::text || c.relrowsecurity::text
                            FROM pg_class c WHERE c.oid = p_relid), '')
$fn$;

-- Refuses a time outside the table's history. Called once by every AS OF
-- query: no SET search_path (setting it cost more than the check), so
-- every name and operator is qualified.
CREATE OR REPLACE FUNCTION pgbranch.check_as_of(p_id bigint, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v pgbranch.versioned_tables;
BEGIN
    SELECT * INTO v FROM pgbranch.versioned_tables WHERE id OPERATOR(pg_catalog.=) p_id;
    IF p_at IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = pg_catalog.format('AS OF time for table %s is NULL', v.table_name);
    END IF;
    IF p_at OPERATOR(pg_catalog.<) v.history_from THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('table %s has no history before %s (asked for %s)',
                                        v.table_name, v.history_from, p_at),
            HINT = 'Versioning was enabled (or history pruned up to) then; ask for a later time.';
    END IF;
    RETURN true;
END
$fn$;

CREATE OR REPLACE FUNCTION pgbranch.check_range(p_id bigint, p_from timestamptz, p_to timestamptz)
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
CREATE OR REPLACE FUNCTION pgbranch_history.as_of(p_row anyelement, p_at timestamptz, p_session boolean)
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
    IF (SELECT relkind FROM pg_class WHERE oid = v_rel) = 'v' THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('view %s reads no system-versioned table: it has no past to show', v_rel),
            HINT = 'AS OF works on views that read system-versioned tables (directly or through other views).';
    END IF;
    RAISE EXCEPTION USING ERRCODE = '55000',
        MESSAGE = format('table %s has no history: system versioning is not enabled for it', v_rel),
        HINT = format('ALTER TABLE %s ADD SYSTEM VERSIONING keeps its history from then on.', v_rel);
END
$fn$;

CREATE OR REPLACE FUNCTION pgbranch_history.versions(p_row anyelement, p_from timestamptz,
                                          p_to timestamptz, p_inclusive boolean)
RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF (SELECT c.relkind FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid
        WHERE t.oid = pg_typeof(p_row)) = 'v' THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('FOR SYSTEM_TIME FROM/BETWEEN/ALL needs a system-versioned table, and %s is a view',
                             (SELECT t.typrelid::regclass FROM pg_type t WHERE t.oid = pg_typeof(p_row))),
            HINT = 'Views answer AS OF; for the versions, query the tables they read.';
    END IF;
    RAISE EXCEPTION USING ERRCODE = '55000',
        MESSAGE = format('table %s has no history: system versioning is not enabled for it',
                         (SELECT t.typrelid::regclass FROM pg_type t WHERE t.oid = pg_typeof(p_row))),
        HINT = 'ALTER TABLE ... ADD SYSTEM VERSIONING keeps its history from then on.';
END
$fn$;

-- The columns of table p_table's primary key, in key order (no rows: it
-- has none). Every function that builds SQL from a versioned table's key
-- reads it here.
CREATE OR REPLACE FUNCTION pgbranch.primary_key_columns(p_table oid)
RETURNS TABLE (ord bigint, attnum smallint, attname name)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT k.ord, a.attnum, a.attname
    FROM pg_constraint p
    CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = p.conrelid AND a.attnum = k.attnum
    WHERE p.conrelid = p_table AND p.contype = 'p'
$fn$;

-- (Re)creates the history table's missing columns, the trigger functions
-- and the AS OF functions of versioned table p_id after its columns,
-- key or grants changed. Runs as the owner of schema pgbranch.
CREATE OR REPLACE FUNCTION pgbranch.versioning_generate(p_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning AS $fn$
DECLARE
    v        pgbranch.versioned_tables;
    v_h      text;
    v_cols   text;     -- history column list
    v_src    text;     -- n.<table column> list
    v_keys   text;     -- h.k = o.k AND ...
    v_hkcols text;     -- k, ... (history key columns)
    v_okeys  text;     -- OLD.k, ...
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
    SELECT array_agg(c.name ORDER BY a.ord),
           string_agg(format('h.%I = o.%I', c.name, a.attname), ' AND ' ORDER BY a.ord),
           string_agg(format('%I', c.name), ', ' ORDER BY a.ord),
           string_agg(format('OLD.%I', a.attname), ', ' ORDER BY a.ord),
           string_agg(format('w.%1$I = h.%1$I', c.name), ' AND ' ORDER BY a.ord),
           string_agg(format('h.%I', c.name), ', ' ORDER BY a.ord)
    INTO v.key_columns, v_keys, v_hkcols, v_okeys, v_wkeys, v_hkeys
    FROM pgbranch.primary_key_columns(v.relid) a
    JOIN pgbranch.versioned_columns c ON c.table_id = p_id AND c.attnum = a.attnum;
    IF v_keys IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('table %s is system-versioned and must keep a primary key', v_rel),
            HINT = 'DROP SYSTEM VERSIONING first, or replace the primary key in one ALTER TABLE statement.';
    END IF;
    -- A tombstone holds the key only.
    SELECT string_agg(CASE WHEN a.attnum IN (SELECT k.attnum FROM pgbranch.primary_key_columns(v.relid) k)
                           THEN format('o.%I', a.attname) ELSE 'NULL' END,
                      ', ' ORDER BY a.attnum)
    INTO v_tomb
    FROM pg_attribute a
    JOIN pgbranch.versioned_columns c ON c.table_id = p_id AND c.attnum = a.attnum
    WHERE a.attrelid = v.relid AND a.attnum > 0 AND NOT a.attisdropped;
    -- A column added with a value (a DEFAULT) has it in the current
    -- versions too; older versions read NULL.
    IF cardinality(v_added) > 0 AND v.signature <> '' THEN
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

    -- The trigger functions: SECURITY DEFINER (writing history needs no
    -- privilege on it), only for the table they were made for. They run
    -- on every write, so they carry no SET search_path (switching it
    -- around each call cost about an eighth of versioning's overhead on
    -- pgbench): every name in them is schema-qualified, every operator
    -- OPERATOR(pg_catalog.x), and the transition tables are found before
    -- any schema is searched.
    --
    -- History is append-only: a change adds a version (a delete, a
    -- tombstone) that begins at the transaction's time; pgbranch_seq
    -- orders the versions of a key as they were written (a transaction
    -- that began earlier but wrote later comes after), and a version ends
    -- where a later-written version of its key begins. Only TRUNCATE reads
    -- the history.
    --
    -- <history>_write: statement-level, one SQL statement per call. An
    -- UPDATE adds the new rows only: its trigger captures no OLD TABLE
    -- (capturing the old rows of every update to catch the rare key change
    -- cost about a fifth of versioning's overhead on pgbench, and the
    -- anti-join it needed, planned once for one row, made a later bulk
    -- update quadratic); a key that vanishes is caught below. No variables
    -- (a column of the same name would make them ambiguous).
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION pgbranch_history.%1$I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER AS $b$
        BEGIN
            -- Only as the triggers versioning_triggers made: another
            -- trigger (a role with TRIGGER on the table may add one) must
            -- not write history with it.
            IF TG_RELID OPERATOR(pg_catalog.<>) %2$s::pg_catalog.oid
               OR TG_WHEN OPERATOR(pg_catalog.<>) 'AFTER'
               OR TG_LEVEL OPERATOR(pg_catalog.<>) 'STATEMENT' THEN
                RAISE EXCEPTION 'pgbranch history trigger used on the wrong table';
            END IF;
            IF TG_OP OPERATOR(pg_catalog.=) 'INSERT'
               AND TG_NAME OPERATOR(pg_catalog.=) 'pgbranch_versioning_insert' THEN
                INSERT INTO %3$s (pgbranch_valid_from, %4$s)
                SELECT pg_catalog.now(), %5$s FROM pgbranch_new n;
            ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE'
                  AND TG_NAME OPERATOR(pg_catalog.=) 'pgbranch_versioning_update' THEN
                INSERT INTO %3$s (pgbranch_valid_from, %4$s)
                SELECT pg_catalog.now(), %5$s FROM pgbranch_new n;
            ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE'
                  AND TG_NAME OPERATOR(pg_catalog.=) 'pgbranch_versioning_delete' THEN
                INSERT INTO %3$s (pgbranch_valid_from, pgbranch_deleted, %4$s)
                SELECT pg_catalog.now(), true, %6$s FROM pgbranch_old o;
            ELSIF TG_OP OPERATOR(pg_catalog.<>) 'TRUNCATE'
                  OR TG_NAME OPERATOR(pg_catalog.<>) 'pgbranch_versioning_truncate' THEN
                RAISE EXCEPTION 'pgbranch history trigger used on the wrong table';
            ELSE
                INSERT INTO %3$s (pgbranch_valid_from, pgbranch_deleted, %4$s)
                SELECT pg_catalog.now(), true, %6$s
                FROM (SELECT DISTINCT ON (%7$s) h.*
                      FROM %3$s h ORDER BY %7$s, h.pgbranch_seq DESC) o
                WHERE NOT o.pgbranch_deleted;
            END IF;
            RETURN NULL;
        END
        $b$ $f$, v.history || '_write', v.relid, v_h, v_cols, v_src, v_tomb, v_hkeys);
    -- <history>_rekey: row-level, fired only for rows whose key an UPDATE
    -- changed (pgbranch_versioning_rekey, see versioning_triggers): the
    -- old key gets a tombstone. Row triggers fire before statement
    -- triggers, so when keys are swapped or shifted the new versions come
    -- after the tombstones. PostgreSQL allows no transition tables on a
    -- trigger limited to some columns, hence one call per such row.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION pgbranch_history.%1$I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER AS $b$
        BEGIN
            IF TG_RELID OPERATOR(pg_catalog.<>) %2$s::pg_catalog.oid
               OR TG_NAME OPERATOR(pg_catalog.<>) 'pgbranch_versioning_rekey'
               OR TG_OP OPERATOR(pg_catalog.<>) 'UPDATE'
               OR TG_WHEN OPERATOR(pg_catalog.<>) 'AFTER'
               OR TG_LEVEL OPERATOR(pg_catalog.<>) 'ROW' THEN
                RAISE EXCEPTION 'pgbranch history trigger used on the wrong table';
            END IF;
            INSERT INTO %3$s (pgbranch_valid_from, pgbranch_deleted, %4$s)
            VALUES (pg_catalog.now(), true, %5$s);
            RETURN NULL;
        END
        $b$ $f$, v.history || '_rekey', v.relid, v_h, v_hkcols, v_okeys);

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
CREATE OR REPLACE FUNCTION pgbranch.versioning_prepare(p_table regclass) RETURNS text
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
    PERFORM pgbranch.versioning_views();
    RETURN format('pgbranch_history.%I', v_h || '_write');
END
$fn$;

-- Writing history runs as the owner of schema pgbranch, which reads the
-- table when versioning begins (the rows there are) and when a column is
-- added (its current values). If that role may not read p_tables, their
-- owner (the caller) lends it SELECT for the rest of the transaction;
-- versioning_unlend takes it back before anyone else can see it. Returns
-- the tables lent. Nothing is lent when it may read them already (a
-- superuser always may).
CREATE OR REPLACE FUNCTION pgbranch.versioning_lend(p_tables regclass[]) RETURNS regclass[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_owner oid := (SELECT nspowner FROM pg_namespace WHERE nspname = 'pgbranch');
    v_lent  regclass[] := '{}';
    v_table regclass;
BEGIN
    FOR v_table IN
        SELECT t FROM unnest(p_tables) t JOIN pg_class c ON c.oid = t
        WHERE NOT has_table_privilege(v_owner, t, 'SELECT')
          AND pg_has_role(c.relowner, 'USAGE')
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO %I', v_table, pg_get_userbyid(v_owner));
        v_lent := v_lent || v_table;
    END LOOP;
    RETURN v_lent;
END
$fn$;

CREATE OR REPLACE FUNCTION pgbranch.versioning_unlend(p_tables regclass[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_owner name := (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'pgbranch');
    v_table regclass;
BEGIN
    FOREACH v_table IN ARRAY p_tables LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM %I', v_table, v_owner);
    END LOOP;
END
$fn$;

-- ALTER TABLE t ADD SYSTEM VERSIONING. Runs as the caller, who must own
-- the table (the triggers are made as that role).
CREATE OR REPLACE FUNCTION pgbranch.enable_versioning(p_table regclass) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_lent regclass[];
BEGIN
    -- One change of a table's versioning at a time.
    PERFORM pg_advisory_xact_lock(1885828214, p_table::oid::integer);
    v_lent := pgbranch.versioning_lend(ARRAY[p_table]);
    PERFORM pgbranch.versioning_prepare(p_table);
    PERFORM pgbranch.versioning_unlend(v_lent);
    PERFORM pgbranch.versioning_triggers(p_table);
    RETURN format('system versioning enabled for %s', p_table);
END
$fn$;

-- The rekey trigger of versioned table p_table, (re)made for its current
-- primary key: fires for the rows of an UPDATE whose key changed (their
-- text forms differ: any key type has one, and two equal values with
-- different text forms only cost an extra tombstone). Limited to UPDATEs
-- that name a key column (UPDATE OF): PostgreSQL then skips it for the
-- others before looking at the WHEN, which would otherwise be prepared for
-- every UPDATE statement and evaluated for every row. A BEFORE UPDATE row
-- trigger of the table's own may change the key of an UPDATE that does not
-- name it: while the table has one, the rekey trigger has no column list
-- (versioning_check_triggers follows CREATE and DROP TRIGGER). Its
-- columns make PostgreSQL refuse a type change of a key column while it
-- exists, so the proxy drops it before ALTER TABLE
-- (versioning_before_alter) and the record after the statement makes it
-- again. Runs as the caller.
CREATE OR REPLACE FUNCTION pgbranch.versioning_rekey_trigger(p_table regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_history name;
    v_cols    text;
    v_old     text;
    v_new     text;
BEGIN
    SELECT history INTO v_history FROM pgbranch.versioned_tables WHERE relid = p_table;
    SELECT string_agg(format('%I', k.attname), ', ' ORDER BY k.ord),
           string_agg(format('OLD.%I::text', k.attname), ', ' ORDER BY k.ord),
           string_agg(format('NEW.%I::text', k.attname), ', ' ORDER BY k.ord)
    INTO v_cols, v_old, v_new
    FROM pgbranch.primary_key_columns(p_table) k;
    EXECUTE format('DROP TRIGGER IF EXISTS pgbranch_versioning_rekey ON %s', p_table);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_rekey AFTER UPDATE %s ON %s FOR EACH ROW WHEN ((%s) IS DISTINCT FROM (%s)) EXECUTE FUNCTION pgbranch_history.%I()',
                   CASE WHEN pgbranch.versioning_rekey_all_rows(p_table) THEN '' ELSE 'OF ' || v_cols END,
                   p_table, v_old, v_new, v_history || '_rekey');
END
$fn$;

-- Drops the triggers that write the history of p_table. As the caller.
CREATE OR REPLACE FUNCTION pgbranch.versioning_drop_triggers(p_table regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_op text;
BEGIN
    FOREACH v_op IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate', 'rekey'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'pgbranch_versioning_' || v_op, p_table);
    END LOOP;
END
$fn$;

-- The triggers that write the history of versioned table p_table: one
-- call per statement (transition tables), plus the rekey trigger. Runs as
-- the caller, who must own the table.
CREATE OR REPLACE FUNCTION pgbranch.versioning_triggers(p_table regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_fn text;
BEGIN
    SELECT format('pgbranch_history.%I', history || '_write') INTO v_fn
    FROM pgbranch.versioned_tables WHERE relid = p_table;
    PERFORM pgbranch.versioning_drop_triggers(p_table);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS pgbranch_new FOR EACH STATEMENT EXECUTE FUNCTION %s()', p_table, v_fn);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_update AFTER UPDATE ON %s REFERENCING NEW TABLE AS pgbranch_new FOR EACH STATEMENT EXECUTE FUNCTION %s()', p_table, v_fn);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS pgbranch_old FOR EACH STATEMENT EXECUTE FUNCTION %s()', p_table, v_fn);
    EXECUTE format('CREATE TRIGGER pgbranch_versioning_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()', p_table, v_fn);
    PERFORM pgbranch.versioning_rekey_trigger(p_table);
END
$fn$;

-- Whether table p_table has BEFORE UPDATE row triggers of its own (which
-- may change a key the UPDATE does not name).
CREATE OR REPLACE FUNCTION pgbranch.versioning_rekey_all_rows(p_table oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT EXISTS (SELECT 1 FROM pg_trigger t
                   WHERE t.tgrelid = p_table AND NOT t.tgisinternal
                     AND t.tgname NOT LIKE 'pgbranch\_versioning\_%'
                     -- ROW (1), BEFORE (2), UPDATE (16)
                     AND t.tgtype & 19 = 19)
$fn$;

-- The columns (attnums, sorted) a rekey trigger depends on: those of its
-- WHEN, ((OLD.a)::text, ...) IS DISTINCT FROM (...), and of its UPDATE OF.
CREATE OR REPLACE FUNCTION pgbranch.versioning_rekey_columns(p_trigger oid) RETURNS int2[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT array_agg(DISTINCT d.refobjsubid::int2 ORDER BY d.refobjsubid::int2)
    FROM pg_depend d
    WHERE d.classid = 'pg_trigger'::regclass AND d.objid = p_trigger
      AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
$fn$;

-- After a recorded schema change, as the caller: versioned tables whose
-- rekey trigger is missing (dropped before an ALTER TABLE) or made for
-- another primary key get it again, if the caller may (a table changed
-- without pgbranch waits for its owner's next recorded change rather
-- than failing everyone else's).
CREATE OR REPLACE FUNCTION pgbranch.versioning_check_triggers() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_table regclass;
BEGIN
    FOR v_table IN
        SELECT v.relid::regclass
        FROM pgbranch.versioned_tables v
        JOIN pg_constraint p ON p.conrelid = v.relid AND p.contype = 'p'
        JOIN pg_class c ON c.oid = v.relid
        WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t
                          WHERE t.tgrelid = v.relid AND t.tgname = 'pgbranch_versioning_rekey'
                            AND pgbranch.versioning_rekey_columns(t.oid)
                                = (SELECT array_agg(k ORDER BY k) FROM unnest(p.conkey) k)
                            AND (t.tgattr::text = '') = pgbranch.versioning_rekey_all_rows(v.relid))
          AND pg_has_role(c.relowner, 'USAGE')
        ORDER BY v.id
    LOOP
        PERFORM pgbranch.versioning_rekey_trigger(v_table);
    END LOOP;
END
$fn$;

-- Before an ALTER TABLE on main (the proxy sends it, after ddl_begin): the
-- rekey trigger of a versioned table steps aside, so that its key columns
-- may change type; the record after the statement makes it again. As the
-- caller: only the table's owner may alter it anyway.
CREATE OR REPLACE FUNCTION pgbranch.versioning_before_alter(p_branch text, p_table regclass)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_branch = 'main' AND p_table IS NOT NULL
       AND EXISTS (SELECT 1 FROM pgbranch.versioned_tables WHERE relid = p_table)
       AND EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = p_table AND tgname = 'pgbranch_versioning_rekey') THEN
        EXECUTE format('DROP TRIGGER pgbranch_versioning_rekey ON %s', p_table);
    END IF;
END
$fn$;

-- Tables created through pgbranch whose schema.table matches a configured
-- pattern (time_travel.versioned_tables: * for any characters) are
-- versioned at once; one without a primary key is left unversioned, with
-- a notice.
CREATE OR REPLACE FUNCTION pgbranch.enable_versioning_matching(p_table regclass, p_patterns text[])
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
CREATE OR REPLACE FUNCTION pgbranch.versioning_forget(p_table regclass) RETURNS void
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
    EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.%I() CASCADE', v.history || '_rekey');
    DELETE FROM pgbranch.versioned_tables WHERE id = v.id;
    PERFORM pgbranch.versioning_views();
END
$fn$;

-- ALTER TABLE t DROP SYSTEM VERSIONING: the triggers and the history go.
CREATE OR REPLACE FUNCTION pgbranch.disable_versioning(p_table regclass) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(1885828214, p_table::oid::integer);
    PERFORM pgbranch.versioning_drop_triggers(p_table);
    PERFORM pgbranch.versioning_forget(p_table);
    RETURN format('system versioning disabled for %s; its history is dropped', p_table);
END
$fn$;

-- AS OF for views. A view that reads system-versioned tables (directly or
-- through such views) gets its own pgbranch_history.as_of(v, timestamptz,
-- boolean): the view's query as pg_get_viewdef prints it (every name
-- qualified, under this function's search_path), with each reference to
-- such a relation replaced by its as_of call. So `FROM v AS OF t` and
-- as-of sessions read the view over its tables' past; its unversioned
-- tables read live, as in an as-of session. The function is not SECURITY
-- DEFINER: it reads the tables' history with the caller's privileges (a
-- role that may read the view but not its tables gets 42501). Views whose
-- text this cannot rewrite get no function (AS OF on them stays 55000),
-- with a notice. Regenerated after every recorded schema change on main;
-- pgbranch.versioned_views keeps what each was made from.
CREATE OR REPLACE FUNCTION pgbranch.versioning_views() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on AS $fn$
DECLARE
    v_sources oid[];
    v_views   oid[] := '{}';
    v_more    oid[];
    v_view    regclass;
    v_ref     regclass;
    v_body    text;
    v_seg     text;
    v_qn      text;
    v_re      text;
    v_call    text;
BEGIN
    v_sources := ARRAY(SELECT relid FROM pgbranch.versioned_tables WHERE relid IS NOT NULL);
    -- Views reading them, then views reading those, ...
    LOOP
        v_more := ARRAY(
            SELECT DISTINCT w.ev_class
            FROM pg_depend d
            JOIN pg_rewrite w ON w.oid = d.objid
            JOIN pg_class c ON c.oid = w.ev_class
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.refobjid = ANY (v_sources) AND w.ev_class <> d.refobjid
              AND NOT w.ev_class = ANY (v_sources)
              AND c.relkind = 'v' AND c.relpersistence = 'p'
              AND c.relnamespace NOT IN ('pgbranch'::regnamespace, 'pgbranch_history'::regnamespace)
              AND NOT EXISTS (SELECT 1 FROM pgbranch.branch_schemas s
                              WHERE s.physical = (SELECT nspname FROM pg_namespace WHERE oid = c.relnamespace)
                                AND s.branch <> 'main'));
        EXIT WHEN cardinality(v_more) = 0;
        v_sources := v_sources || v_more;
        v_views := v_views || v_more;
    END LOOP;

    -- Views that no longer read any: their functions go.
    FOR v_view IN SELECT relid::regclass FROM pgbranch.versioned_views
                  WHERE NOT relid = ANY (v_views) AND EXISTS (SELECT 1 FROM pg_class WHERE oid = relid) LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.as_of(%s, timestamptz, boolean)', v_view);
    END LOOP;
    DELETE FROM pgbranch.versioned_views WHERE NOT relid = ANY (v_views);

    FOREACH v_view IN ARRAY v_views LOOP
        -- Rewritten outside string literals only (standard_conforming_strings
        -- is on here, so pg_get_viewdef writes them '...' with '' inside).
        v_body := '';
        FOR v_seg IN
            SELECT m[1] FROM regexp_matches(rtrim(pg_get_viewdef(v_view, false), '; '),
                                            '(''(?:[^'']|'''')*''|[^'']+)', 'g') AS m
        LOOP
            IF left(v_seg, 1) <> '''' THEN
                FOR v_ref IN
                    SELECT DISTINCT d.refobjid::regclass
                    FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid
                    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                      AND w.ev_class = v_view AND d.refobjid <> v_view::oid AND d.refobjid = ANY (v_sources)
                LOOP
                    v_qn := v_ref::text;
                    v_re := regexp_replace(v_qn, '([.^$*+?()\[\]{}|\\])', '\\\1', 'g');
                    v_call := replace(format('pgbranch_history.as_of(NULL::%s, $2, $3)', v_qn), '\', '\\');
                    -- A reference with an alias (deparsed identifiers are
                    -- lower case or quoted, keywords upper case), then one
                    -- without (the table's name becomes the alias its columns
                    -- are qualified with). Not after "::" or a name
                    -- character, not before "(" (a function).
                    v_seg := regexp_replace(v_seg,
                        '(?<![[:alnum:]_."$:])(?:ONLY\s+)?' || v_re || '(\s+)([a-z_][a-z0-9_$]*|"(?:[^"]|"")+")',
                        v_call || '\1\2', 'g');
                    v_seg := regexp_replace(v_seg,
                        '(?<![[:alnum:]_."$:])(?:ONLY\s+)?' || v_re || '(?![[:alnum:]_."$(])',
                        v_call || ' ' || replace(quote_ident((SELECT relname FROM pg_class WHERE oid = v_ref)), '\', '\\'),
                        'g');
                END LOOP;
            END IF;
            v_body := v_body || v_seg;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pgbranch.versioned_views WHERE relid = v_view AND body = v_body)
           AND to_regprocedure(format('pgbranch_history.as_of(%s, timestamptz, boolean)', v_view)) IS NOT NULL THEN
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.as_of(%s, timestamptz, boolean)', v_view);
            EXECUTE format('CREATE FUNCTION pgbranch_history.as_of(%1$s, timestamptz, boolean) RETURNS SETOF %1$s
                            LANGUAGE sql STABLE AS %2$L', v_view, v_body);
            INSERT INTO pgbranch.versioned_views (relid, body) VALUES (v_view, v_body)
            ON CONFLICT (relid) DO UPDATE SET body = excluded.body;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'pgbranch: view % gets no AS OF: %', v_view, SQLERRM;
            DELETE FROM pgbranch.versioned_views WHERE relid = v_view;
        END;
    END LOOP;
END
$fn$;

-- After a recorded schema change: versioned tables whose columns, key or
-- grants changed get their history and functions regenerated; dropped
-- ones keep their history (marked dropped).
CREATE OR REPLACE FUNCTION pgbranch.versioning_after_ddl() RETURNS void
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
    PERFORM pgbranch.versioning_views();
END
$fn$;

-- RESTORE TABLE t TO TIMESTAMP at: the rows become those of that moment,
-- by the smallest change (rows deleted, updated, inserted by key), in the
-- caller's transaction and with the caller's privileges; the triggers
-- record the restore as new history, so it can be undone the same way.
CREATE OR REPLACE FUNCTION pgbranch.restore_table(p_table regclass, p_at timestamptz) RETURNS text
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
    SELECT string_agg(format('x.%1$I = p.%1$I', k.attname), ' AND ')
    INTO v_keys
    FROM pgbranch.primary_key_columns(p_table) k;
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
CREATE OR REPLACE FUNCTION pgbranch.create_branch_as_of(
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
CREATE OR REPLACE FUNCTION pgbranch.prune_history(p_default_ms bigint, p_tables text[],
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
                EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.%I()', v.history || '_rekey');
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
CREATE OR REPLACE FUNCTION pgbranch.versioning_before_drop(p_branch text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM pgbranch.require_token(p_branch, 'ddl');
    IF p_branch = 'main' THEN
        PERFORM pgbranch.versioning_step_aside();
    END IF;
END
$fn$;

-- The same before a DROP that a merge of branch p_branch into p_target
-- replays (merge_branch.sql).
CREATE OR REPLACE FUNCTION pgbranch.versioning_before_merged_drop(p_target text, p_branch text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM pgbranch.require_token(p_target, 'merge', p_branch);
    IF p_target = 'main' THEN
        PERFORM pgbranch.versioning_step_aside();
    END IF;
END
$fn$;

-- The AS OF functions of versioned tables and of views over them drop out
-- (the record after the statement remakes those still needed).
CREATE OR REPLACE FUNCTION pgbranch.versioning_step_aside() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v      pgbranch.versioned_tables;
    v_view regclass;
BEGIN
    FOR v IN SELECT * FROM pgbranch.versioned_tables WHERE relid IS NOT NULL LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.as_of(%s, timestamptz, boolean)',
                       v.relid::regclass);
        EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.versions(%s, timestamptz, timestamptz, boolean)',
                       v.relid::regclass);
        UPDATE pgbranch.versioned_tables SET signature = '' WHERE id = v.id;
    END LOOP;
    -- Views' AS OF functions too (a dropped view, or one CASCADE takes).
    FOR v_view IN SELECT relid::regclass FROM pgbranch.versioned_views
                  WHERE EXISTS (SELECT 1 FROM pg_class WHERE oid = relid) LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS pgbranch_history.as_of(%s, timestamptz, boolean)', v_view);
    END LOOP;
    DELETE FROM pgbranch.versioned_views;
END
$fn$;

-- Recording a change, and merging one, now keep versioned tables in step.
CREATE OR REPLACE FUNCTION pgbranch.record_ddl(
    p_branch text, p_statement text, p_tag text, p_object_type text,
    p_identity text, p_action text, p_client_addr text, p_rows bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v      bigint;
    v_lent regclass[];
BEGIN
    v := pgbranch.record_ddl_unversioned(p_branch, p_statement, p_tag, p_object_type,
                                         p_identity, p_action, p_client_addr, p_rows);
    IF p_branch = 'main' THEN
        v_lent := pgbranch.versioning_lend(ARRAY(
            SELECT t.relid::regclass FROM pgbranch.versioned_tables t
            WHERE t.relid IS NOT NULL
              AND pgbranch.versioning_signature(t.relid) IS DISTINCT FROM t.signature));
        PERFORM pgbranch.versioning_after_ddl();
        PERFORM pgbranch.versioning_unlend(v_lent);
        PERFORM pgbranch.versioning_check_triggers();
    END IF;
    RETURN v;
END
$fn$;
CREATE OR REPLACE FUNCTION pgbranch.record_merged(
    p_target text, p_branch text, p_branch_version bigint, p_statement text, p_tag text,
    p_object_type text, p_identity text, p_action text, p_client_addr text
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v      bigint;
    v_lent regclass[];
BEGIN
    v := pgbranch.record_merged_unversioned(p_target, p_branch, p_branch_version, p_statement,
                                            p_tag, p_object_type, p_identity, p_action, p_client_addr);
    IF p_target = 'main' THEN
        v_lent := pgbranch.versioning_lend(ARRAY(
            SELECT t.relid::regclass FROM pgbranch.versioned_tables t
            WHERE t.relid IS NOT NULL
              AND pgbranch.versioning_signature(t.relid) IS DISTINCT FROM t.signature));
        PERFORM pgbranch.versioning_after_ddl();
        PERFORM pgbranch.versioning_unlend(v_lent);
        PERFORM pgbranch.versioning_check_triggers();
    END IF;
    RETURN v;
END
$fn$;

REVOKE ALL ON FUNCTION pgbranch.versioning_generate(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgbranch.versioning_views() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgbranch.versioning_step_aside() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgbranch.record_ddl(text, text, text, text, text, text, text, bigint),
    pgbranch.record_merged(text, text, bigint, text, text, text, text, text, text),
    pgbranch.versioning_signature(oid), pgbranch.check_as_of(bigint, timestamptz),
    pgbranch.check_range(bigint, timestamptz, timestamptz),
    pgbranch.versioning_prepare(regclass), pgbranch.enable_versioning(regclass),
    pgbranch.versioning_forget(regclass), pgbranch.disable_versioning(regclass),
    pgbranch.versioning_after_ddl(), pgbranch.versioning_before_drop(text),
    pgbranch.restore_table(regclass, timestamptz),
    pgbranch.create_branch_as_of(text, text, timestamptz, text, text),
    pgbranch.enable_versioning_matching(regclass, text[]),
    pgbranch.versioning_rekey_trigger(regclass), pgbranch.versioning_triggers(regclass),
    pgbranch.versioning_check_triggers(), pgbranch.versioning_before_alter(text, regclass),
    pgbranch.versioning_lend(regclass[]), pgbranch.versioning_unlend(regclass[]),
    pgbranch.versioning_rekey_columns(oid), pgbranch.versioning_rekey_all_rows(oid),
    pgbranch.versioning_before_merged_drop(text, text), pgbranch.versioning_drop_triggers(regclass),
    pgbranch.primary_key_columns(oid)
    TO PUBLIC;

-- Functions this run created (a superuser upgrading, say) belong to the
-- owner of schema pgbranch like the rest: the SECURITY DEFINER ones call
-- each other, and a REVOKEd one owned by someone else could not be called.
DO $owner$
DECLARE
    v_owner oid := (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'pgbranch');
    v_fn    regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace IN ('pgbranch'::regnamespace, 'pgbranch_history'::regnamespace)
          AND p.proowner OPERATOR(pg_catalog.<>) v_owner
          AND p.proowner OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user)
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %I', v_fn, pg_catalog.pg_get_userbyid(v_owner));
    END LOOP;
END
$owner$;
