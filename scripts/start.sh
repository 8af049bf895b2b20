#!/usr/bin/env bash
# Set up everything (a virtualenv with JupyterLab and this package), install the
# "AgentiCraft Secure" kernel into it, show what this host enforces, and start JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh lab
.venv/bin/python -m agenticraft_kernel install --sys-prefix
.venv/bin/python -m agenticraft_kernel doctor
extra=()
if [ "$(id -u)" -eq 0 ]; then
    extra+=(--allow-root)
fi
exec .venv/bin/jupyter lab --notebook-dir=notebooks "${extra[@]}" "$@"
