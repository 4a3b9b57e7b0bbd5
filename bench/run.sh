#!/usr/bin/env bash
# `make bench`: pgmirror side by side with Redis and Postgres, as SPEC §8 asks.
#
# Starts a throwaway PostgreSQL cluster, a pgmirror sidecar (bin/pgmirror) and
# a redis-server, all on unix sockets under one temporary directory, preloads
# the same 100,000 keys of 100 bytes into both, and measures in one run:
#
#   1. redis-benchmark GET and SET at -c 1, -c 50, -c 50 -P 16 against pgmirror
#      and Redis, interleaved, REPS repetitions (medians), with the CPU the
#      server process (and the Postgres cluster) used in each run, from
#      /proc/PID/stat just before and after it;
#   2. Postgres statements touching cache_entries during the pgmirror GET runs
#      (pg_stat_statements before/after);
#   3. pgbench: the direct primary-key SELECT at 1 and 50 clients, and
#      single-row upserts at 50 clients on cache_entries (with the notify
#      triggers) and on a copy without triggers;
#   3b. MULTI/EXEC of 5 SETs and EVALSHA of redis-py's lock-release script at
#      50 clients against pgmirror and Redis, interleaved, REPS repetitions
#      (bench/cmd/txbench; redis-benchmark cannot send a MULTI block);
#   4. propagation commit -> visible in 1, 10, 50 sidecars at 1,000 writes/s
#      next to a bare pq.Listener (bench/cmd/propagation);
#   4b. client-side caching: commit -> invalidation received by a CLIENT
#      TRACKING client on each of 1 and 10 sidecars next to the raw NOTIFY
#      floor of the same run, and rueidis DoCache hits/s against plain GETs
#      (bench/cmd/invalidation);
#   5. warm start of 1,000,000 rows of 100 bytes: time to ready and VmRSS
#      (bench/cmd/warmstart);
#   6. a perf CPU profile of the sidecar under GET -c 50, when perf works.
#
# bench/cmd/report then prints the acceptance block of the current step
# (each figure met or not) and one table, and replaces the section "make bench
# results" of BENCHMARKS.md, and bench/chart draws the charts of the same
# result files into bench/charts/ and links them at the top of that section. Every process is stopped on exit (trap); the
# temporary directory is removed after a successful run and kept after a
# failure, for its logs.
#
# Environment: BENCH_QUICK=1 for a short smoke run (one repetition, smaller
# counts, 1 and 10 sidecars; it does not touch BENCHMARKS.md);
# BENCH_KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
    reps=1 pgbench_t=3 tx_secs=3s prop_sidecars=1,10 prop_quiet=3s prop_probed=5s warm_runs=1 warm_rows=200000 prof_secs=3
    inv_probes=100 inv_hits_for=1s
    n_get_c1=20000 n_get_c50=100000 n_get_p16=400000 n_set_c1=2000 n_set_c50=10000 n_set_p16=20000
else
    reps=3 pgbench_t=10 tx_secs=10s prop_sidecars=1,10,50 prop_quiet=10s prop_probed=15s warm_runs=3 warm_rows=1000000 prof_secs=8
    inv_probes=300 inv_hits_for=3s
    n_get_c1=100000 n_get_c50=500000 n_get_p16=2000000 n_set_c1=5000 n_set_c50=50000 n_set_p16=30000
fi
keys=100000 # preloaded keys, key:000000000000 .. key:000000099999, as redis-benchmark -r 100000 names them

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $(date +%T) $*" >&2; }

# --- what is needed ---------------------------------------------------------
. bench/lib.sh
find_postgres initdb pg_ctl postgres psql pgbench
for t in redis-server redis-cli redis-benchmark go awk; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found on PATH; run scripts/setup"
done
[ -x bin/pgmirror ] || die "bin/pgmirror missing; run make build"
ext=$("$pgbin/pg_config" --sharedir 2>/dev/null)/extension/pg_stat_statements.control
[ -f "$ext" ] || die "pg_stat_statements is not installed ($ext); install postgresql-contrib"

# --- the temporary directory and the cleanup ---------------------------------
work=$(mktemp -d /tmp/pgmirror-bench.XXXXXX)
res=$work/results
mkdir -p "$res" "$work/bin" "$work/pgbench"
pids=()
child=
pg_started=0
exec 3>&2 # the trap may run inside a redirection of stderr; it reports here
cleanup() {
    rc=$?
    trap - EXIT INT TERM
    [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ "$pg_started" = 1 ]; then
        "${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ "$rc" -ne 0 ]; then
        echo "bench: FAILED (exit $rc); logs kept in $work" >&3
    elif [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: kept $work" >&3
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fg runs a command in the background and waits for it, so that a signal
# runs the trap at once instead of after the command.
fg() {
    local rc=0
    "$@" 3>&- &
    child=$!
    wait "$child" || rc=$?
    child=
    return "$rc"
}

# Commands as run, with the temporary directory written $W, once each.
cmdlog=$res/commands.txt
: >"$cmdlog"
declare -A logged=()
logcmd() {
    local c=${*//$work/\$W}
    [ -n "${logged[$c]:-}" ] && return 0
    logged[$c]=1
    printf '%s\n' "$c" >>"$cmdlog"
}

# --- build ------------------------------------------------------------------
log "building the bench tools"
go build -o "$work/bin/" ./bench/cmd/propagation ./bench/cmd/warmstart ./bench/cmd/report ./bench/cmd/txbench \
    ./bench/cmd/invalidation
(cd bench/chart && go build -o "$work/bin/chart" .) # its own module: gonum's plot stays out of the sidecar's
# The profile needs symbols; bin/pgmirror is stripped (-s -w).
go build -trimpath -o "$work/bin/pgmirror-symbols" .

# --- Postgres ---------------------------------------------------------------
log "starting PostgreSQL in $work/pg"
start_postgres "make bench" 55432 400 "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track = all"
dsn() { echo "host=$work/pg port=$port user=postgres dbname=$1 sslmode=disable"; }
sql() { local db=$1; shift; "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -At "$(dsn "$db")" "$@"; }
for db in bench prop inv warm; do sql postgres -c "CREATE DATABASE $db"; done

# --- the 100,000 keys, in Postgres and Redis ---------------------------------
# key:%012d and a 100-byte value: 88 'v' then the key's 12 digits.
log "preloading $keys keys into cache_entries"
bin/pgmirror migrate --dsn "$(dsn bench)" >/dev/null 2>&1 || die "pgmirror migrate failed"
cat >"$work/preload.sql" <<EOF
CREATE EXTENSION pg_stat_statements;
INSERT INTO cache_entries (key, value)
    SELECT 'key:' || lpad(i::text, 12, '0'), convert_to(repeat('v', 88) || lpad(i::text, 12, '0'), 'UTF8')
    FROM generate_series(0, $keys - 1) i;
-- The same rows in a copy without any trigger, for the upsert baseline.
CREATE TABLE plain (LIKE cache_entries INCLUDING ALL);
INSERT INTO plain (key, value) SELECT key, value FROM cache_entries;
VACUUM ANALYZE cache_entries;
VACUUM ANALYZE plain;
EOF
logcmd bin/pgmirror migrate --dsn "$(dsn bench)"
logcmd "psql \"$(dsn bench)\" <<'SQL'"$'\n'"$(cat "$work/preload.sql")"$'\n'"SQL"
fg sql bench -f "$work/preload.sql"

pgm_sock=$work/pgmirror.sock
log "starting pgmirror on $pgm_sock"
logcmd bin/pgmirror serve --migrate --dsn "$(dsn bench)" --socket "$pgm_sock" --http=
bin/pgmirror serve --migrate --dsn "$(dsn bench)" --socket "$pgm_sock" --http= 2>"$work/pgmirror.log" &
pids+=($!)
pgm_pid=$!

redis_sock=$work/redis.sock
log "starting redis-server on $redis_sock"
logcmd redis-server --port 0 --unixsocket "$redis_sock" --unixsocketperm 700 --save "''" --appendonly no
redis-server --port 0 --unixsocket "$redis_sock" --unixsocketperm 700 --save "" --appendonly no \
    --logfile "$work/redis.log" &
pids+=($!)
redis_pid=$!

# wait_ready sock pid what: polls INFO until the server answers (and a mirror says ready).
wait_ready() {
    for _ in $(seq 600); do
        kill -0 "$2" 2>/dev/null || die "$3 exited; see $work/*.log"
        if info=$(redis-cli -s "$1" INFO 2>/dev/null) && [ -n "$info" ]; then
            case $info in *state:loading*) ;; *) return 0 ;; esac
        fi
        sleep 0.1
    done
    die "$3 not ready after 60 s"
}
wait_ready "$pgm_sock" "$pgm_pid" pgmirror
wait_ready "$redis_sock" "$redis_pid" redis-server
preload='BEGIN {
    v = ""; for (j = 0; j < 88; j++) v = v "v"
    for (i = 0; i < n; i++) printf "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$100\r\n%s%012d\r\n", i, v, i
}'
logcmd "awk -v n=$keys '$preload' | redis-cli -s $redis_sock --pipe"
awk -v n="$keys" "$preload" | redis-cli -s "$redis_sock" --pipe >"$work/redis-preload.log" 2>&1 ||
    die "redis preload failed"
for s in "$pgm_sock" "$redis_sock"; do
    got=$(redis-cli -s "$s" DBSIZE)
    [ "$got" = "$keys" ] || die "$s holds $got keys, expected $keys"
    v=$(redis-cli -s "$s" GET key:000000012345)
    [ "$v" = "$(printf 'v%.0s' $(seq 88))000000012345" ] || die "$s: unexpected value of key:000000012345: $v"
done

# --- redis-benchmark ----------------------------------------------------------
# rb mode cfg target rep n: one redis-benchmark run, its CSV in results/,
# and beside it (.cpu) the CPU the server process and the whole Postgres
# cluster used during the run, read from /proc just before and after it.
# The server is one process: for pgmirror the sidecar alone, without the
# Postgres backends it talks to (those are postgres_ticks).
rb() {
    local mode=$1 cfg=$2 target=$3 rep=$4 n=$5 sock pid args s0 s1 p0 p1
    case $target in pgmirror) sock=$pgm_sock pid=$pgm_pid ;; redis) sock=$redis_sock pid=$redis_pid ;; esac
    case $cfg in c1) args=(-c 1) ;; c50) args=(-c 50) ;; c50p16) args=(-c 50 -P 16) ;; esac
    local cmd=(redis-benchmark -s "$sock" -t "$mode" -n "$n" -r "$keys" -d 100 "${args[@]}" --csv)
    local out=$res/rb_${mode}_${cfg}_${target}_${rep}
    [ "$rep" != 1 ] || logcmd "${cmd[@]}"
    s0=$(proc_ticks "$pid") p0=$(postgres_ticks)
    [ -n "$s0" ] || die "$target (pid $pid) is gone; see $work/*.log"
    fg "${cmd[@]}" >"$out.csv" 2>>"$work/redis-benchmark.log" ||
        die "redis-benchmark $mode $cfg against $target failed"
    s1=$(proc_ticks "$pid") p1=$(postgres_ticks)
    [ -n "$s1" ] || die "$target (pid $pid) exited during redis-benchmark $mode $cfg; see $work/*.log"
    printf 'server_ticks\t%d\npostgres_ticks\t%d\nclk_tck\t%d\nrequests\t%d\n' \
        $((s1 - s0)) $((p1 - p0)) "$clk_tck" "$n" >"$out.cpu"
    grep -q '^"'"${mode^^}"'"' "$out.csv" ||
        die "redis-benchmark $mode $cfg against $target printed no result; see $work/redis-benchmark.log"
}
clk_tck=$(getconf CLK_TCK)
logcmd "# around each redis-benchmark run: utime+stime (fields 14 and 15) of /proc/<server pid>/stat, and of the" \
    "postmaster (with cutime+cstime) and its live children, in ticks of $clk_tck/s (getconf CLK_TCK)"
# matrix mode: every configuration, REPS times, pgmirror and Redis alternating.
matrix() {
    local mode=$1 rep cfg n
    for rep in $(seq "$reps"); do
        for cfg in c1 c50 c50p16; do
            n=$(eval echo "\$n_${mode}_${cfg/c50p16/p16}")
            for target in pgmirror redis; do
                log "redis-benchmark ${mode^^} $cfg $target ($rep/$reps, -n $n)"
                rb "$mode" "$cfg" "$target" "$rep" "$n"
            done
        done
    done
}

pgss() {
    logcmd "psql \"$(dsn bench)\" -c \"SELECT queryid, sum(calls), sum(rows), min(query) FROM pg_stat_statements ... WHERE datname = 'bench' GROUP BY queryid\"  # before and after the GET runs"
    sql bench -F $'\t' -c "SELECT queryid, sum(calls), sum(rows), regexp_replace(min(query), '\s+', ' ', 'g')
        FROM pg_stat_statements JOIN pg_database d ON d.oid = dbid WHERE d.datname = 'bench' GROUP BY queryid" >"$1"
}
mirror_stat() { redis-cli -s "$pgm_sock" INFO | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }

log "GET runs ($reps repetitions, interleaved)"
pgss "$res/pgss_before.tsv"
hits0=$(mirror_stat hits) misses0=$(mirror_stat misses) fetches0=$(mirror_stat fetches)
matrix get
hits1=$(mirror_stat hits) misses1=$(mirror_stat misses) fetches1=$(mirror_stat fetches)
pgss "$res/pgss_after.tsv"
printf 'hits\t%s\nmisses\t%s\nfetches\t%s\n' $((hits1 - hits0)) $((misses1 - misses0)) $((fetches1 - fetches0)) >"$res/get_hits.tsv"

# --- pgbench: the direct SELECT -----------------------------------------------
cat >"$work/pgbench/select.sql" <<EOF
\set k random(0, $keys - 1)
SELECT value FROM cache_entries WHERE key = 'key:' || lpad(:k::text, 12, '0');
EOF
cat >"$work/pgbench/upsert.sql" <<EOF
\set k random(0, $keys - 1)
INSERT INTO cache_entries (key, value) VALUES ('key:' || lpad(:k::text, 12, '0'), '\\x$(printf '78%.0s' $(seq 100))'::bytea)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
EOF
sed 's/cache_entries/plain/' "$work/pgbench/upsert.sql" >"$work/pgbench/upsert_plain.sql"
cp "$work/pgbench/"*.sql "$res/"
# pgb name script clients: one pgbench run; its output and per-transaction log in results/.
pgb() {
    local name=$1 script=$2 c=$3 j=1
    [ "$c" -lt 2 ] || j=2
    local cmd=("$pgbin/pgbench" -h "$work/pg" -p "$port" -U postgres -M prepared -n -f "$work/pgbench/$script"
        -c "$c" -j "$j" -T "$pgbench_t" -l --log-prefix="$res/pgbench_$name" bench)
    logcmd "${cmd[@]}"
    log "pgbench $name"
    fg "${cmd[@]}" >"$res/pgbench_$name.out" 2>&1 || { cat "$res/pgbench_$name.out" >&2; die "pgbench $name failed"; }
}
pgb select_c1 select.sql 1
pgb select_c50 select.sql 50

# --- writes ----------------------------------------------------------------------
log "SET runs ($reps repetitions, interleaved)"
matrix set
pgb upsert_triggers_c50 upsert.sql 50
pgb upsert_plain_c50 upsert_plain.sql 50

# --- transactions and scripts ---------------------------------------------------
# MULTI/EXEC of 5 SETs and EVALSHA of the lock-release script, 50 clients each,
# pgmirror and Redis alternating, REPS times; one JSON per run in results/.
log "MULTI/EXEC and EVALSHA runs ($reps repetitions, interleaved, $tx_secs each)"
for rep in $(seq "$reps"); do
    for mode in multi evalsha; do
        for target in pgmirror redis; do
            case $target in pgmirror) sock=$pgm_sock ;; redis) sock=$redis_sock ;; esac
            cmd=("$work/bin/txbench" -socket "$sock" -mode "$mode" -clients 50 -duration "$tx_secs" -keys "$keys"
                -out "$res/tx_${mode}_${target}_${rep}.json")
            [ "$rep" != 1 ] || logcmd "${cmd[@]}"
            log "txbench $mode -c 50 $target ($rep/$reps)"
            fg "${cmd[@]}" 2>>"$work/txbench.log" || die "txbench $mode against $target failed; see $work/txbench.log"
        done
    done
done

# --- CPU profile of the sidecar under GET -c 50 ------------------------------------
if command -v perf >/dev/null 2>&1 && perf record -o /dev/null -- true >/dev/null 2>&1; then
    log "perf profile of a sidecar under GET -c 50"
    prof_sock=$work/prof.sock
    logcmd go build -trimpath -o "$work/bin/pgmirror-symbols" . "# unstripped, for perf"
    logcmd "$work/bin/pgmirror-symbols" serve --dsn "$(dsn bench)" --socket "$prof_sock" --http=
    "$work/bin/pgmirror-symbols" serve --dsn "$(dsn bench)" --socket "$prof_sock" --http= 2>"$work/prof.log" &
    pids+=($!)
    prof_pid=$!
    wait_ready "$prof_sock" "$prof_pid" "pgmirror (profiled)"
    logcmd redis-benchmark -s "$prof_sock" -t get -n 100000000 -r "$keys" -d 100 -c 50 --csv "# stopped after the profile"
    redis-benchmark -s "$prof_sock" -t get -n 100000000 -r "$keys" -d 100 -c 50 --csv >/dev/null 2>&1 &
    load=$!
    sleep 1
    logcmd perf record -F 499 -g -p "<pgmirror pid>" -o "\$W/perf.data" -- sleep "$prof_secs"
    fg perf record -F 499 -g -p "$prof_pid" -o "$work/perf.data" -- sleep "$prof_secs" >/dev/null 2>&1 || true
    kill "$load" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
    kill -TERM "$prof_pid" 2>/dev/null || true
    wait "$prof_pid" 2>/dev/null || true
    # Self time by function, and inclusive time (children), the top entries.
    logcmd perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio -g none
    logcmd perf report -i "$work/perf.data" --children --sort symbol --stdio -g none
    perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//; s/ +$//' | head -n 25 >"$res/perf_self.txt" || true
    perf report -i "$work/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//; s/ +$//' | head -n 40 >"$res/perf_children.txt" || true
else
    log "perf missing or not permitted; no profile"
fi

# --- propagation ----------------------------------------------------------------
logcmd bin/pgmirror migrate --dsn "$(dsn prop)"
bin/pgmirror migrate --dsn "$(dsn prop)" >/dev/null 2>&1 || die "pgmirror migrate (prop) failed"
log "propagation with $prop_sidecars sidecars at 1,000 writes/s"
cmd=("$work/bin/propagation" -bin bin/pgmirror -dsn "$(dsn prop)" -dir "$work/prop" -sidecars "$prop_sidecars"
    -rate 1000 -writers 2 -quiet "$prop_quiet" -probed "$prop_probed" -probe-every 50 -poll-pause 100us
    -info-every 100ms -out "$res/propagation.json")
logcmd "${cmd[@]}"
fg "${cmd[@]}" 2> >(tee "$work/propagation.log" | sed 's/^/bench: /' >&2) ||
    die "propagation failed; see $work/propagation.log and $work/prop/"

# --- invalidation (client-side caching) -------------------------------------------
# Its own database: the program empties cache_entries, and no other sidecar listens there.
logcmd bin/pgmirror migrate --dsn "$(dsn inv)"
bin/pgmirror migrate --dsn "$(dsn inv)" >/dev/null 2>&1 || die "pgmirror migrate (inv) failed"
log "invalidation with 1 and 10 sidecars, $inv_probes probes each"
cmd=("$work/bin/invalidation" -bin bin/pgmirror -dsn "$(dsn inv)" -dir "$work/inv" -sidecars 1,10
    -probes "$inv_probes" -hits-for "$inv_hits_for" -out "$res/invalidation.json")
logcmd "${cmd[@]}"
fg "${cmd[@]}" 2> >(tee "$work/invalidation.log" | sed 's/^/bench: /' >&2) ||
    die "invalidation failed; see $work/invalidation.log and $work/inv/"

# --- warm start ------------------------------------------------------------------
log "warm start: inserting $warm_rows rows of 100 bytes"
logcmd bin/pgmirror migrate --dsn "$(dsn warm)"
bin/pgmirror migrate --dsn "$(dsn warm)" >/dev/null 2>&1 || die "pgmirror migrate (warm) failed"
cat >"$work/warm.sql" <<EOF
INSERT INTO cache_entries (key, value)
    SELECT 'key:' || lpad(i::text, 12, '0'), convert_to(repeat('v', 88) || lpad(i::text, 12, '0'), 'UTF8')
    FROM generate_series(0, $warm_rows - 1) i;
VACUUM ANALYZE cache_entries;
EOF
logcmd "psql \"$(dsn warm)\" <<'SQL'"$'\n'"$(cat "$work/warm.sql")"$'\n'"SQL"
fg sql warm -f "$work/warm.sql"
cmd=("$work/bin/warmstart" -bin bin/pgmirror -dsn "$(dsn warm)" -dir "$work/warm" -runs "$warm_runs"
    -max-memory 1GiB -out "$res/warmstart.json")
logcmd "${cmd[@]}"
log "warm start: $warm_runs runs"
fg "${cmd[@]}" 2> >(tee "$work/warmstart.log" | sed 's/^/bench: /' >&2) ||
    die "warmstart failed; see $work/warmstart.log and $work/warm/"

# --- the machine and the report -----------------------------------------------------
{
    machine_lines
    printf 'redis\t%s\n' "$(redis-server --version | awk '{ print $3 }' | sed 's/v=//')"
    printf 'redis-benchmark\t%s\n' "$(redis-benchmark --version 2>/dev/null | head -n 1)"
    printf 'pgconf\t%s\n' "$pgconf"
    printf 'quick\t%s\n' "$quick"
    # What the SETs and pgbench's upserts committed with: both connect as
    # postgres to bench, and neither sets synchronous_commit in its session.
    printf 'synchronous_commit\t%s\n' "$(sql bench -c "SELECT current_setting('synchronous_commit')")"
    printf 'reps\t%s\n' "$reps"
    printf 'date\t%s\n' "$(date -u +'%Y-%m-%d %H:%M UTC')"
    printf 'load_start\t%s\n' "$load_start"
    printf 'load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'elapsed\t%s\n' "$(($(date +%s) - started))"
} >"$res/machine.tsv"

update=(-benchmarks BENCHMARKS.md)
[ "$quick" = 1 ] && update=()
"$work/bin/report" -dir "$res" "${update[@]}"
# The charts, from the same result files; a full run writes them to
# bench/charts/ and links them under the section it just wrote.
charts=bench/charts
[ "$quick" = 1 ] && charts=$res/charts
"$work/bin/chart" bench -dir "$res" -out "$charts" "${update[@]}"
[ "$quick" = 1 ] && log "charts of this smoke run in $charts (BENCH_KEEP=1 keeps them)"
log "done in $(($(date +%s) - started)) s"
