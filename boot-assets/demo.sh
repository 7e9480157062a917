#!/usr/bin/env bash
# rackboot in two minutes: one diskless VM boots over the network, from power-on to `configured`.
#
#   sudo bash boot-assets/demo.sh [--arch uefi|bios|arm64] [--timeout SECONDS] [--accel kvm|tcg]
#                                 [--skip-setup] [--keep]
#
#   --arch        the VM's firmware: uefi (x86_64 OVMF, the default), bios (x86 SeaBIOS + iPXE
#                 ROM) or arm64 (AAVMF, emulated)
#   --timeout     how long the VM gets to reach `configured` (default 240 s)
#   --accel       qemu accelerator for x86 VMs (default: KVM if a probe VM really runs, else TCG)
#   --skip-setup  do not run boot-assets/setup.sh (packages and assets already there)
#   --keep        keep the demo's directory (config, logs, serial console) even on success
#
# What happens:
#   1. boot-assets/setup.sh installs the host packages and fetches/builds the boot assets
#      (iPXE loaders, a Debian kernel, the operational image) into boot-assets/dist/.
#   2. cargo build --release.
#   3. A private network namespace `rackboot-demo` gets a bridge br0 (10.77.0.1/24) and a tap
#      for the VM: no packet of the demo reaches the host's own network.
#   4. `rackboot serve` runs there with a config written to a temporary directory: DHCP, TFTP,
#      HTTP and DNS on br0, the repository's bootenvs and config scripts, a fresh state store.
#   5. qemu starts a VM with no disk. Its firmware's PXE asks DHCP, fetches an iPXE loader by TFTP,
#      iPXE fetches its boot script, kernel and initrd over HTTP, and the operational image reports
#      `booted`, pulls its config scripts, runs them and reports `configured`.
#   6. The node's states are printed as rackboot records them, then its whole boot timeline.
#
# Exits 0 only when the node reached `configured`. Everything the demo starts is stopped and the
# namespace removed on exit, also on failure or Ctrl-C. Needs root (namespaces, taps, ports < 1024).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
readonly NS=rackboot-demo SERVER=10.77.0.1
readonly OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
readonly AAVMF_CODE=/usr/share/AAVMF/AAVMF_CODE.fd AAVMF_VARS=/usr/share/AAVMF/AAVMF_VARS.fd

ARCH=uefi TIMEOUT=240 ACCEL=${RACKBOOT_LAB_ACCEL:-} SETUP=1 KEEP=0
while (($#)); do
    case $1 in
        --arch) ARCH=${2:?--arch needs a value}; shift ;;
        --timeout) TIMEOUT=${2:?--timeout needs a value}; shift ;;
        --accel) ACCEL=${2:?--accel needs a value}; shift ;;
        --skip-setup) SETUP=0 ;;
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case $ARCH in uefi | bios | arm64) ;; *) echo "demo.sh: --arch must be uefi, bios or arm64" >&2; exit 2 ;; esac
case $ACCEL in '' | kvm | tcg) ;; *) echo "demo.sh: --accel must be kvm or tcg" >&2; exit 2 ;; esac
[[ $TIMEOUT =~ ^[0-9]+$ ]] || { echo "demo.sh: --timeout takes whole seconds" >&2; exit 2; }

step() { printf '\n==> %s\n' "$*"; }
say() { printf '    %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "needs root for namespaces, taps and ports 67/69/80: sudo bash $0"

# One demo at a time: they would share the namespace name and the VM's MAC. (Processes started
# below do not inherit the lock: `8>&-`.)
exec 8>/run/rackboot-demo.lock
flock -n 8 || die "another demo.sh is running"

# ---------------------------------------------------------------------------------------------
# Clean-up: every process started here is ended by its PID, then the namespace goes.

DEMO_DIR=$(mktemp -d /tmp/rackboot-demo.XXXXXX)
PIDS=() # started by this script, in start order
SUCCESS=0

stop_pid() { # stop_pid PID: SIGTERM, up to 3 s, then SIGKILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# remove_namespace: ends whatever still runs in the demo namespace (by PID) and deletes it.
remove_namespace() {
    local pids pid i
    ip netns list 2>/dev/null | grep -qw "^$NS" || return 0
    pids=$(timeout 10 ip netns pids "$NS" 2>/dev/null || true)
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in $pids; do [[ -e /proc/$pid ]] && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    timeout 10 ip netns del "$NS" 2>/dev/null || echo "demo: could not delete namespace $NS" >&2
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    remove_namespace
    if ((SUCCESS && !KEEP)); then
        rm -rf "$DEMO_DIR"
    else
        echo "demo: config, logs and serial console kept in $DEMO_DIR" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

# in_ns CMD...: runs CMD inside the demo namespace.
in_ns() { ip netns exec "$NS" "$@"; }

# log_text FILE: the file with terminal escapes and carriage returns removed (OVMF and iPXE draw
# their consoles with cursor movements).
log_text() { sed -e 's/\x1b\[[0-?]*[ -\/]*[@-~]//g' -e 's/\x1b[^[]//g' -e 's/\r//g' "$1" 2>/dev/null; }

# wait_for_text FILE TEXT SECONDS PID: waits until FILE contains TEXT while PID lives.
wait_for_text() {
    local file=$1 text=$2 deadline=$((SECONDS + $3)) pid=$4
    until grep -qF "$text" "$file" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------------------------
# 1. Packages and boot assets

if ((SETUP)); then
    step "boot-assets/setup.sh: host packages, iPXE loaders, kernels, operational image"
    bash "$REPO/boot-assets/setup.sh"
fi
for f in undionly.kpxe ipxe-amd64.efi ipxe-arm64.efi x86_64/vmlinuz x86_64/initrd.img \
    arm64/Image arm64/initrd.img; do
    [[ -f $REPO/boot-assets/dist/$f ]] || die "boot-assets/dist/$f is missing: run boot-assets/setup.sh"
done

# ---------------------------------------------------------------------------------------------
# 2. Build

step "cargo build --release"
# Under sudo, cargo is usually the invoking user's (rustup in ~/.cargo): build as that user, with
# their toolchain, when they own the checkout, so target/ stays theirs.
CARGO_AS=()
if [[ -n ${SUDO_USER:-} && $SUDO_USER != root && $(stat -c %U "$REPO") == "$SUDO_USER" ]]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    CARGO_AS=(runuser -u "$SUDO_USER" -- env "HOME=$user_home" "PATH=$user_home/.cargo/bin:$PATH")
else
    PATH=$HOME/.cargo/bin:$PATH
fi
"${CARGO_AS[@]}" cargo --version >/dev/null 2>&1 ||
    die "no cargo found${SUDO_USER:+ for $SUDO_USER}: install a Rust toolchain (https://rustup.rs)"
(cd "$REPO" && "${CARGO_AS[@]}" cargo build --release)
TARGET_DIR=$(cd "$REPO" && "${CARGO_AS[@]}" cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
RACKBOOT=$TARGET_DIR/release/rackboot
[[ -x $RACKBOOT ]] || die "cargo built no $RACKBOOT"

# ---------------------------------------------------------------------------------------------
# 3. The demo network

step "network namespace $NS: bridge br0 $SERVER/24, tap0 for the VM"
if ip netns list | grep -qw "^$NS"; then
    say "removing $NS left behind by an earlier run"
    remove_namespace
fi
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge
ip -n "$NS" addr add "$SERVER/24" dev br0
ip -n "$NS" link set br0 up
# The tap is made inside the namespace, and qemu runs there too, to open it by name.
ip -n "$NS" tuntap add tap0 mode tap
ip -n "$NS" link set tap0 master br0
ip -n "$NS" link set tap0 up

# ---------------------------------------------------------------------------------------------
# 4. rackboot

step "rackboot serve (config, state and logs in $DEMO_DIR)"
# The API refuses requests without a token from this file (one per demo run).
API_TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
printf 'admin %s demo\n' "$API_TOKEN" >"$DEMO_DIR/api-tokens"
chmod 600 "$DEMO_DIR/api-tokens"
CONFIG=$DEMO_DIR/rackboot.toml
cat >"$CONFIG" <<EOF
# The demo's configuration; configs/rackboot.toml documents every key.
state_dir = "$DEMO_DIR/state"
assets_dir = "$REPO/boot-assets/dist"
bootenvs_dir = "$REPO/configs/bootenvs"
scripts_dir = "$REPO/configs/scripts"

[network]
interface = "br0"

[[dhcp.subnet]]
cidr = "10.77.0.0/24"
ranges = [["10.77.0.100", "10.77.0.199"]]

[dns]
domain = "demo.internal"

[api]
tokens_file = "$DEMO_DIR/api-tokens"
EOF
sed 's/^/    | /' "$CONFIG"
RB_LOG=$DEMO_DIR/rackboot.log
# `ip netns exec` execs its command, so $! is rackboot's own PID.
in_ns "$RACKBOOT" serve --config "$CONFIG" >"$RB_LOG" 2>&1 8>&- &
RB_PID=$!
PIDS+=("$RB_PID")
if ! wait_for_text "$RB_LOG" "rackboot serving" 30 "$RB_PID"; then
    log_text "$RB_LOG" | tail -n 20 >&2
    die "rackboot did not start (log above)"
fi
say "serving DHCP, TFTP, HTTP and DNS on br0 (pid $RB_PID, log $RB_LOG)"

# Quirk (iPXE): while it configures the NIC it also waits for IPv6 autoconfiguration, which ends
# early only when a router advertises on the link. rackboot sends no router adverts, so dnsmasq
# does, in RA-only mode (no DHCP port: it runs beside rackboot). Measured here without it: the
# BIOS VM (2019 iPXE in qemu's NIC ROM) takes 36 s instead of 16, the UEFI VM 24 s instead of 20.
ip -n "$NS" addr add fd77::1/64 dev br0 nodad
RA_LOG=$DEMO_DIR/ra.log
in_ns dnsmasq --keep-in-foreground --conf-file=/dev/null --pid-file= --port=0 \
    --interface=br0 --bind-interfaces --enable-ra --dhcp-range=fd77::,ra-only \
    --log-facility="$RA_LOG" >"$DEMO_DIR/ra.out" 2>&1 8>&- &
PIDS+=("$!")
wait_for_text "$RA_LOG" "router advertisement enabled" 10 "$!" ||
    die "dnsmasq (IPv6 router adverts) did not start: $(cat "$DEMO_DIR/ra.out" "$RA_LOG" 2>/dev/null)"

# ---------------------------------------------------------------------------------------------
# 5. The VM

# x86_accel: prints kvm if KVM can really run a guest here, else tcg.
#
# Quirk (some cloud machines): /dev/kvm exists but is a paravirtual KVM that cannot run ordinary
# guests (OVMF stops with "KVM internal error"), so the device proves nothing. The probe boots
# OVMF with no disk and no NIC and wants its boot manager (BdsDxe) on serial within 8 s.
x86_accel() {
    [[ -c /dev/kvm ]] || { echo tcg; return; }
    local dir=$DEMO_DIR/kvm-probe pid i result=tcg
    mkdir -p "$dir"
    cp "$OVMF_VARS" "$dir/vars.fd"
    qemu-system-x86_64 -accel kvm -M q35 -m 256 -nodefaults -display none -no-reboot \
        -serial "file:$dir/serial.log" \
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE" \
        -drive "if=pflash,format=raw,unit=1,file=$dir/vars.fd" \
        </dev/null >"$dir/qemu.log" 2>&1 8>&- &
    pid=$!
    for ((i = 0; i < 80; i++)); do
        if grep -q BdsDxe "$dir/serial.log" 2>/dev/null; then result=kvm; break; fi
        # On an emulation failure qemu pauses the guest instead of exiting.
        grep -q "KVM internal error" "$dir/qemu.log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$result"
}

MAC=52:54:00:77:de:01
# The SMBIOS UUID, which firmware and iPXE send as DHCP option 97.
UUID=00112233-4455-6677-8899-${MAC//:/}
SERIAL=$DEMO_DIR/serial.log
QEMU_LOG=$DEMO_DIR/qemu.log
# bootindex=1: the NIC is the first (and only) boot device.
NIC=virtio-net-pci,netdev=net0,mac=$MAC,bootindex=1
case $ARCH in
    bios)
        QEMU=qemu-system-x86_64
        # Quirk (SeaBIOS): it prints nothing on serial without a VGA device unless fw_cfg
        # etc/sercon-port names the serial port (0x3f8, 2 bytes little-endian).
        printf '\xf8\x03' >"$DEMO_DIR/sercon-port"
        MACHINE=(-M q35 -fw_cfg "name=etc/sercon-port,file=$DEMO_DIR/sercon-port")
        FIRMWARE_NAME="SeaBIOS, iPXE in the NIC's option ROM"
        ;;
    uefi)
        QEMU=qemu-system-x86_64
        # Every VM gets a fresh copy of the VARS file: a reused one keeps stale boot entries.
        cp "$OVMF_VARS" "$DEMO_DIR/vars.fd"
        # No PXEv6 boot option: a VM that gets no DHCPv4 answer goes to HTTP boot, not to DHCPv6.
        MACHINE=(-M q35 -fw_cfg "name=opt/org.tianocore/IPv6PXESupport,string=n"
            -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
            -drive "if=pflash,format=raw,unit=1,file=$DEMO_DIR/vars.fd")
        # Quirk (OVMF): it would start the iPXE in qemu's NIC option ROM instead of its own PXE;
        # an empty romfile keeps the real firmware PXE -> TFTP loader path.
        NIC+=,romfile=
        FIRMWARE_NAME="OVMF (x86_64 UEFI)"
        ;;
    arm64)
        QEMU=qemu-system-aarch64
        cp "$AAVMF_VARS" "$DEMO_DIR/vars.fd"
        # An x86 host has no arm64 KVM: always emulated.
        ACCEL=tcg
        MACHINE=(-M virt -cpu cortex-a57
            -drive "if=pflash,format=raw,unit=0,readonly=on,file=$AAVMF_CODE"
            -drive "if=pflash,format=raw,unit=1,file=$DEMO_DIR/vars.fd")
        NIC+=,romfile=
        FIRMWARE_NAME="AAVMF (arm64 UEFI)"
        ;;
esac
if [[ -z $ACCEL ]]; then
    step "probing KVM"
    ACCEL=$(x86_accel)
    if [[ $ACCEL == kvm ]]; then say "KVM runs guests here"; else say "KVM cannot run guests here: emulating (TCG)"; fi
fi

step "booting a diskless $ARCH VM ($FIRMWARE_NAME, $ACCEL, MAC $MAC)"
QEMU_ARGS=(-accel "$ACCEL" "${MACHINE[@]}" -name rackboot-demo -m 1024 -smp 1 -uuid "$UUID"
    -nodefaults -display none -no-reboot -serial "file:$SERIAL"
    -netdev "tap,id=net0,ifname=tap0,script=no,downscript=no" -device "$NIC")
echo "$QEMU ${QEMU_ARGS[*]}" >"$QEMU_LOG"
say "serial console: $SERIAL"
VM_START_MS=$(date +%s%3N)
in_ns "$QEMU" "${QEMU_ARGS[@]}" </dev/null >>"$QEMU_LOG" 2>&1 8>&- &
QEMU_PID=$!
PIDS+=("$QEMU_PID")

# ---------------------------------------------------------------------------------------------
# 6. Follow the node

# Reads the node JSON on stdin; prints the state changes recorded after AFTER (ms since the
# epoch) as "<seconds since power-on> <state> <why>", then "now <state> <ms of the last change>
# <reason>". State events read "new node, ..." (-> discovered) or "<from> -> <to>: <why>".
PY_STATES='
import json, re, sys
from datetime import datetime
start, after = int(sys.argv[1]), int(sys.argv[2])
node = json.load(sys.stdin)
last = after
for e in node.get("events", []):
    at = int(datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() * 1000)
    if e["kind"] != "state" or at <= after:
        continue
    m = re.match(r"\s*\w+\s*->\s*(\w+)\s*:?\s*(.*)", e["detail"])
    state, why = (m.group(1), m.group(2)) if m else ("discovered", e["detail"])
    print("%6.1f s  %-12s %s" % ((at - start) / 1000, state, why))
    last = max(last, at)
print("now", node.get("state", "?"), last, node.get("state_reason") or "")
'

# Reads the node JSON on stdin and prints its timeline as a table.
PY_TIMELINE='
import json, sys
from datetime import datetime
start = int(sys.argv[1])
node = json.load(sys.stdin)
print("    %9s  %-18s %s" % ("time", "event", "detail"))
print("    %9s  %-18s %s" % ("-" * 9, "-" * 18, "-" * 50))
for e in node.get("events", []):
    at = datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() * 1000
    detail = (e["detail"].splitlines() or [""])[0]
    if len(detail) > 90:
        detail = detail[:87] + "..."
    print("    %+8.2fs  %-18s %s" % ((at - start) / 1000, e["kind"], detail))
print()
keys = ("mac", "hostname", "arch", "state", "bootenv", "last_seen")
for k in keys:
    if node.get(k) is not None:
        print("    %-10s %s" % (k + ":", node[k]))
'

step "waiting for node $MAC (up to $TIMEOUT s): state changes, seconds since power-on"
URL=http://$SERVER/api/v1/nodes/$MAC
NODE_JSON=$DEMO_DIR/node.json
STATE=none LAST_CHANGE=0 FAILURE=
DEADLINE=$((SECONDS + TIMEOUT))
while :; do
    if ! kill -0 "$RB_PID" 2>/dev/null; then FAILURE="rackboot exited"; break; fi
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then FAILURE="qemu exited (the VM powered off or crashed)"; break; fi
    # 404 until the node's first DHCP packet.
    if in_ns curl -sf -m 3 -H "Authorization: Bearer $API_TOKEN" -o "$NODE_JSON.new" "$URL" 2>/dev/null; then
        mv -f "$NODE_JSON.new" "$NODE_JSON"
        out=$(python3 -c "$PY_STATES" "$VM_START_MS" "$LAST_CHANGE" <"$NODE_JSON")
        sed '$d' <<<"$out" | sed 's/^/    /' | grep -v '^ *$' || true
        read -r _ STATE LAST_CHANGE reason <<<"$(tail -n 1 <<<"$out")"
        [[ $STATE == configured ]] && break
        if [[ $STATE == failed ]]; then FAILURE="the node failed: $reason"; break; fi
    fi
    if ((SECONDS >= DEADLINE)); then FAILURE="not configured within $TIMEOUT s (last state: $STATE)"; break; fi
    sleep 0.5
done
ELAPSED_MS=$(($(date +%s%3N) - VM_START_MS))

if [[ -f $NODE_JSON ]]; then
    step "timeline of node $MAC (seconds since power-on)"
    python3 -c "$PY_TIMELINE" "$VM_START_MS" <"$NODE_JSON"
fi

if [[ -n $FAILURE ]]; then
    step "FAILED: $FAILURE"
    echo "--- VM serial console (last 40 lines of $SERIAL)"
    log_text "$SERIAL" | grep -v '^\s*$' | tail -n 40
    echo "--- qemu ($QEMU_LOG)"
    tail -n 5 "$QEMU_LOG"
    echo "--- rackboot log (last 30 lines of $RB_LOG, without the 404s of our own polling)"
    log_text "$RB_LOG" | grep -vF "no node with MAC $MAC" | tail -n 30
    exit 1
fi

step "node $MAC configured $((ELAPSED_MS / 1000)).$((ELAPSED_MS % 1000 / 100)) s after power-on ($ARCH VM, $ACCEL)"
echo "    the agent on the VM's console:"
log_text "$SERIAL" | grep 'rackboot-agent:' | sed 's/^/    | /'
SUCCESS=1
