#!/bin/sh
# Prints the release version: `version` of [workspace.package] in the workspace Cargo.toml,
# the one place it is set. The Feature (feature/package.sh), the tarballs, the Debian package
# and the published OCI tags all take it from here.
#
#   release/version.sh [CARGO_TOML]
set -eu
toml=${1:-$(cd "$(dirname "$0")/.." && pwd)/Cargo.toml}
v=$(awk '
    /^\[/ { section = $0; next }
    section == "[workspace.package]" && $1 == "version" {
        sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit
    }' "$toml")
case "$v" in
    [0-9]*.[0-9]*.[0-9]*) printf '%s\n' "$v" ;;
    *) printf 'version.sh: no x.y.z version under [workspace.package] in %s\n' "$toml" >&2; exit 1 ;;
esac
