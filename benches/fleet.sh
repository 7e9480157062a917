#!/usr/bin/env bash
# DHCP fleet-size curve: rackboot against Kea with N node records (Kea: N
# host reservations) already in place, for N in 0, 10000, 100000, 1000000.
# A measurement, not a test: it exits 0 whatever the numbers are, non-zero
# only when the set-up fails.
#
# The fleet (benches/fleet.py makes it, the same for both servers): record i
# has MAC 02:fb:<i>, hostname fleet-<i>, a fixed address from 10.97.0.1 up
# (inside the subnet 10.96.0.0/11, outside the dynamic range
# 10.96.1.0 - 10.96.255.254 perfdhcp's clients get theirs from, so no address
# is both) and, in rackboot, the label rack=r<i/40>.
#
# First each size in turn is made ready and measured at rest:
#  1. rackboot (release build, SQLite store) is started on a fresh state dir
#     with its API on, and given the fleet by POST /api/v1/nodes/import,
#     IMPORT_BATCH (20000) records a request; once /metrics says nothing is
#     unsaved it is stopped, and that state dir is the size's snapshot: every
#     later start of rackboot at this size is on a fresh copy of it, with
#     HTTP, TFTP and DNS off as in dhcp.sh. Kea gets a config file with the
#     same N reservations (MAC -> the same address, and the hostname) in its
#     subnet's "reservations", and a fresh memfile at every start.
#  2. Each server is started once on its own: "start" is the time from
#     launching the process to the first DHCPOFFER it sends to a relayed
#     DISCOVER (a probe in the client namespace sends one every 5 ms from
#     before the launch), and "RSS at rest" its VmRSS (/proc/PID/status)
#     SETTLE (3) seconds after that first OFFER.
# Then:
#  3. The rate search of benches/dhcp.sh, one search per server and size, all
#     of them interleaved (one trial each in turn, the order reversed every
#     round), so every size and both servers meet the same spells of noise:
#     the highest DORA/s perfdhcp completes with under 1 % loss, 50000 new
#     random MACs (none of them in the fleet), perfdhcp a relay in rbf-cli
#     on core 1, the server in rbf-srv on core 0, both at nice -10, every
#     trial on a freshly started server (so every trial adds a start time;
#     the start reported is the median of all of a server's starts at the
#     size).
#  4. At each best rate, one more trial with perfdhcp -x t, which prints
#     when each DISCOVER and REQUEST left and its answer came back: p99 is
#     computed here from those (perfdhcp itself prints only min, avg, max
#     and std deviation), for DISCOVER->OFFER and REQUEST->ACK apart
#     (perfdhcp does not say which REQUEST followed which OFFER); avg is
#     perfdhcp's. Like a search trial, it is run again once if it loses
#     >= 1 % (the one that lost less stands). "RSS after load" is the
#     server's VmRSS at the end of that trial.
# Then a table per size (rate, p99, RSS at rest and after load, start, for
# both), and rows for benches/run.sh: per size the rates (ratio
# rackboot/Kea), rackboot's rate at 100000 records over its rate at 10000
# (target: within 10 %; with 1000 instead of 10000 if that is the size
# given), and RSS per record: what one more record costs, (RSS at rest with
# N - RSS at rest with the size before) / (the difference) (target <= 300 B;
# Kea's per reservation beside it), and (RSS at rest with N - RSS at rest
# with 0) / N, which also counts what grows once with the first records (the
# database's page cache, the allocator's arenas). Kea's own ratio across
# sizes is printed beside rackboot's as a yardstick.
#
# rackboot's [dhcp] rate_limit_per_relay (packets a second through one relay,
# default 50000, bursts of twice that) would cap the search: perfdhcp is one
# relay sending two packets an exchange, so 25000 DORA/s sustained, about
# 30000 over a 10-second trial with the burst. It is 0 (no limit) in this
# script's config, so the limit is not what is measured. rate_limit_per_mac
# keeps its default (20 a second): a perfdhcp client sends two packets.
#
# Usage: benches/fleet.sh [--quick] [--sizes N,N,...] [--rounds N]
#                         [--only kea|rackboot]
#   --sizes L   fleet sizes (default 0,10000,100000,1000000); 0 is needed
#               for RSS per record. The 1000000 size takes a while (its
#               import, and every start of either server).
#   --quick     a smoke run: 3-second trials, 15 % precision, one round.
#   --rounds N  run every search N times (default 2); report each one's best.
#   --only S    measure one server only (while working on this script).
# Environment: TMPDIR (state dirs, snapshots, configs and logs; /tmp by
# default; every size's snapshot and Kea config stay until the end, about
# 1 GB with 1000000, and rackboot's state is a copy of one of them),
# KEEP_TMP=1 keeps that dir, RACKBOOT_LOG (default warn, as Kea's WARN),
# BENCH_NICE (default -10), IMPORT_BATCH (records per import request, 20000),
# START_TIMEOUT (seconds a start may take to its first OFFER, 600),
# RACKBOOT_BIN=path measures that binary and builds nothing; otherwise
# rackboot is built with cargo build --release unless target/release/rackboot
# is newer than every source file. The run uses a copy of it.
#
# Needs root (namespaces, apt-get), python3. Installs kea-dhcp4-server,
# kea-admin (perfdhcp) and sqlite3 with apt-get when they are missing.
# Traffic stays inside the two namespaces this script makes; they, the
# servers and the temp dir are removed on exit, also on failure.
set -euo pipefail

QUICK=0
ROUNDS=""
ONLY=""
SIZES_ARG=0,10000,100000,1000000
while (($#)); do
    arg=$1; shift
    case "$arg" in
        --quick) QUICK=1 ;;
        --sizes) SIZES_ARG=${1:-}; shift || true ;;
        --sizes=*) SIZES_ARG=${arg#--sizes=} ;;
        --rounds) ROUNDS=${1:-}; shift || true ;;
        --rounds=*) ROUNDS=${arg#--rounds=} ;;
        --only) ONLY=${1:-}; shift || true ;;
        --only=*) ONLY=${arg#--only=} ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "fleet.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-$((QUICK ? 1 : 2))}
[[ $ROUNDS =~ ^[1-9]$ ]] || { echo "fleet.sh: --rounds wants 1..9" >&2; exit 2; }
case $ONLY in
    "") SERVERS=(rackboot kea) ;;
    kea | rackboot) SERVERS=("$ONLY") ;;
    *) echo "fleet.sh: --only wants kea or rackboot" >&2; exit 2 ;;
esac
[[ $SIZES_ARG =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "fleet.sh: --sizes wants numbers, comma-separated (e.g. 0,10000)" >&2; exit 2; }
# Ascending, each once.
mapfile -t SIZES < <(tr , '\n' <<<"$SIZES_ARG" | sed 's/^0*\([0-9]\)/\1/' | sort -n -u)
for n in "${SIZES[@]}"; do
    ((n <= 2000000)) || { echo "fleet.sh: at most 2000000 records (the address plan)" >&2; exit 2; }
done
IMPORT_BATCH=${IMPORT_BATCH:-20000}
START_TIMEOUT=${START_TIMEOUT:-600}
[[ $IMPORT_BATCH =~ ^[1-9][0-9]*$ && $START_TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
    { echo "fleet.sh: IMPORT_BATCH and START_TIMEOUT want positive numbers" >&2; exit 2; }

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
SETTLE=3            # seconds after the first OFFER until "RSS at rest"
NICE=${BENCH_NICE:--10}
[[ $NICE =~ ^-?[0-9]+$ ]] || { echo "fleet.sh: BENCH_NICE wants a number" >&2; exit 2; }

SRV_NS=rbf-srv
CLI_NS=rbf-cli
SRV_IF=rbf-s0
CLI_IF=rbf-c0
SRV_IP=10.96.0.1
CLI_IP=10.96.0.2
SUBNET=10.96.0.0/11   # the fleet's fixed addresses: 10.97.0.1 upwards (fleet.py)
POOL_FIRST=10.96.1.0
POOL_LAST=10.96.255.254
TOKEN=rbfleet-admin-$$-$RANDOM$RANDOM

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLEET_PY=$REPO/benches/fleet.py
T0=$SECONDS

die() { echo "fleet.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (network namespaces, apt-get)"

# ---------------------------------------------------------------- cleanup --
TMP=""
SERVER_PID=""
LOAD_PID=""
PROBE_PID=""
HELPER_PID=""
LOCK_FD=""

# stop_pid, netns_exists, del_netns, quiet_distro_kea, rcvbuf_errors
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

stop_processes() { # for bench_exit (benches/lib.sh)
    stop_pid "$LOAD_PID"
    stop_pid "$PROBE_PID"
    stop_pid "$HELPER_PID"
    stop_pid "$SERVER_PID"
}
bench_traps

# One run at a time: the namespace names are fixed.
bench_lock fleet

# ------------------------------------------------------------- packages --
need_pkgs=()
command -v kea-dhcp4 >/dev/null || need_pkgs+=(kea-dhcp4-server)
command -v perfdhcp >/dev/null || need_pkgs+=(kea-admin)  # Debian 12: /usr/sbin/perfdhcp is in kea-admin
command -v sqlite3 >/dev/null || need_pkgs+=(sqlite3)
for tool in ip taskset timeout flock awk sort curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if ((${#need_pkgs[@]})); then
    apt_install "${need_pkgs[@]}"
    [[ " ${need_pkgs[*]} " == *" kea-dhcp4-server "* ]] && quiet_distro_kea
fi
KEA=$(command -v kea-dhcp4) || die "kea-dhcp4 not found after install"
PERFDHCP=$(command -v perfdhcp) || die "perfdhcp not found after install (dpkg -S perfdhcp)"
KEA_VERSION=$("$KEA" -v 2>/dev/null | head -1)
# The interpreter itself, not a wrapper (pyenv's shims are shell scripts).
PY=$(python3 -c 'import sys; print(sys.executable)')
[[ -x $PY ]] || die "cannot find python3's executable"

# -------------------------------------------------------------- rackboot --
rackboot_release "$REPO"
RACKBOOT_VERSION=$(rackboot_version "$REPO")

# ------------------------------------------------------------ namespaces --
stale_netns "$SRV_NS" "$CLI_NS"
TMP=$(mktemp -d -t rackboot-bench-fleet.XXXXXX)   # under $TMPDIR, else /tmp
veth_pair "$SRV_NS" "$SRV_IF" "$CLI_NS" "$CLI_IF"
ip -n "$SRV_NS" addr add "$SRV_IP/11" dev "$SRV_IF"
ip -n "$CLI_NS" addr add "$CLI_IP/11" dev "$CLI_IF"

# ----------------------------------------------------------------- files --
KDIR=$TMP/kea
RDIR=$TMP/rackboot
mkdir -p "$KDIR" "$RDIR"/{assets,bootenvs,scripts}
RACKBOOT=$RDIR/rackboot
cp "$RACKBOOT_BUILT" "$RACKBOOT"   # a build during the run must not swap the binary
printf '[arch.bios]\nlocal = "exit"\n' >"$RDIR/bootenvs/discovery.toml"
printf 'admin %s fleet bench\n' "$TOKEN" >"$RDIR/api-tokens"
chmod 600 "$RDIR/api-tokens"

# rackboot's config: as dhcp.sh's, on the /11, without the per-relay limit.
# With "import" HTTP and the API are on (the import run), else off.
rackboot_config() { # import|serve
    cat <<EOF
state_dir = "$RDIR/state"
assets_dir = "$RDIR/assets"
bootenvs_dir = "$RDIR/bootenvs"
scripts_dir = "$RDIR/scripts"
[network]
interface = "$SRV_IF"
address = "$SRV_IP"
[dhcp]
lease_seconds = 3600
# perfdhcp is one relay: the default 50000 packets a second would cap the
# search at 25000 DORA/s (30000 for 10 s with the burst). Off, so the limit
# is not what is measured.
rate_limit_per_relay = 0
[[dhcp.subnet]]
cidr = "$SUBNET"
ranges = [["$POOL_FIRST", "$POOL_LAST"]]
[tftp]
enabled = false
[dns]
enabled = false
EOF
    if [[ $1 == import ]]; then
        printf '[api]\ntokens_file = "%s"\n' "$RDIR/api-tokens"
    else
        printf '[http]\nenabled = false\n'
    fi
}
rackboot_config import >"$RDIR/import.toml"
rackboot_config serve >"$RDIR/rackboot.toml"
for c in import rackboot; do
    ip netns exec "$SRV_NS" "$RACKBOOT" check --config "$RDIR/$c.toml" >"$RDIR/check-$c.log" 2>&1 ||
        { cat "$RDIR/check-$c.log" >&2; die "rackboot check rejects the generated $c.toml"; }
done

# Kea's config with N reservations (python3: a million in seconds).
kea_config() { # N OUT
    timeout 600 "$PY" "$FLEET_PY" kea "$2" "$1" "$SRV_IF" "$SUBNET" "$POOL_FIRST - $POOL_LAST" \
        "$KDIR/leases4.csv" "$KDIR/kea-dhcp4.log" || die "could not write Kea's config for $1 reservations"
}
# Kea's pid and lock files go to the temp dir, not /run/kea.
export KEA_PIDFILE_DIR=$KDIR KEA_LOCKFILE_DIR=$KDIR
# The generator checked once, on a thousand reservations, by Kea itself.
kea_config 1000 "$KDIR/check.conf"
ip netns exec "$SRV_NS" timeout 120 "$KEA" -t "$KDIR/check.conf" >"$KDIR/config-check.log" 2>&1 ||
    { cat "$KDIR/config-check.log" >&2; die "kea-dhcp4 -t rejects the generated config"; }
rm -f "$KDIR/check.conf"

# ------------------------------------------------------------- helpers --
# CPU time (user + system, all threads) a process has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'; }

# TERM, then up to SECS for it to go; KILL after that (returns 1 then).
stop_within() { # PID SECS
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
}

# One rackboot on the import config, serving the API in rbf-srv (on core 0);
# the caller stops it. Sets SERVER_PID.
start_import_server() { # LOG
    RACKBOOT_LOG=${RACKBOOT_LOG:-warn} ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 \
        "$RACKBOOT" serve --config "$RDIR/import.toml" >"$1" 2>&1 &
    SERVER_PID=$!
    local i
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$1" >&2; die "rackboot exited at start-up (import run)"; }
        ip netns exec "$SRV_NS" curl -sf -m 2 -o /dev/null "http://$SRV_IP/healthz" && return 0
        sleep 0.1
    done
    cat "$1" >&2
    die "rackboot's HTTP did not answer within $START_TIMEOUT s"
}

# Size N's snapshot ($TMP/snapshot-N): a fresh state dir, the fleet
# imported, rackboot stopped once nothing is unsaved. Prints what it took.
make_snapshot() { # N
    local n=$1 snap=$TMP/snapshot-$1 log=$TMP/import-$1.log t0 t1 i unsaved rc=0
    rm -rf "$RDIR/state" "$snap"
    mkdir -p "$RDIR/state"
    start_import_server "$log"
    t0=$EPOCHREALTIME
    if ((n > 0)); then
        # Pinned to core 1, like every load generator here.
        ip netns exec "$SRV_NS" timeout $((600 + n / 100)) taskset -c 1 \
            "$PY" "$FLEET_PY" import "$SRV_IP:80" "$TOKEN" "$n" "$IMPORT_BATCH" 2>"$TMP/import-$n.progress" &
        HELPER_PID=$!
        wait "$HELPER_PID" || rc=$?
        HELPER_PID=""
        ((rc == 0)) || { tail -5 "$TMP/import-$n.progress" >&2; tail -20 "$log" >&2; die "import of $n records failed (exit $rc)"; }
    fi
    t1=$EPOCHREALTIME
    # Everything in SQLite before the stop, so a start has no journal to replay.
    for ((i = 0; i < 3000; i++)); do
        unsaved=$(ip netns exec "$SRV_NS" curl -sf -m 5 "http://$SRV_IP/metrics" |
            awk '$1 == "rackboot_store_unsaved_changes" { print $2 }' || true)
        [[ $unsaved == 0 ]] && break
        sleep 0.1
    done
    [[ $unsaved == 0 ]] || echo "  warning: rackboot_store_unsaved_changes still ${unsaved:-?} after 300 s" >&2
    IMPORT_RSS=$(rss_kib "$SERVER_PID")
    stop_within "$SERVER_PID" 300 || echo "  warning: rackboot did not stop within 300 s of TERM: killed" >&2
    SERVER_PID=""
    mv "$RDIR/state" "$snap"
    IMPORT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    local count
    count=$(sqlite3 "$snap/rackboot.db" "select count(*) from nodes" 2>&1 || echo "?")
    [[ $count == "$n" ]] || die "the snapshot holds $count node records, not $n ($snap)"
    echo "  rackboot: $n records imported in $IMPORT_S s$( ((n > 0)) && awk -v n="$n" -v s="$IMPORT_S" 'BEGIN { if (s > 0) printf " (%d records/s)", n / s }' || true)," \
        "RSS then $((IMPORT_RSS / 1024)) MiB; snapshot $(du -sh "$snap" | cut -f1): $(find "$snap" -mindepth 1 -maxdepth 1 -printf '%f ')" >&2
}

# A server started afresh with SIZE records (rackboot: on a copy of the
# size's snapshot; Kea: its config for the size, no leases), timed to its
# first OFFER. Sets SERVER_PID and START_S, and adds START_S to
# STARTS[NAME,SIZE].
start_server() { # NAME SIZE LOGFILE
    local name=$1 size=$2 out=$3 probe_out=$TMP/probe.out t0 t_offer i rc=0
    case $name in
        kea) rm -f "$KDIR"/leases4.csv* "$KDIR"/*.pid ;;
        rackboot) rm -rf "$RDIR/state"; cp -a "$TMP/snapshot-$size" "$RDIR/state" ;;
    esac
    # The probe first: bound and sending before the server exists.
    rm -f "$probe_out"
    ip netns exec "$CLI_NS" timeout -k 5 $((START_TIMEOUT + 10)) taskset -c 1 \
        "$PY" "$FLEET_PY" probe "$SRV_IP" "$CLI_IP" "$START_TIMEOUT" "$probe_out" 2>"$probe_out.err" &
    PROBE_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ -s $probe_out ]] && break
        kill -0 "$PROBE_PID" 2>/dev/null || { cat "$probe_out.err" >&2; die "the start probe exited before it was ready"; }
        sleep 0.05
    done
    [[ -s $probe_out ]] || die "the start probe was not ready within 5 s"
    t0=$EPOCHREALTIME
    case $name in
        kea)
            ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 "$KEA" -c "$KDIR/kea-$size.conf" >"$out" 2>&1 &
            ;;
        rackboot)
            RACKBOOT_LOG=${RACKBOOT_LOG:-warn} ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 \
                "$RACKBOOT" serve --config "$RDIR/rackboot.toml" >"$out" 2>&1 &
            ;;
    esac
    SERVER_PID=$!   # ip netns exec, nice and taskset exec: this is the server itself
    for ((i = 0; i < (START_TIMEOUT + 20) * 20; i++)); do
        kill -0 "$PROBE_PID" 2>/dev/null || break
        kill -0 "$SERVER_PID" 2>/dev/null || { stop_pid "$PROBE_PID"; PROBE_PID=""; cat "$out" >&2; die "$name exited at start-up"; }
        sleep 0.05
    done
    wait "$PROBE_PID" || rc=$?
    PROBE_PID=""
    t_offer=$(sed -n 2p "$probe_out")
    if ((rc != 0)) || [[ -z $t_offer ]]; then
        cat "$probe_out.err" "$out" >&2
        die "$name sent no DHCPOFFER within $START_TIMEOUT s of its start"
    fi
    START_S=$(awk -v a="$t0" -v b="$t_offer" 'BEGIN { printf "%.3f", b - a }')
    STARTS[$name,$size]+="$START_S "
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}

PERF_ARGS() { # RATE [EXTRA...] -> the perfdhcp argument list
    echo -4 -g single -r "$1" -R "$CLIENTS" -p "$PERIOD" "${@:2}" -l "$CLI_IP" "$SRV_IP"
}

# ----------------------------------------------------------------- trial --
# One trial at RATE against a freshly started server, as in dhcp.sh; KEY is
# "server,size" (rackboot,10000), as the searches are named. Sets
# LOSS, DONE (DORA/s completed), SENT, PASS, CLIENT_BOUND, BUSY, RSS_END
# (KiB, at the end of the trial), and stops the server. With "timed", perfdhcp
# also prints each exchange's times (-x t): P99_DO and P99_RA (ms, computed
# here) and AVG_DO, AVG_RA (perfdhcp's).
TRIAL_NO=0
trial() { # KEY RATE [timed]
    local name=${1%,*} size=${1#*,} rate=$2 timed=${3:-} out rc extra=()
    TRIAL_NO=$((TRIAL_NO + 1))
    out=$TMP/trial-$TRIAL_NO-$name-$size-$rate${timed:+-timed}
    [[ -n $timed ]] && extra=(-x t)
    start_server "$name" "$size" "$out.server.log"
    local t0 t1 c0 srv0 cli0
    t0=$(date +%s.%N) c0=$(cpu_ticks "$SERVER_PID")
    srv0=$(rcvbuf_errors "$SRV_NS") cli0=$(rcvbuf_errors "$CLI_NS")
    # perfdhcp in the background so a signal reaches the trap at once;
    # `timeout` bounds it whatever happens.
    # shellcheck disable=SC2046
    ip netns exec "$CLI_NS" timeout -k 5 $((PERIOD + 60)) \
        nice -n "$NICE" taskset -c 1 "$PERFDHCP" $(PERF_ARGS "$rate" "${extra[@]}") >"$out.perfdhcp" 2>&1 &
    LOAD_PID=$!
    rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    SRV_OVF=$(($(rcvbuf_errors "$SRV_NS") - srv0)) CLI_OVF=$(($(rcvbuf_errors "$CLI_NS") - cli0))
    t1=$(date +%s.%N)
    BUSY=$(awk -v c0="$c0" -v c1="$(cpu_ticks "$SERVER_PID")" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
        'BEGIN { printf "%d", 100 * (c1 - c0) / hz / (t1 - t0) }')
    RSS_END=$(rss_kib "$SERVER_PID")
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$out.server.log" >&2; die "$name exited during a trial at $rate/s"; }
    stop_server
    # perfdhcp exits 3 when packets were dropped: a normal outcome here.
    if ((rc != 0 && rc != 3)); then
        tail -40 "$out.perfdhcp" >&2
        die "perfdhcp failed (exit $rc) at rate $rate against $name"
    fi
    read -r SENT ACKED < <(awk '
        /Statistics for: DISCOVER-OFFER/ { ex = "DO" }
        /Statistics for: REQUEST-ACK/    { ex = "RA" }
        /^sent packets:/     { sent[ex] = $3 }
        /^received packets:/ { recv[ex] = $3 }
        END { printf "%d %d\n", sent["DO"], recv["RA"] }' "$out.perfdhcp")
    ((SENT > 0)) || { tail -40 "$out.perfdhcp" >&2; die "cannot read perfdhcp's statistics ($out.perfdhcp)"; }
    LOSS=$(awk -v s="$SENT" -v a="$ACKED" 'BEGIN { printf "%.2f", 100 * (s - a) / s }')
    DONE=$(awk -v a="$ACKED" -v p="$PERIOD" 'BEGIN { printf "%d", a / p }')
    DROPS=$(awk '/^drops ratio:/ { printf "%s%.1f", sep, $3; sep = "/" }' "$out.perfdhcp")
    PASS=$(awk -v l="$LOSS" -v m="$MAX_LOSS" 'BEGIN { print (l < m) ? 1 : 0 }')
    # Did perfdhcp send what was asked? Below 90 % it is the client's ceiling.
    CLIENT_BOUND=$(awk -v s="$SENT" -v r="$rate" -v p="$PERIOD" 'BEGIN { print (s < 0.9 * r * p) ? 1 : 0 }')
    local note=""
    if [[ -n $timed ]]; then
        read -r AVG_DO AVG_RA < <(awk '
            /Statistics for: DISCOVER-OFFER/ { ex = "DO" }
            /Statistics for: REQUEST-ACK/    { ex = "RA" }
            /^avg delay:/ { avg[ex] = $3 }
            END { printf "%s %s\n", (avg["DO"] == "") ? "?" : avg["DO"], (avg["RA"] == "") ? "?" : avg["RA"] }' "$out.perfdhcp")
        P99_DO=$(p99_of DISCOVER-OFFER "$out.perfdhcp")
        P99_RA=$(p99_of REQUEST-ACK "$out.perfdhcp")
        note="  p99 DO/RA $P99_DO/$P99_RA ms, avg $AVG_DO/$AVG_RA ms"
    fi
    printf '  %-8s %7d %6d/s  DISCOVERs %6d  ACKs %6d  loss %6.2f %%  (DO/RA %-11s) cpu %3d %%  rcvbuf full srv/cli %5d/%-5d start %6.3f s  RSS %4d MiB -> %5d DORA/s %s%s%s\n' \
        "$name" "$size" "$rate" "$SENT" "$ACKED" "$LOSS" "${DROPS:-?}" "$BUSY" "$SRV_OVF" "$CLI_OVF" "$START_S" "$((RSS_END / 1024))" "$DONE" \
        "$( ((PASS)) && echo ok || echo LOSS)" "$note" "$( ((CLIENT_BOUND)) && echo ' (perfdhcp could not send at this rate)' || true)" >&2
}

# p99 in ms of the exchanges perfdhcp -x t timed in section KIND
# ("sent / received: 000001.234567 / 000001.235012" lines), or "?".
p99_of() { # KIND FILE
    awk -v kind="$1" '
        /^\*\*\*Timestamps for packets: / { on = index($0, kind) > 0; next }
        /^\*\*\*/ { on = 0 }
        on && /^sent \/ received:/ { printf "%.2f\n", 1000 * ($6 - $4) }' "$2" |
        sort -n | awk '{ v[NR] = $1 } END { if (NR) { i = int(0.99 * NR + 0.999999); print v[i < 1 ? 1 : i] } else print "?" }'
}

# A trial, and on loss >= 1 % the same rate once more (a noise spike on a
# shared machine should not end a search); the second result stands.
trial_confirmed() { # KEY RATE
    trial "$1" "$2"
    ((PASS)) && return
    trial "$1" "$2"
}

# ---------------------------------------------------------------- search --
# dhcp.sh's: double from START_RATE until a trial loses >= 1 %, then bisect
# between the last good and the first bad rate to PRECISION percent. One
# search per server and size (named "server,size"), all of them interleaved,
# one trial each in turn: every size meets the same spells of noise, which
# is what the ratio of one size's rate to another's needs.
declare -A S_RATE S_GOOD S_BAD S_DONE S_BEST S_BOUND

search_step() { # KEY
    local name=$1 rate=${S_RATE[$1]}
    trial_confirmed "$name" "$rate"
    if ((PASS)); then
        # The rate asked for, not DONE: the timed trial asks for it again.
        if ((DONE > S_BEST[$name])); then S_BEST[$name]=$DONE S_BEST_RATE[$name]=$rate; fi
        search_passed "$name" "$rate" "$CLIENT_BOUND"
    else
        search_failed "$name" "$rate"
    fi
}

# ------------------------------------------------------------------ run --
echo "DHCP fleet-size curve: kea-dhcp4 $KEA_VERSION vs rackboot $RACKBOOT_VERSION (RACKBOOT_LOG=${RACKBOOT_LOG:-warn});" \
    "sizes ${SIZES[*]}; $PERIOD s trials, precision $PRECISION %, $ROUNDS round(s)" >&2
echo "load: ip netns exec $CLI_NS nice -n $NICE taskset -c 1 perfdhcp $(PERF_ARGS RATE)" >&2

# Results by "server,size".
declare -A RATE BOUND BEST_RATE_ASKED START REST_RSS LOAD_RSS P99 AVG TIMED_LOSS STARTS S_BEST_RATE
has() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }   # NAME: is it measured?
# Every size made ready (rackboot's snapshot, Kea's config) and each server
# started on it once on its own, for RSS at rest.
for SIZE in "${SIZES[@]}"; do
    echo "fleet of $SIZE:" >&2
    if has rackboot; then make_snapshot "$SIZE"; fi
    if has kea; then
        t=$EPOCHREALTIME
        kea_config "$SIZE" "$KDIR/kea-$SIZE.conf"
        echo "  kea: config with $SIZE reservations written in $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s," \
            "$(du -h "$KDIR/kea-$SIZE.conf" | cut -f1)" >&2
    fi
    for name in "${SERVERS[@]}"; do
        start_server "$name" "$SIZE" "$TMP/rest-$SIZE-$name.log"
        sleep "$SETTLE"
        REST_RSS[$name,$SIZE]=$(rss_kib "$SERVER_PID")
        echo "  $name: first OFFER $START_S s after launch; RSS ${SETTLE} s later $((REST_RSS[$name,$SIZE] / 1024)) MiB" \
            "($(awk '/^(VmRSS|RssAnon|RssFile|VmHWM):/ { printf "%s%s %s kB", sep, $1, $2; sep = ", " }' "/proc/$SERVER_PID/status"))" >&2
        stop_server
    done
done

# The searches: every server at every size, interleaved; the order reversed
# from one round to the next.
KEYS=()
for SIZE in "${SIZES[@]}"; do
    for name in "${SERVERS[@]}"; do KEYS+=("$name,$SIZE"); RATE[$name,$SIZE]=0 BEST_RATE_ASKED[$name,$SIZE]=0; done
done
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    echo "round $ROUND of $ROUNDS:" >&2
    if ((ROUND % 2)); then order=("${KEYS[@]}"); else order=(); for key in "${KEYS[@]}"; do order=("$key" "${order[@]}"); done; fi
    for key in "${order[@]}"; do search_init "$key"; S_BEST_RATE[$key]=0; done
    for ((step = 0; step < 40; step++)); do   # bounded: a search takes ~12 steps
        busy=0
        for key in "${order[@]}"; do
            ((S_DONE[$key])) && continue
            busy=1
            search_step "$key"
        done
        ((busy)) || break
    done
    for key in "${order[@]}"; do
        if ((S_BEST[$key] > RATE[$key])); then
            RATE[$key]=${S_BEST[$key]} BOUND[$key]=${S_BOUND[$key]} BEST_RATE_ASKED[$key]=${S_BEST_RATE[$key]}
        fi
    done
done

# Latency and RSS after load: a timed trial at each best rate.
echo "timed trials at each best rate:" >&2
for key in "${KEYS[@]}"; do
    rate=${BEST_RATE_ASKED[$key]}
    if ((rate == 0)); then
        P99[$key]="-" AVG[$key]="-" LOAD_RSS[$key]=0 TIMED_LOSS[$key]="-"
        continue
    fi
    # As in the search, a trial that loses >= 1 % gets a second go; the
    # one that lost less stands.
    trial "$key" "$rate" timed
    if ((!PASS)); then
        kept=("$P99_DO" "$P99_RA" "$AVG_DO" "$AVG_RA" "$RSS_END" "$LOSS")
        trial "$key" "$rate" timed
        if awk -v a="${kept[5]}" -v b="$LOSS" 'BEGIN { exit !(a < b) }'; then
            P99_DO=${kept[0]} P99_RA=${kept[1]} AVG_DO=${kept[2]} AVG_RA=${kept[3]} RSS_END=${kept[4]} LOSS=${kept[5]}
        fi
    fi
    P99[$key]="$P99_DO/$P99_RA" AVG[$key]="$AVG_DO/$AVG_RA"
    LOAD_RSS[$key]=$RSS_END TIMED_LOSS[$key]=$LOSS
done
for key in "${KEYS[@]}"; do
    START[$key]=$(tr ' ' '\n' <<<"${STARTS[$key]:-}" | grep . | median)
done
rm -rf "$RDIR/state" "$KDIR"/leases4.csv*
echo >&2

# ----------------------------------------------------------------- report --
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
val() { local v=${1:-}; echo "${v:-0}"; }
# Server logs: WARN/ERROR lines over the whole run (Kea notes its threading at WARN on every start).
KEA_WARN=$(cat "$TMP"/trial-*-kea-*.server.log "$TMP"/rest-*-kea.log "$KDIR/kea-dhcp4.log" 2>/dev/null |
    grep -E ' (WARN|ERROR|FATAL) ' | grep -vc DHCP4_MULTI_THREADING_INFO || true)
RB_WARN_LINES=$(cat "$TMP"/trial-*-rackboot-*.server.log "$TMP"/rest-*-rackboot.log "$TMP"/import-*.log 2>/dev/null | grep -E ' (WARN|ERROR) ' || true)
echo "kea-dhcp4 WARN/ERROR log lines over the run (less its start-up note): $KEA_WARN"
echo "rackboot WARN/ERROR log lines over the run: $(grep -c . <<<"$RB_WARN_LINES" || true)"
[[ -z $RB_WARN_LINES ]] || sed -E 's/^[^ ]+ +//' <<<"$RB_WARN_LINES" | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
echo
echo "DHCP fleet-size curve: DORA/s with < $MAX_LOSS % loss, perfdhcp relayed (50000 new MACs), server on core 0$( ((QUICK)) && echo ', --quick' || true)"
echo "p99: DISCOVER->OFFER / REQUEST->ACK in ms, computed from perfdhcp -x t at the best rate (its avg in the log);"
echo "start: launch to first DHCPOFFER, median of every start at the size; RSS: at rest ${SETTLE} s after the first OFFER / after the timed trial"
printf '%9s  %-8s %8s %15s %15s %20s %9s   %s\n' records server "DORA/s" "p99 DO/RA ms" "avg DO/RA ms" "RSS rest/load MiB" "start s" "rackboot/kea"
for SIZE in "${SIZES[@]}"; do
    for name in "${SERVERS[@]}"; do
        r=$(val "${RATE[$name,$SIZE]:-}")
        rr=""
        [[ $name == kea && " ${SERVERS[*]} " == *" rackboot "* ]] && rr=$(ratio "$(val "${RATE[rackboot,$SIZE]:-}")" "$r")
        # The timed trial's own loss, when it lost more than the search allows.
        tl=$(awk -v l="${TIMED_LOSS[$name,$SIZE]:-0}" -v m="$MAX_LOSS" 'BEGIN { if (l + 0 >= m) printf " (timed trial lost %s %%)", l }')
        printf '%9d  %-8s %8d %15s %15s %20s %9s   %s%s%s\n' "$SIZE" "$name" "$r" "${P99[$name,$SIZE]:--}" "${AVG[$name,$SIZE]:--}" \
            "$(mib "$(val "${REST_RSS[$name,$SIZE]:-}")")/$(mib "$(val "${LOAD_RSS[$name,$SIZE]:-}")")" \
            "${START[$name,$SIZE]:--}" "$rr" "${BOUND[$name,$SIZE]:+ (${BOUND[$name,$SIZE]})}" "$tl"
    done
done

# The base of the flatness ratio: 10000 if measured, else 1000, else none.
BASE=""
for b in 10000 1000; do [[ " ${SIZES[*]} " == *" $b "* ]] && { BASE=$b; break; }; done
echo
if [[ -n $BASE ]]; then
    for SIZE in "${SIZES[@]}"; do
        ((SIZE > BASE)) || continue
        echo "DORA/s at $SIZE records over at $BASE: rackboot $(ratio "$(val "${RATE[rackboot,$SIZE]:-}")" "$(val "${RATE[rackboot,$BASE]:-}")")," \
            "kea $(ratio "$(val "${RATE[kea,$SIZE]:-}")" "$(val "${RATE[kea,$BASE]:-}")") (the same noise met both)"
    done
fi
# (RSS at rest with N - RSS at rest with FROM) / (N - FROM), in bytes.
per_record() { # NAME N [FROM, default 0]
    local from=${3:-0}
    local z=${REST_RSS[$1,$from]:-} r=${REST_RSS[$1,$2]:-}
    [[ -n $z && -n $r ]] || { echo "n/a"; return; }
    awk -v z="$z" -v r="$r" -v n="$(($2 - from))" 'BEGIN { printf "%d", (r - z) * 1024 / n }'
}
if [[ " ${SIZES[*]} " == *" 0 "* ]]; then
    for SIZE in "${SIZES[@]}"; do
        ((SIZE > 0)) || continue
        echo "RSS per record at $SIZE ((RSS at rest - RSS at rest with 0) / N): rackboot $(per_record rackboot "$SIZE") B, kea $(per_record kea "$SIZE") B"
    done
else
    echo "RSS per record: n/a (size 0 not measured)"
fi
echo "  ($((SECONDS - T0)) s)"

# For benches/run.sh's table: ROW|what|peer|tool|peer|rackboot|ratio|target|met
met() { awk -v r="$1" -v t="$2" 'BEGIN { print (r != "n/a" && r >= t) ? "yes" : "no" }'; }
cell() { # NAME SIZE: "rate (p99 RA ms, RSS at rest MiB, start s)"
    local ra=${P99[$1,$2]:--}
    printf '%s (p99 %s ms, %s MiB, start %s s)' "$(val "${RATE[$1,$2]:-}")" "${ra#*/}" \
        "$(mib "$(val "${REST_RSS[$1,$2]:-}")")" "${START[$1,$2]:--}"
}
QNOTE=$( ((QUICK)) && echo ', --quick' || true)
for SIZE in "${SIZES[@]}"; do
    R=$(ratio "$(val "${RATE[rackboot,$SIZE]:-}")" "$(val "${RATE[kea,$SIZE]:-}")")
    echo "ROW|DHCP DORA/s, < $MAX_LOSS % loss, fleet of $SIZE (p99 REQUEST->ACK, RSS at rest, launch to first OFFER)$QNOTE|kea-dhcp4 (memfile, host reservations)|perfdhcp|$(cell kea "$SIZE")|$(cell rackboot "$SIZE")|$R|>= 1.0x|$(met "$R" 1.0)"
done
if [[ -n $BASE ]]; then
    for SIZE in "${SIZES[@]}"; do
        ((SIZE > BASE)) || continue
        R=$(ratio "$(val "${RATE[rackboot,$SIZE]:-}")" "$(val "${RATE[rackboot,$BASE]:-}")")
        if ((SIZE == 100000)); then target=">= 0.9x (within 10 %)" m=$(met "$R" 0.9); else target="measured, no target" m="-"; fi
        echo "ROW|DHCP DORA/s at $SIZE node records over at $BASE$QNOTE|rackboot, $BASE records|perfdhcp|$(val "${RATE[rackboot,$BASE]:-}")|$(val "${RATE[rackboot,$SIZE]:-}")|$R|$target|$m"
    done
fi
if [[ " ${SIZES[*]} " == *" 0 "* ]]; then
    for SIZE in "${SIZES[@]}"; do
        ((SIZE > 0)) || continue
        k=$(per_record kea "$SIZE") r=$(per_record rackboot "$SIZE")
        # Lower is better: the ratio is Kea's bytes over rackboot's.
        R=$(ratio "$k" "$r")
        m=$(awk -v r="$r" 'BEGIN { print (r != "n/a" && r <= 300) ? "yes" : "no" }')
        echo "ROW|RSS bytes per node record at rest, fleet of $SIZE ((RSS with N - with 0) / N)$QNOTE|kea-dhcp4 (per reservation)|/proc VmRSS|$k|$r|$R|measured, no target|-"
    done
fi
PREV=
for SIZE in "${SIZES[@]}"; do
    if [[ -n $PREV ]] && ((PREV > 0)); then
        k=$(per_record kea "$SIZE" "$PREV") r=$(per_record rackboot "$SIZE" "$PREV")
        R=$(ratio "$k" "$r")
        m=$(awk -v r="$r" 'BEGIN { print (r != "n/a" && r <= 300) ? "yes" : "no" }')
        echo "RSS per record from $PREV to $SIZE records: rackboot $r B, kea $k B" >&2
        echo "ROW|RSS bytes per node record at rest, from $PREV to $SIZE records (what one more costs)$QNOTE|kea-dhcp4 (per reservation)|/proc VmRSS|$k|$r|$R|<= 300 B|$m"
    fi
    PREV=$SIZE
done
exit 0
