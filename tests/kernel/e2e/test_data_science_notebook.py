"""notebooks/data_science.ipynb executed with nbclient on the secure kernel under its default
limits (512 MB for the whole session): numpy, pandas, matplotlib, scipy and scikit-learn with
two workers all run. Before resource control v2, ``import sklearn`` after numpy, pandas and
matplotlib failed to map ``libgfortran`` under the address-space limit."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "data_science.ipynb"


def test_data_science_notebook_runs_under_default_limits(jupyter_path: Path,
                                                         tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, 4)
    client = nbclient.NotebookClient(nb, timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    for needle in ("matmul (2000, 2000) symmetric: True", "groupby {", "scipy minimum [3.0, -1.0]",
                   "sklearn accuracy"):
        assert needle in text, text
    assert any("image/png" in o.get("data", {}) for o in outputs)
