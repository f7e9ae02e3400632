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

# Scenarios: "label clients threads".
SCENARIOS=("1-client 1 1" "8-clients 8 2")

ALL_TARGETS="direct forwarder pgbouncer pgbranch"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# libpq settings from the caller's environment would silently change what is
# measured; every connection below is spelled out instead. SSL is disabled so
# that every target sees the same startup sequence (no SSLRequest round trip
# that some targets answer differently).
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGOPTIONS PGSERVICE || true
export PGSSLMODE=disable PGGSSENCMODE=disable

log() { echo "run.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# State shared with cleanup()
# ---------------------------------------------------------------------------
TMP=""
PG_BINDIR=""
PG_STARTED=0
FORWARDER_PID=""
PGBRANCH_PID=""
CLK_TCK=$(getconf CLK_TCK)
PGBOUNCER_PIDFILE=""

# Runs a command as the user PostgreSQL and PgBouncer run as: both refuse to
# run as root, so as root that is the `postgres` system user.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Stops a background process we started: SIGTERM, then SIGKILL after 5 s
# (pgbranch waits for idle sessions on SIGTERM; none are left by then).
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    set +e
    stop_pid "$PGBRANCH_PID"
    stop_pid "$FORWARDER_PID"
    if [[ -n $PGBOUNCER_PIDFILE && -s $PGBOUNCER_PIDFILE ]]; then
        stop_pid "$(cat "$PGBOUNCER_PIDFILE")"
    fi
    if [[ $PG_STARTED -eq 1 ]]; then
        as_pg "$PG_BINDIR/pg_ctl" -D "$TMP/pgdata" -m fast -w stop >/dev/null 2>&1 ||
            as_pg "$PG_BINDIR/pg_ctl" -D "$TMP/pgdata" -m immediate -w stop >/dev/null 2>&1
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then
            log "kept $TMP (logs: $TMP/*.log)"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Setup helpers
# ---------------------------------------------------------------------------

check_params() {
    [[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (got '$DURATION')"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
    [[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive integer (got '$SCALE')"
    [[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer (got '$WARMUP')"
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
    command -v pgbench >/dev/null || die "pgbench not found (apt-get install -y postgresql-client)"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' system user (apt-get install -y postgresql)"
    fi
}

has_target() { [[ " ${TARGET_LIST[*]} " == *" $1 "* ]]; }

# The newest /usr/lib/postgresql/<major>/bin, else pg_config --bindir.
find_pg_bindir() {
    local major
    major=$(ls /usr/lib/postgresql 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)
    if [[ -n $major && -x /usr/lib/postgresql/$major/bin/initdb ]]; then
        PG_BINDIR=/usr/lib/postgresql/$major/bin
    elif command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        PG_BINDIR=$(pg_config --bindir)
    else
        die "PostgreSQL server binaries not found (apt-get install -y postgresql)"
    fi
}

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

# A free TCP port on 127.0.0.1, different from the ones handed out before.
USED_PORTS=" "
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        [[ $USED_PORTS == *" $port "* ]] && continue
        # A successful connect means something listens there.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            USED_PORTS+="$port "
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# Waits until `select 1` works through 127.0.0.1:$1 (up to 15 s): proves the
# whole path to PostgreSQL works, not just that a socket listens.
wait_ready() {
    local port=$1 name=$2 logfile=$3
    for _ in $(seq 150); do
        if psql -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    log "$name did not accept queries on 127.0.0.1:$port; its log ends with:"
    tail -20 "$logfile" >&2 || true
    die "$name not ready"
}

build() {
    log "building release binaries (cargo build --release --bins) ..."
    (cd "$REPO" && cargo build --release --bins >&2)
    FORWARDER_BIN=$REPO/target/release/pgbranch-bench-forwarder
    PGBRANCH_BIN=$REPO/target/release/pgbranch
}

start_postgres() {
    PG_PORT=$(free_port)
    # The temp dir must be traversable by the postgres user.
    chmod 755 "$TMP"
    mkdir -p "$TMP/pgdata" "$TMP/pgsock"
    if [[ $EUID -eq 0 ]]; then chown postgres: "$TMP/pgdata" "$TMP/pgsock"; fi
    chmod 700 "$TMP/pgdata"
    log "initdb into $TMP/pgdata ($PG_BINDIR) ..."
    as_pg "$PG_BINDIR/initdb" -D "$TMP/pgdata" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    # The log file is written by pg_ctl running as postgres.
    touch "$TMP/postgres.log"
    if [[ $EUID -eq 0 ]]; then chown postgres: "$TMP/postgres.log"; fi
    PG_SETTINGS="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$TMP/pgsock -c max_connections=100 -c fsync=off"
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT ..."
    as_pg "$PG_BINDIR/pg_ctl" -D "$TMP/pgdata" -l "$TMP/postgres.log" -o "$PG_SETTINGS" -w -t 60 start >/dev/null ||
        { tail -20 "$TMP/postgres.log" >&2; die "PostgreSQL did not start"; }
    PG_STARTED=1
    wait_ready "$PG_PORT" PostgreSQL "$TMP/postgres.log"
    PG_VERSION=$(psql -X -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'show server_version')
}

init_pgbench() {
    log "pgbench -i -s $SCALE (directly) ..."
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >"$TMP/pgbench-init.log" 2>&1 ||
        { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
}

start_forwarder() {
    FORWARDER_PORT=$(free_port)
    "$FORWARDER_BIN" "127.0.0.1:$FORWARDER_PORT" "127.0.0.1:$PG_PORT" >"$TMP/forwarder.log" 2>&1 &
    FORWARDER_PID=$!
    wait_ready "$FORWARDER_PORT" forwarder "$TMP/forwarder.log"
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

start_pgbranch() {
    PGBRANCH_PORT=$(free_port)
    PGBRANCH_LOG=warn "$PGBRANCH_BIN" serve \
        --upstream "postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
        --listen "127.0.0.1:$PGBRANCH_PORT" >"$TMP/pgbranch.log" 2>&1 &
    PGBRANCH_PID=$!
    wait_ready "$PGBRANCH_PORT" pgbranch "$TMP/pgbranch.log"
}

port_of() {
    case $1 in
    direct) echo "$PG_PORT" ;;
    forwarder) echo "$FORWARDER_PORT" ;;
    pgbouncer) echo "$PGBOUNCER_PORT" ;;
    pgbranch) echo "$PGBRANCH_PORT" ;;
    esac
}

log_of() {
    case $1 in
    direct) echo "$TMP/postgres.log" ;;
    forwarder) echo "$TMP/forwarder.log" ;;
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
    pgbouncer) cat "$PGBOUNCER_PIDFILE" 2>/dev/null || true ;;
    pgbranch) echo "$PGBRANCH_PID" ;;
    *) echo "" ;;
    esac
}

# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() {
    [[ -n $1 && -r /proc/$1/stat ]] || { echo ""; return; }
    # Fields 14 and 15 of /proc/PID/stat, after the parenthesised name.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# One pgbench run; appends "scenario round target tps latency_ms" to
# $RESULTS, or "... FAIL FAIL" when pgbench failed, aborted clients or
# reported failed transactions (then the pgbench output and the target's
# log tail go to stderr).
run_pgbench() {
    local scenario=$1 clients=$2 threads=$3 round=$4 target=$5
    local port out tps lat failed rc=0
    port=$(port_of "$target")
    out=$TMP/runs/$scenario-r$round-$target.txt
    # -n: no vacuum before the run (it is the same read-only data every time,
    # and vacuum through a proxy would just add noise).
    local pid cpu0 cpu1 txns cpu_us="-"
    pid=$(proxy_pid "$target")
    cpu0=$(cpu_ticks "$pid")
    pgbench -n -S -M "$MODE" -T "$DURATION" -c "$clients" -j "$threads" \
        -h 127.0.0.1 -p "$port" -U postgres postgres >"$out" 2>&1 || rc=$?
    cpu1=$(cpu_ticks "$pid")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    # The proxy's own CPU per transaction: on a 2-core machine every
    # microsecond a hop burns is taken from PostgreSQL and pgbench, and it
    # is far steadier than wall-clock TPS.
    if [[ -n $cpu0 && -n $cpu1 && -n $txns && $txns -gt 0 ]]; then
        cpu_us=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$txns" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    if [[ $rc -ne 0 || -z $tps || -z $lat || ${failed:-0} -ne 0 ]]; then
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
    log "  $scenario round $round: $target tps=$tps latency=${lat}ms cpu=${cpu_us}us/txn"
    echo "$scenario $round $target $tps $lat $cpu_us" >>"$RESULTS"
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

# Reads numbers (one a line) on stdin, prints their median (or "-").
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Per-round values of one column ("tps" or "lat") for a target in a scenario.
values() {
    local scenario=$1 target=$2 col=$3
    awk -v s="$scenario" -v t="$target" -v c="$col" \
        '$1 == s && $3 == t && $4 != "FAIL" { print $2, (c == "tps" ? $4 : (c == "lat" ? $5 : $6)) }' "$RESULTS"
}

# Per-round paired values: "ratio" gives tps(a)/tps(b), "latdiff_us" gives
# (lat(a) - lat(b)) * 1000, only for rounds where both runs succeeded.
paired() {
    local scenario=$1 a=$2 b=$3 kind=$4
    join <(values "$scenario" "$a" "$([[ $kind == ratio ]] && echo tps || echo lat)" | sort -k1,1) \
        <(values "$scenario" "$b" "$([[ $kind == ratio ]] && echo tps || echo lat)" | sort -k1,1) |
        sort -n -k1,1 |
        awk -v k="$kind" '{ if (k == "ratio") printf "%.3f\n", $2 / $3; else printf "%.0f\n", ($2 - $3) * 1000 }'
}

# "median (per round: v1 v2 ...)" or "-".
paired_summary() {
    local vals med
    vals=$(paired "$@")
    [[ -n $vals ]] || { echo "-"; return; }
    med=$(median <<<"$vals")
    # The median of an even count is a mean of two: round it like the values.
    if [[ $4 == ratio ]]; then med=$(printf %.3f "$med"); else med=$(printf %.0f "$med"); fi
    echo "$med (per round: $(paste -sd" " <<<"$vals"))"
}

fmt_num() { # fmt_num FORMAT VALUE: printf unless the value is "-"
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
            ratio=$(paired "$scenario" "$t" direct ratio | median)
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
        for t in direct forwarder pgbouncer; do
            if has_target "$t"; then
                printf 'pgbranch/%-9s TPS ratio: %s\n' "$t" "$(paired_summary "$scenario" pgbranch "$t" ratio)"
            fi
        done
    fi
    # Added latency per hop matters most with one client, where every
    # microsecond of the proxy is on the critical path.
    if [[ $clients -eq 1 ]]; then
        if has_target pgbranch && has_target forwarder; then
            echo "latency pgbranch - forwarder, us: $(paired_summary "$scenario" pgbranch forwarder latdiff_us)"
        fi
        if has_target direct; then
            for t in "${TARGET_LIST[@]}"; do
                [[ $t == direct ]] && continue
                echo "latency $t - direct, us: $(paired_summary "$scenario" "$t" direct latdiff_us)"
            done
        fi
    fi
}

print_header() {
    local cpu bouncer_version="-" commit
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    if has_target pgbouncer; then bouncer_version=$(pgbouncer --version 2>/dev/null | head -1); fi
    commit=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(cd "$REPO" && git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        commit+=" (with uncommitted changes)"
    fi
    echo "pgbranch benchmark: pgbench -S, paired alternating rounds"
    echo "date:       $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit:     $commit"
    echo "machine:    $(nproc) CPUs, ${cpu:-unknown CPU}, Linux $(uname -r)"
    echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
    echo "PostgreSQL: $PG_VERSION ($PG_BINDIR), settings: ${PG_SETTINGS//$TMP/<tmp>}"
    echo "pgbench:    $(pgbench --version)"
    echo "PgBouncer:  $bouncer_version"
    echo "command:    DURATION=$DURATION ROUNDS=$ROUNDS MODE=$MODE SCALE=$SCALE WARMUP=$WARMUP TARGETS=\"${TARGET_LIST[*]}\" bash bench/run.sh"
    echo "parameters: pgbench -i -s $SCALE; each run pgbench -n -S -M $MODE -T $DURATION -c C -j J -h 127.0.0.1 -p <target port> -U postgres postgres"
    echo "            PGSSLMODE=disable; all on 127.0.0.1 TCP; ${WARMUP}s unrecorded direct warm-up"
    echo "targets:    direct = PostgreSQL; forwarder = target/release/pgbranch-bench-forwarder (tokio copy_bidirectional);"
    echo "            pgbouncer = pool_mode=session auth_type=trust; pgbranch = pgbranch serve --upstream (PGBRANCH_LOG=warn)"
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
    if has_target pgbouncer; then start_pgbouncer; fi
    if has_target pgbranch; then start_pgbranch; fi

    print_header

    # Warm the buffer cache so the first measured run is not the cold one.
    if [[ $WARMUP -gt 0 ]]; then
        log "warm-up: ${WARMUP}s direct ..."
        pgbench -n -S -M "$MODE" -T "$WARMUP" -c 2 -j 2 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres \
            >"$TMP/warmup.log" 2>&1 || { cat "$TMP/warmup.log" >&2; die "warm-up pgbench failed"; }
    fi

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
    echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    if grep -q ' FAIL ' "$RESULTS"; then
        echo "WARNING: $(grep -c ' FAIL ' "$RESULTS") pgbench run(s) failed; see stderr"
    fi
}

main "$@"
