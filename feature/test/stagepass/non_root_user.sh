#!/bin/bash
# Scenario non_root_user: a Debian image whose remote user is vscode; the agent must run as
# vscode (never root), its state dir must be private, and the config must carry the options.
set -e

# shellcheck source=/dev/null
source dev-container-features-test-lib

agent_uid() {
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q '^/usr/local/bin/stagepass agent'; then
            stat -c %u "$p"
            return 0
        fi
    done
    return 1
}
wait_agent_uid() {
    for _ in $(seq 1 20); do
        agent_uid && return 0
        sleep 0.5
    done
    return 1
}

check "agent runs as vscode" test "$(wait_agent_uid)" = "$(id -u vscode)"
check "state dir is private" test "$(stat -c '%a %U' /var/lib/stagepass)" = "700 vscode"
check "issuer from options" grep -qx 'issuer = "https://idp.example.com/oidc"' /etc/stagepass/config.toml
check "backstage profile" grep -qx 'audience = "backstage-catalog"' /etc/stagepass/config.toml
check "log readable by the user" test -r /var/lib/stagepass/agent.log

reportResults
