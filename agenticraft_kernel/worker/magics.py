"""Worker side: the kernel's own magics, as the sandboxed shell sees them.

``%%secure``, ``%secure_status``, ``%secure_audit``, ``%secure_panel`` and ``%audit_trail`` are
answered by the parent kernel when they start a cell of their own; anywhere else they reach the
worker and end here with one line saying where they belong.
"""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

LINE_MISUSE = ("%secure is a cell magic: put %%secure [options] on the first line of a cell and "
               "the code below it (%%secure --help lists the options).")


@magics_class
class KernelAnsweredMagics(Magics):
    """Inside the secure kernel's sandbox: these magics belong to the kernel, not to user code.

    The kernel answers them when they start a cell of their own; anywhere else they end up here
    and say so in one line.
    """

    @staticmethod
    def _misplaced(name: str) -> UsageError:
        return UsageError(f"{name} is answered by the AgentiCraft Secure kernel itself: put it "
                          "on the first line of a cell of its own")

    @line_cell_magic
    def secure(self, line: str, cell: str | None = None) -> None:
        if cell is None:
            raise UsageError(LINE_MISUSE)
        raise self._misplaced("%%secure")

    @line_magic
    def secure_status(self, line: str) -> None:
        raise self._misplaced("%secure_status")

    @line_magic
    def secure_audit(self, line: str) -> None:
        raise self._misplaced("%secure_audit")

    @line_magic
    def secure_panel(self, line: str) -> None:
        raise self._misplaced("%secure_panel")

    @line_magic
    def secure_undo(self, line: str) -> None:
        raise self._misplaced("%secure_undo")

    @line_magic
    def audit_trail(self, line: str) -> None:
        raise self._misplaced("%audit_trail")
