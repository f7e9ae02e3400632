#!/usr/bin/env bash
# Measures what per-statement metrics cost: two pgbranch instances in front
# of one PostgreSQL, metrics on (an HTTP endpoint on a free port, so every
# statement is timed and the relay counts bytes) and off (`--metrics-listen
# ''`, which turns the endpoint and all per-statement recording off), in
# paired, alternating rounds of `pgbench -S` with 8 clients, -M simple and
# -M prepared. Reports the median TPS of both, the on/off TPS ratio per
# round and its median, and the proxy's CPU per transaction; then reads
# /metrics from metrics-on and checks that the select statements it counted
# match the transactions pgbench reported.
#
# Usage (from anywhere; see bench/README.md):
#   bash bench/metrics.sh > result.txt          # full run (~4 minutes)
#   DURATION=2 ROUNDS=1 bash bench/metrics.sh   # smoke run
#
# stdout carries only the report; progress and diagnostics go to stderr.
set -euo pipefail

# ---------------------------------------------------------------------------
# Parameters (all overridable through the environment)
# ---------------------------------------------------------------------------
DURATION=${DURATION:-10}      # seconds per pgbench run (-T)
ROUNDS=${ROUNDS:-5}           # paired rounds per protocol
SCALE=${SCALE:-10}            # pgbench -i -s
WARMUP=${WARMUP:-5}           # seconds of unrecorded direct pgbench -S first
CLIENTS=${CLIENTS:-8}         # pgbench -c
THREADS=${THREADS:-2}         # pgbench -j
KEEP_TMP=${KEEP_TMP:-0}       # 1: keep the temp dir (logs) after the run

# Shared helpers (bench/lib.sh): log/die, processes, PostgreSQL setup,
# pgbench parsing, medians and paired rounds; it also resets the libpq
# environment.
LOG_PREFIX="metrics.sh"
MEDIAN_ROUNDING="awk"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------
# State shared with cleanup() (besides lib.sh's TMP, PG_BINDIR, PG_STARTED)
# ---------------------------------------------------------------------------
ON_PID=""
ON_PORT=""
METRICS_PORT=""
# metrics-off is lib.sh's start_pgbranch: PGBRANCH_PID, PGBRANCH_PORT.
PGBRANCH_PID=""
PGBRANCH_PORT=""

cleanup() {
    local status=$?
    set +e
    stop_pid "$ON_PID"
    stop_pid "$PGBRANCH_PID"
    stop_postgres
    remove_tmp "logs: $TMP/*.log, runs: $TMP/runs, /metrics: $TMP/metrics-*.txt"
    exit "$status"
}
install_cleanup

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

check_params() {
    require_positive DURATION ROUNDS SCALE CLIENTS THREADS
    require_non_negative WARMUP
    check_tools
}

# metrics-on: lib.sh's start_pgbranch with the endpoint on a free port.
start_metrics_on() {
    METRICS_PORT=$(free_port)
    PB_NAME=on PB_METRICS=127.0.0.1:$METRICS_PORT start_pgbranch
    ON_PID=$PGBRANCH_PID ON_PORT=$PGBRANCH_PORT
}

port_of() { if [[ $1 == on ]]; then echo "$ON_PORT"; else echo "$PGBRANCH_PORT"; fi; }
pid_of() { if [[ $1 == on ]]; then echo "$ON_PID"; else echo "$PGBRANCH_PID"; fi; }
log_of() { if [[ $1 == on ]]; then echo "$TMP/pgbranch-on.log"; else echo "$TMP/pgbranch.log"; fi; }

# ---------------------------------------------------------------------------
# /metrics of metrics-on
# ---------------------------------------------------------------------------

# Prints the body of GET /metrics (curl, else bash's /dev/tcp).
fetch_metrics() {
    if command -v curl >/dev/null; then
        curl -sSf --max-time 10 "http://127.0.0.1:$METRICS_PORT/metrics"
    else
        (
            exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT"
            printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
            # The endpoint answers one request per connection and closes it:
            # drop the status line and headers, up to the empty line.
            sed '1,/^\r*$/d' <&3
        )
    fi
}

# Saves /metrics to $TMP/metrics-NAME.txt.
save_metrics() {
    fetch_metrics >"$TMP/metrics-$1.txt" || die "GET http://127.0.0.1:$METRICS_PORT/metrics failed"
}

# metric NAME SERIES: the value of one series (name plus labels, exactly as
# exported) in $TMP/metrics-NAME.txt, or "-" when it is missing.
metric() {
    awk -v s="$2" '$1 == s { v = $2 } END { print (v == "" ? "-" : v) }' "$TMP/metrics-$1.txt"
}

# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

# One pgbench run through a target; appends "mode round target tps
# latency_ms proxy_cpu_us transactions" to $RESULTS, or "... FAIL FAIL - -"
# when pgbench failed (its output then goes to stderr).
run_one() {
    local mode=$1 round=$2 target=$3
    local port pid out rc=0 cpu0 cpu1 txns
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    out=$TMP/runs/$mode-r$round-$target.txt
    cpu0=$(cpu_ticks "$pid")
    # -n: no vacuum before the run.
    pgbench -n -S -M "$mode" -T "$DURATION" -c "$CLIENTS" -j "$THREADS" \
        -h 127.0.0.1 -p "$port" -U postgres postgres >"$out" 2>&1 || rc=$?
    cpu1=$(cpu_ticks "$pid")
    if ! pgbench_result "$out" "$rc" "$cpu0" "$cpu1"; then
        log "pgbench -M $mode through metrics-$target FAILED (exit $rc, round $round); output:"
        cat "$out" >&2
        kill -0 "$pid" 2>/dev/null || log "the metrics-$target process is no longer running"
        log "tail of $(log_of "$target"):"
        tail -20 "$(log_of "$target")" >&2 || true
        echo "$mode $round $target FAIL FAIL - -" >>"$RESULTS"
        return 0
    fi
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    log "  $mode round $round: metrics-$target tps=$PGB_TPS latency=${PGB_LAT}ms proxy cpu=${PGB_CPU_US}us/txn"
    echo "$mode $round $target $PGB_TPS $PGB_LAT $PGB_CPU_US $txns" >>"$RESULTS"
}

# ROUNDS paired rounds of one protocol; on/off order alternates per round
# (on first in odd rounds, off first in even ones).
run_mode() {
    local mode=$1 round
    log "-M $mode: $ROUNDS round(s) x 2 targets x ${DURATION}s ..."
    for round in $(seq "$ROUNDS"); do
        if ((round % 2)); then
            run_one "$mode" "$round" on
            run_one "$mode" "$round" off
        else
            run_one "$mode" "$round" off
            run_one "$mode" "$round" on
        fi
    done
}

# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

# fmt FORMAT: formats the number on stdin with awk's printf ("-" stays).
fmt() { awk -v f="$1" '{ if ($1 == "-" || $1 == "") print "-"; else printf f "\n", $1 }'; }

failures() {
    awk -v m="$1" -v t="$2" '$1 == m && $3 == t && $4 == "FAIL"' "$RESULTS" | wc -l
}

# Transactions pgbench reported through metrics-on with one protocol, over
# the runs that did not fail.
txns_on() {
    awk -v m="$1" '$1 == m && $3 == "on" && $4 != "FAIL" { n += $7 } END { print n + 0 }' "$RESULTS"
}

report_mode() {
    local mode=$1 t
    echo
    echo "== -M $mode: pgbench -n -S -M $mode -T $DURATION -c $CLIENTS -j $THREADS, $ROUNDS round(s) =="
    printf '%-12s %11s %14s %16s %7s\n' target "median TPS" "median lat ms" "proxy CPU us/tx" failed
    for t in on off; do
        printf '%-12s %11s %14s %16s %7s\n' "metrics-$t" \
            "$(values "$mode" "$t" tps | awk '{ print $2 }' | median | fmt %.0f)" \
            "$(values "$mode" "$t" lat | awk '{ print $2 }' | median | fmt %.3f)" \
            "$(values "$mode" "$t" cpu | awk '{ print $2 }' | median | fmt %.2f)" \
            "$(failures "$mode" "$t")"
    done
    echo "TPS on / off:               $(paired_summary "$mode" on off tps ratio %.3f)"
    echo "proxy CPU on - off, us/tx:  $(paired_summary "$mode" on off cpu diff %.2f)"
    echo "proxy CPU on / off:         $(paired_summary "$mode" on off cpu ratio %.3f)"
}

# What metrics-on counted during the runs (after minus before) against the
# transactions pgbench reported through it.
report_counts() {
    local proto mode series before after counted txns diff runs
    local sum0 sum1 n0 n1
    echo
    echo "== recorded by metrics-on: GET /metrics before and after the runs =="
    printf '%-90s %10s %12s %10s\n' "series (after - before)" counted "pgbench txns" difference
    for proto in simple extended; do
        if [[ $proto == simple ]]; then mode=simple; else mode=prepared; fi
        series="pgbranch_statement_duration_seconds_count{branch=\"main\",kind=\"select\",protocol=\"$proto\"}"
        before=$(metric before "$series")
        after=$(metric after "$series")
        txns=$(txns_on "$mode")
        if [[ $after == - ]]; then
            counted="missing"
            diff="-"
        else
            [[ $before == - ]] && before=0
            counted=$((after - before))
            diff=$((counted - txns))
        fi
        printf '%-90s %10s %12s %10s\n' "$series" "$counted" "$txns (-M $mode)" "$diff"
    done
    runs=$(awk '$3 == "on"' "$RESULTS" | wc -l)
    echo "(difference: besides its transactions, each of the $runs pgbench runs through metrics-on sends its own"
    echo " setup queries, e.g. the scale check, in the simple protocol, whatever -M says)"
    sum0=$(metric before pgbranch_proxy_overhead_seconds_sum)
    sum1=$(metric after pgbranch_proxy_overhead_seconds_sum)
    n0=$(metric before pgbranch_proxy_overhead_seconds_count)
    n1=$(metric after pgbranch_proxy_overhead_seconds_count)
    echo "pgbranch_proxy_overhead_seconds during the runs: $(awk -v s0="$sum0" -v s1="$sum1" -v c0="$n0" -v c1="$n1" 'BEGIN {
        if (s1 == "-" || c1 == "-" || c1 - c0 <= 0) { print "-"; exit }
        printf "%d statements, mean %.2f us inside the hooks per statement", c1 - c0, (s1 - s0) / (c1 - c0) * 1e6 }')"
}

print_header() {
    echo "pgbranch benchmark: cost of per-statement metrics, paired alternating rounds"
    print_environment
    echo "command:    DURATION=$DURATION ROUNDS=$ROUNDS SCALE=$SCALE WARMUP=$WARMUP CLIENTS=$CLIENTS THREADS=$THREADS bash bench/metrics.sh"
    echo "parameters: pgbench -i -s $SCALE (directly); each run pgbench -n -S -M simple|prepared -T $DURATION -c $CLIENTS -j $THREADS -h 127.0.0.1 -p <target port> -U postgres postgres"
    echo "            PGSSLMODE=disable; all on 127.0.0.1 TCP; ${WARMUP}s unrecorded direct warm-up"
    echo "targets:    metrics-on  = pgbranch serve --upstream --metrics-listen 127.0.0.1:<free port> (PGBRANCH_LOG=warn, history on)"
    echo "            metrics-off = the same with --metrics-listen '' (no endpoint, no per-statement recording)"
    echo "order:      on, off in odd rounds; off, on in even rounds; proxy CPU = utime + stime of the proxy process"
    echo "            (/proc/PID/stat) around each run / transactions pgbench processed"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
main() {
    check_params
    find_pg_bindir
    build
    TMP=$(mktemp -d /tmp/pgbranch-metrics-bench.XXXXXX)
    mkdir -p "$TMP/runs"
    RESULTS=$TMP/results.txt
    : >"$RESULTS"

    start_postgres
    init_pgbench
    start_metrics_on
    # metrics-off: lib.sh's start_pgbranch (--metrics-listen '').
    start_pgbranch
    save_metrics before

    print_header

    warm_up simple

    run_mode simple
    run_mode prepared

    save_metrics after

    report_mode simple
    report_mode prepared
    report_counts
    echo
    print_footer
}

main "$@"
