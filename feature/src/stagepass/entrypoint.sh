#!/bin/sh
# stagepass entrypoint: the devcontainer CLI runs it at every container start, as the container
# user (root or not), from PID 1's shell, with no arguments.
#
# It only launches the supervisor in the background and returns: it must never block the start
# (budget: 100 ms) and never fail it, so there is no `set -e` and every path ends in `exit 0`.
# The agent never runs as root: as root we switch to the feature's remote user; as anyone else
# we run as that user and say so in the log.
SHARE_DIR=/usr/local/share/stagepass
SUPERVISOR="$SHARE_DIR/supervisor.sh"

# setsid puts the supervisor in its own session, away from signals sent to PID 1's group.
DETACH=$(command -v setsid 2>/dev/null) || DETACH=""

note() { printf 'stagepass entrypoint: %s\n' "$*" >&2; }

[ -x "$SUPERVISOR" ] || {
    note "$SUPERVISOR missing; is the feature installed?"
    exit 0
}

# The remote user recorded by install.sh (KEY=value lines, read without evaluating them).
remote_user=""
state_dir=""
if [ -r "$SHARE_DIR/feature.env" ]; then
    while IFS='=' read -r key value; do
        case "$key" in
        REMOTE_USER) remote_user=$value ;;
        STATE_DIR) state_dir=$value ;;
        esac
    done <"$SHARE_DIR/feature.env"
fi

if [ "$(id -u)" != 0 ]; then
    # Not root: we cannot (and need not) switch; the supervisor logs who it runs as.
    # shellcheck disable=SC2086 # $DETACH is empty or one path
    STAGEPASS_STARTED_AS="container user $(id -un 2>/dev/null || id -u) (entrypoint not root; remote user '${remote_user:-?}')" \
        $DETACH "$SUPERVISOR" </dev/null >/dev/null 2>&1 &
    exit 0
fi

if [ -z "$remote_user" ] || [ "$remote_user" = root ]; then
    note "remote user is '${remote_user:-unset}'; stagepass never runs the agent as root, not starting it"
    exit 0
fi
entry=$(getent passwd "$remote_user" 2>/dev/null || grep "^$remote_user:" /etc/passwd)
uid=$(printf '%s' "$entry" | cut -d: -f3)
gid=$(printf '%s' "$entry" | cut -d: -f4)
home=$(printf '%s' "$entry" | cut -d: -f6)
case "$uid" in
'' | 0 | *[!0-9]*)
    note "remote user '$remote_user' not found or uid 0; not starting the agent"
    exit 0
    ;;
esac

# The state dir (on the Feature's volume) belongs to the remote user, 0700. The devcontainer CLI
# may give that user another uid after install.sh ran (updateRemoteUserUID), and a new volume
# starts as a copy of the image's directory: hand it over again when the owner differs. -h: a
# symlink inside is changed itself, never what it points at.
if [ -n "$state_dir" ] && [ ! -L "$state_dir" ]; then
    [ -d "$state_dir" ] || mkdir -p "$state_dir" 2>/dev/null
    if [ -d "$state_dir" ] && [ "$(stat -c %u "$state_dir" 2>/dev/null)" != "$uid" ]; then
        chown -R -h "$uid:$gid" "$state_dir" 2>/dev/null &&
            note "handed $state_dir to $remote_user (uid $uid)"
    fi
    chmod 0700 "$state_dir" 2>/dev/null
fi

# A clean identity for the user's process: its own HOME and no root XDG dirs; Codespaces and
# proxy variables pass through. setpriv (util-linux) switches without a PAM session.
# shellcheck disable=SC2086 # $DETACH is empty or one path
if command -v setpriv >/dev/null 2>&1; then
    env -u XDG_RUNTIME_DIR -u XDG_STATE_HOME -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_CACHE_HOME \
        HOME="$home" USER="$remote_user" LOGNAME="$remote_user" \
        STAGEPASS_STARTED_AS="remote user $remote_user (entrypoint ran as root)" \
        $DETACH setpriv --reuid="$uid" --regid="$gid" --init-groups "$SUPERVISOR" \
        </dev/null >/dev/null 2>&1 &
elif command -v runuser >/dev/null 2>&1; then
    env -u XDG_RUNTIME_DIR -u XDG_STATE_HOME -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_CACHE_HOME \
        HOME="$home" USER="$remote_user" LOGNAME="$remote_user" \
        STAGEPASS_STARTED_AS="remote user $remote_user (entrypoint ran as root, runuser)" \
        $DETACH runuser -u "$remote_user" -- "$SUPERVISOR" \
        </dev/null >/dev/null 2>&1 &
else
    note "neither setpriv nor runuser found; cannot switch to '$remote_user', not starting the agent"
fi
exit 0
