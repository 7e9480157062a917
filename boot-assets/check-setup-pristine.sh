#!/usr/bin/env bash
# Proves that the package part of setup.sh works on the first run on a pristine Debian 12: builds a
# minimal bookworm root with mmdebstrap, runs `setup.sh --packages-only` in it, and checks that
#   1. the first run succeeds and leaves every host package and every tool of setup.sh installed,
#   2. a second run finds nothing to install (with --full: and builds the boot assets there).
#
#   boot-assets/check-setup-pristine.sh [--full] [--keep]
#
#   --full   make the second run the whole setup.sh: the boot assets too, with the tools the first
#            run installed (a few more minutes: two kernels to download); dist/ is in the root
#   --keep   leave the root in place (its path is printed) to look into after a failure
#
# The root is mmdebstrap's minbase variant (Essential packages and apt, no more): smaller than any
# real Debian 12 machine, so every package and tool setup.sh relies on beyond that set must be
# installed by setup.sh itself. Its apt sources are the host's Debian ones (main, -updates,
# -security), as a fresh machine's would be.
#
# Needs root (chroot, namespaces) and network access to that mirror; installs mmdebstrap on the
# host when missing. Takes a few minutes, mostly downloading; prints the time of each step. The
# root lives under /var/tmp and is removed on exit; /dev and /proc are mounted inside a private
# mount namespace, so no mount outlives the script, even when it is killed.
set -euo pipefail

readonly SUITE=bookworm
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE

KEEP=0 FULL=0
for arg in "$@"; do
    case $arg in
        --full) FULL=1 ;;
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "check-setup-pristine: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf 'check-setup-pristine: %s\n' "$*" >&2; }
die() { printf 'check-setup-pristine: FAILED: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (mmdebstrap, chroot and namespaces need it): sudo $0"

START=$SECONDS
STEP_START=$SECONDS
TIMES=()
step_done() { TIMES+=("$(printf '%-34s %5ss' "$1" "$((SECONDS - STEP_START))")"); STEP_START=$SECONDS; }

if ! command -v mmdebstrap >/dev/null; then
    log "installing mmdebstrap on the host"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -q -o DPkg::Lock::Timeout=300 \
        install -y --no-install-recommends mmdebstrap >&2 ||
        die "could not install mmdebstrap (apt-get install mmdebstrap)"
fi

# The host's Debian sources for $SUITE, as apt itself parses them (one-line and deb822 alike).
mapfile -t SOURCES < <(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' \
    'Identifier: Packages' | sort -u |
    awk -v s="$SUITE" '$2 == s || $2 == s "-updates" || $2 == s "-security" { print "deb " $1 " " $2 " main" }')
((${#SOURCES[@]})) || die "the host's apt sources have no Debian $SUITE entry (apt-get indextargets)"

ROOT=$(mktemp -d /var/tmp/rackboot-pristine.XXXXXX)
cleanup() {
    local rc=$?
    if ((KEEP)); then
        log "kept the root: $ROOT"
    else
        rm -rf --one-file-system "$ROOT"
    fi
    echo
    echo "check-setup-pristine: step times"
    printf '    %s\n' "${TIMES[@]}"
    printf '    %-34s %5ss  %s\n' total "$((SECONDS - START))" "$( ((rc == 0)) && echo ok || echo FAILED)"
    exit "$rc"
}
trap cleanup EXIT

log "building a minbase $SUITE root in $ROOT from: ${SOURCES[*]}"
timeout 1200 mmdebstrap --mode=root --variant=minbase --format=directory "$SUITE" "$ROOT" \
    "${SOURCES[@]}" >&2 || die "mmdebstrap could not build the $SUITE root"
step_done "mmdebstrap minbase $SUITE"

# What a fresh machine needs beyond minbase to be a machine at all: name resolution for apt, and
# no daemons started by package scripts (dhcrelay, prometheus...) inside a chroot that shares the
# host's network; the check is about the packages, not their services.
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The machine's own trust in its network, as a fresh machine of this kind has it: the site's CA
# certificates (trusted once setup.sh installs ca-certificates) and pip's settings, without which
# pip cannot reach PyPI through the site's TLS-inspecting egress.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp -L /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi
[[ -f /etc/pip.conf ]] && cp -L /etc/pip.conf "$ROOT/etc/pip.conf"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
mkdir -p "$ROOT/opt/rackboot"
cp -r "$HERE/setup.sh" "$HERE/image" "$ROOT/opt/rackboot/"

# Which of the tools setup.sh runs the root lacks, so the log shows that the check covers them.
lacking=$(chroot "$ROOT" sh -c 'for t in cpio modinfo xz zstd gzip flock; do
    command -v "$t" >/dev/null || printf "%s " "$t"; done' 2>/dev/null || true)
log "the pristine root lacks: ${lacking:-nothing of cpio modinfo xz zstd gzip flock}"

# in_root CMD...: runs CMD in the root with a clean environment, in private mount and PID
# namespaces: /dev and /proc are mounted there only, and anything CMD leaves running dies with it.
in_root() {
    unshare --mount --pid --fork --kill-child -- bash -c '
        root=$1; shift
        mount --rbind /dev "$root/dev"
        mount -t proc proc "$root/proc"
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' \
        in_root "$ROOT" "$@"
}

log "first run: setup.sh --packages-only"
in_root timeout 2400 bash /opt/rackboot/setup.sh --packages-only 2>&1 | tee "$ROOT/first-run.log" >&2 ||
    die "the first run of setup.sh --packages-only failed on a pristine $SUITE (log above)"
step_done "setup.sh --packages-only (first)"

SECOND=(--packages-only) second="setup.sh --packages-only"
((!FULL)) || SECOND=() second="setup.sh (whole)"
log "second run: $second must find nothing to install"
in_root timeout 1800 bash /opt/rackboot/setup.sh "${SECOND[@]}" 2>&1 | tee "$ROOT/second-run.log" >&2 ||
    die "the second run, $second, failed (log above)"
if grep -F 'installing host packages' "$ROOT/second-run.log" >&2; then
    die "the second run still installed packages: the first one left something missing"
fi
if ((FULL)); then
    (cd "$ROOT/opt/rackboot/dist" && sha256sum --quiet -c MANIFEST) ||
        die "the boot assets built in the root do not match their MANIFEST"
    log "boot assets built in $ROOT/opt/rackboot/dist"
fi
step_done "$second (second)"

log "ok: setup.sh installed every host package and its own tools on the first run"
