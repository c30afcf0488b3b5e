#!/bin/sh
# stagepass Dev Container Feature: install.sh (image build time, as root).
#
# The devcontainer CLI runs it from a copy of this folder after exporting the options as
# UPPERCASED variables and _REMOTE_USER/_REMOTE_USER_HOME/_CONTAINER_USER. It installs the
# bundled `stagepass` binary, the entrypoint and supervisor, writes /etc/stagepass/config.toml
# from the options, prepares the remote user's state dir and (optionally) registers the git
# credential helper. Idempotent: a second run with the same options changes nothing on disk.
#
# Exit codes (documented in feature/README.md):
#   10 not run as root          11 unsupported CPU architecture
#   12 unsupported C library (musl, ...)   13 no bundled binary for this architecture
#   14 invalid option value     15 requested version differs from the bundled binary
set -eu

# --- options (names and defaults as in devcontainer-feature.json) ---------------------------
VERSION="${VERSION:-bundled}"
ISSUER="${ISSUER:-}"
CLIENTID="${CLIENTID:-}"
PROFILES="${PROFILES:-backstage=backstage-catalog}"
SCOPES="${SCOPES:-openid offline_access}"
BACKSTAGEURL="${BACKSTAGEURL:-}"
BACKSTAGECLIENTID="${BACKSTAGECLIENTID:-}"
BACKSTAGEREDIRECTPORT="${BACKSTAGEREDIRECTPORT:-}"
CATALOGSYNC="${CATALOGSYNC:-true}"
CATALOGURLTEMPLATE="${CATALOGURLTEMPLATE:-}"
PORT="${PORT:-7391}"
LOGLEVEL="${LOGLEVEL:-info}"
GITCREDENTIALHELPER="${GITCREDENTIALHELPER:-true}"
MCPSERVER="${MCPSERVER:-false}"
AWSROLEARN="${AWSROLEARN:-}"

# --- where things go ----------------------------------------------------------------------
BIN_PATH=/usr/local/bin/stagepass
CORE_PATH=/usr/local/bin/stagepass-core
SHARE_DIR=/usr/local/share/stagepass
CONFIG_DIR=/etc/stagepass
CONFIG_FILE="$CONFIG_DIR/config.toml"
# The agent's persistent state (logins, outbox, audit log, workspace hint). The Feature mounts
# a named volume here (devcontainer-feature.json "mounts"), so a rebuild keeps the login.
STATE_DIR=/var/lib/stagepass
PROFILE_D=/etc/profile.d/stagepass.sh
DEFAULT_PORT=7391
FEATURE_DIR=$(cd "$(dirname "$0")" && pwd)

say() { printf 'stagepass: %s\n' "$*"; }
warn() { printf 'stagepass: warning: %s\n' "$*" >&2; }
err() {
    _code=$1
    shift
    printf 'stagepass: error: %s\n' "$*" >&2
    exit "$_code"
}

# Installs $1 at $2 with mode $3 (root-owned) only when the content or mode differs.
put_file() {
    _src=$1 _dst=$2 _mode=$3
    if [ -f "$_dst" ] && cmp -s "$_src" "$_dst" &&
        [ "$(stat -c '%a %u %g' "$_dst")" = "$(printf '%s 0 0' "${_mode#0}")" ]; then
        say "unchanged: $_dst"
        return 0
    fi
    _tmp="$_dst.stagepass-new.$$"
    cp "$_src" "$_tmp"
    chown 0:0 "$_tmp"
    chmod "$_mode" "$_tmp"
    mv -f "$_tmp" "$_dst"
    say "installed: $_dst"
}

# --- checks -------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || err 10 "install.sh must run as root (the devcontainer CLI does this)"

arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
case "$arch" in
amd64 | x86_64) ARCH=x86_64 LOADER=/lib64/ld-linux-x86-64.so.2 ;;
arm64 | aarch64) ARCH=aarch64 LOADER=/lib/ld-linux-aarch64.so.1 ;;
*) err 11 "unsupported architecture '$arch': stagepass ships for x86_64 and aarch64 only" ;;
esac

# The binary is linked against glibc. Ask glibc itself; anything else (musl on Alpine,
# uclibc, ...) is refused here rather than failing later with a cryptic loader error.
libc=""
if glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null) && [ -n "$glibc" ]; then
    libc=glibc
elif (ldd --version 2>&1 || true) | grep -qi musl || ls /lib/ld-musl-* >/dev/null 2>&1; then
    libc=musl
fi
case "$libc" in
glibc) ;;
musl) err 12 "unsupported C library: musl (e.g. Alpine). stagepass needs a glibc-based image (Debian, Ubuntu, Fedora, ...)" ;;
*) err 12 "unsupported C library: glibc not found. stagepass needs a glibc-based image (Debian, Ubuntu, Fedora, ...)" ;;
esac
[ -e "$LOADER" ] || err 12 "the glibc loader $LOADER is missing; this image cannot run glibc binaries for $ARCH"

# Option values end up in TOML strings: refuse what could break out of one.
check_plain() {
    _opt=$1 _val=$2
    case "$_val" in
    *'"'* | *\\* | *'
'*) err 14 "option $_opt contains a quote, backslash or newline: '$_val'" ;;
    esac
}
check_url() {
    _opt=$1 _val=$2
    [ -z "$_val" ] && return 0
    check_plain "$_opt" "$_val"
    case "$_val" in
    http://* | https://*) ;;
    *) err 14 "option $_opt must be an http(s) URL, got '$_val'" ;;
    esac
}
check_bool() {
    case "$2" in
    true | false) ;;
    *) err 14 "option $1 must be true or false, got '$2'" ;;
    esac
}
check_url issuer "$ISSUER"
check_url backstageUrl "$BACKSTAGEURL"
check_url catalogUrlTemplate "$CATALOGURLTEMPLATE"
check_plain clientId "$CLIENTID"
check_plain scopes "$SCOPES"
check_plain awsRoleArn "$AWSROLEARN"
check_bool catalogSync "$CATALOGSYNC"
check_bool gitCredentialHelper "$GITCREDENTIALHELPER"
check_bool mcpServer "$MCPSERVER"
case "$PORT" in
'' | *[!0-9]*) err 14 "option port must be a number 1-65535, got '$PORT'" ;;
esac
PORT=${PORT#"${PORT%%[!0]*}"} # no leading zeros in TOML integers
if [ -z "$PORT" ] || [ "$PORT" -gt 65535 ]; then
    err 14 "option port must be 1-65535, got '$PORT'"
fi
check_plain backstageClientId "$BACKSTAGECLIENTID"
if [ -n "$BACKSTAGECLIENTID" ] && [ -z "$BACKSTAGEURL" ]; then
    err 14 "option backstageClientId needs backstageUrl (the sign-in goes to <backstageUrl>/api/auth)"
fi
if [ -n "$BACKSTAGEREDIRECTPORT" ]; then
    case "$BACKSTAGEREDIRECTPORT" in
    *[!0-9]*) err 14 "option backstageRedirectPort must be a number 1-65535, got '$BACKSTAGEREDIRECTPORT'" ;;
    esac
    BACKSTAGEREDIRECTPORT=${BACKSTAGEREDIRECTPORT#"${BACKSTAGEREDIRECTPORT%%[!0]*}"}
    if [ -z "$BACKSTAGEREDIRECTPORT" ] || [ "$BACKSTAGEREDIRECTPORT" -gt 65535 ]; then
        err 14 "option backstageRedirectPort must be 1-65535"
    fi
    [ -n "$BACKSTAGECLIENTID" ] || warn "backstageRedirectPort is set but backstageClientId is empty; ignored"
fi
case "$LOGLEVEL" in
'' | *[!A-Za-z0-9_=,:.-]*) err 14 "option logLevel has characters a log filter cannot contain: '$LOGLEVEL'" ;;
esac
case "$AWSROLEARN" in
'' | arn:*) ;;
*) err 14 "option awsRoleArn must be an ARN (arn:aws:iam::ACCOUNT:role/NAME), got '$AWSROLEARN'" ;;
esac

# --- binary -------------------------------------------------------------------------------
# A release carries two binaries per architecture, side by side (see feature/package.sh):
# bin/stagepass-ARCH-linux-gnu, the small front that answers `stagepass token` itself, and
# bin/stagepass-core-ARCH-linux-gnu, the agent and every other command, which the front
# runs from its own directory.
src_bin="$FEATURE_DIR/bin/stagepass-$ARCH-linux-gnu"
src_core="$FEATURE_DIR/bin/stagepass-core-$ARCH-linux-gnu"
for f in "$src_bin" "$src_core"; do
    [ -f "$f" ] || err 13 "no stagepass binary for $ARCH in this feature ($f); the feature was packaged without it (see feature/package.sh)"
done
if [ "$VERSION" != bundled ] && [ "$VERSION" != latest ]; then
    bundled=$("$src_core" --version 2>/dev/null | awk '{print $2}') || bundled=""
    [ "$bundled" = "${VERSION#v}" ] || err 15 "version $VERSION was asked for, but this feature carries stagepass ${bundled:-of unknown version}; use the feature release of that version or version=bundled"
fi
mkdir -p "$SHARE_DIR" "$CONFIG_DIR"
# The core first: the front is never there without the core it hands over to.
put_file "$src_core" "$CORE_PATH" 0755
put_file "$src_bin" "$BIN_PATH" 0755
put_file "$FEATURE_DIR/entrypoint.sh" "$SHARE_DIR/entrypoint.sh" 0755
put_file "$FEATURE_DIR/supervisor.sh" "$SHARE_DIR/supervisor.sh" 0755
put_file "$FEATURE_DIR/workspace-hook.sh" "$SHARE_DIR/workspace-hook.sh" 0755
# `stagepass doctor` reads the Feature's own port attributes from this copy: they apply to
# every container built with the Feature, though no workspace file shows them.
put_file "$FEATURE_DIR/devcontainer-feature.json" "$SHARE_DIR/devcontainer-feature.json" 0644
# The MCP launcher VS Code runs (customizations.vscode.mcp in devcontainer-feature.json): a
# feature cannot make its customizations depend on an option, so the registration is always
# there and the launcher serves only when mcpServer=true.
tmp_mcp=$(mktemp)
{
    echo '#!/bin/sh'
    echo '# Written by the stagepass feature (option mcpServer); VS Code starts it as an MCP server.'
    if [ "$MCPSERVER" = true ]; then
        echo "exec $BIN_PATH mcp \"\$@\""
    else
        echo 'echo "stagepass: the MCP server is off; set the feature option mcpServer to true to enable it" >&2'
        echo 'exit 78'
    fi
} >"$tmp_mcp"
put_file "$tmp_mcp" "$SHARE_DIR/mcp-server.sh" 0755
rm -f "$tmp_mcp"

# --- remote user --------------------------------------------------------------------------
user="${_REMOTE_USER:-}"
if [ -z "$user" ] || [ "$user" = auto ] || [ "$user" = automatic ]; then
    user=$(awk -F: '$3 == 1000 { print $1; exit }' /etc/passwd)
    [ -n "$user" ] || user=root
    say "no _REMOTE_USER given; using '$user'"
fi
home="${_REMOTE_USER_HOME:-}"
if [ -z "$home" ]; then
    home=$(awk -F: -v u="$user" '$1 == u { print $6; exit }' /etc/passwd)
fi
tmp_env=$(mktemp)
tmp_conf=$(mktemp)
tmp_profile=$(mktemp)
trap 'rm -f "$tmp_env" "$tmp_conf" "$tmp_profile"' EXIT
{
    echo "# Written by the stagepass feature's install.sh; read by entrypoint.sh (KEY=value, no shell)."
    echo "REMOTE_USER=$user"
    echo "STATE_DIR=$STATE_DIR"
} >"$tmp_env"
put_file "$tmp_env" "$SHARE_DIR/feature.env" 0644

# State dir (survives restarts and, on its volume, rebuilds): owned by the remote user, 0700.
# A new volume starts as a copy of this directory, owner and mode included. The entrypoint
# checks the owner again at every start (the devcontainer CLI may change the remote user's uid
# after this runs), so a user that does not exist yet is only a warning.
if [ -L "$STATE_DIR" ]; then
    warn "$STATE_DIR is a symlink; leaving it alone (the agent will refuse it)"
elif [ "$user" != root ] && id "$user" >/dev/null 2>&1; then
    uid=$(id -u "$user")
    gid=$(id -g "$user")
    if [ "$(stat -c '%a %u' "$STATE_DIR" 2>/dev/null)" != "700 $uid" ]; then
        install -d -m 0700 -o "$uid" -g "$gid" "$STATE_DIR"
        say "prepared: $STATE_DIR (0700, owner $user)"
    else
        say "unchanged: $STATE_DIR"
    fi
elif [ "$(stat -c %a "$STATE_DIR" 2>/dev/null)" != 700 ]; then
    install -d -m 0700 "$STATE_DIR"
fi
if [ "$user" = root ]; then
    warn "the remote user is root; the agent never runs as root, so the entrypoint will not start it. Set remoteUser to a normal user."
elif ! id "$user" >/dev/null 2>&1; then
    warn "remote user '$user' does not exist yet; the entrypoint hands $STATE_DIR to it at first start"
elif [ -z "$home" ] || [ ! -d "$home" ]; then
    warn "home of '$user' ('$home') does not exist; its config dir is created at first start"
else
    uid=$(id -u "$user")
    gid=$(id -g "$user")
    if [ ! -d "$home/.config" ]; then
        install -d -m 0755 -o "$uid" -g "$gid" "$home/.config"
        say "created: $home/.config"
    fi
    d="$home/.config/stagepass"
    if [ -L "$d" ]; then
        warn "$d is a symlink; leaving it alone"
    elif [ "$(stat -c '%a %u' "$d" 2>/dev/null)" != "700 $uid" ]; then
        install -d -m 0700 -o "$uid" -g "$gid" "$d"
        say "prepared: $d (0700, owner $user)"
    else
        say "unchanged: $d"
    fi
fi

# --- config -------------------------------------------------------------------------------
toml_list() { # space-separated words -> ["a", "b"]
    _out=""
    for _w in $1; do _out="$_out${_out:+, }\"$_w\""; done
    printf '[%s]' "$_out"
}
first_profile=""
catalog_profile=""
{
    echo "# Written by the stagepass Dev Container Feature (install.sh) from its options."
    echo "# Personal changes belong in ~/.config/stagepass/config.toml, which overrides this file."
    echo
    echo "[agent]"
    echo "log_level = \"$LOGLEVEL\""
    echo "state_dir = \"$STATE_DIR\""
    echo
    echo "[api]"
    echo "port = $PORT"
    if [ -n "$ISSUER" ] && [ -n "$CLIENTID" ]; then
        old_ifs=$IFS
        IFS=,
        for entry in $PROFILES; do
            IFS=$old_ifs
            entry=$(printf '%s' "$entry" | tr -d ' \t')
            [ -n "$entry" ] || continue
            name=${entry%%=*}
            audience=""
            case "$entry" in *=*) audience=${entry#*=} ;; esac
            case "$name" in
            '' | *[!A-Za-z0-9_-]*) err 14 "option profiles: bad profile name '$name' (letters, digits, - and _)" ;;
            esac
            check_plain profiles "$audience"
            [ -n "$first_profile" ] || first_profile=$name
            [ "$name" = backstage ] && catalog_profile=$name
            if [ "$name" = backstage-user ] && [ -n "$BACKSTAGECLIENTID" ]; then
                err 14 "option profiles: backstage-user is the profile backstageClientId writes"
            fi
            echo
            echo "[profiles.$name]"
            echo "grant = \"device\""
            echo "issuer = \"$ISSUER\""
            echo "client_id = \"$CLIENTID\""
            echo "scopes = $(toml_list "$SCOPES")"
            [ -z "$audience" ] || echo "audience = \"$audience\""
        done
        IFS=$old_ifs
    fi
    if [ -n "$BACKSTAGECLIENTID" ]; then
        # Signing in to Backstage itself: tokens of the user, so the catalog pushes as them.
        echo
        echo "[profiles.backstage-user]"
        echo "grant = \"authorization-code\""
        echo "issuer = \"${BACKSTAGEURL%/}/api/auth\""
        echo "client_id = \"$BACKSTAGECLIENTID\""
        echo "scopes = [\"openid\", \"offline_access\"]"
        [ -z "$BACKSTAGEREDIRECTPORT" ] || echo "redirect_port = $BACKSTAGEREDIRECTPORT"
        catalog_profile=backstage-user
    fi
    [ -n "$catalog_profile" ] || catalog_profile=$first_profile
    echo
    echo "[catalog]"
    echo "enabled = $CATALOGSYNC"
    [ -z "$BACKSTAGEURL" ] || echo "backstage_url = \"$BACKSTAGEURL\""
    [ -z "$CATALOGURLTEMPLATE" ] || echo "url_template = \"$CATALOGURLTEMPLATE\""
    [ -z "$catalog_profile" ] || echo "profile = \"$catalog_profile\""
    if [ -n "$AWSROLEARN" ] && [ -n "$first_profile" ]; then
        echo
        echo "[aws.default]"
        echo "profile = \"$first_profile\""
        echo "role_arn = \"$AWSROLEARN\""
    fi
} >"$tmp_conf"
if [ -z "$ISSUER" ] || [ -z "$CLIENTID" ]; then
    warn "issuer or clientId is empty: no login profiles; the agent serves only tokens the environment holds (GITHUB_TOKEN)"
fi
if [ -n "$AWSROLEARN" ] && [ -z "$first_profile" ]; then
    warn "awsRoleArn is set but there is no login profile to assume it with; ignored"
fi
put_file "$tmp_conf" "$CONFIG_FILE" 0644

# --- environment for login shells (only what containerEnv cannot say statically) ----------
{
    if [ "$PORT" != "$DEFAULT_PORT" ]; then
        echo "export STAGEPASS_API_URL=http://127.0.0.1:$PORT"
    fi
    if [ -n "$AWSROLEARN" ] && [ -n "$first_profile" ]; then
        echo "export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:$PORT/v1/aws/credentials/default"
        cat <<'PROFILE'
if [ -n "${XDG_RUNTIME_DIR:-}" ]; then
    export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$XDG_RUNTIME_DIR/stagepass/api-secret"
else
    export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="/tmp/stagepass-$(id -u)/api-secret"
fi
PROFILE
    fi
} >"$tmp_profile"
if [ -s "$tmp_profile" ]; then
    {
        echo "# Written by the stagepass feature (install.sh): how tools find the agent."
        cat "$tmp_profile"
    } >"$tmp_profile.full"
    mv -f "$tmp_profile.full" "$tmp_profile"
    mkdir -p /etc/profile.d
    put_file "$tmp_profile" "$PROFILE_D" 0644
elif [ -e "$PROFILE_D" ]; then
    rm -f "$PROFILE_D"
    say "removed: $PROFILE_D (no longer needed)"
fi

# --- git credential helper ---------------------------------------------------------------
# Registered in /etc/gitconfig. Without git in the image yet (a Feature that installs it may
# run after this one: the Feature declares no installsAfter, so that a local build never asks
# a registry), the same two lines are written by hand; git reads them once it is installed.
helper="!$BIN_PATH git-credential"
if command -v git >/dev/null 2>&1; then
    present=false
    if git config --system --get-all credential.helper 2>/dev/null | grep -qxF "$helper"; then
        present=true
    fi
    if [ "$GITCREDENTIALHELPER" = true ] && [ "$present" = false ]; then
        git config --system --add credential.helper "$helper"
        say "git: registered credential.helper '$helper' in /etc/gitconfig"
    elif [ "$GITCREDENTIALHELPER" = true ]; then
        say "unchanged: git credential.helper"
    elif [ "$present" = true ]; then
        git config --system --fixed-value --unset-all credential.helper "$helper"
        say "git: removed credential.helper '$helper' (gitCredentialHelper=false)"
    fi
elif [ "$GITCREDENTIALHELPER" = true ]; then
    if grep -qxF "	helper = $helper" /etc/gitconfig 2>/dev/null; then
        say "unchanged: git credential.helper (git is not installed yet)"
    else
        printf '[credential]\n\thelper = %s\n' "$helper" >>/etc/gitconfig
        say "git: wrote credential.helper '$helper' to /etc/gitconfig (git is not installed yet; it reads it once installed)"
    fi
fi

say "done: stagepass $("$BIN_PATH" --version 2>/dev/null | awk '{print $2}') for $ARCH/glibc, agent user '$user', port $PORT, config $CONFIG_FILE"
