#!/usr/bin/env bash
# TFTP fetch-time benchmark: rackboot against tftpd-hpa and dnsmasq, in one
# run, on the same network namespaces and the same files. A measurement, not
# a test: it exits 0 whatever the numbers are, non-zero only when the set-up
# fails.
#
# The servers serve one directory holding 1 MiB and 64 MiB of random data.
# All three run at once in rbtftp-srv, each on its own address of one veth
# (MTU 1500; tftpd-hpa 10.81.0.1, dnsmasq 10.81.0.3, rackboot 10.81.0.4), all
# pinned to core 0; the clients run in rbtftp-cli (10.81.0.2), pinned to
# core 1. The machines this runs on are shared and noisy, so the fetches are
# interleaved: each repetition fetches from every server in turn (the order
# rotating), and all servers meet the same spells of noise.
#
#   curl --tftp-blksize 1468 tftp://10.81.0.1/<file>            plain blksize
#   atftp --option "blksize 1468" [--option "windowsize 16"]     RFC 7440
#
# curl (7.88) does not speak windowsize; atftp 0.8 does. A peer that does
# not grant windowsize (its OACK leaves it out) serves atftp in lock-step:
# that row then compares rackboot with windowsize against the peer at plain
# blksize, and says so. Every fetched file is checked by SHA-256 once per
# server and file; each time is the median of REPS fetches. Beside each,
# the server's CPU time per fetch (user + system; not for tftpd-hpa, whose
# forked children are reaped too late to count):
# rackboot polls for a lock-step client's next ACK ([tftp] busy_poll), which
# halves a lock-step fetch and costs CPU while it runs, and the figure shows
# how much.
#
# The concurrency row: 50 curl fetches of the 1 MiB file started at once
# (bounded: each has a 60 s timeout), against tftpd-hpa and rackboot, three
# rounds interleaved; the median wall time from the first start to the last
# end, and failures over all rounds (non-zero exit or wrong bytes). On a
# busy machine this row flatters tftpd-hpa: its 50 forked processes get 50
# scheduler shares of core 0 where rackboot's one thread gets one.
#
# Ratios are speeds, rackboot/peer = peer time / rackboot time: higher is
# better for rackboot, 1.00 is a tie.
#
# BASELINE_BIN=path adds a fourth server, "baseline": that rackboot binary
# (an older build) with the same config on 10.81.0.5, measured interleaved
# with the others; the report then gives rackboot/baseline speed per row, a
# before-and-after comparison that the spread between runs cannot blur.
#
# Usage: benches/tftp.sh [--quick]
#   --quick   3 fetches per figure instead of 21 (1 MiB) and 1 instead of 5 (64 MiB).
# Environment: TMPDIR (files and logs; /tmp by default), KEEP_TMP=1 keeps it,
# RACKBOOT_LOG as for rackboot (default here: warn).
# rackboot is built with cargo build --release unless target/release/rackboot
# is newer than every source file; the run uses a copy of it.
#
# Needs root (namespaces, apt-get). Installs tftpd-hpa, dnsmasq-base, curl
# and atftp with apt-get when missing; in.tftpd and dnsmasq run here in the
# foreground with their own root, never as the system services. Traffic
# stays inside the two namespaces this script makes; they, the servers and
# the temp dir are removed on exit, also on failure.
set -euo pipefail

QUICK=0
while (($#)); do
    case "$1" in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "tftp.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if ((QUICK)); then REPS_SMALL=3 REPS_BIG=1; else REPS_SMALL=21 REPS_BIG=5; fi
CONCURRENT=50
WINDOW=16
BLKSIZE=1468

SRV_NS=rbtftp-srv
CLI_NS=rbtftp-cli
SRV_IF=rbtftp-s0
CLI_IF=rbtftp-c0
CLI_IP=10.81.0.2
declare -A IP_OF=([tftpd-hpa]=10.81.0.1 [dnsmasq]=10.81.0.3 [rackboot]=10.81.0.4)
SERVERS=(tftpd-hpa dnsmasq rackboot)
if [[ -n ${BASELINE_BIN:-} ]]; then
    IP_OF[baseline]=10.81.0.5
    SERVERS+=(baseline)
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$SECONDS

die() { echo "tftp.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (network namespaces, apt-get)"

# ---------------------------------------------------------------- cleanup --
TMP=""
SERVER_PIDS=()
declare -A PID_OF=()
LOCK_FD=""
CLIENT_PIDS=()

# stop_pid, netns_exists, del_netns
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

stop_processes() { # for bench_exit (benches/lib.sh)
    local pid
    for pid in "${CLIENT_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid"; done
}
bench_traps

bench_lock tftp

# ------------------------------------------------------------- packages --
need_pkgs=()
command -v in.tftpd >/dev/null || need_pkgs+=(tftpd-hpa)
command -v dnsmasq >/dev/null || need_pkgs+=(dnsmasq-base)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v atftp >/dev/null || need_pkgs+=(atftp)
for tool in ip taskset timeout ss flock awk sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if ((${#need_pkgs[@]})); then
    # The package's own tftpd-hpa service is not ours to run (policy-rc.d
    # may already have kept it from starting); it listens outside our
    # namespaces anyway.
    apt_install "${need_pkgs[@]}"
fi
IN_TFTPD=$(command -v in.tftpd) || die "in.tftpd not found after install"
DNSMASQ=$(command -v dnsmasq) || die "dnsmasq not found after install"
HPA_VERSION=$("$IN_TFTPD" -V 2>&1 | head -1)
DNSMASQ_VERSION=$("$DNSMASQ" --version | head -1 | awk '{print $3}')
CURL_VERSION=$(curl --version | head -1 | awk '{print $2}')
ATFTP_VERSION=$(atftp -V 2>&1 | head -1)

# -------------------------------------------------------------- rackboot --
rackboot_release "$REPO"
RACKBOOT_VERSION=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)

# ------------------------------------------------------------ namespaces --
stale_netns "$SRV_NS" "$CLI_NS"
TMP=$(mktemp -d -t rackboot-bench-tftp.XXXXXX)
veth_pair "$SRV_NS" "$SRV_IF" "$CLI_NS" "$CLI_IF"
for server in "${SERVERS[@]}"; do ip -n "$SRV_NS" addr add "${IP_OF[$server]}/24" dev "$SRV_IF"; done
ip -n "$CLI_NS" addr add "$CLI_IP/24" dev "$CLI_IF"

# ----------------------------------------------------------------- files --
ROOT=$TMP/root
mkdir -p "$ROOT" "$TMP/out" "$TMP/rackboot"/{state,bootenvs,scripts}
chmod 755 "$TMP" "$ROOT"
head -c $((1 << 20)) /dev/urandom >"$ROOT/1m.bin"
head -c $((64 << 20)) /dev/urandom >"$ROOT/64m.bin"
chmod 644 "$ROOT"/*.bin
declare -A SHA
for f in 1m.bin 64m.bin; do SHA[$f]=$(sha256sum "$ROOT/$f" | awk '{print $1}'); done

RACKBOOT=$TMP/rackboot/rackboot
cp "$RACKBOOT_BUILT" "$RACKBOOT"
printf '[arch.bios]\nlocal = "exit"\n' >"$TMP/rackboot/bootenvs/discovery.toml"
cat >"$TMP/rackboot/rackboot.toml" <<EOF
state_dir = "$TMP/rackboot/state"
assets_dir = "$ROOT"
bootenvs_dir = "$TMP/rackboot/bootenvs"
scripts_dir = "$TMP/rackboot/scripts"
[network]
interface = "$SRV_IF"
address = "${IP_OF[rackboot]}"
[dhcp]
enabled = false
[tftp]
max_windowsize = 64
# The concurrency row's 50 fetches all come from one client address.
max_transfers_per_address = 0
[http]
enabled = false
[dns]
enabled = false
EOF
ip netns exec "$SRV_NS" "$RACKBOOT" check --config "$TMP/rackboot/rackboot.toml" >"$TMP/rackboot/check.log" 2>&1 ||
    { cat "$TMP/rackboot/check.log" >&2; die "rackboot check rejects the generated config"; }
if [[ -n ${BASELINE_BIN:-} ]]; then
    [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN=$BASELINE_BIN is not an executable"
    mkdir -p "$TMP/baseline/state"
    cp "$BASELINE_BIN" "$TMP/baseline/rackboot"
    sed -e "s|$TMP/rackboot/state|$TMP/baseline/state|" -e "s|${IP_OF[rackboot]}|${IP_OF[baseline]}|" \
        "$TMP/rackboot/rackboot.toml" >"$TMP/baseline/rackboot.toml"
fi

# ---------------------------------------------------------------- servers --
start_server() { # NAME
    local name=$1 log=$TMP/$1.log i ip=${IP_OF[$1]} pid
    case $name in
        tftpd-hpa)
            # -L foreground, -s chroot to the root, -u root (the files are ours), -a address:port.
            ip netns exec "$SRV_NS" taskset -c 0 "$IN_TFTPD" -L -s -u root -a "$ip:69" "$ROOT" >"$log" 2>&1 &
            ;;
        dnsmasq)
            # TFTP only (--port=0: no DNS), nothing from /etc; --tftp-max above the 50 at once.
            ip netns exec "$SRV_NS" taskset -c 0 "$DNSMASQ" --keep-in-foreground --conf-file=/dev/null \
                --port=0 --enable-tftp --tftp-root="$ROOT" --listen-address="$ip" --bind-interfaces \
                --tftp-max=100 --user=root --group=root --pid-file= --log-facility=- >"$log" 2>&1 &
            ;;
        rackboot | baseline)
            RACKBOOT_LOG=${RACKBOOT_LOG:-warn} ip netns exec "$SRV_NS" taskset -c 0 "$TMP/$name/rackboot" serve \
                --config "$TMP/$name/rackboot.toml" >"$log" 2>&1 &
            ;;
    esac
    pid=$!   # ip netns exec and taskset exec: this is the server itself
    SERVER_PIDS+=("$pid")
    PID_OF[$name]=$pid
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "$name exited at start-up"; }
        ip netns exec "$SRV_NS" ss -Hlun "src $ip:69" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    cat "$log" >&2
    die "$name did not bind $ip:69 within 15 s"
}

# ---------------------------------------------------------------- clients --
now() { date +%s.%N; }

# CPU time (user + system, children included: tftpd-hpa forks a child per
# transfer) of a server so far, in clock ticks.
cpu_ticks() { # SERVER
    awk '{ print $14 + $15 + $16 + $17 }' "/proc/${PID_OF[$1]}/stat" 2>/dev/null || echo 0
}
CLK_TCK=$(getconf CLK_TCK)

# One fetch of FILE from SERVER with CLIENT (curl | atftp | atftp-window)
# into OUT; its time in seconds on stdout; non-zero if the client failed.
# curl's time is its own (%{time_total}: request to last byte); starting a
# process in a namespace costs 5-15 ms that varies more than the servers
# differ at plain blksize. atftp says nothing of its time, so its fetches
# are timed from outside, process start included: the windowsize rows
# (atftp) are on the slow side of what they would be.
fetch() { # SERVER CLIENT FILE OUT
    local SRV_IP=${IP_OF[$1]} client=$2 file=$3 out=$4 t0 t1 rc=0
    rm -f "$out"
    t0=$(now)
    case $client in
        curl)
            ip netns exec "$CLI_NS" taskset -c 1 timeout 120 curl -sS --tftp-blksize "$BLKSIZE" \
                -w '%{time_total}\n' -o "$out" "tftp://$SRV_IP/$file" 2>>"$TMP/clients.err" || rc=$?
            return "$rc"
            ;;
        atftp)
            ip netns exec "$CLI_NS" taskset -c 1 timeout 120 atftp --option "blksize $BLKSIZE" \
                -g -r "$file" -l "$out" "$SRV_IP" >>"$TMP/clients.err" 2>&1 || rc=$?
            ;;
        atftp-window)
            ip netns exec "$CLI_NS" taskset -c 1 timeout 120 atftp --option "blksize $BLKSIZE" \
                --option "windowsize $WINDOW" -g -r "$file" -l "$out" "$SRV_IP" >>"$TMP/clients.err" 2>&1 || rc=$?
            ;;
    esac
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
    return "$rc"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Sets TIME[server,CLIENT,FILE] (median seconds, or "fail") for every
# server, fetching from each in turn REPS times; the first fetch's bytes are
# checked.
declare -A TIME CPU_MS
measure() { # CLIENT FILE REPS
    local client=$1 file=$2 reps=$3 i k server t out order c0
    declare -A times=() ticks=()
    for ((i = 0; i < reps; i++)); do
        order=()
        for ((k = 0; k < ${#SERVERS[@]}; k++)); do order+=("${SERVERS[(i + k) % ${#SERVERS[@]}]}"); done
        for server in "${order[@]}"; do
            [[ ${TIME[$server,$client,$file]:-} == fail ]] && continue
            out=$TMP/out/$server-$client-$file
            c0=$(cpu_ticks "$server")
            if ! t=$(fetch "$server" "$client" "$file" "$out"); then
                echo "  $server $client $file: fetch $((i + 1)) failed (see $TMP/clients.err)" >&2
                TIME[$server,$client,$file]=fail
                continue
            fi
            if ((i == 0)) && [[ $(sha256sum "$out" | awk '{print $1}') != "${SHA[$file]}" ]]; then
                echo "  $server $client $file: wrong bytes" >&2
                TIME[$server,$client,$file]=fail
                continue
            fi
            times[$server]="${times[$server]:-} $t"
            ticks[$server]=$((${ticks[$server]:-0} + $(cpu_ticks "$server") - c0))
        done
    done
    for server in "${SERVERS[@]}"; do
        [[ ${TIME[$server,$client,$file]:-} == fail ]] && continue
        # shellcheck disable=SC2086
        TIME[$server,$client,$file]=$(printf '%s\n' ${times[$server]} | median)
        CPU_MS[$server,$client,$file]=$(awk -v t="${ticks[$server]:-0}" -v n="$reps" -v hz="$CLK_TCK" \
            'BEGIN { printf "%.1f", 1000 * t / hz / n }')
        # Its forked children are reaped long after their transfer: not counted.
        [[ $server == tftpd-hpa ]] && CPU_MS[$server,$client,$file]=n/a
        printf '  %-9s %-12s %-7s %s s (median of %d:%s), server cpu %s ms per fetch\n' "$server" "$client" "$file" \
            "${TIME[$server,$client,$file]}" "$reps" "${times[$server]}" "${CPU_MS[$server,$client,$file]}" >&2
    done
}

# Whether SERVER grants windowsize: one traced atftp fetch of the small file.
declare -A WINDOWED
probe_window() { # SERVER
    local trace
    trace=$(ip netns exec "$CLI_NS" timeout 60 atftp --trace --option "blksize $BLKSIZE" \
        --option "windowsize $WINDOW" -g -r 1m.bin -l "$TMP/out/probe" "${IP_OF[$1]}" 2>&1 | grep -m1 'received OACK' || true)
    if [[ $trace == *"windowsize: "* ]]; then WINDOWED[$1]=yes; else WINDOWED[$1]=no; fi
    echo "  $1 OACK to blksize $BLKSIZE + windowsize $WINDOW: ${trace:-none}" >&2
}

# 50 curl fetches of 1m.bin at once from SERVER; its wall time on stdout,
# and FAILS increased by the fetches that failed.
FAILS=0
concurrent_once() { # SERVER
    local SRV_IP=${IP_OF[$1]} i t0 t1 rc dir=$TMP/out/conc-$1
    rm -rf "$dir"
    mkdir -p "$dir"
    CLIENT_PIDS=()
    t0=$(now)
    for ((i = 0; i < CONCURRENT; i++)); do
        ip netns exec "$CLI_NS" taskset -c 1 timeout 60 curl -sS --tftp-blksize "$BLKSIZE" \
            -o "$dir/$i" "tftp://$SRV_IP/1m.bin" 2>>"$TMP/clients.err" &
        CLIENT_PIDS+=($!)
    done
    for i in "${!CLIENT_PIDS[@]}"; do
        rc=0
        wait "${CLIENT_PIDS[$i]}" || rc=$?
        if ((rc != 0)) || [[ $(sha256sum "$dir/$i" 2>/dev/null | awk '{print $1}') != "${SHA[1m.bin]}" ]]; then
            FAILS=$((FAILS + 1))
        fi
    done
    t1=$(now)
    CLIENT_PIDS=()
    CONC_T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

# Three interleaved rounds against tftpd-hpa and rackboot; sets CONC_WALL
# (median) and CONC_FAIL (over all rounds) per server.
declare -A CONC_WALL CONC_FAIL
concurrent() {
    local round server
    declare -A walls=()
    for server in tftpd-hpa rackboot; do CONC_FAIL[$server]=0; done
    for ((round = 0; round < 3; round++)); do
        for server in $( ((round % 2)) && echo rackboot tftpd-hpa || echo tftpd-hpa rackboot); do
            FAILS=0
            concurrent_once "$server"
            walls[$server]="${walls[$server]:-} $CONC_T"
            CONC_FAIL[$server]=$((CONC_FAIL[$server] + FAILS))
            echo "  $server $CONCURRENT x 1m.bin at once: $CONC_T s, $FAILS failed" >&2
        done
    done
    for server in tftpd-hpa rackboot; do
        # shellcheck disable=SC2086
        CONC_WALL[$server]=$(printf '%s\n' ${walls[$server]} | median)
    done
}

# ------------------------------------------------------------------- run --
echo "TFTP fetch times: tftpd-hpa ($HPA_VERSION), dnsmasq $DNSMASQ_VERSION, rackboot $RACKBOOT_VERSION;" \
    "curl $CURL_VERSION, $ATFTP_VERSION; server on core 0, clients on core 1$( ((QUICK)) && echo ', --quick' || true)" >&2
for server in "${SERVERS[@]}"; do start_server "$server"; done
for server in "${SERVERS[@]}"; do probe_window "$server"; done
for client in curl atftp atftp-window; do
    measure "$client" 1m.bin "$REPS_SMALL"
    measure "$client" 64m.bin "$REPS_BIG"
done
concurrent

# ----------------------------------------------------------------- report --
ratio() { # PEER_TIME RACKBOOT_TIME -> speed ratio rackboot/peer
    awk -v p="$1" -v r="$2" 'BEGIN { if (p == "fail" || r == "fail" || r + 0 == 0) print "n/a"; else printf "%.2f", p / r }'
}
row() { # LABEL CLIENT FILE [RACKBOOT_CLIENT]
    local label=$1 client=$2 file=$3 rbclient=${4:-$2} h d r
    h=${TIME[tftpd-hpa,$client,$file]} d=${TIME[dnsmasq,$client,$file]} r=${TIME[rackboot,$rbclient,$file]}
    printf '  %-40s %9s %9s %9s %8s %8s\n' "$label" "$h" "$d" "$r" "$(ratio "$h" "$r")" "$(ratio "$d" "$r")"
}
echo
echo "TFTP fetch time, seconds (median); server on core 0, client on core 1, veth MTU 1500"
echo "ratio = speed rackboot/peer = peer time / rackboot time (higher is better for rackboot)"
printf '  %-40s %9s %9s %9s %8s %8s\n' "" tftpd-hpa dnsmasq rackboot "rb/hpa" "rb/dnsm"
row "1 MiB, curl blksize $BLKSIZE" curl 1m.bin
row "64 MiB, curl blksize $BLKSIZE" curl 64m.bin
row "1 MiB, atftp blksize $BLKSIZE" atftp 1m.bin
row "64 MiB, atftp blksize $BLKSIZE" atftp 64m.bin
row "1 MiB, atftp +windowsize $WINDOW" atftp-window 1m.bin
row "64 MiB, atftp +windowsize $WINDOW" atftp-window 64m.bin
echo "  server CPU per fetch (ms), curl: 1 MiB ${CPU_MS[tftpd-hpa,curl,1m.bin]} / ${CPU_MS[dnsmasq,curl,1m.bin]} / ${CPU_MS[rackboot,curl,1m.bin]}," \
    "64 MiB ${CPU_MS[tftpd-hpa,curl,64m.bin]} / ${CPU_MS[dnsmasq,curl,64m.bin]} / ${CPU_MS[rackboot,curl,64m.bin]}" \
    "(rackboot polls for a lock-step client's ACK: [tftp] busy_poll)"
echo "  windowsize $WINDOW granted: tftpd-hpa ${WINDOWED[tftpd-hpa]}, dnsmasq ${WINDOWED[dnsmasq]}, rackboot ${WINDOWED[rackboot]}"
for peer in tftpd-hpa dnsmasq; do
    if [[ ${WINDOWED[$peer]} == no ]]; then
        echo "  $peer does not grant windowsize: its windowsize rows are lock-step at blksize $BLKSIZE;"
        echo "    rackboot with windowsize vs $peer at plain blksize (curl): 1 MiB $(ratio "${TIME[$peer,curl,1m.bin]}" "${TIME[rackboot,atftp-window,1m.bin]}")," \
            "64 MiB $(ratio "${TIME[$peer,curl,64m.bin]}" "${TIME[rackboot,atftp-window,64m.bin]}")"
    fi
done
if [[ -n ${BASELINE_BIN:-} ]]; then
    echo "  rackboot/baseline speed ($BASELINE_BIN), interleaved in this run:"
    for client in curl atftp atftp-window; do
        for f in 1m 64m; do
            printf '    %-13s %-4s %s\n' "$client" "$f" \
                "$(ratio "${TIME[baseline,$client,$f.bin]}" "${TIME[rackboot,$client,$f.bin]}")"
        done
    done
fi
echo
echo "TFTP $CONCURRENT concurrent 1 MiB fetches (curl blksize $BLKSIZE), wall seconds and failures"
echo "  (median of 3 interleaved rounds; failures over all 3)"
printf '  %-12s %8s s  %3s failed\n' tftpd-hpa "${CONC_WALL[tftpd-hpa]}" "${CONC_FAIL[tftpd-hpa]}"
printf '  %-12s %8s s  %3s failed\n' rackboot "${CONC_WALL[rackboot]}" "${CONC_FAIL[rackboot]}"
printf '  %-12s %8s (speed, higher is better)\n' "rb/hpa" "$(ratio "${CONC_WALL[tftpd-hpa]}" "${CONC_WALL[rackboot]}")"
echo "  ($((SECONDS - T0)) s)"
# For benches/run.sh's table: ROW|what|peer|tool|peer|rackboot|ratio|target|met
met() { awk -v r="$1" -v t="$2" 'BEGIN { print (r != "n/a" && r >= t) ? "yes" : "no" }'; }
for peer in tftpd-hpa dnsmasq; do
    for f in 1m 64m; do
        size=$([[ $f == 1m ]] && echo 1 || echo 64)
        r=$(ratio "${TIME[$peer,curl,$f.bin]}" "${TIME[rackboot,atftp-window,$f.bin]}")
        echo "ROW|TFTP $size MiB fetch time (s), rackboot with windowsize $WINDOW|$peer (no windowsize: plain blksize)|atftp / curl|${TIME[$peer,curl,$f.bin]}|${TIME[rackboot,atftp-window,$f.bin]}|$r|>= 2x faster|$(met "$r" 2)"
        r=$(ratio "${TIME[$peer,curl,$f.bin]}" "${TIME[rackboot,curl,$f.bin]}")
        echo "ROW|TFTP $size MiB fetch time (s), plain blksize $BLKSIZE|$peer|curl|${TIME[$peer,curl,$f.bin]}|${TIME[rackboot,curl,$f.bin]}|$r|never slower (>= 1.0x)|$(met "$r" 1)"
    done
done
r=$(ratio "${CONC_WALL[tftpd-hpa]}" "${CONC_WALL[rackboot]}")
ok=$(met "$r" 1); [[ ${CONC_FAIL[rackboot]} == 0 ]] || ok=no
echo "ROW|TFTP $CONCURRENT concurrent 1 MiB, wall time (s)|tftpd-hpa|curl|${CONC_WALL[tftpd-hpa]} (${CONC_FAIL[tftpd-hpa]} failed)|${CONC_WALL[rackboot]} (${CONC_FAIL[rackboot]} failed)|$r|0 failures, >= 1.0x|$ok"
exit 0
