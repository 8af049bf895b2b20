#!/usr/bin/env bash
# Set up everything the tests need (a virtualenv with the package, JupyterLab and the test, browser
# and lint dependency groups) and run the whole suite: lint, then pytest; after a full run that
# passed, the kernel tests again on the minimum declared Jupyter stack (test-min-deps.sh) and,
# as root, the security suites as an unprivileged user (test-unprivileged.sh). A run that
# collects no tests fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh lab --group test --group browser --group lint
# The browser test drives JupyterLab in Debian's Chromium (never a downloaded browser build).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
            >/dev/null
    else
        echo "note: chromium is not installed; the browser test will be skipped" >&2
    fi
fi
# A fresh Debian's python3 cannot make virtualenvs without python3-venv (setup-venv.sh, and the
# unprivileged run's /usr/bin/python3).
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 && [ -x /usr/bin/python3 ] \
        && ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
        >/dev/null
fi
# The egress tests make a self-signed certificate for their HTTPS server with openssl.
if ! command -v openssl >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] \
        && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
.venv/bin/ruff check agenticraft agenticraft_kernel tests benchmarks
# The container sandbox's tests need a container engine and the default image: install Debian's
# docker.io and mmdebstrap, start dockerd when none runs (stopped again on exit), build the image;
# the Enterprise Gateway tests also the gateway kernel image and EG's own virtualenv .venv-eg.
source scripts/container-engine.sh
trap container_engine_stop EXIT
container_engine_start
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
if [ "$status" -eq 0 ] && [ $# -eq 0 ]; then
    bash scripts/test-min-deps.sh || status=$?
fi
if [ "$status" -eq 0 ] && [ "$(id -u)" -eq 0 ] && [ $# -eq 0 ]; then
    # As root, run the security suites once more as an ordinary user (see the script).
    bash scripts/test-unprivileged.sh || status=$?
fi
exit "$status"
