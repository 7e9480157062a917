#!/usr/bin/env bash
# BIOS VM boot time: rackboot against dnsmasq + nginx, in one run, in the VM
# tests' lab (tests/common/lab.rs) with no IPv6 router on the link. A
# measurement, not a test: it exits 0 whatever the numbers are, non-zero only
# when the set-up fails or a VM does not boot.
#
# Each run boots one diskless x86 BIOS VM (SeaBIOS, qemu's e1000 iPXE option
# ROM, TCG) twice, each time in a fresh namespace: from dnsmasq (DHCP, iPXE
# clients handed http://.../boot.ipxe) + nginx (script, kernel, initrd), then
# from rackboot serve with the repository's configs and boot-assets/dist.
# Both boot the same kernel and initrd with the same command line; the time
# from qemu's start to the image's first console line ("rackboot-agent:
# start") is the part the servers differ in. rackboot's time to
# "configured" is printed beside it. Runs alternate, so a slow spell of the
# machine lands on both; the figures are medians. See benches/vm_boot.rs.
#
# Usage: benches/vm_boot.sh [--quick] [--runs N]
#   --quick   one run instead of three
# Builds with cargo bench (release profile); RACKBOOT_BIN is not used: the
# lab starts the rackboot cargo built beside the benchmark. Needs root, the
# packages and assets of boot-assets/setup.sh. Keeps its labs' logs and
# captures under target/tmp/lab/vmboot-*.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
die() { echo "vm_boot.sh: $*" >&2; exit 1; }
stop_processes() { :; } # the lab ends its own processes by PID
# shellcheck source=benches/lib.sh
source "$HERE/lib.sh"

RUNS=3
while (($#)); do
    case $1 in
        --quick) RUNS=1 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number, not $RUNS"
((EUID == 0)) || die "needs root (network namespaces, taps)"
[[ -f $REPO/boot-assets/dist/x86_64/vmlinuz ]] || die "boot-assets/dist is missing: run boot-assets/setup.sh"
for cmd in qemu-system-x86_64 dnsmasq tcpdump curl; do
    command -v "$cmd" >/dev/null || die "$cmd not found: run boot-assets/setup.sh"
done
bench_lock vm_boot
command -v nginx >/dev/null || apt_install nginx-light
command -v nginx >/dev/null || die "nginx not found after install"

cd "$REPO"
VM_BOOT_RUNS=$RUNS cargo bench --locked --bench vm_boot
