#!/usr/bin/env bash
# 1000-node boot storm against rackboot, end to end: `rackboot storm` powers
# on a synthetic fleet within about a minute and every node goes through
# DHCP (PXE), TFTP of its loader, DHCP (iPXE), its iPXE script, kernel and
# initrd over HTTP, and the operational image's report, config pull and
# report. A measurement, not a test: it exits 0 whatever the numbers are,
# non-zero only when the set-up fails.
#
# Prints the storm's report (per-phase p50/p90/p99/max, throughput, every
# failure by phase and reason), rackboot's peak RSS (VmHWM from
# /proc/<pid>/status, read just before it is stopped), the node records in
# state `configured` as the API counts them, and PASS/FAIL against the
# target: 0 failures and peak RSS < 100 MB (< 150 MB from 10000 nodes on).
#
#   rbstorm-srv: rackboot, veth rbstorm-s0 10.80.0.1/24, taskset -c 0
#                route 10.81.0.0/18 via 10.80.0.2
#   rbstorm-cli: rackboot storm --relay 10.81.0.1 (on lo), veth rbstorm-c0
#                10.80.0.2/24, taskset -c 1
#
# The storm is a relay agent at 10.81.0.1: rackboot serves the relayed
# subnet 10.81.0.0/18 (16 113 addresses in its range). Assets are generated
# (random bytes, so nothing compresses): loaders of a real iPXE's size
# (undionly.kpxe 72 KiB, ipxe-amd64.efi and ipxe-arm64.efi 1 MiB), and
# kernel and initrd much smaller than an operational image's (default
# 1 MiB and 2 MiB: a thousand real images would be ~30 GB through one
# veth on a shared 2-core machine, which measures the machine, not
# rackboot). Architectures mixed evenly: BIOS, x86_64 UEFI, arm64 UEFI.
#
# Usage: benches/storm.sh [--nodes N] [--ramp NODES_PER_S]
#   defaults: 1000 nodes at 17/s (all powered on within ~59 s). A row of
#   racks: --nodes 10000 --ramp 17 (all on within ~10 minutes).
# Environment: KERNEL_KIB, INITRD_KIB (asset sizes), STORM_EXTRA (more
# arguments for rackboot storm, e.g. "--phases dhcp,tftp"), RACKBOOT_LOG (default
# warn), TMPDIR, KEEP_TMP=1 keeps the temp dir (config, logs, JSON report).
# rackboot is built with cargo build --release unless target/release/rackboot
# is newer than every source file; the run uses a copy of it.
#
# Needs root (namespaces), curl, taskset. Traffic stays inside the two
# namespaces this script makes; they, rackboot and the temp dir are removed
# on exit, also on failure.
set -euo pipefail

NODES=1000
RAMP=17
while (($#)); do
    arg=$1; shift
    case "$arg" in
        --nodes) NODES=${1:-}; shift || true ;;
        --ramp) RAMP=${1:-}; shift || true ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "storm.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
[[ $NODES =~ ^[0-9]+$ ]] && ((NODES >= 1 && NODES <= 16113)) || { echo "storm.sh: --nodes wants 1..16113 (the pool)" >&2; exit 2; }
[[ $RAMP =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "storm.sh: --ramp wants nodes per second" >&2; exit 2; }
KERNEL_KIB=${KERNEL_KIB:-1024}
INITRD_KIB=${INITRD_KIB:-2048}
RSS_LIMIT_BYTES=100000000   # 100 MB; 150 MB from 10000 nodes on
((NODES < 10000)) || RSS_LIMIT_BYTES=150000000
RSS_LIMIT_MB=$((RSS_LIMIT_BYTES / 1000000))

SRV_NS=rbstorm-srv
CLI_NS=rbstorm-cli
SRV_IF=rbstorm-s0
CLI_IF=rbstorm-c0
SRV_IP=10.80.0.1
CLI_IP=10.80.0.2
GIADDR=10.81.0.1
TOKEN=rbstorm-admin-$$-$RANDOM$RANDOM

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "storm.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (network namespaces)"
for tool in ip taskset timeout curl flock awk head; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

# ---------------------------------------------------------------- cleanup --
TMP=""
SERVER_PID=""
STORM_PID=""
LOCK_FD=""

# stop_pid, netns_exists, del_netns
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

stop_processes() { # for bench_exit (benches/lib.sh)
    stop_pid "$STORM_PID"
    stop_pid "$SERVER_PID"
}
bench_traps

# One run at a time: the namespace names are fixed.
bench_lock storm

# -------------------------------------------------------------- rackboot --
rackboot_release "$REPO"
RACKBOOT_VERSION=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)

# ------------------------------------------------------------ namespaces --
stale_netns "$SRV_NS" "$CLI_NS"
TMP=$(mktemp -d -t rackboot-bench-storm.XXXXXX)
veth_pair "$SRV_NS" "$SRV_IF" "$CLI_NS" "$CLI_IF"
ip -n "$SRV_NS" addr add "$SRV_IP/24" dev "$SRV_IF"
ip -n "$CLI_NS" addr add "$CLI_IP/24" dev "$CLI_IF"
ip -n "$CLI_NS" addr add "$GIADDR/32" dev lo
ip -n "$SRV_NS" route add 10.81.0.0/18 via "$CLI_IP"

# ----------------------------------------------------------------- files --
R=$TMP/rackboot
mkdir -p "$R"/{assets/x86_64,assets/arm64,bootenvs,scripts,state}
RACKBOOT=$R/rackboot
cp "$RACKBOOT_BUILT" "$RACKBOOT"   # a build during the run must not swap the binary
asset() { head -c "$(($2 * 1024))" /dev/urandom >"$R/assets/$1"; }
asset undionly.kpxe 72
asset ipxe-amd64.efi 1024
asset ipxe-arm64.efi 1024
asset x86_64/vmlinuz "$KERNEL_KIB"
asset x86_64/initrd.img "$INITRD_KIB"
asset arm64/Image "$KERNEL_KIB"
asset arm64/initrd.img "$INITRD_KIB"
printf '#!/bin/sh\necho "hello from {{ node.hostname }}"\n' >"$R/scripts/hello.sh"
printf '#!/bin/sh\n# rackboot-selector: role=none\ntrue\n' >"$R/scripts/unused.sh"
CMDLINE='console=ttyS0 rackboot.url={{ server_url }} rackboot.mac={{ node.mac }} rackboot.token={{ node.token }}'
{
    echo 'description = "storm benchmark"'
    echo 'scripts = ["hello.sh"]'
    for a in bios:x86_64/vmlinuz:x86_64/initrd.img x86_64_efi:x86_64/vmlinuz:x86_64/initrd.img arm64_efi:arm64/Image:arm64/initrd.img; do
        IFS=: read -r arch k i <<<"$a"
        printf '[arch.%s]\nkernel = "%s"\ninitrds = ["%s"]\ncmdline = "%s"\n' "$arch" "$k" "$i" "$CMDLINE"
    done
} >"$R/bootenvs/discovery.toml"
printf 'admin %s storm bench\n' "$TOKEN" >"$R/api-tokens"
chmod 600 "$R/api-tokens"
cat >"$R/rackboot.toml" <<EOF2
state_dir = "$R/state"
assets_dir = "$R/assets"
bootenvs_dir = "$R/bootenvs"
scripts_dir = "$R/scripts"
[network]
interface = "$SRV_IF"
address = "$SRV_IP"
[[dhcp.subnet]]
cidr = "10.80.0.0/24"
ranges = [["10.80.0.100", "10.80.0.199"]]
[[dhcp.subnet]]
cidr = "10.81.0.0/18"
ranges = [["10.81.0.10", "10.81.63.250"]]
[dns]
enabled = false
# The whole simulated fleet comes from the storm's one address.
[tftp]
max_transfers_per_address = 0
[http]
max_connections_per_address = 0
bind_tokens_to_address = false
[api]
tokens_file = "$R/api-tokens"
# The simulated agents report configured and stop: no heartbeat (long
# poll) after that. A storm longer than the heartbeat timeout would see its
# first nodes turn unreachable, rightly, before the count of configured
# records below is taken.
[lifecycle]
heartbeat_timeout = "1h"
EOF2
ip netns exec "$SRV_NS" "$RACKBOOT" check --config "$R/rackboot.toml" >"$TMP/check.log" 2>&1 ||
    { cat "$TMP/check.log" >&2; die "rackboot check rejects the generated config"; }

# ---------------------------------------------------------------- server --
RACKBOOT_LOG=${RACKBOOT_LOG:-warn} ip netns exec "$SRV_NS" taskset -c 0 \
    "$RACKBOOT" serve --config "$R/rackboot.toml" >"$TMP/rackboot.log" 2>&1 &
SERVER_PID=$!   # ip netns exec and taskset exec: this is rackboot itself
for ((i = 0; i < 150; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/rackboot.log" >&2; die "rackboot exited at start-up"; }
    ip netns exec "$SRV_NS" curl -sf -m 1 -o /dev/null "http://$SRV_IP/api/v1/openapi.json" -H "Authorization: Bearer $TOKEN" && break
    sleep 0.1
done
ip netns exec "$SRV_NS" curl -sf -m 2 -o /dev/null "http://$SRV_IP/api/v1/openapi.json" -H "Authorization: Bearer $TOKEN" ||
    { cat "$TMP/rackboot.log" >&2; die "rackboot did not answer HTTP within 15 s"; }
RSS_IDLE=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")

# ----------------------------------------------------------------- storm --
STORM_ARGS=(--relay "$GIADDR" --server "$SRV_IP" --nodes "$NODES" --ramp "$RAMP" --timeout 60s --json "$TMP/storm.json")
# shellcheck disable=SC2206 # word splitting wanted: several arguments in one variable
STORM_ARGS+=(${STORM_EXTRA:-})
echo "storm benchmark: rackboot $RACKBOOT_VERSION (release), $NODES nodes at $RAMP/s;" \
    "assets: loaders 72 KiB (bios) / 1 MiB (efi), kernel $KERNEL_KIB KiB, initrd $INITRD_KIB KiB" >&2
echo "load: ip netns exec $CLI_NS taskset -c 1 rackboot storm ${STORM_ARGS[*]}" >&2
rc=0
# In the background so a signal reaches the trap at once; `timeout` bounds it whatever happens
# (the ramp, plus nine phases of at most 60 s each).
ip netns exec "$CLI_NS" timeout -k 5 $((NODES / ${RAMP%.*} + 9 * 60 + 30)) \
    taskset -c 1 "$RACKBOOT" storm "${STORM_ARGS[@]}" >"$TMP/storm.out" 2>"$TMP/storm.err" &
STORM_PID=$!
wait "$STORM_PID" || rc=$?
STORM_PID=""
# Progress lines: every tenth, to keep the output short; the last one in full.
awk 'NR % 10 == 0' "$TMP/storm.err" >&2
tail -n 1 "$TMP/storm.err" >&2
((rc == 0 || rc == 4)) || { cat "$TMP/storm.out" "$TMP/storm.err" >&2; die "rackboot storm could not run (exit $rc)"; }

kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$TMP/rackboot.log" >&2; die "rackboot exited during the storm"; }
RSS_PEAK=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
RSS_NOW=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")
THREADS=$(awk '/^Threads:/ { print $2 }' "/proc/$SERVER_PID/status")
CONFIGURED=$(set +o pipefail; ip netns exec "$SRV_NS" curl -sf -m 30 -H "Authorization: Bearer $TOKEN" \
    "http://$SRV_IP/api/v1/nodes?state=configured" | grep -o '"mac":' | wc -l)
WARNS=$(grep -cE ' (WARN|ERROR) ' "$TMP/rackboot.log" || true)

# ----------------------------------------------------------------- report --
echo
cat "$TMP/storm.out"
echo
FAILED=$(awk -F': ' '/"failed":/ { gsub(/[ ,]/, "", $2); print $2; exit }' "$TMP/storm.json")
echo "rackboot: peak RSS (VmHWM) $((RSS_PEAK / 1024)) MiB = $((RSS_PEAK * 1024 / 1000000)) MB" \
    "(idle before the storm $((RSS_IDLE / 1024)) MiB, after it $((RSS_NOW / 1024)) MiB, $THREADS threads);" \
    "WARN/ERROR log lines: $WARNS"
echo "node records in state configured (API): $CONFIGURED of $NODES"
verdict=PASS
why=()
[[ $FAILED == 0 ]] || { verdict=FAIL; why+=("$FAILED nodes failed"); }
((RSS_PEAK * 1024 < RSS_LIMIT_BYTES)) || { verdict=FAIL; why+=("peak RSS $((RSS_PEAK * 1024 / 1000000)) MB >= $RSS_LIMIT_MB MB"); }
# Only when the storm ran every phase, configured records are expected.
grep -q '"configured"' "$TMP/storm.json" && [[ $CONFIGURED != "$NODES" ]] &&
    { verdict=FAIL; why+=("$CONFIGURED of $NODES records configured"); }
reasons=$(IFS=';'; echo "${why[*]:-}")
echo "target: 0 failures, p99 per phase reported, server peak RSS < $RSS_LIMIT_MB MB: $verdict${reasons:+ ($reasons)}"
# For benches/run.sh's table: ROW|what|peer|tool|peer|rackboot|ratio|target|met
P99=$(awk '$1 == "end-to-end" { print $6 }' "$TMP/storm.out")
echo "ROW|$NODES-node storm end to end|-|rackboot storm|-|$FAILED failed, e2e p99 $P99, RSS $((RSS_PEAK * 1024 / 1000000)) MB|-|0 failures, RSS < $RSS_LIMIT_MB MB|$([[ $verdict == PASS ]] && echo yes || echo no)"
exit 0
