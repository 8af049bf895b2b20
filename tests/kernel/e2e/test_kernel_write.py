"""The secure kernel with the ``write`` permission, through jupyter_client: a cell's file next to
the notebook (by relative path) reaches the host when the cell ends; a cell past the write quota
gets ``ResourceLimitExceeded`` naming ``max_file_size_mb`` and the quota, its files never reach
the host and earlier variables survive; a data file the host replaces by rename between cells
(how JupyterLab saves) is seen by the next cell, and so is a file the host creates later.

The policy grants ``write`` in a policy file given to the kernel (``SecureKernel.policy_files``);
such a file is intersected with the system policy (/etc/agenticraft/policy.toml, or the built-in
grants without one), so the test holds on a managed host only if that grants ``write`` too."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticraft.security.policy import load_policy
from kernel.harness import Kernel, kernel_env, ok, one_error

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif("write" not in load_policy().default_grants,
                                 reason="this host's system policy does not grant write")]

POLICY = """\
[ceilings]
max_file_size_mb = 8

[grants]
default = ["execute", "read_results", "write"]
"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebook")


@pytest.fixture(scope="module")
def write_kernel(data_dir: Path, notebook: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    tmp = tmp_path_factory.mktemp("write-kernel")
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    env = kernel_env(tmp, max_file_size_mb=8, timeout_seconds=30, memory_mb=256)
    k = Kernel(data_dir, env, cwd=notebook,
               extra_arguments=[f"--SecureKernel.policy_files={json.dumps([str(policy)])}"])
    yield k
    k.close()


def replace_on_host(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_status_shows_the_write_permission(write_kernel: Kernel, notebook: Path) -> None:
    reply, outputs = write_kernel.execute("%secure_status")
    assert reply["status"] == "ok", outputs
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "write" in text.split("permissions:")[1].splitlines()[0], text
    assert str(notebook) in text


def test_a_file_written_by_relative_path_reaches_the_host(write_kernel: Kernel,
                                                          notebook: Path) -> None:
    ok(write_kernel, "import os\nos.makedirs('results', exist_ok=True)\n"
                     "open('results/out.txt', 'w').write('from the cell')")
    assert (notebook / "results" / "out.txt").read_text() == "from the cell"


def test_the_write_quota_stops_a_cell_and_earlier_variables_survive(write_kernel: Kernel,
                                                                     notebook: Path) -> None:
    ok(write_kernel, "kept = 41")
    reply, outputs = write_kernel.execute(
        "for i in range(8):                      # 8 x 7 MB against 4 x 8 MB\n"
        "    with open(f'big-{i}.bin', 'wb') as fh:\n"
        "        for _ in range(7):\n"
        "            fh.write(b'x' * (1 << 20))\n"
        "kept = 0")
    assert reply["status"] == "error"
    error = one_error(outputs)
    assert error["ename"] == "ResourceLimitExceeded"
    assert "max_file_size_mb" in error["evalue"] and "quota of 32 MB" in error["evalue"]
    assert "rolled back" in error["evalue"]
    assert not list(notebook.glob("big-*.bin"))       # nothing of that cell reached the host
    assert write_kernel.value("kept") == "41"
    ok(write_kernel, "open('after.txt', 'w').write('fine')")  # room again: nothing was kept
    assert (notebook / "after.txt").read_text() == "fine"


def test_host_renames_and_new_files_show_in_the_next_cell(write_kernel: Kernel,
                                                          notebook: Path) -> None:
    (notebook / "data.csv").write_text("a,b\n1,2\n")
    assert write_kernel.value("open('data.csv').read()") == repr("a,b\n1,2\n")
    assert write_kernel.value("import os\nos.path.exists('later.csv')") == "False"
    replace_on_host(notebook / "data.csv", "a,b\n3,4\n")     # JupyterLab's save
    (notebook / "later.csv").write_text("x\n")
    assert write_kernel.value("open('data.csv').read()") == repr("a,b\n3,4\n")
    assert write_kernel.value("open('later.csv').read()") == repr("x\n")
