# shellcheck shell=sh
# Start and stop the container engine of the real dev-container tests around a test run.
# Source this file from a POSIX sh script, then:
#
#   engine_up || exit 1       # starts Debian's dockerd with its own data root, exec root and
#                             # socket under a temp dir, imports the base image from the cached
#                             # Debian rootfs, and exports STAGEPASS_TEST_DOCKER,
#                             # STAGEPASS_TEST_DOCKER_HOST and STAGEPASS_TEST_BASE_IMAGE; or, where
#                             # no engine can run (not root, no docker.io), exports
#                             # STAGEPASS_TEST_ENGINE_SKIP with the reason and returns 0
#   trap 'engine_down' EXIT   # removes every container, stops dockerd by PID, removes its data
#
# The daemon runs with no bridge and no iptables rules: test containers use the host's network
# (to reach the peers on loopback) or none, and nothing is pulled from a registry. A watcher
# stops the daemon when the sourcing shell is gone, so a killed run leaves no dockerd behind.
# Needs: tests/install/engine.sh (docker.io) and tests/install/feature.sh (the rootfs).

STAGEPASS_ENGINE_DOCKERD=${STAGEPASS_ENGINE_DOCKERD:-/usr/sbin/dockerd}
STAGEPASS_ENGINE_DOCKER=${STAGEPASS_ENGINE_DOCKER:-/usr/bin/docker}

engine_skip() {
    STAGEPASS_TEST_ENGINE_SKIP=$1
    export STAGEPASS_TEST_ENGINE_SKIP
    echo "container engine: NOT AVAILABLE: $1" >&2
}

engine_docker() {
    DOCKER_HOST="unix://$STAGEPASS_ENGINE_DIR/docker.sock" "$STAGEPASS_ENGINE_DOCKER" "$@"
}

engine_up() {
    if [ "$(id -u)" != 0 ]; then
        engine_skip "dockerd needs root (run ./tests/run as root, as CI does)"
        return 0
    fi
    if [ ! -x "$STAGEPASS_ENGINE_DOCKERD" ] || [ ! -x "$STAGEPASS_ENGINE_DOCKER" ]; then
        engine_skip "Debian's docker.io is not installed (tests/install/engine.sh installs it)"
        return 0
    fi
    cache=${STAGEPASS_TEST_CACHE:-$HOME/.cache/stagepass-test}
    rootfs="$cache/rootfs/bookworm-minbase.tar.zst"
    [ -s "$rootfs" ] || {
        echo "container engine: $rootfs is missing (tests/install/feature.sh builds it)" >&2
        return 1
    }
    # Short path: containerd's sockets live under the exec root (108-byte socket paths).
    STAGEPASS_ENGINE_DIR=$(mktemp -d /tmp/spe.XXXXXX) || return 1
    "$STAGEPASS_ENGINE_DOCKERD" \
        --data-root "$STAGEPASS_ENGINE_DIR/data" \
        --exec-root "$STAGEPASS_ENGINE_DIR/x" \
        --pidfile "$STAGEPASS_ENGINE_DIR/dockerd.pid" \
        --host "unix://$STAGEPASS_ENGINE_DIR/docker.sock" \
        --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
        --userland-proxy=false \
        >"$STAGEPASS_ENGINE_DIR/dockerd.log" 2>&1 &
    STAGEPASS_ENGINE_PID=$!
    tries=0
    until engine_docker version >/dev/null 2>&1; do
        if ! kill -0 "$STAGEPASS_ENGINE_PID" 2>/dev/null || [ "$tries" -ge 300 ]; then
            echo "container engine: dockerd did not start; its log:" >&2
            tail -n 30 "$STAGEPASS_ENGINE_DIR/dockerd.log" >&2
            engine_down
            return 1
        fi
        tries=$((tries + 1))
        sleep 0.1
    done
    # Stop the daemon when the sourcing shell is gone (SIGKILL of the run included).
    (
        while kill -0 "$$" 2>/dev/null; do sleep 2; done
        kill -TERM "$STAGEPASS_ENGINE_PID" 2>/dev/null
    ) </dev/null >/dev/null 2>&1 &
    STAGEPASS_ENGINE_WATCHER=$!

    # The base image: the cached rootfs plus the remote user, as a dev container image has it.
    key=$(basename "$(readlink -f "$rootfs")" .tar.zst | sed 's/^bookworm-minbase-//')
    image="stagepass-test/base:$key"
    zstd -dc <"$rootfs" | engine_docker import - "stagepass-test/rootfs:$key" >/dev/null || {
        echo "container engine: docker import of $rootfs failed" >&2
        engine_down
        return 1
    }
    ctx="$STAGEPASS_ENGINE_DIR/image"
    mkdir -p "$ctx"
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM stagepass-test/rootfs:$key
RUN useradd -m -u 1000 -s /bin/bash vscode
CMD ["/bin/bash"]
DOCKERFILE
    engine_docker build -q -t "$image" "$ctx" >/dev/null || {
        echo "container engine: building $image failed" >&2
        engine_down
        return 1
    }
    STAGEPASS_TEST_DOCKER=$STAGEPASS_ENGINE_DOCKER
    STAGEPASS_TEST_DOCKER_HOST="unix://$STAGEPASS_ENGINE_DIR/docker.sock"
    STAGEPASS_TEST_BASE_IMAGE=$image
    export STAGEPASS_TEST_DOCKER STAGEPASS_TEST_DOCKER_HOST STAGEPASS_TEST_BASE_IMAGE
    echo "container engine up: $("$STAGEPASS_ENGINE_DOCKER" --version), dockerd $(engine_docker version -f '{{.Server.Version}}'), image $image (log $STAGEPASS_ENGINE_DIR/dockerd.log)"
}

engine_down() {
    if [ -n "${STAGEPASS_ENGINE_PID:-}" ]; then
        ids=$(engine_docker ps -aq 2>/dev/null) || ids=""
        # shellcheck disable=SC2086 # one id per word
        [ -z "$ids" ] || engine_docker rm -f -v $ids >/dev/null 2>&1 || true
        kill -TERM "$STAGEPASS_ENGINE_PID" 2>/dev/null || true
        tries=0
        while kill -0 "$STAGEPASS_ENGINE_PID" 2>/dev/null && [ "$tries" -lt 200 ]; do
            tries=$((tries + 1))
            sleep 0.1
        done
        kill -KILL "$STAGEPASS_ENGINE_PID" 2>/dev/null || true
        wait "$STAGEPASS_ENGINE_PID" 2>/dev/null || true
        STAGEPASS_ENGINE_PID=
    fi
    if [ -n "${STAGEPASS_ENGINE_WATCHER:-}" ]; then
        kill "$STAGEPASS_ENGINE_WATCHER" 2>/dev/null || true
        STAGEPASS_ENGINE_WATCHER=
    fi
    if [ -n "${STAGEPASS_ENGINE_DIR:-}" ] && [ -d "$STAGEPASS_ENGINE_DIR" ]; then
        # Mounts dockerd left behind (it was killed) would keep rm from removing the dir.
        awk -v d="$STAGEPASS_ENGINE_DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts |
            sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf "$STAGEPASS_ENGINE_DIR"
        STAGEPASS_ENGINE_DIR=
    fi
    unset STAGEPASS_TEST_DOCKER STAGEPASS_TEST_DOCKER_HOST STAGEPASS_TEST_BASE_IMAGE
}
