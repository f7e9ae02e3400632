-- pgbranch metadata, migration 2: schema branches.
--
-- Branch main is the versioned schemas themselves (public by default).
-- Branch b owns one schema per versioned schema, named <schema>@<b>
-- (always written quoted), recorded in pgbranch.branch_schemas.
--
-- Branch commands run as the caller (SECURITY INVOKER): creating a branch
-- creates schemas and objects with the caller's own privileges, so a role
-- that may not create schemas cannot create branches. Only the rows of
-- the pgbranch tables are written by SECURITY DEFINER functions, and those
-- check that the caller owns what the rows describe.

ALTER TABLE pgbranch.branches
    -- No foreign key: its check would lock the parent's row (FOR KEY
    -- SHARE) on every update of the branch row, which deadlocks a branch's
    -- DDL with a merge into its parent. The functions keep it consistent.
    ADD COLUMN parent text,
    ADD COLUMN parent_version bigint,
    ADD COLUMN created_by name NOT NULL DEFAULT session_user,
    ADD COLUMN with_data boolean NOT NULL DEFAULT false;

-- The last version of the branch merged into its parent (0: none yet).
ALTER TABLE pgbranch.branches ADD COLUMN merged_version bigint NOT NULL DEFAULT 0;
-- A version written by MERGE BRANCH: the branch and branch version it
-- replays.
ALTER TABLE pgbranch.schema_history
    ADD COLUMN merged_from text,
    ADD COLUMN merged_version bigint;

CREATE TABLE pgbranch.branch_schemas (
    branch   text NOT NULL REFERENCES pgbranch.branches (name),
    -- The schema's name as the branch's sessions write it (public).
    logical  name NOT NULL,
    -- The schema that holds it on this branch (public@feature).
    physical name NOT NULL UNIQUE,
    PRIMARY KEY (branch, logical)
);
INSERT INTO pgbranch.branch_schemas (branch, logical, physical)
VALUES ('main', 'public', 'public');

-- Proof that a history row describes a statement that really ran: ddl_begin
-- (which first records any drift as its own version) leaves a token for
-- this transaction; record_ddl and record_merged refuse to
-- write without one. A role calling them directly can only record what it
-- changed itself since its ddl_begin (and MERGE replays only versions that
-- changed an object).
-- A transaction id (txid_current(), epoch included) is never reused, so it
-- alone says whose token it is; rows of finished transactions are only
-- garbage, removed by the next issue_token.
CREATE TABLE pgbranch.ddl_tokens (
    txid        bigint NOT NULL,
    branch      text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('ddl', 'merge')),
    merged_from text
);
CREATE INDEX ddl_tokens_txid ON pgbranch.ddl_tokens (txid);

-- The role a SECURITY DEFINER function was called by (inside one,
-- current_user is the function's owner): the SET ROLE in effect, else the
-- logged-in role. Used for the privilege checks of those functions.
CREATE FUNCTION pgbranch.invoker() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT CASE current_setting('role') WHEN 'none' THEN session_user
           ELSE current_setting('role')::name END
$fn$;

-- Writes a token (SECURITY DEFINER callers only: nothing is granted).
CREATE FUNCTION pgbranch.issue_token(p_branch text, p_kind text, p_merged_from text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    -- Tokens of finished transactions.
    DELETE FROM pgbranch.ddl_tokens t
    WHERE t.txid < txid_snapshot_xmin(txid_current_snapshot());
    INSERT INTO pgbranch.ddl_tokens (txid, branch, kind, merged_from)
    VALUES (txid_current(), p_branch, p_kind, p_merged_from);
END
$fn$;

-- Checks for a token of this transaction (p_kind 'ddl' or 'merge');
-- raises when there is none.
CREATE FUNCTION pgbranch.require_token(p_branch text, p_kind text, p_merged_from text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM pgbranch.ddl_tokens t
               WHERE t.txid = txid_current()
                 AND t.branch = p_branch AND t.kind = p_kind
                 AND t.merged_from IS NOT DISTINCT FROM p_merged_from) THEN
        RETURN;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '55000',
        MESSAGE = format('pgbranch: nothing to record on branch "%s": no change was begun in this transaction', p_branch),
        HINT = 'History rows are written by pgbranch around the statements it forwards; they cannot be written directly.';
END
$fn$;

-- Key space of the advisory locks that mark a branch in use: a session on
-- a branch holds a shared lock (pgbr, hashtext(name)) for its lifetime.
CREATE FUNCTION pgbranch.lock_space() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS 'SELECT 1885827698';

CREATE FUNCTION pgbranch.check_branch_name(p_name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF p_name IS NULL OR p_name !~ '^[A-Za-z0-9_./-]{1,40}$' THEN
        RAISE EXCEPTION USING ERRCODE = '42602',
            MESSAGE = format('invalid branch name %s', coalesce(quote_literal(p_name), 'NULL')),
            HINT = 'Branch names use letters, digits, ''-'', ''_'', ''.'' and ''/'', at most 40 characters.';
    END IF;
END
$fn$;

-- p_text with every schema-qualified name of p_from[i] replaced by
-- p_to[i] (both unquoted names; written as quote_ident writes them). Used
-- on definitions PostgreSQL printed with search_path = pg_catalog, where
-- every name outside pg_catalog is qualified; names inside string
-- literals and function bodies are mapped too (nextval('public.s'),
-- qualified names in plpgsql bodies).
CREATE FUNCTION pgbranch.map_qualified(p_text text, p_from name[], p_to name[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v text := p_text;
    i integer;
    v_from text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_from, 1), 0) LOOP
        IF p_from[i] = p_to[i] THEN
            CONTINUE;
        END IF;
        v_from := quote_ident(p_from[i]);
        IF left(v_from, 1) = '"' THEN
            -- A quoted name is unambiguous wherever it occurs.
            v := replace(v, v_from || '.', quote_ident(p_to[i]) || '.');
        ELSE
            v := regexp_replace(v,
                '(^|[^[:alnum:]_$".])' || regexp_replace(v_from, '([^[:alnum:]_])', '\\\1', 'g') || '\.',
                '\1' || replace(quote_ident(p_to[i]), '\', '\\') || '.', 'g');
        END IF;
        -- SET search_path clauses of functions: 'public', 'public@b' (each
        -- element a literal of the plain name).
        v := regexp_replace(v, '(SET search_path TO [^\n]*)''(?:'
                                || regexp_replace(replace(p_from[i], '''', ''''''), '([^[:alnum:]_])', '\\\1', 'g') || '|'
                                || regexp_replace(replace(v_from, '''', ''''''), '([^[:alnum:]_])', '\\\1', 'g') || ')''',
                            '\1''' || replace(replace(p_to[i], '''', ''''''), '\', '\\') || '''', 'g');
    END LOOP;
    RETURN v;
END
$fn$;

-- map_qualified for a statement a client wrote (merge replays): string
-- literals are data and keep their text, except those that name objects
-- ('public.t'::regclass, nextval('public.s') and the like).
CREATE FUNCTION pgbranch.map_code(p_text text, p_from name[], p_to name[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_out   text := '';
    v_prev  text := '';
    pieces  text[];
    i       integer;
    piece   text;
BEGIN
    IF p_from IS NOT DISTINCT FROM p_to THEN
        RETURN p_text;
    END IF;
    SELECT array_agg(x.m[1] ORDER BY x.n) INTO pieces
    FROM regexp_matches(p_text, $re$('(?:[^']|'')*'|[^']+|')$re$, 'g') WITH ORDINALITY AS x(m, n);
    FOR i IN 1 .. coalesce(array_length(pieces, 1), 0) LOOP
        piece := pieces[i];
        IF left(piece, 1) <> '''' THEN
            v_out := v_out || pgbranch.map_qualified(piece, p_from, p_to);
        ELSIF coalesce(pieces[i + 1], '') ~* '^\s*::\s*(pg_catalog\.)?reg'
              OR v_prev ~* '(nextval|setval|currval|to_regclass|pg_get_serial_sequence)\s*\(\s*$' THEN
            v_out := v_out || pgbranch.map_qualified(piece, p_from, p_to);
        ELSE
            v_out := v_out || piece;
        END IF;
        v_prev := piece;
    END LOOP;
    RETURN v_out;
END
$fn$;

-- The reverse for a branch's own listing: physical names back to logical
-- ones (quoted physical names are distinctive: they hold an @).
CREATE FUNCTION pgbranch.unmap(p_text text, p_physical name[], p_logical name[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v text := p_text;
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_physical, 1), 0) LOOP
        IF p_physical[i] <> p_logical[i] THEN
            v := replace(v, quote_ident(p_physical[i]), quote_ident(p_logical[i]));
            -- search_path values are literals of the plain name.
            v := replace(v, '''' || replace(p_physical[i], '''', '''''') || '''',
                         '''' || replace(p_logical[i], '''', '''''') || '''');
        END IF;
    END LOOP;
    RETURN v;
END
$fn$;

-- The objects of a branch, named as its sessions name them (logical
-- schema names). main: every schema except other branches' (p_versioned:
-- only main's versioned schemas); another branch: its own schemas.
CREATE FUNCTION pgbranch.branch_objects(p_branch text, p_versioned boolean DEFAULT false)
RETURNS TABLE (object_type text, identity text, definition text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $fn$
DECLARE
    v_physical name[];
    v_logical  name[];
    v_others   name[];
BEGIN
    SELECT array_agg(s.physical ORDER BY s.logical), array_agg(s.logical ORDER BY s.logical)
    INTO v_physical, v_logical
    FROM pgbranch.branch_schemas s WHERE s.branch = p_branch;
    IF p_branch = 'main' THEN
        SELECT array_agg(s.physical) INTO v_others
        FROM pgbranch.branch_schemas s WHERE s.branch <> 'main';
        RETURN QUERY SELECT o.object_type, o.identity, o.definition
            FROM pgbranch.schema_objects(CASE WHEN p_versioned THEN coalesce(v_physical, '{}') END, v_others) o;
    ELSE
        RETURN QUERY SELECT o.object_type,
                            pgbranch.unmap(o.identity, v_physical, v_logical),
                            pgbranch.unmap(o.definition, v_physical, v_logical)
            FROM pgbranch.schema_objects(coalesce(v_physical, '{}'), NULL) o;
    END IF;
END
$fn$;

CREATE FUNCTION pgbranch.branch_fingerprint(p_branch text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT md5(coalesce(string_agg(
               o.object_type || E'\x1f' || o.identity || E'\x1f' || md5(coalesce(o.definition, '')),
               E'\x1e' ORDER BY o.object_type COLLATE "C", o.identity COLLATE "C"), ''))
    FROM pgbranch.branch_objects(p_branch) o
$fn$;

-- History functions of migration 1, now per branch.
CREATE OR REPLACE FUNCTION pgbranch.write_version(
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
    FROM pgbranch.branch_objects(p_branch) l
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

CREATE OR REPLACE FUNCTION pgbranch.ddl_begin(p_branch text, p_client_addr text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM pgbranch.begin_change(p_branch, p_client_addr, 'ddl');
END
$fn$;

-- Locks the branch row, records drift, issues the token.
CREATE FUNCTION pgbranch.begin_change(p_branch text, p_client_addr text, p_kind text,
                                      p_merged_from text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
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
    PERFORM pgbranch.issue_token(p_branch, p_kind, p_merged_from);
    v_now := pgbranch.catalog_stamp();
    IF v_now IS NOT DISTINCT FROM v_stamp THEN
        RETURN;
    END IF;
    IF v_fp IS NOT DISTINCT FROM pgbranch.branch_fingerprint(p_branch) THEN
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

CREATE OR REPLACE FUNCTION pgbranch.drift(p_branch text DEFAULT 'main')
RETURNS TABLE (object_type text, identity text, change text,
               recorded_definition text, live_definition text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT coalesce(l.object_type, s.object_type), coalesce(l.identity, s.identity),
           CASE WHEN s.identity IS NULL THEN 'added'
                WHEN l.identity IS NULL THEN 'dropped'
                ELSE 'changed' END,
           s.definition, l.definition
    FROM pgbranch.branch_objects(p_branch) l
    FULL JOIN (SELECT * FROM pgbranch.object_state WHERE branch = p_branch) s
           ON s.object_type = l.object_type AND s.identity = l.identity
    WHERE l.definition IS DISTINCT FROM s.definition
    ORDER BY 1, 2
$fn$;

-- A branch session's statements reach the server with the branch's
-- schema names; they are recorded as the client wrote them (logical).
CREATE OR REPLACE FUNCTION pgbranch.record_ddl(
    p_branch text, p_statement text, p_tag text, p_object_type text,
    p_identity text, p_action text, p_client_addr text, p_rows bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_version   bigint;
    v_statement text := p_statement;
BEGIN
    PERFORM pgbranch.require_token(p_branch, 'ddl');
    UPDATE pgbranch.branches SET version = version + 1 WHERE name = p_branch
    RETURNING version INTO v_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('pgbranch: branch "%s" does not exist', p_branch);
    END IF;
    IF p_branch <> 'main' THEN
        SELECT pgbranch.unmap(p_statement, array_agg(s.physical), array_agg(s.logical))
        INTO v_statement
        FROM pgbranch.branch_schemas s WHERE s.branch = p_branch;
    END IF;
    PERFORM pgbranch.write_version(p_branch, v_version, v_statement,
        CASE WHEN p_rows IS NULL THEN p_tag ELSE p_tag || ' ' || p_rows END,
        p_object_type, p_identity, p_action, p_client_addr);
    RETURN v_version;
END
$fn$;

-- Records a statement that ran outside a transaction block (CREATE INDEX
-- CONCURRENTLY and the like) after it committed: there was no ddl_begin
-- in its transaction. Accepted only for such statements, and only index
-- changes are attributed to it.
CREATE FUNCTION pgbranch.record_ddl_late(
    p_branch text, p_statement text, p_tag text, p_object_type text,
    p_identity text, p_action text, p_client_addr text, p_rows bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_version bigint;
    v_other   text;
BEGIN
    IF p_statement !~* '^\s*(CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY|DROP\s+INDEX\s+CONCURRENTLY|REINDEX\s.*CONCURRENTLY)'
       OR p_object_type <> 'index' THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = 'pgbranch: only statements that run outside a transaction block are recorded after the fact';
    END IF;
    PERFORM 1 FROM pgbranch.branches WHERE name = p_branch FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('pgbranch: branch "%s" does not exist', p_branch);
    END IF;
    PERFORM pgbranch.issue_token(p_branch, 'ddl');
    v_version := pgbranch.record_ddl(p_branch, p_statement, p_tag, p_object_type,
        p_identity, p_action, p_client_addr, p_rows);
    SELECT string_agg(DISTINCT o.object_type, ', ') INTO v_other
    FROM pgbranch.object_versions o
    WHERE o.branch = p_branch AND o.version = v_version AND o.object_type <> 'index';
    IF v_other IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('pgbranch: %s changed alongside an index built outside a transaction block; record refused', v_other),
            HINT = 'SHOW SCHEMA DRIFT lists changes made around pgbranch.';
    END IF;
    RETURN v_version;
END
$fn$;

-- Splits SQL that PostgreSQL printed into statements (each ending in ';'),
-- minding quotes, dollar quotes, comments and BEGIN ATOMIC bodies.
CREATE FUNCTION pgbranch.split_sql(p_sql text) RETURNS SETOF text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    b      bytea := convert_to(p_sql, 'UTF8');
    n      integer := length(b);
    i      integer := 0;
    start  integer := 0;
    c      integer;
    j      integer;
    depth  integer := 0;
    word   text;
    prev   text := '';
    tag    bytea;
    esc    boolean;
    ident  boolean := false;  -- previous byte is part of an identifier
BEGIN
    WHILE i < n LOOP
        c := get_byte(b, i);
        IF (c BETWEEN 65 AND 90) OR (c BETWEEN 97 AND 122) OR c = 95 OR c >= 128 THEN
            IF ident THEN
                i := i + 1;
                CONTINUE;
            END IF;
            -- A word: read it whole.
            j := i;
            WHILE j < n LOOP
                c := get_byte(b, j);
                EXIT WHEN NOT ((c BETWEEN 65 AND 90) OR (c BETWEEN 97 AND 122) OR c = 95
                               OR c >= 128 OR (c BETWEEN 48 AND 57) OR c = 36);
                j := j + 1;
            END LOOP;
            IF j < n AND get_byte(b, j) = 39 AND j - i = 1 THEN
                -- E'...' and friends: the quote is read next.
                ident := false;
                i := j;
                CONTINUE;
            END IF;
            word := upper(convert_from(substring(b FROM i + 1 FOR j - i), 'UTF8'));
            IF word = 'ATOMIC' AND prev = 'BEGIN' THEN
                depth := depth + 1;
            ELSIF word = 'CASE' AND depth > 0 THEN
                depth := depth + 1;
            ELSIF word = 'END' AND depth > 0 THEN
                depth := depth - 1;
            END IF;
            prev := word;
            ident := true;
            i := j;
            CONTINUE;
        END IF;
        IF (c BETWEEN 48 AND 57) THEN
            i := i + 1;
            CONTINUE;  -- digits keep `ident` as it was
        END IF;
        ident := false;
        IF c = 39 THEN
            esc := i > 0 AND get_byte(b, i - 1) IN (69, 101)
                   AND (i < 2 OR NOT ((get_byte(b, i - 2) BETWEEN 65 AND 90)
                                      OR (get_byte(b, i - 2) BETWEEN 97 AND 122)
                                      OR get_byte(b, i - 2) = 95));
            i := i + 1;
            WHILE i < n LOOP
                c := get_byte(b, i);
                IF esc AND c = 92 THEN
                    i := i + 2;
                ELSIF c = 39 THEN
                    IF i + 1 < n AND get_byte(b, i + 1) = 39 THEN
                        i := i + 2;
                    ELSE
                        EXIT;
                    END IF;
                ELSE
                    i := i + 1;
                END IF;
            END LOOP;
            i := i + 1;
        ELSIF c = 34 THEN
            i := i + 1;
            WHILE i < n LOOP
                IF get_byte(b, i) = 34 THEN
                    IF i + 1 < n AND get_byte(b, i + 1) = 34 THEN
                        i := i + 2;
                    ELSE
                        EXIT;
                    END IF;
                ELSE
                    i := i + 1;
                END IF;
            END LOOP;
            i := i + 1;
            ident := true;
        ELSIF c = 36 THEN
            j := i + 1;
            WHILE j < n LOOP
                c := get_byte(b, j);
                EXIT WHEN NOT ((c BETWEEN 65 AND 90) OR (c BETWEEN 97 AND 122) OR c = 95
                               OR c >= 128 OR (c BETWEEN 48 AND 57));
                j := j + 1;
            END LOOP;
            IF j < n AND get_byte(b, j) = 36
               AND NOT (j > i + 1 AND get_byte(b, i + 1) BETWEEN 48 AND 57) THEN
                tag := substring(b FROM i + 1 FOR j - i + 1);
                c := position(tag IN substring(b FROM j + 2));
                IF c = 0 THEN
                    i := n;
                ELSE
                    i := j + 1 + c - 1 + length(tag);
                END IF;
            ELSE
                i := i + 1;
            END IF;
        ELSIF c = 45 AND i + 1 < n AND get_byte(b, i + 1) = 45 THEN
            c := position('\x0a'::bytea IN substring(b FROM i + 1));
            i := CASE WHEN c = 0 THEN n ELSE i + c END;
        ELSIF c = 47 AND i + 1 < n AND get_byte(b, i + 1) = 42 THEN
            c := position('\x2a2f'::bytea IN substring(b FROM i + 3));
            i := CASE WHEN c = 0 THEN n ELSE i + 2 + c + 1 END;
        ELSIF c = 59 AND depth = 0 THEN
            RETURN NEXT btrim(convert_from(substring(b FROM start + 1 FOR i - start + 1), 'UTF8'), E' \n\t\r');
            i := i + 1;
            start := i;
        ELSE
            i := i + 1;
        END IF;
    END LOOP;
    IF btrim(convert_from(substring(b FROM start + 1), 'UTF8'), E' \n\t\r;') <> '' THEN
        RETURN NEXT btrim(convert_from(substring(b FROM start + 1), 'UTF8'), E' \n\t\r');
    END IF;
END
$fn$;

-- Runs statements grouped by object (p_group), in order within a group,
-- retrying what fails until a round makes no progress: dependencies
-- between objects (a view on a view, a serial column's sequence and its
-- OWNED BY) resolve themselves. What never runs is, with p_final, an
-- error naming the object (the caller's transaction fails), and
-- otherwise handed back (left_stmts, left_groups) for a later phase.
-- rows_done: rows the statements processed.
CREATE FUNCTION pgbranch.run_in_order(
    p_stmts text[], p_group text[], p_what text, p_final boolean DEFAULT true,
    OUT left_stmts text[], OUT left_groups text[], OUT rows_done bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    n        integer := coalesce(array_length(p_stmts, 1), 0);
    done     boolean[] := array_fill(false, ARRAY[greatest(n, 1)]);
    err      text[] := array_fill(NULL::text, ARRAY[greatest(n, 1)]);
    state    text[] := array_fill(NULL::text, ARRAY[greatest(n, 1)]);
    v_state  text;
    v_rows   bigint;
    i        integer;
    progress boolean;
    left_    integer := n;
    v_report text := '';
    v_count  integer := 0;
BEGIN
    left_stmts := '{}';
    left_groups := '{}';
    rows_done := 0;
    LOOP
        progress := false;
        FOR i IN 1 .. n LOOP
            CONTINUE WHEN done[i];
            -- The previous statement of the same object must have run.
            CONTINUE WHEN i > 1 AND p_group[i - 1] = p_group[i] AND NOT done[i - 1];
            BEGIN
                EXECUTE p_stmts[i];
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                rows_done := rows_done + v_rows;
                done[i] := true;
                progress := true;
                left_ := left_ - 1;
            EXCEPTION WHEN OTHERS THEN
                err[i] := SQLERRM;
                state[i] := SQLSTATE;
            END;
        END LOOP;
        EXIT WHEN left_ = 0 OR NOT progress;
    END LOOP;
    IF left_ = 0 THEN
        RETURN;
    END IF;
    IF NOT p_final THEN
        FOR i IN 1 .. n LOOP
            IF NOT done[i] THEN
                left_stmts := left_stmts || p_stmts[i];
                left_groups := left_groups || p_group[i];
            END IF;
        END LOOP;
        RETURN;
    END IF;
    FOR i IN 1 .. n LOOP
        IF NOT done[i] AND (i = 1 OR p_group[i - 1] <> p_group[i] OR done[i - 1]) THEN
            v_count := v_count + 1;
            -- One SQLSTATE for every failure is the error's own.
            v_state := CASE WHEN v_count = 1 OR v_state = state[i] THEN state[i] ELSE '55000' END;
            IF v_count <= 10 THEN
                v_report := v_report || format(E'\n%s: %s (in: %s)', p_group[i], err[i], left(p_stmts[i], 200));
            END IF;
        END IF;
    END LOOP;
    RAISE EXCEPTION USING ERRCODE = coalesce(v_state, '55000'),
        MESSAGE = format('pgbranch: %s failed for %s object(s)', p_what, v_count),
        DETAIL = ltrim(v_report, E'\n');
END
$fn$;

-- Order in which object kinds are created.
CREATE FUNCTION pgbranch.kind_rank(p_type text) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT coalesce(array_position(ARRAY[
        'schema', 'extension', 'type', 'sequence', 'function', 'procedure',
        'aggregate', 'table', 'foreign table', 'view', 'materialized view',
        'index', 'trigger', 'policy', 'rule', 'statistics object'], p_type), 100)
$fn$;

-- Writes the new branch's rows. SECURITY DEFINER: checks that the caller
-- could create the branch's schemas itself.
CREATE FUNCTION pgbranch.register_branch(p_name text, p_parent text, p_with_data boolean)
RETURNS TABLE (logical name, parent_physical name, physical name)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_parent_version bigint;
    r record;
BEGIN
    PERFORM pgbranch.check_branch_name(p_name);
    IF NOT has_database_privilege(pgbranch.invoker(), current_database(), 'CREATE') THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('permission denied to create branch "%s"', p_name),
            DETAIL = format('A branch is a set of schemas, and role %I may not create schemas in database %I.', pgbranch.invoker(), current_database()),
            HINT = 'GRANT CREATE ON DATABASE to the role, or create the branch as a role that has it.';
    END IF;
    -- Waits for schema changes in progress on the parent, so the branch
    -- starts from a committed version.
    SELECT b.version INTO v_parent_version FROM pgbranch.branches b WHERE b.name = p_parent FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('branch "%s" does not exist', p_parent),
            HINT = 'SHOW BRANCHES lists the branches.';
    END IF;
    BEGIN
        INSERT INTO pgbranch.branches (name, parent, parent_version, with_data, version, created_by)
        VALUES (p_name, p_parent, v_parent_version, p_with_data, 0, pgbranch.invoker());
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION USING ERRCODE = '42710',
            MESSAGE = format('branch "%s" already exists', p_name);
    END;
    FOR r IN SELECT s.logical, s.physical FROM pgbranch.branch_schemas s
             WHERE s.branch = p_parent ORDER BY s.logical LOOP
        IF octet_length(r.logical || '@' || p_name) > 63 THEN
            RAISE EXCEPTION USING ERRCODE = '42622',
                MESSAGE = format('branch name "%s" is too long for schema %I', p_name, r.logical),
                DETAIL = format('The branch''s copy of schema %I is named %I, longer than PostgreSQL''s 63 bytes.', r.logical, r.logical || '@' || p_name);
        END IF;
        BEGIN
            INSERT INTO pgbranch.branch_schemas (branch, logical, physical)
            VALUES (p_name, r.logical, r.logical || '@' || p_name);
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION USING ERRCODE = '42P06',
                MESSAGE = format('schema %I is already used by another branch', r.logical || '@' || p_name);
        END;
        logical := r.logical;
        parent_physical := r.physical;
        physical := r.logical || '@' || p_name;
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- Records the new branch's first version (its objects as created).
-- SECURITY DEFINER: the caller must own the branch's schemas.
CREATE FUNCTION pgbranch.finish_branch(p_name text, p_statement text, p_client_addr text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
BEGIN
    PERFORM 1 FROM pgbranch.branches WHERE name = p_name AND version = 0 FOR UPDATE;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM pgbranch.schema_history WHERE branch = p_name) THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('branch "%s" is not being created', p_name);
    END IF;
    FOR r IN SELECT s.physical, n.nspowner FROM pgbranch.branch_schemas s
             LEFT JOIN pg_namespace n ON n.nspname = s.physical
             WHERE s.branch = p_name LOOP
        IF r.nspowner IS NULL OR NOT pg_has_role(pgbranch.invoker(), r.nspowner, 'USAGE') THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = format('schema %I of branch "%s" is not owned by role %I', r.physical, p_name, pgbranch.invoker());
        END IF;
    END LOOP;
    PERFORM pgbranch.write_version(p_name, 0, p_statement, 'CREATE BRANCH', 'branch',
        p_name, 'create', p_client_addr);
END
$fn$;

-- CREATE BRANCH: create_branch.sql (run with this migration).

-- Marks the calling session as using a branch and returns its schemas.
CREATE FUNCTION pgbranch.enter_branch(p_name text)
RETURNS TABLE (logical name, physical name)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM pgbranch.check_branch_name(p_name);
    IF NOT EXISTS (SELECT 1 FROM pgbranch.branches b WHERE b.name = p_name) THEN
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('branch "%s" does not exist', p_name),
            HINT = format('Create it with CREATE BRANCH %s (connected to main), or "pgbranch branch create %s".', quote_ident(p_name), p_name);
    END IF;
    PERFORM pg_advisory_lock_shared(pgbranch.lock_space(), hashtext(p_name));
    -- DROP BRANCH may have committed while this waited for the lock (the
    -- lock wait ends the statement's snapshot: read the catalog afresh).
    IF NOT EXISTS (SELECT 1 FROM pgbranch.branch_schemas s
                   JOIN pg_namespace n ON n.nspname = s.physical
                   WHERE s.branch = p_name) THEN
        PERFORM pg_advisory_unlock_shared(pgbranch.lock_space(), hashtext(p_name));
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('branch "%s" does not exist', p_name),
            DETAIL = 'It was dropped while this session was starting.';
    END IF;
    RETURN QUERY SELECT s.logical, s.physical FROM pgbranch.branch_schemas s
                 WHERE s.branch = p_name ORDER BY s.logical;
END
$fn$;

-- The search_path configured for this session's role and database (ALTER
-- ROLE / DATABASE ... SET), most specific first; NULL when none is.
CREATE FUNCTION pgbranch.configured_search_path() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT substr(c, length('search_path=') + 1)
    FROM pg_db_role_setting s
    CROSS JOIN LATERAL unnest(s.setconfig) c
    WHERE c LIKE 'search\_path=%'
      AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user))
      AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
    ORDER BY (s.setrole <> 0 AND s.setdatabase <> 0) DESC, s.setrole <> 0 DESC, s.setdatabase <> 0 DESC
    LIMIT 1
$fn$;

-- SET pgbranch.branch: moves the calling session from branch p_old to
-- p_new. p_path is the session's search_path (read by the caller: inside
-- this function it is pinned); each schema of p_old on it is replaced by
-- p_new's copy of the same logical schema, and the result is set for the
-- session (transactional: it rolls back with the caller's statement).
CREATE FUNCTION pgbranch.switch_branch(p_new text, p_old text, p_path text,
                                       p_check_idle boolean DEFAULT true)
RETURNS TABLE (logical name, physical name, search_path text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_old_log  name[];
    v_old_phys name[];
    v_new_log  name[];
    v_new_phys name[];
    v_out      text[] := '{}';
    e          text;
    k          integer;
BEGIN
    PERFORM pgbranch.check_branch_name(p_new);
    -- Sent alone in a simple Query, it starts its own transaction: a
    -- transaction block opened earlier started before this statement.
    IF p_check_idle AND now() <> statement_timestamp() THEN
        RAISE EXCEPTION USING ERRCODE = '25001',
            MESSAGE = 'SET pgbranch.branch cannot run inside a transaction block',
            HINT = 'COMMIT or ROLLBACK first: a branch is chosen for the session.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgbranch.branches b WHERE b.name = p_new) THEN
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('branch "%s" does not exist', p_new),
            HINT = format('Create it with CREATE BRANCH %s.', quote_ident(p_new));
    END IF;
    SELECT array_agg(s.logical), array_agg(s.physical) INTO v_old_log, v_old_phys
    FROM pgbranch.branch_schemas s WHERE s.branch = p_old;
    SELECT array_agg(s.logical ORDER BY s.logical), array_agg(s.physical ORDER BY s.logical)
    INTO v_new_log, v_new_phys
    FROM pgbranch.branch_schemas s WHERE s.branch = p_new;
    FOR e IN SELECT btrim(x) FROM unnest(string_to_array(p_path, ',')) x LOOP
        IF e LIKE '"%"' THEN
            e := replace(substr(e, 2, length(e) - 2), '""', '"');
        END IF;
        k := array_position(v_old_phys, e::name);
        IF k IS NOT NULL THEN
            e := v_new_phys[array_position(v_new_log, v_old_log[k])];
        END IF;
        IF e IS NOT NULL AND e <> '' THEN
            v_out := v_out || quote_ident(e);
        END IF;
    END LOOP;
    -- (DISCARD ALL may have released it already.)
    IF p_old <> 'main' AND EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
          AND l.classid = pgbranch.lock_space()::oid AND l.objid = hashtext(p_old)::oid
          AND l.objsubid = 2 AND l.mode = 'ShareLock') THEN
        PERFORM pg_advisory_unlock_shared(pgbranch.lock_space(), hashtext(p_old));
    END IF;
    IF p_new <> 'main' THEN
        PERFORM pg_advisory_lock_shared(pgbranch.lock_space(), hashtext(p_new));
    END IF;
    PERFORM set_config('search_path', array_to_string(v_out, ', '), false);
    RETURN QUERY SELECT s.logical, s.physical, array_to_string(v_out, ', ')
                 FROM pgbranch.branch_schemas s WHERE s.branch = p_new ORDER BY s.logical;
END
$fn$;

-- Removes the branch's rows once its schemas are gone. SECURITY DEFINER:
-- only after the caller could drop the schemas.
CREATE FUNCTION pgbranch.forget_branch(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM pgbranch.branch_schemas s JOIN pg_namespace n ON n.nspname = s.physical
               WHERE s.branch = p_name) THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('branch "%s" still has its schemas', p_name);
    END IF;
    DELETE FROM pgbranch.object_state WHERE branch = p_name;
    DELETE FROM pgbranch.object_versions WHERE branch = p_name;
    DELETE FROM pgbranch.schema_history WHERE branch = p_name;
    DELETE FROM pgbranch.branch_schemas WHERE branch = p_name;
    DELETE FROM pgbranch.branches WHERE name = p_name;
END
$fn$;

-- DROP BRANCH: refused while sessions use the branch unless p_force.
CREATE FUNCTION pgbranch.drop_branch(p_name text, p_if_exists boolean DEFAULT false, p_force boolean DEFAULT false)
RETURNS TABLE (branch text, dropped boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_users bigint;
    r record;
BEGIN
    PERFORM pgbranch.check_branch_name(p_name);
    IF p_name = 'main' THEN
        RAISE EXCEPTION USING ERRCODE = '42809', MESSAGE = 'branch "main" cannot be dropped';
    END IF;
    PERFORM 1 FROM pgbranch.branches b WHERE b.name = p_name;
    IF NOT FOUND THEN
        IF p_if_exists THEN
            RAISE NOTICE 'branch "%" does not exist, skipping', p_name;
            branch := p_name;
            dropped := false;
            RETURN NEXT;
            RETURN;
        END IF;
        RAISE EXCEPTION USING ERRCODE = '3D000', MESSAGE = format('branch "%s" does not exist', p_name);
    END IF;
    IF EXISTS (SELECT 1 FROM pgbranch.branches b WHERE b.parent = p_name) THEN
        RAISE EXCEPTION USING ERRCODE = '2BP01',
            MESSAGE = format('cannot drop branch "%s": other branches were created from it', p_name),
            DETAIL = (SELECT 'Branches: ' || string_agg(b.name, ', ' ORDER BY b.name) FROM pgbranch.branches b WHERE b.parent = p_name);
    END IF;
    IF NOT p_force AND NOT pg_try_advisory_xact_lock(pgbranch.lock_space(), hashtext(p_name)) THEN
        SELECT count(*) INTO v_users FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.classid = pgbranch.lock_space()::oid
          AND l.objid = hashtext(p_name)::oid AND l.objsubid = 2 AND l.granted
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
        RAISE EXCEPTION USING ERRCODE = '55006',
            MESSAGE = format('branch "%s" is in use by %s session(s)', p_name, v_users),
            HINT = format('Close those sessions, or DROP BRANCH %s FORCE.', quote_ident(p_name));
    END IF;
    FOR r IN SELECT s.physical FROM pgbranch.branch_schemas s
             JOIN pg_namespace n ON n.nspname = s.physical WHERE s.branch = p_name LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', r.physical);
    END LOOP;
    PERFORM pgbranch.forget_branch(p_name);
    branch := p_name;
    dropped := true;
    RETURN NEXT;
END
$fn$;

-- SHOW BRANCHES.
CREATE FUNCTION pgbranch.list_branches()
RETURNS TABLE (name text, parent text, parent_version bigint, created_at timestamptz,
               created_by name, version bigint, with_data boolean, schemas text, size bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT b.name, b.parent, b.parent_version, b.created_at, b.created_by, b.version, b.with_data,
           (SELECT string_agg(quote_ident(s.physical), ', ' ORDER BY s.logical)
            FROM pgbranch.branch_schemas s WHERE s.branch = b.name),
           (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
            FROM pgbranch.branch_schemas s
            JOIN pg_namespace n ON n.nspname = s.physical
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm')
            WHERE s.branch = b.name)
    FROM pgbranch.branches b
    ORDER BY b.name = 'main' DESC, b.name
$fn$;

-- DIFF BRANCH: per object, added / removed / changed on p_branch against
-- p_other, with both definitions (logical schema names).
CREATE FUNCTION pgbranch.diff_branches(p_branch text, p_other text DEFAULT NULL)
RETURNS TABLE (object_type text, identity text, change text,
               definition text, other_definition text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET jit = off AS $fn$
DECLARE
    v_other text := coalesce(p_other, (SELECT b.parent FROM pgbranch.branches b WHERE b.name = p_branch), 'main');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgbranch.branches b WHERE b.name = p_branch) THEN
        RAISE EXCEPTION USING ERRCODE = '3D000', MESSAGE = format('branch "%s" does not exist', p_branch);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgbranch.branches b WHERE b.name = v_other) THEN
        RAISE EXCEPTION USING ERRCODE = '3D000', MESSAGE = format('branch "%s" does not exist', v_other);
    END IF;
    RETURN QUERY
    SELECT coalesce(a.object_type, o.object_type), coalesce(a.identity, o.identity),
           CASE WHEN o.identity IS NULL THEN 'added'
                WHEN a.identity IS NULL THEN 'removed'
                ELSE 'changed' END,
           a.definition, o.definition
    FROM (SELECT * FROM pgbranch.branch_objects(p_branch, true) x WHERE x.object_type <> 'schema') a
    FULL JOIN (SELECT * FROM pgbranch.branch_objects(v_other, true) y WHERE y.object_type <> 'schema') o
           ON o.object_type = a.object_type AND o.identity = a.identity
    WHERE a.definition IS DISTINCT FROM o.definition
    ORDER BY 1, 2;
END
$fn$;

-- Records one replayed statement in the target's history, as merged from
-- the branch. Only inside a merge begun by begin_merge in this
-- transaction (its token).
CREATE FUNCTION pgbranch.record_merged(
    p_target text, p_branch text, p_branch_version bigint, p_statement text, p_tag text,
    p_object_type text, p_identity text, p_action text, p_client_addr text
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_version bigint;
BEGIN
    PERFORM pgbranch.require_token(p_target, 'merge', p_branch);
    UPDATE pgbranch.branches SET version = version + 1 WHERE name = p_target
    RETURNING version INTO v_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '3D000',
            MESSAGE = format('pgbranch: branch "%s" does not exist', p_target);
    END IF;
    PERFORM pgbranch.write_version(p_target, v_version, p_statement, p_tag,
        p_object_type, p_identity, p_action, p_client_addr);
    UPDATE pgbranch.schema_history SET merged_from = p_branch, merged_version = p_branch_version
    WHERE branch = p_target AND version = v_version;
    RETURN v_version;
END
$fn$;

-- Starts a merge of p_branch into p_target: only a role that owns the
-- branch's schemas (or is a member of their owner) may. Locks the branch
-- row (so that a concurrent merge of it, or a change on it, waits), then
-- the target's like any change (drift recorded first), and returns the
-- branch row as it is now.
CREATE FUNCTION pgbranch.begin_merge(p_branch text, p_target text, p_client_addr text)
RETURNS SETOF pgbranch.branches
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM pgbranch.branch_schemas s
               LEFT JOIN pg_namespace n ON n.nspname = s.physical
               WHERE s.branch = p_branch
                 AND (n.oid IS NULL OR NOT pg_has_role(pgbranch.invoker(), n.nspowner, 'USAGE'))) THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('permission denied to merge branch "%s"', p_branch),
            DETAIL = format('Role %I does not own the branch''s schemas.', pgbranch.invoker());
    END IF;
    PERFORM 1 FROM pgbranch.branches WHERE name = p_branch FOR UPDATE;
    PERFORM pgbranch.begin_change(p_target, p_client_addr, 'merge', p_branch);
    RETURN QUERY SELECT * FROM pgbranch.branches WHERE name = p_branch;
END
$fn$;

-- Ends a merge: the branch's next merge starts after p_version (the last
-- branch version the merge considered), from the target's version now.
CREATE FUNCTION pgbranch.finish_merge(p_branch text, p_target text, p_version bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM pgbranch.require_token(p_target, 'merge', p_branch);
    UPDATE pgbranch.branches b
    SET merged_version = greatest(b.merged_version, p_version),
        parent_version = (SELECT p.version FROM pgbranch.branches p WHERE p.name = p_target)
    WHERE b.name = p_branch;
END
$fn$;

-- pgbranch.merge_branch is in merge_branch.sql (re-runnable; migration 2
-- runs it before this file, migration 4 again).

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgbranch FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgbranch.ddl_begin(text, text),
    pgbranch.record_ddl(text, text, text, text, text, text, text, bigint),
    pgbranch.schema_objects(name[], name[]), pgbranch.schema_fingerprint(), pgbranch.catalog_stamp(),
    pgbranch.drift(text), pgbranch.definition_at(text, text, bigint),
    pgbranch.state_fingerprint(text),
    pgbranch.lock_space(), pgbranch.check_branch_name(text),
    pgbranch.map_qualified(text, name[], name[]), pgbranch.map_code(text, name[], name[]),
    pgbranch.unmap(text, name[], name[]),
    pgbranch.branch_objects(text, boolean), pgbranch.branch_fingerprint(text),
    pgbranch.split_sql(text), pgbranch.run_in_order(text[], text[], text, boolean), pgbranch.kind_rank(text),
    pgbranch.register_branch(text, text, boolean), pgbranch.finish_branch(text, text, text),
    pgbranch.create_branch(text, text, boolean, text, text), pgbranch.enter_branch(text),
    pgbranch.configured_search_path(),
    pgbranch.record_ddl_late(text, text, text, text, text, text, text, bigint), pgbranch.switch_branch(text, text, text, boolean),
    pgbranch.forget_branch(text), pgbranch.drop_branch(text, boolean, boolean),
    pgbranch.list_branches(), pgbranch.diff_branches(text, text),
    pgbranch.record_merged(text, text, bigint, text, text, text, text, text, text),
    pgbranch.begin_merge(text, text, text), pgbranch.finish_merge(text, text, bigint),
    pgbranch.merge_branch(text, text, boolean, text, text)
    TO PUBLIC;
-- Branch names and their schemas are no secret (pg_namespace shows the
-- schemas to everyone).
GRANT SELECT ON pgbranch.branches, pgbranch.branch_schemas TO PUBLIC;
