#!/usr/bin/env bash
# Visibility benchmark: two rackboot appliances on one PostgreSQL database,
# and how long a change made through one takes to show through the other. A
# measurement, not a test: it exits 0 whatever the numbers are, non-zero
# only when the set-up fails.
#
# The script starts a scratch PostgreSQL cluster (initdb in the temp dir, a
# Unix socket only, PostgreSQL's defaults: fsync on) with one empty database,
# and two `rackboot serve` on it ([store] engine = "postgres", appliances
# vis-a and vis-b; rackboot makes its schema at start): HTTP and the API
# only (DHCP, TFTP and DNS off), on the loopback of the namespace rbvis, A on
# 127.0.0.1:8081 and B on 127.0.0.1:8082, each with its own state dir and an
# admin token. Both appliances and PostgreSQL run on core 0 at nice -10
# (BENCH_NICE=N to change), the client on core 1.
#
# The client (python3, http.client, one kept-alive connection to each
# appliance) makes COUNT changes through A's API, alternating:
#   - create a node:  POST /api/v1/nodes {"mac": M, "hostname": "vis-K"}
#   - edit it:        PATCH /api/v1/nodes/M {"hostname": "vis-K-b", "bootenv": "alt"}
# and after each one polls GET /api/v1/nodes/M on B back to back until B
# shows the change (up to 5 s; one that does not show is counted as such).
# Per change it times: from sending the request to A until B shows it (the
# figure reported), and from A's answer until B shows it. Four changes
# first, not counted, warm both up; the next change starts 10 ms after the
# last was seen. Printed: p50, p99 and max (nearest rank) in ms.
#
# Usage: benches/visibility.sh [--quick] [--count N]
#   --quick     50 changes.
#   --count N   N changes (default 200).
# Environment: TMPDIR (where the cluster, sites and logs go), KEEP_TMP=1
# keeps that dir, RACKBOOT_LOG as for rackboot (default here: warn),
# RACKBOOT_PG_BIN (PostgreSQL's server binaries; default: the newest
# /usr/lib/postgresql/<version>/bin), RACKBOOT_BIN=path measures that binary
# and builds nothing. Otherwise rackboot is built with cargo build --release
# unless target/release/rackboot is newer than every source file; the run
# uses a copy of it.
#
# Needs root (a namespace, apt-get). Installs postgresql, curl and python3
# with apt-get when they are missing. The namespace, both appliances, the
# PostgreSQL cluster (stopped by its postmaster's PID) and the temp dir are
# removed on exit, also on failure.
set -euo pipefail

COUNT=""
QUICK=0
while (($#)); do
    arg=$1; shift
    case "$arg" in
        --quick) QUICK=1 ;;
        --count) COUNT=${1:-}; shift || true ;;
        --count=*) COUNT=${arg#--count=} ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "visibility.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
COUNT=${COUNT:-$((QUICK ? 50 : 200))}
[[ $COUNT =~ ^[1-9][0-9]{0,4}$ ]] || { echo "visibility.sh: --count wants 1..99999" >&2; exit 2; }
NICE=${BENCH_NICE:--10}
[[ $NICE =~ ^-?[0-9]+$ ]] || { echo "visibility.sh: BENCH_NICE wants a number" >&2; exit 2; }
SHOW_WITHIN=5       # seconds a change may take to show on B
WARMUP=4            # changes not counted
TARGET_MS=1000      # README: every appliance sees every change within a second

NS=rbvis
SRV_NS=$NS          # for bench_exit (benches/lib.sh): the one namespace
CLI_NS=$NS
PORT_A=8081
PORT_B=8082
TOKEN=bench-admin-token-$RANDOM$RANDOM$RANDOM

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$SECONDS

die() { echo "visibility.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (network namespace, apt-get)"

# ---------------------------------------------------------------- cleanup --
TMP=""
PID_A=""
PID_B=""
LOAD_PID=""
LOCK_FD=""

# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

stop_processes() { # for bench_exit (benches/lib.sh)
    stop_pid "$LOAD_PID"
    stop_pid "$PID_A"
    stop_pid "$PID_B"
    pg_stop   # PostgreSQL last: the appliances were its clients
}
bench_traps
bench_lock visibility

# ------------------------------------------------------------- packages --
need_pkgs=()
pg_find_bin || need_pkgs+=(postgresql)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v python3 >/dev/null || need_pkgs+=(python3)
for tool in ip taskset timeout flock awk runuser pgrep; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
((${#need_pkgs[@]} == 0)) || apt_install "${need_pkgs[@]}"
pg_find_bin || die "PostgreSQL's server binaries not found after install (set RACKBOOT_PG_BIN)"

# -------------------------------------------------------------- rackboot --
rackboot_release "$REPO"
RACKBOOT_VERSION=$(rackboot_version "$REPO")

# ---------------------------------------------------- namespace, database --
stale_netns "$NS"
TMP=$(mktemp -d -t rackboot-bench-visibility.XXXXXX)   # under $TMPDIR, else /tmp
ip netns add "$NS"
ip -n "$NS" link set lo up
# postgres (the group) may pass through the temp dir to its own folder.
chgrp postgres "$TMP"
chmod 710 "$TMP"
pg_start "$TMP/pg" 0 "$NICE"
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
pg_sql postgres "CREATE DATABASE rackboot"

# A copy: a build in the work tree during the run must not swap the binary.
RACKBOOT=$TMP/rackboot
cp "$RACKBOOT_BUILT" "$RACKBOOT"

# ------------------------------------------------------------ appliances --
site() { # NAME PORT: a site dir $TMP/NAME with its config
    local dir=$TMP/$1
    mkdir -p "$dir"/{state,assets,bootenvs,scripts}
    printf '[arch.bios]\nlocal = "exit"\n' >"$dir/bootenvs/discovery.toml"
    printf 'description = "what the benchmark switches nodes to"\n[arch.bios]\nlocal = "exit"\n' >"$dir/bootenvs/alt.toml"
    printf 'admin %s benchmark\n' "$TOKEN" >"$dir/api-tokens"
    chmod 600 "$dir/api-tokens"
    cat >"$dir/rackboot.toml" <<EOF
state_dir = "$dir/state"
assets_dir = "$dir/assets"
bootenvs_dir = "$dir/bootenvs"
scripts_dir = "$dir/scripts"
[network]
interface = "lo"
address = "127.0.0.1"
[dhcp]
enabled = false
[tftp]
enabled = false
[http]
port = $2
[dns]
enabled = false
[api]
tokens_file = "$dir/api-tokens"
[store]
engine = "postgres"
url = "$(pg_url rackboot)"
appliance = "vis-$1"
EOF
    ip netns exec "$NS" "$RACKBOOT" check --config "$dir/rackboot.toml" >"$dir/config-check.log" 2>&1 ||
        { cat "$dir/config-check.log" >&2; die "rackboot check rejects the generated config of $1"; }
}

# Starts appliance NAME in rbvis on core 0, its PID in PID_A or PID_B at
# once (for stop_processes), and waits (20 s at most) for its /healthz to
# answer 200.
start_appliance() { # NAME PORT
    local name=$1 port=$2 pid i
    RACKBOOT_LOG=${RACKBOOT_LOG:-warn} ip netns exec "$NS" nice -n "$NICE" taskset -c 0 \
        "$RACKBOOT" serve --config "$TMP/$name/rackboot.toml" >"$TMP/$name/serve.log" 2>&1 &
    pid=$!   # ip netns exec, nice and taskset exec: this is rackboot itself
    if [[ $name == a ]]; then PID_A=$pid; else PID_B=$pid; fi
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name/serve.log" >&2; die "appliance $name exited at start-up"; }
        ip netns exec "$NS" curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
        sleep 0.1
    done
    cat "$TMP/$name/serve.log" >&2
    die "appliance $name did not answer /healthz with 200 within 20 s"
}

site a "$PORT_A"
site b "$PORT_B"
# One after the other: A makes the schema, B finds it.
start_appliance a "$PORT_A"
start_appliance b "$PORT_B"

# ---------------------------------------------------------------- client --
cat >"$TMP/visibility.py" <<'PY'
"""Changes through appliance A, timed until appliance B shows each one."""
import http.client, json, sys, time

a_addr, b_addr, token, count, warmup, within, out = sys.argv[1:8]
count, warmup, within = int(count), int(warmup), float(within)
HEAD = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}

class Peer:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.host, self.port, self.conn = host, int(port), None
    def ask(self, method, path, body=None):
        for attempt in (1, 2):   # once more on a connection the server closed
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=HEAD)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise

a, b = Peer(a_addr), Peer(b_addr)
now = time.perf_counter
rows, unseen = [], 0
for k in range(warmup + count):
    j = k // 2
    mac = "52:54:00:76:%02x:%02x" % (j >> 8 & 0xff, j & 0xff)
    if k % 2 == 0:
        kind, method, path = "create", "POST", "/api/v1/nodes"
        body, want = {"mac": mac, "hostname": "vis-%d" % j}, {"hostname": "vis-%d" % j}
        ok = 201
    else:
        kind, method, path = "patch", "PATCH", "/api/v1/nodes/" + mac
        body = {"hostname": "vis-%d-b" % j, "bootenv": "alt"}
        want, ok = dict(body), 200
    t0 = now()
    status, text = a.ask(method, path, body)
    t1 = now()
    if status != ok:
        sys.exit("%s %s through A: %d %s" % (method, path, status, text[:300]))
    polls, seen = 0, None
    while now() - t1 < within:
        polls += 1
        status, text = b.ask("GET", "/api/v1/nodes/" + mac)
        if status == 200:
            node = json.loads(text)
            if all(node.get(f) == v for f, v in want.items()):
                seen = now()
                break
        elif status != 404:
            sys.exit("GET /api/v1/nodes/%s on B: %d %s" % (mac, status, text[:300]))
    if k >= warmup:
        if seen is None:
            unseen += 1
        else:
            rows.append((kind, (seen - t0) * 1e3, (seen - t1) * 1e3, (t1 - t0) * 1e3, polls))
    time.sleep(0.01)

with open(out, "w") as f:
    f.write("kind\ttotal_ms\tafter_answer_ms\ta_answer_ms\tpolls\n")
    for r in rows:
        f.write("%s\t%.3f\t%.3f\t%.3f\t%d\n" % r)

def pct(xs, p):   # nearest rank
    xs = sorted(xs)
    return xs[max(0, -(-len(xs) * p // 100) - 1)] if xs else float("nan")

def three(i):
    xs = [r[i] for r in rows]
    return "%.1f %.1f %.1f" % (pct(xs, 50), pct(xs, 99), max(xs) if xs else float("nan"))

polls = sorted(r[4] for r in rows)
print("RESULT %d %d %s %s %s %d" % (len(rows), unseen, three(1), three(2), three(3), pct(polls, 50) if polls else 0))
PY

echo "visibility: rackboot $RACKBOOT_VERSION, two appliances on PostgreSQL $PG_VERSION;" \
    "$COUNT changes through A (create, patch, alternating), each polled on B" >&2
echo "client: ip netns exec $NS nice -n $NICE taskset -c 1 python3 visibility.py (A :$PORT_A, B :$PORT_B)" >&2
ip netns exec "$NS" timeout -k 5 $((60 + COUNT * (SHOW_WITHIN + 1))) nice -n "$NICE" taskset -c 1 \
    python3 "$TMP/visibility.py" "127.0.0.1:$PORT_A" "127.0.0.1:$PORT_B" "$TOKEN" "$COUNT" "$WARMUP" "$SHOW_WITHIN" \
    "$TMP/samples.tsv" >"$TMP/client.out" 2>&1 &
LOAD_PID=$!
rc=0
wait "$LOAD_PID" || rc=$?
LOAD_PID=""
((rc == 0)) || { cat "$TMP/client.out" >&2; die "the client failed (exit $rc)"; }
read -r _ SEEN UNSEEN P50 P99 MAX AP50 AP99 AMAX WP50 WP99 WMAX POLLS < <(grep '^RESULT ' "$TMP/client.out") ||
    { cat "$TMP/client.out" >&2; die "no result from the client"; }

# Both still up? Their complaints, if any.
for name in a b; do
    pid=$([[ $name == a ]] && echo "$PID_A" || echo "$PID_B")
    kill -0 "$pid" 2>/dev/null || echo "appliance $name exited during the run" >&2
done
stop_pid "$PID_A"; PID_A=""
stop_pid "$PID_B"; PID_B=""

# ----------------------------------------------------------------- report --
echo
for name in a b; do
    lines=$(grep -E ' (WARN|ERROR) ' "$TMP/$name/serve.log" | grep -v 'rackboot::privileges: running as root' || true)
    echo "appliance $name: $(grep -c . "$TMP/$name/serve.log" || true) log lines, $(grep -c . <<<"$lines" || true) WARN/ERROR (less the running-as-root note)"
    [[ -z $lines ]] || sed -E 's/^[^ ]+ +//' <<<"$lines" | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
done
pg_lines=$(grep -E '(ERROR|FATAL|PANIC|WARNING): ' "$PG_DIR/server.log" 2>/dev/null || true)
echo "PostgreSQL ERROR/FATAL/WARNING log lines: $(grep -c . <<<"$pg_lines" || true)"
[[ -z $pg_lines ]] || sed -E 's/^[^ ]+ [^ ]+ [^ ]+ //' <<<"$pg_lines" | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
echo
echo "change through A visible on B, ms (p50 / p99 / max over $SEEN changes; $UNSEEN not seen within $SHOW_WITHIN s):"
printf '  %-34s %8s %8s %8s\n' "" p50 p99 max
printf '  %-34s %8s %8s %8s\n' "from the request sent to A" "$P50" "$P99" "$MAX"
printf '  %-34s %8s %8s %8s\n' "from A's answer" "$AP50" "$AP99" "$AMAX"
printf '  %-34s %8s %8s %8s\n' "A's answer itself (the commit)" "$WP50" "$WP99" "$WMAX"
echo "  GETs on B per change, median: $POLLS"
echo "  ($((SECONDS - T0)) s)"
MET=$(awk -v p="$P99" -v t="$TARGET_MS" -v u="$UNSEEN" 'BEGIN { print (u == 0 && p < t) ? "yes" : "no" }')
# For benches/run.sh's table: ROW|what|peer|tool|peer|rackboot|ratio|target|met
echo "ROW|change through A visible on B (ms), two appliances on PostgreSQL|-|python3 http.client|-|p50 $P50 / p99 $P99 / max $MAX|-|p99 < $TARGET_MS ms|$MET"
exit 0
