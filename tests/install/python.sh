#!/bin/sh
# Installs the Python peers of the end-to-end tests (moto_server, awscli, botocore) at the
# versions pinned in tests/requirements.txt, but only those missing or at another version.
# Idempotent: a second run installs nothing. Needs python3 with pip.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
req="$here/requirements.txt"

err() { echo "python.sh: $*" >&2; }

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    err "$PYTHON not found; install Python 3.9+ with pip"
    exit 1
fi

# Prints the requirement lines whose distribution is missing or at another version.
missing=$("$PYTHON" - "$req" <<'PY'
import re, sys
from importlib import metadata
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)", line)
    if not m:
        sys.exit(f"requirements.txt: cannot read {line!r} (use NAME[extras]==VERSION)")
    name, extras, version = m.group(1), m.group(2), m.group(3)
    try:
        ok = metadata.version(name) == version
    except metadata.PackageNotFoundError:
        ok = False
    if ok and extras == "[server]":
        # moto's server extra: flask is what moto_server imports first.
        try:
            metadata.version("flask")
            metadata.version("flask-cors")
        except metadata.PackageNotFoundError:
            ok = False
    if not ok:
        print(line)
PY
)

if [ -n "$missing" ]; then
    echo "python.sh: installing: $(echo "$missing" | tr '\n' ' ')"
    # shellcheck disable=SC2086 # one requirement per word is intended
    "$PYTHON" -m pip install --quiet --disable-pip-version-check $missing
else
    echo "python.sh: moto[server], awscli and botocore already at the pinned versions"
fi

for tool in moto_server aws; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        err "$tool is not on PATH after install; add the Python scripts directory to PATH"
        exit 1
    fi
done
