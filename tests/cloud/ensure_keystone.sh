#!/usr/bin/env bash
# Make sure the test Keystone can run: Debian's python3-keystone (keystone-manage,
# keystone-wsgi-public). Not the `keystone` package: its postinst sets up apache.
# The Swift proxy's authtoken filter (keystonemiddleware) comes with the Swift venv
# (swift/requirements.txt), so this script only deals with Debian. A second run costs nothing.
set -euo pipefail

if command -v keystone-manage >/dev/null 2>&1 && command -v keystone-wsgi-public >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "Debian's keystone is missing. Run as root:" >&2
    echo "  apt-get install -y --no-install-recommends python3-keystone python3-keystonemiddleware" >&2
    exit 1
fi
echo "installing Debian's keystone (python3-keystone)"
apt-get -o DPkg::Lock::Timeout=300 update -qq
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    python3-keystone python3-keystonemiddleware >/dev/null
