#!/usr/bin/env bash
# HTTP benchmark: rackboot against nginx, in one run, on the same network
# namespaces and the same data. A measurement, not a test: it exits 0
# whatever the numbers are, non-zero only when the set-up fails.
#
# Two loads, each against both servers in turn (ROUNDS times, which server
# goes first alternating; each server's best round counts):
#
#  (a) assets: 50 concurrent `curl`s each fetch one 64 MiB file (an
#      initrd); the figure is the aggregate throughput (bytes / wall time
#      of the whole batch). rackboot's URLs carry ?mac= as its scripts'
#      do, so each fetch goes on a node's timeline as in a real boot.
#  (b) scripts: `wrk -c 100` for DURATION seconds on /boot/<mac>.ipxe
#      (rackboot renders a node's iPXE script) against nginx serving a
#      static file of the same size.
#  (c) small assets: the same wrk load on a 300-byte file under /assets/
#      (a loader's config, say) against nginx serving the same file.
#
# Both servers run in the namespace rbhttp-srv on core 0 (taskset -c 0),
# the clients in rbhttp-cli on core 1, joined by a veth pair. nginx runs
# from its own config in the temp dir (1 worker, sendfile, no access log),
# not as the system service. Each line shows the server's CPU use over the
# load. Servers and clients run at nice -10 (BENCH_NICE=N to change): the
# machines this runs on are shared with builds.
#
# Usage: benches/http.sh [--quick] [--rounds N]
#   --quick     one round, 5-second wrk runs.
#   --rounds N  repeat both loads N times (default 3).
# Environment: TMPDIR (where files and logs go), KEEP_TMP=1 keeps that dir,
# RACKBOOT_BIN=path measures that binary instead (e.g. an older build),
# NGINX_EXTRA='directive ...;' adds to nginx's http block (a directive the
# config already sets is refused by nginx), NGINX_SENDFILE=off turns nginx's
# sendfile off (on by default).
# Otherwise rackboot is built with cargo build --release unless target/release/rackboot
# is newer than every source file; the run uses a copy of it.
#
# Needs root (namespaces, apt-get). Installs nginx-light, wrk and curl with
# apt-get when they are missing. Traffic stays inside the two namespaces this
# script makes; they, the servers and the temp dir are removed on exit, also
# on failure.
set -euo pipefail

QUICK=0
ROUNDS=""
while (($#)); do
    arg=$1; shift
    case "$arg" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=${1:-}; shift || true ;;
        --rounds=*) ROUNDS=${arg#--rounds=} ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "http.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-$((QUICK ? 1 : 3))}
[[ $ROUNDS =~ ^[1-9]$ ]] || { echo "http.sh: --rounds wants 1..9" >&2; exit 2; }
DURATION=$((QUICK ? 5 : 10))   # seconds of wrk per run
CLIENTS=50                     # concurrent curls in (a)
SIZE_MIB=64                    # the initrd in (a)
CONNS=100                      # wrk connections in (b)

SRV_NS=rbhttp-srv
CLI_NS=rbhttp-cli
SRV_IF=rbhttp-s0
CLI_IF=rbhttp-c0
SRV_IP=10.82.0.1
CLI_IP=10.82.0.2
RB_PORT=80
NGINX_PORT=8080
MAC=52:54:00:b0:00:01   # the node whose script (b) fetches
NICE=${BENCH_NICE:--10}  # servers and clients: ahead of builds on a shared machine
[[ $NICE =~ ^-?[0-9]+$ ]] || { echo "http.sh: BENCH_NICE wants a number" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$SECONDS

die() { echo "http.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (network namespaces, apt-get)"

# ---------------------------------------------------------------- cleanup --
TMP=""
RB_PID=""
NGINX_PID=""
LOCK_FD=""

# stop_pid, netns_exists, del_netns
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

stop_processes() { # for bench_exit (benches/lib.sh)
    stop_pid "$RB_PID"
    stop_pid "$NGINX_PID"
}
bench_traps

# One run at a time: the namespace names are fixed.
bench_lock http

# ------------------------------------------------------------- packages --
need_pkgs=()
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v curl >/dev/null || need_pkgs+=(curl)
for tool in ip taskset timeout ss flock awk head; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if ((${#need_pkgs[@]})); then
    apt_install "${need_pkgs[@]}"
fi
NGINX=$(command -v nginx) || die "nginx not found after install"
WRK=$(command -v wrk) || die "wrk not found after install"
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')

# -------------------------------------------------------------- rackboot --
if [[ -n ${RACKBOOT_BIN:-} ]]; then   # another build, e.g. to compare with an older commit
    RACKBOOT_BUILT=$RACKBOOT_BIN
    [[ -x $RACKBOOT_BUILT ]] || die "RACKBOOT_BIN=$RACKBOOT_BIN is not an executable"
    RACKBOOT_VERSION="$RACKBOOT_BIN"
else
    rackboot_release "$REPO"
    RACKBOOT_VERSION=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
fi

# ------------------------------------------------------------ namespaces --
stale_netns "$SRV_NS" "$CLI_NS"
TMP=$(mktemp -d -t rackboot-bench-http.XXXXXX)
chmod 755 "$TMP"   # nginx's worker reads the files
veth_pair "$SRV_NS" "$SRV_IF" "$CLI_NS" "$CLI_IF"
ip -n "$SRV_NS" addr add "$SRV_IP/24" dev "$SRV_IF"
ip -n "$CLI_NS" addr add "$CLI_IP/24" dev "$CLI_IF"

# ------------------------------------------------------------------ data --
RDIR=$TMP/rackboot
NDIR=$TMP/nginx
mkdir -p "$RDIR"/{assets,bootenvs,scripts,state} "$NDIR"/{html,logs,tmp}
# Incompressible bytes (neither server compresses, but keep it honest).
head -c $((SIZE_MIB << 20)) /dev/urandom >"$RDIR/assets/initrd.img" || die "cannot write the test initrd"
head -c 4096 /dev/urandom >"$RDIR/assets/vmlinuz"
head -c 300 /dev/urandom >"$RDIR/assets/small.cfg"
cp "$RDIR/assets/small.cfg" "$NDIR/html/small.cfg"
ln "$RDIR/assets/initrd.img" "$NDIR/html/initrd.img" 2>/dev/null || cp "$RDIR/assets/initrd.img" "$NDIR/html/initrd.img"
cat >"$RDIR/bootenvs/discovery.toml" <<'EOF'
[arch.bios]
kernel = "vmlinuz"
initrds = ["initrd.img"]
cmdline = "console=ttyS0 rackboot.url={{ server_url }} rackboot.token={{ node.token }} ip=dhcp"
EOF
RACKBOOT=$RDIR/rackboot
cp "$RACKBOOT_BUILT" "$RACKBOOT"
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
[tftp]
enabled = false
[http]
port = $RB_PORT
# wrk and the curls all come from one client address, which no node leased.
max_connections_per_address = 0
bind_tokens_to_address = false
[dns]
enabled = false
EOF
ip netns exec "$SRV_NS" "$RACKBOOT" check --config "$RDIR/rackboot.toml" >"$RDIR/config-check.log" 2>&1 ||
    { cat "$RDIR/config-check.log" >&2; die "rackboot check rejects the generated config"; }

cat >"$NDIR/nginx.conf" <<EOF
# One worker on one core, as rackboot gets; sendfile as nginx ships it for
# static files; keep-alive connections live as long as wrk's (nginx's
# default closes one after 1000 requests, which rackboot does not).
user root;
worker_processes 1;
pid $NDIR/nginx.pid;
error_log $NDIR/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile ${NGINX_SENDFILE:-on};
    tcp_nopush on;
    keepalive_requests 1000000;
    # Open files kept open between requests, as a tuned static server does.
    open_file_cache max=1000 inactive=60s;
    ${NGINX_EXTRA:-}
    default_type application/octet-stream;
    client_body_temp_path $NDIR/tmp;
    proxy_temp_path $NDIR/tmp;
    fastcgi_temp_path $NDIR/tmp;
    uwsgi_temp_path $NDIR/tmp;
    scgi_temp_path $NDIR/tmp;
    server {
        listen $SRV_IP:$NGINX_PORT;
        root $NDIR/html;
    }
}
EOF
ip netns exec "$SRV_NS" "$NGINX" -t -p "$NDIR" -c "$NDIR/nginx.conf" >"$NDIR/config-check.log" 2>&1 ||
    { cat "$NDIR/config-check.log" >&2; die "nginx -t rejects the generated config"; }

wait_port() { # NAME PID PORT LOG: bounded (15 s) wait for a TCP listener
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$2" 2>/dev/null || { cat "$4" >&2; die "$1 exited at start-up"; }
        ip netns exec "$SRV_NS" ss -Hltn "sport = :$3" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    cat "$4" >&2
    die "$1 did not listen on port $3 within 15 s"
}

# Both servers on core 0 for the whole run; only one is loaded at a time.
RACKBOOT_LOG=${RACKBOOT_LOG:-warn} ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 \
    "$RACKBOOT" serve --config "$RDIR/rackboot.toml" >"$RDIR/rackboot.log" 2>&1 &
RB_PID=$!
ip netns exec "$SRV_NS" nice -n "$NICE" taskset -c 0 "$NGINX" -p "$NDIR" -c "$NDIR/nginx.conf" -g 'daemon off;' \
    >"$NDIR/logs/stdout.log" 2>&1 &
NGINX_PID=$!
wait_port rackboot "$RB_PID" "$RB_PORT" "$RDIR/rackboot.log"
wait_port nginx "$NGINX_PID" "$NGINX_PORT" "$NDIR/logs/stdout.log"

cli() { ip netns exec "$CLI_NS" nice -n "$NICE" taskset -c 1 "$@"; }

# The script (b) fetches, rendered once; nginx gets a file of its size.
SCRIPT_URL="http://$SRV_IP:$RB_PORT/boot/$MAC.ipxe?arch=bios"
cli curl -sf -m 10 -o "$NDIR/html/script.ipxe" "$SCRIPT_URL" || die "rackboot did not render $SCRIPT_URL (see $RDIR/rackboot.log)"
SCRIPT_BYTES=$(stat -c %s "$NDIR/html/script.ipxe")
cli curl -sf -m 10 -o /dev/null "http://$SRV_IP:$NGINX_PORT/script.ipxe" || die "nginx does not serve script.ipxe (see $NDIR/logs/error.log)"
# The (a) clients are nodes too: each has its script first, as in a boot.
for ((i = 0; i < CLIENTS; i++)); do
    cli curl -sf -m 10 -o /dev/null "http://$SRV_IP:$RB_PORT/boot/$(printf '52:54:00:b1:00:%02x' "$i").ipxe?arch=bios" ||
        die "rackboot did not render the script of client $i"
done

# CPU time (user + system, all threads) of PID and its children (nginx's
# worker is a child of its master), in clock ticks.
cpu_ticks() {
    local p t=0 v
    for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)
# CPU share of the server over [T_START, now], from C_START ticks.
busy_since() { # PID C_START T_START
    awk -v c0="$2" -v c1="$(cpu_ticks "$1")" -v t0="$3" -v t1="$(date +%s.%N)" -v hz="$CLK_TCK" \
        'BEGIN { printf "%d", 100 * (c1 - c0) / hz / (t1 - t0) }'
}

# (a): CLIENTS concurrent curls of the initrd. Sets MIBS (MiB/s), SLOWEST.
assets_run() { # NAME
    local name=$1 pid url base i t0 c0 t1 out=$TMP/assets-$1 failed=0
    if [[ $name == rackboot ]]; then pid=$RB_PID base="http://$SRV_IP:$RB_PORT/assets/initrd.img?mac="
    else pid=$NGINX_PID base="http://$SRV_IP:$NGINX_PORT/initrd.img?mac="; fi
    rm -f "$out".*
    t0=$(date +%s.%N) c0=$(cpu_ticks "$pid")
    local pids=()
    for ((i = 0; i < CLIENTS; i++)); do
        url=$base$(printf '52:54:00:b1:00:%02x' "$i")
        cli timeout 120 curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}\n' "$url" >"$out.$i" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || failed=$((failed + 1)); done
    t1=$(date +%s.%N)
    BUSY=$(busy_since "$pid" "$c0" "$t0")
    local bytes
    bytes=$(cat "$out".* | awk '$1 == 200 { s += $2 } END { printf "%.0f", s }')
    local want=$((CLIENTS * (SIZE_MIB << 20)))
    ((failed == 0 && bytes == want)) || die "$name: $failed curls failed, $bytes of $want bytes (see $out.*)"
    SLOWEST=$(cat "$out".* | awk '{ if ($3 > m) m = $3 } END { printf "%.2f", m }')
    MIBS=$(awk -v b="$bytes" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%d", b / 1048576 / (t1 - t0) }')
    printf '  (a) %-8s %2d x %d MiB: %6d MiB/s aggregate, slowest %5s s, server cpu %3d %%\n' \
        "$name" "$CLIENTS" "$SIZE_MIB" "$MIBS" "$SLOWEST" "$BUSY" >&2
}

# (b), (c): wrk on the script (rackboot) or its static twin (nginx), or on
# the small asset. Sets RPS.
wrk_run() { # LOAD(b|c) NAME
    local load=$1 name=$2 pid url t0 c0 out=$TMP/wrk-$1-$2
    case $load-$name in
    b-rackboot) pid=$RB_PID url=$SCRIPT_URL ;;
    b-nginx) pid=$NGINX_PID url="http://$SRV_IP:$NGINX_PORT/script.ipxe" ;;
    c-rackboot) pid=$RB_PID url="http://$SRV_IP:$RB_PORT/assets/small.cfg" ;;
    c-nginx) pid=$NGINX_PID url="http://$SRV_IP:$NGINX_PORT/small.cfg" ;;
    esac
    t0=$(date +%s.%N) c0=$(cpu_ticks "$pid")
    cli timeout $((DURATION + 30)) "$WRK" -t 2 -c "$CONNS" -d "${DURATION}s" --latency "$url" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk against $name failed"; }
    BUSY=$(busy_since "$pid" "$c0" "$t0")
    RPS=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' "$out")
    local errors p99
    errors=$(awk '/Non-2xx|Socket errors/ { print }' "$out" | tr -s ' ' | paste -sd ';' -)
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    [[ -n $RPS ]] || { cat "$out" >&2; die "cannot read wrk's Requests/sec ($out)"; }
    printf '  (%s) %-8s %d connections: %7d req/s, p99 %8s, server cpu %3d %%%s\n' \
        "$load" "$name" "$CONNS" "$RPS" "${p99:-?}" "$BUSY" "${errors:+  ($errors)}" >&2
}

echo "HTTP: nginx $NGINX_VERSION vs rackboot $RACKBOOT_VERSION; servers on core 0, clients on core 1;" \
    "$ROUNDS round(s)" >&2
declare -A BEST_MIBS=([nginx]=0 [rackboot]=0) BEST_RPS=([nginx]=0 [rackboot]=0) BEST_SMALL=([nginx]=0 [rackboot]=0)
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    echo "round $ROUND of $ROUNDS:" >&2
    if ((ROUND % 2)); then order=(nginx rackboot); else order=(rackboot nginx); fi
    for name in "${order[@]}"; do
        assets_run "$name"
        ((MIBS > BEST_MIBS[$name])) && BEST_MIBS[$name]=$MIBS
    done
    for name in "${order[@]}"; do
        wrk_run b "$name"
        ((RPS > BEST_RPS[$name])) && BEST_RPS[$name]=$RPS
    done
    for name in "${order[@]}"; do
        wrk_run c "$name"
        ((RPS > BEST_SMALL[$name])) && BEST_SMALL[$name]=$RPS
    done
done
# Still healthy after the load, and nothing went wrong in its log.
kill -0 "$RB_PID" 2>/dev/null || die "rackboot died during the run (see $RDIR/rackboot.log)"
RB_WARN=$(grep -c -E ' WARN | ERROR ' "$RDIR/rackboot.log" || true)

ratio() { awk -v r="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.2f", r / n; else print "n/a" }'; }
echo
echo "HTTP, server on core 0, clients on core 1 (best of $ROUNDS round(s))$( ((QUICK)) && echo ', --quick' || true)"
printf '  %-44s %10s %10s %7s\n' "" nginx rackboot ratio
printf '  %-44s %10d %10d %7s\n' "(a) $SIZE_MIB MiB initrd, $CLIENTS concurrent curl: MiB/s" \
    "${BEST_MIBS[nginx]}" "${BEST_MIBS[rackboot]}" "$(ratio "${BEST_MIBS[rackboot]}" "${BEST_MIBS[nginx]}")"
printf '  %-44s %10d %10d %7s\n' "(b) per-MAC script ($SCRIPT_BYTES B), wrk -c $CONNS: req/s" \
    "${BEST_RPS[nginx]}" "${BEST_RPS[rackboot]}" "$(ratio "${BEST_RPS[rackboot]}" "${BEST_RPS[nginx]}")"
printf '  %-44s %10d %10d %7s\n' "(c) 300 B asset, wrk -c $CONNS: req/s" \
    "${BEST_SMALL[nginx]}" "${BEST_SMALL[rackboot]}" "$(ratio "${BEST_SMALL[rackboot]}" "${BEST_SMALL[nginx]}")"
echo "  targets: (a) >= 0.90, (b) >= 1.0, (c) >= 0.80; rackboot log: $RB_WARN WARN/ERROR lines; ($((SECONDS - T0)) s)"
# For benches/run.sh's table: ROW|what|peer|tool|peer|rackboot|ratio|target|met
met() { awk -v r="$1" -v t="$2" 'BEGIN { print (r != "n/a" && r >= t) ? "yes" : "no" }'; }
ra=$(ratio "${BEST_MIBS[rackboot]}" "${BEST_MIBS[nginx]}")
rb=$(ratio "${BEST_RPS[rackboot]}" "${BEST_RPS[nginx]}")
rc=$(ratio "${BEST_SMALL[rackboot]}" "${BEST_SMALL[nginx]}")
echo "ROW|HTTP $SIZE_MIB MiB initrd, $CLIENTS concurrent (MiB/s)|nginx|curl|${BEST_MIBS[nginx]}|${BEST_MIBS[rackboot]}|$ra|>= 0.9x|$(met "$ra" 0.9)"
echo "ROW|HTTP per-MAC script, $CONNS connections (req/s)|nginx (static file)|wrk|${BEST_RPS[nginx]}|${BEST_RPS[rackboot]}|$rb|>= 1.0x|$(met "$rb" 1.0)"
echo "ROW|HTTP 300 B asset, $CONNS connections (req/s)|nginx (static file)|wrk|${BEST_SMALL[nginx]}|${BEST_SMALL[rackboot]}|$rc|>= 0.8x|$(met "$rc" 0.8)"
exit 0
