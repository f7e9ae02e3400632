# shellcheck shell=bash
# Helpers shared by the bench/*.sh scripts; not run on its own.
# Each script sets LOG_PREFIX (its name, for log lines) and MEDIAN_ROUNDING
# (see paired_summary) and then sources this file with
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sourcing it resets the libpq environment and defines REPO, CLK_TCK, TMP,
# PG_BINDIR and PG_STARTED; everything else is a function. Each script
# keeps its own cleanup(), since each stops different processes, and calls
# stop_postgres and remove_tmp from it.

: "${LOG_PREFIX:?set LOG_PREFIX before sourcing bench/lib.sh}"
: "${MEDIAN_ROUNDING:?set MEDIAN_ROUNDING before sourcing bench/lib.sh}"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLK_TCK=$(getconf CLK_TCK)
# The temp dir (the script creates it), the PostgreSQL binaries
# (find_pg_bindir) and whether start_postgres started the cluster: what
# stop_postgres and remove_tmp need.
TMP=""
PG_BINDIR=""
PG_STARTED=0

# libpq settings from the caller's environment would silently change what is
# measured; every connection is spelled out instead. SSL is disabled so that
# every target sees the same startup sequence (no SSLRequest round trip that
# some targets answer differently).
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGOPTIONS PGSERVICE || true
export PGSSLMODE=disable PGGSSENCMODE=disable

log() { echo "$LOG_PREFIX: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

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

# For cleanup(): stops the PostgreSQL cluster start_postgres started.
stop_postgres() {
    if [[ $PG_STARTED -eq 1 ]]; then
        as_pg "$PG_BINDIR/pg_ctl" -D "$TMP/pgdata" -m fast -w stop >/dev/null 2>&1 ||
            as_pg "$PG_BINDIR/pg_ctl" -D "$TMP/pgdata" -m immediate -w stop >/dev/null 2>&1
    fi
}

# For cleanup(): removes the temp dir, or with KEEP_TMP=1 keeps it and says
# so; $1 says what is in it ("logs: ...").
remove_tmp() {
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then
            log "kept $TMP ($1)"
        else
            rm -rf "$TMP"
        fi
    fi
}

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

# The checks both scripts need before anything starts.
check_tools() {
    command -v pgbench >/dev/null || die "pgbench not found (apt-get install -y postgresql-client)"
    command -v psql >/dev/null || die "psql not found (apt-get install -y postgresql-client)"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' system user (apt-get install -y postgresql)"
    fi
}

# Sets PG_BINDIR: the newest /usr/lib/postgresql/<major>/bin, else
# pg_config --bindir.
find_pg_bindir() {
    local dir major=""
    for dir in /usr/lib/postgresql/*/; do
        dir=${dir%/}
        dir=${dir##*/}
        [[ $dir =~ ^[0-9]+$ ]] || continue
        if [[ -z $major || $dir -gt $major ]]; then major=$dir; fi
    done
    if [[ -n $major && -x /usr/lib/postgresql/$major/bin/initdb ]]; then
        PG_BINDIR=/usr/lib/postgresql/$major/bin
    elif command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        PG_BINDIR=$(pg_config --bindir)
    else
        die "PostgreSQL server binaries not found (apt-get install -y postgresql)"
    fi
}

# A free TCP port on 127.0.0.1, different from the ones handed out before.
# Ports come from 20000-32767, below Linux's ephemeral range (32768-60999),
# so an outgoing connection of another process cannot take one between
# this check and the bind. Called as $(free_port), so it runs in a subshell
# and cannot remember earlier answers: the used ports are kept in a file.
free_port() {
    local port used=${TMP:-/tmp}/.used_ports
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 12768))
        [[ -f $used ]] && grep -qx "$port" "$used" && continue
        # A successful connect means something listens there.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port" >>"$used"
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# wait_ready PORT NAME LOGFILE: waits until `select 1` works through
# 127.0.0.1:PORT (up to 15 s): proves the whole path to PostgreSQL works,
# not just that a socket listens.
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

# Builds the release binaries; sets PGBRANCH_BIN, FORWARDER_BIN and EPOLL_BIN.
build() {
    log "building release binaries (cargo build --release --bins) ..."
    (cd "$REPO" && cargo build --release --bins >&2)
    # shellcheck disable=SC2034 # used by the scripts
    PGBRANCH_BIN=$REPO/target/release/pgbranch
    # shellcheck disable=SC2034 # used by run.sh
    FORWARDER_BIN=$REPO/target/release/pgbranch-bench-forwarder
    # shellcheck disable=SC2034 # used by run.sh
    EPOLL_BIN=$REPO/target/release/pgbranch-bench-epoll
}

# Creates and starts a PostgreSQL cluster in $TMP/pgdata on a free port;
# sets PG_PORT, PG_SETTINGS, PG_STARTED (for stop_postgres) and PG_VERSION.
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
    PG_VERSION=$(psql -X -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'show server_version')
}

# pgbench -i -s $SCALE directly into the `postgres` database.
init_pgbench() {
    log "pgbench -i -s $SCALE (directly) ..."
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >"$TMP/pgbench-init.log" 2>&1 ||
        { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
}

# warm_up MODE: WARMUP seconds of unrecorded direct `pgbench -S -M MODE`, so
# that the first measured run is not the one with a cold buffer cache.
warm_up() {
    [[ $WARMUP -gt 0 ]] || return 0
    log "warm-up: ${WARMUP}s direct ..."
    pgbench -n -S -M "$1" -T "$WARMUP" -c 2 -j 2 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres \
        >"$TMP/warmup.log" 2>&1 || { cat "$TMP/warmup.log" >&2; die "warm-up pgbench failed"; }
}

# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() {
    [[ -n $1 && -r /proc/$1/stat ]] || { echo ""; return; }
    # Fields 14 and 15 of /proc/PID/stat, after the parenthesised name.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# pgbench_result OUT RC TICKS0 TICKS1: reads the report pgbench (exit status
# RC) wrote to OUT into PGB_TPS, PGB_LAT (latency average, ms), PGB_FAILED
# (failed transactions) and PGB_CPU_US: the CPU microseconds per transaction
# of the process whose cpu_ticks were TICKS0 before the run and TICKS1 after
# it ("-" when unknown). Returns 1 when pgbench failed, aborted clients or
# reported failed transactions.
pgbench_result() {
    local out=$1 rc=$2 cpu0=$3 cpu1=$4 txns
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    # The proxy's own CPU per transaction: on a 2-core machine every
    # microsecond a hop burns is taken from PostgreSQL and pgbench, and it
    # is far steadier than wall-clock TPS.
    PGB_CPU_US="-"
    if [[ -n $cpu0 && -n $cpu1 && -n $txns && $txns -gt 0 ]]; then
        # shellcheck disable=SC2034 # used by the scripts
        PGB_CPU_US=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$txns" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    fi
    PGB_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
    PGB_LAT=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out")
    PGB_FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    [[ $rc -eq 0 && -n $PGB_TPS && -n $PGB_LAT && ${PGB_FAILED:-0} -eq 0 ]]
}

# ---------------------------------------------------------------------------
# Reporting; $RESULTS has a line "scenario round target tps latency_ms
# proxy_cpu_us" per run ("... FAIL FAIL ..." when it failed, "-" for an
# unknown CPU time)
# ---------------------------------------------------------------------------

# Reads numbers (one a line) on stdin, prints their median (or "-").
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# values SCENARIO TARGET COL: "round value" of one column (tps | lat | cpu)
# for every round the target did not fail.
values() {
    local scenario=$1 target=$2 col=$3
    awk -v s="$scenario" -v t="$target" -v c="$col" \
        '$1 == s && $3 == t && $4 != "FAIL" {
            v = (c == "tps" ? $4 : (c == "lat" ? $5 : $6)); if (v != "-") print $2, v }' "$RESULTS"
}

# paired SCENARIO A B COL OP FORMAT [FACTOR]: per-round paired values of a
# column for targets A and B, in round order, for rounds where both
# succeeded: OP "ratio" gives a/b, "diff" gives (a - b) * FACTOR; printed
# with FORMAT.
paired() {
    local scenario=$1 a=$2 b=$3 col=$4 op=$5 format=$6 factor=${7:-1}
    join <(values "$scenario" "$a" "$col" | sort -k1,1) <(values "$scenario" "$b" "$col" | sort -k1,1) |
        sort -n -k1,1 |
        awk -v op="$op" -v f="$format" -v s="$factor" \
            '{ if (op == "ratio") printf f "\n", $2 / $3; else printf f "\n", ($2 - $3) * s }'
}

# paired_summary (arguments of paired): "median (per round: v1 v2 ...)", or
# "-". The median of an even count is a mean of two and is rounded to
# FORMAT again: with bash's printf when MEDIAN_ROUNDING=printf (run.sh), with
# awk's when MEDIAN_ROUNDING=awk (history.sh). The two round a halfway mean
# differently (long double against double), and each script keeps the
# rounding of its published reports.
paired_summary() {
    local vals med
    vals=$(paired "$@")
    [[ -n $vals ]] || { echo "-"; return; }
    med=$(median <<<"$vals")
    if [[ $MEDIAN_ROUNDING == printf ]]; then
        # shellcheck disable=SC2059 # the format is the caller's
        med=$(printf "$6" "$med")
    else
        med=$(awk -v f="$6" '{ printf f "\n", $1 }' <<<"$med")
    fi
    echo "$med (per round: $(paste -sd" " <<<"$vals"))"
}

# The header lines both reports share, from the date to the pgbench version.
print_environment() {
    local cpu commit
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    commit=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(cd "$REPO" && git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        commit+=" (with uncommitted changes)"
    fi
    echo "date:       $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit:     $commit"
    echo "machine:    $(nproc) CPUs, ${cpu:-unknown CPU}, Linux $(uname -r)"
    echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
    echo "PostgreSQL: $PG_VERSION ($PG_BINDIR), settings: ${PG_SETTINGS//$TMP/<tmp>}"
    echo "pgbench:    $(pgbench --version)"
}

# The last lines of both reports.
print_footer() {
    echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    if grep -q ' FAIL ' "$RESULTS"; then
        echo "WARNING: $(grep -c ' FAIL ' "$RESULTS") pgbench run(s) failed; see stderr"
    fi
}

# Starts the release pgbranch in front of the cluster on $PG_PORT, on a
# free port, in a session of its own (as_daemon); sets PGBRANCH_PORT and
# PGBRANCH_PID (the caller stops it). Set on the call: PB_NAME names the
# instance and its log ($TMP/pgbranch-NAME.log; default $TMP/pgbranch.log),
# PB_METRICS is its --metrics-listen (default '': no HTTP endpoint, which
# most scripts do not read and whose default port 127.0.0.1:9930 may be
# taken; then no statement is timed and no byte counted either);
# PGBRANCH_* settings reach pgbranch, e.g.
# `PB_NAME=off PGBRANCH_HISTORY_ENABLED=false start_pgbranch`.
# shellcheck disable=SC2034  # PGBRANCH_PID is the caller's
start_pgbranch() {
    local name=${PB_NAME:-} log=$TMP/pgbranch.log
    if [[ -n $name ]]; then log=$TMP/pgbranch-$name.log; fi
    PGBRANCH_PORT=$(free_port)
    PGBRANCH_LOG=warn as_daemon "$PGBRANCH_BIN" serve \
        --upstream "postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
        --listen "127.0.0.1:$PGBRANCH_PORT" --metrics-listen "${PB_METRICS:-}" >"$log" 2>&1 &
    PGBRANCH_PID=$!
    wait_ready "$PGBRANCH_PORT" "pgbranch${name:+ ($name)}" "$log"
    check_own_session "$PGBRANCH_PID" pgbranch
}

# Runs a proxy in a session of its own, as a service runs and as
# PostgreSQL (pg_ctl) and PgBouncer (-d) put themselves. With the kernel's
# autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled, on by
# default), a process left in this script's session shares one CPU group
# with pgbench and is preempted by it far more often: measured 0.55
# instead of 0.45 involuntary switches per transaction and ~4 % less TPS
# (docs/benchmarks.md). Called as `as_daemon CMD ... &`: the background
# subshell execs setsid, which is not a process-group leader there, so it
# calls setsid(2) and execs CMD in place: $! stays CMD's PID.
as_daemon() {
    exec setsid "$@"
}

# Warns unless PID leads its own session (see as_daemon).
check_own_session() {
    local sid
    sid=$(ps -o sid= -p "$1" 2>/dev/null | tr -d ' ')
    [[ $sid == "$1" ]] || log "warning: $2 (pid $1) is not in a session of its own (sid ${sid:-?}); CPU scheduling differs from the other targets"
}

# Runs the script's cleanup() on exit, and turns INT/TERM into a normal
# exit so that it runs then too.
install_cleanup() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Dies unless each named variable holds a positive integer.
require_positive() {
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
    done
}

# Dies unless each named variable holds a non-negative integer.
require_non_negative() {
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
    done
}
