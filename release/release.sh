#!/bin/sh
# The release command: builds the release binaries, writes versioned tarballs, the Debian
# package and SHA-256 checksums, packages the Dev Container Feature and, given a registry,
# publishes the Feature there with the devcontainer CLI's own `features publish`.
#
#   release/release.sh [--out DIR] [--bin-dir DIR] [--registry HOST[:PORT]]
#                      [--namespace NS] [--devcontainer PATH]
#
# --out DIR        where the artifacts go (default: dist/VERSION in the repository)
# --bin-dir DIR    use the prebuilt `stagepass` and `stagepass-core` in DIR for the host
#                  architecture instead of building them (the tests pass stripped debug
#                  builds; a real release builds)
# --registry R     publish the Feature to the OCI registry R (e.g. ghcr.io, or localhost:5000:
#                  the CLI talks plain http to a registry named localhost, https to any other)
# --namespace NS   the Feature's namespace in the registry (default: stagepass/features), so
#                  its reference is R/NS/stagepass:TAG
# --devcontainer P the devcontainer CLI (default: $DEVCONTAINER, else `devcontainer` on PATH)
#
# The version is the workspace version in Cargo.toml ([workspace.package] version,
# release/version.sh), the one place it is set; feature/src/stagepass/devcontainer-feature.json
# must carry the same value or nothing is built. Published tags: MAJOR, MAJOR.MINOR and
# MAJOR.MINOR.PATCH (0, 0.1, 0.1.0) and latest, each only when this is the highest release
# matching it (the Features convention; the CLI decides).
#
# Publishing a version that the registry already has is REFUSED (exit 3), before anything is
# pushed: a published version never changes. Bump the version to release again.
#
# Binaries: the host architecture (x86_64 or aarch64) is always built, as bench/run and
# feature/package.sh build it: `cargo build --release -p stagepass`, then the front again as a
# static PIE (`-C target-feature=+crt-static`). The other architecture is built too where its
# toolchain is installed (rustup target add aarch64-unknown-linux-gnu, and the cross linker
# aarch64-linux-gnu-gcc from Debian's gcc-aarch64-linux-gnu; for x86_64 from aarch64:
# x86_64-unknown-linux-gnu and x86_64-linux-gnu-gcc), else it is skipped with a message.
# Every binary's ELF machine is checked (`readelf -h BIN | grep Machine`) before it is packed.
#
# Exit: 0 done; 1 error; 2 usage; 3 version already published.
set -eu

say() { printf 'release.sh: %s\n' "$*"; }
err() {
    printf 'release.sh: error: %s\n' "$*" >&2
    exit 1
}
usage() {
    printf 'release.sh: %s\n' "$*" >&2
    printf 'usage: release/release.sh [--out DIR] [--bin-dir DIR] [--registry HOST[:PORT]] [--namespace NS] [--devcontainer PATH]\n' >&2
    exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
out="" bin_dir="" registry="" namespace="stagepass/features"
cli=${DEVCONTAINER:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || usage "--out needs a value"; out=$2; shift 2 ;;
        --bin-dir) [ $# -ge 2 ] || usage "--bin-dir needs a value"; bin_dir=$2; shift 2 ;;
        --registry) [ $# -ge 2 ] || usage "--registry needs a value"; registry=$2; shift 2 ;;
        --namespace) [ $# -ge 2 ] || usage "--namespace needs a value"; namespace=$2; shift 2 ;;
        --devcontainer) [ $# -ge 2 ] || usage "--devcontainer needs a value"; cli=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage "unknown argument '$1'" ;;
    esac
done
[ -n "$cli" ] || cli=$(command -v devcontainer 2>/dev/null) ||
    err "the devcontainer CLI is needed (npm install -g @devcontainers/cli, or --devcontainer PATH)"

# One version, from Cargo.toml; the Feature's source metadata must agree with it.
version=$(sh "$root/release/version.sh" "$root/Cargo.toml")
json="$root/feature/src/stagepass/devcontainer-feature.json"
fv=$(sed -n 's/^  "version": "\([^"]*\)",$/\1/p' "$json")
[ "$fv" = "$version" ] ||
    err "$json says version '$fv' but Cargo.toml's workspace version is $version: set both to the release version"
say "version $version"
[ -n "$out" ] || out="$root/dist/$version"
mkdir -p "$out"
out=$(cd "$out" && pwd)
ref="${registry:+$registry/$namespace/stagepass}"

# Refuse a version the registry already has, before building anything.
published_tags() {
    # `features info tags` prints {"publishedTags": [...]}; for a Feature the registry does not
    # have it prints {} and exits 1; for a registry it cannot reach it prints nothing.
    if answer=$("$cli" features info tags "$ref" --output-format json 2>"$out/info-tags.log"); then
        :
    elif [ "$(printf '%s' "$answer" | tr -d ' \n')" = "{}" ]; then
        return 0
    else
        cat "$out/info-tags.log" >&2
        err "cannot read the published tags of $ref (is the registry up? CLI output above)"
    fi
    printf '%s' "$answer" | tr -d ' \n' | sed -n 's/.*"publishedTags":\[\([^]]*\)\].*/\1/p' |
        tr ',' '\n' | tr -d '"'
}
if [ -n "$registry" ]; then
    tags=$(published_tags)
    if printf '%s\n' "$tags" | grep -qx "$version"; then
        printf 'release.sh: refused: %s:%s is already published; a published version never changes (bump [workspace.package] version in Cargo.toml and the Feature'"'"'s version)\n' \
            "$ref" "$version" >&2
        exit 3
    fi
fi

machine_of() {
    case "$1" in x86_64) echo "X86-64" ;; aarch64) echo "AArch64" ;; esac
}
# The ELF machine of a binary must be its architecture's: a cross build that silently
# produced a host binary must not ship under the other name.
check_arch() { # ARCH BINARY
    m=$(readelf -h "$2" 2>/dev/null | sed -n 's/^ *Machine: *//p')
    case "$m" in
        *"$(machine_of "$1")"*) say "$(basename "$2") ($1): ELF machine '$m'" ;;
        *) err "$2 is not an $1 binary (ELF machine '${m:-none}')" ;;
    esac
}

host=$(uname -m)
case "$host" in x86_64 | aarch64) ;; *) err "cannot release from host architecture $host" ;; esac
bins="$out/bin"
rm -rf "$bins"
archs=""
if [ -n "$bin_dir" ]; then
    for b in stagepass stagepass-core; do
        [ -f "$bin_dir/$b" ] || err "no $b in $bin_dir"
    done
    mkdir -p "$bins/$host"
    cp "$bin_dir/stagepass" "$bin_dir/stagepass-core" "$bins/$host/"
    archs=$host
    say "$host: prebuilt binaries from $bin_dir (not built here)"
else
    target_dir=${CARGO_TARGET_DIR:-$root/target}
    build() { # ARCH: cargo build of both binaries, then the front as a static PIE
        triple="$1-unknown-linux-gnu"
        if [ "$1" = "$host" ]; then
            (cd "$root" && cargo build --release --locked -p stagepass &&
                cargo rustc --release --locked -p stagepass --bin stagepass -- -C target-feature=+crt-static)
            built="$target_dir/release"
        else
            linker="$1-linux-gnu-gcc"
            if ! rustup target list --installed 2>/dev/null | grep -qx "$triple" ||
                ! command -v "$linker" >/dev/null 2>&1; then
                say "$1: SKIPPED, no toolchain (needs: rustup target add $triple; $linker from Debian's gcc-$1-linux-gnu)"
                return 0
            fi
            var=$(echo "CARGO_TARGET_${triple}_LINKER" | tr 'a-z-' 'A-Z_')
            (cd "$root" && export "$var=$linker" &&
                cargo build --release --locked --target "$triple" -p stagepass &&
                cargo rustc --release --locked --target "$triple" -p stagepass --bin stagepass -- -C target-feature=+crt-static)
            built="$target_dir/$triple/release"
        fi
        mkdir -p "$bins/$1"
        cp "$built/stagepass" "$built/stagepass-core" "$bins/$1/"
        archs="$archs $1"
    }
    build "$host"
    case "$host" in x86_64) build aarch64 ;; aarch64) build x86_64 ;; esac
fi

# Per architecture: the ELF check, a tarball, a Debian package.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
pairs=""
artifacts=""
for arch in $archs; do
    check_arch "$arch" "$bins/$arch/stagepass"
    check_arch "$arch" "$bins/$arch/stagepass-core"
    name="stagepass-$version-$arch-linux-gnu"
    rm -rf "${out:?}/$name"
    mkdir -p "$out/$name"
    cp "$bins/$arch/stagepass" "$bins/$arch/stagepass-core" "$out/$name/"
    # The README links into docs/ and SECURITY.md: they travel with it.
    cp -R "$root/README.md" "$root/SECURITY.md" "$root/docs" "$out/$name/"
    tar -C "$out" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
        -czf "$out/$name.tar.gz" "$name"
    rm -rf "${out:?}/$name"
    sh "$root/release/deb.sh" "$version" "$arch" "$bins/$arch" "$out" >/dev/null
    case "$arch" in x86_64) deb="stagepass_${version}_amd64.deb" ;; *) deb="stagepass_${version}_arm64.deb" ;; esac
    artifacts="$artifacts $name.tar.gz $deb"
    pairs="$pairs $arch=$bins/$arch/stagepass"
    say "$arch: $name.tar.gz, $deb"
done

# The Feature, with every built architecture (install.sh picks one), packaged by the CLI.
# shellcheck disable=SC2086 # one ARCH=BINARY pair per word
DEVCONTAINER=$cli sh "$root/feature/package.sh" "$out/feature" $pairs >/dev/null
cp "$out/feature/dist/devcontainer-feature-stagepass.tgz" \
    "$out/devcontainer-feature-stagepass-$version.tgz"
artifacts="$artifacts devcontainer-feature-stagepass-$version.tgz"
# shellcheck disable=SC2086 # one file name per word
(cd "$out" && sha256sum $artifacts >SHA256SUMS)
say "checksums in $out/SHA256SUMS (check: cd $out && sha256sum -c SHA256SUMS)"

if [ -n "$registry" ]; then
    say "publishing $ref:$version"
    log="$out/publish.log"
    if ! "$cli" features publish "$out/feature/src" --registry "$registry" \
        --namespace "$namespace" --log-level info >"$log" 2>&1; then
        cat "$log" >&2
        err "devcontainer features publish failed (log above, kept in $log)"
    fi
    # The CLI skips (with a warning) a version it finds already there; a race with another
    # publisher would end here, so say so rather than claim a publish.
    if ! grep -q "\"version\":\"$version\"" "$log"; then
        cat "$log" >&2
        err "the CLI published nothing for $ref:$version (log above)"
    fi
    tags=$(published_tags | tr '\n' ' ')
    printf '%s\n' " $tags " | grep -q " $version " || err "$ref has no tag $version after the publish; its tags: $tags"
    say "published $ref (tags now: $tags)"
fi
say "done: $out"
