# Shared by the scripts in benches/ (sourced, not run): the lock, traps,
# build, namespaces and veth a benchmark sets up, and ending what it made.
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
# is newer than every source file.
rackboot_release() { # REPO
    local newest_src
    RACKBOOT_BUILT=$1/target/release/rackboot
    newest_src=$(find "$1/src" "$1/Cargo.toml" "$1/Cargo.lock" -type f -newer "$RACKBOOT_BUILT" 2>/dev/null | head -1 || true)
    if [[ ! -x $RACKBOOT_BUILT || -n $newest_src ]]; then
        echo "building rackboot (cargo build --release) ..." >&2
        (cd "$1" && cargo build --release --locked --quiet) || die "cargo build --release failed"
    fi
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
