#!/usr/bin/env bash
# The fleet path end to end: a signed APT repository served on loopback, a fresh Debian 12
# root that installs busguard from it with apt-get, latches a trip, upgrades to a newer build
# with `apt-get upgrade` keeping its edited site.toml and the latched trip, and installs
# busguard-tools optionally.
#
#   sudo packaging/test-repo.sh            (after `make deb`: uses dist/busguard*_all.deb)
#
# Builds the newer revision itself (DEB_REVISION=2). Needs root (chroot), mmdebstrap,
# apt-utils and gpg, and the Debian mirror for the root. Exits non-zero on the first failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
suite=${SUITE:-bookworm}
[ "$(id -u)" = 0 ] || { echo "test-repo: needs root (chroot)" >&2; exit 2; }
for t in mmdebstrap apt-ftparchive gpg; do
    command -v "$t" >/dev/null || { echo "test-repo: $t missing" >&2; exit 2; }
done
ls "$top"/dist/busguard_*-1_all.deb "$top"/dist/busguard-tools_*-1_all.deb >/dev/null

work=$(mktemp -d /tmp/busguard-repo.XXXXXX)
root="$work/root"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
step() { echo "test-repo: $*"; }
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }
t0=$(date +%s)

step "repository of revision 1 (make-repo.sh, throw-away key)"
mkdir -p "$work/dist1" "$work/dist2"
cp "$top"/dist/busguard_*-1_all.deb "$top"/dist/busguard-tools_*-1_all.deb "$work/dist1/"
export GNUPGHOME="$work/gnupg"  # one key for both revisions, as a fleet has
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key "busguard test repo <t@example.invalid>" \
    ed25519 sign 1d
BUSGUARD_REPO_KEY=$(gpg --batch --list-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}')
export BUSGUARD_REPO_KEY
"$here/make-repo.sh" "$work/dist1" "$work/served"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/served" "$port" >/dev/null 2>&1 &
server=$!

step "fresh $suite root (mmdebstrap essential + apt python3 adduser procps systemd python3-cryptography)"
mmdebstrap --quiet --mode=root --variant=essential \
    --include=apt,gpgv,python3,adduser,procps,systemd,init-system-helpers,python3-cryptography "$suite" "$root" >/dev/null
mount -t proc proc "$root/proc"
install -D -m 0644 "$work/served/busguard-archive-keyring.gpg" \
    "$root/usr/share/keyrings/busguard-archive-keyring.gpg"
echo "deb [signed-by=/usr/share/keyrings/busguard-archive-keyring.gpg] http://127.0.0.1:$port stable main" \
    > "$root/etc/apt/sources.list.d/busguard.list"
ours=(-o Dir::Etc::sourcelist=/etc/apt/sources.list.d/busguard.list -o Dir::Etc::sourceparts=-)

step "apt-get install busguard (signed repository on loopback)"
in_root apt-get "${ours[@]}" -q update
in_root apt-get "${ours[@]}" -y -q install --no-install-recommends busguard
[ "$(in_root dpkg-query -W -f='${Version}' busguard)" = "$(dpkg-deb -f "$work"/dist1/busguard_*_all.deb Version)" ]

step "an edited site.toml that latches a ground-fault trip, run as the busguard user"
cat > "$root/etc/busguard/site.toml" <<'SITE'
# edited by the operator: kept across upgrades
[site]
name = "fleet-unit-7"
[scan]
period_ms = 10
[paths]
state_dir = "/var/lib/busguard"
fault_log = "/var/log/power/distribution_fault.log"
[[breaker]]
name = "brk-1"
driver = "memory"
points = ["led"]
initial = { led = 2.0 }
[[block]]
name = "trip-1"
type = "shunt_trip"
breaker = "brk-1"
SITE
run_unit() {
    mkdir -p "$root/run/busguard" && in_root chown busguard:busguard /run/busguard
    unshare --net chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 setpriv --reuid=busguard --regid=busguard --init-groups \
        busguard run /etc/busguard/site.toml --cycles 20 --stats-every 0 >/dev/null 2>&1
}
latched() {  # the retained state's latch of trip-1, read with busguard's own decoder
    in_root python3 -I -c 'import sys; sys.path.insert(0, "/usr/lib/busguard/lib")
from busguard.statefile import decode_generation
_g, body = decode_generation(open("/var/lib/busguard/retained.json", "rb").read())
print(body["blocks"]["trip-1"]["state"]["latched"])'
}
run_unit
[ "$(latched)" = "True" ]
grep -q "critical raised code=BG-TRIP-GF device=brk-1" "$root/var/log/power/distribution_fault.log"

step "revision 2 in the repository; apt-get upgrade"
py=${PYTHON:-$top/.venv/bin/python}  # the build's Python (make deb uses the venv's)
[ -x "$py" ] || py=python3
PYTHON=$py DEB_REVISION=2 "$here/build-deb.sh" "$work/dist2" >/dev/null
"$here/make-repo.sh" "$work/dist2" "$work/served"
in_root apt-get "${ours[@]}" -q update
in_root apt-get "${ours[@]}" -y -q -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold upgrade
[ "$(in_root dpkg-query -W -f='${Version}' busguard)" = "$(dpkg-deb -f "$work"/dist2/busguard_*_all.deb Version)" ]
grep -q "kept across upgrades" "$root/etc/busguard/site.toml"  # the conffile, as edited
[ "$(latched)" = "True" ]  # the latched trip, untouched by the upgrade
sed -i 's/initial = { led = 2.0 }/initial = { led = 0.0 }/' "$root/etc/busguard/site.toml"
run_unit  # restarted by the upgraded package: the LED is dark now, the trip stays latched
[ "$(latched)" = "True" ]

step "apt-get install busguard-tools (optional): the simulator is there"
rc=0; out=$(in_root busguard simulate /etc/busguard/site.toml 2>&1) || rc=$?
[ "$rc" = 2 ] && grep -q "busguard-tools package" <<<"$out" \
    || { echo "test-repo: without busguard-tools, simulate said ($rc): $out" >&2; exit 1; }
in_root apt-get "${ours[@]}" -y -q install --no-install-recommends busguard-tools
in_root busguard simulate --help | grep -q "cyclic-overload"
step "ok in $(( $(date +%s) - t0 )) s"
