"""nbclient's own test notebooks (copied from its sdist, BSD-3-Clause, see
``nbclient_files/LICENSE``) executed on AgentiCraft Secure, outputs compared exactly as
nbclient's ``test_run_all_notebooks`` compares them (``normalize_output`` and
``assert_notebooks_equal`` below follow its test module; SVG is compared as canonical XML instead
of through xmltodict).

For reference, the stock ``python3`` kernel (ipykernel 7.4, IPython 9) fails one of these here,
"Skip Exceptions with Cell Tags" (its traceback text differs from the stored one)."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from base64 import b64decode, b64encode
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

from kernel.harness import KERNEL

FILES = Path(__file__).parent / "nbclient_files"
ADDR = re.compile(r"0x[0-9a-f]{7,9}")
IPY_INPUT = re.compile(
    r"(<ipython-input-\d+-[0-9a-f]+>|<IPY-INPUT>) in (<module>|<cell line: \d>\(\))")
IPY8_INPUT = re.compile(
    r"((Cell|Input) In\s?\[\d+\]|<IPY-INPUT>), (in )?(line \d|<module>|<cell line: \d>\(\))")
ANSI = re.compile("\x1b\\[(.*?)([@-~])")

#: (notebook, NotebookClient options) exactly as in nbclient's test_run_all_notebooks.
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
]


def normalize_base64(text: str) -> str:
    try:
        return b64encode(b64decode(text.encode("ascii"))).decode("ascii")
    except (ValueError, TypeError):
        return text


def normalize_output(output: dict[str, Any]) -> dict[str, Any]:
    output = copy.deepcopy(dict(output))
    output.pop("metadata", None)
    if "text" in output:
        output["text"] = ADDR.sub("<HEXADDR>", output["text"])
    data = output.get("data", {})
    if "text/plain" in data:
        data["text/plain"] = ADDR.sub("<HEXADDR>", data["text/plain"])
    if "application/vnd.jupyter.widget-view+json" in data:
        data["application/vnd.jupyter.widget-view+json"]["model_id"] = "<MODEL_ID>"
    if "image/svg+xml" in data:  # nbclient parses with xmltodict; canonical XML is equivalent
        data["image/svg+xml"] = ET.canonicalize(data["image/svg+xml"], strip_text=True)
    for key, value in data.items():
        if isinstance(value, str):
            data[key] = normalize_base64(value)
    if "traceback" in output:
        output["traceback"] = [IPY8_INPUT.sub("<IPY-INPUT>", IPY_INPUT.sub(
            "<IPY-INPUT>", ANSI.sub("", line))) for line in output["traceback"]]
    return output


def assert_notebooks_equal(expected: Any, actual: Any) -> None:
    assert len(expected["cells"]) == len(actual["cells"])
    for want, got in zip(expected["cells"], actual["cells"], strict=True):
        assert ([normalize_output(o) for o in want.get("outputs", [])]
                == [normalize_output(o) for o in got.get("outputs", [])])
        assert want.get("execution_count") == got.get("execution_count")


def run_notebook(name: str, kernel_name: str, opts: dict[str, Any]) -> tuple[Any, Any]:
    input_nb = nbformat.read(FILES / name, 4)
    cleaned = copy.deepcopy(input_nb)
    for cell in cleaned.cells:
        cell.pop("execution_count", None)
        cell["outputs"] = []
    client = nbclient.NotebookClient(cleaned, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(FILES)}}, **opts)
    return input_nb, client.execute()


@pytest.mark.parametrize(("name", "opts"), NOTEBOOKS, ids=[n for n, _ in NOTEBOOKS])
def test_nbclient_notebook(name: str, opts: dict[str, Any], jupyter_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # as nbclient's tests: a fixed traceback width
    monkeypatch.setenv("LINES", "24")
    if name == "Inline Image.ipynb":  # the image is read from the notebook's directory
        monkeypatch.setenv("AGENTICRAFT_DEFAULT_FILESYSTEM_ACCESS", "true")
    input_nb, output_nb = run_notebook(name, KERNEL, opts)
    assert_notebooks_equal(input_nb, output_nb)
