#!/usr/bin/env bash
# Measures what time travel (system-versioned tables) costs, through one
# pgbranch proxy in front of a private PostgreSQL with two databases made
# alike (`pgbench -i -s SCALE` directly, then a bigserial primary key on
# pgbench_history through the proxy in both), versioning enabled on the
# four pgbench tables of one of them:
#
#   1. write cost: pgbench tpcb-like (the built-in default script) through
#      the proxy, versioned against unversioned, in paired alternating
#      rounds: median TPS and the per-round ratio; the trigger functions'
#      time per transaction (track_functions = all);
#   2. read cost: a primary-key lookup AS OF a moment T against the same
#      lookup on the live table, after UPDATES row updates of
#      pgbench_accounts made after T (UPDATE_BATCH rows per statement, also
#      run in the unversioned database for comparison): pgbench custom
#      scripts, 1 client and CLIENTS clients, paired alternating rounds,
#      median latency and the per-round ratio, plus EXPLAIN (ANALYZE,
#      BUFFERS) of both;
#   3. history size: bytes per row of the pgbench_accounts history table and
#      bytes added per updated row, against the live table's bytes per row.
#
# Usage (from anywhere; see bench/README.md):
#   bash bench/timetravel.sh > result.txt                   # full run
#   DURATION=2 ROUNDS=1 SCALE=1 bash bench/timetravel.sh    # smoke run
#
# stdout carries only the report; progress and diagnostics go to stderr.
set -euo pipefail

# ---------------------------------------------------------------------------
# Parameters (all overridable through the environment)
# ---------------------------------------------------------------------------
DURATION=${DURATION:-10}          # seconds per pgbench run (-T)
ROUNDS=${ROUNDS:-5}               # paired rounds per scenario
MODE=${MODE:-prepared}            # pgbench -M of the tpcb-like runs
SCALE=${SCALE:-10}                # pgbench -i -s (both databases)
WARMUP=${WARMUP:-5}               # seconds of unrecorded direct pgbench -S per database first
CLIENTS=${CLIENTS:-8}             # pgbench -c (tpcb-like; the multi-client lookups)
THREADS=${THREADS:-2}             # pgbench -j
UPDATES=${UPDATES:-1000000}       # row updates of pgbench_accounts before the lookups
UPDATE_BATCH=${UPDATE_BATCH:-100000} # rows per UPDATE statement
KEEP_TMP=${KEEP_TMP:-0}           # 1: keep the temp dir (logs) after the run

# Shared helpers (bench/lib.sh): log/die, processes, PostgreSQL setup,
# pgbench parsing, medians and paired rounds; it also resets the libpq
# environment.
LOG_PREFIX="timetravel.sh"
MEDIAN_ROUNDING="awk"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The two databases, both created directly; targets of section 1 and of the
# updates are named after them.
VERS_DB=versioned
PLAIN_DB=unversioned
PGBENCH_TABLES=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history)

# ---------------------------------------------------------------------------
# State shared with cleanup() (besides lib.sh's TMP, PG_BINDIR, PG_STARTED)
# ---------------------------------------------------------------------------
PGBRANCH_PID=""
PGBRANCH_PORT=""

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
    require_positive DURATION ROUNDS SCALE CLIENTS THREADS UPDATES UPDATE_BATCH
    require_non_negative WARMUP
    [[ $MODE =~ ^(simple|extended|prepared)$ ]] || die "MODE must be simple, extended or prepared (got '$MODE')"
    ACCOUNTS=$((100000 * SCALE))
    ((UPDATES % UPDATE_BATCH == 0)) || die "UPDATES ($UPDATES) must be a multiple of UPDATE_BATCH ($UPDATE_BATCH)"
    ((ACCOUNTS % UPDATE_BATCH == 0)) ||
        die "UPDATE_BATCH ($UPDATE_BATCH) must divide the $ACCOUNTS accounts of scale $SCALE"
    check_tools
}

# sql_at PORT DB ARGS...: psql with ON_ERROR_STOP, unaligned tuples-only
# output.
sql_at() {
    local port=$1 db=$2
    shift 2
    psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}
direct() { sql_at "$PG_PORT" "$@"; }
proxied() { sql_at "$PGBRANCH_PORT" "$@"; }

# Seconds since the epoch, with decimals.
now_s() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

# Creates DB directly and fills it with pgbench -i -s SCALE; function
# statistics on (track_functions = all, in both databases alike).
create_db() {
    local db=$1
    log "pgbench -i -s $SCALE into $db (directly) ..."
    direct postgres -c "CREATE DATABASE $db" >/dev/null
    direct postgres -c "ALTER DATABASE $db SET track_functions = 'all'" >/dev/null
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db" >"$TMP/pgbench-init-$db.log" 2>&1 ||
        { cat "$TMP/pgbench-init-$db.log" >&2; die "pgbench -i into $db failed"; }
}

# timed NAME PORT DB SQL: runs SQL (one line, sent as one Query) in a fresh
# psql session with \timing on; sets TIMED_MS (psql's time, ms). On
# failure prints psql's output to stderr and returns 1.
timed() {
    local name=$1 port=$2 db=$3 sql=$4 out
    out=$TMP/runs/$name
    printf '%s\n' '\set ON_ERROR_STOP 1' '\timing on' "$sql" >"$out.sql"
    TIMED_MS=""
    if psql -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" -f "$out.sql" >"$out.out" 2>"$out.err"; then
        TIMED_MS=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$out.out" | tail -1)
        [[ -n $TIMED_MS ]] && return 0
    fi
    log "'$sql' on port $port, database $db failed:"
    cat "$out.out" "$out.err" >&2
    return 1
}

# The same primary key on pgbench_history in both databases (a versioned
# table needs one), through the proxy so that both get the pgbranch
# metadata schema and the recorded change; then versioning on the four
# tables of VERS_DB, each timed (ENABLE_MS_<table>).
prepare_versioning() {
    local db t
    for db in "$VERS_DB" "$PLAIN_DB"; do
        log "$db: ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY (through the proxy) ..."
        proxied "$db" -c 'ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY' >/dev/null
    done
    for t in "${PGBENCH_TABLES[@]}"; do
        log "$VERS_DB: ALTER TABLE $t ADD SYSTEM VERSIONING (through the proxy) ..."
        timed "enable-$t" "$PGBRANCH_PORT" "$VERS_DB" "ALTER TABLE $t ADD SYSTEM VERSIONING" ||
            die "enabling versioning of $t failed"
        printf -v "ENABLE_MS_$t" '%s' "$TIMED_MS"
    done
    # Both databases alike again: vacuumed and analysed (history tables
    # included), directly.
    for db in "$VERS_DB" "$PLAIN_DB"; do
        direct "$db" -c 'VACUUM ANALYZE' >/dev/null
    done
}

# The history table (schema-qualified, quoted) of a table of VERS_DB.
history_of() {
    direct "$VERS_DB" -c "SELECT format('pgbranch_history.%I', history) FROM pgbranch.versioned_tables
                          WHERE relid = '$1'::regclass"
}

# Rows in all the history tables of VERS_DB, "table=rows ..." and the sum.
history_rows() {
    local t h n sum=0 out=""
    for t in "${PGBENCH_TABLES[@]}"; do
        h=$(history_of "$t")
        n=$(direct "$VERS_DB" -c "SELECT count(*) FROM $h")
        out+="${t#pgbench_}=$n "
        sum=$((sum + n))
    done
    echo "${out}total=$sum"
}

# warm_up_dbs: WARMUP seconds of unrecorded direct `pgbench -S` on each
# database, so that the first measured run is not the one with a cold
# buffer cache.
warm_up_dbs() {
    [[ $WARMUP -gt 0 ]] || return 0
    local db
    for db in "$VERS_DB" "$PLAIN_DB"; do
        log "warm-up: ${WARMUP}s direct pgbench -S on $db ..."
        pgbench -n -S -M "$MODE" -T "$WARMUP" -c 2 -j 2 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db" \
            >"$TMP/warmup-$db.log" 2>&1 || { cat "$TMP/warmup-$db.log" >&2; die "warm-up pgbench failed"; }
    done
}

# Function statistics of DB (pg_stat_user_functions) start from zero.
reset_stats() { direct "$1" -c 'SELECT pg_stat_reset()' >/dev/null; }

# save_func_stats DB FILE: "name calls total_ms self_ms" per function with
# calls, after giving the last sessions' backends time to flush.
save_func_stats() {
    sleep 1
    direct "$1" -F ' ' -c "SELECT schemaname || '.' || funcname, calls, round(total_time::numeric, 3),
                                  round(self_time::numeric, 3)
                           FROM pg_stat_user_functions WHERE calls > 0 ORDER BY total_time DESC" >"$2"
}

# ---------------------------------------------------------------------------
# Measuring; $RESULTS has a line "scenario round target tps latency_ms
# proxy_cpu_us transactions" per pgbench run ("... FAIL FAIL - -" when it
# failed) and "update batch target - ms - -" per UPDATE statement.
# ---------------------------------------------------------------------------

# run_pgbench SCENARIO ROUND TARGET DB PGBENCH-ARGS...: one pgbench run
# through the proxy.
run_pgbench() {
    local scenario=$1 round=$2 target=$3 db=$4
    shift 4
    local out rc=0 cpu0 cpu1 txns
    out=$TMP/runs/$scenario-r$round-$target.txt
    cpu0=$(cpu_ticks "$PGBRANCH_PID")
    pgbench "$@" -h 127.0.0.1 -p "$PGBRANCH_PORT" -U postgres "$db" >"$out" 2>&1 || rc=$?
    cpu1=$(cpu_ticks "$PGBRANCH_PID")
    if ! pgbench_result "$out" "$rc" "$cpu0" "$cpu1"; then
        log "pgbench $* ($target, $db) FAILED (exit $rc, round $round); output:"
        cat "$out" >&2
        kill -0 "$PGBRANCH_PID" 2>/dev/null || log "the pgbranch process is no longer running"
        log "tail of $TMP/pgbranch.log:"
        tail -20 "$TMP/pgbranch.log" >&2 || true
        echo "$scenario $round $target FAIL FAIL - -" >>"$RESULTS"
        return 0
    fi
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    log "  $scenario round $round: $target tps=$PGB_TPS latency=${PGB_LAT}ms proxy cpu=${PGB_CPU_US}us/txn"
    echo "$scenario $round $target $PGB_TPS $PGB_LAT $PGB_CPU_US $txns" >>"$RESULTS"
}

# Section 1: tpcb-like through the proxy, versioned first in odd rounds,
# unversioned first in even ones.
run_tpcb() {
    local round order t db
    log "1. tpcb-like: $ROUNDS round(s) x 2 databases x ${DURATION}s ..."
    for round in $(seq "$ROUNDS"); do
        if ((round % 2)); then order="$VERS_DB $PLAIN_DB"; else order="$PLAIN_DB $VERS_DB"; fi
        for t in $order; do
            db=$t
            run_pgbench tpcb "$round" "$t" "$db" \
                -n -M "$MODE" -T "$DURATION" -c "$CLIENTS" -j "$THREADS"
        done
    done
}

# Section 2a: UPDATES row updates of pgbench_accounts in both databases,
# UPDATE_BATCH rows per statement through the proxy, batch by batch in
# alternating order.
run_updates() {
    local batches=$((UPDATES / UPDATE_BATCH)) i from to order db t0
    log "2. $UPDATES row updates: $batches x UPDATE of $UPDATE_BATCH rows per database (through the proxy) ..."
    t0=$(now_s)
    for i in $(seq "$batches"); do
        from=$((((i - 1) * UPDATE_BATCH) % ACCOUNTS + 1))
        to=$((from + UPDATE_BATCH - 1))
        if ((i % 2)); then order="$VERS_DB $PLAIN_DB"; else order="$PLAIN_DB $VERS_DB"; fi
        for db in $order; do
            if timed "update-$i-$db" "$PGBRANCH_PORT" "$db" \
                "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $from AND $to"; then
                echo "update $i $db - $TIMED_MS - -" >>"$RESULTS"
                log "  batch $i (aid $from..$to): $db ${TIMED_MS} ms"
            else
                echo "update $i $db FAIL FAIL - -" >>"$RESULTS"
            fi
        done
    done
    UPDATES_WALL_S=$(since "$t0")
}

# Section 2b: live against AS OF lookups through the proxy in VERS_DB,
# live first in odd rounds, AS OF first in even ones.
run_lookups() {
    local scenario=$1 clients=$2 threads=$3 round order t
    log "2. lookups, $clients client(s): $ROUNDS round(s) x live, AS OF x ${DURATION}s ..."
    for round in $(seq "$ROUNDS"); do
        if ((round % 2)); then order="live asof"; else order="asof live"; fi
        for t in $order; do
            run_pgbench "$scenario" "$round" "$t" "$VERS_DB" \
                -n -M prepared -s "$SCALE" -f "$TMP/lookup-$t.sql" -T "$DURATION" -c "$clients" -j "$threads"
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

# col_median SCENARIO TARGET COL FORMAT
col_median() { values "$1" "$2" "$3" | awk '{ print $2 }' | median | fmt "$4"; }

# Transactions pgbench reported for a target of a scenario (runs that did
# not fail).
txns_of() {
    awk -v s="$1" -v t="$2" '$1 == s && $3 == t && $4 != "FAIL" { n += $7 } END { print n + 0 }' "$RESULTS"
}

# goal VALUE OP LIMIT: "met" or "missed" ("-" for no value).
goal() {
    local v=${1%% *}
    [[ $v == - || -z $v ]] && { echo "-"; return; }
    awk -v v="$v" -v op="$2" -v l="$3" 'BEGIN {
        ok = (op == ">=" ? v >= l : v <= l); print (ok ? "met" : "missed") }'
}

# print_func_stats FILE [N LABEL]: the function statistics table; N adds a
# column of microseconds per one of N (LABEL: "txn", "row").
print_func_stats() {
    local file=$1 txns=${2:-} label=${3:-}
    if [[ ! -s $file ]]; then
        echo "  (no function calls recorded)"
        return
    fi
    printf '  %-44s %9s %11s %11s %12s %11s\n' function calls "total ms" "self ms" "us per call" \
        "$([[ -n $txns ]] && echo "us per $label")"
    awk -v n="$txns" '{
        per_txn = (n != "" && n > 0) ? sprintf("%.1f", $3 * 1000 / n) : ""
        printf "  %-44s %9d %11.1f %11.1f %12.1f %11s\n", $1, $2, $3, $4, $3 * 1000 / $2, per_txn }' "$file"
}

# Sizes of a relation with its indexes in VERS_DB: "total heap indexes rows".
rel_sizes() {
    direct "$VERS_DB" -F ' ' -c "SELECT pg_total_relation_size('$1'), pg_relation_size('$1'),
                                        pg_indexes_size('$1'), (SELECT count(*) FROM $1)"
}

# explain NAME SQL: SQL through the proxy, twice in one psql session, the
# second output into $TMP/explain-NAME.txt.
explain() {
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGBRANCH_PORT" -U postgres -d "$VERS_DB" \
        -c '\o /dev/null' -c "$2" -c '\o' -c "$2" >"$TMP/explain-$1.txt" 2>&1 ||
        { cat "$TMP/explain-$1.txt" >&2; die "$2 failed"; }
}

pretty() { direct "$VERS_DB" -c "SELECT pg_size_pretty($1::bigint)"; }

print_header() {
    echo "pgbranch benchmark: time travel (system-versioned tables), paired alternating rounds"
    print_environment
    echo "command:    DURATION=$DURATION ROUNDS=$ROUNDS MODE=$MODE SCALE=$SCALE WARMUP=$WARMUP CLIENTS=$CLIENTS THREADS=$THREADS UPDATES=$UPDATES UPDATE_BATCH=$UPDATE_BATCH bash bench/timetravel.sh"
    echo "server:     shared_buffers = $(direct postgres -c 'SHOW shared_buffers'), autovacuum = $(direct postgres -c 'SHOW autovacuum') (defaults)"
    echo "proxy:      one pgbranch serve --upstream (PGBRANCH_LOG=warn, history on, --metrics-listen '') for both"
    echo "            databases; 127.0.0.1 TCP, PGSSLMODE=disable; ${WARMUP}s unrecorded direct pgbench -S per database first"
    echo "databases:  $VERS_DB and $PLAIN_DB: pgbench -i -s $SCALE (directly), then through the proxy in both"
    echo "            ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY; in $VERS_DB only"
    echo "            ALTER TABLE <t> ADD SYSTEM VERSIONING for the 4 pgbench tables (through the proxy), then"
    echo "            VACUUM ANALYZE of both (directly); track_functions = all in both"
    local t
    printf 'enabling:   '
    for t in "${PGBENCH_TABLES[@]}"; do
        local var="ENABLE_MS_$t"
        printf '%s %s ms; ' "$t" "$(fmt %.0f <<<"${!var}")"
    done
    printf '%s\n' "(ADD SYSTEM VERSIONING, psql \\timing)"
}

report_tpcb() {
    local t txns
    echo
    echo "== 1. tpcb-like (built-in default script) through pgbranch: pgbench -n -M $MODE -T $DURATION -c $CLIENTS -j $THREADS, $ROUNDS round(s) =="
    echo "order:      $VERS_DB first in odd rounds, $PLAIN_DB first in even rounds"
    printf '%-12s %11s %14s %16s %7s\n' target "median TPS" "median lat ms" "proxy CPU us/tx" failed
    for t in "$VERS_DB" "$PLAIN_DB"; do
        printf '%-12s %11s %14s %16s %7s\n' "$t" \
            "$(col_median tpcb "$t" tps %.0f)" "$(col_median tpcb "$t" lat %.3f)" \
            "$(col_median tpcb "$t" cpu %.2f)" "$(failures tpcb "$t")"
    done
    local ratio
    ratio=$(paired_summary tpcb "$VERS_DB" "$PLAIN_DB" tps ratio %.3f)
    echo "TPS versioned / unversioned: $ratio  [goal >= 0.7: $(goal "$ratio" ">=" 0.7)]"
    echo "history rows in $VERS_DB before the runs: $HIST_BEFORE_TPCB"
    echo "history rows in $VERS_DB after the runs:  $HIST_AFTER_TPCB"
    echo "(history grows during the runs: every transaction adds a version of one account, teller and branch"
    echo " and one pgbench_history row in $VERS_DB, so later versioned rounds run against larger history tables)"
    txns=$(txns_of tpcb "$VERS_DB")
    echo "trigger functions in $VERS_DB over the versioned runs ($txns transactions; pg_stat_user_functions,"
    echo "track_functions = all; wall time inside the function, its SQL statements included):"
    print_func_stats "$TMP/funcs-tpcb.txt" "$txns" txn
}

report_updates() {
    local t
    echo
    echo "== 2. primary-key lookup AS OF T against the live table, after $UPDATES row updates =="
    echo "T:          $AS_OF_T (SELECT now() in $VERS_DB after section 1)"
    echo "updates:    $((UPDATES / UPDATE_BATCH)) x UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN <a> AND <a + $((UPDATE_BATCH - 1))>"
    echo "            (one statement per transaction through the proxy, consecutive ranges wrapping at $ACCOUNTS accounts;"
    printf '%s\n' "            each batch in both databases, order alternating; psql \\timing; every account is updated"
    echo "            $(awk -v u="$UPDATES" -v n="$ACCOUNTS" 'BEGIN { printf "%g", u / n }') time(s) after T, so each key has that many newer versions for AS OF to skip)"
    printf '%-12s %12s %12s %12s %7s   %s\n' database "total s" "median ms" "rows/s" failed "per batch (ms)"
    for t in "$VERS_DB" "$PLAIN_DB"; do
        local vals total
        vals=$(values update "$t" lat)
        total=$(awk '{ s += $2 } END { printf "%.1f", s / 1000 }' <<<"$vals")
        printf '%-12s %12s %12s %12s %7s   %s\n' "$t" "$total" \
            "$(awk '{ print $2 }' <<<"$vals" | median | fmt %.0f)" \
            "$(awk -v n="$UPDATE_BATCH" '{ s += $2; c++ } END { if (s > 0) printf "%.0f", c * n / (s / 1000); else print "-" }' <<<"$vals")" \
            "$(failures update "$t")" \
            "$(awk '{ printf "%.0f\n", $2 }' <<<"$vals" | paste -sd' ')"
    done
    echo "batch time versioned / unversioned: $(paired_summary update "$VERS_DB" "$PLAIN_DB" lat ratio %.2f)"
    echo "all updates, both databases, wall clock: ${UPDATES_WALL_S} s"
    echo "trigger functions in $VERS_DB during its updates (pg_stat_user_functions):"
    print_func_stats "$TMP/funcs-updates.txt" "$UPDATES" row
}

report_lookups() {
    local scenario=$1 clients=$2 threads=$3 t ratio
    echo
    echo "-- lookups, $clients client(s): pgbench -n -M prepared -s $SCALE -T $DURATION -c $clients -j $threads -f <script>, $ROUNDS round(s) --"
    printf '%-12s %11s %14s %16s %7s\n' script "median TPS" "median lat ms" "proxy CPU us/tx" failed
    for t in live asof; do
        printf '%-12s %11s %14s %16s %7s\n' "$([[ $t == asof ]] && echo "AS OF T" || echo live)" \
            "$(col_median "$scenario" "$t" tps %.0f)" "$(col_median "$scenario" "$t" lat %.3f)" \
            "$(col_median "$scenario" "$t" cpu %.2f)" "$(failures "$scenario" "$t")"
    done
    ratio=$(paired_summary "$scenario" asof live lat ratio %.3f)
    echo "latency AS OF / live: $ratio  [goal <= 2: $(goal "$ratio" "<=" 2)]"
    echo "TPS AS OF / live:     $(paired_summary "$scenario" asof live tps ratio %.3f)"
}

report_lookup_intro() {
    echo
    echo "lookups in $VERS_DB through the proxy, live first in odd rounds, AS OF first in even rounds; scripts:"
    sed 's/^/  live:  /' "$TMP/lookup-live.sql"
    sed 's/^/  AS OF: /' "$TMP/lookup-asof.sql"
}

report_explain() {
    echo
    echo "EXPLAIN (ANALYZE, BUFFERS) through the proxy in $VERS_DB, after the lookups; each in one psql session"
    echo "after one unprinted run of the same EXPLAIN (so the session's first call of check_as_of, which compiles"
    echo "it, and the first planning are not shown):"
    echo "  \$ $EXPLAIN_ASOF_SQL"
    sed 's/^/  /' "$TMP/explain-asof.txt"
    echo "  \$ $EXPLAIN_LIVE_SQL"
    sed 's/^/  /' "$TMP/explain-live.txt"
    echo "functions called during the lookups (pg_stat_user_functions; AS OF transactions: $(($(txns_of lookup-1 asof) + $(txns_of lookup-n asof)))):"
    print_func_stats "$TMP/funcs-lookups.txt" ""
}

# sizes line LABEL "total heap indexes rows"
size_line() {
    local label=$1 total heap idx rows
    read -r total heap idx rows <<<"$2"
    printf '  %-34s %10s %10s %10s %10s %10s\n' "$label" "$(pretty "$total")" "$(pretty "$heap")" \
        "$(pretty "$idx")" "$rows" "$(awk -v s="$total" -v n="$rows" 'BEGIN { if (n > 0) printf "%.1f", s / n; else print "-" }')"
}

report_sizes() {
    local t0 t1 r0 r1
    read -r t0 _ _ r0 <<<"$HSIZE_BEFORE"
    read -r t1 _ _ r1 <<<"$HSIZE_AFTER"
    echo
    echo "== 3. history size: pgbench_accounts's history table ($HIST_ACCOUNTS) in $VERS_DB =="
    printf '  %-34s %10s %10s %10s %10s %10s\n' "" "total" "table" "indexes" "rows" "bytes/row"
    size_line "history, before the updates" "$HSIZE_BEFORE"
    size_line "history, after the updates" "$HSIZE_AFTER"
    size_line "pgbench_accounts, before the updates" "$ASIZE_BEFORE"
    size_line "pgbench_accounts, after the updates" "$ASIZE_AFTER"
    echo "history bytes per updated row: (after - before) / $UPDATES = $(awk -v a="$t0" -v b="$t1" -v n="$UPDATES" 'BEGIN { printf "%.1f", (b - a) / n }') bytes"
    echo "  (history rows added: $((r1 - r0)); sizes are pg_total_relation_size / pg_relation_size / pg_indexes_size,"
    echo "  'after' measured after VACUUM ANALYZE and the lookups; history index: (aid, pgbranch_seq);"
    echo "  history is append-only: an update adds one row and changes none)"
}

print_end() {
    echo
    echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "elapsed:    $((SECONDS - START_SECONDS)) s (build included)"
    if grep -q ' FAIL ' "$RESULTS"; then
        echo "WARNING: $(grep -c ' FAIL ' "$RESULTS") run(s) failed; see stderr"
    fi
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
main() {
    START_SECONDS=$SECONDS
    check_params
    find_pg_bindir
    build
    TMP=$(mktemp -d /tmp/pgbranch-timetravel-bench.XXXXXX)
    mkdir -p "$TMP/runs"
    RESULTS=$TMP/results.txt
    : >"$RESULTS"

    start_postgres
    create_db "$VERS_DB"
    create_db "$PLAIN_DB"
    start_pgbranch
    prepare_versioning
    HIST_ACCOUNTS=$(history_of pgbench_accounts)

    print_header
    warm_up_dbs

    # 1. tpcb-like.
    HIST_BEFORE_TPCB=$(history_rows)
    reset_stats "$VERS_DB"
    run_tpcb
    save_func_stats "$VERS_DB" "$TMP/funcs-tpcb.txt"
    HIST_AFTER_TPCB=$(history_rows)
    report_tpcb

    # 2. T, the updates, the lookups.
    AS_OF_T=$(direct "$VERS_DB" -c 'SELECT now()')
    log "T = $AS_OF_T"
    # Later versions must start after T, also with a coarse clock.
    sleep 0.1
    HSIZE_BEFORE=$(rel_sizes "$HIST_ACCOUNTS")
    ASIZE_BEFORE=$(rel_sizes pgbench_accounts)
    reset_stats "$VERS_DB"
    run_updates
    save_func_stats "$VERS_DB" "$TMP/funcs-updates.txt"
    report_updates

    log "VACUUM ANALYZE $VERS_DB (directly) ..."
    local t0
    t0=$(now_s)
    direct "$VERS_DB" -c 'VACUUM ANALYZE' >/dev/null
    VACUUM_S=$(since "$t0")
    echo "then VACUUM ANALYZE of $VERS_DB (directly, history tables included): ${VACUUM_S} s"

    printf '%s\n' '\set aid random(1, 100000 * :scale)' \
        'SELECT abalance FROM pgbench_accounts WHERE aid = :aid;' >"$TMP/lookup-live.sql"
    printf '%s\n' '\set aid random(1, 100000 * :scale)' \
        "SELECT abalance FROM pgbench_accounts AS OF TIMESTAMP '$AS_OF_T' WHERE aid = :aid;" >"$TMP/lookup-asof.sql"
    report_lookup_intro
    reset_stats "$VERS_DB"
    run_lookups lookup-1 1 1
    report_lookups lookup-1 1 1
    run_lookups lookup-n "$CLIENTS" "$THREADS"
    report_lookups lookup-n "$CLIENTS" "$THREADS"
    save_func_stats "$VERS_DB" "$TMP/funcs-lookups.txt"

    EXPLAIN_ASOF_SQL="EXPLAIN (ANALYZE, BUFFERS) SELECT abalance FROM pgbench_accounts AS OF TIMESTAMP '$AS_OF_T' WHERE aid = 42"
    EXPLAIN_LIVE_SQL="EXPLAIN (ANALYZE, BUFFERS) SELECT abalance FROM pgbench_accounts WHERE aid = 42"
    explain asof "$EXPLAIN_ASOF_SQL"
    explain live "$EXPLAIN_LIVE_SQL"
    report_explain

    # 3. Sizes.
    HSIZE_AFTER=$(rel_sizes "$HIST_ACCOUNTS")
    ASIZE_AFTER=$(rel_sizes pgbench_accounts)
    report_sizes

    print_end
}

main "$@"
