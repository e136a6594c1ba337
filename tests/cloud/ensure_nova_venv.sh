#!/usr/bin/env bash
# Make .cache/venv-nova hold exactly requirements-nova.txt, and print its python's path.
#
# Idempotent and fast when nothing changed: the venv carries a stamp with the sha256 of the
# requirements file, so a second run costs one hash. A changed file (or a half-finished
# install, which leaves no stamp) rebuilds the venv from scratch rather than patching it.
# Nova needs Python >= 3.11; set NOVA_PYTHON to choose the interpreter.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/requirements-nova.txt"
venv="${NOVA_VENV:-$(cd "$here/../.." && pwd)/.cache/venv-nova}"
python="${NOVA_PYTHON:-python3}"
stamp="$venv/.requirements.sha256"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

# Serialise concurrent callers (two pytest processes, CI and a developer): the loser waits,
# then finds the stamp written by the winner. The lock is on the requirements file itself,
# so no lock file is left lying in the work tree.
exec 9<"$requirements"
flock 9
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

echo "ensure_nova_venv: installing the Nova test cloud into $venv (about 40 s)" >&2
started=$SECONDS
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -qq --disable-pip-version-check --no-input -r "$requirements" >&2
# The wheel's etc/nova/api-paste.ini is what nova_server.py serves; no file, no API.
test -f "$venv/etc/nova/api-paste.ini"
echo "$want" >"$stamp"
echo "ensure_nova_venv: installed in $((SECONDS - started)) s" >&2
echo "$venv/bin/python"
