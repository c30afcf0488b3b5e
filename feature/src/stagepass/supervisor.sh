#!/bin/sh
# stagepass supervisor: keeps one `stagepass agent` running for the current user.
#
# Started in the background by entrypoint.sh at every container start, already as the user the
# agent runs as (never root). One supervisor per user by flock on a lock file in the user's
# state dir: a kernel lock dies with its holder, so nothing left over from a previous boot (a
# lock file, a pid file) can ever block the start. If the agent exits it is restarted with
# exponential backoff (1 s doubling to 60 s, reset after a minute of healthy running).
# Everything goes to $STATE/agent.log (STATE: the state dir install.sh recorded, on the Feature's
# volume), readable by the user, rotated at 1 MiB.
#
# Codespaces: processes started from the entrypoint may lack GITHUB_TOKEN & co. Before each
# agent start, missing ones are read from /workspaces/.codespaces/shared/.env-secrets
# (KEY=base64 lines) into the agent's environment only; see feature/README.md for why here.
set -u

SHARE_DIR=/usr/local/share/stagepass
# The state dir install.sh chose (the Feature's volume), else the XDG default.
STATE=""
if [ -r "$SHARE_DIR/feature.env" ]; then
    while IFS='=' read -r key value; do
        case "$key" in STATE_DIR) STATE=$value ;; esac
    done <"$SHARE_DIR/feature.env"
fi
[ -n "$STATE" ] || STATE="${XDG_STATE_HOME:-${HOME:-/nonexistent}/.local/state}/stagepass"
LOG="$STATE/agent.log"
LOG_MAX_BYTES=1048576
BACKOFF_MAX=60
HEALTHY_AFTER=60
AGENT=/usr/local/bin/stagepass
ENV_SECRETS=/workspaces/.codespaces/shared/.env-secrets
started_as="${STAGEPASS_STARTED_AS:-user $(id -un 2>/dev/null || id -u)}"
unset STAGEPASS_STARTED_AS

[ "$(id -u)" != 0 ] || {
    echo "stagepass supervisor: refusing to run the agent as root" >&2
    exit 0
}
umask 077
if ! mkdir -p "$STATE" 2>/dev/null || ! chmod 700 "$STATE" 2>/dev/null; then
    echo "stagepass supervisor: cannot create $STATE" >&2
    exit 0
fi

rotate_log() {
    size=$(wc -c <"$LOG" 2>/dev/null || echo 0)
    if [ "$size" -gt "$LOG_MAX_BYTES" ]; then
        mv -f "$LOG" "$LOG.1"
    fi
}
rotate_log
exec >>"$LOG" 2>&1 </dev/null
log() { printf '%s stagepass supervisor[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$*"; }

# One supervisor per user. fd 9 stays open (and locked) for our whole life.
exec 9>>"$STATE/supervisor.lock"
if ! flock -n 9; then
    log "another supervisor already runs for this user; leaving it in charge"
    exit 0
fi

child=""
stop() {
    log "stopping (signal); agent pid ${child:-none}"
    [ -z "$child" ] || kill -TERM "$child" 2>/dev/null
    exit 0
}
trap stop TERM INT HUP

# Exports Codespaces variables that are missing from our environment, from the .env-secrets
# file. Only known names are taken; values are never logged. Runs in the agent's subshell.
load_codespaces_env() {
    [ -r "$ENV_SECRETS" ] || return 0
    loaded=""
    while IFS= read -r line || [ -n "$line" ]; do
        key=${line%%=*}
        value=${line#*=}
        case "$key" in
        CODESPACES | CODESPACE_NAME | GITHUB_TOKEN | GITHUB_USER | GITHUB_REPOSITORY | \
            GITHUB_API_URL | GITHUB_SERVER_URL | GITHUB_GRAPHQL_URL | \
            GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN) ;;
        *) continue ;;
        esac
        [ -z "$(printenv "$key")" ] || continue
        decoded=$(printf '%s' "$value" | base64 -d 2>/dev/null) || continue
        [ -n "$decoded" ] || continue
        export "$key=$decoded"
        loaded="$loaded $key"
    done <"$ENV_SECRETS"
    [ -z "$loaded" ] || log "read from $ENV_SECRETS:$loaded"
}

log "starting as $started_as (uid $(id -u)); agent $AGENT; log $LOG"
backoff=1
while :; do
    if [ ! -x "$AGENT" ]; then
        log "$AGENT is missing or not executable; retrying in ${BACKOFF_MAX}s"
        sleep "$BACKOFF_MAX" &
        wait $!
        continue
    fi
    started=$(date +%s)
    (
        load_codespaces_env
        exec 9>&- # the agent takes its own lock; it need not hold ours
        NO_COLOR=1 exec "$AGENT" agent
    ) &
    child=$!
    log "agent started (pid $child)"
    wait "$child"
    status=$?
    child=""
    ran=$(($(date +%s) - started))
    if [ "$ran" -ge "$HEALTHY_AFTER" ]; then
        backoff=1
    fi
    log "agent exited with status $status after ${ran}s; restarting in ${backoff}s"
    rotate_log
    exec >>"$LOG" 2>&1
    sleep "$backoff" &
    wait $!
    backoff=$((backoff * 2))
    [ "$backoff" -le "$BACKOFF_MAX" ] || backoff=$BACKOFF_MAX
done
