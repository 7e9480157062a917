#!/usr/bin/env bash
# Every benchmark, one after the other, and one table of their results:
# rackboot and its peers on this machine, on the same data, each server pinned
# to core 0 and each load generator to core 1 (each script says how it
# measures; run one alone with --help).
#
#   benches/dhcp.sh        perfdhcp against Kea and rackboot, each with its
#                          own lease store and both on PostgreSQL
#   benches/dns.sh         dnsperf against dnsmasq, NSD and rackboot
#   benches/tftp.sh        curl/atftp against tftpd-hpa, dnsmasq and rackboot
#   benches/http.sh        curl and wrk against nginx and rackboot
#   benches/storm.sh       rackboot storm: a 1000-node fleet booting end to end
#   benches/visibility.sh  two rackboot appliances on one PostgreSQL database:
#                          a change through one, until the other shows it
#   benches/fleet.sh       perfdhcp against Kea and rackboot holding 0, 10000
#                          and 100000 node records (Kea: host reservations):
#                          rate, p99, RSS and start time by fleet size
#   benches/vm_boot.sh     a BIOS VM netbooting from dnsmasq + nginx and from
#                          rackboot: power-on to the operational image
#   benches/flood.sh       50000 made-up MACs through DHCP: rackboot's memory
#                          before, after, and once the records are reaped
#
# Usage: benches/run.sh [--quick] [NAME...]   (default: all nine, in that order)
#   NAME is dhcp, dns, tftp, http, storm, visibility, fleet, vm_boot or flood.
#   --quick  passed to the scripts that have it: shorter trials, a smoke run.
# FLEET_SIZES: the sizes fleet.sh measures (default 0,10000,100000; the
# million takes long: FLEET_SIZES=0,10000,100000,1000000 adds it).
# Environment: passed on to every script; RACKBOOT_BIN=path measures that
# rackboot binary and builds nothing (otherwise each script builds it with
# cargo build --release when target/release/rackboot is older than a source).
# Each script's whole output goes to $OUT (default: a new temp dir), and the
# table is printed at the end. A measurement, not a test: exits 0 whatever
# the numbers, non-zero only when a script could not run. Needs root.
set -uo pipefail

QUICK=()
NAMES=()
for arg in "$@"; do
    case $arg in
        --quick) QUICK=(--quick) ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        dhcp | dns | tftp | http | storm | visibility | fleet | vm_boot | flood) NAMES+=("$arg") ;;
        *) echo "run.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
((${#NAMES[@]})) || NAMES=(dhcp dns tftp http storm visibility fleet vm_boot flood)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$(mktemp -d -t rackboot-benches.XXXXXX)}
mkdir -p "$OUT"
failed=()
for name in "${NAMES[@]}"; do
    args=()
    # storm.sh and flood.sh have no --quick: a storm or a flood is as big as it is.
    [[ $name != storm && $name != flood ]] && args=("${QUICK[@]}")
    [[ $name == fleet ]] && args+=(--sizes "${FLEET_SIZES:-0,10000,100000}")
    echo "==> benches/$name.sh ${args[*]} (output: $OUT/$name.log)"
    start=$SECONDS
    if bash "$HERE/$name.sh" "${args[@]}" >"$OUT/$name.log" 2>&1; then
        echo "    done in $((SECONDS - start)) s"
    else
        echo "    FAILED to run (exit $?), see $OUT/$name.log"
        failed+=("$name")
    fi
done

echo
echo "rackboot against its peers ($(nproc) cores; $(date -u +%Y-%m-%d); $(git -C "$HERE/.." describe --always --dirty 2>/dev/null))"
echo "ratio: rackboot / peer, higher is better for rackboot"
echo
printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' what peer tool peer rackboot ratio target met
printf '|---|---|---|---|---|---|---|---|\n'
for name in "${NAMES[@]}"; do
    grep '^ROW|' "$OUT/$name.log" 2>/dev/null | cut -d'|' -f2- | sed 's/|/ | /g; s/^/| /; s/$/ |/'
done
((${#failed[@]} == 0)) || { echo; echo "could not run: ${failed[*]}"; exit 1; }
exit 0
