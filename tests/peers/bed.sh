# shellcheck shell=sh
# Start and stop the shared test bed (IdP + git host + Backstage) around a test run.
# Source this file from a POSIX sh script, then:
#
#   bed_up || exit 1        # starts tests/peers/bed.mjs, waits for it, exports
#                           # STAGEPASS_TEST_BED_FILE (tests connect to the bed through it)
#   trap 'bed_down $?' EXIT # stops every peer by PID, removes the bed's temp dir; with a
#                           # non-zero status it first prints the tail of each peer's log
#   trap 'exit 130' INT TERM
#
# The bed also stops by itself when the sourcing shell's process is gone (--watch-pid),
# so a killed run leaves no process behind. On a failed start the peers' logs are printed.
# Needs: node on PATH, tests/peers/node_modules installed (tests/install/node.sh).

STAGEPASS_BED_ROOT=${STAGEPASS_BED_ROOT:-$(pwd)}

# Prints the last lines of every peer log in the bed dir, without colour codes.
bed_logs() {
    esc=$(printf '\033')
    for f in "$STAGEPASS_BED_DIR"/*.log; do
        [ -f "$f" ] || continue
        echo "----- last lines of test bed log $f" >&2
        tail -n "${1:-40}" "$f" | sed "s/${esc}\[[0-9;]*m//g" >&2
    done
}

bed_up() {
    STAGEPASS_BED_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stagepass-bed.XXXXXX") || return 1
    node "$STAGEPASS_BED_ROOT/tests/peers/bed.mjs" \
        --out "$STAGEPASS_BED_DIR/bed.json" \
        --log-dir "$STAGEPASS_BED_DIR" \
        --watch-pid "$$" \
        >"$STAGEPASS_BED_DIR/bed.log" 2>&1 &
    STAGEPASS_BED_PID=$!
    # Hang guard: Backstage alone may take ~10 s on a cold, busy machine.
    tries=0
    while [ ! -s "$STAGEPASS_BED_DIR/bed.json" ]; do
        if ! kill -0 "$STAGEPASS_BED_PID" 2>/dev/null || [ "$tries" -ge 1800 ]; then
            echo "test bed failed to start; logs in $STAGEPASS_BED_DIR:" >&2
            bed_logs 60
            bed_down 0
            return 1
        fi
        tries=$((tries + 1))
        sleep 0.1
    done
    STAGEPASS_TEST_BED_FILE="$STAGEPASS_BED_DIR/bed.json"
    export STAGEPASS_TEST_BED_FILE
    echo "test bed up: $STAGEPASS_TEST_BED_FILE (logs in $STAGEPASS_BED_DIR)"
}

bed_down() {
    if [ "${1:-0}" != 0 ] && [ -n "${STAGEPASS_BED_DIR:-}" ] && [ -d "$STAGEPASS_BED_DIR" ]; then
        bed_logs 40
    fi
    if [ -n "${STAGEPASS_BED_PID:-}" ]; then
        kill -TERM "$STAGEPASS_BED_PID" 2>/dev/null || true
        wait "$STAGEPASS_BED_PID" 2>/dev/null || true
        STAGEPASS_BED_PID=
    fi
    if [ -n "${STAGEPASS_BED_DIR:-}" ] && [ -d "$STAGEPASS_BED_DIR" ]; then
        rm -rf "$STAGEPASS_BED_DIR"
        STAGEPASS_BED_DIR=
    fi
    unset STAGEPASS_TEST_BED_FILE
}
