#!/bin/sh
# stagepass workspace hook: the Feature's postStartCommand.
#
# The devcontainer CLI and Codespaces run it at every container start, as the remote user, in
# the workspace folder: the one place that knows which folder the user works in. It records
# that folder in the agent's state dir (the `workspace-folder` hint), where the agent looks for
# the repository whose catalog files it watches; an agent waiting for it picks it up within
# seconds, and later starts find it at once. It never fails the start: every path exits 0.
set -u
SHARE_DIR=/usr/local/share/stagepass

note() { printf 'stagepass: %s\n' "$*" >&2; }

state_dir=""
if [ -r "$SHARE_DIR/feature.env" ]; then
    while IFS='=' read -r key value; do
        case "$key" in STATE_DIR) state_dir=$value ;; esac
    done <"$SHARE_DIR/feature.env"
fi
if [ -z "$state_dir" ] || [ ! -d "$state_dir" ] || [ ! -w "$state_dir" ]; then
    note "cannot record the workspace folder: the state dir '${state_dir:-?}' is missing or not writable by $(id -un 2>/dev/null || id -u)"
    exit 0
fi
folder=$(pwd -P) || exit 0
hint="$state_dir/workspace-folder"
if [ -f "$hint" ] && [ ! -L "$hint" ] && [ "$(cat "$hint" 2>/dev/null)" = "$folder" ]; then
    exit 0
fi
umask 077
tmp="$state_dir/.workspace-folder.$$"
if printf '%s\n' "$folder" >"$tmp" 2>/dev/null && mv -f "$tmp" "$hint" 2>/dev/null; then
    note "catalog files are watched in the repository of $folder"
else
    rm -f "$tmp" 2>/dev/null
    note "cannot write $hint"
fi
exit 0
