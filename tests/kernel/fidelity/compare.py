"""Run one notebook on the stock ``python3`` kernel (ipykernel) and on AgentiCraft Secure, and
compare them output for output.

Normalised only where two runs of the *same* kernel differ too: timings, ids (display ids, widget
model ids, comm ids), memory addresses, process ids and temporary paths; and HTML, SVG and
Markdown pass through the kernel's output policy on both sides (issue 13: the secure kernel sends
them sanitised, which re-serialises the markup, e.g. ``<style scoped="">``), so what is compared
is "ours == the policy applied to stock's". Everything else, ANSI colours of tracebacks
included, must be identical.
"""

from __future__ import annotations

import copy
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import nbclient
import nbformat

from agenticraft_kernel.parent.output_policy import SANITISED_MIMETYPES, OutputPolicy
from kernel.harness import KERNEL

POLICY = OutputPolicy()

STOCK = "python3"
ADDR = re.compile(r"0x[0-9a-fA-F]{6,16}")
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")
# IPython formats times with %g: "1e+03 ns" is a time too
NUMBER = r"\d+(\.\d+)?(e[+-]?\d+)?"
TIMING = re.compile(rf"{NUMBER}\s?(ns|µs|μs|us|ms|s)\b( ± {NUMBER}\s?(ns|µs|μs|us|ms|s))?")
LOOPS = re.compile(r"\(mean ± std\. dev\. of \d+ runs?, [\d,]+ loops? each\)")
RATE = re.compile(r"\d+(\.\d+)?(it/s|s/it)")
PID_PATH = re.compile(r"ipykernel_\d+")


def normalize_text(text: str) -> str:
    for pattern, repl in ((ADDR, "<ADDR>"), (HEX_ID, "<ID>"), (LOOPS, "<LOOPS>"),
                          (RATE, "<RATE>"), (TIMING, "<TIME>"), (PID_PATH, "ipykernel_<PID>")):
        text = pattern.sub(repl, text)
    return text


def _normalize_value(value: Any) -> Any:
    if isinstance(value, str):
        return normalize_text(value)
    if isinstance(value, list):
        return [_normalize_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize_value(v) for k, v in value.items()}
    return value


def normalize_output(output: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(output))
    out.pop("metadata", None)
    out.pop("transient", None)
    data = out.get("data", {})
    markup = {k: v for k, v in data.items() if k in SANITISED_MIMETYPES}
    if markup:
        data.update(POLICY.clean_bundle(markup)[0])
    if "image/svg+xml" in data:
        data["image/svg+xml"] = ET.canonicalize(data["image/svg+xml"], strip_text=True)
    return _normalize_value(out)


def run_notebook(nb: Any, kernel_name: str, path: Path, **opts: Any) -> Any:
    cleaned = copy.deepcopy(nb)
    for cell in cleaned.cells:
        cell.pop("execution_count", None)
        if cell.cell_type == "code":
            cell["outputs"] = []
    client = nbclient.NotebookClient(cleaned, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(path)}}, **opts)
    # Not PYTEST_CURRENT_TEST: under pytest, ipykernel leaves its fd capture off (and
    # sys.stdout.fileno() then raises); kernels here run as under Jupyter.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return client.execute(env=env)


def outputs_of(nb: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
    return [(cell.get("execution_count"), [normalize_output(o) for o in cell.get("outputs", [])])
            for cell in nb.cells if cell.cell_type == "code"]


def assert_same_as_stock(nb: Any, path: Path, **opts: Any) -> None:
    """Run ``nb`` on both kernels; every code cell's outputs and count must match."""
    stock = outputs_of(run_notebook(nb, STOCK, path, **opts))
    secure = outputs_of(run_notebook(nb, KERNEL, path, **opts))
    assert len(stock) == len(secure)
    for index, (want, got) in enumerate(zip(stock, secure, strict=True)):
        assert got == want, f"cell {index}: secure {got!r} != stock {want!r}"


def notebook(*cells: str) -> Any:
    """A notebook from cell sources (our own corpus)."""
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
