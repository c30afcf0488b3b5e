#!/bin/sh
# Installs what the Dev Container Feature tests need, outside the clone and keyed on content:
#   - Debian packages: mmdebstrap (rootfs), shellcheck (lint install.sh/entrypoint), zstd,
#     util-linux (unshare, nsenter, flock, setpriv);
#   - the devcontainer CLI and a JSON schema validator (tests/devcontainer-cli, npm ci) under
#     $STAGEPASS_TEST_CACHE/devcontainer-cli/<lockfile hash>-node<version>/;
#   - a Debian bookworm minbase rootfs as .tar.zst under $STAGEPASS_TEST_CACHE/rootfs/, keyed on
#     its recipe (suite, variant, packages); `bookworm-minbase.tar.zst` points at the current one.
# POSIX sh, idempotent: a second run finds everything in place and only checks. Every artefact is
# built in a temporary name and renamed into place, so a half-finished run leaves nothing usable-looking.
set -eu
cd "$(dirname "$0")/../.."

CACHE="${STAGEPASS_TEST_CACHE:-$HOME/.cache/stagepass-test}"
# What the simulated container and the real containers' base image (tests/peers/engine.sh)
# hold besides minbase: git (credential helper registration, pushes), ca-certificates, curl
# and procps (what a dev container image has). Changing this list changes the cache key.
ROOTFS_SUITE=bookworm
ROOTFS_VARIANT=minbase
ROOTFS_INCLUDE=git,ca-certificates,curl,procps

say() { printf 'feature.sh: %s\n' "$*"; }
err() { printf 'feature.sh: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE"

# --- Debian packages -------------------------------------------------------------------------
missing=""
for pair in mmdebstrap:mmdebstrap shellcheck:shellcheck zstd:zstd unshare:util-linux \
    nsenter:util-linux flock:util-linux setpriv:util-linux; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
    fi
done
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || err "need root to install:$missing"
    say "installing Debian packages:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# --- devcontainer CLI + schema validator --------------------------------------------------------
command -v node >/dev/null 2>&1 || err "node is required (Node 20)"
command -v npm >/dev/null 2>&1 || err "npm is required"
lock=tests/devcontainer-cli/package-lock.json
key="$(sha256sum "$lock" | cut -c1-16)-node$(node --version)"
cli_dir="$CACHE/devcontainer-cli/$key"
if [ ! -f "$cli_dir/.complete" ]; then
    say "installing the devcontainer CLI into $cli_dir"
    tmp="$cli_dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp tests/devcontainer-cli/package.json "$lock" "$tmp/"
    (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$tmp/.complete"
    rm -rf "$cli_dir"
    mv "$tmp" "$cli_dir"
fi
ln -sfn "$key" "$CACHE/devcontainer-cli/current.tmp.$$"
mv -T "$CACHE/devcontainer-cli/current.tmp.$$" "$CACHE/devcontainer-cli/current"

# --- bookworm minbase rootfs ------------------------------------------------------------------
recipe="suite=$ROOTFS_SUITE variant=$ROOTFS_VARIANT include=$ROOTFS_INCLUDE arch=$(dpkg --print-architecture)"
rkey=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
rootfs_dir="$CACHE/rootfs"
tarball="$rootfs_dir/$ROOTFS_SUITE-$ROOTFS_VARIANT-$rkey.tar.zst"
mkdir -p "$rootfs_dir"
if [ ! -s "$tarball" ]; then
    [ "$(id -u)" = 0 ] || err "need root to build the test rootfs"
    say "building the $ROOTFS_SUITE $ROOTFS_VARIANT rootfs ($recipe)"
    tmp="$rootfs_dir/.building.$$.tar.zst"
    rm -f "$tmp"
    mmdebstrap --quiet --mode=root --variant="$ROOTFS_VARIANT" --include="$ROOTFS_INCLUDE" \
        "$ROOTFS_SUITE" "$tmp" >"$rootfs_dir/.build.log" 2>&1 ||
        err "mmdebstrap failed; see $rootfs_dir/.build.log"
    printf '%s\n' "$recipe" >"$tarball.recipe"
    mv "$tmp" "$tarball"
fi
ln -sfn "$(basename "$tarball")" "$rootfs_dir/.current.$$"
mv -T "$rootfs_dir/.current.$$" "$rootfs_dir/$ROOTFS_SUITE-$ROOTFS_VARIANT.tar.zst"
# Leftovers of interrupted runs (other PIDs) are garbage.
find "$rootfs_dir" -maxdepth 1 -name '.building.*' -mmin +60 -exec rm -f {} + 2>/dev/null || true
say "ok: cli=$cli_dir rootfs=$tarball"
