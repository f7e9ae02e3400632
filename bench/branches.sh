#!/usr/bin/env bash
# Measures how long creating a branch takes, through one pgbranch proxy in
# front of a private PostgreSQL:
#
#   1. a schema-only `CREATE BRANCH` of a BRANCH_TABLES-table schema (each
#      table: bigserial primary key, a CHECK, a DEFAULT now(), an index and
#      a foreign key to the previous table), and the `DROP BRANCH` after it;
#   2. `CREATE BRANCH ... WITH DATA` of the pgbench tables (`pgbench -i -s
#      SCALE`) against a plain copy of the same rows made directly: CREATE
#      TABLE AS of the 4 tables in one transaction, and the same plus the
#      primary keys, since the branch builds its indexes too.
#
# Each is repeated BRANCH_ROUNDS times after one unmeasured warm-up branch
# (the first CREATE BRANCH in a database also creates the pgbranch
# metadata schema); the report gives medians and minima of psql's \timing,
# one fresh psql session per timed command (connection setup not timed).
#
# Usage (from anywhere; see bench/README.md):
#   bash bench/branches.sh > result.txt              # full run (~3-5 minutes)
#   BRANCH_ROUNDS=1 SCALE=1 bash bench/branches.sh   # smoke run
#
# stdout carries only the report; progress and diagnostics go to stderr.
set -euo pipefail

# ---------------------------------------------------------------------------
# Parameters (all overridable through the environment)
# ---------------------------------------------------------------------------
BRANCH_ROUNDS=${BRANCH_ROUNDS:-5}   # timed rounds per measurement
BRANCH_TABLES=${BRANCH_TABLES:-100} # tables of the schema-only scenario
SCALE=${SCALE:-10}                  # pgbench -i -s of the WITH DATA scenario
KEEP_TMP=${KEEP_TMP:-0}             # 1: keep the temp dir (logs) after the run

# Shared helpers (bench/lib.sh): log/die, processes, PostgreSQL setup,
# medians and paired rounds; it also resets the libpq environment.
LOG_PREFIX="branches.sh"
MEDIAN_ROUNDING="awk"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The databases of the two scenarios, both created directly.
SCHEMA_DB=branch_schema
DATA_DB=branch_data
# The pgbench tables and their primary keys (pgbench_history has none).
PGBENCH_TABLES=(pgbench_accounts pgbench_branches pgbench_history pgbench_tellers)
PGBENCH_KEYS=("pgbench_accounts aid" "pgbench_branches bid" "pgbench_tellers tid")

# ---------------------------------------------------------------------------
# State shared with cleanup() (besides lib.sh's TMP, PG_BINDIR, PG_STARTED)
# ---------------------------------------------------------------------------
PGBRANCH_PID=""

cleanup() {
    local status=$?
    set +e
    stop_pid "$PGBRANCH_PID"
    stop_postgres
    remove_tmp "logs: $TMP/*.log, runs: $TMP/runs"
    exit "$status"
}
install_cleanup

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

check_params() {
    require_positive BRANCH_ROUNDS BRANCH_TABLES SCALE
    [[ $BRANCH_TABLES -le 999 ]] || die "BRANCH_TABLES must be at most 999 (tables are named t001..t999)"
    check_tools
}

# psql PORT DB SQL...: runs SQL, prints unaligned tuples-only output.
sql_at() {
    local port=$1 db=$2
    shift 2
    psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

# quiet PORT DB SQL: runs one statement with NOTICEs (DROP ... CASCADE
# lists every object) off; SET is sent first, on its own, so that a branch
# command stays alone in its Query for the proxy to recognise.
quiet() {
    sql_at "$1" "$2" -c 'SET client_min_messages = warning' -c "$3" >/dev/null
}

# BRANCH_TABLES tables t001.. in SCHEMA_DB, created directly (no history):
# bigserial primary key, a text with a CHECK, a numeric, a boolean, a
# timestamptz DEFAULT now(), an index and a foreign key to the previous
# table (t001's prev_id has none).
create_schema_db() {
    log "creating $BRANCH_TABLES tables in $SCHEMA_DB (directly) ..."
    sql_at "$PG_PORT" postgres -c "CREATE DATABASE $SCHEMA_DB" >/dev/null
    sql_at "$PG_PORT" "$SCHEMA_DB" >/dev/null <<EOF
DO \$\$
DECLARE
    t text;
    prev text;
BEGIN
    FOR i IN 1..$BRANCH_TABLES LOOP
        t := format('t%s', lpad(i::text, 3, '0'));
        prev := format('t%s', lpad((i - 1)::text, 3, '0'));
        EXECUTE format('CREATE TABLE %I (id bigserial PRIMARY KEY, '
                       'name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200), '
                       'amount numeric(12,2) NOT NULL DEFAULT 0, active boolean NOT NULL DEFAULT true, '
                       'created_at timestamptz NOT NULL DEFAULT now(), prev_id bigint%s)',
                       t, CASE WHEN i > 1 THEN format(' REFERENCES %I (id)', prev) ELSE '' END);
        EXECUTE format('CREATE INDEX %I ON %I (created_at)', t || '_created_at_idx', t);
    END LOOP;
END
\$\$;
EOF
}

# pgbench -i -s SCALE directly into DATA_DB.
create_data_db() {
    log "pgbench -i -s $SCALE into $DATA_DB (directly) ..."
    sql_at "$PG_PORT" postgres -c "CREATE DATABASE $DATA_DB" >/dev/null
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DATA_DB" >"$TMP/pgbench-init.log" 2>&1 ||
        { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
}

# ---------------------------------------------------------------------------
# Measuring; $RESULTS has a line "scenario round target - ms -" per timed
# command ("... FAIL FAIL -" when it failed), the layout lib.sh's values and
# paired read (the time is in the latency column).
# ---------------------------------------------------------------------------

# timed NAME PORT DB SQL: runs SQL (one line, sent as one Query) in a fresh
# psql session with \timing on; sets TIMED_MS (psql's time, ms) and
# TIMED_ROW (the first result row). On failure prints psql's output to
# stderr and returns 1.
timed() {
    local name=$1 port=$2 db=$3 sql=$4 out
    out=$TMP/runs/$name
    printf '%s\n' '\set ON_ERROR_STOP 1' '\timing on' "$sql" >"$out.sql"
    TIMED_MS=""
    TIMED_ROW=""
    if psql -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" -f "$out.sql" >"$out.out" 2>"$out.err"; then
        TIMED_MS=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$out.out" | tail -1)
        TIMED_ROW=$(grep -v '^Time: ' "$out.out" | head -1 || true)
        [[ -n $TIMED_MS ]] && return 0
    fi
    log "'$sql' on port $port, database $db failed:"
    cat "$out.out" "$out.err" >&2
    return 1
}

# record SCENARIO ROUND TARGET: appends the last timed command's result
# (or a failure) to $RESULTS.
record() {
    if [[ -n $TIMED_MS ]]; then
        echo "$1 $2 $3 - $TIMED_MS -" >>"$RESULTS"
    else
        echo "$1 $2 $3 FAIL FAIL -" >>"$RESULTS"
    fi
}

# Unmeasured: a checkpoint before each timed command, so that one started
# by an earlier copy's WAL does not land in the next measurement.
checkpoint() { sql_at "$PG_PORT" postgres -c 'CHECKPOINT' >/dev/null; }

# The direct copy of the pgbench tables into schema cN (CREATE TABLE AS, no
# indexes or constraints), with keys=1 plus the primary keys afterwards.
ctas_sql() {
    local schema=$1 keys=$2 t k col sql
    sql="BEGIN \\; CREATE SCHEMA $schema"
    for t in "${PGBENCH_TABLES[@]}"; do
        sql+=" \\; CREATE TABLE $schema.$t AS SELECT * FROM public.$t"
    done
    if [[ $keys == 1 ]]; then
        for k in "${PGBENCH_KEYS[@]}"; do
            read -r t col <<<"$k"
            sql+=" \\; ALTER TABLE $schema.$t ADD PRIMARY KEY ($col)"
        done
    fi
    echo "$sql \\; COMMIT"
}

# Scenario 1: schema-only CREATE BRANCH bN and DROP BRANCH bN through the
# proxy, after the warm-up branch b0.
run_schema_only() {
    log "schema-only: warm-up CREATE BRANCH b0 (sets up the pgbranch schema) ..."
    timed schema-warmup-create "$PGBRANCH_PORT" "$SCHEMA_DB" 'CREATE BRANCH b0;' ||
        die "the warm-up CREATE BRANCH failed"
    WARMUP_SCHEMA_MS=$TIMED_MS
    timed schema-warmup-drop "$PGBRANCH_PORT" "$SCHEMA_DB" 'DROP BRANCH b0;' ||
        die "the warm-up DROP BRANCH failed"
    log "schema-only: $BRANCH_ROUNDS round(s) of CREATE BRANCH / DROP BRANCH ..."
    local round
    for round in $(seq "$BRANCH_ROUNDS"); do
        checkpoint
        timed "schema-r$round-create" "$PGBRANCH_PORT" "$SCHEMA_DB" "CREATE BRANCH b$round;" || true
        record schema "$round" create
        [[ -n $TIMED_ROW ]] && SCHEMA_ROW=$TIMED_ROW
        if [[ -n $TIMED_MS ]]; then
            timed "schema-r$round-drop" "$PGBRANCH_PORT" "$SCHEMA_DB" "DROP BRANCH b$round;" || true
            record schema "$round" drop
        fi
    done
}

# One timed WITH DATA variant of a round, and its unmeasured clean-up.
run_data_one() {
    local round=$1 target=$2
    checkpoint
    case $target in
    branch)
        timed "data-r$round-branch" "$PGBRANCH_PORT" "$DATA_DB" "CREATE BRANCH d$round WITH DATA;" || true
        record data "$round" branch
        [[ -n $TIMED_ROW ]] && DATA_ROW=$TIMED_ROW
        if [[ -n $TIMED_MS ]]; then
            quiet "$PGBRANCH_PORT" "$DATA_DB" "DROP BRANCH d$round"
        fi
        ;;
    ctas | ctas-pk)
        timed "data-r$round-$target" "$PG_PORT" "$DATA_DB" \
            "$(ctas_sql "c$round" "$([[ $target == ctas-pk ]] && echo 1 || echo 0)")" || true
        record data "$round" "$target"
        quiet "$PG_PORT" "$DATA_DB" "DROP SCHEMA IF EXISTS c$round CASCADE"
        ;;
    esac
}

# Scenario 2: CREATE BRANCH dN WITH DATA through the proxy against the
# direct copies, after the warm-up branch d0; the three rotate by one
# position each round.
run_with_data() {
    log "WITH DATA: warm-up CREATE BRANCH d0 WITH DATA (sets up the pgbranch schema) ..."
    timed data-warmup-create "$PGBRANCH_PORT" "$DATA_DB" 'CREATE BRANCH d0 WITH DATA;' ||
        die "the warm-up CREATE BRANCH WITH DATA failed"
    WARMUP_DATA_MS=$TIMED_MS
    quiet "$PGBRANCH_PORT" "$DATA_DB" 'DROP BRANCH d0'
    log "WITH DATA: $BRANCH_ROUNDS round(s) x branch, CTAS, CTAS + primary keys ..."
    local targets=(branch ctas ctas-pk) round i
    for round in $(seq "$BRANCH_ROUNDS"); do
        for i in 0 1 2; do
            run_data_one "$round" "${targets[$(((i + round - 1) % 3))]}"
        done
    done
}

# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

# fmt FORMAT: formats the number on stdin with awk's printf ("-" stays).
fmt() { awk -v f="$1" '{ if ($1 == "-" || $1 == "") print "-"; else printf f "\n", $1 }'; }

failures() {
    awk -v s="$1" -v t="$2" '$1 == s && $3 == t && $4 == "FAIL"' "$RESULTS" | wc -l
}

# row SCENARIO TARGET LABEL: one table line: median, min, failures, per round.
row() {
    local scenario=$1 target=$2 label=$3 vals
    vals=$(values "$scenario" "$target" lat)
    printf '%-44s %10s %10s %7s   %s\n' "$label" \
        "$(awk '{ print $2 }' <<<"$vals" | median | fmt %.1f)" \
        "$(awk '{ print $2 }' <<<"$vals" | sort -g | head -1 | fmt %.1f)" \
        "$(failures "$scenario" "$target")" \
        "$(awk '{ printf "%.0f\n", $2 }' <<<"$vals" | paste -sd' ')"
}

# The "branch|parent|objects|tables|rows_copied" row CREATE BRANCH
# returned: field N, or "?".
row_field() { awk -F'|' -v n="$2" '{ print ($n == "" ? "?" : $n) }' <<<"${1:-}"; }

print_header() {
    echo "pgbranch benchmark: time to create a branch"
    print_environment
    echo "command:    BRANCH_ROUNDS=$BRANCH_ROUNDS BRANCH_TABLES=$BRANCH_TABLES SCALE=$SCALE bash bench/branches.sh"
    echo "proxy:      pgbranch serve --upstream (PGBRANCH_LOG=warn, history on, --metrics-listen ''); 127.0.0.1 TCP, PGSSLMODE=disable"
    printf '%s\n' "timing:     psql \\timing of one command in a fresh psql session (connection not timed), $BRANCH_ROUNDS round(s)"
    echo "            after one unmeasured warm-up branch per database; an unmeasured CHECKPOINT before each"
}

report_schema_only() {
    echo
    echo "== schema-only: CREATE BRANCH bN through the proxy, $BRANCH_TABLES tables in $SCHEMA_DB =="
    echo "schema:     t001..t$(printf '%03d' "$BRANCH_TABLES"): id bigserial PRIMARY KEY, name text NOT NULL CHECK (length BETWEEN 1 AND 200),"
    echo "            amount numeric(12,2) DEFAULT 0, active boolean DEFAULT true, created_at timestamptz DEFAULT now(),"
    echo "            prev_id bigint REFERENCES t<previous> (id); an index on created_at; no rows"
    echo "            ($(row_field "$SCHEMA_ROW" 3) objects copied per branch, as CREATE BRANCH reports)"
    printf '%-44s %10s %10s %7s   %s\n' "" "median ms" "min ms" failed "per round (ms)"
    row schema create "CREATE BRANCH bN"
    row schema drop "DROP BRANCH bN"
    echo "warm-up (excluded): the first CREATE BRANCH b0 took $(fmt %.1f <<<"$WARMUP_SCHEMA_MS") ms (it also creates the pgbranch metadata schema)"
}

report_with_data() {
    echo
    echo "== WITH DATA: pgbench -i -s $SCALE in $DATA_DB ($DATA_SIZE of tables and indexes) =="
    echo "branch:     CREATE BRANCH dN WITH DATA through the proxy ($(row_field "$DATA_ROW" 3) objects, $(row_field "$DATA_ROW" 4) tables, $(row_field "$DATA_ROW" 5) rows copied)"
    echo "CTAS:       directly: BEGIN; CREATE SCHEMA cN; CREATE TABLE cN.<t> AS SELECT * FROM public.<t> for the 4 tables; COMMIT"
    echo "CTAS + PK:  the same plus ALTER TABLE cN.<t> ADD PRIMARY KEY (...) for accounts, branches, tellers, before COMMIT"
    echo "order:      the three rotate by one position each round; each copy is dropped (unmeasured) after it"
    printf '%-44s %10s %10s %7s   %s\n' "" "median ms" "min ms" failed "per round (ms)"
    row data branch "CREATE BRANCH dN WITH DATA (proxy)"
    row data ctas "CTAS copy (direct)"
    row data ctas-pk "CTAS + primary keys (direct)"
    echo "branch / CTAS:       $(paired_summary data branch ctas lat ratio %.2f)"
    echo "branch / CTAS + PK:  $(paired_summary data branch ctas-pk lat ratio %.2f)"
    echo "warm-up (excluded): the first CREATE BRANCH d0 WITH DATA took $(fmt %.1f <<<"$WARMUP_DATA_MS") ms (it also creates the pgbranch metadata schema)"
}

print_end() {
    echo
    echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    if grep -q ' FAIL ' "$RESULTS"; then
        echo "WARNING: $(grep -c ' FAIL ' "$RESULTS") timed command(s) failed; see stderr"
    fi
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
main() {
    check_params
    find_pg_bindir
    build
    TMP=$(mktemp -d /tmp/pgbranch-branches-bench.XXXXXX)
    mkdir -p "$TMP/runs"
    RESULTS=$TMP/results.txt
    : >"$RESULTS"
    SCHEMA_ROW=""
    DATA_ROW=""

    start_postgres
    create_schema_db
    create_data_db
    DATA_SIZE=$(sql_at "$PG_PORT" "$DATA_DB" -c \
        "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'")
    start_pgbranch

    print_header
    run_schema_only
    run_with_data
    report_schema_only
    report_with_data
    print_end
}

main "$@"
