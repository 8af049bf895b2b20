#!/usr/bin/env bash
# CI's second job: the kernel tests on the oldest Jupyter stack that pyproject.toml allows. The
# secure kernel subclasses ipykernel and uses some of its internals (see the comment on the
# "kernel" extra), so the declared minimums are tested, not trusted: every ">=" of that extra is
# installed as "==" into a separate virtualenv (.venv-min), and the kernel's protocol,
# jupyter_kernel_test, magics and limits tests run there (not the browser or notebook tests).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t pins < <("${PYTHON:-python3}" - <<'PY'
import re
import tomllib

with open("pyproject.toml", "rb") as file:
    kernel_extra = tomllib.load(file)["project"]["optional-dependencies"]["kernel"]
for requirement in kernel_extra:
    lowest = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement)
    if lowest is None:
        raise SystemExit(f"test-min-deps: cannot pin {requirement!r} to its minimum")
    print(f"{lowest[1]}=={lowest[2]}")
PY
)
echo "test-min-deps: ${pins[*]}"
VENV=.venv-min bash scripts/setup-venv.sh kernel --group test "${pins[@]}"
.venv-min/bin/python -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(ipykernel|jupyter[_-]client|ipython|ipywidgets|comm|traitlets) '
exec .venv-min/bin/python -m pytest -p no:cacheprovider "$@" \
    tests/kernel/e2e/test_kernel_protocol.py tests/kernel/e2e/test_jupyter_kernel_test.py \
    tests/kernel/e2e/test_secure_magics.py tests/kernel/e2e/test_kernel_limits.py
