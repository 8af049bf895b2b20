#!/usr/bin/env bash
# Shared by start.sh, test.sh, test-min-deps.sh and test-unprivileged.sh: create the virtualenv
# $VENV (default .venv, made with $PYTHON, default python3) if it does not exist, bring its pip
# up to date (dependency groups need pip >= 25.1), and install this package in editable mode
# with the extras in $1 ("" for none) plus any further pip arguments, e.g.
#   setup-venv.sh lab
#   setup-venv.sh lab --group test --group browser --group lint
#   VENV=.venv-min setup-venv.sh kernel --group test ipykernel==7.4
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
extras=${1?usage: setup-venv.sh EXTRAS [PIP_ARGS...]}
shift
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade "pip>=25.1"
"${pip[@]}" -e ".${extras:+[$extras]}" "$@"
