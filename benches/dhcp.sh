#!/usr/bin/env bash
# DHCP throughput benchmark: rackboot against Kea, in one run, on the same
# network namespaces. A measurement, not a test: it exits 0 whatever the
# numbers are, non-zero only when the set-up fails.
#
# For each server it finds the highest DORA rate that perfdhcp completes with
# under 1 % loss, then prints both rates and the ratio rackboot/Kea. A third
# search, rackboot-sync, runs rackboot with [store] sync = "group" (every lease
# fdatasync'd before its ACK, power-loss safe) and prints its ratio to the
# default (page cache only): what that guarantee costs on this disk.
#
# Two more searches put every lease in PostgreSQL, committed before its ACK
# leaves: kea-pg (Kea's PostgreSQL lease backend) and rackboot-pg (rackboot
# with [store] engine = "postgres"), both on one scratch cluster this script
# starts (initdb in the temp dir, a Unix socket only, PostgreSQL's defaults:
# fsync and synchronous_commit on, so every commit is on disk). Kea runs with
# multi-threading on (KEA_PG_THREADS threads, 8 by default; 0 = Kea 2.2's
# default, one thread), which is how a database backend keeps several
# commits in flight; the memfile Kea keeps 2.2's defaults. Printed: the
# ratio rackboot-pg/kea-pg, and rackboot-pg/rackboot (SQLite, sync = "none"):
# what sharing a database costs.
#
#   perfdhcp -4 -g single -r RATE -R 50000 -p 10 -l 10.79.0.2 10.79.0.1
#
# perfdhcp runs in the client namespace rbb-cli as a relay (with -l <address>
# it sets giaddr to that address and listens on port 67 there); the server
# runs in rbb-srv, on the other end of a veth, with a /16 pool (~65k
# addresses, so 50000 clients fit). Server pinned to core 0, perfdhcp to
# core 1. PostgreSQL is pinned to core 0 too, at the servers' niceness: a
# server and its database share the server's core, and perfdhcp keeps its
# own, as in every other search.
#
# Every trial starts the server afresh on an empty lease store (Kea: a new
# memfile; rackboot: a new state dir; kea-pg: its database made again from a
# template kea-admin db-init filled once; rackboot-pg: its database made
# again empty, and rackboot makes its schema at start; then a CHECKPOINT, so
# no trial inherits another's dirty pages), so every rate is measured from the
# same state: 50000 clients, the first DISCOVER of each allocating a lease.
# A PostgreSQL trial's line also shows the leases its database holds bound
# once perfdhcp is done ("db") and the share of a core PostgreSQL used.
#
# The machines this runs on are shared and noisy (other builds, other
# cgroups on the same two cores), so:
# - the searches run interleaved, one trial of each in turn, and all the
#   servers meet the same spells of noise;
# - a trial that loses >= 1 % is run once more at the same rate, and fails
#   only if that one loses too;
# - the whole search runs ROUNDS times (2 by default, 1 with --quick), which
#   server goes first alternating, and each server's best round counts;
# - servers and perfdhcp run at nice -10 (BENCH_NICE=N to change).
# Each trial line shows the server's CPU use and the datagrams the kernel
# dropped for a full receive buffer on either side: "srv" the server fell
# behind, "cli" perfdhcp did.
#
# Usage: benches/dhcp.sh [--quick] [--rounds N]
#                        [--only S[,S...]]   S: kea|rackboot|rackboot-sync|kea-pg|rackboot-pg
#   --quick     a smoke run: 3-second trials, 15 % precision, one round.
#   --rounds N  run the searches N times (default 2); report each one's best.
#   --only S    measure only these servers, interleaved (e.g. kea-pg,rackboot-pg).
# Environment: TMPDIR (where lease stores and logs go; /tmp by default: a
# disk, as deployed), KEEP_TMP=1 keeps that dir, RACKBOOT_LOG as for
# rackboot (default here: warn, the level Kea logs at in this run, so both
# write the same kind of lines; per-packet lines are debug in rackboot anyway),
# KEA_PG_THREADS (above), RACKBOOT_PG_BIN (PostgreSQL's server binaries;
# default: the newest /usr/lib/postgresql/<version>/bin),
# RACKBOOT_BIN=path measures that binary and builds nothing (e.g. an older
# build, or one made elsewhere while the work tree is being edited).
# Otherwise rackboot is built with cargo build --release unless
# target/release/rackboot is newer than every source file; the run uses a
# copy of it.
#
# Needs root (namespaces, apt-get). Installs kea-dhcp4-server, kea-admin
# (which ships perfdhcp and kea-admin db-init), sqlite3 and postgresql with
# apt-get when they are missing. Traffic stays inside the two namespaces this
# script makes; they, the servers, the PostgreSQL cluster (stopped by its
# postmaster's PID) and the temp dir are removed on exit, also on failure.
set -euo pipefail

QUICK=0
ROUNDS=""
ONLY=""
while (($#)); do
    arg=$1; shift
    case "$arg" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=${1:-}; shift || true ;;
        --rounds=*) ROUNDS=${arg#--rounds=} ;;
        --only) ONLY=${1:-}; shift || true ;;
        --only=*) ONLY=${arg#--only=} ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "dhcp.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-$((QUICK ? 1 : 2))}
[[ $ROUNDS =~ ^[1-9]$ ]] || { echo "dhcp.sh: --rounds wants 1..9" >&2; exit 2; }
for name in ${ONLY//,/ }; do
    case $name in
        kea | rackboot | rackboot-sync | kea-pg | rackboot-pg) ;;
        *) echo "dhcp.sh: --only wants kea, rackboot, rackboot-sync, kea-pg or rackboot-pg, comma-separated" >&2; exit 2 ;;
    esac
done
# The servers measured, and which of them need what.
ALL_SERVERS=(kea rackboot rackboot-sync kea-pg rackboot-pg)
SERVERS=()
for name in "${ALL_SERVERS[@]}"; do [[ -z $ONLY || ",$ONLY," == *",$name,"* ]] && SERVERS+=("$name"); done
uses() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }   # NAME: is it measured?
NEED_RACKBOOT=0 NEED_PG=0
if uses rackboot || uses rackboot-sync || uses rackboot-pg; then NEED_RACKBOOT=1; fi
if uses kea-pg || uses rackboot-pg; then NEED_PG=1; fi
KEA_PG_THREADS=${KEA_PG_THREADS:-8}
[[ $KEA_PG_THREADS =~ ^[0-9]+$ ]] || { echo "dhcp.sh: KEA_PG_THREADS wants a number" >&2; exit 2; }

if ((QUICK)); then
    PERIOD=3          # seconds per trial
    START_RATE=2000   # first rate tried, doubled until loss >= 1 %
    PRECISION=15      # bisect until (bad - good) / good <= this many percent
else
    PERIOD=10
    START_RATE=1000
    PRECISION=5
fi
CLIENTS=50000
MAX_LOSS=1          # percent; a trial passes with loss strictly below this
MAX_RATE=64000      # stop doubling here: far past perfdhcp's own ceiling
MIN_RATE=125        # stop halving here
NICE=${BENCH_NICE:--10}  # servers and perfdhcp: ahead of builds on a shared machine
[[ $NICE =~ ^-?[0-9]+$ ]] || { echo "dhcp.sh: BENCH_NICE wants a number" >&2; exit 2; }

SRV_NS=rbb-srv
CLI_NS=rbb-cli
SRV_IF=rbb-s0
CLI_IF=rbb-c0
SRV_IP=10.79.0.1
CLI_IP=10.79.0.2
POOL_FIRST=10.79.1.0
POOL_LAST=10.79.255.254

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$SECONDS

die() { echo "dhcp.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (network namespaces, apt-get)"

# ---------------------------------------------------------------- cleanup --
TMP=""
SERVER_PID=""
SERVER_NAME=""
LOAD_PID=""
LOCK_FD=""

# stop_pid, netns_exists, del_netns, quiet_distro_kea, rcvbuf_errors
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

stop_processes() { # for bench_exit (benches/lib.sh)
    stop_pid "$LOAD_PID"
    stop_pid "$SERVER_PID"
    pg_stop   # PostgreSQL last: the servers were its clients
}
bench_traps

# One run at a time: the namespace names are fixed.
bench_lock dhcp

# ------------------------------------------------------------- packages --
need_pkgs=()
command -v kea-dhcp4 >/dev/null || need_pkgs+=(kea-dhcp4-server)
command -v perfdhcp >/dev/null || need_pkgs+=(kea-admin)  # Debian 12: /usr/sbin/perfdhcp is in kea-admin
command -v sqlite3 >/dev/null || need_pkgs+=(sqlite3)
((NEED_PG)) && ! pg_find_bin && need_pkgs+=(postgresql)
for tool in ip taskset timeout ss flock awk; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

if ((${#need_pkgs[@]})); then
    apt_install "${need_pkgs[@]}"
    [[ " ${need_pkgs[*]} " == *" kea-dhcp4-server "* ]] && quiet_distro_kea
fi
KEA=$(command -v kea-dhcp4) || die "kea-dhcp4 not found after install"
PERFDHCP=$(command -v perfdhcp) || die "perfdhcp not found after install (dpkg -S perfdhcp)"
KEA_VERSION=$("$KEA" -v 2>/dev/null | head -1)
KEA_ADMIN=""
if ((NEED_PG)); then
    pg_find_bin || die "PostgreSQL's server binaries not found after install (set RACKBOOT_PG_BIN)"
    # Debian's postgresql may have started its own cluster: not ours, left alone.
    KEA_ADMIN=$(command -v kea-admin) || die "kea-admin not found after install"
fi

# -------------------------------------------------------------- rackboot --
# Built unless target/release/rackboot is newer than every source file.
RACKBOOT_BUILT=$REPO/target/release/rackboot
RACKBOOT_VERSION=-
if ((NEED_RACKBOOT)); then
    rackboot_release "$REPO"
    RACKBOOT_VERSION=$(rackboot_version "$REPO")
fi

# ------------------------------------------------------------ namespaces --
stale_netns "$SRV_NS" "$CLI_NS"
TMP=$(mktemp -d -t rackboot-bench-dhcp.XXXXXX)   # under $TMPDIR, else /tmp
veth_pair "$SRV_NS" "$SRV_IF" "$CLI_NS" "$CLI_IF"
ip -n "$SRV_NS" addr add "$SRV_IP/16" dev "$SRV_IF"
ip -n "$CLI_NS" addr add "$CLI_IP/16" dev "$CLI_IF"

# ----------------------------------------------------------- server defs --
KDIR=$TMP/kea
RDIR=$TMP/rackboot
mkdir -p "$KDIR" "$RDIR"/{assets,bootenvs,scripts}
# A copy: a build in the work tree during the run must not swap the binary
# between trials.
RACKBOOT=$RDIR/rackboot
((NEED_RACKBOOT == 0)) || cp "$RACKBOOT_BUILT" "$RACKBOOT"
printf '[arch.bios]\nlocal = "exit"\n' >"$RDIR/bootenvs/discovery.toml"

cat >"$KDIR/kea-dhcp4.conf" <<EOF
{
  "Dhcp4": {
    "interfaces-config": { "interfaces": [ "$SRV_IF" ], "dhcp-socket-type": "udp" },
    "lease-database": { "type": "memfile", "persist": true, "name": "$KDIR/leases4.csv", "lfc-interval": 0 },
    "valid-lifetime": 3600,
    "subnet4": [ {
      "id": 1,
      "subnet": "10.79.0.0/16",
      "pools": [ { "pool": "$POOL_FIRST - $POOL_LAST" } ]
    } ],
    "dhcp-ddns": { "enable-updates": false },
    "loggers": [ {
      "name": "kea-dhcp4",
      "output_options": [ { "output": "$KDIR/kea-dhcp4.log" } ],
      "severity": "WARN"
    } ]
  }
}
EOF
# Kea's pid and lock files go to the temp dir, not /run/kea.
export KEA_PIDFILE_DIR=$KDIR KEA_LOCKFILE_DIR=$KDIR
ip netns exec "$SRV_NS" "$KEA" -t "$KDIR/kea-dhcp4.conf" >"$KDIR/config-check.log" 2>&1 ||
    { cat "$KDIR/config-check.log" >&2; die "kea-dhcp4 -t rejects the generated config"; }

cat >"$RDIR/rackboot.toml" <<EOF
state_dir = "$RDIR/state"
assets_dir = "$RDIR/assets"
bootenvs_dir = "$RDIR/bootenvs"
scripts_dir = "$RDIR/scripts"
[network]
interface = "$SRV_IF"
[dhcp]
lease_seconds = 3600
[[dhcp.subnet]]
cidr = "10.79.0.0/16"
ranges = [["$POOL_FIRST", "$POOL_LAST"]]
[tftp]
enabled = false
[http]
enabled = false
[dns]
enabled = false
EOF
# The same, durable against power loss: what [store] sync costs.
{ cat "$RDIR/rackboot.toml"; printf '[store]\nsync = "group"\n'; } >"$RDIR/rackboot-sync.toml"
if ((NEED_RACKBOOT)); then
    ip netns exec "$SRV_NS" "$RACKBOOT" check --config "$RDIR/rackboot.toml" >"$RDIR/config-check.log" 2>&1 ||
        { cat "$RDIR/config-check.log" >&2; die "rackboot check rejects the generated config (is main's [[dhcp.subnet]] schema in this build?)"; }
fi

# ------------------------------------------------------------ PostgreSQL --
# One scratch cluster for both PostgreSQL searches, on core 0 with the
# servers, at their niceness. Its folder is in the temp dir, which postgres
# (the group) may pass through to reach it.
KEA_DB=kea RB_DB=rackboot
if ((NEED_PG)); then
    chgrp postgres "$TMP"
    chmod 710 "$TMP"
    pg_start "$TMP/pg" 0 "$NICE"
    PG_VERSION=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
    # Kea's schema, once, in a template each kea-pg trial copies.
    pg_sql postgres "CREATE DATABASE kea_template" >/dev/null
    timeout 120 "$KEA_ADMIN" db-init pgsql -u postgres -n kea_template -h "$PG_DIR" >"$KDIR/db-init.log" 2>&1 ||
        { cat "$KDIR/db-init.log" >&2; die "kea-admin db-init pgsql failed"; }
    if ((KEA_PG_THREADS > 0)); then
        KEA_MT="{ \"enable-multi-threading\": true, \"thread-pool-size\": $KEA_PG_THREADS }"   # queue: Kea's default, 64
    else
        KEA_MT='{ "enable-multi-threading": false }'
    fi
    # The memfile config with the lease database, threads and log swapped.
    sed -e "s|\"lease-database\": .*|\"lease-database\": { \"type\": \"postgresql\", \"name\": \"$KEA_DB\", \"host\": \"$PG_DIR\", \"user\": \"postgres\" },\n    \"multi-threading\": $KEA_MT,|" \
        -e "s|$KDIR/kea-dhcp4.log|$KDIR/kea-pg.log|" "$KDIR/kea-dhcp4.conf" >"$KDIR/kea-pg.conf"
    ip netns exec "$SRV_NS" "$KEA" -t "$KDIR/kea-pg.conf" >"$KDIR/config-check-pg.log" 2>&1 ||
        { cat "$KDIR/config-check-pg.log" >&2; die "kea-dhcp4 -t rejects the generated PostgreSQL config"; }
    { cat "$RDIR/rackboot.toml"; printf '[store]\nengine = "postgres"\nurl = "%s"\nappliance = "bench-a"\n' "$(pg_url "$RB_DB")"; } >"$RDIR/rackboot-pg.toml"
    if uses rackboot-pg; then
        ip netns exec "$SRV_NS" "$RACKBOOT" check --config "$RDIR/rackboot-pg.toml" >"$RDIR/config-check-pg.log" 2>&1 ||
            { cat "$RDIR/config-check-pg.log" >&2; die "rackboot check rejects the generated [store] engine = \"postgres\" config"; }
    fi
fi

# The database a PostgreSQL server's trial starts on: made again (Kea's
# from the template), and a checkpoint. Done again when it stops, less the
# checkpoint, so a finished trial's tables are not vacuumed under the next.
fresh_database() { # NAME
    case $1 in
        kea-pg) pg_sql postgres "DROP DATABASE IF EXISTS $KEA_DB WITH (FORCE)" "CREATE DATABASE $KEA_DB TEMPLATE kea_template" ;;
        rackboot-pg) pg_sql postgres "DROP DATABASE IF EXISTS $RB_DB WITH (FORCE)" "CREATE DATABASE $RB_DB" ;;
    esac
}
drop_database() { # NAME
    case $1 in
        kea-pg) pg_sql postgres "DROP DATABASE IF EXISTS $KEA_DB WITH (FORCE)" ;;
        rackboot-pg) pg_sql postgres "DROP DATABASE IF EXISTS $RB_DB WITH (FORCE)" ;;
    esac
}
# Leases bound in a PostgreSQL server's database now.
db_bound() { # NAME
    case $1 in
        kea-pg) pg_sql "$KEA_DB" "SELECT count(*) FROM lease4 WHERE state = 0" 2>&1 || echo "?" ;;
        rackboot-pg) pg_sql "$RB_DB" "SELECT count(*) FROM leases WHERE state = 'bound'" 2>&1 || echo "?" ;;
    esac
}

# A fresh lease store, then the server in rbb-srv on core 0. Sets SERVER_PID.
start_server() { # NAME LOGFILE
    local name=$1 out=$2
    case $name in
        kea | kea-pg)
            rm -f "$KDIR"/leases4.csv* "$KDIR"/*.pid
            local conf=kea-dhcp4.conf
            if [[ $name == kea-pg ]]; then
                conf=kea-pg.conf
                fresh_database "$name"
                pg_sql postgres CHECKPOINT
            fi
            ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 "$KEA" -c "$KDIR/$conf" >"$out" 2>&1 &
            ;;
        rackboot | rackboot-sync | rackboot-pg)
            rm -rf "$RDIR/state"
            mkdir -p "$RDIR/state"
            if [[ $name == rackboot-pg ]]; then
                fresh_database "$name"
                pg_sql postgres CHECKPOINT
            fi
            RACKBOOT_LOG=${RACKBOOT_LOG:-warn} ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 "$RACKBOOT" serve --config "$RDIR/$name.toml" >"$out" 2>&1 &
            ;;
    esac
    SERVER_PID=$!   # ip netns exec and taskset exec: this is the server itself
    SERVER_NAME=$name
    # Ready when port 67 is bound in rbb-srv (bounded: 15 s).
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$out" >&2; die "$name exited at start-up"; }
        if ip netns exec "$SRV_NS" ss -Hlun 'sport = :67' 2>/dev/null | grep -q .; then
            return 0
        fi
        sleep 0.1
    done
    cat "$out" >&2
    die "$name did not bind port 67 within 15 s"
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
    [[ $SERVER_NAME == *-pg ]] && drop_database "$SERVER_NAME"
    SERVER_NAME=""
}

PERF_ARGS() { # RATE -> the perfdhcp argument list
    echo -4 -g single -r "$1" -R "$CLIENTS" -p "$PERIOD" -l "$CLI_IP" "$SRV_IP"
}

# ----------------------------------------------------------------- trial --
# One trial at RATE against a freshly started server. Sets LOSS (percent of
# DISCOVERs sent that did not end in an ACK received: the full DORA exchange),
# DONE (DORA/s completed = ACKs received / period) and SENT (DISCOVERs sent).
# CPU time (user + system, all threads) the server has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)

# CPU ticks (user + system) of the PostgreSQL server's processes, one
# "pid ticks" line each: the postmaster and its children (backends, writers).
pg_ticks() {
    local p
    [[ -n $PG_PID ]] || return 0
    for p in "$PG_PID" $(pgrep -P "$PG_PID" || true); do
        awk -v p="$p" '{ print p, $14 + $15 }' "/proc/$p/stat" 2>/dev/null || true
    done
}
# Share of a core PostgreSQL used between two pg_ticks samples over SECONDS
# (a process that appeared in between counts from zero; one that exited is lost).
pg_busy() { # BEFORE AFTER SECONDS
    awk -v secs="$3" -v hz="$CLK_TCK" '
        FNR == NR { t0[$1] = $2; next }
        { d += $2 - (($1 in t0) ? t0[$1] : 0) }
        END { printf "%d", 100 * d / hz / secs }' <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}

TRIAL_NO=0
trial() { # NAME RATE
    local name=$1 rate=$2 out rc
    TRIAL_NO=$((TRIAL_NO + 1))
    out=$TMP/trial-$TRIAL_NO-$name-$rate
    start_server "$name" "$out.server.log"
    local t0 c0 srv0 cli0 pg0 pg1
    [[ $name == *-pg ]] && pg0=$(pg_ticks)
    t0=$(date +%s.%N) c0=$(cpu_ticks "$SERVER_PID")
    srv0=$(rcvbuf_errors "$SRV_NS") cli0=$(rcvbuf_errors "$CLI_NS")
    # perfdhcp in the background so a signal reaches the trap at once;
    # `timeout` bounds it whatever happens.
    # shellcheck disable=SC2046
    ip netns exec "$CLI_NS" timeout -k 5 $((PERIOD + 30)) \
        nice -n "$NICE" taskset -c 1 "$PERFDHCP" $(PERF_ARGS "$rate") >"$out.perfdhcp" 2>&1 &
    LOAD_PID=$!
    rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    SRV_OVF=$(($(rcvbuf_errors "$SRV_NS") - srv0)) CLI_OVF=$(($(rcvbuf_errors "$CLI_NS") - cli0))
    # Share of a core the server used over the trial.
    local t1
    t1=$(date +%s.%N)
    BUSY=$(awk -v c0="$c0" -v c1="$(cpu_ticks "$SERVER_PID")" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
        'BEGIN { printf "%d", 100 * (c1 - c0) / hz / (t1 - t0) }')
    [[ $name == *-pg ]] && pg1=$(pg_ticks) &&
        PG_BUSY=$(pg_busy "$pg0" "$pg1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    # perfdhcp exits 3 when packets were dropped: a normal outcome here.
    if ((rc != 0 && rc != 3)); then
        stop_server
        cat "$out.perfdhcp" >&2
        die "perfdhcp failed (exit $rc) at rate $rate against $name"
    fi
    LAST_SERVER_LOG=$out.server.log
    # Kept running for the caller's checks (the rackboot store); stopped there.
    # Parse the per-exchange blocks: "***Statistics for: DISCOVER-OFFER***"
    # and "***Statistics for: REQUEST-ACK***", each with "sent packets: N",
    # "received packets: N".
    read -r SENT ACKED < <(awk '
        /Statistics for: DISCOVER-OFFER/ { ex = "DO" }
        /Statistics for: REQUEST-ACK/    { ex = "RA" }
        /^sent packets:/     { sent[ex] = $3 }
        /^received packets:/ { recv[ex] = $3 }
        END { printf "%d %d\n", sent["DO"], recv["RA"] }' "$out.perfdhcp")
    ((SENT > 0)) || { cat "$out.perfdhcp" >&2; stop_server; die "cannot read perfdhcp's statistics ($out.perfdhcp)"; }
    LOSS=$(awk -v s="$SENT" -v a="$ACKED" 'BEGIN { printf "%.2f", 100 * (s - a) / s }')
    DONE=$(awk -v a="$ACKED" -v p="$PERIOD" 'BEGIN { printf "%d", a / p }')
    DROPS=$(awk '/^drops ratio:/ { printf "%s%.1f", sep, $3; sep = "/" }' "$out.perfdhcp")
    PASS=$(awk -v l="$LOSS" -v m="$MAX_LOSS" 'BEGIN { print (l < m) ? 1 : 0 }')
    # Did perfdhcp send what was asked? Below 90 % it is the client's ceiling.
    CLIENT_BOUND=$(awk -v s="$SENT" -v r="$rate" -v p="$PERIOD" 'BEGIN { print (s < 0.9 * r * p) ? 1 : 0 }')
    # A PostgreSQL server's database: the leases bound in it now (the server
    # still runs; every ACKed one was committed before its ACK).
    DB_NOTE=""
    [[ $name == *-pg ]] && DB_NOTE="  db $(db_bound "$name"), postgres cpu $PG_BUSY %"
    printf '  %-13s %6d/s  DISCOVERs %6d  ACKs %6d  loss %6.2f %%  (DO/RA %-11s) cpu %3d %%  rcvbuf full srv/cli %5d/%-5d -> %5d DORA/s %s%s%s\n' \
        "$name" "$rate" "$SENT" "$ACKED" "$LOSS" "${DROPS:-?}" "$BUSY" "$SRV_OVF" "$CLI_OVF" "$DONE" \
        "$( ((PASS)) && echo ok || echo LOSS)" "$DB_NOTE" "$( ((CLIENT_BOUND)) && echo ' (perfdhcp could not send at this rate)' || true)" >&2
}

# A trial, and on loss >= 1 % the same rate once more (a noise spike on a
# shared machine should not end a search); the second result stands.
trial_confirmed() { # NAME RATE
    trial "$1" "$2"
    ((PASS)) && return
    stop_server
    trial "$1" "$2"
}

# After a rackboot trial: no address in two MACs' leases. Sets DUPS, LEASES.
rackboot_store_check() {
    local db=$RDIR/state/rackboot.db
    DUPS=$(sqlite3 "$db" "select ip, count(*) from leases group by ip having count(*)>1" 2>&1 || echo "query failed")
    LEASES=$(sqlite3 "$db" "select count(*) from leases" 2>&1 || echo "?")
    MACS_MULTI=$(sqlite3 "$db" "select count(*) from (select mac from leases group by mac having count(*)>1)" 2>&1 || echo "?")
}

# ---------------------------------------------------------------- search --
# Per server: double from START_RATE until a trial loses >= 1 %, then bisect
# between the last good and the first bad rate to PRECISION percent.
# The searches run interleaved, one trial of each in turn, so that all the
# servers meet the same spells of noise from whatever else the machine runs.
declare -A S_RATE S_GOOD S_BAD S_DONE S_BEST S_BOUND

search_step() { # NAME: one (confirmed) trial, and the search moves on
    local name=$1 rate=${S_RATE[$1]}
    trial_confirmed "$name" "$rate"
    ((DONE > PEAK_OF[$name])) && PEAK_OF[$name]=$DONE
    if ((PASS)); then
        ((DONE > S_BEST[$name])) && S_BEST[$name]=$DONE
        # The store of rackboot's best trial over all rounds, checked once
        # rackboot has stopped (it holds its database exclusively).
        stop_server
        if [[ $name == rackboot ]] && ((DONE > RB_CHECKED)); then
            RB_CHECKED=$DONE
            rackboot_store_check
            BEST_DUPS=$DUPS BEST_LEASES=$LEASES BEST_MACS_MULTI=$MACS_MULTI
            BEST_LOG=$LAST_SERVER_LOG
        fi
        search_passed "$name" "$rate" "$CLIENT_BOUND"
    else
        stop_server
        search_failed "$name" "$rate"
    fi
}

echo "DHCP rate search: kea-dhcp4 $KEA_VERSION vs rackboot $RACKBOOT_VERSION (RACKBOOT_LOG=${RACKBOOT_LOG:-warn});" \
    "$PERIOD s trials, precision $PRECISION %, $ROUNDS round(s)" >&2
echo "load: ip netns exec $CLI_NS nice -n $NICE taskset -c 1 perfdhcp $(PERF_ARGS RATE)" >&2

declare -A BEST_OF=() BOUND_OF=() ROUNDS_OF=() PEAK_OF=()
for name in "${ALL_SERVERS[@]}"; do BEST_OF[$name]=0 PEAK_OF[$name]=0; done
RB_CHECKED=0 BEST_DUPS="" BEST_LEASES="" BEST_MACS_MULTI="" BEST_LOG=""
servers=("${SERVERS[@]}")
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    echo "round $ROUND of $ROUNDS:" >&2
    # Who goes first alternates from round to round.
    if ((ROUND % 2)); then order=("${servers[@]}"); else order=(); for name in "${servers[@]}"; do order=("$name" "${order[@]}"); done; fi
    for name in "${order[@]}"; do search_init "$name"; done
    for ((step = 0; step < 40; step++)); do   # bounded: a search takes ~12 steps
        busy=0
        for name in "${order[@]}"; do
            ((S_DONE[$name])) && continue
            busy=1
            search_step "$name"
        done
        ((busy)) || break
    done
    for name in "${order[@]}"; do
        ROUNDS_OF[$name]="${ROUNDS_OF[$name]:-}${ROUNDS_OF[$name]:+ }${S_BEST[$name]}"
        if ((S_BEST[$name] > BEST_OF[$name])); then
            BEST_OF[$name]=${S_BEST[$name]} BOUND_OF[$name]=${S_BOUND[$name]}
        fi
    done
done
rm -f "$KDIR"/leases4.csv*
KEA_BEST=${BEST_OF[kea]} KEA_BOUND=${BOUND_OF[kea]:-}
RB_BEST=${BEST_OF[rackboot]} RB_BOUND=${BOUND_OF[rackboot]:-}
SYNC_BEST=${BEST_OF[rackboot-sync]} SYNC_BOUND=${BOUND_OF[rackboot-sync]:-}
KEAPG_BEST=${BEST_OF[kea-pg]} KEAPG_BOUND=${BOUND_OF[kea-pg]:-}
RBPG_BEST=${BEST_OF[rackboot-pg]} RBPG_BOUND=${BOUND_OF[rackboot-pg]:-}
# Kea logs its (not) multi-threading at WARN on every start: not a problem.
KEA_WARN=$(cat "$TMP"/trial-*-kea-[0-9]*.server.log "$KDIR/kea-dhcp4.log" 2>/dev/null |
    grep -E ' (WARN|ERROR|FATAL) ' | grep -vc DHCP4_MULTI_THREADING_INFO || true)
# With threads Kea also notes that it looks reservations up first: not a problem either.
KEAPG_WARN_LINES=$(cat "$TMP"/trial-*-kea-pg-*.server.log "$KDIR/kea-pg.log" 2>/dev/null |
    grep -E ' (WARN|ERROR|FATAL) ' | grep -v -e DHCP4_MULTI_THREADING_INFO -e DHCP4_RESERVATIONS_LOOKUP_FIRST_ENABLED || true)

# ----------------------------------------------------------------- report --
echo >&2
echo "rackboot's store after its best trial ($RB_BEST DORA/s):"
if [[ -n $BEST_LOG ]]; then
    echo "  leases: $BEST_LEASES; MACs holding more than one: $BEST_MACS_MULTI"
    if [[ -z $BEST_DUPS ]]; then
        echo "  select ip, count(*) from leases group by ip having count(*)>1: (empty: no address handed to two MACs)"
    else
        echo "  select ip, count(*) from leases group by ip having count(*)>1:"
        sed 's/^/    /' <<<"$BEST_DUPS" | head -20
    fi
    echo "  its log: $(grep -c . "$BEST_LOG") lines, $(grep -c -E ' WARN | ERROR ' "$BEST_LOG" || true) WARN/ERROR;" \
        "NAKs logged: $(grep -ci 'nak' "$BEST_LOG" || true)"
    grep -E ' WARN | ERROR ' "$BEST_LOG" | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /' || true
fi
echo "kea-dhcp4 WARN/ERROR log lines over all its trials (less its start-up note): $KEA_WARN"
if ((NEED_PG)); then
    # What went wrong under PostgreSQL load, if anything: each server's and
    # the database's own complaints, over all their trials.
    echo "kea-pg WARN/ERROR log lines over all its trials (less its start-up notes): $(grep -c . <<<"$KEAPG_WARN_LINES" || true)"
    [[ -z $KEAPG_WARN_LINES ]] || sed -E 's/^[^ ]+ +[^ ]+ +//; s/\[[^]]*\] //' <<<"$KEAPG_WARN_LINES" | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
    if uses rackboot-pg; then
        rbpg_lines=$(cat "$TMP"/trial-*-rackboot-pg-*.server.log 2>/dev/null | grep -E ' (WARN|ERROR) ' || true)
        echo "rackboot-pg WARN/ERROR log lines over all its trials: $(grep -c . <<<"$rbpg_lines" || true)"
        [[ -z $rbpg_lines ]] || sed -E 's/^[^ ]+ +//' <<<"$rbpg_lines" | sort | uniq -c | sort -rn | head -8 | sed 's/^/    /'
    fi
    pg_lines=$(grep -E '(ERROR|FATAL|PANIC|WARNING): ' "$PG_DIR/server.log" 2>/dev/null | grep -v 'terminating connection due to administrator command' || true)
    echo "PostgreSQL $PG_VERSION ERROR/FATAL/WARNING log lines: $(grep -c . <<<"$pg_lines" || true) ($PG_DIR/server.log)"
    [[ -z $pg_lines ]] || sed -E 's/^[^ ]+ [^ ]+ [^ ]+ //' <<<"$pg_lines" | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
fi
peaks="" bests=""
for name in "${ALL_SERVERS[@]}"; do
    peaks+="${peaks:+; }$name ${PEAK_OF[$name]}"
    bests+="${bests:+; }$name ${ROUNDS_OF[$name]:--}"
done
echo "most DORA/s completed in any trial, whatever its loss: $peaks"
if ((ROUNDS > 1)); then
    echo "best of each round: $bests"
fi
echo
echo "DHCP DORA/s (<$MAX_LOSS % loss), perfdhcp relayed, /16 pool, server on core 0$( ((QUICK)) && echo ', --quick' || true)"
printf '  %-21s %6d%s\n' "kea-dhcp4 (memfile)" "$KEA_BEST" "${KEA_BOUND:+  ($KEA_BOUND)}"
printf '  %-21s %6d%s\n' "rackboot" "$RB_BEST" "${RB_BOUND:+  ($RB_BOUND)}"
if ((KEA_BEST > 0)); then
    printf '  %-21s %6s\n' "ratio rackboot/kea" "$(awk -v r="$RB_BEST" -v k="$KEA_BEST" 'BEGIN { printf "%.2f", r / k }')"
else
    printf '  %-21s %6s\n' "ratio rackboot/kea" "n/a"
fi
printf '  %-21s %6d%s\n' "rackboot sync=group" "$SYNC_BEST" "${SYNC_BOUND:+  ($SYNC_BOUND)}"
SYNC_R=$(awk -v s="$SYNC_BEST" -v r="$RB_BEST" 'BEGIN { if (r > 0 && s > 0) printf "%.2f", s / r; else print "n/a" }')
printf '  %-21s %6s\n' "ratio sync=group/none" "$SYNC_R"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
met() { awk -v r="$1" -v t="$2" 'BEGIN { print (r != "n/a" && r >= t) ? "yes" : "no" }'; }
PG_KEA_R=$(ratio "$RBPG_BEST" "$KEAPG_BEST")
PG_RB_R=$(ratio "$RBPG_BEST" "$RB_BEST")
echo
echo "DHCP DORA/s, PostgreSQL store (every lease committed before its ACK), PostgreSQL ${PG_VERSION:-(not run)} on core 0 too"
printf '  %-36s %6d%s\n' "kea-dhcp4 (postgresql)" "$KEAPG_BEST" "${KEAPG_BOUND:+  ($KEAPG_BOUND)}"
printf '  %-36s %6d%s\n' "rackboot-pg" "$RBPG_BEST" "${RBPG_BOUND:+  ($RBPG_BOUND)}"
printf '  %-36s %6s   (target >= 3x)\n' "ratio rackboot-pg/kea-pg" "$PG_KEA_R"
printf '  %-36s %6s   (target >= 0.5x)\n' "ratio rackboot-pg/rackboot (SQLite)" "$PG_RB_R"
echo "  ($((SECONDS - T0)) s)"
# For benches/run.sh's table: ROW|what|peer|tool|peer|rackboot|ratio|target|met
R=$(awk -v r="$RB_BEST" -v k="$KEA_BEST" 'BEGIN { if (k > 0) printf "%.2f", r / k; else print "n/a" }')
echo "ROW|DHCP DORA/s, < $MAX_LOSS % loss|kea-dhcp4 (memfile)|perfdhcp|$KEA_BEST|$RB_BEST|$R|>= 1.0x|$(awk -v r="$R" 'BEGIN { print (r != "n/a" && r >= 1.0) ? "yes" : "no" }')"
# The peer column is rackboot itself with the default sync = "none": a cost, no target.
echo "ROW|DHCP DORA/s with [store] sync = \"group\" (fdatasync before each ACK)|rackboot sync=none|perfdhcp|$RB_BEST|$SYNC_BEST|$SYNC_R|measured, no target|-"
echo "ROW|DHCP DORA/s, PostgreSQL store (every lease committed before its ACK)|kea-dhcp4 (postgresql)|perfdhcp|$KEAPG_BEST|$RBPG_BEST|$PG_KEA_R|>= 3x|$(met "$PG_KEA_R" 3)"
echo "ROW|DHCP DORA/s, PostgreSQL store (every lease committed before its ACK)|rackboot (SQLite)|perfdhcp|$RB_BEST|$RBPG_BEST|$PG_RB_R|>= 0.5x|$(met "$PG_RB_R" 0.5)"
exit 0
