#!/bin/sh
# Installs the OCI registry of the release tests: Debian's docker-registry (the CNCF
# distribution registry, /usr/bin/docker-registry). Only the binary is used: each test starts
# its own registry on a free loopback port with its own storage (tests/src/registry.rs) and
# stops it by PID; the Debian service the package ships is stopped and disabled here, so
# nothing listens outside a test.
#
# Without root nothing can be installed: this says so and exits 0, and the tests that publish
# to a registry fail with that reason. Idempotent: does nothing when the binary is there.
set -eu

say() { printf 'registry.sh: %s\n' "$*"; }

if [ -x /usr/bin/docker-registry ]; then
    say "docker-registry present ($(/usr/bin/docker-registry --version 2>/dev/null || echo '?'))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "docker-registry is missing and we are not root: the release tests cannot publish"
    exit 0
fi
say "installing Debian's docker-registry"
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends docker-registry >/dev/null
}
apt_install || { apt-get update -qq && apt_install; }
[ -x /usr/bin/docker-registry ] || { say "error: docker-registry still missing after the install" >&2; exit 1; }
# The packaged service (port 5000 on all interfaces) is not what the tests use.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
say "installed $(/usr/bin/docker-registry --version 2>/dev/null || echo '?')"
