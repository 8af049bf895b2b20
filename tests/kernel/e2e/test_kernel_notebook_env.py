"""Issue 11: with default limits, what ordinary notebooks do works in the secure kernel (its
private root has /dev/shm, a devpts and the notebook's directory, readable by default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.harness import Kernel, kernel_env

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def notebook(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    tmp = tmp_path_factory.mktemp("notebook-env")
    folder = tmp / "notebooks"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n1,2\n3,4\n")
    k = Kernel(data_dir, kernel_env(tmp), cwd=folder)  # default limits
    yield k
    k.close()


def text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o["msg_type"] == "stream")


def test_reads_a_csv_next_to_the_notebook(notebook: Kernel) -> None:
    assert notebook.value("import csv\nlist(csv.reader(open('data.csv')))") == \
        "[['a', 'b'], ['1', '2'], ['3', '4']]"


def test_multiprocessing_pool(notebook: Kernel) -> None:
    reply, outputs = notebook.execute(
        "import multiprocessing\n"
        "def square(x):\n    return x * x\n"
        "with multiprocessing.Pool(2) as pool:\n    print(pool.map(square, range(5)))")
    assert reply["status"] == "ok", (reply, outputs)
    assert "[0, 1, 4, 9, 16]" in text(outputs)


@pytest.mark.xfail(strict=True, reason="issue 11: loky's workers read their own /proc/<pid>; "
                   "needs a PID namespace with a fresh /proc")
def test_joblib_parallel(notebook: Kernel) -> None:
    reply, outputs = notebook.execute(
        "from joblib import Parallel, delayed\n"
        "def square(x):\n    return x * x\n"
        "print(Parallel(n_jobs=2)(delayed(square)(i) for i in range(5)))")
    assert reply["status"] == "ok", (reply, outputs)
    assert "[0, 1, 4, 9, 16]" in text(outputs)


def test_shell_escapes_and_subprocess(notebook: Kernel) -> None:
    reply, outputs = notebook.execute("!echo hi")
    assert reply["status"] == "ok" and "hi" in text(outputs), (reply, outputs)
    reply, outputs = notebook.execute("%%sh\necho from-sh")
    assert reply["status"] == "ok" and "from-sh" in text(outputs), (reply, outputs)
    value = notebook.value("import subprocess\n"
                           "subprocess.run(['ls'], capture_output=True, text=True).stdout")
    assert "data.csv" in value


def test_pip_install_without_network_says_so(notebook: Kernel) -> None:
    reply, outputs = notebook.execute("%pip install --no-cache-dir agenticraft-not-a-package")
    shown = text(outputs) + str(reply.get("evalue", ""))
    assert "pty" not in shown.lower()
    assert "network" in shown.lower(), (reply, outputs)


def test_notebook_directory_default_yields_to_every_other_source() -> None:
    from agenticraft_kernel.parent.kernel_context import notebook_defaults

    assert notebook_defaults({}, {}, True) == {"filesystem_access": True}
    assert notebook_defaults({"filesystem_access": False}, {}, True) == {
        "filesystem_access": False}
    assert notebook_defaults({}, {"filesystem_access": False}, True) == {}
    assert notebook_defaults({}, {}, False) == {}  # the administrator's ceiling turns it off
