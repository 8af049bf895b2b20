"""Parent side: the notebook's input history, kept by the kernel (the worker's history is in
memory and rolls back with the session, so the parent is the one record that survives)."""

from __future__ import annotations

import fnmatch
from typing import Any

SESSION = 1


class CellHistory:
    """Executed cells (with ``store_history``) answering ``history_request`` like IPython."""

    def __init__(self) -> None:
        self._cells: list[tuple[int, str]] = []

    def add(self, execution_count: int, code: str) -> None:
        self._cells.append((execution_count, code))

    def reply(self, hist_access_type: str, output: bool = False, raw: bool = True,
              session: int | None = None, start: int | None = 0, stop: int | None = None,
              n: int | None = None, pattern: str | None = None, unique: bool = False,
              **_: Any) -> dict[str, Any]:
        if hist_access_type == "tail":
            cells = self._cells[-n:] if n else list(self._cells)
        elif hist_access_type == "range":
            lo = start or 0
            cells = [c for c in self._cells
                     if (session in (None, 0, SESSION) or session < 0)
                     and c[0] >= lo and (stop is None or c[0] < stop)]
        elif hist_access_type == "search":
            glob = pattern or "*"
            cells = [c for c in self._cells if fnmatch.fnmatchcase(c[1], glob)]
            if unique:
                seen: dict[str, tuple[int, str]] = {}
                for cell in cells:
                    seen.pop(cell[1], None)
                    seen[cell[1]] = cell
                cells = list(seen.values())
            if n:
                cells = cells[-n:]
        else:
            cells = []
        return {"status": "ok",
                "history": [(SESSION, count, (code, None) if output else code)
                            for count, code in cells]}
