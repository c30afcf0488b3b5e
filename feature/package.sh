#!/bin/sh
# Stages the stagepass Dev Container Feature with its binaries, ready to publish.
#
#   feature/package.sh OUTDIR [ARCH=BINARY]...
#
# Copies feature/src/stagepass to OUTDIR/src/stagepass and puts each given binary at
# bin/stagepass-ARCH-linux-gnu (ARCH: x86_64 or aarch64), and the `stagepass-core` beside it at
# bin/stagepass-core-ARCH-linux-gnu: `stagepass` is the small front (it answers `token` and
# runs the core for everything else), so the two always travel together. A release
# (release/release.sh) passes every architecture it built (x86_64, and aarch64 where its
# toolchain is installed), so one feature tarball serves both and install.sh picks the right one. With no ARCH=BINARY, the
# host architecture is built here (`cargo build --release -p stagepass`, then the front again as
# a static PIE, as bench/run does). If the devcontainer CLI is on PATH (or named
# by $DEVCONTAINER), OUTDIR/dist receives the publishable archive (`devcontainer features package`).
# OUTDIR/test holds the feature's tests, so `devcontainer features test -p OUTDIR` works (Docker).
# The staged devcontainer-feature.json gets its "version" from the workspace version in
# Cargo.toml ([workspace.package] version), the one place a release's version is set
# (release/release.sh; feature/src keeps the same value, and a test checks they agree).
set -eu

err() {
    printf 'package.sh: error: %s\n' "$*" >&2
    exit 1
}

[ $# -ge 1 ] || err "usage: feature/package.sh OUTDIR [x86_64=BINARY] [aarch64=BINARY]"
out=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/feature/src/stagepass"
[ -f "$src/devcontainer-feature.json" ] || err "$src is not the feature folder"

if [ $# -eq 0 ]; then
    host=$(uname -m)
    case "$host" in x86_64 | aarch64) ;; *) err "cannot build for host architecture $host" ;; esac
    (cd "$root" && cargo build --release --locked -p stagepass &&
        cargo rustc --release --locked -p stagepass --bin stagepass -- -C target-feature=+crt-static)
    set -- "$host=${CARGO_TARGET_DIR:-$root/target}/release/stagepass"
fi

version=$(sh "$root/release/version.sh") || err "no workspace version in $root/Cargo.toml"

stage="$out/src/stagepass"
rm -rf "$stage"
mkdir -p "$stage/bin"
cp -R "$src/." "$stage/"
# The Feature's version is the workspace version (the top-level "version" line, not the option).
sed "s/^  \"version\": \"[^\"]*\",\$/  \"version\": \"$version\",/" \
    "$src/devcontainer-feature.json" >"$stage/devcontainer-feature.json"
grep -q "^  \"version\": \"$version\",\$" "$stage/devcontainer-feature.json" ||
    err "could not set the Feature's version to $version in $stage/devcontainer-feature.json"
printf 'package.sh: feature version %s (Cargo.toml workspace version)\n' "$version"
for pair in "$@"; do
    arch=${pair%%=*}
    bin=${pair#*=}
    case "$arch" in x86_64 | aarch64) ;; *) err "unknown architecture '$arch' (x86_64 or aarch64)" ;; esac
    core="$(dirname "$bin")/stagepass-core"
    [ -f "$bin" ] || err "no binary at $bin"
    [ -f "$core" ] || err "no stagepass-core beside $bin (cargo build -p stagepass builds both)"
    cp "$bin" "$stage/bin/stagepass-$arch-linux-gnu"
    cp "$core" "$stage/bin/stagepass-core-$arch-linux-gnu"
    chmod 0755 "$stage/bin/stagepass-$arch-linux-gnu" "$stage/bin/stagepass-core-$arch-linux-gnu"
    printf 'package.sh: %s <- %s\n' "bin/stagepass-$arch-linux-gnu" "$bin"
    printf 'package.sh: %s <- %s\n' "bin/stagepass-core-$arch-linux-gnu" "$core"
done
chmod 0755 "$stage"/*.sh
# The devcontainers test layout beside it, so `devcontainer features test -p OUTDIR` runs there.
rm -rf "$out/test/stagepass"
mkdir -p "$out/test"
cp -R "$root/feature/test/stagepass" "$out/test/stagepass"

cli=${DEVCONTAINER:-$(command -v devcontainer 2>/dev/null || true)}
if [ -n "$cli" ]; then
    "$cli" features package "$out/src" --output-folder "$out/dist" --force-clean-output-folder
    printf 'package.sh: archive in %s\n' "$out/dist"
fi
printf 'package.sh: staged feature in %s\n' "$stage"
