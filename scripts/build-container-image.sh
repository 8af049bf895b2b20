#!/usr/bin/env bash
# Build the container sandbox's default image locally, without any container registry:
#   1. a minimal Debian root filesystem (mmdebstrap, variant "essential") with Debian's python3
#      libseccomp2 (what pyseccomp loads) and libstdc++6 (pyzmq, for the kernel itself in a
#      container), from the Debian mirror apt already uses;
#   2. this package and its runtime + kernel dependencies installed into /opt/agenticraft with
#      pip --target (the zygote puts /opt/agenticraft first on sys.path; the image's python runs
#      with -I, so no site-packages of the image is trusted);
#   3. an unprivileged user "sandbox" (uid/gid 10001) the sandbox runs as;
#   4. the tarball piped into `docker import` with the labels the engine checks.
# This is the "Dockerfile" of the image, written as a script because no base image can be
# pulled here. Usage (as root; needs mmdebstrap and a running Docker Engine or Podman):
#   scripts/build-container-image.sh [IMAGE]   (default: agenticraft-sandbox:<package version>)
#   scripts/build-container-image.sh [IMAGE] --gateway TAG   (also import the same root
#       filesystem as TAG, the Enterprise Gateway kernel image, e.g. agenticraft-eg-kernel:<version>:
#       its command is the gateway launcher, agenticraft_kernel.gateway.launch)
#   scripts/build-container-image.sh --source-hash   (print the hash of the package's sources)
# Environment: PYTHON (a Python 3.11 with pip, default .venv/bin/python), SUITE (default
# bookworm: its python3 is 3.11, the minor version the wheels are built for), DOCKER (client
# binary, default docker; "podman" works the same way).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--source-hash" ]; then
    # What the image's copy of the package is built from (its label org.agenticraft.source):
    # test.sh rebuilds an image whose copy differs from this checkout.
    find agenticraft agenticraft_kernel pyproject.toml -type f \( -name '*.py' -o -name '*.json' \
        -o -name '*.toml' -o -name '*.svg' -o -name '*.png' \) -not -path '*/__pycache__/*' \
        | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16
    exit 0
fi
gateway=""
if [ "${2:-}" = "--gateway" ]; then
    gateway=${3:?usage: build-container-image.sh IMAGE --gateway TAG}
fi
python=${PYTHON:-.venv/bin/python}
suite=${SUITE:-bookworm}
docker=${DOCKER:-docker}
version=$("$python" -c 'import agenticraft; print(agenticraft.__version__)')
image=${1:-agenticraft-sandbox:$version}
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$pyver" != "3.11" ] && [ "$suite" = "bookworm" ]; then
    echo "build-container-image: $python is Python $pyver; bookworm's python3 is 3.11" >&2
    exit 1
fi
source=$(bash scripts/build-container-image.sh --source-hash)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The package and its dependencies, built on the host (the image has no pip and no network).
"$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$work/opt/agenticraft" ".[kernel,gateway]"
rm -rf "$work/opt/agenticraft/bin"
chmod -R a+rX,go-w "$work/opt/agenticraft"
mmdebstrap --quiet --variant=essential --include=python3,libseccomp2,libstdc++6 \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="cp -a '$work/opt/agenticraft' \"\$1/opt/agenticraft\"" \
    --customize-hook='echo "sandbox:x:10001:10001:sandbox:/tmp:/usr/sbin/nologin" >> "$1/etc/passwd"' \
    --customize-hook='echo "sandbox:x:10001:" >> "$1/etc/group"' \
    --customize-hook='rm -rf "$1/var/cache/apt" "$1/var/lib/apt/lists"' \
    "$suite" "$work/rootfs.tar"
"$docker" import \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /tmp' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change "LABEL org.agenticraft.image=sandbox org.agenticraft.version=$version org.agenticraft.source=$source" \
    --change 'CMD ["/usr/bin/python3", "-I", "-c", "import sys; sys.path.insert(0, \"/opt/agenticraft\"); from agenticraft.jail.container_entry import doctor; doctor()"]' \
    "$work/rootfs.tar" "$image" >/dev/null
echo "$image"
if [ -n "$gateway" ]; then
    "$docker" import \
        --change 'USER 10001:10001' \
        --change 'WORKDIR /tmp' \
        --change 'ENV PYTHONDONTWRITEBYTECODE=1 HOME=/tmp' \
        --change "LABEL org.agenticraft.image=gateway-kernel org.agenticraft.version=$version org.agenticraft.source=$source" \
        --change 'CMD ["/usr/bin/python3", "-I", "-c", "import sys; sys.path.insert(0, \"/opt/agenticraft\"); from agenticraft_kernel.gateway.launch import main; main()"]' \
        "$work/rootfs.tar" "$gateway" >/dev/null
    echo "$gateway"
fi
