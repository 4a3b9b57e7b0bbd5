# Shared by bench/run.sh (make bench) and bench/fanout.sh (make
# bench-fanout); sourced after the script has defined die and log.

# find_postgres TOOL...: sets pgbin, the directory of the PostgreSQL server
# binaries (initdb on PATH may be a symlink), checks that each TOOL is there,
# and sets as, the prefix that runs the server as the postgres user when we
# are root (initdb and postgres refuse to run as root).
find_postgres() {
    local initdb t
    initdb=$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$initdb" ] || die "initdb not found; run scripts/setup"
    pgbin=$(dirname "$(readlink -f "$initdb")")
    for t in "$@"; do
        [ -x "$pgbin/$t" ] || die "$t not found (looked in $pgbin); run scripts/setup"
    done
    as=()
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user"
        command -v runuser >/dev/null 2>&1 || die "running as root needs runuser (util-linux)"
        as=(runuser -u postgres --)
    fi
}

# start_postgres LABEL PORT MAX_CONNECTIONS [SETTING...]: a throwaway cluster
# in $work/pg, on a unix socket there, with the settings every benchmark
# uses and then each SETTING ("name = value"); sets port, pg_started=1 (for
# the cleanup) and pgconf, the settings as the report prints them.
start_postgres() {
    local label=$1 max_connections=$3 s extra=""
    port=$2
    shift 3
    mkdir -p "$work/pg"
    [ ${#as[@]} -eq 0 ] || chown postgres: "$work" "$work/pg"
    chmod 700 "$work/pg"
    "${as[@]}" "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --no-locale >"$work/initdb.log" 2>&1 ||
        { cat "$work/initdb.log" >&2; die "initdb failed"; }
    {
        echo "# $label"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$work/pg'"
        echo "port = $port"
        echo "max_connections = $max_connections"
        echo "shared_buffers = 256MB"
        echo "synchronous_commit = on"
        echo "max_wal_size = 4GB"
        echo "checkpoint_timeout = 30min"
        for s in "$@"; do echo "$s"; done
    } >>"$work/pg/postgresql.conf"
    "${as[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w start >/dev/null ||
        { tail -n 20 "$work/pg/server.log" >&2; die "postgres did not start"; }
    pg_started=1
    for s in "$@"; do extra+=" ${s// = /=}"; done
    extra=${extra//\'/}
    pgconf="listen_addresses='' port=$port max_connections=$max_connections shared_buffers=256MB synchronous_commit=on fsync=on max_wal_size=4GB checkpoint_timeout=30min$extra; other settings default"
}

# machine_lines: the machine description both reports start with, as
# tab-separated name and value lines.
machine_lines() {
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'cpu\t%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'memory\t%s\n' "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    printf 'os\t%s\n' "$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
    printf 'postgres\t%s\n' "$("$pgbin/postgres" --version)"
    printf 'go\t%s\n' "$(go version | awk '{ print $3, $4 }')"
    printf 'pgmirror\t%s\n' "$(bin/pgmirror version 2>/dev/null | head -n 1)"
}

# proc_ticks PID: the CPU time PID has used, user plus system, in clock
# ticks (getconf CLK_TCK), from /proc/PID/stat; empty when PID is gone.
# With "all" as a second argument it adds the time of the children PID has
# reaped (cutime, cstime), so a parent counts its exited children too.
# The fields are counted after the last ')', as the command name may hold
# spaces: utime, stime, cutime, cstime are the 12th to 15th from there.
proc_ticks() {
    local s f
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    read -ra f <<<"${s##*) }"
    if [ "${2:-}" = all ]; then
        echo $((f[11] + f[12] + f[13] + f[14]))
    else
        echo $((f[11] + f[12]))
    fi
}

# postgres_ticks: the CPU time of the whole cluster in $work/pg, in clock
# ticks: the postmaster with the children it has reaped (exited backends,
# autovacuum workers) plus every live child (backends, the WAL writer, the
# checkpointer...). A pgmirror SET's cost is mostly here, not in the sidecar.
postgres_ticks() {
    local pm c t total
    pm=$(head -n 1 "$work/pg/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    total=$(proc_ticks "$pm" all)
    for c in $(pgrep -P "$pm"); do
        t=$(proc_ticks "$c")
        total=$((total + ${t:-0}))
    done
    echo "${total:-0}"
}
