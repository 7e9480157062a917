# Shared by the scripts in benches/ (sourced, not run): ending the processes
# and namespaces a benchmark made. Every wait is bounded.

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

del_netns() { # NS: kill what still runs in it (only ours: we made it), delete it
    local ns=$1 pid
    netns_exists "$ns" || return 0
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
}

del_netns() { # NS: kill what still runs in it (only ours: we made it), delete it
    local ns=$1 pid
    netns_exists "$ns" || return 0
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
}
