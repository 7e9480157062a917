#!/usr/bin/env bash
# DNS throughput benchmark: rackboot against dnsmasq and NSD, in one run, on
# the same network namespaces and the same 10,000 names. A measurement, not a
# test: it exits 0 whatever the numbers are, non-zero only when the set-up
# fails.
#
# All three servers answer A for node-00001.rack.internal …
# node-10000.rack.internal (10.78.1.1 … 10.78.40.250): dnsmasq from a hosts
# file (--addn-hosts); NSD as the authority for rack.internal from a zone file
# with the same A records, SOA and NS (as rackboot's: NS rack.internal., whose
# A is the server's address, TTL 60); rackboot from 10,000 node records with
# fixed addresses, imported in one POST /api/v1/nodes/import (what `rackboot
# node import` sends). dnsperf replays the same shuffled query file (every
# name once per pass, looped) against each for a fixed time at its maximum
# rate, and the queries/s it completed are compared:
#
#   dnsperf -s 10.78.0.1 -d queries.txt -l PERIOD -c 10 -q 500 -T 1
#
# dnsperf runs in the client namespace rbdns-cli, the server in rbdns-srv, on
# the other end of a veth. Server pinned to core 0, dnsperf to core 1, both at
# nice -10 (BENCH_NICE=N to change). The machines this runs on are shared and
# noisy, so each server is measured ROUNDS times (3 by default, 1 with
# --quick), the order reversed every other round, and each one's best counts.
# Each trial line shows the server's CPU use and the queries dnsperf lost.
#
# NSD runs from its own config in the temp dir, not as the system service
# (which, if installing the package started it, is stopped and disabled):
# `nsd -d` (in the foreground, so its PID is the one stopped), server-count 1,
# listening on the server address only, no zone transfers (no provide-xfr,
# request-xfr or notify), no remote control, logging to a file in the temp
# dir (not syslog), its pidfile, zonesdir, database, zone list and xfrd state
# there too. minimal-responses: yes, so it answers with the A record alone, as
# rackboot and dnsmasq do (by default NSD adds the NS and its address), and
# response rate limiting off (rrl-ratelimit: 0): every query comes from one
# client address. nsd-checkconf checks the config and nsd-checkzone the zone
# before the first trial.
#
# On two cores dnsperf itself is usually the ceiling (the server idles part of
# the time), so the servers reach about the same queries/s. The report
# therefore also gives each server's capacity: queries answered per second of
# its own CPU time (user + system of the server and its child processes, from
# /proc/PID/stat; NSD answers from a child and runs xfrd in another), i.e. the
# rate it would reach on a whole core, and rackboot's ratio to each peer.
#
# Usage: benches/dns.sh [--quick] [--rounds N] [--only dnsmasq|nsd|rackboot]
#   --quick     a smoke run: 3-second trials, one round.
#   --rounds N  measure each server N times (default 3); report the best.
#   --only S    measure one server only (while working on this script).
# Environment: TMPDIR (where state and logs go; /tmp by default), KEEP_TMP=1
# keeps that dir, RACKBOOT_LOG as for rackboot (default here: warn),
# RACKBOOT_BIN=path measures that binary and builds nothing (e.g. an older
# build). Otherwise rackboot is built with cargo build --release unless
# target/release/rackboot is newer than every source file; the run uses a
# copy of it.
#
# Needs root (namespaces, apt-get). Installs dnsperf, dnsmasq-base, nsd, curl
# and dnsutils with apt-get when they are missing. Traffic stays inside the two
# namespaces this script makes; they, the servers and the temp dir are removed
# on exit, also on failure.
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
        *) echo "dns.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-$((QUICK ? 1 : 3))}
[[ $ROUNDS =~ ^[1-9]$ ]] || { echo "dns.sh: --rounds wants 1..9" >&2; exit 2; }
[[ -z $ONLY || $ONLY == dnsmasq || $ONLY == nsd || $ONLY == rackboot ]] ||
    { echo "dns.sh: --only wants dnsmasq, nsd or rackboot" >&2; exit 2; }
WANT_RACKBOOT=0
[[ -z $ONLY || $ONLY == rackboot ]] && WANT_RACKBOOT=1

PERIOD=$((QUICK ? 3 : 10))   # seconds per trial
NAMES=10000
CLIENTS=10                   # dnsperf -c: client sockets (source ports)
OUTSTANDING=500              # dnsperf -q: queries in flight
NICE=${BENCH_NICE:--10}
[[ $NICE =~ ^-?[0-9]+$ ]] || { echo "dns.sh: BENCH_NICE wants a number" >&2; exit 2; }

SRV_NS=rbdns-srv
CLI_NS=rbdns-cli
SRV_IF=rbdns-s0
CLI_IF=rbdns-c0
SRV_IP=10.78.0.1
CLI_IP=10.78.0.2
DOMAIN=rack.internal
API_PORT=8080
TOKEN=bench-admin-token-0123456789abcdef

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$SECONDS

die() { echo "dns.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (network namespaces, apt-get)"

# ---------------------------------------------------------------- cleanup --
TMP=""
SERVER_PID=""
LOAD_PID=""
LOCK_FD=""

# stop_pid, netns_exists, del_netns
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

# PID and its descendants, one "pid ticks" line each, ticks being the
# process's user + system CPU time (all its threads) from /proc/*/stat.
proc_tree() { # PID
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
        { s = $0; sub(/^.*\) /, "", s); split(s, f, " "); pp[$1] = f[2]; t[$1] = f[12] + f[13] }
        END {
            for (p in pp) {
                q = p + 0
                for (d = 0; d < 32 && q != root + 0 && q > 1; d++) q = pp[q] + 0
                if (q == root + 0) print p, t[p]
            }
        }'
}

# Stops the server by its PID, then any child of it still running (NSD's
# server and xfrd end with their parent; this is for when they did not).
stop_server() {
    local kids kid pid comm
    [[ -n $SERVER_PID ]] || return 0
    kids=()
    for pid in $(proc_tree "$SERVER_PID" | awk -v root="$SERVER_PID" '$1 != root { print $1 }'); do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) && kids+=("$pid:$comm")
    done
    stop_pid "$SERVER_PID"
    for kid in "${kids[@]}"; do
        pid=${kid%%:*} comm=${kid#*:}
        # Still that child (not a process that got its PID since)?
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] && stop_pid "$pid"
    done
    SERVER_PID=""
}

stop_processes() { # for bench_exit (benches/lib.sh)
    stop_pid "$LOAD_PID"
    stop_server
}
bench_traps

# One run at a time: the namespace names are fixed.
bench_lock dns

# ------------------------------------------------------------- packages --
need_pkgs=()
command -v dnsperf >/dev/null || need_pkgs+=(dnsperf)
command -v dnsmasq >/dev/null || need_pkgs+=(dnsmasq-base)
command -v nsd >/dev/null || need_pkgs+=(nsd)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v dig >/dev/null || need_pkgs+=(dnsutils)
for tool in ip taskset timeout ss flock awk shuf; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
# The distro's nsd service: stopped and disabled, whether or not the package
# started it (policy-rc.d may have refused). This script runs its own.
quiet_distro_nsd() {
    local pidfile=/run/nsd/nsd.pid pid
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl disable --now nsd >/dev/null 2>&1 || true
    else
        if command -v systemctl >/dev/null; then systemctl disable nsd >/dev/null 2>&1 || true; fi
        if command -v update-rc.d >/dev/null; then update-rc.d nsd disable >/dev/null 2>&1 || true; fi
        if [[ -x /etc/init.d/nsd ]]; then /etc/init.d/nsd stop >/dev/null 2>&1 || true; fi
    fi
    if [[ -r $pidfile ]]; then
        pid=$(cat "$pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == nsd ]]; then
            stop_pid "$pid"
        fi
    fi
}
if ((${#need_pkgs[@]})); then
    apt_install "${need_pkgs[@]}"
    [[ " ${need_pkgs[*]} " == *" nsd "* ]] && quiet_distro_nsd
fi
DNSPERF=$(command -v dnsperf) || die "dnsperf not found after install"
DNSMASQ=$(command -v dnsmasq) || die "dnsmasq not found after install"
DNSMASQ_VERSION=$("$DNSMASQ" --version | head -1 | awk '{print $3}')
NSD=$(command -v nsd) || die "nsd not found after install"
NSD_CHECKCONF=$(command -v nsd-checkconf) || die "nsd-checkconf not found after install"
NSD_CHECKZONE=$(command -v nsd-checkzone) || die "nsd-checkzone not found after install"
NSD_VERSION=$({ "$NSD" -v 2>&1 || true; } | awk '/version/ { v = $NF } END { print (v == "" ? "?" : v) }')
DNSPERF_VERSION=$(dpkg-query -W -f '${Version}' dnsperf 2>/dev/null || echo '?')

# -------------------------------------------------------------- rackboot --
RACKBOOT_BUILT=$REPO/target/release/rackboot
RACKBOOT_VERSION=-
if ((WANT_RACKBOOT)); then
    rackboot_release "$REPO"
    RACKBOOT_VERSION=$(rackboot_version "$REPO")
fi

# ------------------------------------------------------------ namespaces --
stale_netns "$SRV_NS" "$CLI_NS"
TMP=$(mktemp -d -t rackboot-bench-dns.XXXXXX)
veth_pair "$SRV_NS" "$SRV_IF" "$CLI_NS" "$CLI_IF"
ip -n "$SRV_NS" addr add "$SRV_IP/16" dev "$SRV_IF"
ip -n "$CLI_NS" addr add "$CLI_IP/16" dev "$CLI_IF"

# ----------------------------------------------------------------- names --
# name i (1-based) -> 10.78.(1 + (i-1)/250).(1 + (i-1)%250)
awk -v n="$NAMES" -v d="$DOMAIN" 'BEGIN {
    for (i = 1; i <= n; i++) {
        printf "10.78.%d.%d node-%05d.%s node-%05d\n", 1 + int((i - 1) / 250), 1 + (i - 1) % 250, i, d, i
    }
}' >"$TMP/hosts"
awk '{ print $2, "A" }' "$TMP/hosts" | shuf >"$TMP/queries.txt"
# The import body: [{"mac":…,"hostname":…,"ipv4":…}, …]
awk 'BEGIN { printf "[" }
     { i = NR; printf "%s{\"mac\":\"02:00:00:%02x:%02x:%02x\",\"hostname\":\"%s\",\"ipv4\":\"%s\"}",
         (NR > 1 ? "," : ""), int(i / 65536) % 256, int(i / 256) % 256, i % 256, $3, $1 }
     END { print "]" }' "$TMP/hosts" >"$TMP/import.json"
SAMPLE_NAME=$(awk 'NR == 4321 { print $2 }' "$TMP/hosts")
SAMPLE_IP=$(awk 'NR == 4321 { print $1 }' "$TMP/hosts")

# ----------------------------------------------------------- server defs --
RDIR=$TMP/rackboot
mkdir -p "$RDIR"/{assets,bootenvs,scripts,state}
RACKBOOT=$RDIR/rackboot
((WANT_RACKBOOT)) && cp "$RACKBOOT_BUILT" "$RACKBOOT"
printf '[arch.bios]\nlocal = "exit"\n' >"$RDIR/bootenvs/discovery.toml"
printf 'admin %s bench\n' "$TOKEN" >"$RDIR/api-tokens"
cat >"$RDIR/rackboot.toml" <<EOF
state_dir = "$RDIR/state"
assets_dir = "$RDIR/assets"
bootenvs_dir = "$RDIR/bootenvs"
scripts_dir = "$RDIR/scripts"
[network]
interface = "$SRV_IF"
address = "$SRV_IP"
[dhcp]
enabled = false
[[dhcp.subnet]]
cidr = "10.78.0.0/16"
[tftp]
enabled = false
[http]
port = $API_PORT
[dns]
domain = "$DOMAIN"
[api]
tokens_file = "$RDIR/api-tokens"
EOF
if ((WANT_RACKBOOT)); then
    ip netns exec "$SRV_NS" "$RACKBOOT" check --config "$RDIR/rackboot.toml" >"$RDIR/config-check.log" 2>&1 ||
        { cat "$RDIR/config-check.log" >&2; die "rackboot check rejects the generated config"; }
fi

# NSD: the authority for $DOMAIN from a zone file with what rackboot answers
# (SOA and NS as rackboot's, TTL 60) and the same 10,000 A records.
NDIR=$TMP/nsd
mkdir -p "$NDIR"
{
    printf "\$ORIGIN %s.\n\$TTL 60\n" "$DOMAIN"
    printf '@ IN SOA %s. hostmaster.%s. 1 3600 600 86400 10\n' "$DOMAIN" "$DOMAIN"
    printf '@ IN NS %s.\n@ IN A %s\n' "$DOMAIN" "$SRV_IP"
    awk '{ print $3, "IN A", $1 }' "$TMP/hosts"
} >"$NDIR/$DOMAIN.zone"
cat >"$NDIR/nsd.conf" <<EOF
server:
    server-count: 1
    ip-address: $SRV_IP
    port: 53
    do-ip4: yes
    do-ip6: no
    reuseport: no
    username: ""
    chroot: ""
    zonesdir: "$NDIR"
    database: "$NDIR/nsd.db"
    zonelistfile: "$NDIR/zone.list"
    xfrdfile: "$NDIR/xfrd.state"
    xfrdir: "$NDIR"
    pidfile: "$NDIR/nsd.pid"
    logfile: "$NDIR/nsd.log"
    verbosity: 0
    hide-version: yes
    minimal-responses: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "$DOMAIN"
    zonefile: "$NDIR/$DOMAIN.zone"
EOF
if [[ -z $ONLY || $ONLY == nsd ]]; then
    "$NSD_CHECKCONF" "$NDIR/nsd.conf" >"$NDIR/checkconf.log" 2>&1 ||
        { cat "$NDIR/checkconf.log" >&2; die "nsd-checkconf rejects the generated config"; }
    "$NSD_CHECKZONE" "$DOMAIN" "$NDIR/$DOMAIN.zone" >"$NDIR/checkzone.log" 2>&1 ||
        { cat "$NDIR/checkzone.log" >&2; die "nsd-checkzone rejects the generated zone"; }
fi

# Waits (bounded: 15 s) until NAME answers SAMPLE_NAME with SAMPLE_IP from rbdns-cli.
wait_answers() { # NAME LOGFILE
    local name=$1 out=$2 i got
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$out" >&2; die "$name exited at start-up"; }
        got=$(ip netns exec "$CLI_NS" dig @"$SRV_IP" +time=1 +tries=1 +short "$SAMPLE_NAME" A 2>/dev/null || true)
        [[ $got == "$SAMPLE_IP" ]] && return 0
        sleep 0.1
    done
    cat "$out" >&2
    die "$name does not answer $SAMPLE_NAME with $SAMPLE_IP (got '${got:-nothing}')"
}

# Starts the server in rbdns-srv on core 0 with all 10k names. Sets SERVER_PID.
start_server() { # NAME LOGFILE
    local name=$1 out=$2
    case $name in
        dnsmasq)
            ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 "$DNSMASQ" --keep-in-foreground \
                --no-resolv --no-hosts --no-poll --addn-hosts="$TMP/hosts" \
                --bind-interfaces --listen-address="$SRV_IP" --port=53 \
                --user=root --pid-file= --log-facility="$TMP/dnsmasq.log" >"$out" 2>&1 &
            SERVER_PID=$!
            ;;
        nsd)
            # A pidfile left by a killed trial would stop it.
            rm -f "$NDIR/nsd.pid"
            ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 "$NSD" -d -c "$NDIR/nsd.conf" >"$out" 2>&1 &
            SERVER_PID=$!
            ;;
        rackboot)
            RACKBOOT_LOG=${RACKBOOT_LOG:-warn} ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 \
                "$RACKBOOT" serve --config "$RDIR/rackboot.toml" >"$out" 2>&1 &
            SERVER_PID=$!
            # Imported once; the state dir keeps them for the later rounds.
            if [[ ! -e $RDIR/imported ]]; then
                local i code=""
                for ((i = 0; i < 150; i++)); do
                    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$out" >&2; die "rackboot exited at start-up"; }
                    code=$(ip netns exec "$CLI_NS" curl -s -o "$RDIR/import.out" -w '%{http_code}' -m 60 \
                        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
                        --data-binary @"$TMP/import.json" "http://$SRV_IP:$API_PORT/api/v1/nodes/import" || true)
                    [[ $code == 000 ]] || break
                    sleep 0.1
                done
                [[ $code == 200 || $code == 201 ]] || { cat "$RDIR/import.out" >&2; die "importing $NAMES nodes failed (HTTP $code)"; }
                touch "$RDIR/imported"
            fi
            ;;
    esac
    wait_answers "$name" "$out"
}

# CPU ticks of the server and its child processes so far.
cpu_ticks() { proc_tree "$1" | awk '{ n += $2 } END { print n + 0 }'; }
CLK_TCK=$(getconf CLK_TCK)
PERF_ARGS="-s $SRV_IP -d $TMP/queries.txt -l $PERIOD -c $CLIENTS -q $OUTSTANDING -T 1"

TRIAL_NO=0
trial() { # NAME -> QPS, LOST
    local name=$1 out rc t0 c0
    TRIAL_NO=$((TRIAL_NO + 1))
    out=$TMP/trial-$TRIAL_NO-$name
    start_server "$name" "$out.server.log"
    t0=$(date +%s.%N) c0=$(cpu_ticks "$SERVER_PID")
    # shellcheck disable=SC2086
    ip netns exec "$CLI_NS" timeout -k 5 $((PERIOD + 30)) \
        nice -n "$NICE" taskset -c 1 "$DNSPERF" $PERF_ARGS >"$out.dnsperf" 2>&1 &
    LOAD_PID=$!
    rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    BUSY=$(awk -v c0="$c0" -v c1="$(cpu_ticks "$SERVER_PID")" -v t0="$t0" -v t1="$(date +%s.%N)" -v hz="$CLK_TCK" \
        'BEGIN { printf "%d", 100 * (c1 - c0) / hz / (t1 - t0) }')
    stop_server
    ((rc == 0)) || { cat "$out.dnsperf" >&2; die "dnsperf failed (exit $rc) against $name"; }
    QPS=$(awk '/Queries per second:/ { printf "%d", $4 }' "$out.dnsperf")
    # Queries per CPU-second of the server: QPS / (share of a core it used).
    PER_CPU=$(awk -v q="$QPS" -v b="$BUSY" 'BEGIN { printf "%d", (b > 0) ? q * 100 / b : 0 }')
    LOST=$(awk '/Queries lost:/ { print $3 }' "$out.dnsperf")
    NOERROR=$(awk '/Response codes:/ { for (i = 3; i <= NF; i++) if ($i ~ /^NOERROR/) { print $(i + 1); exit } }' "$out.dnsperf")
    [[ -n $QPS ]] || { cat "$out.dnsperf" >&2; die "cannot read dnsperf's statistics ($out.dnsperf)"; }
    printf '  %-8s %7d queries/s  lost %-8s NOERROR %-10s cpu %3d %%  -> %7d queries per CPU-second\n' \
        "$name" "$QPS" "${LOST:-?}" "${NOERROR:-?}" "$BUSY" "$PER_CPU" >&2
}

echo "DNS queries/s: dnsmasq $DNSMASQ_VERSION, nsd $NSD_VERSION vs rackboot $RACKBOOT_VERSION (RACKBOOT_LOG=${RACKBOOT_LOG:-warn});" \
    "$NAMES names, $PERIOD s trials, $ROUNDS round(s)" >&2
echo "load: ip netns exec $CLI_NS nice -n $NICE taskset -c 1 dnsperf $PERF_ARGS" >&2

declare -A BEST=([dnsmasq]=0 [nsd]=0 [rackboot]=0) ALL=() CAP=([dnsmasq]=0 [nsd]=0 [rackboot]=0)
servers=()
for name in dnsmasq nsd rackboot; do [[ -z $ONLY || $ONLY == "$name" ]] && servers+=("$name"); done
for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round of $ROUNDS:" >&2
    if ((round % 2)); then order=("${servers[@]}"); else order=(); for name in "${servers[@]}"; do order=("$name" "${order[@]}"); done; fi
    for name in "${order[@]}"; do
        trial "$name"
        ALL[$name]="${ALL[$name]:-}${ALL[$name]:+ }$QPS"
        ((QPS > BEST[$name])) && BEST[$name]=$QPS
        ((PER_CPU > CAP[$name])) && CAP[$name]=$PER_CPU
    done
done

# ----------------------------------------------------------------- report --
echo
echo "DNS queries/s, $NAMES names (A), dnsperf -c $CLIENTS -q $OUTSTANDING, server on core 0$( ((QUICK)) && echo ', --quick' || true)"
echo "  each round: dnsmasq ${ALL[dnsmasq]:--}; nsd ${ALL[nsd]:--}; rackboot ${ALL[rackboot]:--}"
ratio() { awk -v r="$1" -v d="$2" 'BEGIN { if (d > 0) printf "%.2f", r / d; else printf "n/a" }'; }
printf '  %-24s %10s %18s\n' "" "queries/s" "per CPU-second"
printf '  %-24s %10d %18d\n' "dnsmasq $DNSMASQ_VERSION" "${BEST[dnsmasq]}" "${CAP[dnsmasq]}"
printf '  %-24s %10d %18d\n' "nsd $NSD_VERSION" "${BEST[nsd]}" "${CAP[nsd]}"
printf '  %-24s %10d %18d\n' "rackboot" "${BEST[rackboot]}" "${CAP[rackboot]}"
for peer in dnsmasq nsd; do
    printf '  %-24s %10s %18s\n' "ratio rackboot/$peer" "$(ratio "${BEST[rackboot]}" "${BEST[$peer]}")" \
        "$(ratio "${CAP[rackboot]}" "${CAP[$peer]}")"
done
echo "  (dnsperf ${DNSPERF_VERSION:-?}; $((SECONDS - T0)) s)"
# For benches/run.sh's table: ROW|what|peer|tool|peer|rackboot|ratio|target|met
met() { awk -v r="$1" 'BEGIN { print (r != "n/a" && r >= 1.0) ? "yes" : "no" }'; }
declare -A PEER_LABEL=([dnsmasq]="dnsmasq $DNSMASQ_VERSION" [nsd]="nsd $NSD_VERSION")
for peer in dnsmasq nsd; do
    rq=$(ratio "${BEST[rackboot]}" "${BEST[$peer]}")
    rc=$(ratio "${CAP[rackboot]}" "${CAP[$peer]}")
    echo "ROW|DNS queries/s, $NAMES names|${PEER_LABEL[$peer]}|dnsperf|${BEST[$peer]}|${BEST[rackboot]}|$rq|>= 1.0x|$(met "$rq")"
    echo "ROW|DNS queries per second of server CPU|${PEER_LABEL[$peer]}|dnsperf|${CAP[$peer]}|${CAP[rackboot]}|$rc|>= 1.0x|$(met "$rc")"
done
exit 0
