-- Migration 3: row history for system-versioned tables (time travel):
-- the tables. The functions are in time_travel.sql (run next, and again
-- by later migrations).
--
-- A versioned table keeps its rows untouched; every version of every row
-- lives in a history table of schema pgbranch_history, append-only:
-- pgbranch_valid_from (transaction time), pgbranch_seq (order within a
-- transaction), pgbranch_deleted (a tombstone: the key's row was
-- deleted), then the table's columns. A version is valid from its
-- pgbranch_valid_from until the next version of its key begins.
-- Statement-level AFTER triggers with transition tables write the history
-- (one call per statement, whatever the number of rows; a row trigger adds
-- tombstones for keys an UPDATE changes; no history row is ever updated,
-- so writing leaves no dead tuples). AS OF queries go through per-table
-- SQL functions the planner inlines, so a primary-key lookup uses the
-- history's (key, pgbranch_seq) index:
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

-- Recording a change, and merging one, keep versioned tables in step:
-- time_travel.sql wraps these.
ALTER FUNCTION pgbranch.record_ddl(text, text, text, text, text, text, text, bigint)
    RENAME TO record_ddl_unversioned;
ALTER FUNCTION pgbranch.record_merged(text, text, bigint, text, text, text, text, text, text)
    RENAME TO record_merged_unversioned;
