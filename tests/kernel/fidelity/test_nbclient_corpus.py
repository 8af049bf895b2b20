"""nbclient's own test notebooks (copied from its repository, BSD-3-Clause, see
``nbclient_files/LICENSE``): the 16 of its ``test_run_all_notebooks`` with the same client
options, plus ``Error.ipynb``. Each runs on the stock ``python3`` kernel and on AgentiCraft Secure
in this test session, and the outputs must be identical (see ``compare``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest

from kernel.fidelity.compare import assert_same_as_stock

FILES = Path(__file__).parent / "nbclient_files"

#: (notebook, NotebookClient options) as in nbclient's test_run_all_notebooks, plus Error.ipynb.
NOTEBOOKS: list[tuple[str, dict[str, Any]]] = [
    ("Other Comms.ipynb", {}),
    ("Clear Output.ipynb", {}),
    ("Empty Cell.ipynb", {}),
    ("Factorials.ipynb", {}),
    ("HelloWorld.ipynb", {}),
    ("Inline Image.ipynb", {}),
    ("Interrupt.ipynb", {"timeout": 3, "interrupt_on_timeout": True, "allow_errors": True}),
    ("JupyterWidgets.ipynb", {}),
    ("Skip Exceptions with Cell Tags.ipynb", {}),
    ("Skip Exceptions.ipynb", {"allow_errors": True}),
    ("Skip Execution with Cell Tag.ipynb", {}),
    ("SVG.ipynb", {}),
    ("Unicode.ipynb", {}),
    ("UnicodePy3.ipynb", {}),
    ("update-display-id.ipynb", {}),
    ("Check History in Memory.ipynb", {}),
    ("Error.ipynb", {"allow_errors": True}),
]


@pytest.mark.parametrize(("name", "opts"), NOTEBOOKS, ids=[n for n, _ in NOTEBOOKS])
def test_nbclient_notebook_same_as_stock(name: str, opts: dict[str, Any], jupyter_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # as nbclient's tests: a fixed traceback width
    monkeypatch.setenv("LINES", "24")
    if name == "Inline Image.ipynb":
        # The image is read from the notebook's directory. Until the private-environment issue
        # (11) gives cells their notebook's directory by default, this test grants file access.
        monkeypatch.setenv("AGENTICRAFT_DEFAULT_FILESYSTEM_ACCESS", "true")
    assert_same_as_stock(nbformat.read(FILES / name, 4), FILES, **opts)
