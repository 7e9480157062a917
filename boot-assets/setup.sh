#!/usr/bin/env bash
# Install the host packages rackboot needs, then fetch and build every binary rackboot serves,
# into boot-assets/dist/.
#
#   boot-assets/setup.sh [--refresh] [--packages-only | --no-packages]
#
#   --refresh        refresh the private package indexes now, not only when a day old
#   --packages-only  install the host packages and stop (no boot assets)
#   --no-packages    never run apt-get on the host; fail if this script's own tools are missing
#
# Host packages (Debian, installed with apt-get only when missing, as root): everything the
# project needs to build (gcc, libc6-dev, pkg-config), test (qemu, OVMF/AAVMF, NIC ROMs, real
# DHCP/TFTP/DNS/HTTP clients, tcpdump, dnsmasq for IPv6 router adverts) and demo, and the tools
# this script runs. Run as non-root, it installs nothing: it names what is missing and goes on
# with the assets when its own tools are there.
#
# Produces (all git-ignored; nothing binary is ever committed):
#   dist/undionly.kpxe dist/ipxe-amd64.efi dist/snponly.efi dist/ipxe-arm64.efi
#                                      first-stage loaders, Debian trixie's ipxe (arch all)
#   dist/shimx64.efi  dist/grubx64.efi dist/shimaa64.efi dist/grubaa64.efi
#                                      the Secure Boot chain, Debian bookworm's: shim signed by
#                                      Microsoft (shim-signed), the netboot GRUB signed by Debian
#                                      (grub-efi-{amd64,arm64}-signed grubnet*.efi.signed, under
#                                      the name shim fetches next from the same TFTP directory)
#   dist/x86_64/vmlinuz  dist/x86_64/initrd.img
#   dist/arm64/Image     dist/arm64/initrd.img
#                                      the operational image: Debian bookworm's kernel (signed
#                                      PE, as shipped) and an initramfs of busybox-static +
#                                      signed NIC modules + image/init
#   dist/SOURCES                       the Debian packages and versions everything came from
#   dist/MANIFEST                      sha256sum of every file above (check: cd dist && sha256sum -c MANIFEST)
#
# Boot-asset packages come from the Debian mirror the host's own apt sources already use, through
# a private apt state under boot-assets/.cache/ (own sources.list, lists and cache): the host's apt
# sources are never touched and no foreign architecture is ever added to dpkg.
#
# Safe to re-run, and quick when nothing changed: host packages are only installed when missing,
# package indexes are refreshed when older than a day (or with --refresh), .debs are only
# downloaded when the resolved version changed, and an image is only rebuilt when one of its
# inputs (kernel, busybox, image/*, this script) changed. The build is reproducible: the same
# inputs give byte-identical initrds, so content-addressed asset names stay stable.
#
# Environment:
#   RACKBOOT_DEBIAN_MIRROR           Debian archive URI (default: from the host's apt sources)
#   RACKBOOT_DEBIAN_SECURITY_MIRROR  Debian security URI (default: from the host's apt sources)
#   SOURCE_DATE_EPOCH                timestamp stored in the initrds (default 0)
set -euo pipefail

readonly KERNEL_SUITE=bookworm # the kernel and busybox the operational image is built from
readonly IPXE_SUITE=trixie     # bookworm's ipxe (2019) has no arm64 loader and waits on IPv6 RAs
# NIC drivers the operational image carries (with their dependencies) for the NICs racks and VMs
# present: e1000 (qemu's default x86 NIC) and virtio-net. Each is included where the kernel has it
# as a module; built-in ones need nothing.
readonly WANT_MODULES=(e1000 virtio_net virtio_pci)
# An index older than this is refreshed; kernel security updates land within days.
readonly APT_MAX_AGE_MIN=1440
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
readonly HERE SELF
readonly DIST=$HERE/dist CACHE=$HERE/.cache IMAGE=$HERE/image
readonly DEBS=$CACHE/debs STAMPS=$CACHE/stamps
readonly EPOCH=${SOURCE_DATE_EPOCH:-0}
START=$(date +%s)

REFRESH=0 PACKAGES=1 ASSETS=1
for arg in "$@"; do
    case $arg in
        --refresh) REFRESH=1 ;;
        --packages-only) ASSETS=0 ;;
        --no-packages) PACKAGES=0 ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
((PACKAGES || ASSETS)) || { echo "setup.sh: --packages-only and --no-packages leave nothing to do" >&2; exit 2; }

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# modinfo is in /usr/sbin, which a non-root user's PATH often lacks: without it, an installed kmod
# would look missing to the tool check below.
case :$PATH: in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac

# ---------------------------------------------------------------------------------------------
# Host packages

# What the project needs on the host beyond this script's own tools (HOST_TOOLS below), and why.
readonly PROJECT_PACKAGES=(
    gcc libc6-dev pkg-config ca-certificates # cargo build: linker, C parts (sqlite), crates.io TLS
    qemu-system-x86 qemu-system-arm          # VM tests and demo.sh: diskless VMs that netboot
    ovmf qemu-efi-aarch64 ipxe-qemu          # their firmware: OVMF, AAVMF, iPXE NIC option ROMs
    iproute2                                 # private network namespaces, bridges, taps
    isc-dhcp-client udhcpc dnsutils curl atftp tftp-hpa # real clients the protocol tests drive
    isc-dhcp-relay                           # dhcrelay: the relay agent in tests/relay.rs
    tcpdump                                  # packet captures of test boots
    kea-admin                                # perfdhcp: the DHCP storm in tests/dhcp_durability.rs
    nftables                                 # tests/tftp.rs: packet loss where the kernel lacks netem
    dnsmasq-base                             # lab IPv6 router adverts; proxyDHCP tests: address server
    prometheus                               # promtool and prometheus: tests/metrics.rs checks /metrics
    busybox-static                           # the image's userland (ash, udhcpc) on the host too
    python3                                  # demo.sh formats the node timeline
    python3-venv                             # schemathesis' own venv (tests/api_schema.rs), below
    postgresql-15                            # initdb, postgres: the tests' throwaway clusters (store)
    openssl                                  # a CA and certificates for the store's TLS test
    ipmitool                                 # the ipmi power driver runs it (tests/power.rs)
    chromium chromium-driver                 # tests/console.rs: a real browser over WebDriver
)

# This script's own tools: command (or file) -> Debian package that provides it.
declare -A HOST_TOOLS=(
    [apt-get]=apt [apt-cache]=apt [dpkg-deb]=dpkg [modinfo]=kmod [cpio]=cpio [gzip]=gzip
    [xz]=xz-utils [zstd]=zstd [flock]=util-linux [sha256sum]=coreutils [awk]=mawk
    [find]=findutils [od]=coreutils [timeout]=coreutils ["$KEYRING"]=debian-archive-keyring
)

# missing_tools: prints the packages providing the HOST_TOOLS that are missing.
missing_tools() {
    local t
    for t in "${!HOST_TOOLS[@]}"; do
        if [[ $t == /* ]]; then [[ -e $t ]] && continue
        else command -v "$t" >/dev/null && continue
        fi
        echo "${HOST_TOOLS[$t]}"
    done
}

# missing_packages PKG...: prints those of the given packages that dpkg does not have installed
# and configured. dpkg-query exits 1 when it has never heard of one of them, which on a fresh
# machine is most of them: an answer here, not an error. Any other failure is one.
missing_packages() {
    local status rc=0
    status=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "$@" 2>/dev/null) || rc=$?
    ((rc <= 1)) || die "dpkg-query failed (exit $rc) asking for: $*"
    awk -v want="$*" '$1 == "ii" { have[$2] = 1 }
        END { n = split(want, w, " "); for (i = 1; i <= n; i++) if (!(w[i] in have)) print w[i] }' <<<"$status"
}

# qemu_utils_pin: prints the extra install argument that keeps qemu-utils installable beside
# Debian's qemu-system-*, or nothing when none is needed.
#
# Quirk (the images of these build machines): they carry qemu-utils 10.x from bookworm-backports
# in dpkg's status only (no backports source configured). It Breaks qemu-system-common << 8.0, so
# installing bookworm's qemu-system-* would make apt remove qemu-utils (which --no-remove below
# refuses). Both come from the qemu source package, so the fix is qemu-utils at the very version
# of the qemu-system-common apt would install: an explicit, allowed downgrade. A plain Debian 12
# (no qemu-utils, or bookworm's) needs nothing.
qemu_utils_pin() {
    local have want
    have=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' qemu-utils 2>/dev/null) || return 0
    [[ $have == "ii "* ]] || return 0
    have=${have#ii }
    have=${have# }
    want=$(apt-cache policy qemu-system-common | awk '$1 == "Candidate:" { print $2 }')
    [[ -n $want && $want != "(none)" ]] || return 0
    dpkg --compare-versions "$have" gt "$want" || return 0
    if apt-cache madison qemu-utils | awk -F' *[|] *' -v v="$want" '$2 == v { f = 1 } END { exit !f }'; then
        echo "qemu-utils=$want"
    else
        # No exact twin (a binNMU of one but not the other): the host release's own version.
        echo "qemu-utils/$HOST_CODENAME"
    fi
}

# ensure_packages: installs what is missing of PROJECT_PACKAGES and HOST_TOOLS (one dpkg-query
# when everything is there). Without root or with --no-packages it installs nothing and only
# fails when this script's own tools are missing.
ensure_packages() {
    local own project="" missing still pin
    # Both answers are taken in the main shell, where a failure stops the script; inside <(...) a
    # failure is silent and leaves the list short. (It did: dpkg-query's exit 1 for packages it has
    # never seen ended such a subshell before it printed this script's own tools, so a fresh
    # machine got qemu but not cpio, and only a second run, with every package known, had them.)
    own=$(missing_tools | sort -u)
    ((!PACKAGES)) || project=$(missing_packages "${PROJECT_PACKAGES[@]}")
    # Package names have no blanks: word splitting joins the two lists.
    # shellcheck disable=SC2086
    mapfile -t missing < <(printf '%s\n' $own $project | grep -v '^$' | sort -u)
    ((${#missing[@]})) || return 0
    if ((!PACKAGES)) || [[ $EUID -ne 0 ]]; then
        [[ -z $own ]] || die "missing host packages: $(echo $own) (install them, or run this as root without --no-packages)"
        log "note: not installing missing host packages (${missing[*]}); tests and demo.sh need them: sudo $SELF --packages-only"
        return 0
    fi

    log "installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for another apt or dpkg (e.g. unattended-upgrades) instead of failing at once.
    local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
    # A fresh machine's indexes are often stale or absent; an unreachable third-party source must
    # not stop the install when the Debian ones are fine, so a failed update is only a warning.
    timeout 900 "${apt[@]}" update >&2 || log "warning: apt-get update failed; trying the install anyway"
    local install=(install -y --no-install-recommends --no-remove
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if printf '%s\n' "${missing[@]}" | grep -q '^qemu-system-'; then
        pin=$(qemu_utils_pin)
        if [[ -n $pin ]]; then
            log "aligning qemu-utils with Debian's qemu-system packages: $pin"
            install+=(--allow-downgrades "$pin")
        fi
    fi
    # Quirk (isc-dhcp-relay): its postinst starts a host-wide relay, which fails without servers
    # configured and so fails the install. The tests run dhcrelay themselves: mask the unit.
    if printf '%s\n' "${missing[@]}" | grep -qx isc-dhcp-relay && [[ -d /run/systemd/system ]]; then
        systemctl mask isc-dhcp-relay.service >&2 || true
    fi
    timeout 1800 "${apt[@]}" "${install[@]}" "${missing[@]}" >&2 ||
        die "could not install: ${missing[*]}"
    still=$(missing_packages "${missing[@]}")
    [[ -z $still ]] || die "apt-get succeeded but these are still not installed: $(echo $still)"
    hash -r
    own=$(missing_tools | sort -u)
    [[ -z $own ]] || die "still missing after the install: packages $(echo $own) (apt-get install $(echo $own))"
}

# ---------------------------------------------------------------------------------------------
# Tools from PyPI, each in a venv of its own: Debian packages none of them, and Debian's python3
# refuses pip outside a venv (PEP 668). Each venv is made from the machine's /usr/bin/python3
# (python3 and python3-venv above), at pinned versions, and made again only when missing or at
# other versions.
# - schemathesis: tests/api_schema.rs runs it against the OpenAPI document a running rackboot
#   serves.
# - sushy-tools (a Redfish BMC emulator, its `fake` driver) and pyghmi (a fake IPMI BMC, which
#   Debian's ipmitool talks to): tests/power.rs drives rackboot's power drivers against them.
readonly SCHEMATHESIS_VERSION=4.32.5
readonly SCHEMATHESIS_VENV=/opt/rackboot-schemathesis
readonly SUSHY_TOOLS_VERSION=2.2.0 PYGHMI_VERSION=1.6.19
readonly BMC_VENV=/opt/rackboot-bmc

# ensure_venv DIR WHAT CHECK PKG==VERSION...: the venv DIR holds every PKG at its VERSION (as pip
# recorded them, so only once an install succeeded: a half-made venv from an interrupted run is
# never taken for a good one), else it is made afresh; CHECK (a command, run after) proves it runs.
ensure_venv() {
    local dir=$1 what=$2 check=$3 spec name want have missing=()
    shift 3
    for spec in "$@"; do
        name=${spec%%==*} want=${spec#*==}
        have=$("$dir/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null) || true
        [[ $have == "$want" ]] || missing+=("$spec${have:+ (had $have)}")
    done
    ((${#missing[@]})) || return 0
    if ((!PACKAGES)) || [[ $EUID -ne 0 ]]; then
        log "note: ${missing[*]} not in $dir; $what needs it: sudo $SELF --packages-only"
        return 0
    fi
    log "installing ${missing[*]} into $dir"
    rm -rf "$dir"
    /usr/bin/python3 -m venv "$dir" >&2 || die "python3 -m venv $dir failed"
    # --disable-pip-version-check: pip would otherwise ask PyPI about a newer pip.
    timeout 900 "$dir/bin/pip" install -q --disable-pip-version-check "$@" >&2 ||
        die "pip could not install $* into $dir"
    $check >&2 || die "$check does not run"
}

HOST_CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
ensure_packages
ensure_venv "$SCHEMATHESIS_VENV" tests/api_schema.rs "$SCHEMATHESIS_VENV/bin/schemathesis --version" \
    "schemathesis==$SCHEMATHESIS_VERSION"
ensure_venv "$BMC_VENV" tests/power.rs "$BMC_VENV/bin/sushy-emulator --help" \
    "sushy-tools==$SUSHY_TOOLS_VERSION" "pyghmi==$PYGHMI_VERSION"
((ASSETS)) || { log "host packages ready ($(($(date +%s) - START)) s)"; exit 0; }

mkdir -p "$CACHE" "$DEBS" "$STAMPS" "$DIST"
# Two runs at once would download into and replace the same files. (flock is in util-linux,
# which Debian marks essential.)
exec 9>"$CACHE/lock"
flock -w 900 9 || die "another setup.sh still holds $CACHE/lock after 15 minutes"

WORK=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------
# Private apt state

# Prints "URI SUITE" for every enabled deb source of the host (one-line and deb822 formats).
host_apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        sed 's/#.*//' "$f" | awk '$1 == "deb" {
            i = 2
            if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if (i + 1 <= NF) print $i, $(i + 1)
        }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
        {
            delete v; key = ""
            for (i = 1; i <= NF; i++) {
                line = $i
                if (line ~ /^#/) continue
                if (line ~ /^[ \t]/) { if (key != "") v[key] = v[key] " " line; continue }
                c = index(line, ":"); if (!c) continue
                key = tolower(substr(line, 1, c - 1)); v[key] = substr(line, c + 1)
            }
            if (tolower(v["enabled"]) ~ /no/ || v["types"] !~ /(^|[ \t])deb([ \t]|$)/) next
            nu = split(v["uris"], u, /[ \t]+/); ns = split(v["suites"], s, /[ \t]+/)
            for (a = 1; a <= nu; a++) for (b = 1; b <= ns; b++)
                if (u[a] != "" && s[b] != "") print u[a], s[b]
        }' "$f"
    done
}

# The mirror is whatever the host's apt already uses for its own release: on these machines that
# is the only Debian host reachable, and elsewhere it is the mirror the admin chose.
MIRROR=${RACKBOOT_DEBIAN_MIRROR:-$(host_apt_sources | awk -v s="$HOST_CODENAME" '$2 == s { print $1; exit }')}
SECURITY=${RACKBOOT_DEBIAN_SECURITY_MIRROR:-$(host_apt_sources | awk -v s="$HOST_CODENAME-security" '$2 == s { print $1; exit }')}
[[ -n $MIRROR ]] || die "no Debian mirror for '$HOST_CODENAME' in /etc/apt/sources.list(.d); set RACKBOOT_DEBIAN_MIRROR"
MIRROR=${MIRROR%/} SECURITY=${SECURITY%/}
[[ -n $SECURITY ]] || log "no security mirror in the host's apt sources; using $MIRROR only"

# apt_state NAME SUITE ARCHS: writes the private sources.list for SUITE, refreshes its indexes when
# stale, and sets APT (options for apt-get/apt-cache) to use it.
apt_state() {
    local name=$1 suite=$2 archs=$3 dir=$CACHE/apt/$1
    local opts="[arch=$archs signed-by=$KEYRING target=Packages]" list
    list="deb $opts $MIRROR $suite main"$'\n'"deb $opts $MIRROR $suite-updates main"$'\n'
    [[ -z $SECURITY ]] || list+="deb $opts $SECURITY $suite-security main"$'\n'
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    if [[ ! -f $dir/sources.list || $(<"$dir/sources.list")$'\n' != "$list" ]]; then
        printf '%s' "$list" >"$dir/sources.list"
        rm -f "$dir/updated"
    fi
    APT=(
        -o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
        # Some hosts (Docker images) disable apt's binary cache; this private one saves parsing
        # every index again on each of the dozen apt calls below.
        -o Dir::Cache::pkgcache=pkgcache.bin -o Dir::Cache::srcpkgcache=srcpkgcache.bin
        -o "APT::Architectures=$archs" -o Acquire::Languages=none
        -o Acquire::Retries=3 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30
    )
    if ((REFRESH)) || [[ ! -f $dir/updated ]] ||
        [[ -n $(find "$dir/updated" -mmin +"$APT_MAX_AGE_MIN") ]]; then
        log "refreshing $suite indexes ($archs) from $MIRROR"
        timeout 600 apt-get -q "${APT[@]}" update >"$WORK/apt-update.log" 2>&1 ||
            { cat "$WORK/apt-update.log" >&2; die "apt-get update for $suite failed"; }
        # apt only warns (exit 0) when a signature or an index is missing.
        if grep -E '^(W|E):' "$WORK/apt-update.log" >&2; then die "apt-get update for $suite was not clean"; fi
        touch "$dir/updated"
    fi
}

declare -A USED_DEBS=() # file names of the .debs this run used (the rest are pruned)
SOURCES_LINES=()

# fetch_deb PKG[:ARCH]: downloads the candidate .deb (a no-op when it is already there with the
# right hash) and sets DEB to its path.
fetch_deb() {
    local spec=$1 fields pkg ver arch
    fields=$(apt-cache "${APT[@]}" show --no-all-versions "$spec" 2>/dev/null |
        awk '/^Package:/ { p = $2 } /^Version:/ { v = $2 } /^Architecture:/ { a = $2 } END { print p, v, a }')
    read -r pkg ver arch <<<"$fields"
    [[ -n $pkg && -n $ver && -n $arch ]] || die "no candidate for $spec"
    DEB=$DEBS/${pkg}_${ver//:/%3a}_$arch.deb
    # apt drops to _apt for downloads; let it write here rather than fall back to root.
    if [[ $EUID -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$DEBS"; fi
    if [[ ! -f $DEB ]]; then log "downloading $pkg $ver ($arch)"; fi
    local want="$pkg:$arch=$ver"
    [[ $arch != all ]] || want="$pkg=$ver"
    (cd "$DEBS" && timeout 900 apt-get -q "${APT[@]}" download "$want" >"$WORK/dl.log" 2>&1) ||
        { cat "$WORK/dl.log" >&2; die "apt-get download $spec failed"; }
    [[ -f $DEB ]] || die "apt-get download $spec did not produce $DEB"
    USED_DEBS[${DEB##*/}]=1
    SOURCES_LINES+=("$pkg $ver $arch")
}

# ---------------------------------------------------------------------------------------------
# Helpers

sha() { sha256sum "$1" | cut -d' ' -f1; }

# install_file SRC DEST: replaces DEST only when its content differs, atomically, so a server
# reading dist/ never sees a half-written file and unchanged files keep their mtime.
install_file() {
    local src=$1 dest=$2
    mkdir -p "$(dirname "$dest")"
    if [[ -f $dest ]] && cmp -s "$src" "$dest"; then return 0; fi
    cp "$src" "$dest.tmp.$$"
    chmod 0644 "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    log "wrote ${dest#"$HERE"/}"
}

# elf_machine FILE: the ELF e_machine field (62 = x86_64, 183 = aarch64).
elf_machine() { od -An -j18 -N2 -tu2 --endian=little "$1" | tr -d ' '; }

# le_uint FILE OFFSET BYTES: the little-endian unsigned integer of 2 or 4 bytes at OFFSET.
le_uint() { od -An -j"$2" -N"$3" -tu"$3" --endian=little "$1" | tr -d ' '; }

# pe_signed FILE MACHINE WHAT: dies unless FILE is a PE32+ image for COFF machine MACHINE
# (34404 = 0x8664 x86_64, 43620 = 0xaa64 arm64) whose Authenticode certificate table (optional
# header data directory 4, "security") is non-empty, lies inside the file and starts with a
# PKCS#7 WIN_CERTIFICATE. Firmware under Secure Boot refuses an image without one. This checks
# that a signature is there, not whom it is from: the chain itself is checked by booting it.
pe_signed() {
    local f=$1 machine=$2 what=$3 size pe dd off len
    size=$(stat -c %s "$f")
    [[ $(od -An -N2 -c "$f" | tr -d ' ') == MZ ]] || die "$what: not a PE image (no MZ at offset 0)"
    pe=$(le_uint "$f" 60 4)
    ((pe > 0 && pe + 24 + 112 + 40 <= size)) || die "$what: PE header offset $pe out of range"
    [[ $(od -An -j"$pe" -N4 -tx1 "$f" | tr -d ' ') == 50450000 ]] || die "$what: no PE signature"
    [[ $(le_uint "$f" $((pe + 4)) 2) == "$machine" ]] || die "$what: PE machine is not $machine"
    [[ $(le_uint "$f" $((pe + 24)) 2) == 523 ]] || die "$what: not PE32+"
    dd=$((pe + 24 + 112)) # PE32+ data directories; entry 4 = certificate table (file offset, size)
    off=$(le_uint "$f" $((dd + 32)) 4) len=$(le_uint "$f" $((dd + 36)) 4)
    ((off > 0 && len >= 8 && off + len <= size)) ||
        die "$what: no Authenticode signature (certificate table offset $off size $len, file $size bytes)"
    # WIN_CERTIFICATE: dwLength, wRevision 0x0200, wCertificateType 0x0002 (PKCS_SIGNED_DATA)
    [[ $(le_uint "$f" $((off + 4)) 2) == 512 && $(le_uint "$f" $((off + 6)) 2) == 2 ]] ||
        die "$what: certificate table holds no PKCS#7 WIN_CERTIFICATE"
}

# unpack_module SRC DEST: writes the plain .ko (busybox insmod cannot read compressed modules).
unpack_module() {
    case $1 in
        *.ko) cp "$1" "$2" ;;
        *.ko.xz) xz -dc "$1" >"$2" ;;
        *.ko.gz) gzip -dc "$1" >"$2" ;;
        *.ko.zst) zstd -qdc "$1" >"$2" ;;
        *) die "unknown module format: $1" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Loaders: Debian trixie's ipxe (architecture all)

apt_state "$IPXE_SUITE" "$IPXE_SUITE" amd64
fetch_deb ipxe
mkdir -p "$WORK/ipxe"
dpkg-deb -x "$DEB" "$WORK/ipxe"
for f in undionly.kpxe ipxe-amd64.efi snponly.efi ipxe-arm64.efi; do
    [[ -f $WORK/ipxe/usr/lib/ipxe/$f ]] || die "ipxe package lacks usr/lib/ipxe/$f"
    install_file "$WORK/ipxe/usr/lib/ipxe/$f" "$DIST/$f"
done

# ---------------------------------------------------------------------------------------------
# The operational image, per architecture

apt_state "$KERNEL_SUITE" "$KERNEL_SUITE" amd64,arm64

# build_image DEBARCH DISTDIR KERNELNAME ELFMACHINE
build_image() {
    local debarch=$1 dir=$2 kname=$3 machine=$4
    local kpkg kdeb bbdeb key root kver f

    # The metapackage names the current ABI (linux-image-6.1.0-N-ARCH); follow it.
    kpkg=$(apt-cache "${APT[@]}" depends "linux-image-$debarch:$debarch" 2>/dev/null |
        sed -nE "s/^ *Depends: (linux-image-[0-9][^ :]*-$debarch)(:$debarch)?\$/\1/p" | head -n1)
    [[ -n $kpkg ]] || die "cannot resolve linux-image-$debarch to a kernel package"
    fetch_deb "$kpkg:$debarch"
    kdeb=$DEB
    fetch_deb "busybox-static:$debarch"
    bbdeb=$DEB

    # Everything the image depends on; unchanged inputs mean the outputs in dist/ are still right.
    key=$({
        printf '%s\n' "$debarch" "${WANT_MODULES[@]}" "$EPOCH"
        sha "$kdeb"; sha "$bbdeb"; sha "$SELF"
        for f in "$IMAGE"/*; do sha "$f"; done
    } | sha256sum | cut -d' ' -f1)
    if [[ -f $STAMPS/$dir ]] && [[ $(head -n1 "$STAMPS/$dir") == "$key" ]] &&
        (cd "$DIST" && tail -n +2 "$STAMPS/$dir" | sha256sum -c --status 2>/dev/null); then
        log "$dir: up to date ($kpkg)"
        return 0
    fi

    log "$dir: building from $kpkg"
    rm -rf "$WORK/k" "$WORK/bb" "$WORK/root"
    mkdir -p "$WORK/k" "$WORK/bb"
    dpkg-deb -x "$kdeb" "$WORK/k"
    dpkg-deb -x "$bbdeb" "$WORK/bb"
    kver=$(cd "$WORK/k/lib/modules" && ls)
    [[ $kver != *$'\n'* && -d $WORK/k/lib/modules/$kver ]] || die "$kpkg: expected one module tree, got: $kver"

    # Kernel. iPXE and UEFI boot arm64 only from a raw Image; Debian has shipped it both gzip'd
    # and raw, so accept either and check the result. It must also stay the signed PE Debian
    # ships (bookworm's arm64 vmlinuz is a raw, signed Image): under Secure Boot, GRUB has shim
    # verify it, and the lockdown the image runs in comes from booting it that way. A gzip'd
    # vmlinuz would carry no signature once unpacked, so the check below refuses it.
    local vmlinuz=$WORK/k/boot/vmlinuz-$kver
    [[ -f $vmlinuz ]] || die "$kpkg has no boot/vmlinuz-$kver"
    if [[ $kname == Image ]]; then
        if [[ $(od -An -N2 -tx1 "$vmlinuz" | tr -d ' ') == 1f8b ]]; then
            gzip -dc "$vmlinuz" >"$WORK/kernel"
        else
            cp "$vmlinuz" "$WORK/kernel"
        fi
        [[ $(od -An -j56 -N4 -c "$WORK/kernel" | tr -d ' ') == ARMd ]] || die "$kpkg: not an arm64 Image"
    else
        cp "$vmlinuz" "$WORK/kernel"
        [[ $(od -An -j514 -N4 -c "$WORK/kernel" | tr -d ' ') == HdrS ]] || die "$kpkg: not a bzImage"
    fi
    if [[ $machine == 62 ]]; then
        pe_signed "$WORK/kernel" 34404 "$kpkg vmlinuz (for Secure Boot)"
    else
        pe_signed "$WORK/kernel" 43620 "$kpkg Image (for Secure Boot)"
    fi

    # Initramfs tree.
    root=$WORK/root
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,root,var,etc/udhcpc}
    mkdir -p "$root/lib/modules/$kver"
    chmod 1777 "$root/tmp"
    cp "$WORK/bb/bin/busybox" "$root/bin/busybox"
    [[ $(elf_machine "$root/bin/busybox") == "$machine" ]] || die "busybox-static:$debarch is not for ELF machine $machine"
    ln -s busybox "$root/bin/sh" # the kernel starts /init through its #!/bin/sh
    install -m 0755 "$IMAGE/init" "$root/init"
    install -m 0755 "$IMAGE/udhcpc.script" "$root/etc/udhcpc/default.script"
    # The kernel opens /dev/console for init before init can mount devtmpfs; without the node,
    # init's early output is lost (init re-opens the console after mounting devtmpfs either way).
    if [[ $EUID -eq 0 ]]; then mknod -m 0600 "$root/dev/console" c 5 1; fi

    # Modules: name -> file, and the built-in set, from the kernel's own tree.
    local mroot=$WORK/k/lib/modules/$kver path name
    declare -A modfile=() builtin=() seen=()
    while IFS= read -r path; do
        name=${path##*/}; name=${name%%.ko*}; name=${name//-/_}
        modfile[$name]=$path
    done < <(find "$mroot/kernel" -name '*.ko*')
    if [[ -f $mroot/modules.builtin ]]; then
        while IFS= read -r path; do
            name=${path##*/}; name=${name%%.ko*}; builtin[${name//-/_}]=1
        done <"$mroot/modules.builtin"
    fi
    local order=()
    # add_module NAME: appends NAME after its dependencies (depth first, each module once).
    add_module() {
        local m=${1//-/_} dep deps
        [[ -z ${seen[$m]:-} ]] || return 0
        seen[$m]=1
        if [[ -z ${modfile[$m]:-} ]]; then
            [[ -n ${builtin[$m]:-} ]] || die "$kpkg has no module $m (needed for ${2:-the image})"
            return 0
        fi
        unpack_module "${modfile[$m]}" "$root/lib/modules/$kver/$m.ko"
        # Under Secure Boot the kernel is locked down and refuses unsigned modules.
        [[ -n $(modinfo -F signer "$root/lib/modules/$kver/$m.ko") ]] ||
            die "$kpkg: module $m carries no signature (lockdown would refuse it)"
        deps=$(modinfo -F depends "$root/lib/modules/$kver/$m.ko")
        for dep in ${deps//,/ }; do add_module "$dep" "$m"; done
        order+=("$m.ko")
    }
    for name in "${WANT_MODULES[@]}"; do
        if [[ -n ${modfile[$name]:-} || -n ${builtin[$name]:-} ]]; then
            add_module "$name"
        else
            log "$dir: $kpkg has no $name; the image will lack it"
        fi
    done
    printf '%s' "${order[@]/%/$'\n'}" >"$root/lib/modules/$kver/load-order"
    printf 'arch=%s\nkernel=%s\nkernel_package=%s %s\nmodules=%s\n' "$dir" "$kver" "$kpkg" \
        "$(dpkg-deb -f "$kdeb" Version)" "${order[*]}" >"$root/etc/rackboot-image"

    # newc cpio, fixed owners, times and inode numbers, so identical inputs give identical bytes.
    find "$root" -mindepth 1 -exec touch -h -d "@$EPOCH" {} +
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
        cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -9 >"$WORK/initrd.img"

    install_file "$WORK/kernel" "$DIST/$dir/$kname"
    install_file "$WORK/initrd.img" "$DIST/$dir/initrd.img"
    log "$dir: kernel $kver, modules: ${order[*]:-none}"
    {
        echo "$key"
        (cd "$DIST" && sha256sum "$dir/$kname" "$dir/initrd.img")
    } >"$STAMPS/$dir"
}

build_image amd64 x86_64 vmlinuz 62
build_image arm64 arm64 Image 183

# ---------------------------------------------------------------------------------------------
# Secure Boot chain: Debian bookworm's shim (signed by Microsoft's UEFI CA, 2011 and 2023) and
# its netboot GRUB (signed by Debian), which verifies the kernel through shim.
#
# Firmware with Secure Boot on loads shimNN.efi by TFTP; shim then fetches grubNN.efi from the
# same TFTP directory (so the netboot GRUB is installed under that name; shim takes the directory
# from the DHCP reply's BOOTP file field, and asks at the TFTP root when the name came only in
# option 67), and GRUB (prefix /grub, TFTP only: no http in it) loads the Debian-signed kernel
# above. Only the .debs are downloaded: shim-signed's dependencies (mokutil,
# grub-efi-*-bin, ...) are what installing it on a disk needs, and nothing is installed here.

# secureboot_file PKG:ARCH PATH-IN-DEB DEST MACHINE
secureboot_file() {
    local spec=$1 path=$2 dest=$3 machine=$4 dir
    fetch_deb "$spec"
    dir=$WORK/sb-${spec//:/-}
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$DEB" "$dir"
    [[ -f $dir/$path ]] || die "$spec lacks $path"
    pe_signed "$dir/$path" "$machine" "$spec $path"
    install_file "$dir/$path" "$DIST/$dest"
}

secureboot_file shim-signed:amd64 usr/lib/shim/shimx64.efi.signed shimx64.efi 34404
secureboot_file grub-efi-amd64-signed:amd64 \
    usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed grubx64.efi 34404
secureboot_file shim-signed:arm64 usr/lib/shim/shimaa64.efi.signed shimaa64.efi 43620
secureboot_file grub-efi-arm64-signed:arm64 \
    usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed grubaa64.efi 43620

# ---------------------------------------------------------------------------------------------
# Provenance, manifest, cache pruning

printf '%s\n' "# Debian packages dist/ was built from (package version architecture)" \
    "${SOURCES_LINES[@]}" | awk '!seen[$0]++' >"$WORK/SOURCES"
install_file "$WORK/SOURCES" "$DIST/SOURCES"

OUTPUTS=(undionly.kpxe ipxe-amd64.efi snponly.efi ipxe-arm64.efi
    shimx64.efi grubx64.efi shimaa64.efi grubaa64.efi
    x86_64/vmlinuz x86_64/initrd.img arm64/Image arm64/initrd.img SOURCES)
(cd "$DIST" && sha256sum "${OUTPUTS[@]}") >"$WORK/MANIFEST"
install_file "$WORK/MANIFEST" "$DIST/MANIFEST"

# Keep the cache bounded: only the .debs this run used survive.
for f in "$DEBS"/*.deb; do
    [[ -e $f && -z ${USED_DEBS[${f##*/}]:-} ]] || continue
    log "pruning ${f##*/}"
    rm -f "$f"
done

extra=$(cd "$DIST" && find . -type f ! -name MANIFEST | sed 's|^\./||' | LC_ALL=C sort |
    grep -vxF -f <(printf '%s\n' "${OUTPUTS[@]}") || true)
[[ -z $extra ]] || log "note: dist/ also holds files setup.sh did not make: $(echo $extra)"

echo "rackboot boot assets in ${DIST} ($(($(date +%s) - START)) s):"
(cd "$DIST" && for f in "${OUTPUTS[@]}" MANIFEST; do
    printf '  %-20s %10s  %.16s\n' "$f" "$(stat -c %s "$f")" "$(sha "$f")"
done)
sed -n 's/^\([^#].*\)/  from: \1/p' "$DIST/SOURCES"
