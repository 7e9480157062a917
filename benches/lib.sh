# Shared by the scripts in benches/ (sourced, not run): the lock, traps,
# build, namespaces and veth a benchmark sets up, what the DHCP benchmarks
# share (the distro's Kea service kept quiet, UDP receive-buffer drops), a
# scratch PostgreSQL cluster, and ending what it made.
# The sourcing script defines die() and stop_processes() (stops the servers
# and load generators it started). Every wait is bounded.

# One run of a benchmark at a time: its namespace names are fixed.
bench_lock() { # NAME
    exec {LOCK_FD}>"/run/lock/rackboot-bench-$1.lock"
    flock -n "$LOCK_FD" || die "another benches/$1.sh is running"
}

# bench_exit on every exit; a signal exits with its conventional status.
bench_traps() {
    trap bench_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# Ends the script's processes, then the namespaces and temp dir this run
# made: only once TMP is set, so a run that found another's namespaces
# leaves them alone. KEEP_TMP=1 keeps the temp dir.
bench_exit() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_processes
    if [[ -n ${TMP:-} ]]; then
        del_netns "$CLI_NS"
        del_netns "$SRV_NS"
        if [[ -n ${KEEP_TMP:-} ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
    fi
    exit "$rc"
}

# Sets RACKBOOT_BUILT to REPO's release binary, building it first unless it
# is newer than every source file. With RACKBOOT_BIN set in the environment,
# that binary instead, and nothing is built (another build, an older commit,
# or one built elsewhere while the work tree is being edited).
rackboot_release() { # REPO
    local newest_src
    if [[ -n ${RACKBOOT_BIN:-} ]]; then
        RACKBOOT_BUILT=$RACKBOOT_BIN
        [[ -x $RACKBOOT_BUILT && -f $RACKBOOT_BUILT ]] || die "RACKBOOT_BIN=$RACKBOOT_BIN is not an executable file"
        return 0
    fi
    RACKBOOT_BUILT=$1/target/release/rackboot
    newest_src=$(find "$1/src" "$1/Cargo.toml" "$1/Cargo.lock" -type f -newer "$RACKBOOT_BUILT" 2>/dev/null | head -1 || true)
    if [[ ! -x $RACKBOOT_BUILT || -n $newest_src ]]; then
        echo "building rackboot (cargo build --release) ..." >&2
        (cd "$1" && cargo build --release --locked --quiet) || die "cargo build --release failed"
    fi
}

# The head of a rackboot.toml for a bench site in DIR (its state, assets,
# bootenvs and scripts folders) serving on interface IF at address IP; the
# caller appends its own tables.
rackboot_toml_head() { # DIR IF IP
    cat <<EOF
state_dir = "$1/state"
assets_dir = "$1/assets"
bootenvs_dir = "$1/bootenvs"
scripts_dir = "$1/scripts"
[network]
interface = "$2"
address = "$3"
EOF
}

# Installs the Debian packages named (apt-get update only if the install
# fails without it: the lists may be stale or absent on a fresh machine).
apt_install() { # PKG...
    echo "installing $* ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q "$@" >/dev/null || die "apt-get install $* failed"
    }
}

stop_pid() { # PID: TERM, up to 10 s, then KILL
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

netns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# Removes namespaces a killed run left behind (the caller holds the lock);
# one with processes in it is not ours to touch.
stale_netns() { # NS...
    local ns
    for ns in "$@"; do
        netns_exists "$ns" || continue
        [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] ||
            die "namespace $ns exists with processes in it; not touching it"
        ip netns del "$ns"
    done
}

# Makes both namespaces and a veth pair between them, loopback and both
# ends up, and waits (up to 5 s) for carrier. Addresses are the caller's.
veth_pair() { # SRV_NS SRV_IF CLI_NS CLI_IF
    local i
    ip netns add "$1"
    ip netns add "$3"
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
    ip -n "$1" link set lo up
    ip -n "$3" link set lo up
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
    for ((i = 0; i < 50; i++)); do
        ip -n "$1" link show dev "$2" | grep -q LOWER_UP &&
            ip -n "$3" link show dev "$4" | grep -q LOWER_UP && return 0
        sleep 0.1
    done
    die "veth $2/$4 has no carrier"
}

del_netns() { # NS: kill what still runs in it (only ours: we made it), delete it
    local ns=$1 pid
    netns_exists "$ns" || return 0
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
}

# What to call the rackboot a run measures: RACKBOOT_BIN's path when set,
# else the work tree's commit (git describe). After rackboot_release.
rackboot_version() { # REPO
    if [[ -n ${RACKBOOT_BIN:-} ]]; then
        echo "$RACKBOOT_BIN"
    else
        git -C "$1" describe --always --dirty 2>/dev/null || echo unknown
    fi
}

# --------------------------------------------------------------- DHCP --
# The distro's kea-dhcp4 service: stopped and disabled, whether or not the
# package started it (policy-rc.d may have refused). Both systemd and not.
quiet_distro_kea() {
    local pidfile=/run/kea/kea-dhcp4.kea-dhcp4.pid pid
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl disable --now kea-dhcp4-server >/dev/null 2>&1 || true
    else
        command -v systemctl >/dev/null && systemctl disable kea-dhcp4-server >/dev/null 2>&1 || true
        command -v update-rc.d >/dev/null && update-rc.d kea-dhcp4-server disable >/dev/null 2>&1 || true
        [[ -x /etc/init.d/kea-dhcp4-server ]] && /etc/init.d/kea-dhcp4-server stop >/dev/null 2>&1 || true
    fi
    if [[ -r $pidfile ]]; then
        pid=$(cat "$pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == kea-dhcp4 ]]; then
            stop_pid "$pid"
        fi
    fi
}

# UDP datagrams the kernel dropped in namespace NS for a full socket buffer:
# on the server side the server fell behind, on the client side perfdhcp did.
rcvbuf_errors() {
    ip netns exec "$1" cat /proc/net/snmp | awk '
        $1 == "Udp:" && !h { for (i = 2; i <= NF; i++) col[$i] = i; h = 1; next }
        $1 == "Udp:" && h  { print $col["RcvbufErrors"]; exit }'
}

# ------------------------------------------------------ scratch PostgreSQL --
# One throwaway cluster per run, in a folder of the run's temp dir, on a Unix
# socket only (listen_addresses = ''; a socket file reaches every network
# namespace), with PostgreSQL's defaults otherwise: fsync and
# synchronous_commit on, so a commit is on disk. initdb and the server refuse
# root: both run as `postgres`, which owns the folder. The caller stops it
# with pg_stop (from stop_processes) before the temp dir goes.
PG_BIN=""
PG_DIR=""
PG_PID=""

# The folder of PostgreSQL's server binaries: RACKBOOT_PG_BIN, else the
# newest /usr/lib/postgresql/<version>/bin (as rackboot's scratch cluster).
pg_find_bin() {
    local d best="" v bestv=-1
    if [[ -n ${RACKBOOT_PG_BIN:-} ]]; then
        PG_BIN=$RACKBOOT_PG_BIN
    else
        for d in /usr/lib/postgresql/*/bin; do
            [[ -x $d/initdb ]] || continue
            v=$(basename "$(dirname "$d")")
            [[ $v =~ ^[0-9]+$ ]] && ((v > bestv)) && { bestv=$v; best=$d; }
        done
        PG_BIN=$best
    fi
    [[ -n $PG_BIN && -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]]
}

# initdb in DIR (made here, given to postgres; its parent must let postgres
# through), then the server, started by pg_ctl with the affinity and niceness
# given (its backends inherit both), waited for (30 s at most). Sets PG_DIR
# (also the socket folder, libpq's host) and PG_PID (the postmaster's PID,
# from postmaster.pid: pg_ctl detaches it).
pg_start() { # DIR CORES NICE
    local dir=$1 cores=$2 nice=$3 rc=0 i
    id postgres >/dev/null 2>&1 || die "no postgres user to run PostgreSQL as (root may not)"
    ((${#dir} <= 90)) || die "$dir: too long a path for PostgreSQL's socket (TMPDIR)"
    mkdir -p "$dir"
    chown postgres: "$dir"
    chmod 700 "$dir"
    PG_DIR=$dir
    timeout 120 runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    timeout 60 taskset -c "$cores" nice -n "$nice" runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" \
        -l "$dir/server.log" -w -t 30 -o "-k $dir -c listen_addresses=''" start >"$dir/pg_ctl.log" 2>&1 || rc=$?
    # The postmaster's PID, also when pg_ctl gave up waiting for it.
    for ((i = 0; i < 20; i++)); do
        PG_PID=$(head -1 "$dir/data/postmaster.pid" 2>/dev/null || true)
        [[ $PG_PID =~ ^[0-9]+$ ]] && break
        PG_PID=""
        ((rc == 0)) || break
        sleep 0.1
    done
    if ((rc != 0)) || [[ -z $PG_PID ]]; then
        cat "$dir/pg_ctl.log" "$dir/server.log" >&2 2>/dev/null || true
        die "PostgreSQL did not start (pg_ctl exit $rc)"
    fi
}

# A fast shutdown (SIGINT: clients cut off) of the postmaster by its PID, up
# to 10 s, then SIGKILL. Not our child (pg_ctl detached it): polled, not waited.
pg_stop() {
    local i
    [[ -n $PG_PID ]] || return 0
    if [[ $(cat "/proc/$PG_PID/comm" 2>/dev/null) == postgres ]]; then
        kill -INT "$PG_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$PG_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$PG_PID" 2>/dev/null || true
    fi
    PG_PID=""
}

# libpq's connection string for DB on the scratch cluster.
pg_url() { # DB
    echo "host=$PG_DIR port=5432 user=postgres dbname=$1"
}

# SQL commands in DB, each sent on its own (so CREATE DATABASE may be one),
# stopping at the first error, bounded (60 s); prints bare values (-At).
pg_sql() { # DB SQL...
    local db=$1 sql args=()
    shift
    for sql in "$@"; do args+=(-c "$sql"); done
    PGOPTIONS="-c client_min_messages=warning" timeout 60 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$PG_DIR" -U postgres -d "$db" "${args[@]}"
}

# The DHCP rate search benches/dhcp.sh and benches/fleet.sh run, per KEY (a
# server, or server,size): from START_RATE, doubled after each trial under 1 %
# loss (up to MAX_RATE) and halved after each one over it (down to MIN_RATE),
# then bisected (on a 50 DORA/s grid) until the last good and first bad rate
# are within PRECISION %. The caller declares the maps
#   declare -A S_RATE S_GOOD S_BAD S_DONE S_BEST S_BOUND
# sets those four numbers, and after each trial of S_RATE[KEY] calls
# search_passed or search_failed; the search is over once S_DONE[KEY] is 1.
# shellcheck disable=SC2034 # the S_* maps are the sourcing script's
search_init() { # KEY
    S_RATE[$1]=$START_RATE S_GOOD[$1]=0 S_BAD[$1]=0 S_DONE[$1]=0 S_BEST[$1]=0 S_BOUND[$1]=""
}

# The next rate between good and bad, or done when they are close enough.
# shellcheck disable=SC2034 # the S_* maps are the sourcing script's
search_bisect() { # KEY
    local key=$1 good=${S_GOOD[$1]} bad=${S_BAD[$1]} mid
    mid=$(((good + bad) / 2 / 50 * 50))
    if ((100 * (bad - good) <= PRECISION * good || mid <= good || mid >= bad)); then
        S_DONE[$key]=1
    else
        S_RATE[$key]=$mid
    fi
}

# A trial at RATE lost under 1 %; CLIENT_BOUND 1: perfdhcp could not send at
# that rate, so no higher rate is worth asking for.
# shellcheck disable=SC2034 # the S_* maps are the sourcing script's
search_passed() { # KEY RATE CLIENT_BOUND
    local key=$1 rate=$2
    S_GOOD[$key]=$rate
    if (($3)); then
        S_BOUND[$key]="perfdhcp-bound" S_DONE[$key]=1
    elif ((S_BAD[$key] == 0)); then
        if ((rate * 2 <= MAX_RATE)); then S_RATE[$key]=$((rate * 2)); else S_DONE[$key]=1; fi
    else
        search_bisect "$key"
    fi
}

# shellcheck disable=SC2034 # the S_* maps are the sourcing script's
search_failed() { # KEY RATE
    local key=$1 rate=$2
    S_BAD[$key]=$rate
    if ((S_GOOD[$key] == 0)); then
        if ((rate / 2 >= MIN_RATE)); then S_RATE[$key]=$((rate / 2)); else S_DONE[$key]=1; fi
    else
        search_bisect "$key"
    fi
}
