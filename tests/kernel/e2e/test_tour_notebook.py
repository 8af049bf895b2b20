"""notebooks/tour.ipynb executed with nbclient on the secure kernel: the limits, the denied
network call, the memory bomb that rolls back and the audit trail do what the tour says."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat

TOUR = Path(__file__).resolve().parents[3] / "notebooks" / "tour.ipynb"


def outputs_of(nb: object, needle: str) -> list[dict]:
    cells = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]  # type: ignore[attr-defined]
    assert len(cells) == 1, needle
    return cells[0].outputs


def test_tour_runs_as_described(jupyter_path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(TOUR, 4)
    assert nb.metadata.kernelspec.name == "agenticraft-secure"
    # Every cell runs (an unexpected error does not stop the notebook), so that a failure
    # below shows what the kernel said, e.g. whether the bomb rolled back or lost the state.
    client = nbclient.NotebookClient(nb, timeout=120, allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [(c.source.splitlines()[0], o.ename, o.evalue[:500]) for c in nb.cells
              if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    # only the cells the tour shows failing, in its order
    assert [first for first, _ename, _evalue in errors] == [
        "hog = []", "import urllib.request", 'open("/etc/passwd").read()'], errors

    bomb = outputs_of(nb, "while True:")
    assert [o.output_type for o in bomb] == ["error"]
    assert bomb[0].ename == "ResourceLimitExceeded"
    assert "memory_mb" in bomb[0].evalue and "rolled back" in bomb[0].evalue, bomb[0].evalue

    after = "".join(o.get("text", "") for o in outputs_of(nb, "still here"))
    assert "still here: [0, 1, 4, 9, 16]" in after
    assert "around? False" in after

    network = outputs_of(nb, "urlopen")
    assert network[0].ename == "URLError"
    assert outputs_of(nb, "/etc/passwd")[0].ename in ("PermissionError", "FileNotFoundError")
    assert "rich output" in outputs_of(nb, "HTML(")[0].data["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in outputs_of(nb, "IntSlider")[0].data

    trail = outputs_of(nb, "%audit_trail")[0].data["text/plain"]
    assert "limit_exceeded (memory_mb)" in trail
    assert "network_access" in trail and "filesystem_access" in trail
    assert trail.count("execution") >= 8
