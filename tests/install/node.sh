#!/bin/sh
# Installs the Node dependencies of the test peers (tests/peers: IdP, Backstage, git host).
#
# `npm ci` runs into a cache outside the clone, keyed on package.json + lockfile, the Node version and
# the machine architecture, because a cold install compiles better-sqlite3 (~100 s) and a
# warm run must cost nothing. tests/peers/node_modules is then a symlink into that cache.
# The install goes to a temporary directory that is renamed only once complete, so a
# half-finished install (Ctrl-C, full disk) is never taken for a good one.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
peers="$root/tests/peers"
cache="${STAGEPASS_TEST_CACHE:-$HOME/.cache/stagepass-test}/node"

err() {
    echo "tests/install/node.sh: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 || err "node is not installed (Node 20 or newer is required)"
command -v npm >/dev/null 2>&1 || err "npm is not installed"
[ -f "$peers/package-lock.json" ] || err "missing $peers/package-lock.json"

node_version=$(node --version)
key=$({
    cat "$peers/package.json" "$peers/package-lock.json"
    printf '%s %s\n' "$node_version" "$(uname -m)"
} | sha256sum | cut -d ' ' -f 1)
dest="$cache/$key"

if [ -d "$dest/node_modules" ]; then
    echo "node deps: cached in $dest"
else
    echo "node deps: installing into $dest (cold: better-sqlite3 compiles for ~100 s)"
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.partial.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    trap 'exit 130' INT TERM
    cp "$peers/package.json" "$peers/package-lock.json" "$tmp/"
    (cd "$tmp" && npm ci --no-audit --no-fund)
    [ -d "$tmp/node_modules" ] || err "npm ci produced no node_modules"
    if [ -e "$dest" ]; then
        # Another run finished first; its copy is complete, keep it.
        rm -rf "$tmp"
    else
        mv "$tmp" "$dest"
    fi
    trap - EXIT INT TERM
fi

link="$peers/node_modules"
if [ -d "$link" ] && [ ! -L "$link" ]; then
    # A plain node_modules left by a manual `npm install`: the cache is the source of truth.
    rm -rf "$link"
fi
ln -sfn "$dest/node_modules" "$link"
