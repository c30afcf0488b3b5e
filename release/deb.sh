#!/bin/sh
# Builds the stagepass Debian package from built binaries, with dpkg-deb.
#
#   release/deb.sh VERSION ARCH BIN_DIR OUTDIR
#
# ARCH is x86_64 or aarch64 (amd64 / arm64 in Debian's names); BIN_DIR holds `stagepass` (the
# front) and `stagepass-core`. Writes OUTDIR/stagepass_VERSION_DEBARCH.deb with:
#   /usr/bin/stagepass, /usr/bin/stagepass-core
#   /usr/lib/systemd/user/stagepass.service   (release/debian/stagepass.service; a *user* unit,
#                                              enabled by each user: systemctl --user enable --now)
#   /usr/share/doc/stagepass/{README.Debian,copyright}
# Nothing is enabled or started by the package, and git's credential helper is not
# registered: README.Debian says how a user turns each on.
#
# dpkg-deb rather than cargo-deb: the package takes the very binaries the release command
# built (or was given, --bin-dir), so it needs no second cargo build and no extra tool built
# from crates.io on the release machine; the layout is five files.
set -eu

err() {
    printf 'deb.sh: error: %s\n' "$*" >&2
    exit 1
}

[ $# -eq 4 ] || err "usage: release/deb.sh VERSION ARCH BIN_DIR OUTDIR"
version=$1 arch=$2 bins=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
case "$arch" in
    x86_64) debarch=amd64 ;;
    aarch64) debarch=arm64 ;;
    *) err "unknown architecture '$arch' (x86_64 or aarch64)" ;;
esac
for b in stagepass stagepass-core; do [ -f "$bins/$b" ] || err "no $b in $bins"; done
command -v dpkg-deb >/dev/null 2>&1 || err "dpkg-deb is missing (Debian's dpkg package)"

root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/user" \
    "$root/usr/share/doc/stagepass"
install -m 0755 "$bins/stagepass" "$root/usr/bin/stagepass"
install -m 0755 "$bins/stagepass-core" "$root/usr/bin/stagepass-core"
install -m 0644 "$here/debian/stagepass.service" "$root/usr/lib/systemd/user/stagepass.service"
install -m 0644 "$here/debian/README.Debian" "$root/usr/share/doc/stagepass/README.Debian"
install -m 0644 "$here/debian/copyright" "$root/usr/share/doc/stagepass/copyright"
size=$(du -sk "$root/usr" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: stagepass
Version: $version
Architecture: $debarch
Maintainer: stagepass maintainers <stagepass@users.noreply.github.com>
Installed-Size: $size
Depends: libc6 (>= 2.31)
Recommends: git
Section: utils
Priority: optional
Homepage: https://github.com/stagepass/stagepass
Description: fresh least-privilege tokens on localhost from one device login
 stagepass runs an agent that keeps OIDC refresh grants and hands tools short-lived,
 audience-bound tokens on localhost: the Backstage CLI, scripts, git (credential helper)
 and AWS SDKs. A systemd user unit is included; enable it per user with
 "systemctl --user enable --now stagepass". See /usr/share/doc/stagepass/README.Debian.
CONTROL
mkdir -p "$out"
deb="$out/stagepass_${version}_${debarch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
printf 'deb.sh: %s\n' "$deb"
