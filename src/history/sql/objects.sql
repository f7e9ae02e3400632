-- pgbranch: the live schema as a set of object definitions.
--
-- pgbranch.schema_objects() lists every user-visible schema object of the
-- database as (object_type, identity, definition):
--
-- - object_type and identity are pg_identify_object()'s type and identity
--   ('table' / 'public.users', 'function' / 'public.add(integer,integer)',
--   'trigger' / 'trg on public.users'; a domain's type is 'type'), so
--   names are canonical and quoted the way PostgreSQL quotes them.
-- - definition is executable SQL built from PostgreSQL's own pg_get_*def
--   functions: the CREATE statement, then the object's settings, COMMENT
--   ON (the object's, then its columns' and constraints'), ALTER ... OWNER
--   TO, and GRANT/REVOKE for the difference between its ACL and the
--   default one (nothing when they agree), each statement ending in ';'.
--   It holds no OIDs and nothing that changes with the data (no sequence
--   values, no matview contents), and its parts come in a fixed order
--   (columns by position, everything else by name), so an unchanged
--   object always has the same text.
--
-- Listed: schemas (public included), extensions created after initdb (not
-- their members), tables (partitioned, partitions, inheritance children,
-- typed, unlogged), foreign tables, views, materialized views, sequences
-- (standalone, serial and identity), indexes that no constraint owns,
-- functions, procedures and aggregates, triggers, types (enum, composite,
-- range, base), domains, policies, rules and extended statistics.
-- Not listed: anything in pg_catalog, information_schema, pg_toast and
-- temporary schemas, pgbranch and pgbranch_history; members of extensions;
-- constraints and the indexes they own (part of their table); partitions
-- of partitioned indexes and triggers and foreign keys cloned onto
-- partitions (part of the parent's definition); array, multirange and row
-- types and range constructors (made with their type); objects outside
-- schemas (roles, servers, user mappings, publications, event triggers,
-- default privileges) and collations, operators, operator classes, text
-- search objects and conversions. Not in definitions: column compression,
-- TOAST storage parameters, index column statistics targets, security
-- labels, privileges changed on extension members.
--
-- Replaying definitions: each one runs once the objects it names exist,
-- statement by statement where objects depend on each other both ways (a
-- serial column's DEFAULT needs its sequence, whose OWNED BY needs the
-- table; an identity sequence's ALTER SEQUENCE needs the table that
-- creates it; foreign keys in a cycle).
--
-- Both functions run with search_path = pg_catalog, so every name that is
-- not in pg_catalog comes out schema-qualified, whatever the caller's
-- search_path, and they need no privilege beyond reading the catalogs.
-- Catalog columns used exist in PostgreSQL 13 to 17.

-- p_include: only these schemas (NULL: all); p_exclude: not these (used
-- to keep branches' schemas out of main's listing). Migration 2 gave the
-- function these parameters; the old signature is dropped first.
DROP FUNCTION IF EXISTS pgbranch.schema_objects();
CREATE OR REPLACE FUNCTION pgbranch.schema_objects(p_include name[] DEFAULT NULL, p_exclude name[] DEFAULT NULL)
RETURNS TABLE (object_type text, identity text, definition text)
-- plpgsql rather than sql: a sql function is planned on every call (12-15
-- ms of ~30 at 200 tables); RETURN QUERY keeps the plan for the session.
LANGUAGE plpgsql STABLE
-- pg_temp last: otherwise it is searched first, and a caller's temporary
-- view named like a catalog would run inside SECURITY DEFINER callers.
SET search_path = pg_catalog, pg_temp
-- The plan's cost estimate can pass jit_above_cost on large schemas; JIT
-- compilation then costs more than the query (300+ ms at 2,000 tables).
SET jit = off
AS $objects$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH
-- Members of extensions: never listed (the extension is).
ext_member AS (
    SELECT d.classid, d.objid
    FROM pg_depend d
    WHERE d.deptype = 'e'
      AND d.refclassid = 'pg_catalog.pg_extension'::regclass
),
-- The schemas whose objects are listed. Temporary and TOAST schemas all
-- start with pg_, a prefix users may not create.
nsp AS (
    SELECT n.oid, n.nspname, n.nspowner, n.nspacl
    FROM pg_namespace n
    WHERE left(n.nspname, 3) <> 'pg_'
      AND n.nspname NOT IN ('information_schema', 'pgbranch', 'pgbranch_history')
      AND (p_include IS NULL OR n.nspname = ANY (p_include))
      AND (p_exclude IS NULL OR n.nspname <> ALL (p_exclude))
),
-- Relations in those schemas, extension members left out.
rel AS (
    SELECT c.oid, c.relkind, c.relname, n.nspname,
           format('%I.%I', n.nspname, c.relname) AS qname,
           c.relowner, c.relacl, c.relpersistence, c.relispartition, c.reloftype,
           c.relpartbound, c.reloptions, c.reltablespace, c.relam,
           c.relrowsecurity, c.relforcerowsecurity, c.relreplident,
           CASE c.relkind WHEN 'f' THEN 'FOREIGN TABLE'
                          WHEN 'v' THEN 'VIEW'
                          WHEN 'm' THEN 'MATERIALIZED VIEW'
                          WHEN 'S' THEN 'SEQUENCE'
                          WHEN 'i' THEN 'INDEX'
                          WHEN 'I' THEN 'INDEX'
                          ELSE 'TABLE' END AS kw,
           -- USING, WITH and TABLESPACE clauses, where not the defaults.
           coalesce((SELECT ' USING ' || quote_ident(am.amname)
                     FROM pg_am am
                     WHERE am.oid = c.relam AND am.amname <> 'heap'
                       AND c.relkind IN ('r', 'p', 'm')), '')
           || coalesce(' WITH (' || (
                  SELECT string_agg(
                             CASE WHEN strpos(o.opt, '=') = 0 THEN o.opt
                                  WHEN substr(o.opt, strpos(o.opt, '=') + 1)
                                       ~ '^(-?[0-9.]+|[A-Za-z_][A-Za-z0-9_]*)$'
                                  THEN o.opt
                                  ELSE left(o.opt, strpos(o.opt, '='))
                                       || quote_literal(substr(o.opt, strpos(o.opt, '=') + 1))
                             END, ', ' ORDER BY o.n)
                  FROM unnest(c.reloptions) WITH ORDINALITY o(opt, n)) || ')', '')
           || coalesce((SELECT ' TABLESPACE ' || quote_ident(ts.spcname)
                        FROM pg_tablespace ts
                        WHERE ts.oid = c.reltablespace AND c.relkind IN ('r', 'p', 'm')), '')
           AS storage
    FROM pg_class c
    JOIN nsp n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'i', 'I', 'c')
      AND NOT EXISTS (SELECT 1 FROM ext_member e
                      WHERE e.classid = 'pg_catalog.pg_class'::regclass AND e.objid = c.oid)
),
-- Columns of those relations: line is the column as CREATE TABLE / CREATE
-- TYPE AS (...) declare it; of_line as a typed table declares it (NULL
-- when the type says it all).
col AS (
    SELECT r.relkind, r.relispartition, r.reloftype, r.qname, r.kw,
           a.attrelid, a.attnum, a.attname, a.attislocal, a.attnotnull,
           a.attgenerated, a.attidentity, a.attstorage, a.attoptions, a.attacl,
           t.typstorage,
           coalesce(a.attstattarget::integer, -1) AS attstattarget,
           pg_get_expr(ad.adbin, ad.adrelid) AS dflt,
           (SELECT cd.description FROM pg_description cd
            WHERE cd.objoid = a.attrelid AND cd.classoid = 'pg_catalog.pg_class'::regclass
              AND cd.objsubid = a.attnum) AS description,
           quote_ident(a.attname) || ' ' || l.head || l.tail AS line,
           CASE WHEN l.tail <> '' THEN quote_ident(a.attname) || ' WITH OPTIONS' || l.tail END AS of_line
    FROM rel r
    JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    CROSS JOIN LATERAL (
        SELECT format_type(a.atttypid, a.atttypmod)
               -- Foreign table column options.
               || coalesce(' OPTIONS (' || (
                      SELECT string_agg(format('%I %L', split_part(o.opt, '=', 1),
                                               substr(o.opt, strpos(o.opt, '=') + 1)),
                                        ', ' ORDER BY o.n)
                      FROM unnest(a.attfdwoptions) WITH ORDINALITY o(opt, n)) || ')', '')
               || CASE WHEN a.attcollation <> t.typcollation THEN
                      coalesce((SELECT format(' COLLATE %I.%I', cn.nspname, co.collname)
                                FROM pg_collation co
                                JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                WHERE co.oid = a.attcollation), '')
                  ELSE '' END AS head,
               CASE a.attgenerated
                   WHEN 's' THEN format(' GENERATED ALWAYS AS (%s) STORED', pg_get_expr(ad.adbin, ad.adrelid))
                   WHEN 'v' THEN format(' GENERATED ALWAYS AS (%s) VIRTUAL', pg_get_expr(ad.adbin, ad.adrelid))
                   ELSE coalesce(' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid), '')
               END
               || CASE WHEN a.attidentity IN ('a', 'd') THEN
                      CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY'
                                         ELSE ' GENERATED BY DEFAULT AS IDENTITY' END
                      || coalesce((SELECT format(' (SEQUENCE NAME %I.%I)', sn.nspname, s.relname)
                                   FROM pg_depend d
                                   JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                                   JOIN pg_namespace sn ON sn.oid = s.relnamespace
                                   WHERE d.classid = 'pg_catalog.pg_class'::regclass
                                     AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                     AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum
                                     AND d.deptype = 'i'), '')
                  ELSE '' END
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END AS tail
    ) l
    WHERE r.relkind IN ('r', 'p', 'f', 'v', 'm', 'c')
),
-- Constraints that belong in their table's definition: not inherited,
-- not cloned from a partitioned parent, not NOT NULL (part of the column)
-- nor a constraint trigger (listed as a trigger).
con AS (
    SELECT k.oid, k.conrelid, k.conname, k.convalidated, k.conindid, k.contype,
           pg_get_constraintdef(k.oid) AS def
    FROM pg_constraint k
    JOIN rel r ON r.oid = k.conrelid
    WHERE k.contype IN ('c', 'f', 'p', 'u', 'x')
      AND k.conislocal AND k.conparentid = 0
),
-- The parenthesised list of CREATE TABLE / CREATE TYPE AS: local columns
-- by position (as a typed table declares them: only those with options),
-- then constraints by name (validated ones: the others are added NOT
-- VALID afterwards).
items AS (
    SELECT it.relid,
           string_agg(E'\n    ' || it.item, ',' ORDER BY it.grp, it.ord, it.name COLLATE "C") AS list
    FROM (SELECT c.attrelid AS relid, 1 AS grp, c.attnum::integer AS ord, ''::text AS name,
                 CASE WHEN c.reloftype <> 0 THEN c.of_line ELSE c.line END AS item
          FROM col c
          WHERE c.relkind IN ('r', 'p', 'f', 'c') AND c.attislocal AND NOT c.relispartition
            AND (c.reloftype = 0 OR c.of_line IS NOT NULL)
          UNION ALL
          SELECT k.conrelid, 2, 0, k.conname::text, format('CONSTRAINT %I %s', k.conname, k.def)
          FROM con k
          WHERE k.convalidated) it
    GROUP BY it.relid
),
-- The objects, one branch per kind: (classid, objid) for
-- pg_identify_object, the CREATE statement (body), and what the common
-- trailer needs: the keyword for COMMENT ON / ALTER ... OWNER TO / GRANT
-- ON (owner_kw NULL: no owner line), the target when it is not the
-- identity, the owner, the ACL and acldefault()'s object kind.
obj (classid, objid, body, cmt_kw, target, owner_kw, owner, acl, aclkind, grant_kw) AS (
    -- Schemas. public exists in every new database, hence IF NOT EXISTS.
    SELECT 'pg_catalog.pg_namespace'::regclass, n.oid,
           CASE WHEN n.nspname = 'public' THEN 'CREATE SCHEMA IF NOT EXISTS public;'
                ELSE format('CREATE SCHEMA %I;', n.nspname) END,
           'SCHEMA', quote_ident(n.nspname), 'SCHEMA', n.nspowner, n.nspacl, 'n'::"char", 'SCHEMA'
    FROM nsp n
    WHERE NOT EXISTS (SELECT 1 FROM ext_member e
                      WHERE e.classid = 'pg_catalog.pg_namespace'::regclass AND e.objid = n.oid)

    UNION ALL
    -- Extensions created after initdb (plpgsql comes with the database).
    SELECT 'pg_catalog.pg_extension'::regclass, x.oid,
           format('CREATE EXTENSION %I WITH SCHEMA %I VERSION %L;',
                  x.extname, xn.nspname, x.extversion),
           'EXTENSION', quote_ident(x.extname), NULL, NULL, NULL, NULL, NULL
    FROM pg_extension x
    JOIN pg_namespace xn ON xn.oid = x.extnamespace
    -- Database-wide: listed only in the whole database's listing.
    WHERE x.oid >= 16384 AND p_include IS NULL

    UNION ALL
    -- Tables, partitioned tables, partitions and foreign tables:
    -- CREATE TABLE with the local columns and constraints, PARTITION OF
    -- the parent with the partition's own constraints, or OF its type.
    SELECT 'pg_catalog.pg_class'::regclass, r.oid,
           format('CREATE %s%s %s', CASE WHEN r.relpersistence = 'u' THEN 'UNLOGGED ' ELSE '' END,
                  r.kw, r.qname)
           || CASE WHEN r.relispartition THEN
                  ' PARTITION OF ' || (SELECT format('%I.%I', pn.nspname, pc.relname)
                                      FROM pg_inherits i
                                      JOIN pg_class pc ON pc.oid = i.inhparent
                                      JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                                      WHERE i.inhrelid = r.oid)
                  || coalesce(' (' || items.list || E'\n)', '')
                  || ' ' || pg_get_expr(r.relpartbound, r.oid)
              WHEN r.reloftype <> 0 THEN
                  ' OF ' || format_type(r.reloftype, NULL)
                  || coalesce(' (' || items.list || E'\n)', '')
              ELSE
                  ' (' || coalesce(items.list, '') || E'\n)'
                  || coalesce(' INHERITS (' || (SELECT string_agg(format('%I.%I', pn.nspname, pc.relname),
                                                                  ', ' ORDER BY i.inhseqno)
                                                FROM pg_inherits i
                                                JOIN pg_class pc ON pc.oid = i.inhparent
                                                JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                                                WHERE i.inhrelid = r.oid) || ')', '')
              END
           || coalesce(' PARTITION BY ' || pg_get_partkeydef(r.oid), '')
           || r.storage
           || coalesce((SELECT ' SERVER ' || quote_ident(fs.srvname)
                               || coalesce(' OPTIONS (' || (
                                      SELECT string_agg(format('%I %L', split_part(o.opt, '=', 1),
                                                               substr(o.opt, strpos(o.opt, '=') + 1)),
                                                        ', ' ORDER BY o.n)
                                      FROM unnest(ft.ftoptions) WITH ORDINALITY o(opt, n)) || ')', '')
                        FROM pg_foreign_table ft
                        JOIN pg_foreign_server fs ON fs.oid = ft.ftserver
                        WHERE ft.ftrelid = r.oid), '')
           || ';',
           r.kw, r.qname, r.kw, r.relowner, r.relacl, 'r'::"char", 'TABLE'
    FROM rel r
    LEFT JOIN items ON items.relid = r.oid
    WHERE r.relkind IN ('r', 'p', 'f')

    UNION ALL
    -- Views.
    SELECT 'pg_catalog.pg_class'::regclass, r.oid,
           format(E'CREATE VIEW %s%s AS\n%s', r.qname, r.storage, pg_get_viewdef(r.oid)),
           'VIEW', r.qname, 'VIEW', r.relowner, r.relacl, 'r'::"char", 'TABLE'
    FROM rel r
    WHERE r.relkind = 'v'

    UNION ALL
    -- Materialized views (created populated; the data is not part of the
    -- definition).
    SELECT 'pg_catalog.pg_class'::regclass, r.oid,
           format(E'CREATE MATERIALIZED VIEW %s%s AS\n%s', r.qname, r.storage, pg_get_viewdef(r.oid)),
           'MATERIALIZED VIEW', r.qname, 'MATERIALIZED VIEW', r.relowner, r.relacl, 'r'::"char", 'TABLE'
    FROM rel r
    WHERE r.relkind = 'm'

    UNION ALL
    -- Sequences: parameters from pg_sequence, never the current value.
    -- Standalone and serial: CREATE SEQUENCE (+ OWNED BY for serial, whose
    -- owner follows the table). Identity: the table's column creates it,
    -- so its definition is ALTER SEQUENCE with the parameters.
    SELECT 'pg_catalog.pg_class'::regclass, r.oid,
           CASE WHEN dep.deptype = 'i' THEN format('ALTER SEQUENCE %s %s;', r.qname, opts.o)
                ELSE format('CREATE %sSEQUENCE %s %s;',
                            CASE WHEN r.relpersistence = 'u' THEN 'UNLOGGED ' ELSE '' END, r.qname, opts.o)
                     || CASE WHEN dep.deptype = 'a' THEN
                            E'\n' || format('ALTER SEQUENCE %s OWNED BY %s.%I;', r.qname, dep.tq, dep.attname)
                        ELSE '' END
           END,
           'SEQUENCE', r.qname, CASE WHEN dep.deptype IS NULL THEN 'SEQUENCE' END, r.relowner,
           r.relacl, 's'::"char", 'SEQUENCE'
    FROM rel r
    JOIN pg_sequence s ON s.seqrelid = r.oid
    CROSS JOIN LATERAL (
        SELECT format('AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s %s',
                      format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax,
                      s.seqstart, s.seqcache, CASE WHEN s.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END) AS o
    ) opts
    LEFT JOIN LATERAL (
        SELECT d.deptype, format('%I.%I', tn.nspname, tc.relname) AS tq, ta.attname
        FROM pg_depend d
        JOIN pg_class tc ON tc.oid = d.refobjid
        JOIN pg_namespace tn ON tn.oid = tc.relnamespace
        JOIN pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = r.oid
          AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjsubid > 0
          AND d.deptype IN ('a', 'i')
        LIMIT 1
    ) dep ON true
    WHERE r.relkind = 'S'

    UNION ALL
    -- Indexes no constraint owns, and not partitions of a partitioned
    -- index. A partitioned index is created on the parent and all its
    -- partitions (pg_get_indexdef says ON ONLY: dropped here).
    SELECT 'pg_catalog.pg_class'::regclass, r.oid,
           CASE WHEN r.relkind = 'I' AND left(def.d, length(def.only_prefix)) = def.only_prefix
                THEN def.prefix || substr(def.d, length(def.only_prefix) + 1)
                ELSE def.d END || ';',
           'INDEX', r.qname, NULL, NULL, NULL, NULL, NULL
    FROM rel r
    JOIN pg_index x ON x.indexrelid = r.oid
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace tn ON tn.oid = t.relnamespace
    CROSS JOIN LATERAL (
        SELECT pg_get_indexdef(r.oid) AS d,
               format('CREATE %sINDEX %I ON ONLY %I.%I ',
                      CASE WHEN x.indisunique THEN 'UNIQUE ' ELSE '' END, r.relname, tn.nspname, t.relname) AS only_prefix,
               format('CREATE %sINDEX %I ON %I.%I ',
                      CASE WHEN x.indisunique THEN 'UNIQUE ' ELSE '' END, r.relname, tn.nspname, t.relname) AS prefix
    ) def
    WHERE r.relkind IN ('i', 'I') AND NOT r.relispartition
      AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = r.oid AND k.conrelid = x.indrelid
                                                      AND k.contype IN ('p', 'u', 'x'))

    UNION ALL
    -- Functions, procedures and window functions: pg_get_functiondef.
    -- Aggregates: CREATE AGGREGATE with every non-default option.
    SELECT 'pg_catalog.pg_proc'::regclass, p.oid,
           CASE WHEN p.prokind <> 'a' THEN rtrim(pg_get_functiondef(p.oid), E'\n') || ';'
           ELSE (SELECT format(E'CREATE AGGREGATE %I.%I(%s) (\n    %s\n);',
                               n.nspname, p.proname,
                               CASE WHEN p.pronargs = 0 THEN '*'
                                    ELSE pg_get_function_identity_arguments(p.oid) END,
                               array_to_string(ARRAY[
                                   'SFUNC = ' || ag.aggtransfn::regproc::text,
                                   'STYPE = ' || format_type(ag.aggtranstype, NULL),
                                   CASE WHEN ag.aggtransspace <> 0 THEN 'SSPACE = ' || ag.aggtransspace END,
                                   CASE WHEN ag.aggfinalfn <> 0 THEN 'FINALFUNC = ' || ag.aggfinalfn::regproc::text END,
                                   CASE WHEN ag.aggfinalextra THEN 'FINALFUNC_EXTRA' END,
                                   CASE WHEN ag.aggfinalfn <> 0 THEN 'FINALFUNC_MODIFY = '
                                        || CASE ag.aggfinalmodify WHEN 'r' THEN 'READ_ONLY'
                                                                  WHEN 's' THEN 'SHAREABLE'
                                                                  ELSE 'READ_WRITE' END END,
                                   CASE WHEN ag.aggcombinefn <> 0 THEN 'COMBINEFUNC = ' || ag.aggcombinefn::regproc::text END,
                                   CASE WHEN ag.aggserialfn <> 0 THEN 'SERIALFUNC = ' || ag.aggserialfn::regproc::text END,
                                   CASE WHEN ag.aggdeserialfn <> 0 THEN 'DESERIALFUNC = ' || ag.aggdeserialfn::regproc::text END,
                                   CASE WHEN ag.agginitval IS NOT NULL THEN 'INITCOND = ' || quote_literal(ag.agginitval) END,
                                   CASE WHEN ag.aggmtransfn <> 0 THEN 'MSFUNC = ' || ag.aggmtransfn::regproc::text END,
                                   CASE WHEN ag.aggminvtransfn <> 0 THEN 'MINVFUNC = ' || ag.aggminvtransfn::regproc::text END,
                                   CASE WHEN ag.aggmtranstype <> 0 THEN 'MSTYPE = ' || format_type(ag.aggmtranstype, NULL) END,
                                   CASE WHEN ag.aggmtransspace <> 0 THEN 'MSSPACE = ' || ag.aggmtransspace END,
                                   CASE WHEN ag.aggmfinalfn <> 0 THEN 'MFINALFUNC = ' || ag.aggmfinalfn::regproc::text END,
                                   CASE WHEN ag.aggmfinalextra THEN 'MFINALFUNC_EXTRA' END,
                                   CASE WHEN ag.aggmfinalfn <> 0 THEN 'MFINALFUNC_MODIFY = '
                                        || CASE ag.aggmfinalmodify WHEN 'r' THEN 'READ_ONLY'
                                                                   WHEN 's' THEN 'SHAREABLE'
                                                                   ELSE 'READ_WRITE' END END,
                                   CASE WHEN ag.aggminitval IS NOT NULL THEN 'MINITCOND = ' || quote_literal(ag.aggminitval) END,
                                   CASE WHEN ag.aggsortop <> 0 THEN
                                       (SELECT format('SORTOP = OPERATOR(%I.%s)', opn.nspname, op.oprname)
                                        FROM pg_operator op
                                        JOIN pg_namespace opn ON opn.oid = op.oprnamespace
                                        WHERE op.oid = ag.aggsortop) END,
                                   CASE p.proparallel WHEN 's' THEN 'PARALLEL = SAFE'
                                                      WHEN 'r' THEN 'PARALLEL = RESTRICTED' END,
                                   CASE WHEN ag.aggkind = 'h' THEN 'HYPOTHETICAL' END
                               ], E',\n    '))
                 FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid)
           END,
           -- FUNCTION also names aggregates in COMMENT, ALTER and GRANT.
           CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, NULL,
           CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
           p.proowner, p.proacl, 'f'::"char",
           CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END
    FROM pg_proc p
    JOIN nsp n ON n.oid = p.pronamespace
    WHERE NOT EXISTS (SELECT 1 FROM ext_member e
                      WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid)
      -- not made with another object (range and multirange constructors)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                        AND d.deptype = 'i')

    UNION ALL
    -- Triggers (not internal ones, nor clones on partitions).
    SELECT 'pg_catalog.pg_trigger'::regclass, g.oid,
           pg_get_triggerdef(g.oid) || ';',
           'TRIGGER', format('%I ON %s', g.tgname, r.qname), NULL, NULL, NULL, NULL, NULL
    FROM pg_trigger g
    JOIN rel r ON r.oid = g.tgrelid
    WHERE NOT g.tgisinternal AND g.tgparentid = 0
      -- pgbranch's own (system versioning: migration 3)
      AND g.tgname NOT LIKE 'pgbranch\_versioning\_%'

    UNION ALL
    -- Row-level security policies.
    SELECT 'pg_catalog.pg_policy'::regclass, pol.oid,
           format('CREATE POLICY %I ON %s AS %s FOR %s TO %s',
                  pol.polname, r.qname,
                  CASE WHEN pol.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                  CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT'
                                  WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                  (SELECT string_agg(rn.name, ', ' ORDER BY rn.name COLLATE "C")
                   FROM (SELECT CASE WHEN pr.r = 0 THEN 'PUBLIC'
                                     ELSE quote_ident(pg_get_userbyid(pr.r)) END AS name
                         FROM unnest(pol.polroles) pr(r)) rn))
           || coalesce(' USING (' || pg_get_expr(pol.polqual, pol.polrelid) || ')', '')
           || coalesce(' WITH CHECK (' || pg_get_expr(pol.polwithcheck, pol.polrelid) || ')', '')
           || ';',
           'POLICY', format('%I ON %s', pol.polname, r.qname), NULL, NULL, NULL, NULL, NULL
    FROM pg_policy pol
    JOIN rel r ON r.oid = pol.polrelid

    UNION ALL
    -- Rules (not the _RETURN rule that makes a view).
    SELECT 'pg_catalog.pg_rewrite'::regclass, rw.oid,
           pg_get_ruledef(rw.oid),
           'RULE', format('%I ON %s', rw.rulename, r.qname), NULL, NULL, NULL, NULL, NULL
    FROM pg_rewrite rw
    JOIN rel r ON r.oid = rw.ev_class
    WHERE rw.rulename <> '_RETURN'

    UNION ALL
    -- Types: enums (labels in sort order), composite types (attributes by
    -- position), ranges, base types; and domains (base type, collation,
    -- default, NOT NULL, validated CHECK constraints by name).
    SELECT 'pg_catalog.pg_type'::regclass, t.oid,
           CASE t.typtype
           WHEN 'e' THEN format('CREATE TYPE %s AS ENUM (%s);', ty.q,
                                coalesce((SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                          FROM pg_enum e WHERE e.enumtypid = t.oid), ''))
           WHEN 'c' THEN format(E'CREATE TYPE %s AS (%s\n);', ty.q, coalesce(items.list, ''))
           WHEN 'r' THEN (
               SELECT format('CREATE TYPE %s AS RANGE (%s);', ty.q, array_to_string(ARRAY[
                          'SUBTYPE = ' || format_type(rg.rngsubtype, NULL),
                          (SELECT format('SUBTYPE_OPCLASS = %I.%I', opn.nspname, opc.opcname)
                           FROM pg_opclass opc JOIN pg_namespace opn ON opn.oid = opc.opcnamespace
                           WHERE opc.oid = rg.rngsubopc),
                          (SELECT format('COLLATION = %I.%I', cn.nspname, co.collname)
                           FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                           WHERE co.oid = rg.rngcollation
                             AND co.oid <> (SELECT st.typcollation FROM pg_type st WHERE st.oid = rg.rngsubtype)),
                          CASE WHEN rg.rngcanonical <> 0 THEN 'CANONICAL = ' || rg.rngcanonical::regproc::text END,
                          CASE WHEN rg.rngsubdiff <> 0 THEN 'SUBTYPE_DIFF = ' || rg.rngsubdiff::regproc::text END,
                          -- PostgreSQL 14+: the multirange type made with the range.
                          (SELECT format('MULTIRANGE_TYPE_NAME = %I.%I', mn.nspname, mt.typname)
                           FROM pg_depend d
                           JOIN pg_type mt ON mt.oid = d.objid AND mt.typtype = 'm'
                           JOIN pg_namespace mn ON mn.oid = mt.typnamespace
                           WHERE d.classid = 'pg_catalog.pg_type'::regclass
                             AND d.refclassid = 'pg_catalog.pg_type'::regclass
                             AND d.refobjid = t.oid AND d.deptype = 'i')
                      ], ', '))
               FROM pg_range rg WHERE rg.rngtypid = t.oid)
           WHEN 'd' THEN format('CREATE DOMAIN %s AS %s', ty.q, format_type(t.typbasetype, t.typtypmod))
                         || CASE WHEN t.typcollation <> bt.typcollation THEN
                                coalesce((SELECT format(' COLLATE %I.%I', cn.nspname, co.collname)
                                          FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                          WHERE co.oid = t.typcollation), '')
                            ELSE '' END
                         || coalesce(' DEFAULT ' || pg_get_expr(t.typdefaultbin, 0), '')
                         || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                         || coalesce((SELECT string_agg(format(E'\n    CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid)),
                                                        '' ORDER BY k.conname)
                                      FROM pg_constraint k
                                      WHERE k.contypid = t.oid AND k.contype = 'c' AND k.convalidated), '')
                         || ';'
           ELSE -- base type
               format(E'CREATE TYPE %s (\n    %s\n);', ty.q, array_to_string(ARRAY[
                   'INPUT = ' || t.typinput::regproc::text,
                   'OUTPUT = ' || t.typoutput::regproc::text,
                   CASE WHEN t.typreceive <> 0 THEN 'RECEIVE = ' || t.typreceive::regproc::text END,
                   CASE WHEN t.typsend <> 0 THEN 'SEND = ' || t.typsend::regproc::text END,
                   CASE WHEN t.typmodin <> 0 THEN 'TYPMOD_IN = ' || t.typmodin::regproc::text END,
                   CASE WHEN t.typmodout <> 0 THEN 'TYPMOD_OUT = ' || t.typmodout::regproc::text END,
                   CASE WHEN t.typanalyze <> 0 THEN 'ANALYZE = ' || t.typanalyze::regproc::text END,
                   'INTERNALLENGTH = ' || CASE WHEN t.typlen < 0 THEN 'VARIABLE' ELSE t.typlen::text END,
                   CASE WHEN t.typbyval THEN 'PASSEDBYVALUE' END,
                   'ALIGNMENT = ' || CASE t.typalign WHEN 'c' THEN 'char' WHEN 's' THEN 'int2'
                                                     WHEN 'i' THEN 'int4' ELSE 'double' END,
                   'STORAGE = ' || CASE t.typstorage WHEN 'p' THEN 'plain' WHEN 'e' THEN 'external'
                                                     WHEN 'm' THEN 'main' ELSE 'extended' END,
                   'CATEGORY = ' || quote_literal(t.typcategory::text),
                   CASE WHEN t.typispreferred THEN 'PREFERRED = true' END,
                   CASE WHEN t.typdefault IS NOT NULL THEN 'DEFAULT = ' || quote_literal(t.typdefault) END,
                   CASE WHEN t.typelem <> 0 THEN 'ELEMENT = ' || format_type(t.typelem, NULL) END,
                   'DELIMITER = ' || quote_literal(t.typdelim::text),
                   CASE WHEN t.typcollation <> 0 THEN 'COLLATABLE = true' END
               ], E',\n    '))
           END,
           ty.kw, NULL, ty.kw, t.typowner, t.typacl, 'T'::"char", ty.kw
    FROM pg_type t
    JOIN nsp n ON n.oid = t.typnamespace
    LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
    LEFT JOIN items ON items.relid = t.typrelid AND t.typtype = 'c'
    CROSS JOIN LATERAL (
        SELECT format('%I.%I', n.nspname, t.typname) AS q,
               CASE WHEN t.typtype = 'd' THEN 'DOMAIN' ELSE 'TYPE' END AS kw
    ) ty
    WHERE t.typtype IN ('b', 'c', 'd', 'e', 'r')
      -- not an array type
      AND NOT EXISTS (SELECT 1 FROM pg_type et WHERE et.typarray = t.oid)
      -- a composite type, not the row type of a table, view, ...
      AND (t.typtype <> 'c' OR EXISTS (SELECT 1 FROM rel r WHERE r.oid = t.typrelid AND r.relkind = 'c'))
      AND NOT EXISTS (SELECT 1 FROM ext_member e
                      WHERE e.classid = 'pg_catalog.pg_type'::regclass AND e.objid = t.oid)

    UNION ALL
    -- Extended statistics (CREATE STATISTICS).
    SELECT 'pg_catalog.pg_statistic_ext'::regclass, se.oid,
           pg_get_statisticsobjdef(se.oid) || ';',
           'STATISTICS', NULL, 'STATISTICS', se.stxowner, NULL, NULL, NULL
    FROM pg_statistic_ext se
    JOIN nsp n ON n.oid = se.stxnamespace
    WHERE NOT EXISTS (SELECT 1 FROM ext_member e
                      WHERE e.classid = 'pg_catalog.pg_statistic_ext'::regclass AND e.objid = se.oid)
),
-- Further statements of an object's definition: part 1 follows the
-- CREATE statement (settings), part 2 its COMMENT (comments on its
-- columns and constraints), part 3 its GRANTs (column privileges). Within
-- a part: by grp, then ord, then key.
stmt (classid, objid, part, grp, ord, key, sql) AS (
    -- Constraints added NOT VALID (CREATE TABLE would validate them).
    SELECT 'pg_catalog.pg_class'::regclass, r.oid, 1, 1, 0, k.conname::text,
           format('ALTER %s %s ADD CONSTRAINT %I %s;', r.kw, r.qname, k.conname, k.def)
    FROM con k
    JOIN rel r ON r.oid = k.conrelid
    WHERE NOT k.convalidated

    UNION ALL
    -- Inherited columns (partitions, inheritance children) whose default
    -- or NOT NULL is not the parent's.
    SELECT 'pg_catalog.pg_class'::regclass, c.attrelid, 1, 2, c.attnum, s.n::text, s.sql
    FROM col c
    CROSS JOIN LATERAL (
        SELECT bool_or(pd.adbin IS NOT NULL) AS any_default,
               bool_or(pg_get_expr(pd.adbin, pd.adrelid) = c.dflt) AS same_default,
               bool_or(pa.attnotnull) AS any_notnull
        FROM pg_inherits i
        JOIN pg_attribute pa ON pa.attrelid = i.inhparent AND pa.attname = c.attname
        LEFT JOIN pg_attrdef pd ON pd.adrelid = pa.attrelid AND pd.adnum = pa.attnum
        WHERE i.inhrelid = c.attrelid
    ) par
    CROSS JOIN LATERAL (
        SELECT 1 AS n, format('ALTER %s ONLY %s ALTER COLUMN %I SET DEFAULT %s;', c.kw, c.qname, c.attname, c.dflt) AS sql
        WHERE c.dflt IS NOT NULL AND NOT coalesce(par.same_default, false)
        UNION ALL
        SELECT 1, format('ALTER %s ONLY %s ALTER COLUMN %I DROP DEFAULT;', c.kw, c.qname, c.attname)
        WHERE c.dflt IS NULL AND coalesce(par.any_default, false)
        UNION ALL
        SELECT 2, format('ALTER %s ONLY %s ALTER COLUMN %I SET NOT NULL;', c.kw, c.qname, c.attname)
        WHERE c.attnotnull AND NOT coalesce(par.any_notnull, false)
    ) s
    WHERE c.relkind IN ('r', 'p', 'f') AND (NOT c.attislocal OR c.relispartition)
      AND c.attgenerated = '' AND c.attidentity = ''

    UNION ALL
    -- Column statistics targets, storage and options.
    SELECT 'pg_catalog.pg_class'::regclass, c.attrelid, 1, 3, c.attnum, s.n::text, s.sql
    FROM col c
    CROSS JOIN LATERAL (
        SELECT 1 AS n, format('ALTER %s ONLY %s ALTER COLUMN %I SET STATISTICS %s;',
                              c.kw, c.qname, c.attname, c.attstattarget) AS sql
        WHERE c.attstattarget >= 0
        UNION ALL
        SELECT 2, format('ALTER %s ONLY %s ALTER COLUMN %I SET STORAGE %s;', c.kw, c.qname, c.attname,
                         CASE c.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL'
                                           WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END)
        WHERE c.attstorage <> c.typstorage
        UNION ALL
        SELECT 3, format('ALTER %s ONLY %s ALTER COLUMN %I SET (%s);', c.kw, c.qname, c.attname,
                         array_to_string(c.attoptions, ', '))
        WHERE c.attoptions IS NOT NULL
    ) s
    WHERE c.relkind IN ('r', 'p', 'f')

    UNION ALL
    -- Column defaults of views.
    SELECT 'pg_catalog.pg_class'::regclass, c.attrelid, 1, 2, c.attnum, '',
           format('ALTER VIEW %s ALTER COLUMN %I SET DEFAULT %s;', c.qname, c.attname, c.dflt)
    FROM col c
    WHERE c.relkind = 'v' AND c.dflt IS NOT NULL

    UNION ALL
    -- Row-level security, replica identity.
    SELECT 'pg_catalog.pg_class'::regclass, r.oid, 1, 4, s.n, '', s.sql
    FROM rel r
    CROSS JOIN LATERAL (
        SELECT 1 AS n, format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY;', r.qname) AS sql
        WHERE r.relrowsecurity
        UNION ALL
        SELECT 2, format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', r.qname)
        WHERE r.relforcerowsecurity
        UNION ALL
        SELECT 3, format('ALTER TABLE %s REPLICA IDENTITY %s;', r.qname,
                         CASE r.relreplident WHEN 'f' THEN 'FULL' ELSE 'NOTHING' END)
        WHERE r.relreplident IN ('f', 'n') AND r.relkind IN ('r', 'p')
    ) s
    WHERE r.relkind IN ('r', 'p', 'f')

    UNION ALL
    -- CLUSTER ON, REPLICA IDENTITY USING INDEX, index tablespace: with the
    -- index, or with the table when a constraint owns the index.
    SELECT 'pg_catalog.pg_class'::regclass,
           CASE WHEN ir.relispartition
                  OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = ir.oid AND k.conrelid = x.indrelid
                                                             AND k.contype IN ('p', 'u', 'x'))
                THEN x.indrelid ELSE ir.oid END,
           1, 5, s.n, ir.relname::text, s.sql
    FROM rel ir
    JOIN pg_index x ON x.indexrelid = ir.oid
    JOIN rel tr ON tr.oid = x.indrelid
    CROSS JOIN LATERAL (
        SELECT 1 AS n, format('ALTER TABLE %s CLUSTER ON %I;', tr.qname, ir.relname) AS sql
        WHERE x.indisclustered
        UNION ALL
        SELECT 2, format('ALTER TABLE %s REPLICA IDENTITY USING INDEX %I;', tr.qname, ir.relname)
        WHERE x.indisreplident
        UNION ALL
        SELECT 3, format('ALTER INDEX %s SET TABLESPACE %I;', ir.qname, ts.spcname)
        FROM pg_tablespace ts
        WHERE ts.oid = ir.reltablespace AND NOT EXISTS (
            SELECT 1 FROM pg_constraint k WHERE k.conindid = ir.oid AND k.conrelid = x.indrelid
                                            AND k.contype IN ('p', 'u', 'x'))
    ) s
    WHERE ir.relkind IN ('i', 'I')

    UNION ALL
    -- Disabled (or replica/always) triggers.
    SELECT 'pg_catalog.pg_trigger'::regclass, g.oid, 1, 1, 0, '',
           format('ALTER TABLE %s %s TRIGGER %I;', r.qname,
                  CASE g.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                                   ELSE 'ENABLE ALWAYS' END, g.tgname)
    FROM pg_trigger g
    JOIN rel r ON r.oid = g.tgrelid
    WHERE NOT g.tgisinternal AND g.tgparentid = 0 AND g.tgenabled <> 'O'
      AND g.tgname NOT LIKE 'pgbranch\_versioning\_%'

    UNION ALL
    -- Disabled (or replica/always) rules.
    SELECT 'pg_catalog.pg_rewrite'::regclass, rw.oid, 1, 1, 0, '',
           format('ALTER TABLE %s %s RULE %I;', r.qname,
                  CASE rw.ev_enabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                                     ELSE 'ENABLE ALWAYS' END, rw.rulename)
    FROM pg_rewrite rw
    JOIN rel r ON r.oid = rw.ev_class
    WHERE rw.rulename <> '_RETURN' AND rw.ev_enabled <> 'O'

    UNION ALL
    -- Domain constraints added NOT VALID.
    SELECT 'pg_catalog.pg_type'::regclass, t.oid, 1, 1, 0, k.conname::text,
           format('ALTER DOMAIN %I.%I ADD CONSTRAINT %I %s;', n.nspname, t.typname, k.conname,
                  pg_get_constraintdef(k.oid))
    FROM pg_constraint k
    JOIN pg_type t ON t.oid = k.contypid
    JOIN nsp n ON n.oid = t.typnamespace
    WHERE k.contype = 'c' AND NOT k.convalidated

    UNION ALL
    -- Comments on columns (of tables, views, composite types, ...).
    SELECT CASE WHEN c.relkind = 'c' THEN 'pg_catalog.pg_type'::regclass
                ELSE 'pg_catalog.pg_class'::regclass END,
           CASE WHEN c.relkind = 'c' THEN (SELECT ct.oid FROM pg_type ct WHERE ct.typrelid = c.attrelid)
                ELSE c.attrelid END,
           2, 1, c.attnum, '',
           format('COMMENT ON COLUMN %s.%I IS %L;', c.qname, c.attname, c.description)
    FROM col c
    WHERE c.description IS NOT NULL

    UNION ALL
    -- Comments on table constraints.
    SELECT 'pg_catalog.pg_class'::regclass, r.oid, 2, 2, 0, k.conname::text,
           format('COMMENT ON CONSTRAINT %I ON %s IS %L;', k.conname, r.qname, d.description)
    FROM con k
    JOIN rel r ON r.oid = k.conrelid
    JOIN pg_description d ON d.classoid = 'pg_catalog.pg_constraint'::regclass
                         AND d.objoid = k.oid AND d.objsubid = 0

    UNION ALL
    -- Comments on domain constraints.
    SELECT 'pg_catalog.pg_type'::regclass, t.oid, 2, 2, 0, k.conname::text,
           format('COMMENT ON CONSTRAINT %I ON DOMAIN %I.%I IS %L;', k.conname, n.nspname, t.typname,
                  d.description)
    FROM pg_constraint k
    JOIN pg_type t ON t.oid = k.contypid
    JOIN nsp n ON n.oid = t.typnamespace
    JOIN pg_description d ON d.classoid = 'pg_catalog.pg_constraint'::regclass
                         AND d.objoid = k.oid AND d.objsubid = 0

    UNION ALL
    -- Column privileges (a column's default ACL is empty).
    SELECT 'pg_catalog.pg_class'::regclass, c.attrelid, 3, 1, c.attnum, g.grantee_name,
           format('GRANT %s ON TABLE %s TO %s%s;', g.privs, c.qname, g.grantee_name,
                  CASE WHEN g.grantable THEN ' WITH GRANT OPTION' ELSE '' END)
    FROM col c
    CROSS JOIN LATERAL (
        SELECT a.grantable, a.grantee_name,
               string_agg(format('%s (%I)', a.privilege_type, c.attname), ', '
                          ORDER BY a.privilege_type COLLATE "C") AS privs
        FROM (SELECT x.privilege_type, bool_or(x.is_grantable) AS grantable,
                     CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                          ELSE quote_ident(pg_get_userbyid(x.grantee)) END AS grantee_name
              FROM aclexplode(c.attacl) x
              GROUP BY x.privilege_type, x.grantee) a
        GROUP BY a.grantable, a.grantee_name
    ) g
    WHERE c.attacl IS NOT NULL
),
stmt_by_obj AS (
    SELECT s.classid, s.objid,
           string_agg(s.sql, E'\n' ORDER BY s.grp, s.ord, s.key COLLATE "C", s.sql COLLATE "C")
               FILTER (WHERE s.part = 1) AS settings,
           string_agg(s.sql, E'\n' ORDER BY s.grp, s.ord, s.key COLLATE "C", s.sql COLLATE "C")
               FILTER (WHERE s.part = 2) AS subcomments,
           string_agg(s.sql, E'\n' ORDER BY s.grp, s.ord, s.key COLLATE "C", s.sql COLLATE "C")
               FILTER (WHERE s.part = 3) AS tail
    FROM stmt s
    GROUP BY s.classid, s.objid
)
-- Each object: CREATE, settings, COMMENT, comments on its parts, owner,
-- privileges (the difference between its ACL and the default ACL; no
-- lines when the ACL is the default), column privileges.
SELECT io.type, io.identity,
       concat_ws(E'\n',
           o.body,
           s.settings,
           CASE WHEN d.description IS NOT NULL THEN
               format('COMMENT ON %s %s IS %L;', o.cmt_kw, coalesce(o.target, io.identity), d.description)
           END,
           s.subcomments,
           CASE WHEN o.owner_kw IS NOT NULL THEN
               format('ALTER %s %s OWNER TO %I;', o.owner_kw, coalesce(o.target, io.identity),
                      pg_get_userbyid(o.owner))
           END,
           acl.stmts,
           s.tail)
FROM obj o
CROSS JOIN LATERAL pg_identify_object(o.classid, o.objid, 0) io
LEFT JOIN pg_description d ON d.classoid = o.classid AND d.objoid = o.objid AND d.objsubid = 0
LEFT JOIN stmt_by_obj s ON s.classid = o.classid AND s.objid = o.objid
LEFT JOIN LATERAL (
    SELECT string_agg(
               CASE g.action
               WHEN 1 THEN format('REVOKE %s ON %s %s FROM %s;', g.privs, o.grant_kw, coalesce(o.target, io.identity), g.grantee_name)
               WHEN 2 THEN format('REVOKE GRANT OPTION FOR %s ON %s %s FROM %s;', g.privs, o.grant_kw, coalesce(o.target, io.identity), g.grantee_name)
               WHEN 3 THEN format('GRANT %s ON %s %s TO %s;', g.privs, o.grant_kw, coalesce(o.target, io.identity), g.grantee_name)
               ELSE format('GRANT %s ON %s %s TO %s WITH GRANT OPTION;', g.privs, o.grant_kw, coalesce(o.target, io.identity), g.grantee_name)
               END,
               E'\n' ORDER BY g.action, g.grantee_name COLLATE "C") AS stmts
    FROM (
        SELECT p.action, p.grantee_name,
               string_agg(p.privilege_type, ', ' ORDER BY p.privilege_type COLLATE "C") AS privs
        FROM (
            SELECT coalesce(cur.privilege_type, def.privilege_type) AS privilege_type,
                   CASE WHEN coalesce(cur.grantee, def.grantee) = 0 THEN 'PUBLIC'
                        ELSE quote_ident(pg_get_userbyid(coalesce(cur.grantee, def.grantee))) END AS grantee_name,
                   -- 1 revoke, 2 revoke grant option, 3 grant, 4 grant with grant option
                   CASE WHEN cur.grantable IS NULL THEN 1
                        WHEN def.grantable IS NULL THEN CASE WHEN cur.grantable THEN 4 ELSE 3 END
                        WHEN cur.grantable AND NOT def.grantable THEN 4
                        WHEN def.grantable AND NOT cur.grantable THEN 2
                   END AS action
            FROM (SELECT x.grantee, x.privilege_type, bool_or(x.is_grantable) AS grantable
                  FROM aclexplode(o.acl) x GROUP BY x.grantee, x.privilege_type) cur
            FULL JOIN (SELECT x.grantee, x.privilege_type, bool_or(x.is_grantable) AS grantable
                       FROM aclexplode(acldefault(o.aclkind, o.owner)) x
                       GROUP BY x.grantee, x.privilege_type) def
                   ON def.grantee = cur.grantee AND def.privilege_type = cur.privilege_type
        ) p
        WHERE p.action IS NOT NULL
        GROUP BY p.action, p.grantee_name
    ) g
    WHERE o.acl IS NOT NULL
) acl ON true;
END
$objects$;

-- Digest of the whole schema: equal fingerprints mean equal sets of
-- (object_type, identity, definition). The same formula as
-- pgbranch.state_fingerprint() over the recorded state.
CREATE OR REPLACE FUNCTION pgbranch.schema_fingerprint() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fingerprint$
    SELECT md5(coalesce(string_agg(
               o.object_type || E'\x1f' || o.identity || E'\x1f' || md5(coalesce(o.definition, '')),
               E'\x1e' ORDER BY o.object_type COLLATE "C", o.identity COLLATE "C"), ''))
    FROM pgbranch.schema_objects() o
$fingerprint$;
