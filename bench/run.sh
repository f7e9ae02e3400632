#!/usr/bin/env bash
# Benchmarks `pgbench -S` against PostgreSQL directly, the bare forwarder
# (bench/forwarder.rs), PgBouncer in session mode and pgbranch, in paired,
# alternating rounds, and prints median TPS, latency and per-round ratios.
#
# Usage (from anywhere; see bench/README.md):
#   bash bench/run.sh                       # full run, paste stdout into docs/benchmarks.md
#   DURATION=2 ROUNDS=1 bash bench/run.sh   # smoke run
#   TARGETS="forwarder pgbranch" bash bench/run.sh
#
# stdout carries only the report; progress and diagnostics go to stderr, so
# `bash bench/run.sh > result.txt` gives a file that can be pasted verbatim.
set -euo pipefail

# ---------------------------------------------------------------------------
# Parameters (all overridable through the environment)
# ---------------------------------------------------------------------------
DURATION=${DURATION:-10}   # seconds per pgbench run
ROUNDS=${ROUNDS:-5}        # paired rounds per scenario
MODE=${MODE:-prepared}     # pgbench -M: simple | extended | prepared
SCALE=${SCALE:-10}         # pgbench -i -s
WARMUP=${WARMUP:-5}        # seconds of unrecorded direct pgbench before measuring
TARGETS=${TARGETS:-"direct forwarder pgbouncer pgbranch"}
KEEP_TMP=${KEEP_TMP:-0}    # 1: keep the temp dir (logs) after the run
EPOLL_THREADS=${EPOLL_THREADS:-1} # threads of the epoll target
PLACE=${PLACE:-}           # epoll target: 'cpu' places connections by CPU (bench/epoll_relay.rs)

# Scenarios: "label clients threads".
SCENARIOS=("1-client 1 1" "8-clients 8 2")

# epoll (bench/epoll_relay.rs, the least a relay can do per message) is
# not in the default set: it bounds what any relay reaches here.
ALL_TARGETS="direct forwarder epoll pgbouncer pgbranch"

# Shared helpers (bench/lib.sh): log/die, processes, PostgreSQL setup,
# pgbench parsing, medians and paired rounds; it also resets the libpq
# environment.
LOG_PREFIX="run.sh"
MEDIAN_ROUNDING="printf"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------
# State shared with cleanup() (besides lib.sh's TMP, PG_BINDIR, PG_STARTED)
# ---------------------------------------------------------------------------
FORWARDER_PID=""
EPOLL_PID=""
PGBRANCH_PID=""
PGBOUNCER_PIDFILE=""

cleanup() {
    local status=$?
    set +e
    stop_pid "$PGBRANCH_PID"
    stop_pid "$FORWARDER_PID"
    stop_pid "$EPOLL_PID"
    if [[ -n $PGBOUNCER_PIDFILE && -s $PGBOUNCER_PIDFILE ]]; then
        stop_pid "$(cat "$PGBOUNCER_PIDFILE")"
    fi
    stop_postgres
    remove_tmp "logs: $TMP/*.log"
    exit "$status"
}
install_cleanup

# ---------------------------------------------------------------------------
# Setup helpers
# ---------------------------------------------------------------------------

check_params() {
    require_positive DURATION ROUNDS SCALE EPOLL_THREADS
    require_non_negative WARMUP
    [[ $MODE =~ ^(simple|extended|prepared)$ ]] || die "MODE must be simple, extended or prepared (got '$MODE')"
    local t
    read -r -a TARGET_LIST <<<"$TARGETS"
    [[ ${#TARGET_LIST[@]} -gt 0 ]] || die "TARGETS is empty"
    for t in "${TARGET_LIST[@]}"; do
        [[ " $ALL_TARGETS " == *" $t "* ]] || die "unknown target '$t' (choose from: $ALL_TARGETS)"
    done
    # Canonical order (direct first): rounds rotate from it.
    local ordered=()
    for t in $ALL_TARGETS; do
        [[ " ${TARGET_LIST[*]} " == *" $t "* ]] && ordered+=("$t")
    done
    TARGET_LIST=("${ordered[@]}")
    check_tools
}

has_target() { [[ " ${TARGET_LIST[*]} " == *" $1 "* ]]; }

ensure_pgbouncer() {
    has_target pgbouncer || return 0
    command -v pgbouncer >/dev/null && return 0
    [[ $EUID -eq 0 ]] || die "pgbouncer is not installed (and we are not root to apt-get it); drop it from TARGETS"
    log "installing pgbouncer ..."
    # The package's init script does not start in a container without a
    # runlevel; our own instance uses its own ini and port anyway.
    DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer >&2; }
}

start_forwarder() {
    FORWARDER_PORT=$(free_port)
    as_daemon "$FORWARDER_BIN" "127.0.0.1:$FORWARDER_PORT" "127.0.0.1:$PG_PORT" >"$TMP/forwarder.log" 2>&1 &
    FORWARDER_PID=$!
    wait_ready "$FORWARDER_PORT" forwarder "$TMP/forwarder.log"
    check_own_session "$FORWARDER_PID" forwarder
}

start_epoll() {
    EPOLL_PORT=$(free_port)
    as_daemon "$EPOLL_BIN" "127.0.0.1:$EPOLL_PORT" "127.0.0.1:$PG_PORT" "$EPOLL_THREADS" >"$TMP/epoll.log" 2>&1 &
    EPOLL_PID=$!
    wait_ready "$EPOLL_PORT" "epoll relay" "$TMP/epoll.log"
    check_own_session "$EPOLL_PID" "epoll relay"
}

start_pgbouncer() {
    PGBOUNCER_PORT=$(free_port)
    local dir=$TMP/pgbouncer
    mkdir -p "$dir"
    echo '"postgres" ""' >"$dir/userlist.txt"
    # Session mode, trust, pools large enough that no client ever waits for a
    # server connection; no Unix socket so it cannot clash with anything.
    cat >"$dir/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
    if [[ $EUID -eq 0 ]]; then chown -R postgres: "$dir"; fi
    PGBOUNCER_PIDFILE=$dir/pgbouncer.pid
    # -d: daemonise after the listen socket is open, writing the pidfile that
    # cleanup() uses; runuser because PgBouncer refuses to run as root.
    as_pg pgbouncer -d -q "$dir/pgbouncer.ini" >"$TMP/pgbouncer-start.log" 2>&1 ||
        { cat "$TMP/pgbouncer-start.log" "$dir/pgbouncer.log" >&2 2>/dev/null; die "pgbouncer did not start"; }
    wait_ready "$PGBOUNCER_PORT" PgBouncer "$dir/pgbouncer.log"
}

port_of() {
    case $1 in
    direct) echo "$PG_PORT" ;;
    forwarder) echo "$FORWARDER_PORT" ;;
    epoll) echo "$EPOLL_PORT" ;;
    pgbouncer) echo "$PGBOUNCER_PORT" ;;
    pgbranch) echo "$PGBRANCH_PORT" ;;
    esac
}

log_of() {
    case $1 in
    direct) echo "$TMP/postgres.log" ;;
    forwarder) echo "$TMP/forwarder.log" ;;
    epoll) echo "$TMP/epoll.log" ;;
    pgbouncer) echo "$TMP/pgbouncer/pgbouncer.log" ;;
    pgbranch) echo "$TMP/pgbranch.log" ;;
    esac
}

# Whether the process behind a target still runs (to tell a crash from a
# refused or broken session when pgbench fails).
target_alive() {
    local pid=""
    case $1 in
    direct) pid=$(head -1 "$TMP/pgdata/postmaster.pid" 2>/dev/null || true) ;;
    forwarder) pid=$FORWARDER_PID ;;
    epoll) pid=$EPOLL_PID ;;
    pgbouncer) pid=$(cat "$PGBOUNCER_PIDFILE" 2>/dev/null || true) ;;
    pgbranch) pid=$PGBRANCH_PID ;;
    esac
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

# PID of the proxy process behind a target ("" for direct).
proxy_pid() {
    case $1 in
    forwarder) echo "$FORWARDER_PID" ;;
    epoll) echo "$EPOLL_PID" ;;
    pgbouncer) cat "$PGBOUNCER_PIDFILE" 2>/dev/null || true ;;
    pgbranch) echo "$PGBRANCH_PID" ;;
    *) echo "" ;;
    esac
}

# One pgbench run; appends "scenario round target tps latency_ms" to
# $RESULTS, or "... FAIL FAIL" when pgbench failed, aborted clients or
# reported failed transactions (then the pgbench output and the target's
# log tail go to stderr).
run_pgbench() {
    local scenario=$1 clients=$2 threads=$3 round=$4 target=$5
    local port out rc=0
    port=$(port_of "$target")
    out=$TMP/runs/$scenario-r$round-$target.txt
    # -n: no vacuum before the run (it is the same read-only data every time,
    # and vacuum through a proxy would just add noise).
    local pid cpu0 cpu1
    pid=$(proxy_pid "$target")
    cpu0=$(cpu_ticks "$pid")
    pgbench -n -S -M "$MODE" -T "$DURATION" -c "$clients" -j "$threads" \
        -h 127.0.0.1 -p "$port" -U postgres postgres >"$out" 2>&1 || rc=$?
    cpu1=$(cpu_ticks "$pid")
    if ! pgbench_result "$out" "$rc" "$cpu0" "$cpu1"; then
        log "pgbench through $target FAILED (exit $rc, round $round, $scenario); output:"
        cat "$out" >&2
        if ! target_alive "$target"; then
            log "the $target process is no longer running"
        fi
        log "tail of $(log_of "$target"):"
        tail -20 "$(log_of "$target")" >&2 || true
        echo "$scenario $round $target FAIL FAIL" >>"$RESULTS"
        return 0
    fi
    log "  $scenario round $round: $target tps=$PGB_TPS latency=${PGB_LAT}ms cpu=${PGB_CPU_US}us/txn"
    echo "$scenario $round $target $PGB_TPS $PGB_LAT $PGB_CPU_US" >>"$RESULTS"
}

# Paired, alternating rounds: every round runs every target once, and the
# order rotates by one position each round, so slow drifts and bursts of
# machine noise hit all targets alike and per-round ratios compare runs made
# seconds apart.
run_scenario() {
    local scenario=$1 clients=$2 threads=$3
    local n=${#TARGET_LIST[@]} round i
    for round in $(seq "$ROUNDS"); do
        for i in $(seq 0 $((n - 1))); do
            run_pgbench "$scenario" "$clients" "$threads" "$round" \
                "${TARGET_LIST[$(((i + round - 1) % n))]}"
        done
    done
}

# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

fmt_num() { # fmt_num FORMAT VALUE: printf unless the value is "-"
    # shellcheck disable=SC2059 # the format is the caller's
    if [[ $2 == "-" ]]; then echo "-"; else printf "$1" "$2"; fi
}

report_scenario() {
    local scenario=$1 clients=$2 threads=$3 t tps lat ratio cpu fails
    echo
    echo "== $scenario: pgbench -n -S -M $MODE -T $DURATION -c $clients -j $threads, $ROUNDS round(s) =="
    printf '%-10s %12s %14s %12s %14s %7s\n' target "median TPS" "median lat ms" "TPS/direct" "proxy CPU us/tx" failed
    for t in "${TARGET_LIST[@]}"; do
        tps=$(values "$scenario" "$t" tps | awk '{ print $2 }' | median)
        lat=$(values "$scenario" "$t" lat | awk '{ print $2 }' | median)
        if [[ $t == direct ]]; then
            ratio=1.000
        elif has_target direct; then
            ratio=$(paired "$scenario" "$t" direct tps ratio %.3f | median)
        else
            ratio="-"
        fi
        cpu=$(values "$scenario" "$t" cpu | awk '$2 != "-" { print $2 }' | median)
        fails=$(awk -v s="$scenario" -v t="$t" '$1 == s && $3 == t && $4 == "FAIL"' "$RESULTS" | wc -l)
        printf '%-10s %12s %14s %12s %14s %7s\n' "$t" "$(fmt_num %.0f "$tps")" "$(fmt_num %.3f "$lat")" \
            "$(fmt_num %.3f "$ratio")" "$(fmt_num %.2f "$cpu")" "$fails"
    done
    echo "(TPS/direct: median of per-round ratios)"
    if has_target pgbranch; then
        for t in direct forwarder epoll pgbouncer; do
            if has_target "$t"; then
                printf 'pgbranch/%-9s TPS ratio: %s\n' "$t" "$(paired_summary "$scenario" pgbranch "$t" tps ratio %.3f)"
            fi
        done
    fi
    if has_target epoll && has_target pgbouncer; then
        printf 'epoll/pgbouncer    TPS ratio: %s\n' "$(paired_summary "$scenario" epoll pgbouncer tps ratio %.3f)"
    fi
    # Added latency per hop matters most with one client, where every
    # microsecond of the proxy is on the critical path.
    if [[ $clients -eq 1 ]]; then
        if has_target pgbranch && has_target forwarder; then
            echo "latency pgbranch - forwarder, us: $(paired_summary "$scenario" pgbranch forwarder lat diff %.0f 1000)"
        fi
        if has_target direct; then
            for t in "${TARGET_LIST[@]}"; do
                [[ $t == direct ]] && continue
                echo "latency $t - direct, us: $(paired_summary "$scenario" "$t" direct lat diff %.0f 1000)"
            done
        fi
    fi
}

print_header() {
    local bouncer_version="-"
    if has_target pgbouncer; then bouncer_version=$(pgbouncer --version 2>/dev/null | head -1); fi
    echo "pgbranch benchmark: pgbench -S, paired alternating rounds"
    print_environment
    echo "PgBouncer:  $bouncer_version"
    local epoll_env=""
    if has_target epoll; then epoll_env="${PLACE:+PLACE=$PLACE }EPOLL_THREADS=$EPOLL_THREADS "; fi
    echo "command:    DURATION=$DURATION ROUNDS=$ROUNDS MODE=$MODE SCALE=$SCALE WARMUP=$WARMUP ${epoll_env}TARGETS=\"${TARGET_LIST[*]}\" bash bench/run.sh"
    echo "parameters: pgbench -i -s $SCALE; each run pgbench -n -S -M $MODE -T $DURATION -c C -j J -h 127.0.0.1 -p <target port> -U postgres postgres"
    echo "            PGSSLMODE=disable; all on 127.0.0.1 TCP; ${WARMUP}s unrecorded direct warm-up"
    echo "targets:    direct = PostgreSQL; forwarder = target/release/pgbranch-bench-forwarder (tokio copy_bidirectional);"
    if has_target epoll; then
        echo "            epoll = target/release/pgbranch-bench-epoll ($EPOLL_THREADS thread(s)${PLACE:+, PLACE=$PLACE}, epoll, one recv + one send per readable socket);"
    fi
    echo "            pgbouncer = pool_mode=session auth_type=trust; pgbranch = pgbranch serve --upstream (PGBRANCH_LOG=warn)"
    echo "            every proxy in a session of its own (setsid; PgBouncer -d), sched_autogroup_enabled=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo -)"
    local extra
    extra=$(env | grep '^PGBRANCH_' | tr '\n' ' ' || true)
    [[ -z $extra ]] || echo "pgbranch env: $extra"
    echo "order:      targets rotate by one position each round, starting from: ${TARGET_LIST[*]}"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
main() {
    check_params
    find_pg_bindir
    ensure_pgbouncer
    build
    TMP=$(mktemp -d /tmp/pgbranch-bench.XXXXXX)
    mkdir -p "$TMP/runs"
    RESULTS=$TMP/results.txt
    : >"$RESULTS"

    start_postgres
    init_pgbench
    if has_target forwarder; then start_forwarder; fi
    if has_target epoll; then start_epoll; fi
    if has_target pgbouncer; then start_pgbouncer; fi
    if has_target pgbranch; then start_pgbranch; fi

    print_header

    warm_up "$MODE"

    local sc label clients threads
    for sc in "${SCENARIOS[@]}"; do
        read -r label clients threads <<<"$sc"
        log "scenario $label: $ROUNDS round(s) x ${#TARGET_LIST[@]} target(s) x ${DURATION}s ..."
        run_scenario "$label" "$clients" "$threads"
    done

    for sc in "${SCENARIOS[@]}"; do
        read -r label clients threads <<<"$sc"
        report_scenario "$label" "$clients" "$threads"
    done
    echo
    print_footer
}

main "$@"
