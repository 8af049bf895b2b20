"""The trust boundary at run time: which ``agenticraft*`` modules a real worker has loaded.

The static test (tests/test_boundary.py) reads the import statements; this one asks the worker
itself, so an import through a preload list, an executor named by string or a pickled reference
is caught as well. Inside a worker only the sandbox-side packages (jail, wire, the kernel's
worker) and the light bare packages may be loaded.
"""

from __future__ import annotations

import ast

from kernel.harness import Kernel

from helpers import assert_sandbox_side_only

LOADED = 'sorted(m for m in __import__("sys").modules if m.startswith("agenticraft"))'


def test_kernel_worker_loads_no_host_module(kernel: Kernel) -> None:
    # Exercise the worker's paths first: streams, rich display, an error, input of a magic.
    reply, _ = kernel.execute("print('hi')\nfrom IPython.display import display\ndisplay(1)")
    assert reply["status"] == "ok"
    assert kernel.execute("1/0")[0]["status"] == "error"
    assert kernel.execute("%%secure --timeout 3\nx = 1")[0]["status"] == "ok"
    loaded = ast.literal_eval(kernel.value(LOADED))
    assert "agenticraft_kernel.worker.ipython_executor" in loaded  # really the worker's view
    assert_sandbox_side_only(loaded)
