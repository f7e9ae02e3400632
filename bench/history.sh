#!/usr/bin/env bash
# Measures what DDL history capture costs: two pgbranch instances in front
# of one PostgreSQL, capture on (the default) and off
# (PGBRANCH_HISTORY_ENABLED=false), in paired, alternating rounds:
#
#   1. non-DDL traffic: `pgbench -S`, 1 client, -M simple and -M prepared,
#      through capture-on vs capture-off (latency difference per statement
#      and the proxy's CPU per transaction);
#   2. DDL latency: `ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT :r`
#      through capture-on, capture-off and directly;
#   3. the same after creating EXTRA_TABLES more tables, since recording
#      computes the definition of every user object;
#
# then times the recording functions directly to show where a DDL's time
# goes.
#
# Usage (from anywhere; see bench/README.md):
#   bash bench/history.sh > result.txt          # full run (~5 minutes)
#   DURATION=2 ROUNDS=1 bash bench/history.sh   # smoke run
#
# stdout carries only the report; progress and diagnostics go to stderr.
set -euo pipefail

# ---------------------------------------------------------------------------
# Parameters (all overridable through the environment)
# ---------------------------------------------------------------------------
DURATION=${DURATION:-10}      # seconds per non-DDL pgbench run (-T)
ROUNDS=${ROUNDS:-5}           # paired rounds per scenario
SCALE=${SCALE:-10}            # pgbench -i -s (non-DDL data)
WARMUP=${WARMUP:-5}           # seconds of unrecorded direct pgbench -S first
DDL_TXNS=${DDL_TXNS:-}        # DDL statements per DDL run (-t); default 20 x DURATION
EXTRA_TABLES=${EXTRA_TABLES:-200} # tables added for the larger-schema scenario
BREAKDOWN_TXNS=${BREAKDOWN_TXNS:-20} # timed calls per recording function (median)
KEEP_TMP=${KEEP_TMP:-0}       # 1: keep the temp dir (logs) after the run

# Shared helpers (bench/lib.sh): log/die, processes, PostgreSQL setup,
# pgbench parsing, medians and paired rounds; it also resets the libpq
# environment.
LOG_PREFIX="history.sh"
MEDIAN_ROUNDING="awk"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------
# State shared with cleanup() (besides lib.sh's TMP, PG_BINDIR, PG_STARTED)
# ---------------------------------------------------------------------------
ON_PID=""
OFF_PID=""
PGBRANCH_PID="" # lib.sh's start_pgbranch: the instance being started
# Set by breakdown(): "objects objects_ms fingerprint_ms state_ms recorded_ms".
BREAKDOWN_small="- - - - -"
BREAKDOWN_large="- - - - -"

cleanup() {
    local status=$?
    set +e
    stop_pid "$ON_PID"
    stop_pid "$OFF_PID"
    stop_pid "$PGBRANCH_PID"
    stop_postgres
    remove_tmp "logs: $TMP/*.log, runs: $TMP/runs"
    exit "$status"
}
install_cleanup

# ---------------------------------------------------------------------------
# Setup helpers
# ---------------------------------------------------------------------------

check_params() {
    require_positive DURATION ROUNDS SCALE EXTRA_TABLES BREAKDOWN_TXNS
    require_non_negative WARMUP
    DDL_TXNS=${DDL_TXNS:-$((DURATION * 20))}
    require_positive DDL_TXNS
    check_tools
}

# psql PORT DB SQL...: runs SQL, prints unaligned tuples-only output.
sql_at() {
    local port=$1 db=$2
    shift 2
    psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

# Databases: `postgres` holds the pgbench tables (non-DDL, both proxies);
# DDL through capture-on goes to `ddl_on`, DDL through capture-off and
# direct to `ddl_off`, so that no unrecorded change ever shows up as drift
# (and gets recorded) in the database capture-on records.
init_data() {
    init_pgbench
    local db
    for db in ddl_on ddl_off; do
        sql_at "$PG_PORT" postgres -c "CREATE DATABASE $db" >/dev/null
        sql_at "$PG_PORT" "$db" -c 'CREATE TABLE ddl_bench (id int PRIMARY KEY, x int)' >/dev/null
    done
    # The benchmarked statement; :r makes every DDL a real change.
    printf '%s\n' '\set r random(1, 1000000)' \
        'ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT :r;' >"$TMP/ddl.sql"
}

# EXTRA_TABLES tables, each with a primary key, 5 columns, an index and a
# comment, created directly in both DDL databases.
add_tables() {
    local db
    for db in ddl_on ddl_off; do
        sql_at "$PG_PORT" "$db" >/dev/null <<EOF
DO \$\$
BEGIN
    FOR i IN 1..$EXTRA_TABLES LOOP
        EXECUTE format('CREATE TABLE extra_%s (id bigint PRIMARY KEY, name text NOT NULL, '
                       'amount numeric(12,2) DEFAULT 0, created_at timestamptz DEFAULT now(), '
                       'ref_id int)', i);
        EXECUTE format('CREATE INDEX extra_%s_name_idx ON extra_%s (name)', i, i);
        EXECUTE format('COMMENT ON TABLE extra_%s IS %L', i, 'extra table ' || i);
    END LOOP;
END
\$\$;
EOF
    done
}

# The two instances: lib.sh's start_pgbranch with DDL capture on or off.
start_capture() {
    local name=$1 enabled=$2
    PB_NAME=$name PGBRANCH_HISTORY_ENABLED=$enabled start_pgbranch
    if [[ $name == on ]]; then
        ON_PID=$PGBRANCH_PID ON_PORT=$PGBRANCH_PORT
    else
        OFF_PID=$PGBRANCH_PID OFF_PORT=$PGBRANCH_PORT
    fi
}

port_of() {
    case $1 in
    on) echo "$ON_PORT" ;;
    off) echo "$OFF_PORT" ;;
    direct) echo "$PG_PORT" ;;
    esac
}

pid_of() {
    case $1 in
    on) echo "$ON_PID" ;;
    off) echo "$OFF_PID" ;;
    direct) head -1 "$TMP/pgdata/postmaster.pid" 2>/dev/null || true ;;
    esac
}

log_of() {
    case $1 in
    on | off) echo "$TMP/pgbranch-$1.log" ;;
    direct) echo "$TMP/postgres.log" ;;
    esac
}

# The database a DDL run uses through a target.
ddl_db() { if [[ $1 == on ]]; then echo ddl_on; else echo ddl_off; fi; }

# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

# One pgbench run of a scenario through a target; appends
# "scenario round target tps latency_ms proxy_cpu_us" to $RESULTS, or
# "... FAIL FAIL -" when pgbench failed (its output then goes to stderr).
# Scenarios: simple | prepared (pgbench -S -T DURATION), ddl-small |
# ddl-large (the DDL script, -t DDL_TXNS).
run_one() {
    local scenario=$1 round=$2 target=$3
    local port out rc=0 args=()
    port=$(port_of "$target")
    out=$TMP/runs/$scenario-r$round-$target.txt
    case $scenario in
    simple | prepared) args=(-S -M "$scenario" -T "$DURATION" postgres) ;;
    ddl-*) args=(-M simple -f "$TMP/ddl.sql" -t "$DDL_TXNS" "$(ddl_db "$target")") ;;
    esac
    local pid="" cpu0 cpu1
    [[ $target == direct ]] || pid=$(pid_of "$target")
    cpu0=$(cpu_ticks "$pid")
    # -n: no vacuum before the run.
    pgbench -n -c 1 -j 1 -h 127.0.0.1 -p "$port" -U postgres "${args[@]}" >"$out" 2>&1 || rc=$?
    cpu1=$(cpu_ticks "$pid")
    if ! pgbench_result "$out" "$rc" "$cpu0" "$cpu1"; then
        log "pgbench $scenario through $target FAILED (exit $rc, round $round); output:"
        cat "$out" >&2
        kill -0 "$(pid_of "$target")" 2>/dev/null || log "the $target process is no longer running"
        log "tail of $(log_of "$target"):"
        tail -20 "$(log_of "$target")" >&2 || true
        echo "$scenario $round $target FAIL FAIL -" >>"$RESULTS"
        return 0
    fi
    log "  $scenario round $round: $target tps=$PGB_TPS latency=${PGB_LAT}ms proxy cpu=${PGB_CPU_US}us/txn"
    echo "$scenario $round $target $PGB_TPS $PGB_LAT $PGB_CPU_US" >>"$RESULTS"
}

# Paired, alternating rounds: every round runs every target once, and the
# order rotates by one position each round.
run_scenario() {
    local scenario=$1
    shift
    local targets=("$@") n=$# round i
    log "scenario $scenario: $ROUNDS round(s) x $n target(s) ..."
    for round in $(seq "$ROUNDS"); do
        for i in $(seq 0 $((n - 1))); do
            run_one "$scenario" "$round" "${targets[$(((i + round - 1) % n))]}"
        done
    done
}

# Median time (ms) of one SQL line run directly in ddl_on: psql \timing
# over BREAKDOWN_TXNS runs in one session, after one unmeasured run (the
# session's first call plans the functions' queries). "@" in the line is
# replaced by the run's number. Prints "-" when it failed.
time_direct() {
    local name=$1 line=$2 out i
    out=$TMP/runs/breakdown-$name.txt
    {
        printf '%s\n' '\set ON_ERROR_STOP 1'
        echo "${line//@/0}"
        printf '%s\n' '\timing on'
        for i in $(seq "$BREAKDOWN_TXNS"); do echo "${line//@/$i}"; done
    } >"$TMP/breakdown-$name.sql"
    if psql -X -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d ddl_on -f "$TMP/breakdown-$name.sql" >"$out" 2>&1; then
        sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$out" | median
    else
        log "breakdown '$name' failed:"
        cat "$out" >&2
        echo "-"
    fi
}

# Times the parts of a recorded DDL directly (no proxy) in ddl_on; sets
# BREAKDOWN_<size> to "objects objects_ms fingerprint_ms state_ms recorded_ms".
breakdown() {
    local size=$1 objects a b c d
    log "timing the recording functions directly ($size schema) ..."
    objects=$(sql_at "$PG_PORT" ddl_on -c 'SELECT count(*) FROM pgbranch.schema_objects()')
    a=$(time_direct "objects-$size" 'SELECT count(*) FROM pgbranch.schema_objects();')
    b=$(time_direct "fingerprint-$size" 'SELECT pgbranch.schema_fingerprint();')
    c=$(time_direct "state-$size" "SELECT pgbranch.state_fingerprint('main');")
    # What the proxy sends for one DDL minus the metadata check (the DO
    # block): ddl_begin, the DDL and record_ddl as one Query (\; joins them).
    d=$(time_direct "recorded-$size" "SELECT pgbranch.ddl_begin('main', '') \\; ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT 7@ \\; SELECT pgbranch.record_ddl('main', 'ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT 7@', 'ALTER TABLE', 'table', 'public.ddl_bench', 'alter', '');")
    printf -v "BREAKDOWN_$size" '%s %s %s %s %s' "$objects" "$a" "$b" "$c" "$d"
}

history_versions() {
    sql_at "$PG_PORT" ddl_on -c "SELECT coalesce(max(version), 0) FROM pgbranch.schema_history WHERE branch = 'main'"
}

# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

# fmt FORMAT: formats the number on stdin with awk's printf ("-" stays).
fmt() { awk -v f="$1" '{ if ($1 == "-" || $1 == "") print "-"; else printf f "\n", $1 }'; }

failures() {
    awk -v s="$1" -v t="$2" '$1 == s && $3 == t && $4 == "FAIL"' "$RESULTS" | wc -l
}

report_non_ddl() {
    local mode=$1 t
    echo
    echo "== non-DDL: pgbench -n -S -M $mode -T $DURATION -c 1 -j 1, $ROUNDS round(s) =="
    printf '%-12s %11s %14s %16s %7s\n' target "median TPS" "median lat ms" "proxy CPU us/tx" failed
    for t in on off; do
        printf '%-12s %11s %14s %16s %7s\n' "capture-$t" \
            "$(values "$mode" "$t" tps | awk '{ print $2 }' | median | fmt %.0f)" \
            "$(values "$mode" "$t" lat | awk '{ print $2 }' | median | fmt %.4f)" \
            "$(values "$mode" "$t" cpu | awk '{ print $2 }' | median | fmt %.2f)" \
            "$(failures "$mode" "$t")"
    done
    echo "latency on - off, us/stmt:  $(paired_summary "$mode" on off lat diff %.1f 1000)"
    echo "latency on / off:           $(paired_summary "$mode" on off lat ratio %.3f)"
    echo "proxy CPU on - off, us/tx:  $(paired_summary "$mode" on off cpu diff %.2f)"
}

report_ddl() {
    local scenario=$1 title=$2 objects=$3 t
    echo
    echo "== DDL latency, $title ($objects objects in pgbranch.schema_objects()): pgbench -n -M simple -f ddl.sql -t $DDL_TXNS -c 1 -j 1, $ROUNDS round(s) =="
    printf '%-12s %14s %7s\n' target "mean lat ms" failed
    for t in on off direct; do
        printf '%-12s %14s %7s\n' "$([[ $t == direct ]] && echo direct || echo "capture-$t")" \
            "$(values "$scenario" "$t" lat | awk '{ print $2 }' | median | fmt %.3f)" \
            "$(failures "$scenario" "$t")"
    done
    echo "(mean lat: median over rounds of pgbench's latency average, i.e. per DDL statement)"
    echo "capture on - off, ms/DDL:    $(paired_summary "$scenario" on off lat diff %.3f)"
    echo "capture on / off:            $(paired_summary "$scenario" on off lat ratio %.1f)"
    echo "capture off - direct, ms:    $(paired_summary "$scenario" off direct lat diff %.3f)"
}

report_breakdown() {
    local small large
    read -r -a small <<<"$BREAKDOWN_small"
    read -r -a large <<<"$BREAKDOWN_large"
    local on_small on_large
    on_small=$(values ddl-small on lat | awk '{ print $2 }' | median)
    on_large=$(values ddl-large on lat | awk '{ print $2 }' | median)
    residual() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "") print "-"; else printf "%.3f\n", a - b }'; }
    echo
    printf '%s\n' "== where a recorded DDL's time goes: median ms of $BREAKDOWN_TXNS calls directly in ddl_on (psql \\timing, one session, first call unmeasured) =="
    printf '%-58s %10s %10s\n' "" "small" "large"
    printf '%-58s %10s %10s\n' "objects (rows of pgbranch.schema_objects())" "${small[0]}" "${large[0]}"
    printf '%-58s %10s %10s\n' "SELECT count(*) FROM pgbranch.schema_objects()" "$(fmt %.3f <<<"${small[1]}")" "$(fmt %.3f <<<"${large[1]}")"
    printf '%-58s %10s %10s\n' "SELECT pgbranch.schema_fingerprint()" "$(fmt %.3f <<<"${small[2]}")" "$(fmt %.3f <<<"${large[2]}")"
    printf '%-58s %10s %10s\n' "SELECT pgbranch.state_fingerprint('main')" "$(fmt %.3f <<<"${small[3]}")" "$(fmt %.3f <<<"${large[3]}")"
    printf '%-58s %10s %10s\n' "ddl_begin; ALTER ...; record_ddl (one Query, no DO check)" "$(fmt %.3f <<<"${small[4]}")" "$(fmt %.3f <<<"${large[4]}")"
    printf '%-58s %10s %10s\n' "DDL through capture-on (median above)" "$(fmt %.3f <<<"$on_small")" "$(fmt %.3f <<<"$on_large")"
    printf '%-58s %10s %10s\n' "  difference: DO metadata check + proxy hop" "$(residual "$on_small" "${small[4]}")" "$(residual "$on_large" "${large[4]}")"
}

print_header() {
    echo "pgbranch benchmark: cost of DDL history capture, paired alternating rounds"
    print_environment
    echo "command:    DURATION=$DURATION ROUNDS=$ROUNDS DDL_TXNS=$DDL_TXNS EXTRA_TABLES=$EXTRA_TABLES SCALE=$SCALE WARMUP=$WARMUP BREAKDOWN_TXNS=$BREAKDOWN_TXNS bash bench/history.sh"
    echo "targets:    capture-on  = pgbranch serve --upstream (PGBRANCH_LOG=warn; history on, the default)"
    echo "            capture-off = the same with PGBRANCH_HISTORY_ENABLED=false"
    echo "            direct      = PostgreSQL; all on 127.0.0.1 TCP, PGSSLMODE=disable"
    echo "DDL:        ddl.sql = \\set r random(1, 1000000) + ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT :r;"
    echo "            database ddl_on through capture-on, ddl_off through capture-off and direct (same schema);"
    echo "            large schema: + $EXTRA_TABLES tables (bigint PK, 5 columns, an index, a comment) in both"
    echo "order:      targets rotate by one position each round; one pgbench session per run"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
main() {
    check_params
    find_pg_bindir
    build
    TMP=$(mktemp -d /tmp/pgbranch-history-bench.XXXXXX)
    mkdir -p "$TMP/runs"
    RESULTS=$TMP/results.txt
    : >"$RESULTS"

    start_postgres
    init_data
    start_capture on true
    start_capture off false

    # The first DDL through capture-on sets up the metadata schema and the
    # baseline: unmeasured.
    log "setting up DDL history in ddl_on (first DDL through capture-on) ..."
    sql_at "$ON_PORT" ddl_on -c 'ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT 0' >/dev/null
    [[ $(history_versions) -ge 1 ]] || die "capture-on recorded nothing in ddl_on"
    sql_at "$OFF_PORT" ddl_off -c 'ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT 0' >/dev/null
    [[ -z $(sql_at "$PG_PORT" ddl_off -c "SELECT 1 FROM pg_namespace WHERE nspname = 'pgbranch'") ]] ||
        die "capture-off created the pgbranch schema in ddl_off"

    print_header

    warm_up simple

    run_scenario simple on off
    run_scenario prepared on off

    local v0 v1 v2 v3 objects_small objects_large
    v0=$(history_versions)
    run_scenario ddl-small on off direct
    v1=$(history_versions)
    objects_small=$(sql_at "$PG_PORT" ddl_on -c 'SELECT count(*) FROM pgbranch.schema_objects()')
    breakdown small

    log "creating $EXTRA_TABLES tables in ddl_on and ddl_off ..."
    add_tables
    # The first DDL through capture-on records the new tables as a drift
    # version: unmeasured.
    sql_at "$ON_PORT" ddl_on -c 'ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT 0' >/dev/null
    objects_large=$(sql_at "$PG_PORT" ddl_on -c 'SELECT count(*) FROM pgbranch.schema_objects()')
    v2=$(history_versions)
    run_scenario ddl-large on off direct
    v3=$(history_versions)
    breakdown large

    report_non_ddl simple
    report_non_ddl prepared
    report_ddl ddl-small "small schema" "$objects_small"
    report_ddl ddl-large "+$EXTRA_TABLES tables" "$objects_large"
    report_breakdown
    echo
    echo "recorded:   $((v1 - v0)) + $((v3 - v2)) versions in ddl_on during the DDL rounds (expected $((ROUNDS * DDL_TXNS)) + $((ROUNDS * DDL_TXNS)) when no run failed);"
    echo "            ddl_off has $(sql_at "$PG_PORT" ddl_off -c "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgbranch'") pgbranch schema(s) (expected 0)"
    print_footer
}

main "$@"
