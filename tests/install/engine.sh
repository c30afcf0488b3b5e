#!/bin/sh
# Installs the container engine of the real dev-container tests: Debian's docker.io (dockerd,
# containerd, runc and the docker CLI at /usr/bin/docker). Nothing else: the engine is started
# per run by tests/peers/engine.sh, with its own data root, and its base image is imported from
# the cached Debian rootfs, never pulled from a registry.
#
# Without root nothing can be installed or started: this says so and exits 0, and the run
# leaves the real-container tests out, loudly (tests/run). Idempotent: does nothing when
# dockerd and /usr/bin/docker are there.
set -eu

say() { printf 'engine.sh: %s\n' "$*"; }

if [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ]; then
    say "docker.io present ($(/usr/bin/docker --version 2>/dev/null || echo '?'))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "docker.io is missing and we are not root: the real-container tests will be skipped"
    exit 0
fi
say "installing Debian's docker.io"
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends docker.io >/dev/null
}
apt_install || { apt-get update -qq && apt_install; }
[ -x /usr/sbin/dockerd ] || { say "error: dockerd still missing after installing docker.io" >&2; exit 1; }
