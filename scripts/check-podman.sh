#!/usr/bin/env bash
# Manual check (not part of CI): the container sandbox's tests against Podman's
# Docker-compatible API instead of Docker Engine. As root, with podman, runc and catatonit
# installed, Docker Engine running (the image is copied from it) and the venv set up:
#   bash scripts/check-podman.sh [pytest arguments]
# It starts `podman system service` on a private socket (with runc: crun refuses hosts whose
# cgroups are in hybrid v1/v2 mode), copies the default image into Podman's storage, runs the
# container sandbox's test files with DOCKER_HOST pointing at that socket, then stops the
# service it started and removes the images it copied. docs/container.md#podman has the result.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
image=${IMAGE:-$("$python" -c 'from agenticraft.security.policy import default_container_image
print(default_container_image())')}
work=$(mktemp -d)
sock="$work/podman.sock"
podman --runtime "${RUNTIME:-runc}" system service --time=0 "unix://$sock" >"$work/service.log" 2>&1 &
service=$!
cleanup() {
    kill "$service" 2>/dev/null || true
    wait "$service" 2>/dev/null || true
    podman rmi -f "$image" >/dev/null 2>&1 || true
    podman image prune -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
docker save "$image" | podman load >/dev/null 2>&1
DOCKER_HOST="unix://$sock" "$python" -m pytest -q -p no:cacheprovider \
    tests/sandbox/test_container_sandbox.py tests/sandbox/test_container_limits.py \
    tests/sandbox/test_container_egress.py tests/sandbox/test_container_cleanup.py "$@"
