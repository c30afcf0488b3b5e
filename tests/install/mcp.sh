#!/bin/sh
# Installs the official MCP Python SDK (PyPI `mcp`, pinned with its dependencies in
# tests/requirements-mcp.txt) into its own virtualenv under
# $STAGEPASS_TEST_CACHE/mcp-client/<requirements hash>-py<version>/, so it never touches the
# system Python the other peers use. `current` points at the venv of the current pins; the
# test tests/tests/e2e/mcp.rs runs `current/bin/python`. Idempotent: a second run only checks.
set -eu
cd "$(dirname "$0")/../.."

CACHE="${STAGEPASS_TEST_CACHE:-$HOME/.cache/stagepass-test}"
PYTHON=${PYTHON:-python3}
req=tests/requirements-mcp.txt

err() { printf 'mcp.sh: error: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || err "$PYTHON not found; install Python 3.10+ with venv"
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key="$(sha256sum "$req" | cut -c1-16)-py$pyver"
dir="$CACHE/mcp-client/$key"
mkdir -p "$CACHE/mcp-client"
if [ ! -f "$dir/.complete" ]; then
    echo "mcp.sh: installing the MCP client into $dir"
    tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    "$PYTHON" -m venv "$tmp"
    "$tmp/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    # Moving a venv breaks the shebangs of its scripts, not its python (which finds its
    # site-packages from pyvenv.cfg next to it); the tests only run python.
    "$dir/bin/python" -c 'import mcp.client.stdio' || err "the MCP client does not import"
    touch "$dir/.complete"
else
    echo "mcp.sh: MCP client already installed ($key)"
fi
ln -sfn "$key" "$CACHE/mcp-client/current.tmp.$$"
mv -T "$CACHE/mcp-client/current.tmp.$$" "$CACHE/mcp-client/current"
