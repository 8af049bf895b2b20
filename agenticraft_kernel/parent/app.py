"""Launch the secure kernel: ``python -P -m agenticraft_kernel.parent.app -f {connection_file}``.

ipykernel's ``IPKernelApp`` with three changes: the kernel class is ``SecureKernel``; there is no
shell-channel thread (this kernel does not offer subshells); and the working directory is never
put on ``sys.path`` (``-P`` and ``init_path``), because a cell may be allowed to write files there
and the parent kernel runs unconfined: nothing a cell writes may be imported by the parent.
"""

from __future__ import annotations

import sys
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from jupyter_client.session import Session
from traitlets import Bool, Type

from agenticraft_kernel.parent.kernel import SecureKernel


class SecureKernelApp(IPKernelApp):
    """The kernel process (config file: ``agenticraft_kernel_config.py`` in the IPython
    profile or system config dirs; every setting there is a request the policy clips)."""

    name = "agenticraft-kernel"
    classes = [SecureKernel, Session]  # type: ignore[assignment]
    subcommands: dict[str, Any] = {}  # type: ignore[assignment]
    kernel_class = Type(SecureKernel, klass="ipykernel.kernelbase.Kernel",
                        help="The kernel class (SecureKernel or a subclass)").tag(config=True)
    # The sandbox zygote inherits fds 1/2; its diagnostics belong in the log, not in cells.
    capture_fd_output = Bool(False, help="Forward fd-level output of the kernel process"
                             ).tag(config=True)

    def init_control(self, context: Any) -> None:
        super().init_control(context)
        self.shell_channel_thread = None  # no subshells: shell messages run on the main loop

    def init_path(self) -> None:
        """Leave ``sys.path`` alone: never import from the notebook's directory."""


def main(argv: list[str] | None = None) -> None:
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]
    app = SecureKernelApp.instance()
    app.initialize(argv)
    app.start()


if __name__ == "__main__":
    main()
