-- pgbranch.create_branch, re-runnable (CREATE OR REPLACE): migration 2
-- creates it, migration 3 brings it up to date (CREATE BRANCH ... AS OF
-- reads system-versioned tables from their history).

-- CREATE BRANCH: copies every object of the parent's versioned schemas
-- (and with p_with_data their rows) into new schemas, in the caller's
-- transaction, as the caller. Returns what it copied.
--
-- In phases, so that rows are copied before anything checks or indexes
-- them (and no trigger of the copy fires for them):
--   A. types, sequences, routines, tables (without PRIMARY KEY, UNIQUE,
--      EXCLUDE and FOREIGN KEY constraints);
--   B. the rows (WITH DATA);
--   C. PRIMARY KEY, UNIQUE and EXCLUDE constraints, and indexes;
--   D. foreign keys (any order: the tables all exist; cycles are fine);
--   E. views, materialized views, triggers, policies, rules, statistics,
--      and whatever an earlier phase could not run yet.
CREATE OR REPLACE FUNCTION pgbranch.create_branch(
    p_name text, p_parent text DEFAULT 'main', p_with_data boolean DEFAULT false,
    p_statement text DEFAULT NULL, p_client_addr text DEFAULT NULL
) RETURNS TABLE (branch text, parent text, objects bigint, tables bigint, rows_copied bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $fn$
DECLARE
    -- Set by create_branch_as_of (migration 3) for this transaction.
    v_as_of    text := nullif(current_setting('pgbranch.branch_as_of', true), '');
    v_logical  name[] := '{}';
    v_from     name[] := '{}';
    v_to       name[] := '{}';
    a_stmts    text[] := '{}';
    a_groups   text[] := '{}';
    c_stmts    text[] := '{}';
    c_groups   text[] := '{}';
    d_stmts    text[] := '{}';
    d_groups   text[] := '{}';
    e_stmts    text[] := '{}';
    e_groups   text[] := '{}';
    b_stmts    text[] := '{}';
    b_groups   text[] := '{}';
    v_objects  bigint := 0;
    v_tables   bigint := 0;
    v_rows     bigint := 0;
    v_cols     text;
    v_vals     text;
    v_def      text;
    v_what     text := format('creating branch "%s"', p_name);
    res        record;
    r          record;
    s          text;
BEGIN
    FOR r IN SELECT * FROM pgbranch.register_branch(p_name, p_parent, p_with_data) LOOP
        v_logical := v_logical || r.logical;
        v_from := v_from || r.parent_physical;
        v_to := v_to || r.physical;
    END LOOP;
    -- Objects of extensions cannot be copied (the extension owns them),
    -- and a branch must not point back at the parent's schema for them.
    SELECT string_agg(DISTINCT format('%I (in schema %I)', e.extname, n.nspname), ', ')
    INTO v_def
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE n.nspname = ANY (v_from);
    IF v_def IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('cannot create branch "%s": extensions are installed in a versioned schema', p_name),
            DETAIL = format('Extensions: %s. A branch copies every object of its schemas, and an extension''s objects belong to the extension.', v_def),
            HINT = 'Keep extensions in a shared schema every branch sees: CREATE SCHEMA extensions; ALTER EXTENSION <name> SET SCHEMA extensions; and add "extensions" to the search_path (ALTER DATABASE ... SET search_path = "$user", public, extensions).';
    END IF;
    FOR i IN 1 .. coalesce(array_length(v_to, 1), 0) LOOP
        BEGIN
            EXECUTE format('CREATE SCHEMA %I', v_to[i]);
        EXCEPTION WHEN duplicate_schema THEN
            RAISE EXCEPTION USING ERRCODE = '42P06',
                MESSAGE = format('cannot create branch "%s": schema %I already exists', p_name, v_to[i]),
                HINT = 'That schema was not made by pgbranch (or its branch was dropped around it); drop or rename it.';
        END;
    END LOOP;
    -- The parent's objects, as printed with search_path = pg_catalog, each
    -- name mapped to the new schemas. Ownership stays with the caller.
    FOR r IN SELECT o.object_type, o.identity, o.definition
             FROM pgbranch.schema_objects(v_from, NULL) o
             WHERE o.object_type <> 'schema'
             ORDER BY pgbranch.kind_rank(o.object_type), o.identity COLLATE "C" LOOP
        v_objects := v_objects + 1;
        v_def := pgbranch.map_qualified(r.definition, v_from, v_to);
        IF r.object_type = 'table' THEN
            -- Keys and foreign keys come after the rows (phases C, D).
            v_def := regexp_replace(v_def,
                ',\n    CONSTRAINT ("(?:[^"]|"")*"|[^ \n]+) (FOREIGN KEY|PRIMARY KEY|UNIQUE|EXCLUDE) [^\n]*?(?=,\n    |\n\))',
                '', 'g');
        END IF;
        FOR s IN SELECT pgbranch.split_sql(v_def) LOOP
            -- The copies keep their owners where the caller may give them
            -- away (a member of the owning role, or a superuser); code that
            -- runs as an object's owner (a materialized view's query, an
            -- index expression) then runs as that owner, never as the
            -- caller. Otherwise the caller owns the copy.
            IF s ~ '^ALTER [A-Z ]+ .* OWNER TO [^;]*;$' THEN
                CONTINUE WHEN NOT pg_has_role(current_user,
                    substring(s FROM ' OWNER TO (.*);$')::regrole, 'MEMBER');
            END IF;
            -- Filled at the end, by REFRESH (which runs as the owner).
            IF r.object_type = 'materialized view' AND s ~* '^CREATE MATERIALIZED VIEW' THEN
                s := regexp_replace(s, ';\s*$', E'\nWITH NO DATA;');
            END IF;
            IF r.object_type = 'index' THEN
                c_stmts := c_stmts || s;
                c_groups := c_groups || (r.object_type || ' ' || r.identity);
            ELSIF r.object_type IN ('view', 'materialized view', 'trigger', 'policy', 'rule', 'statistics object') THEN
                e_stmts := e_stmts || s;
                e_groups := e_groups || (r.object_type || ' ' || r.identity);
            ELSE
                a_stmts := a_stmts || s;
                a_groups := a_groups || (r.object_type || ' ' || r.identity);
            END IF;
        END LOOP;
    END LOOP;
    -- Constraints taken out of the tables above.
    FOR r IN SELECT k.conname, k.contype, c.relname, i AS k, pg_get_constraintdef(k.oid) AS def
             FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN generate_subscripts(v_from, 1) i ON v_from[i] = n.nspname
             WHERE k.contype IN ('f', 'p', 'u', 'x') AND k.conislocal AND k.conparentid = 0 AND k.convalidated
             ORDER BY c.relname, k.conname LOOP
        s := format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', v_to[r.k], r.relname, r.conname,
                    pgbranch.map_qualified(r.def, v_from, v_to));
        IF r.contype = 'f' THEN
            d_stmts := d_stmts || s;
            d_groups := d_groups || format('constraint %I on %I.%I', r.conname, v_logical[r.k], r.relname);
        ELSE
            c_stmts := c_stmts || s;
            c_groups := c_groups || format('constraint %I on %I.%I', r.conname, v_logical[r.k], r.relname);
        END IF;
    END LOOP;

    -- A.
    res := pgbranch.run_in_order(a_stmts, a_groups, v_what, false);
    e_stmts := res.left_stmts || e_stmts;
    e_groups := res.left_groups || e_groups;
    -- Sequences continue from the parent's values.
    FOR r IN SELECT q.sequencename, q.last_value, i AS k
             FROM pg_sequences q
             JOIN generate_subscripts(v_from, 1) i ON v_from[i] = q.schemaname
             WHERE q.last_value IS NOT NULL LOOP
        PERFORM setval(format('%I.%I', v_to[r.k], r.sequencename), r.last_value, true);
    END LOOP;

    -- B.
    IF p_with_data THEN
        FOR r IN SELECT c.relname, c.relkind, i AS k
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN generate_subscripts(v_from, 1) i ON v_from[i] = n.nspname
                 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                 ORDER BY c.relname LOOP
            -- Values of the parent's own types (enums, composites) are
            -- cast through text to the branch's copies of those types.
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
                   string_agg(CASE WHEN tn.nspname = ANY (v_from)
                                   THEN format('%I::text::%s', a.attname,
                                               pgbranch.map_qualified(format_type(a.atttypid, a.atttypmod), v_from, v_to))
                                   ELSE quote_ident(a.attname) END, ', ' ORDER BY a.attnum)
            INTO v_cols, v_vals
            FROM pg_attribute a
            JOIN pg_type t ON t.oid = a.atttypid
            JOIN pg_namespace tn ON tn.oid = t.typnamespace
            WHERE a.attrelid = format('%I.%I', v_from[r.k], r.relname)::regclass
              AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
            v_tables := v_tables + 1;
            -- CREATE BRANCH ... AS OF (create_branch_as_of): a
            -- system-versioned table of main gives its rows of then.
            IF v_as_of IS NOT NULL AND EXISTS (
                SELECT 1 FROM pgbranch.versioned_tables vt
                WHERE vt.relid = format('%I.%I', v_from[r.k], r.relname)::regclass) THEN
                b_stmts := b_stmts || format('INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM pgbranch_history.as_of(NULL::%I.%I, %L::timestamptz, false) AS %I',
                    v_to[r.k], r.relname, v_cols, v_vals, v_from[r.k], r.relname, v_as_of, r.relname);
            ELSE
                b_stmts := b_stmts || format('INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s %I.%I',
                    v_to[r.k], r.relname, v_cols, v_vals,
                    CASE r.relkind WHEN 'r' THEN 'ONLY' ELSE '' END, v_from[r.k], r.relname);
            END IF;
            b_groups := b_groups || format('table %I.%I', v_logical[r.k], r.relname);
        END LOOP;
        res := pgbranch.run_in_order(b_stmts, b_groups, format('copying data to branch "%s"', p_name), true);
        v_rows := res.rows_done;
    END IF;

    -- C, D.
    res := pgbranch.run_in_order(c_stmts, c_groups, v_what, false);
    e_stmts := res.left_stmts || e_stmts;
    e_groups := res.left_groups || e_groups;
    res := pgbranch.run_in_order(d_stmts, d_groups, v_what, false);
    e_stmts := res.left_stmts || e_stmts;
    e_groups := res.left_groups || e_groups;
    -- E.
    PERFORM pgbranch.run_in_order(e_stmts, e_groups, v_what, true);

    -- Materialized views hold what their parents hold.
    FOR r IN SELECT c.relname, i AS k FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN generate_subscripts(v_from, 1) i ON v_from[i] = n.nspname
             WHERE c.relkind = 'm' AND c.relispopulated
             ORDER BY c.oid LOOP
        EXECUTE format('REFRESH MATERIALIZED VIEW %I.%I', v_to[r.k], r.relname);
    END LOOP;

    PERFORM pgbranch.finish_branch(p_name,
        coalesce(p_statement, format('CREATE BRANCH %s FROM %s%s', quote_ident(p_name), quote_ident(p_parent),
                                     CASE WHEN p_with_data THEN ' WITH DATA' ELSE '' END)),
        p_client_addr);
    branch := p_name;
    parent := p_parent;
    objects := v_objects;
    tables := v_tables;
    rows_copied := v_rows;
    RETURN NEXT;
END
$fn$;
