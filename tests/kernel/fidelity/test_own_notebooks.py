"""Notebooks of our own, each run on the stock kernel and on AgentiCraft Secure and compared
output for output (see ``compare``): what libraries and users do that a plain IPython shell
would get subtly different from ipykernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.fidelity.compare import assert_same_as_stock, notebook

NOTEBOOKS: dict[str, tuple[str, ...]] = {
    "display_id_update": (
        "from IPython.display import display, update_display\n"
        "h = display('first', display_id=True)\nh.update('second')\n"
        "display('x', display_id='mine')\nupdate_display('y', display_id='mine')\n"
        "type(h).__name__",
        "h.display_id is not None",
    ),
    "input_without_stdin": (
        "input('name? ')",
    ),
    "timing_magics": (
        "%time sum(range(1000))",
        "%timeit -n 3 -r 2 sum(range(100))",
        "%%time\nx = 3\nx * 2",
    ),
    "capture": (
        "%%capture cap\nprint('hidden')\nimport sys; print('err', file=sys.stderr)\n"
        "from IPython.display import display; display('d')",
        "print(repr(cap.stdout), repr(cap.stderr), len(cap.outputs))\ncap.show()",
    ),
    "load_ext": (
        "%load_ext autoreload",
        "%autoreload 2\n'autoreload' in get_ipython().extension_manager.loaded",
        "%reload_ext autoreload",
    ),
    "kernel_introspection": (
        "ip = get_ipython()\ntype(ip).__name__, type(ip).__module__",
        "import ipykernel.zmqshell, ipykernel.ipkernel\n"
        "isinstance(ip, ipykernel.zmqshell.ZMQInteractiveShell), "
        "isinstance(ip.kernel, ipykernel.ipkernel.IPythonKernel)",
        "k = ip.kernel\nsorted(x for x in ('session', 'iopub_socket', 'comm_manager', 'shell')"
        " if getattr(k, x, None) is not None)",
        "'IPKernelApp' in ip.config, type(ip.display_pub).__name__, type(ip.displayhook).__name__",
        "import comm\ntype(comm.get_comm_manager()).__module__, "
        "type(comm.create_comm(target_name='probe')).__module__",
        "k.session.send(k.iopub_socket, 'display_data', "
        "{'data': {'text/plain': 'sent by hand'}, 'metadata': {}}, parent=k.get_parent())\n"
        "None",
        "import sys\n'ipykernel' in sys.modules, type(ip.exiter).__name__",
        "import os\nos.environ.get('MPLBACKEND'), os.environ.get('TERM'), "
        "os.environ.get('PAGER')",
        "from ipykernel.iostream import OutStream\n"
        "[(isinstance(s, OutStream), s.name, s.encoding, s.isatty(), s.fileno() > 0) "
        "for s in (sys.stdout, sys.stderr)]",
    ),
    "exit": (
        "print('before')",
        "exit()",
    ),
    "tqdm_notebook": (
        "from tqdm.auto import tqdm\nimport tqdm.autonotebook as an\n"
        "for _ in tqdm(range(3), desc='auto', mininterval=0): pass\n"
        "type(tqdm).__module__",
        "from tqdm.notebook import tqdm as ntqdm\n"
        "bar = ntqdm(total=2, desc='nb')\nbar.update(2)\nbar.close()",
    ),
    "pandas_styling": (
        "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': [3.5, -1]})\ndf",
        "df.style.highlight_max(color='yellow').format('{:.1f}').set_uuid('fixed')",
        "df.describe()",
    ),
    "ipywidgets": (
        "import ipywidgets as w\nfrom ipywidgets import interact\n"
        "@interact(x=3)\ndef f(x):\n    print('x is', x)\n    return x * 2",
        "out = w.Output()\nwith out:\n    print('inside')\nout",
        "s = w.IntSlider(5)\ns.value = 7\ns.value",
    ),
    "matplotlib_inline": (
        "import matplotlib\nmatplotlib.get_backend()",
        "import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(1, 1), dpi=20)\n"
        "plt.plot([1, 2]); plt.show()",
        "from matplotlib_inline.backend_inline import InlineBackend\n"
        "sorted(InlineBackend.instance().figure_formats), "
        "dict(InlineBackend.instance().print_figure_kwargs)",
    ),
    "plotly_renderer": (
        "import plotly.io as pio\npio.renderers.default",
    ),
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_own_notebook_same_as_stock(name: str, jupyter_path: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    allow = name in ("input_without_stdin",)
    assert_same_as_stock(notebook(*NOTEBOOKS[name]), tmp_path, allow_errors=allow,
                         timeout=120)
