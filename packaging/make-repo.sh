#!/usr/bin/env bash
# A signed APT repository of the built packages, for a fleet of units to install and upgrade
# from (`apt-get install busguard`, `apt-get upgrade`, unattended-upgrades):
#
#   packaging/make-repo.sh [DIST] [REPO]          (default: dist/ and dist/repo)
#   BUSGUARD_REPO_KEY=KEYID packaging/make-repo.sh   sign with your key (from your GNUPGHOME)
#
# Layout: REPO/pool/main/*.deb, REPO/dists/stable/{InRelease,Release,Release.gpg} and
# REPO/dists/stable/main/binary-{amd64,arm64,armhf}/Packages(.gz) (the packages are
# Architecture: all, listed for every architecture a unit may have), and
# REPO/busguard-archive-keyring.gpg, the public key units trust (docs/operations.md).
# Without BUSGUARD_REPO_KEY a throw-away key is made in DIST/repo-gnupg, loudly: for tests.
# Tools: apt-ftparchive (Debian apt-utils) and gpg.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
dist=$(cd "${1:-$top/dist}" && pwd)
repo=${2:-$dist/repo}
suite=stable
archs="amd64 arm64 armhf"
for tool in apt-ftparchive gpg; do
    command -v "$tool" >/dev/null || {
        echo "make-repo: $tool not found (apt-get install apt-utils gnupg)" >&2; exit 2; }
done
ls "$dist"/busguard*_all.deb >/dev/null 2>&1 || {
    echo "make-repo: no busguard*_all.deb in $dist (make deb first)" >&2; exit 2; }

if [ -n "${BUSGUARD_REPO_KEY:-}" ]; then
    key=$BUSGUARD_REPO_KEY
else
    export GNUPGHOME="$dist/repo-gnupg"
    if [ ! -s "$GNUPGHOME/key-id" ]; then
        mkdir -p -m 0700 "$GNUPGHOME"
        gpg --batch --quiet --passphrase '' --quick-gen-key \
            "busguard test repository (not for production) <busguard@example.invalid>" \
            ed25519 sign 1y
        gpg --batch --list-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}' \
            > "$GNUPGHOME/key-id"
    fi
    key=$(cat "$GNUPGHOME/key-id")
    echo "make-repo: WARNING: signed with the throw-away key $key in $GNUPGHOME" \
         "(for tests; set BUSGUARD_REPO_KEY for a fleet)" >&2
fi

rm -rf "$repo"
mkdir -p "$repo/pool/main"
cp "$dist"/busguard*_all.deb "$repo/pool/main/"
cd "$repo"
for arch in $archs; do
    d="dists/$suite/main/binary-$arch"
    mkdir -p "$d"
    apt-ftparchive packages pool/main > "$d/Packages"
    gzip -9nk "$d/Packages"
done
apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=busguard \
    -o APT::FTPArchive::Release::Label=busguard \
    -o APT::FTPArchive::Release::Suite=$suite \
    -o APT::FTPArchive::Release::Codename=$suite \
    -o "APT::FTPArchive::Release::Architectures=$archs" \
    -o APT::FTPArchive::Release::Components=main \
    -o APT::FTPArchive::Release::Description="busguard edge runtime" \
    release "dists/$suite" > "dists/$suite/Release"
gpg --batch --yes --local-user "$key" --clearsign -o "dists/$suite/InRelease" \
    "dists/$suite/Release"
gpg --batch --yes --local-user "$key" --armor --detach-sign -o "dists/$suite/Release.gpg" \
    "dists/$suite/Release"
gpg --batch --yes --export "$key" > busguard-archive-keyring.gpg
echo "make-repo: $repo ($(ls pool/main | tr '\n' ' '))"
