#!/usr/bin/env bash
# Make sure the test object storage can run: Swift in its own virtualenv, memcached from Debian.
#
# Swift pins eventlet, greenlet and lxml versions of its own, so it lives in
# .cache/venv-swift (outside tests/, so nothing collects its packages) rather than in the project's venv. The venv is rebuilt only when
# swift/requirements.txt changes (the stamp holds its sha256), so a second run costs nothing.
# tempauth keeps tokens in memcache, hence memcached: installed with apt-get when we are
# root, otherwise the exact command is printed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="$(cd "$here/../.." && pwd)/.cache/venv-swift"
requirements="$here/swift/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

if ! command -v memcached >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing memcached (tempauth stores its tokens there)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends memcached >/dev/null
    else
        echo "memcached is missing. Run as root:" >&2
        echo "  apt-get install -y --no-install-recommends memcached" >&2
        exit 1
    fi
fi

wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ -x "$venv/bin/swift-proxy-server" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    exit 0
fi
echo "building the Swift virtualenv in $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
echo "$wanted" > "$stamp"
