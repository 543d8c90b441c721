#!/usr/bin/env bash
# Build, from this checkout with Debian's own tool (dpkg-deb), two packages:
#   busguard_<version>_all.deb        the runtime (what a unit runs)
#   busguard-tools_<version>_all.deb  the simulator and the benchmark (commissioning and
#                                     development; Depends: busguard of the same version)
#
#   packaging/build-deb.sh [OUTDIR]        (default: dist/)
#   PYTHON=.venv/bin/python packaging/build-deb.sh
#   DEB_REVISION=2 packaging/build-deb.sh  (the Debian revision, default 1: an upgrade build)
#
# The runtime and its pinned dependencies are installed as pure-Python wheels into
# /usr/lib/busguard/lib (see packaging/README.md for why); dependencies come from PyPI at
# build time, nothing is downloaded at install time.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
out=$(mkdir -p "${1:-$top/dist}" && cd "${1:-$top/dist}" && pwd)
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

command -v dpkg-deb >/dev/null || { echo "build-deb: dpkg-deb not found (apt-get install dpkg)" >&2; exit 1; }

epoch=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$top/runtime/busguard/__init__.py")
debversion="${version}-${DEB_REVISION:-1}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/stage"
wheels="$work/wheels"
mkdir -p "$stage" "$wheels"

echo "build-deb: busguard $debversion"
# 1. wheels: busguard itself (from this checkout), the pinned pure-Python dependencies
#    (wheels only, any platform), and the source-only ones built into wheels here.
rm -rf "$top/build"  # stale setuptools build/ would leak deleted modules into the wheel
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$wheels" "$top"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform any \
    --python-version 3.10 --implementation py --dest "$wheels" -r "$here/requirements.txt"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$wheels" \
    -r "$here/requirements-sdist.txt"
for w in "$wheels"/*.whl; do
    case "$(basename "$w")" in
        *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
        *) echo "build-deb: $(basename "$w") is not pure Python; the package is Architecture: all" >&2
           exit 1 ;;
    esac
done

# 2. the file tree
lib="$stage/usr/lib/busguard/lib"
"$PY" -m pip install --quiet --no-deps --no-index --no-compile --target "$lib" "$wheels"/*.whl
rm -rf "$lib/bin"
find "$lib" -name '__pycache__' -type d -prune -exec rm -rf {} +
find "$lib" -name 'direct_url.json' -delete
# macOS Finder litter some wheels ship (pysnmp 7.1: pysnmp/.DS_Store; lintian macos-ds-store-file)
find "$lib" -name '.DS_Store' -type f -delete
# files some wheels ship with the executable bit (protobuf 7): modules, data, licences are
# read, never run (lintian executable-not-elf-or-script)
find "$lib" -type f -perm /111 -exec chmod a-x {} +
# pymodbus's own simulator web pages: busguard's simulator does not use them
rm -rf "$lib/pymodbus/server/simulator/web"
# the simulator and the bench go to busguard-tools: the same tree, files of another package
tstage="$work/tools"
tlib="$tstage/usr/lib/busguard/lib"
mkdir -p "$tlib/busguard"
mv "$lib/busguard/sim" "$tlib/busguard/sim"
# (the bench, bench/busguard_bench with its C client, is always in the wheel: its own root)
mv "$lib/busguard_bench" "$tlib/busguard_bench"
# modules are imported, never run: no "#!/usr/bin/env python" lines (lintian unusual-interpreter)
find "$lib" "$tlib" -name '*.py' -exec sed -i '1{/^#!/d}' {} +

install -D -m 0755 "$here/bin/busguard" "$stage/usr/bin/busguard"
mkdir -p "$stage/usr/share/man/man1"
# busguard(1) and the completion from the vendored trees' own --help texts (both packages':
# the tools add commands' choices, e.g. the simulator's scenarios)
COLUMNS=80 PYTHONPATH="$lib:$tlib" "$PY" "$here/make-manpage.py" \
  "$stage/usr/share/man/man1/busguard.1"
gzip -9n "$stage/usr/share/man/man1/busguard.1"
mkdir -p "$stage/usr/share/bash-completion/completions"
PYTHONPATH="$lib:$tlib" "$PY" "$here/make-completion.py" \
  "$stage/usr/share/bash-completion/completions/busguard"
install -D -m 0644 "$here/systemd/busguard.service" "$stage/usr/lib/systemd/system/busguard.service"
# shipped disabled: docs/operations.md, "Network"
install -D -m 0644 "$here/systemd/busguard-firewall.service" \
  "$stage/usr/lib/systemd/system/busguard-firewall.service"
install -D -m 0644 "$here/system/60-busguard.conf" "$stage/usr/lib/sysctl.d/60-busguard.conf"
install -D -m 0644 "$here/system/modules-load.conf" "$stage/usr/lib/modules-load.d/busguard.conf"
install -D -m 0644 "$here/system/60-busguard-gpio.rules" "$stage/usr/lib/udev/rules.d/60-busguard-gpio.rules"
install -D -m 0644 "$here/system/logrotate" "$stage/etc/logrotate.d/busguard"
# [web]'s Prometheus rules (docs/web.md: rule_files in prometheus.yml)
install -D -m 0644 "$here/prometheus/busguard.rules.yml" \
    "$stage/usr/share/busguard/prometheus/busguard.rules.yml"
# [snmp]'s MIB, where net-snmp's tools look (docs/snmp.md)
install -D -m 0644 "$here/mibs/BUSGUARD-MIB.txt" "$stage/usr/share/snmp/mibs/BUSGUARD-MIB.txt"
install -D -m 0644 "$here/etc/site.toml" "$stage/etc/busguard/site.toml"
install -D -m 0644 "$here/etc/default-busguard" "$stage/etc/default/busguard"
install -d -m 0755 "$stage/etc/busguard/site.d"  # drop-ins of plugin packages (configuration.md)
install -D -m 0644 "$here/system/sysusers.conf" "$stage/usr/lib/sysusers.d/busguard.conf"
install -D -m 0644 "$here/system/tmpfiles.conf" "$stage/usr/lib/tmpfiles.d/busguard.conf"
doc="$stage/usr/share/doc/busguard"
install -d "$doc"
for f in "$top/docs"/*.md "$here/README.md"; do
    [ -f "$f" ] && install -m 0644 "$f" "$doc/"
done
[ -f "$top/site.toml" ] && install -m 0644 "$top/site.toml" "$doc/demo-site.toml"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: busguard

Files: *
Copyright: 2026 busguard developers
License: Apache-2.0
Comment: vendored dependencies in /usr/lib/busguard/lib carry their own licences in their
 *.dist-info folders (pluggy MIT, pymodbus BSD-3-Clause, pyserial BSD-3-Clause,
 w1thermsensor MIT, click BSD-3-Clause, tomli MIT, sdnotify MIT).
 On Debian systems the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
EOF

cat > "$doc/changelog.Debian" <<CHANGES
busguard ($debversion) unstable; urgency=medium

  * Built by packaging/build-deb.sh from $(git -C "$top" describe --always --dirty 2>/dev/null || echo "a source tree").

 -- busguard developers <busguard@example.invalid>  $(date -u -R -d "@$epoch")
CHANGES
gzip -9n "$doc/changelog.Debian"

tdoc="$tstage/usr/share/doc/busguard-tools"
install -d "$tdoc"
cp "$doc/copyright" "$tdoc/copyright"
sed "1s/^busguard /busguard-tools /" <(gzip -dc "$doc/changelog.Debian.gz") | gzip -9n \
    > "$tdoc/changelog.Debian.gz"

# 3. control, and 4. reproducible-ish: fixed mtimes, root ownership, no group/other write
control() {  # control() STAGE TEMPLATE
    mkdir -p "$1/DEBIAN"
    size=$(du -sk --exclude=DEBIAN "$1" | cut -f1)
    sed -e "s/@VERSION@/$debversion/g" -e "s/@SIZE@/$size/" "$2" > "$1/DEBIAN/control"
}
control "$stage" "$here/debian/control"
install -m 0644 "$here/debian/conffiles" "$stage/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "$here/debian/$s" "$stage/DEBIAN/$s"; done
control "$tstage" "$here/debian/control-tools"
for st in "$stage" "$tstage"; do
    (cd "$st" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z \
        | xargs -0 md5sum | sed 's#  \./#  #') > "$st/DEBIAN/md5sums"
    find "$st" -exec touch -h -d "@$epoch" {} +
    chmod -R go-w "$st"
done
deb="$out/busguard_${debversion}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "build-deb: $deb ($(du -h "$deb" | cut -f1))"
tdeb="$out/busguard-tools_${debversion}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$tstage" "$tdeb" >/dev/null
echo "build-deb: $tdeb ($(du -h "$tdeb" | cut -f1))"
