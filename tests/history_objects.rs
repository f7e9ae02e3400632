//! `pgbranch.schema_objects()` and `pgbranch.schema_fingerprint()`
//! (src/history/sql/objects.sql) against real PostgreSQL, on direct
//! connections: which objects are listed and under which identity, that
//! definitions are deterministic and change only with the schema, that
//! extension members and system/pgbranch objects stay out, that the
//! definitions replayed into an empty database reproduce the same rows,
//! and that a plain role may call both functions.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use tokio_postgres::Client;

const OBJECTS_SQL: &str = include_str!("../src/history/sql/objects.sql");

/// One object of every listed kind, with the awkward cases: quoted
/// mixed-case names, identity/serial/generated columns, FKs, partitions
/// (created and attached), inheritance, NOT VALID constraints, comments,
/// grants and revokes, non-default column and table settings.
const FIXTURE: &str = r#"
CREATE EXTENSION hstore;
CREATE EXTENSION postgres_fdw;
CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'elsewhere');
CREATE SCHEMA "Sales";
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE public.pair AS (a integer, b text COLLATE "C");
COMMENT ON COLUMN public.pair.a IS 'first';
CREATE TYPE public.floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE DOMAIN public.posint AS integer DEFAULT 1 NOT NULL CONSTRAINT posint_check CHECK (VALUE > 0);
CREATE SEQUENCE public.standalone_seq AS integer INCREMENT BY 5 START WITH 100 CACHE 2;
CREATE TABLE public.users (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text COLLATE "C" DEFAULT 'anon',
    feeling public.mood,
    score public.posint,
    tags public.hstore,
    lower_email text GENERATED ALWAYS AS (lower(email)) STORED
);
CREATE TABLE "Sales"."Orders" (
    order_id serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    amount numeric(10,2) CHECK (amount >= 0),
    placed_at timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX orders_user_amount ON "Sales"."Orders" (user_id, amount);
CREATE INDEX users_name_idx ON public.users (name) WHERE name IS NOT NULL;
COMMENT ON TABLE public.users IS 'people; who''s who';
COMMENT ON COLUMN public.users.email IS 'login \ name';
COMMENT ON CONSTRAINT users_email_key ON public.users IS 'one account per address';
GRANT SELECT, INSERT ON public.users TO pgb_plain;
GRANT SELECT (email) ON public.users TO pgb_md5;
ALTER TABLE public.users ADD CONSTRAINT users_nv CHECK (id < 1000000) NOT VALID;
ALTER TABLE public.users CLUSTER ON users_pkey;
CREATE TABLE public.events (id bigint NOT NULL, at date NOT NULL, payload jsonb) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.ev_old (id bigint NOT NULL, at date NOT NULL, payload jsonb DEFAULT '{}');
ALTER TABLE public.events ATTACH PARTITION public.ev_old FOR VALUES FROM ('2000-01-01') TO ('2024-01-01');
CREATE TABLE public.ev_def PARTITION OF public.events (CONSTRAINT pay_chk CHECK (payload IS NOT NULL)) DEFAULT;
CREATE INDEX events_at_idx ON public.events (at);
ALTER TABLE public.events ADD PRIMARY KEY (id, at);
CREATE TABLE public.event_refs (id bigint, at date, FOREIGN KEY (id, at) REFERENCES public.events);
CREATE TABLE public.base (id int PRIMARY KEY, note text DEFAULT 'n', flag bool NOT NULL DEFAULT true);
CREATE TABLE public.child (extra int, CONSTRAINT child_extra CHECK (extra > 0)) INHERITS (public.base);
ALTER TABLE ONLY public.child ALTER COLUMN note SET DEFAULT 'child';
ALTER TABLE ONLY public.child ALTER COLUMN flag DROP DEFAULT;
ALTER TABLE public.base REPLICA IDENTITY FULL;
ALTER TABLE public.base ALTER COLUMN note SET STORAGE EXTERNAL, ALTER COLUMN note SET STATISTICS 500;
REVOKE TRUNCATE ON public.base FROM postgres;
CREATE TABLE public.typed OF public.pair (a WITH OPTIONS DEFAULT 3 NOT NULL, PRIMARY KEY (a));
CREATE UNLOGGED TABLE public.scratch (x int) WITH (fillfactor = 70, autovacuum_enabled = false);
CREATE FOREIGN TABLE public.remote_items (id int OPTIONS (column_name 'item_id'), label text)
    SERVER remote OPTIONS (table_name 'items');
CREATE VIEW public.active_users AS SELECT id, email FROM public.users WHERE score > 0;
COMMENT ON VIEW public.active_users IS 'scored';
CREATE MATERIALIZED VIEW "Sales".totals AS
    SELECT user_id, sum(amount) AS total FROM "Sales"."Orders" GROUP BY user_id;
CREATE FUNCTION public.add(a integer, b integer) RETURNS integer LANGUAGE sql IMMUTABLE
    AS $$ SELECT a + b $$;
REVOKE EXECUTE ON FUNCTION public.add(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.add(integer, integer) TO pgb_plain WITH GRANT OPTION;
CREATE FUNCTION public.std(x int DEFAULT 2) RETURNS int LANGUAGE sql SET search_path = public
    BEGIN ATOMIC SELECT x * 2; END;
CREATE PROCEDURE public.noop() LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE AGGREGATE public.my_sum(integer) (SFUNC = int4pl, STYPE = integer, INITCOND = '0');
CREATE AGGREGATE public.pct(float8 ORDER BY int) (SFUNC = int4pl, STYPE = int, INITCOND = '0');
CREATE FUNCTION "Sales".touch() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN NEW.placed_at := now(); RETURN NEW; END $$;
CREATE TRIGGER trg BEFORE INSERT ON "Sales"."Orders" FOR EACH ROW EXECUTE FUNCTION "Sales".touch();
CREATE TRIGGER off_trg BEFORE UPDATE ON "Sales"."Orders" FOR EACH ROW EXECUTE FUNCTION "Sales".touch();
ALTER TABLE "Sales"."Orders" DISABLE TRIGGER off_trg;
CREATE FUNCTION public.no_op() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER ev_trg AFTER INSERT ON public.events FOR EACH ROW EXECUTE FUNCTION public.no_op();
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON public.users FOR SELECT TO pgb_plain USING (email = current_user);
CREATE RULE no_delete AS ON DELETE TO public.active_users DO INSTEAD NOTHING;
CREATE STATISTICS public.users_stats ON email, name FROM public.users;
"#;

/// Installs the two functions (as the migration would, after
/// `CREATE SCHEMA pgbranch`) and returns a superuser connection.
async fn install(db: &str) -> Client {
    let c = connect(&cluster().direct(db)).await;
    c.batch_execute("CREATE SCHEMA pgbranch").await.unwrap();
    c.batch_execute(OBJECTS_SQL).await.unwrap();
    c
}

type Obj = (String, String, String);

async fn objects(c: &Client) -> Vec<Obj> {
    c.query(
        "SELECT object_type, identity, definition FROM pgbranch.schema_objects() \
         ORDER BY object_type COLLATE \"C\", identity COLLATE \"C\"",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn fingerprint(c: &Client) -> String {
    c.query_one("SELECT pgbranch.schema_fingerprint()", &[])
        .await
        .unwrap()
        .get(0)
}

fn by_key(objs: &[Obj]) -> BTreeMap<(String, String), String> {
    objs.iter()
        .map(|(t, i, d)| ((t.clone(), i.clone()), d.clone()))
        .collect()
}

fn def<'a>(objs: &'a [Obj], object_type: &str, identity: &str) -> &'a str {
    objs.iter()
        .find(|(t, i, _)| t == object_type && i == identity)
        .map(|(_, _, d)| d.as_str())
        .unwrap_or_else(|| panic!("no {object_type} {identity} in {objs:#?}"))
}

/// The (type, identity) pairs whose definitions differ between two
/// listings, added and removed objects included.
fn changed(a: &[Obj], b: &[Obj]) -> BTreeSet<(String, String)> {
    let (a, b) = (by_key(a), by_key(b));
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_kind_is_listed_under_its_canonical_identity() {
    let db = cluster().fresh_db();
    let c = install(&db).await;
    c.batch_execute(FIXTURE).await.unwrap();
    let objs = objects(&c).await;
    let keys: BTreeSet<(&str, &str)> = objs
        .iter()
        .map(|(t, i, _)| (t.as_str(), i.as_str()))
        .collect();
    let expected = [
        ("schema", "public"),
        ("schema", "\"Sales\""),
        ("extension", "hstore"),
        ("extension", "postgres_fdw"),
        ("type", "public.mood"),
        ("type", "public.pair"),
        ("type", "public.floatrange"),
        // pg_identify_object calls a domain a type.
        ("type", "public.posint"),
        ("sequence", "public.standalone_seq"),
        ("sequence", "public.users_id_seq"),
        ("sequence", "\"Sales\".\"Orders_order_id_seq\""),
        ("table", "public.users"),
        ("table", "\"Sales\".\"Orders\""),
        ("table", "public.events"),
        ("table", "public.events_2024"),
        ("table", "public.ev_old"),
        ("table", "public.ev_def"),
        ("table", "public.event_refs"),
        ("table", "public.base"),
        ("table", "public.child"),
        ("table", "public.scratch"),
        ("table", "public.typed"),
        ("foreign table", "public.remote_items"),
        ("index", "\"Sales\".orders_user_amount"),
        ("index", "public.users_name_idx"),
        ("index", "public.events_at_idx"),
        ("view", "public.active_users"),
        ("materialized view", "\"Sales\".totals"),
        ("function", "public.add(integer,integer)"),
        ("function", "public.std(integer)"),
        ("function", "\"Sales\".touch()"),
        ("procedure", "public.noop()"),
        ("aggregate", "public.my_sum(integer)"),
        ("aggregate", "public.pct(double precision,integer)"),
        ("trigger", "trg on \"Sales\".\"Orders\""),
        ("trigger", "off_trg on \"Sales\".\"Orders\""),
        ("trigger", "ev_trg on public.events"),
        ("function", "public.no_op()"),
        ("policy", "own_rows on public.users"),
        ("rule", "no_delete on public.active_users"),
        ("statistics object", "public.users_stats"),
    ];
    for k in expected {
        assert!(keys.contains(&k), "{k:?} missing from {keys:#?}");
    }
    // Nothing else: constraint indexes, partition indexes, triggers and
    // FK constraints cloned onto partitions, the multirange type and its
    // constructors, array and row types are implied.
    assert_eq!(keys.len(), expected.len(), "{keys:#?}");

    assert_eq!(
        def(&objs, "table", "public.users"),
        "CREATE TABLE public.users (
    id integer GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME public.users_id_seq) NOT NULL,
    email text NOT NULL,
    name text COLLATE pg_catalog.\"C\" DEFAULT 'anon'::text,
    feeling public.mood,
    score public.posint,
    tags public.hstore,
    lower_email text GENERATED ALWAYS AS (lower(email)) STORED,
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
ALTER TABLE public.users ADD CONSTRAINT users_nv CHECK ((id < 1000000)) NOT VALID;
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.users CLUSTER ON users_pkey;
COMMENT ON TABLE public.users IS 'people; who''s who';
COMMENT ON COLUMN public.users.email IS E'login \\\\ name';
COMMENT ON CONSTRAINT users_email_key ON public.users IS 'one account per address';
ALTER TABLE public.users OWNER TO postgres;
GRANT INSERT, SELECT ON TABLE public.users TO pgb_plain;
GRANT SELECT (email) ON TABLE public.users TO pgb_md5;"
    );
    assert_eq!(
        def(&objs, "table", "\"Sales\".\"Orders\""),
        "CREATE TABLE \"Sales\".\"Orders\" (
    order_id integer DEFAULT nextval('\"Sales\".\"Orders_order_id_seq\"'::regclass) NOT NULL,
    user_id integer NOT NULL,
    amount numeric(10,2),
    placed_at timestamp with time zone DEFAULT now(),
    CONSTRAINT \"Orders_amount_check\" CHECK ((amount >= (0)::numeric)),
    CONSTRAINT \"Orders_pkey\" PRIMARY KEY (order_id),
    CONSTRAINT \"Orders_user_id_fkey\" FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE
);
ALTER TABLE \"Sales\".\"Orders\" OWNER TO postgres;"
    );
    assert_eq!(
        def(&objs, "table", "public.events"),
        "CREATE TABLE public.events (
    id bigint NOT NULL,
    at date NOT NULL,
    payload jsonb,
    CONSTRAINT events_pkey PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
ALTER TABLE public.events OWNER TO postgres;"
    );
    assert_eq!(
        def(&objs, "table", "public.events_2024"),
        "CREATE TABLE public.events_2024 PARTITION OF public.events \
         FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
ALTER TABLE public.events_2024 OWNER TO postgres;"
    );
    // Attached with a default of its own: kept as a setting.
    assert!(def(&objs, "table", "public.ev_old").contains(
        "\nALTER TABLE ONLY public.ev_old ALTER COLUMN payload SET DEFAULT '{}'::jsonb;"
    ));
    assert!(def(&objs, "table", "public.ev_def").starts_with(
        "CREATE TABLE public.ev_def PARTITION OF public.events (\n    \
         CONSTRAINT pay_chk CHECK ((payload IS NOT NULL))\n) DEFAULT;"
    ));
    let child = def(&objs, "table", "public.child");
    assert!(
        child.starts_with("CREATE TABLE public.child (\n    extra integer,\n"),
        "{child}"
    );
    assert!(child.contains(") INHERITS (public.base);\n"), "{child}");
    assert!(child
        .contains("ALTER TABLE ONLY public.child ALTER COLUMN note SET DEFAULT 'child'::text;"));
    assert!(child.contains("ALTER TABLE ONLY public.child ALTER COLUMN flag DROP DEFAULT;"));
    let base = def(&objs, "table", "public.base");
    for line in [
        "ALTER TABLE ONLY public.base ALTER COLUMN note SET STATISTICS 500;",
        "ALTER TABLE ONLY public.base ALTER COLUMN note SET STORAGE EXTERNAL;",
        "ALTER TABLE public.base REPLICA IDENTITY FULL;",
        "REVOKE TRUNCATE ON TABLE public.base FROM postgres;",
    ] {
        assert!(base.lines().any(|l| l == line), "{line} not in {base}");
    }
    assert!(def(&objs, "table", "public.typed").starts_with(
        "CREATE TABLE public.typed OF public.pair (\n    a WITH OPTIONS DEFAULT 3 NOT NULL,\n    \
         CONSTRAINT typed_pkey PRIMARY KEY (a)\n);"
    ));
    assert!(def(&objs, "table", "public.scratch").starts_with(
        "CREATE UNLOGGED TABLE public.scratch (\n    x integer\n) WITH (fillfactor=70, autovacuum_enabled=false);"
    ));
    assert!(def(&objs, "foreign table", "public.remote_items").starts_with(
        "CREATE FOREIGN TABLE public.remote_items (\n    id integer OPTIONS (column_name 'item_id'),\n    \
         label text\n) SERVER remote OPTIONS (table_name 'items');"
    ));

    assert_eq!(
        def(&objs, "sequence", "public.standalone_seq"),
        "CREATE SEQUENCE public.standalone_seq AS integer INCREMENT BY 5 MINVALUE 1 \
         MAXVALUE 2147483647 START WITH 100 CACHE 2 NO CYCLE;
ALTER SEQUENCE public.standalone_seq OWNER TO postgres;"
    );
    assert_eq!(
        def(&objs, "sequence", "\"Sales\".\"Orders_order_id_seq\""),
        "CREATE SEQUENCE \"Sales\".\"Orders_order_id_seq\" AS integer INCREMENT BY 1 MINVALUE 1 \
         MAXVALUE 2147483647 START WITH 1 CACHE 1 NO CYCLE;
ALTER SEQUENCE \"Sales\".\"Orders_order_id_seq\" OWNED BY \"Sales\".\"Orders\".order_id;"
    );
    assert_eq!(
        def(&objs, "sequence", "public.users_id_seq"),
        "ALTER SEQUENCE public.users_id_seq AS integer INCREMENT BY 1 MINVALUE 1 \
         MAXVALUE 2147483647 START WITH 1 CACHE 1 NO CYCLE;"
    );
    assert_eq!(
        def(&objs, "index", "public.users_name_idx"),
        "CREATE INDEX users_name_idx ON public.users USING btree (name) WHERE (name IS NOT NULL);"
    );
    // A partitioned index covers the partitions: no ON ONLY.
    assert_eq!(
        def(&objs, "index", "public.events_at_idx"),
        "CREATE INDEX events_at_idx ON public.events USING btree (at);"
    );
    assert_eq!(
        def(&objs, "view", "public.active_users"),
        "CREATE VIEW public.active_users AS
 SELECT users.id,
    users.email
   FROM public.users
  WHERE ((users.score)::integer > 0);
COMMENT ON VIEW public.active_users IS 'scored';
ALTER VIEW public.active_users OWNER TO postgres;"
    );
    assert!(def(&objs, "materialized view", "\"Sales\".totals")
        .starts_with("CREATE MATERIALIZED VIEW \"Sales\".totals AS\n SELECT"));
    assert_eq!(
        def(&objs, "function", "public.add(integer,integer)"),
        "CREATE OR REPLACE FUNCTION public.add(a integer, b integer)
 RETURNS integer
 LANGUAGE sql
 IMMUTABLE
AS $function$ SELECT a + b $function$;
ALTER FUNCTION public.add(integer,integer) OWNER TO postgres;
REVOKE EXECUTE ON FUNCTION public.add(integer,integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.add(integer,integer) TO pgb_plain WITH GRANT OPTION;"
    );
    assert_eq!(
        def(&objs, "aggregate", "public.my_sum(integer)"),
        "CREATE AGGREGATE public.my_sum(integer) (
    SFUNC = int4pl,
    STYPE = integer,
    INITCOND = '0'
);
ALTER FUNCTION public.my_sum(integer) OWNER TO postgres;"
    );
    assert!(
        def(&objs, "aggregate", "public.pct(double precision,integer)")
            .starts_with("CREATE AGGREGATE public.pct(double precision ORDER BY integer) (")
    );
    assert!(def(&objs, "procedure", "public.noop()")
        .contains("ALTER PROCEDURE public.noop() OWNER TO postgres;"));
    assert_eq!(
        def(&objs, "trigger", "trg on \"Sales\".\"Orders\""),
        "CREATE TRIGGER trg BEFORE INSERT ON \"Sales\".\"Orders\" FOR EACH ROW EXECUTE FUNCTION \"Sales\".touch();"
    );
    assert!(def(&objs, "trigger", "off_trg on \"Sales\".\"Orders\"")
        .ends_with("\nALTER TABLE \"Sales\".\"Orders\" DISABLE TRIGGER off_trg;"));
    assert_eq!(
        def(&objs, "policy", "own_rows on public.users"),
        "CREATE POLICY own_rows ON public.users AS PERMISSIVE FOR SELECT TO pgb_plain \
         USING ((email = CURRENT_USER));"
    );
    assert_eq!(
        def(&objs, "rule", "no_delete on public.active_users"),
        "CREATE RULE no_delete AS\n    ON DELETE TO public.active_users DO INSTEAD NOTHING;"
    );
    assert_eq!(
        def(&objs, "type", "public.mood"),
        "CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');\nALTER TYPE public.mood OWNER TO postgres;"
    );
    assert_eq!(
        def(&objs, "type", "public.pair"),
        "CREATE TYPE public.pair AS (
    a integer,
    b text COLLATE pg_catalog.\"C\"
);
COMMENT ON COLUMN public.pair.a IS 'first';
ALTER TYPE public.pair OWNER TO postgres;"
    );
    assert!(def(&objs, "type", "public.floatrange").starts_with(
        "CREATE TYPE public.floatrange AS RANGE (SUBTYPE = double precision, \
         SUBTYPE_OPCLASS = pg_catalog.float8_ops, SUBTYPE_DIFF = float8mi"
    ));
    assert_eq!(
        def(&objs, "type", "public.posint"),
        "CREATE DOMAIN public.posint AS integer DEFAULT 1 NOT NULL
    CONSTRAINT posint_check CHECK ((VALUE > 0));
ALTER DOMAIN public.posint OWNER TO postgres;"
    );
    assert_eq!(
        def(&objs, "schema", "\"Sales\""),
        "CREATE SCHEMA \"Sales\";\nALTER SCHEMA \"Sales\" OWNER TO postgres;"
    );
    assert!(def(&objs, "schema", "public").starts_with("CREATE SCHEMA IF NOT EXISTS public;\n"));
    assert!(def(&objs, "extension", "hstore")
        .starts_with("CREATE EXTENSION hstore WITH SCHEMA public VERSION '"));
    assert_eq!(
        def(&objs, "statistics object", "public.users_stats"),
        "CREATE STATISTICS public.users_stats ON email, name FROM public.users;
ALTER STATISTICS public.users_stats OWNER TO postgres;"
    );
}

#[tokio::test]
async fn definitions_and_fingerprint_change_only_with_the_schema() {
    let db = cluster().fresh_db();
    let c = install(&db).await;
    c.batch_execute(FIXTURE).await.unwrap();

    let first = objects(&c).await;
    let fp = fingerprint(&c).await;
    assert_eq!(objects(&c).await, first);
    assert_eq!(fingerprint(&c).await, fp);
    assert_eq!(fp.len(), 32);
    // The documented formula, computed here independently.
    let formula: String = c
        .query_one(
            "SELECT md5(string_agg(object_type || E'\\x1f' || identity || E'\\x1f' || md5(definition), \
             E'\\x1e' ORDER BY object_type COLLATE \"C\", identity COLLATE \"C\")) FROM pgbranch.schema_objects()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fp, formula);

    // Data, sequence values, statistics, refreshes, temporary objects and
    // sessions change nothing.
    c.batch_execute(
        "INSERT INTO public.users (email, score) VALUES ('a@x', 3), ('b@x', 4);
         INSERT INTO \"Sales\".\"Orders\" (user_id, amount) SELECT id, 10 FROM public.users;
         SELECT nextval('public.standalone_seq'), nextval('public.standalone_seq');
         SELECT * FROM public.active_users;
         UPDATE public.users SET name = 'x';
         DELETE FROM \"Sales\".\"Orders\" WHERE amount > 100;
         ANALYZE;
         REFRESH MATERIALIZED VIEW \"Sales\".totals;
         CREATE TEMP TABLE scratchpad (x int PRIMARY KEY);
         CREATE TEMP VIEW scratchview AS SELECT 1 AS one;",
    )
    .await
    .unwrap();
    assert_eq!(changed(&first, &objects(&c).await), BTreeSet::new());
    assert_eq!(fingerprint(&c).await, fp);
    let other = connect(&cluster().direct(&db)).await;
    assert_eq!(fingerprint(&other).await, fp);

    // ADD COLUMN: that table's row only.
    c.batch_execute("ALTER TABLE public.base ADD COLUMN added int")
        .await
        .unwrap();
    let after_add = objects(&c).await;
    // The inheritance child inherits it: its own definition is unchanged.
    assert_eq!(
        changed(&first, &after_add),
        BTreeSet::from([("table".to_string(), "public.base".to_string())])
    );
    assert!(def(&after_add, "table", "public.base").contains("\n    added integer,\n"));
    let fp_add = fingerprint(&c).await;
    assert_ne!(fp_add, fp);

    c.batch_execute("ALTER TABLE public.scratch ADD COLUMN y text")
        .await
        .unwrap();
    let after_scratch = objects(&c).await;
    assert_eq!(
        changed(&after_add, &after_scratch),
        BTreeSet::from([("table".to_string(), "public.scratch".to_string())])
    );

    // A GRANT changes the object's row, and the REVOKE restores it.
    c.batch_execute("GRANT UPDATE ON \"Sales\".\"Orders\" TO pgb_md5")
        .await
        .unwrap();
    let granted = objects(&c).await;
    assert_eq!(
        changed(&after_scratch, &granted),
        BTreeSet::from([("table".to_string(), "\"Sales\".\"Orders\"".to_string())])
    );
    assert!(def(&granted, "table", "\"Sales\".\"Orders\"")
        .ends_with("\nGRANT UPDATE ON TABLE \"Sales\".\"Orders\" TO pgb_md5;"));
    let fp_granted = fingerprint(&c).await;
    c.batch_execute("REVOKE UPDATE ON \"Sales\".\"Orders\" FROM pgb_md5")
        .await
        .unwrap();
    // Revoked back to the owner-only ACL: nothing to say about it.
    assert_eq!(
        def(&objects(&c).await, "table", "\"Sales\".\"Orders\""),
        def(&after_scratch, "table", "\"Sales\".\"Orders\"")
    );
    assert_ne!(fingerprint(&c).await, fp_granted);

    // A comment, a new function: one row each.
    c.batch_execute("COMMENT ON FUNCTION public.add(integer, integer) IS 'sum'")
        .await
        .unwrap();
    let commented = objects(&c).await;
    assert_eq!(
        changed(&after_scratch, &commented),
        BTreeSet::from([(
            "function".to_string(),
            "public.add(integer,integer)".to_string()
        )])
    );
    c.batch_execute("CREATE FUNCTION public.add(a bigint, b bigint) RETURNS bigint LANGUAGE sql AS 'SELECT a + b'")
        .await
        .unwrap();
    assert_eq!(
        changed(&commented, &objects(&c).await),
        BTreeSet::from([(
            "function".to_string(),
            "public.add(bigint,bigint)".to_string()
        )])
    );

    // Rolled-back DDL leaves no trace.
    let fp_now = fingerprint(&c).await;
    c.batch_execute(
        "BEGIN; DROP TABLE public.scratch; CREATE INDEX ON public.base (note); ROLLBACK",
    )
    .await
    .unwrap();
    assert_eq!(fingerprint(&c).await, fp_now);
}

#[tokio::test]
async fn extension_members_system_and_pgbranch_objects_are_not_listed() {
    let db = cluster().fresh_db();
    let c = install(&db).await;
    let empty = objects(&c).await;
    // A new database: the public schema only (plpgsql ships with it).
    assert_eq!(
        empty
            .iter()
            .map(|(t, i, _)| (t.as_str(), i.as_str()))
            .collect::<Vec<_>>(),
        [("schema", "public")]
    );
    c.batch_execute(
        "CREATE EXTENSION hstore;
         CREATE EXTENSION citext;
         CREATE TABLE pgbranch.internal (x int PRIMARY KEY);
         CREATE FUNCTION pgbranch.helper() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE SCHEMA pgbranch_history;
         CREATE TABLE pgbranch_history.old (x int);
         CREATE TABLE public.kept (x public.citext);",
    )
    .await
    .unwrap();
    let objs = objects(&c).await;
    let keys: Vec<(&str, &str)> = objs
        .iter()
        .map(|(t, i, _)| (t.as_str(), i.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("extension", "citext"),
            ("extension", "hstore"),
            ("schema", "public"),
            ("table", "public.kept"),
        ]
    );
    // The extensions hold hundreds of members, none of them listed.
    let members: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid \
             WHERE d.deptype = 'e' AND x.extname IN ('hstore', 'citext')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(members > 100, "{members}");
}

/// Splits a definition into its statements: `;` outside quotes, dollar
/// quotes, comments and `BEGIN ATOMIC ... END` bodies (as psql does).
fn split_statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    // Open BEGIN ATOMIC / CASE blocks, and the previous word.
    let mut depth = 0usize;
    let mut prev_word = String::new();
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_alphabetic()
                && (i == 0 || !ident(b[i - 1]))
                && b.get(i + 1) != Some(&b'\'') =>
            {
                let end = b[i..]
                    .iter()
                    .position(|&c| !ident(c))
                    .map_or(b.len(), |p| i + p);
                let word = sql[i..end].to_ascii_uppercase();
                match word.as_str() {
                    "ATOMIC" if prev_word == "BEGIN" => depth += 1,
                    "CASE" if depth > 0 => depth += 1,
                    "END" if depth > 0 => depth -= 1,
                    _ => {}
                }
                prev_word = word;
                i = end;
            }
            b'\'' => {
                let escapes =
                    i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e') && (i < 2 || !ident(b[i - 2]));
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                    } else if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                        } else {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() && !(b[i] == b'"' && b.get(i + 1) != Some(&b'"')) {
                    i += if b[i] == b'"' { 2 } else { 1 };
                }
                i += 1;
            }
            b'$' if i == 0 || !ident(b[i - 1]) => {
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|&c| !ident(c))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if b[e] == b'$' && !b[i + 1].is_ascii_digit() => {
                        let tag = &sql[i..=e];
                        let close = sql[e + 1..].find(tag).expect("closed dollar quote");
                        i = e + 1 + close + tag.len();
                    }
                    _ => i += 1,
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i..].find("*/").map_or(b.len(), |p| i + p + 2);
            }
            b';' if depth == 0 => {
                out.push(sql[start..=i].trim().to_string());
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    if !sql[start..].trim().is_empty() {
        out.push(sql[start..].trim().to_string());
    }
    out
}

#[test]
fn splitter_keeps_quoted_semicolons() {
    assert_eq!(
        split_statements(
            "CREATE FUNCTION f() AS $function$ BEGIN x; END $function$;\n\
             COMMENT ON TABLE \"a;b\" IS E'it\\'s; \\\\';\nSELECT 'x;''y' -- c;\n, $1;\n\
             CREATE FUNCTION g() BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;"
        ),
        [
            "CREATE FUNCTION f() AS $function$ BEGIN x; END $function$;",
            "COMMENT ON TABLE \"a;b\" IS E'it\\'s; \\\\';",
            "SELECT 'x;''y' -- c;\n, $1;",
            "CREATE FUNCTION g() BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;",
        ]
    );
}

/// Order in which kinds are replayed; dependencies within and across kinds
/// (a view on a view, a serial column's sequence and its OWNED BY, an FK)
/// are resolved by retrying what failed once more objects exist.
fn kind_rank(object_type: &str) -> usize {
    [
        "schema",
        "extension",
        "type",
        "sequence",
        "function",
        "procedure",
        "aggregate",
        "table",
        "foreign table",
        "view",
        "materialized view",
        "index",
        "trigger",
        "policy",
        "rule",
        "statistics object",
    ]
    .iter()
    .position(|k| *k == object_type)
    .unwrap_or(usize::MAX)
}

/// Runs the definitions' statements in `target`, each definition in its
/// own order, retrying statements that fail until a round makes no
/// progress; returns the statements that never ran, with their errors.
async fn replay(target: &Client, defs: &[(String, String)]) -> Vec<(String, String)> {
    let mut pending: Vec<(String, Vec<String>)> = defs
        .iter()
        .map(|(label, sql)| (label.clone(), split_statements(sql)))
        .collect();
    let mut errors = BTreeMap::new();
    loop {
        let mut progress = false;
        for (label, stmts) in pending.iter_mut() {
            while let Some(stmt) = stmts.first() {
                match target.batch_execute(stmt).await {
                    Ok(()) => {
                        errors.remove(stmt);
                        stmts.remove(0);
                        progress = true;
                    }
                    Err(e) => {
                        errors.insert(
                            stmt.clone(),
                            format!(
                                "{label}: {}",
                                e.as_db_error()
                                    .map_or(e.to_string(), |d| d.message().to_string())
                            ),
                        );
                        break;
                    }
                }
            }
        }
        pending.retain(|(_, s)| !s.is_empty());
        if pending.is_empty() || !progress {
            break;
        }
    }
    pending
        .into_iter()
        .map(|(_, s)| (s[0].clone(), errors[&s[0]].clone()))
        .collect()
}

#[tokio::test]
async fn definitions_replayed_into_an_empty_database_reproduce_the_listing() {
    let db = cluster().fresh_db();
    let c = install(&db).await;
    c.batch_execute(FIXTURE).await.unwrap();
    // A view on a view, an FK cycle-free chain declared out of order, and
    // a function that needs a table.
    c.batch_execute(
        "CREATE VIEW public.vip AS SELECT * FROM public.active_users WHERE id < 10;
         CREATE TABLE \"Sales\".\"Lines\" (order_id int REFERENCES \"Sales\".\"Orders\", n int,
             PRIMARY KEY (order_id, n));
         CREATE FUNCTION public.user_count() RETURNS bigint LANGUAGE sql STABLE
             AS 'SELECT count(*) FROM public.users';
         CREATE TABLE public.counted (n bigint DEFAULT public.user_count());",
    )
    .await
    .unwrap();
    let source = objects(&c).await;

    let replica_db = cluster().fresh_db();
    let r = install(&replica_db).await;
    let mut defs: Vec<(usize, String, String)> = source
        .iter()
        .map(|(t, i, d)| (kind_rank(t), format!("{t} {i}"), d.clone()))
        .collect();
    // The foreign server is not a schema object: the replay supplies it
    // (after postgres_fdw, by retrying).
    defs.push((
        usize::MAX,
        "server remote".into(),
        "CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'elsewhere');"
            .into(),
    ));
    defs.sort();
    let defs: Vec<(String, String)> = defs.into_iter().map(|(_, l, d)| (l, d)).collect();
    let failed = replay(&r, &defs).await;
    assert!(failed.is_empty(), "statements that never ran: {failed:#?}");

    let replica = objects(&r).await;
    assert_eq!(changed(&source, &replica), BTreeSet::new());
    assert_eq!(replica, source);
    assert_eq!(fingerprint(&r).await, fingerprint(&c).await);
}

#[tokio::test]
async fn a_plain_role_with_execute_sees_the_same_listing() {
    let db = cluster().fresh_db();
    let c = install(&db).await;
    c.batch_execute(FIXTURE).await.unwrap();
    c.batch_execute(
        "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgbranch FROM PUBLIC;
         REVOKE ALL ON SCHEMA pgbranch FROM PUBLIC;
         CREATE TABLE public.secret (x int);
         REVOKE ALL ON SCHEMA \"Sales\" FROM PUBLIC;",
    )
    .await
    .unwrap();
    let plain_conn = format!(
        "host=127.0.0.1 port={} user=pgb_plain dbname={db}",
        cluster().port
    );
    let plain = connect(&plain_conn).await;
    let err = plain
        .query("SELECT * FROM pgbranch.schema_objects()", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("42501"),
        "{err}"
    );
    c.batch_execute(
        "GRANT USAGE ON SCHEMA pgbranch TO pgb_plain;
         GRANT EXECUTE ON FUNCTION pgbranch.schema_objects(name[], name[]), pgbranch.schema_fingerprint() TO pgb_plain;",
    )
    .await
    .unwrap();
    // Objects it may not use or even look into are listed all the same.
    let as_plain = objects(&plain).await;
    assert!(as_plain.iter().any(|(_, i, _)| i == "public.secret"));
    assert_eq!(as_plain, objects(&c).await);
    assert_eq!(fingerprint(&plain).await, fingerprint(&c).await);
    // Whatever its search_path.
    plain
        .batch_execute("SET search_path = \"Sales\", public")
        .await
        .unwrap();
    assert_eq!(objects(&plain).await, as_plain);
}
