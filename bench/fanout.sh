#!/usr/bin/env bash
# `make bench-fanout`: what LISTEN/NOTIFY costs as listeners grow (issue 10).
#
# Starts a throwaway PostgreSQL cluster (as bench/run.sh does) and runs
# bench/cmd/fanout on it: for each number of sidecars (0, 1, 10, 50, 200;
# fewer where the machine cannot hold them, which the table says), N
# bin/pgmirror processes each with its own LISTEN connection, paced writes at
# 1,000/s and unpaced writes with 8 writers, with propagation, delivery,
# convergence, writer throughput and Postgres CPU; on the 10-sidecar fleet a
# 10,000-row UPDATE with the packed statement triggers against one
# notification per row; on the 50-sidecar fleet 1,000 writes/s through the
# sidecars (group commit) against the same writes one per transaction.
#
# The table is printed; a full run replaces the section "make bench-fanout
# results" of BENCHMARKS.md and bench/chart draws the cost law with its
# measured points from the same fanout.json into bench/charts/fanout.svg,
# linked at the top of that section. Every process is stopped on exit (trap); the
# temporary directory is removed after a successful run and kept after a
# failure, for its logs.
#
# Environment: BENCH_QUICK=1 for a smoke run (0, 1 and 10 sidecars, short
# windows, both comparisons on 10 sidecars; it does not touch BENCHMARKS.md);
# BENCH_KEEP=1 keeps the temporary directory; FANOUT_SIDECARS=a,b,... runs
# those fleet sizes only (and leaves BENCHMARKS.md alone); FANOUT_ARGS adds
# flags of bench/cmd/fanout (see `go run ./bench/cmd/fanout -h`).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
    sidecars=0,1,10
    args=(-quick -idle 1s -paced 3s -unpaced 3s -warmup 1s -update-reps 1 -grouped-at 10 -grouped-reps 1 -grouped 3s)
else
    sidecars=0,1,10,50,200
    args=()
fi
update_bench=1
if [ -n "${FANOUT_SIDECARS:-}" ]; then
    sidecars=$FANOUT_SIDECARS
    update_bench=0
fi
[ "$quick" = 1 ] && update_bench=0
# shellcheck disable=SC2206 # FANOUT_ARGS is split on purpose
[ -n "${FANOUT_ARGS:-}" ] && args+=(${FANOUT_ARGS})
largest=$(tr ',' '\n' <<<"$sidecars" | sort -n | tail -n 1)
# A sidecar holds its LISTEN connection and a small pool; room for the writers too.
max_connections=$((4 * largest + 100))

die() { echo "bench-fanout: error: $*" >&2; exit 1; }
log() { echo "bench-fanout: $(date +%T) $*" >&2; }

# --- what is needed ---------------------------------------------------------
. bench/lib.sh
find_postgres initdb pg_ctl postgres psql
command -v go >/dev/null 2>&1 || die "go not found on PATH"
[ -x bin/pgmirror ] || die "bin/pgmirror missing; run make build"

# --- the temporary directory and the cleanup ---------------------------------
work=$(mktemp -d /tmp/pgmirror-fanout.XXXXXX)
res=$work/results
mkdir -p "$res" "$work/bin"
child=
pg_started=0
exec 3>&2 # the trap may run inside a redirection of stderr; it reports here
cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ -n "$child" ]; then
        # The fanout program stops its sidecars on SIGTERM; they also die
        # with it (Pdeathsig) if it is killed.
        kill -TERM "$child" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$child" 2>/dev/null || true
    fi
    if [ "$pg_started" = 1 ]; then
        "${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ "$rc" -ne 0 ]; then
        echo "bench-fanout: FAILED (exit $rc); logs kept in $work" >&3
    elif [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench-fanout: kept $work" >&3
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cmdlog=$res/commands.txt
: >"$cmdlog"
logcmd() { printf '%s\n' "${*//$work/\$W}" >>"$cmdlog"; }

# --- build ------------------------------------------------------------------
logcmd "make bench-fanout  # make build (bin/pgmirror), then bench/fanout.sh, which runs:"
log "building bench/cmd/fanout"
logcmd go build -o "$work/bin/" ./bench/cmd/fanout
go build -o "$work/bin/" ./bench/cmd/fanout
(cd bench/chart && go build -o "$work/bin/chart" .) # its own module: gonum's plot stays out of the sidecar's

# --- Postgres ---------------------------------------------------------------
log "starting PostgreSQL in $work/pg (max_connections $max_connections)"
start_postgres "make bench-fanout" 55433 "$max_connections"
logcmd "initdb -D \$W/pg -U postgres --auth=trust -E UTF8 --no-locale  # as the postgres user; then: $pgconf"
dsn="host=$work/pg port=$port user=postgres dbname=fanout sslmode=disable"
"$pgbin/psql" -X -q -v ON_ERROR_STOP=1 "host=$work/pg port=$port user=postgres dbname=postgres" -c "CREATE DATABASE fanout"
logcmd "psql -c 'CREATE DATABASE fanout'"
logcmd bin/pgmirror migrate --dsn "$dsn"
bin/pgmirror migrate --dsn "$dsn" >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; die "pgmirror migrate failed"; }

# --- the machine --------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
pgver=$("$pgbin/postgres" --version | awk '{ print $3 }')
{
    printf 'machine\t%s cores (%s), %s RAM, %s; PostgreSQL %s, fsync and synchronous_commit on\n' "$(nproc)" "$cpu" "$mem" "$(uname -sr)" "$pgver"
    machine_lines
    printf 'pgconf\t%s\n' "$pgconf"
    printf 'migrations\t%s\n' "$(cd migrations && ls ./*.sql | sed 's|^\./||' | tr '\n' ' ')"
    printf 'load_start\t%s\n' "$load_start"
} >"$res/machine.tsv"

# --- the measurement -----------------------------------------------------------
update=()
[ "$update_bench" = 1 ] && update=(-benchmarks BENCHMARKS.md)
cmd=("$work/bin/fanout" -bin bin/pgmirror -dsn "$dsn" -pgdata "$work/pg" -dir "$work/fleet" -sidecars "$sidecars"
    "${args[@]}" -out "$res/fanout.json" -report "$res/report.md" -machine "$res/machine.tsv" -commands "$cmdlog")
logcmd "${cmd[@]}" "${update[@]}"
log "fan-out with $sidecars sidecars"
"${cmd[@]}" "${update[@]}" 2> >(tee "$work/fanout.log" | sed -u 's/^/bench-fanout: /' >&2) &
child=$!
wait "$child"
child=
# The chart of the cost law, from the same fanout.json; a run that updated
# BENCHMARKS.md writes it to bench/charts/ and links it under its section.
if [ "$update_bench" = 1 ]; then
    "$work/bin/chart" fanout -json "$res/fanout.json" -out bench/charts -benchmarks BENCHMARKS.md
else
    "$work/bin/chart" fanout -json "$res/fanout.json" -out "$res/charts"
    log "chart of this run in $res/charts (BENCH_KEEP=1 keeps it)"
fi
log "done in $(($(date +%s) - started)) s"
