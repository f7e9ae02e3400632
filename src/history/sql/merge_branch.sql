-- pgbranch.merge_branch, re-runnable (CREATE OR REPLACE): migration 2
-- creates it, migration 4 brings it up to date (the steps pgbranch takes
-- before DROP and ALTER TABLE on main, for versioned tables).

-- MERGE BRANCH: three-way at object level. Base: the parent's version the
-- branch started from (or was last merged at). A conflict is an object
-- changed on both sides since then (to different definitions); with
-- conflicts nothing is applied. Otherwise the branch's recorded DDL since
-- its last merge is replayed on the target, in order, in the caller's
-- transaction, as the caller, and recorded there as merged from the
-- branch. Versions that changed no object are not replayed (status
-- 'unchanged'). p_dry_run: the plan only. p_path: the caller's
-- search_path (shared schemas on it, like `extensions`, stay).
CREATE OR REPLACE FUNCTION pgbranch.merge_branch(
    p_branch text, p_target text DEFAULT NULL, p_dry_run boolean DEFAULT false,
    p_client_addr text DEFAULT NULL, p_path text DEFAULT NULL
) RETURNS TABLE (step integer, branch_version bigint, object_type text, identity text,
                 action text, statement text, status text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $fn$
DECLARE
    v_b        pgbranch.branches;
    v_target   text;
    v_logical  name[];
    v_physical name[];
    v_path     text[] := '{}';
    v_conflicts text;
    v_count    integer;
    v_drift    text;
    v_step     integer := 0;
    v_last     bigint;
    v_sql      text;
    e          text;
    k          integer;
    r          record;
BEGIN
    SELECT * INTO v_b FROM pgbranch.branches b WHERE b.name = p_branch;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '3D000', MESSAGE = format('branch "%s" does not exist', p_branch);
    END IF;
    IF v_b.parent IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42809', MESSAGE = format('branch "%s" has no parent to merge into', p_branch);
    END IF;
    v_target := coalesce(p_target, v_b.parent);
    IF v_target <> v_b.parent THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = format('branch "%s" can be merged only into its parent "%s"', p_branch, v_b.parent),
            DETAIL = 'The three-way merge needs the version the branch started from, which pgbranch knows for the parent only.';
    END IF;
    IF NOT p_dry_run THEN
        -- Waits for a concurrent merge of the branch, and for changes on
        -- either side; the branch row read again after that.
        SELECT * INTO v_b FROM pgbranch.begin_merge(p_branch, v_target, p_client_addr);
    END IF;
    v_last := v_b.version;
    -- Changes made around the proxy on the branch cannot be replayed.
    SELECT string_agg(format('version %s', h.version), ', ' ORDER BY h.version) INTO v_drift
    FROM pgbranch.schema_history h
    WHERE h.branch = p_branch AND h.version > v_b.merged_version AND h.action = 'drift';
    IF v_drift IS NULL AND pgbranch.branch_fingerprint(p_branch) IS DISTINCT FROM v_b.fingerprint THEN
        v_drift := 'the live schema (not recorded yet)';
    END IF;
    IF v_drift IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('branch "%s" has schema changes made without pgbranch; they cannot be merged', p_branch),
            DETAIL = format('Drift: %s.', v_drift),
            HINT = 'SHOW SCHEMA DRIFT on the branch lists them; redo them through pgbranch, or recreate the branch.';
    END IF;
    -- Conflicts: objects changed on both sides since the base, to
    -- different definitions.
    SELECT count(*), string_agg(format('%s %s', c.object_type, c.identity), E'\n' ORDER BY c.object_type, c.identity)
    INTO v_count, v_conflicts
    FROM (SELECT DISTINCT o.object_type, o.identity FROM pgbranch.object_versions o
          WHERE o.branch = p_branch AND o.version > v_b.merged_version AND o.version <= v_last) c
    WHERE EXISTS (SELECT 1 FROM pgbranch.object_versions t
                  WHERE t.branch = v_target AND t.version > v_b.parent_version
                    AND t.object_type = c.object_type AND t.identity = c.identity)
      AND (SELECT s.definition FROM pgbranch.object_state s
           WHERE s.branch = p_branch AND s.object_type = c.object_type AND s.identity = c.identity)
          IS DISTINCT FROM
          (SELECT s.definition FROM pgbranch.object_state s
           WHERE s.branch = v_target AND s.object_type = c.object_type AND s.identity = c.identity);
    IF v_count > 0 THEN
        IF p_dry_run THEN
            FOR r IN SELECT DISTINCT o.object_type, o.identity FROM pgbranch.object_versions o
                     WHERE o.branch = p_branch AND o.version > v_b.merged_version
                       AND format('%s %s', o.object_type, o.identity) = ANY (string_to_array(v_conflicts, E'\n'))
                     ORDER BY 1, 2 LOOP
                v_step := v_step + 1;
                step := v_step; branch_version := NULL; object_type := r.object_type;
                identity := r.identity; action := NULL; statement := NULL; status := 'conflict';
                RETURN NEXT;
            END LOOP;
            RETURN;
        END IF;
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('cannot merge branch "%s" into "%s": %s object(s) changed on both since the branch started', p_branch, v_target, v_count),
            DETAIL = v_conflicts,
            HINT = format('DIFF BRANCH %s shows both sides; MERGE BRANCH %s DRY RUN lists the conflicts. Nothing was applied.', quote_ident(p_branch), quote_ident(p_branch));
    END IF;
    -- The target's schema names for the statements' logical names, and the
    -- caller's search_path with any branch's copy of a versioned schema
    -- replaced by the target's.
    SELECT array_agg(s.logical ORDER BY s.logical), array_agg(s.physical ORDER BY s.logical)
    INTO v_logical, v_physical
    FROM pgbranch.branch_schemas s WHERE s.branch = v_target;
    FOR e IN SELECT btrim(x) FROM unnest(string_to_array(coalesce(p_path, '"$user", public'), ',')) x LOOP
        IF e LIKE '"%"' THEN
            e := replace(substr(e, 2, length(e) - 2), '""', '"');
        END IF;
        SELECT v_physical[array_position(v_logical, s.logical)] INTO v_sql
        FROM pgbranch.branch_schemas s WHERE s.physical = e::name;
        IF FOUND THEN
            e := v_sql;
        END IF;
        IF e IS NOT NULL AND e <> '' AND NOT quote_ident(e) = ANY (v_path) THEN
            v_path := v_path || quote_ident(e);
        END IF;
    END LOOP;
    FOR k IN 1 .. coalesce(array_length(v_physical, 1), 0) LOOP
        IF NOT quote_ident(v_physical[k]) = ANY (v_path) THEN
            v_path := v_path || quote_ident(v_physical[k]);
        END IF;
    END LOOP;
    IF NOT p_dry_run THEN
        PERFORM set_config('search_path', array_to_string(v_path, ', '), true);
    END IF;
    FOR r IN SELECT h.version, h.statement, h.command_tag, h.object_type, h.object_identity, h.action,
                    EXISTS (SELECT 1 FROM pgbranch.object_versions o
                            WHERE o.branch = h.branch AND o.version = h.version) AS changed
             FROM pgbranch.schema_history h
             WHERE h.branch = p_branch AND h.version > v_b.merged_version AND h.version <= v_last
               AND h.action NOT IN ('baseline', 'drift')
             ORDER BY h.version LOOP
        v_step := v_step + 1;
        step := v_step; branch_version := r.version; object_type := r.object_type;
        identity := r.object_identity; action := r.action; statement := r.statement;
        IF NOT r.changed THEN
            -- Changed nothing on the branch: nothing to bring over (and not
            -- to be run as the merging role).
            status := 'unchanged';
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_sql := pgbranch.map_code(r.statement, v_logical, v_physical);
        -- Inside the merge's transaction: CONCURRENTLY cannot run there.
        IF v_sql ~* '^\s*(CREATE\s+(UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX|REFRESH\s+MATERIALIZED\s+VIEW|ALTER\s+TABLE)' THEN
            v_sql := regexp_replace(v_sql, '\mCONCURRENTLY\M', '', 'gi');
        END IF;
        IF NOT p_dry_run THEN
            -- On main, what pgbranch does before such a statement sent
            -- through it: versioned tables' (and their views') AS OF
            -- functions step aside for a DROP, a versioned table's rekey
            -- trigger for an ALTER TABLE (time_travel.sql).
            IF v_target = 'main' AND r.object_type IN ('table', 'view') AND r.action = 'drop' THEN
                PERFORM pgbranch.versioning_before_merged_drop(v_target, p_branch);
            ELSIF v_target = 'main' AND r.object_type = 'table' AND r.action = 'alter' THEN
                PERFORM pgbranch.versioning_before_alter(v_target, to_regclass(
                    (SELECT string_agg(quote_ident(x), '.') FROM unnest(string_to_array(r.object_identity, '.')) x)));
            END IF;
            BEGIN
                EXECUTE v_sql;
            EXCEPTION WHEN OTHERS THEN
                DECLARE
                    v_state text;
                    v_msg   text;
                BEGIN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                    RAISE EXCEPTION USING ERRCODE = v_state,
                        MESSAGE = format('merge of branch "%s" into "%s" failed at branch version %s: %s', p_branch, v_target, r.version, v_msg),
                        DETAIL = format('Statement: %s', r.statement),
                        HINT = 'Nothing was applied. Fix the branch (or the target''s data) and merge again.';
                END;
            END;
            PERFORM pgbranch.record_merged(v_target, p_branch, r.version, r.statement, r.command_tag,
                r.object_type, r.object_identity, r.action, p_client_addr);
        END IF;
        status := CASE WHEN p_dry_run THEN 'planned' ELSE 'applied' END;
        RETURN NEXT;
    END LOOP;
    IF NOT p_dry_run THEN
        PERFORM pgbranch.finish_merge(p_branch, v_target, v_last);
    END IF;
END
$fn$;
