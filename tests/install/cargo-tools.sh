#!/bin/sh
# Installs the cargo tools ./tests/run needs when they are missing: cargo-nextest (the test
# runner). A fresh machine may lack it; it is built from crates.io at a pinned version into
# $STAGEPASS_TEST_CACHE/cargo-tools, which tests/run puts first on PATH. Idempotent: when
# `cargo nextest` already works (installed here or elsewhere) nothing happens.
set -eu

CACHE="${STAGEPASS_TEST_CACHE:-$HOME/.cache/stagepass-test}"
NEXTEST_VERSION=0.9.143
root="$CACHE/cargo-tools"

if cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-tools.sh: $(cargo nextest --version 2>/dev/null | head -n 1)"
    exit 0
fi
echo "cargo-tools.sh: installing cargo-nextest $NEXTEST_VERSION into $root (a few minutes, once)"
cargo install --locked --quiet --root "$root" "cargo-nextest@$NEXTEST_VERSION"
PATH="$root/bin:$PATH" cargo nextest --version >/dev/null 2>&1 ||
    { echo "cargo-tools.sh: cargo nextest still does not run" >&2; exit 1; }
