"""``--in``/``--out``: variables into and results out of a fresh sandbox, as plain data only.

Values go in as Python literals written on the host (never pickles, never objects) and come back
through the sandbox's JSON result. The epilogue that packs ``--out`` names runs inside the
sandbox and is written in the subset both sandboxes accept (no imports, no ``_`` names), so a
value that is not plain data is named in a clear error instead of arriving as its ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agenticraft.wire import codec
from agenticraft.wire.codec import MAX_DEPTH, MAX_INT, PLAIN

MAX_LITERAL = 2_000_000  # characters of --in data per cell
OUT_NAME = "agenticraft_out"
ERRORS_NAME = "agenticraft_out_errors"


class TransferError(Exception):
    """A variable cannot cross the sandbox boundary (shown as one line, not a traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


def literal(value: Any, name: str) -> str:
    """``value`` as a Python literal, or ``TransferError`` naming the variable."""
    try:
        return codec.literal(value)
    except codec.NotPlain as exc:
        raise TransferError(f"--in {name}: {exc}") from None


def prelude(values: Mapping[str, Any]) -> str:
    """Assignments of the ``--in`` values, on one line so the cell's line numbers shift by
    one at most."""
    if not values:
        return ""
    text = "; ".join(f"{name} = {literal(value, name)}" for name, value in values.items())
    if len(text) > MAX_LITERAL:
        raise TransferError(f"--in: {len(text)} characters of data; at most {MAX_LITERAL} "
                            "can be passed into a cell")
    return text + "\n"


#: The codec's rules (``codec.to_plain(value, coerce=True)``) restated in the subset both
#: sandboxes run, since the epilogue cannot import anything; the bounds come from the codec.
_EPILOGUE = f'''
def agenticraft_plain(value, depth):
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        if value >= {MAX_INT} or value <= -{MAX_INT}:
            raise ValueError("the integer is too large to cross (limit 2**63)")
        return int(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("it is not a finite number")
        return float(value)
    if depth < {MAX_DEPTH} and isinstance(value, (list, tuple)):
        return [agenticraft_plain(item, depth + 1) for item in value]
    if depth < {MAX_DEPTH} and isinstance(value, dict):
        copy = {{}}
        for key in value:
            if not isinstance(key, str):
                raise ValueError("dict keys must be str")
            copy[str(key)] = agenticraft_plain(value[key], depth + 1)
        return copy
    raise ValueError(repr(value)[:60] + " is not plain data")
agenticraft_out = {{}}
agenticraft_out_errors = {{}}
'''

_PACK = '''try:
    agenticraft_out[{name!r}] = agenticraft_plain({name}, 0)
except NameError:
    agenticraft_out_errors[{name!r}] = "the cell did not define it"
except (ValueError, RecursionError) as exc:
    agenticraft_out_errors[{name!r}] = str(exc)
'''


def epilogue(names: Sequence[str]) -> str:
    """Code appended to the cell: packs the ``--out`` names as plain data."""
    if not names:
        return ""
    return _EPILOGUE + "".join(_PACK.format(name=name) for name in names)


def wrap(code: str, values: Mapping[str, Any], outputs: Sequence[str]) -> str:
    """The code a fresh sandbox runs for a ``%%secure`` cell with ``--in``/``--out``."""
    body = code if code.endswith("\n") else code + "\n"
    return prelude(values) + body + epilogue(outputs)


def collect(result: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The ``--out`` values from a sandbox result, or ``TransferError`` naming what failed."""
    if not names:
        return {}
    packed = result.get(OUT_NAME)
    errors = result.get(ERRORS_NAME)
    if not isinstance(packed, dict) or not isinstance(errors, dict):
        raise TransferError("--out: the cell's results did not come back (the cell replaced "
                            f"{OUT_NAME})")
    problems = [f"{name}: {errors[name]}" for name in names if name in errors]
    missing = [name for name in names if name not in packed and name not in errors]
    problems += [f"{name}: the cell did not define it" for name in missing]
    if problems:
        raise TransferError("--out " + "; ".join(problems) + f". Only {PLAIN} can come back.")
    return {name: packed[name] for name in names}
