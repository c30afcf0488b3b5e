#!/bin/sh
# Installs a real Secret Service for the broker's keyring test: Debian's gnome-keyring
# (gnome-keyring-daemon) and dbus (dbus-run-session gives the test a private session bus).
# Idempotent: does nothing when both are present. Needs root (or sudo) only to install.
set -eu

err() {
    echo "tests/install/keyring.sh: $*" >&2
    exit 1
}

if command -v gnome-keyring-daemon >/dev/null 2>&1 && command -v dbus-run-session >/dev/null 2>&1; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || err "apt-get not found; install gnome-keyring and dbus by hand"
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    err "gnome-keyring is missing and we are not root (no sudo): install gnome-keyring and dbus"
fi

echo "tests/install/keyring.sh: installing gnome-keyring and dbus"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnome-keyring dbus >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnome-keyring dbus >/dev/null; } \
    || err "apt-get install gnome-keyring dbus failed"
command -v gnome-keyring-daemon >/dev/null 2>&1 || err "gnome-keyring-daemon still missing after install"
