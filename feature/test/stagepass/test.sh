#!/bin/bash
# Default test of the stagepass feature (`devcontainer features test`, needs Docker): installs
# with default options on the CLI's base images and checks what install.sh and the entrypoint did.
set -e

# shellcheck source=/dev/null
source dev-container-features-test-lib

wait_agent_user() {
    for _ in $(seq 1 20); do
        for p in /proc/[0-9]*; do
            if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q '^/usr/local/bin/stagepass agent'; then
                stat -c %U "$p"
                return 0
            fi
        done
        sleep 0.5
    done
    return 1
}

check "binary installed" /usr/local/bin/stagepass --version
check "config written" grep -q '^\[api\]' /etc/stagepass/config.toml
check "default port" grep -qx 'port = 7391' /etc/stagepass/config.toml
check "entrypoint installed" test -x /usr/local/share/stagepass/entrypoint.sh
check "git credential helper" sh -c 'git config --system --get-all credential.helper | grep -qxF "!/usr/local/bin/stagepass git-credential"'
if [ "$(id -u)" != 0 ]; then
    # The agent never runs as root, so only a non-root remote user has one to find.
    check "agent runs as this user" test "$(wait_agent_user)" = "$(id -un)"
fi

reportResults
