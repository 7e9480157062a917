#!/usr/bin/env bash
# Memory after a flood: what rackboot's resident memory does when CLIENTS
# made-up MACs ask DHCP once each, and after the lifecycle sweep has reaped
# the records they left. A measurement, not a test: it exits 0 whatever the
# numbers are, non-zero only when the set-up fails.
#
# rackboot (release build) serves DHCP in rbfl-srv (10.98.0.1, core 0) with
# a 10.98.0.0/16 pool, one-minute leases and
# [lifecycle] reap_discovered_after = "30s"; perfdhcp in rbfl-cli (core 1)
# is a relay (giaddr 10.98.0.2) making CLIENTS DORA exchanges at RATE/s,
# each from a MAC drawn from ten million, so nearly every one is new and
# makes a node record and a lease. Printed, from /proc/PID/status and the
# server's own /metrics:
#   RSS at rest before, RSS right after the flood, records made;
#   RSS once every record made has been reaped (leases expired, records
#   idle), waited for up to REAP_WAIT seconds;
#   "returned": (after flood - after reap) / (after flood - before).
# Target: memory returned after a flood (issue: 50k new clients grew an
# empty store from 13 to ~72 MiB, never given back).
#
# Usage: benches/flood.sh [--clients N] [--rate R]   (default 50000, 5000)
# Environment: RACKBOOT_BIN=path measures that binary (nothing is built);
# KEEP_TMP=1 keeps the temp dir. Needs root; installs kea-admin (perfdhcp)
# with apt-get when it is missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
die() { echo "flood.sh: $*" >&2; exit 1; }
# shellcheck source=benches/lib.sh
source "$HERE/lib.sh"

CLIENTS=50000
RATE=5000
while (($#)); do
    case $1 in
        --clients) CLIENTS=${2:?}; shift ;;
        --rate) RATE=${2:?}; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done
[[ $CLIENTS =~ ^[1-9][0-9]*$ && $RATE =~ ^[1-9][0-9]*$ ]] || die "--clients and --rate want positive numbers"
((CLIENTS <= 60000)) || die "--clients: the /16 pool holds about 65000 leases"
[[ $(id -u) == 0 ]] || die "must run as root (network namespaces, apt-get)"

SRV_NS=rbfl-srv CLI_NS=rbfl-cli SRV_IF=rbfl-s0 CLI_IF=rbfl-c0
SRV_IP=10.98.0.1 CLI_IP=10.98.0.2 HTTP_PORT=8098
# Seconds: leases (60 s) expire, records idle 30 s are reaped, 1000 per
# 5-second sweep pass (src/sweep/), so 50 000 take about 6 minutes.
REAP_WAIT=600
TMP="" SERVER_PID="" LOAD_PID=""
stop_processes() { # for bench_exit (benches/lib.sh)
    stop_pid "$LOAD_PID"
    stop_pid "$SERVER_PID"
}
bench_traps
bench_lock flood

command -v perfdhcp >/dev/null || apt_install kea-admin # Debian 12: perfdhcp is in kea-admin
PERFDHCP=$(command -v perfdhcp) || die "perfdhcp not found after install"
command -v curl >/dev/null || apt_install curl
rackboot_release "$REPO"

stale_netns "$SRV_NS" "$CLI_NS"
TMP=$(mktemp -d -t rackboot-bench-flood.XXXXXX)
veth_pair "$SRV_NS" "$SRV_IF" "$CLI_NS" "$CLI_IF"
ip -n "$SRV_NS" addr add "$SRV_IP/16" dev "$SRV_IF"
ip -n "$CLI_NS" addr add "$CLI_IP/16" dev "$CLI_IF"

R=$TMP/rackboot
mkdir -p "$R"/{state,assets,bootenvs,scripts}
head -c 4096 /dev/zero >"$R/assets/vmlinuz"
cat >"$R/bootenvs/discovery.toml" <<'EOF'
[arch.bios]
kernel = "vmlinuz"
cmdline = "console=ttyS0"
EOF
rackboot_toml_head "$R" "$SRV_IF" "$SRV_IP" >"$R/rackboot.toml"
cat >>"$R/rackboot.toml" <<EOF
[dhcp]
lease_seconds = 60
# perfdhcp is one relay: the flood is the load, not what the limiter stops.
rate_limit_per_relay = 0
[[dhcp.subnet]]
cidr = "10.98.0.0/16"
ranges = [["10.98.1.0", "10.98.255.254"]]
[lifecycle]
reap_discovered_after = "30s"
[http]
port = $HTTP_PORT
[tftp]
enabled = false
[dns]
enabled = false
EOF
cp "$RACKBOOT_BUILT" "$R/rackboot"
ip netns exec "$SRV_NS" "$R/rackboot" check --config "$R/rackboot.toml" >"$R/check.log" 2>&1 ||
    { cat "$R/check.log" >&2; die "rackboot check rejects the generated config"; }

RACKBOOT_LOG=warn ip netns exec "$SRV_NS" taskset -c 0 "$R/rackboot" serve --config "$R/rackboot.toml" \
    >"$R/rackboot.log" 2>&1 &
SERVER_PID=$!

metric() { # NAME: its value in /metrics (0 when absent)
    ip netns exec "$SRV_NS" curl -sf -m 5 "http://$SRV_IP:$HTTP_PORT/metrics" |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d", s }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"; }
# "anon A MiB, file F MiB": the heap and the mapped files (SQLite's) apart.
rss_parts() {
    awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { printf "anon %.1f, file %.1f MiB", a / 1024, f / 1024 }' \
        "/proc/$SERVER_PID/status"
}
for ((i = 0; i < 150; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$R/rackboot.log" >&2; die "rackboot exited at start-up"; }
    ip netns exec "$SRV_NS" curl -sf -m 1 -o /dev/null "http://$SRV_IP:$HTTP_PORT/healthz" && break
    sleep 0.1
done
((i < 150)) || die "rackboot did not serve within 15 s"
sleep 3
RSS0=$(rss_kib) PARTS0=$(rss_parts)

echo "flood: $CLIENTS DORA at $RATE/s from new MACs (perfdhcp, relayed) ..." >&2
ip netns exec "$CLI_NS" taskset -c 1 "$PERFDHCP" -4 -g single -r "$RATE" -R 10000000 -n "$CLIENTS" \
    -l "$CLI_IP" "$SRV_IP" >"$TMP/perfdhcp.log" 2>&1 &
LOAD_PID=$!
wait "$LOAD_PID" || true # perfdhcp exits non-zero when it lost a packet
LOAD_PID=""
sleep 2
RSS1=$(rss_kib) PARTS1=$(rss_parts)
MADE=$(metric rackboot_nodes_created_total)
echo "flood: $MADE records made; waiting for the sweep to reap them (up to $REAP_WAIT s) ..." >&2
for ((t = 0; t < REAP_WAIT; t += 5)); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$R/rackboot.log" >&2; die "rackboot exited during the run"; }
    REAPED=$(metric rackboot_nodes_reaped_total)
    ((REAPED >= MADE)) && break
    sleep 5
done
sleep 5 # a purge of freed pages by the allocator is not instant
RSS2=$(rss_kib) PARTS2=$(rss_parts)
REAPED=$(metric rackboot_nodes_reaped_total)

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
RETURNED=$(awk -v a="$RSS0" -v b="$RSS1" -v c="$RSS2" 'BEGIN { if (b > a) printf "%.0f", 100 * (b - c) / (b - a); else print "n/a" }')
echo
echo "Memory after a flood of $CLIENTS new DHCP clients (rackboot $(rackboot_version "$REPO"), VmRSS):"
printf '  at rest before      %7s MiB   (%s)\n' "$(mib "$RSS0")" "$PARTS0"
printf '  after the flood     %7s MiB   (%s; %d records made, %d B each)\n' "$(mib "$RSS1")" "$PARTS1" \
    "$MADE" "$(((RSS1 - RSS0) * 1024 / (MADE > 0 ? MADE : 1)))"
printf '  after the reaping   %7s MiB   (%s; %d records reaped)\n' "$(mib "$RSS2")" "$PARTS2" "$REAPED"
printf '  returned            %7s %%\n' "$RETURNED"
echo "ROW|RSS after a flood of $CLIENTS new DHCP clients, then after the sweep reaped them (MiB)|-|perfdhcp|-|$(mib "$RSS0") -> $(mib "$RSS1") -> $(mib "$RSS2") ($RETURNED % of the growth returned)|-|memory returned|$(awk -v r="$RETURNED" 'BEGIN { print (r != "n/a" && r >= 50) ? "yes" : "no" }')"
