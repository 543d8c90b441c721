#!/usr/bin/env bash
# Install a built busguard .deb into a fresh Debian 12 root and check it works there:
#
#   sudo packaging/test-install.sh dist/busguard_*_all.deb
#
# The root is made by mmdebstrap (variant "essential" + python3, adduser, procps, systemd: ~20 s from the
# Debian mirror), the package goes in with dpkg inside a chroot (maintainer scripts run: user,
# groups, folders, byte-code; no systemd runs there, so nothing is started), then:
#   - the installed `busguard check /etc/busguard/site.toml` passes,
#   - `busguard run` scans as the busguard user with the installed folders and exits cleanly,
#   - `systemd-analyze verify` accepts the unit against that root,
#   - the vendored tree also runs on Python 3.10 (Ubuntu 22.04) when one is on this machine,
#   - remove and purge leave no state behind.
# Needs root (chroot, mount). Prints what it checked; exits non-zero on the first failure.
set -euo pipefail

deb=$(readlink -f "${1:?usage: test-install.sh PACKAGE.deb}")
suite=${SUITE:-bookworm}
[ "$(id -u)" = 0 ] || { echo "test-install: needs root (chroot)" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "test-install: mmdebstrap missing (apt-get install mmdebstrap)" >&2; exit 2; }

root=$(mktemp -d /tmp/busguard-root.XXXXXX)
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT
step() { echo "test-install: $*"; }
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

t0=$(date +%s)
step "fresh $suite root (mmdebstrap essential + python3 adduser procps systemd python3-cryptography)"
mmdebstrap --quiet --mode=root --variant=essential --include=python3,adduser,procps,systemd,python3-cryptography "$suite" "$root" \
    >/dev/null
mount -t proc proc "$root/proc"

step "dpkg -i $(basename "$deb")"
cp "$deb" "$root/tmp/busguard.deb"
in_root dpkg -i /tmp/busguard.deb

step "installed files and maintainer-script results"
for f in /usr/bin/busguard /usr/lib/systemd/system/busguard.service /etc/busguard/site.toml \
         /etc/logrotate.d/busguard /usr/lib/sysctl.d/60-busguard.conf \
         /usr/lib/modules-load.d/busguard.conf /usr/lib/udev/rules.d/60-busguard-gpio.rules; do
    [ -e "$root$f" ] || { echo "test-install: missing $f" >&2; exit 1; }
done
in_root id busguard
in_root id -nG busguard | tr ' ' '\n' | grep -qx gpio
in_root id -nG busguard | tr ' ' '\n' | grep -qx dialout
[ "$(in_root stat -c '%U:%G %a' /var/lib/busguard)" = "busguard:busguard 750" ]
[ "$(in_root stat -c '%U:%G' /var/log/power)" = "busguard:adm" ]
in_root dpkg-query -W -f='${Conffiles}\n' busguard | grep -q /etc/busguard/site.toml
ls "$root/usr/lib/busguard/lib/busguard/__pycache__/" | grep -q '\.pyc$'

step "busguard check /etc/busguard/site.toml (installed, in the fresh root)"
in_root busguard check /etc/busguard/site.toml
in_root busguard version

step "busguard run as the busguard user, CAP_NET_BIND_SERVICE and LimitRTPRIO=50 only (as the unit)"
mkdir -p "$root/run/busguard" && in_root chown busguard:busguard /run/busguard
# in a network namespace of its own, so port 502 on this machine is never touched
rtprio=(prlimit --rtprio=50:50)
if ! prlimit --rtprio=50:50 true 2>/dev/null; then
    echo "test-install: SKIPPED the SCHED_FIFO check: RLIMIT_RTPRIO cannot be raised here (no CAP_SYS_RESOURCE)" >&2
    rtprio=()
fi
unshare --net chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    "${rtprio[@]}" setpriv --reuid=busguard --regid=busguard --init-groups \
    --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \
    busguard run /etc/busguard/site.toml --cycles 20 --stats-every 0 2>&1 | tee "$root/tmp/run.log"
grep -q "serving the register map .* on tcp 127.0.0.1:502" "$root/tmp/run.log"  # port 502, no root
if [ ${#rtprio[@]} -gt 0 ]; then
    grep -q "scan thread scheduling: SCHED_FIFO priority 40" "$root/tmp/run.log"  # RT, no root
else
    grep -q "scan thread scheduling: SCHED_OTHER (SCHED_FIFO 40 refused" "$root/tmp/run.log"
fi
grep -q "stopped (end)" "$root/tmp/run.log"
[ ! -e "$root/run/busguard/busguard.pid" ]
grep -q '"state": "stopped"' "$root/run/busguard/status.json"

if command -v systemd-analyze >/dev/null; then
    step "systemd-analyze verify (against the installed root)"
    # verify resolves ExecStart=/usr/bin/busguard and the unit's directives
    out=$(systemd-analyze verify --root="$root" /usr/lib/systemd/system/busguard.service 2>&1) \
        || { echo "$out" >&2; exit 1; }
    if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
    # security exposure score of the unit, for the log (lower is better)
    systemd-analyze security --offline=true --root="$root" busguard.service 2>/dev/null \
        | tail -1 || true
else
    echo "test-install: SKIPPED systemd-analyze verify: systemd-analyze is not installed" >&2
fi

py310=""
for c in python3.10 /root/.pyenv/versions/3.10*/bin/python3.10; do
    if "$c" -V >/dev/null 2>&1; then py310=$c; break; fi
done
if [ -n "$py310" ]; then
    step "vendored tree on $("$py310" -V) (Ubuntu 22.04's Python): busguard check"
    x=$(mktemp -d)
    dpkg-deb -x "$deb" "$x"
    sed "s#/usr/lib/busguard/lib#$x/usr/lib/busguard/lib#" "$x/usr/bin/busguard" > "$x/launcher"
    "$py310" -I "$x/launcher" check "$x/etc/busguard/site.toml"
    rm -rf "$x"
else
    echo "test-install: SKIPPED the Python 3.10 run: no python3.10 on this machine" >&2
fi

step "dpkg -r, dpkg -P"
in_root dpkg -r busguard
[ -e "$root/etc/busguard/site.toml" ]  # a removed (not purged) package keeps its conffile
[ ! -e "$root/usr/lib/busguard/lib/busguard" ]
in_root dpkg -P busguard
[ ! -e "$root/var/lib/busguard" ] && [ ! -e "$root/etc/busguard" ]
step "ok in $(( $(date +%s) - t0 )) s"
