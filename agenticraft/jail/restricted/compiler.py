"""Compile untrusted source into native bytecode that calls the sandbox's guards.

The code is parsed once, checked and rewritten by :class:`SandboxTransformer` (a subclass of
RestrictedPython's ``RestrictingNodeTransformer``), compiled by CPython and cached by digest, so a
repeated run costs a dictionary lookup. The policy is enforced on the AST *after* Python has
NFKC-normalised identifiers, so ``_`` followed by U+FF3F (full-width low line) and ``class__``
is seen as ``__class__``.

What changes compared to plain RestrictedPython, and why:

* error messages are ours, combined into one :class:`SecurityViolation` with line numbers;
* ``*``, ``**`` and ``<<`` become calls of size-capped helpers (``10**10**10`` is refused in
  microseconds instead of freezing the process); constant operands are folded or left native
  when they cannot explode, so numeric loops stay at native speed;
* ``x += 1`` stays a native in-place operation (RestrictedPython routes every ``+=`` through a
  Python function); ``obj.attr op= v`` and the size-capped ``[...] *= n`` go through guards;
* ``for a, b in ...`` and ``a, b = ...`` are not wrapped in unpacking generators: in this sandbox
  ``_getiter_`` checks nothing, so the wrappers would only cost time;
* ``nonlocal``, annotated assignments, ``super().__init__`` and a handful of dunder methods in
  class bodies (``__repr__``, ``__len__`` ...) are allowed so ordinary classes work;
* bare ``except:`` catches ``Exception`` only, and ``return``/``break``/``continue`` and
  ``yield``/``yield from``/``await`` inside ``finally`` are refused: sandboxed code cannot
  swallow (or pause and drop) ``KeyboardInterrupt``/``SystemExit``;
* ``str % args`` with a literal template and f-string format specs go through the width
  guard (``_mod_``, ``_format_``), so ``'%1000000000d' % 1`` fails fast;
* imports are limited to ``allowed_imports`` ∩ :data:`SAFE_MODULES`.
"""

from __future__ import annotations

import ast
import hashlib
import threading
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from RestrictedPython.transformer import (
    INSPECT_ATTRIBUTES,
    IOPERATOR_TO_STR,
    RestrictingNodeTransformer,
    copy_locations,
)

from agenticraft.jail.restricted.guards import (
    CLASS_INTERNAL_ATTRIBUTES,
    INTERNAL_ATTRIBUTES,
    INTERNAL_REASON,
    PRIVATE_REASON,
    READABLE_DUNDERS,
    estimate_lshift_bytes,
    estimate_mul_bytes,
    estimate_pow_bytes,
    needs_full_getattr,
    violation_text,
)
from agenticraft.jail.restricted.modules import SAFE_MODULES
from agenticraft.wire.errors import SecurityViolation

DEFAULT_FILENAME = "<sandbox>"
CACHE_SIZE = 256

#: Dunder methods a class body may define (RestrictedPython allows __init__, __contains__ and
#: the comparisons). Only methods that receive ``self`` and operands chosen by sandboxed code;
#: not __getattr__, __del__, __exit__, __format__, __index__, descriptors or __init_subclass__.
CLASS_DUNDERS = frozenset({
    "__init__", "__contains__", "__lt__", "__le__", "__eq__", "__ne__", "__gt__", "__ge__",
    "__repr__", "__str__", "__len__", "__iter__", "__next__", "__getitem__", "__setitem__",
    "__delitem__", "__bool__", "__hash__", "__call__", "__add__", "__sub__", "__mul__",
    "__truediv__", "__floordiv__", "__mod__", "__neg__", "__pos__", "__abs__", "__radd__",
    "__rsub__", "__rmul__",
})

#: Names refused in any position, with the reason shown to the user.
FORBIDDEN_NAMES = {
    "exec": "exec() is not available in the sandbox (it would run code outside its rules)",
    "eval": "eval() is not available in the sandbox (it would run code outside its rules)",
    "compile": "compile() is not available in the sandbox (it would build code objects)",
    "globals": "globals() is not available in the sandbox (its namespaces are not accessible)",
    "locals": "locals() is not available in the sandbox (its namespaces are not accessible)",
    "vars": "vars() is not available in the sandbox (its namespaces are not accessible)",
    "breakpoint": "breakpoint() is not available in the sandbox (no debugger)",
    "builtins": "the name 'builtins' is reserved in the sandbox",
}

#: Names the user may read although they start with '_'.
READABLE_PRIVATE_NAMES = frozenset({"__name__"})

_STATEMENT_TEXT = {
    "TryStar": ("except*", "'except*' (exception groups) is not allowed in the sandbox"),
    "AsyncFunctionDef": ("async def", "'async def' is not allowed in the sandbox"),
    "Await": ("await", "'await' is not allowed in the sandbox"),
    "AsyncFor": ("async for", "'async for' is not allowed in the sandbox"),
    "AsyncWith": ("async with", "'async with' is not allowed in the sandbox"),
    "Match": ("match", "'match' statements are not allowed in the sandbox"),
}

# Size-capped operators: AST operator -> guard function name.
_GUARDED_OPERATORS: dict[type[ast.operator], str] = {
    ast.Mult: "_mul_", ast.Pow: "_pow_", ast.LShift: "_lshift_"}
_ESTIMATORS: dict[type[ast.operator], Callable[[Any, Any], int]] = {
    ast.Mult: estimate_mul_bytes, ast.Pow: estimate_pow_bytes,
    ast.LShift: estimate_lshift_bytes}
_APPLY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Mult: lambda a, b: a * b, ast.Pow: lambda a, b: a ** b,
    ast.LShift: lambda a, b: a << b}
_FOLD_MAX_BYTES = 4096     # constant expressions up to this size are computed at compile time
_SMALL_FACTOR = 1          # `x * -1`, `x * 0`, `x * 1` cannot grow a value: left native
_SMALL_EXPONENT = 1        # `x ** 1` likewise (any larger constant compounds in a loop)
_SMALL_SHIFT = 64          # `x << 64` adds 8 bytes
_FOLDABLE_TYPES = (bool, int, float, complex, str, bytes)


class Violation(NamedTuple):
    lineno: int | None
    construct: str
    message: str


def _constant(node: ast.AST) -> tuple[bool, Any]:
    """(True, value) for literals, including a signed number such as ``-5``."""
    if isinstance(node, ast.Constant):
        return True, node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float, complex)):
        value = node.operand.value
        return True, (-value if isinstance(node.op, ast.USub) else value)
    return False, None


def _is_number(value: Any, limit: int | None) -> bool:
    """A float/complex literal (cannot repeat a sequence) or an int with ``|value| <= limit``."""
    if type(value) in (float, complex):
        return True
    return limit is not None and type(value) in (int, bool) and -limit <= value <= limit


def _cannot_explode(op: type[ast.operator], left: ast.AST | None, right: ast.AST) -> bool:
    """True when ``left op right`` is bounded whatever the non-constant operand holds.

    Only operands that cannot grow a value at all stay native: float/complex literals and
    0/1/-1. ``x * 2`` or ``x ** 2`` in a loop compounds (2**k, 2**(2**k)), so any other
    constant factor or exponent goes through the size-capped guard (its fast path for small
    ints costs one call).
    """
    right_ok, right_value = _constant(right)
    left_ok, left_value = _constant(left) if left is not None else (False, None)
    if op is ast.Mult:
        return ((right_ok and _is_number(right_value, _SMALL_FACTOR))
                or (left_ok and _is_number(left_value, _SMALL_FACTOR)))
    if op is ast.Pow:
        return ((right_ok and _is_number(right_value, _SMALL_EXPONENT))
                or (left_ok and type(left_value) in (float, complex)))
    if op is ast.LShift:
        return right_ok and type(right_value) in (int, bool) and 0 <= right_value <= _SMALL_SHIFT
    return True


def _fold(op: type[ast.operator], node: ast.BinOp) -> ast.Constant | None:
    """Compute a constant expression now if its result is small; else None."""
    left_ok, left = _constant(node.left)
    right_ok, right = _constant(node.right)
    if not (left_ok and right_ok and isinstance(left, _FOLDABLE_TYPES)
            and isinstance(right, _FOLDABLE_TYPES)):
        return None
    try:
        if _ESTIMATORS[op](left, right) > _FOLD_MAX_BYTES:
            return None
        value = _APPLY[op](left, right)
    except Exception:
        return None  # e.g. 'a' * 'b', 0 ** -1: the guarded call raises at run time
    if isinstance(value, str | bytes) and len(value) > _FOLD_MAX_BYTES:
        return None
    folded = ast.Constant(value)
    copy_locations(folded, node)
    return folded


def _guard_call(name: str, args: list[ast.expr], like: ast.AST) -> ast.Call:
    call = ast.Call(func=ast.Name(name, ast.Load()), args=args, keywords=[])
    copy_locations(call, like)  # type: ignore[arg-type]
    return call


class SandboxTransformer(RestrictingNodeTransformer):
    """RestrictedPython's policy with our messages, size guards and a few relaxations."""

    def __init__(self, allowed_imports: frozenset[str]) -> None:
        super().__init__(errors=[], warnings=[], used_names={})
        self.allowed_imports = allowed_imports
        self.violations: list[Violation] = []
        self._scopes: list[str] = ["module"]

    # -- reporting -----------------------------------------------------------------------

    def violate(self, node: ast.AST, message: str, construct: str) -> None:
        self.violations.append(Violation(getattr(node, "lineno", None), construct, message))

    def error(self, node: ast.AST, info: str) -> None:
        """RestrictedPython's own errors (the ones our overrides do not pre-empt)."""
        self.violate(node, info.rstrip("."), type(node).__name__)

    def warn(self, node: ast.AST, info: str) -> None:
        """RestrictedPython's warnings ("prints but never reads printed") do not apply."""

    def not_allowed(self, node: ast.AST) -> None:
        kind = type(node).__name__
        construct, message = _STATEMENT_TEXT.get(
            kind, (kind, f"{kind} is not allowed in the sandbox"))
        self.violate(node, message, construct)

    def generic_visit(self, node: ast.AST) -> None:  # type: ignore[override]
        """Syntax RestrictedPython has not reviewed (``match``, new nodes) is refused."""
        self.not_allowed(node)

    # -- names ---------------------------------------------------------------------------

    def check_name(self, node: Any, name: str | None,
                   allow_magic_methods: bool = False) -> None:
        if name is None:
            return
        if name.startswith("_") and name != "_":
            if allow_magic_methods and name in CLASS_DUNDERS:
                return
            self.violate(node, f"the name {name!r} is not allowed ({PRIVATE_REASON})", name)
        elif name.endswith("__roles__"):
            self.violate(node, f"the name {name!r} is reserved (it ends with '__roles__')",
                         name)
        elif name in FORBIDDEN_NAMES:
            self.violate(node, FORBIDDEN_NAMES[name], name)
        elif name == "print":
            self.violate(node, "'print' cannot be redefined in the sandbox", name)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load):
            if node.id == "print":
                # print(...) -> _print._call_print(...), _print = _print_(_getattr_) per scope
                self.print_info.print_used = True
                replacement = ast.Attribute(value=ast.Name("_print", ast.Load()),
                                            attr="_call_print", ctx=ast.Load())
                copy_locations(replacement, node)
                return replacement
            if node.id in READABLE_PRIVATE_NAMES:
                return node
            self.used_names[node.id] = True
        self.check_name(node, node.id)
        return node

    def visit_Global(self, node: ast.Global) -> ast.AST:
        for name in node.names:
            self.check_name(node, name)
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        """Allowed (RestrictedPython refuses it): it only rebinds the user's own variables."""
        for name in node.names:
            self.check_name(node, name)
        return node

    # -- attributes ----------------------------------------------------------------------

    def check_attribute(self, node: ast.AST, attr: str) -> None:
        if attr.startswith("_") and attr != "_":
            self.violate(node, f"access to attribute {attr!r} is not allowed ({PRIVATE_REASON})",
                         attr)
        elif attr in INTERNAL_ATTRIBUTES or attr in INSPECT_ATTRIBUTES:
            self.violate(node, f"access to attribute {attr!r} is not allowed "
                               f"({INTERNAL_REASON})", attr)
        elif attr in CLASS_INTERNAL_ATTRIBUTES:
            self.violate(node, f"access to attribute {attr!r} is not allowed (class internals "
                               "are not available in the sandbox)", attr)
        elif attr.endswith("__roles__"):
            self.violate(node, f"access to attribute {attr!r} is not allowed (reserved name)",
                         attr)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        """``a.b`` -> ``_getattr_(a, 'b')``; ``a.b = c`` -> ``_write_(a).b = c``."""
        loading = isinstance(node.ctx, ast.Load)
        if not (loading and node.attr in READABLE_DUNDERS):
            self.check_attribute(node, node.attr)
        node = self.node_contents_visit(node)
        if loading:
            hook = "_getattr_" if needs_full_getattr(node.attr) else "_getattr_vetted_"
            return _guard_call(hook, [node.value, ast.Constant(node.attr)], node)
        writer = _guard_call("_write_", [node.value], node.value)
        node.value = writer
        return node

    # -- calls, functions, classes ---------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> ast.AST:
        """Calls stay native, ``f(*args, **kw)`` included: the arguments need no guard here."""
        return self.node_contents_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.check_name(node, node.name, allow_magic_methods=self._scopes[-1] == "class")
        self.check_function_argument_names(node)
        self._scopes.append("function")
        try:
            with self.print_info.new_print_scope():
                node = self.node_contents_visit(node)
                self.inject_print_collector(node)
        finally:
            self._scopes.pop()
        if node.args.vararg is not None:
            # ``*args`` packs its arguments into a tuple: checked like a tuple display.
            check = ast.Expr(_guard_call("_vararg_", [ast.Name(node.args.vararg.arg, ast.Load())],
                                         node))
            copy_locations(check, node)
            docstring = (node.body and isinstance(node.body[0], ast.Expr)
                         and isinstance(node.body[0].value, ast.Constant)
                         and isinstance(node.body[0].value.value, str))
            node.body.insert(1 if docstring else 0, check)
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self.check_function_argument_names(node)
        self._scopes.append("function")
        try:
            node = self.node_contents_visit(node)
        finally:
            self._scopes.pop()
        if node.args.vararg is not None:  # lambda *a: body -> lambda *a: _vararg_(a) and body
            check = _guard_call("_vararg_", [ast.Name(node.args.vararg.arg, ast.Load())], node)
            node.body = ast.BoolOp(ast.And(), [check, node.body])
            copy_locations(node.body, node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        """Classes are created by ``__metaclass__`` (guards.sandbox_class), which marks them."""
        self.check_name(node, node.name)
        for keyword in node.keywords:
            if keyword.arg == "metaclass":
                self.violate(node, "the class keyword 'metaclass' is not allowed in the sandbox",
                             "metaclass")
            elif keyword.arg is None:
                self.violate(node, "'**' in a class definition is not allowed in the sandbox",
                             "class")
        self._scopes.append("class")
        try:
            node = self.node_contents_visit(node)
        finally:
            self._scopes.pop()
        metaclass = ast.keyword(arg="metaclass", value=ast.Name("__metaclass__", ast.Load()))
        copy_locations(metaclass.value, node)
        node.keywords = [k for k in node.keywords if k.arg != "metaclass"] + [metaclass]
        return node

    # -- imports -------------------------------------------------------------------------

    def _check_module(self, node: ast.AST, module: str) -> None:
        if module in self.allowed_imports:
            return
        if module == "__future__" and isinstance(node, ast.ImportFrom):
            return
        if module not in SAFE_MODULES:
            safe = ", ".join(sorted(SAFE_MODULES))
            message = (f"import of module {module!r} is not allowed (it is not one of the "
                       f"sandbox's safe modules: {safe})")
        else:
            allowed = ", ".join(sorted(self.allowed_imports))
            message = (f"import of module {module!r} is not allowed "
                       + (f"(allowed here: {allowed})" if allowed
                          else "(no imports were allowed for this run)"))
        self.violate(node, message, "import")

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            self._check_module(node, alias.name)
            self.check_name(node, alias.asname or alias.name.split(".")[0])
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level:
            self.violate(node, "relative imports are not allowed in the sandbox", "import")
            return node
        self._check_module(node, node.module or "")
        for alias in node.names:
            if alias.name == "*":
                self.violate(node, f"'from {node.module} import *' is not allowed (import the "
                                   "names you need)", "import")
                continue
            self.check_name(node, alias.name)
            if alias.asname:
                self.check_name(node, alias.asname)
        return node

    # -- statements ----------------------------------------------------------------------

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        """A bare ``except:`` becomes ``except Exception:`` (never KeyboardInterrupt & co)."""
        node = self.node_contents_visit(node)
        self.check_name(node, node.name)
        if node.type is None:
            node.type = ast.Name("_catchable_", ast.Load())
            copy_locations(node.type, node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        """``x: int = 1``: target and annotation go through the usual checks."""
        return self.node_contents_visit(node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        return self.node_contents_visit(node)

    def guard_iter(self, node: Any) -> Any:
        """``for x in e`` -> ``for x in _getiter_(e)`` (also for tuple targets)."""
        node = self.node_contents_visit(node)
        node.iter = _guard_call("_getiter_", [node.iter], node.iter)
        return node

    # -- size-capped arithmetic ----------------------------------------------------------

    def visit_FormattedValue(self, node: ast.FormattedValue) -> ast.AST:
        """``f'{x:{w}}'``: a format spec goes through ``_format_`` (width/precision capped)."""
        node = self.node_contents_visit(node)
        if node.format_spec is None:
            return node
        call = _guard_call("_format_", [node.value, ast.Constant(node.conversion),
                                        node.format_spec], node)
        replacement = ast.FormattedValue(value=call, conversion=-1, format_spec=None)
        copy_locations(replacement, node)
        return replacement

    def visit_Tuple(self, node: ast.Tuple) -> ast.AST:
        """A tuple display that may nest another tuple is built by ``_tuple_`` (depth-checked:
        hashing a deeply nested tuple recurses in C). Constant-only displays, targets and
        subscripts with slices stay native."""
        node = self.node_contents_visit(node)
        if (isinstance(node, ast.Tuple) and isinstance(node.ctx, ast.Load)
                and not any(isinstance(e, ast.Slice) for e in node.elts)
                and not all(_constant(e)[0] for e in node.elts)):
            return _guard_call("_tuple_", list(node.elts), node)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        node = self.node_contents_visit(node)
        op = type(node.op)
        if op is ast.Mod:
            # printf-style formatting: widths are checked whenever the left side may be a
            # template (a literal one, or any value that is not a number constant)
            left_ok, left_value = _constant(node.left)
            if left_ok and not isinstance(left_value, str | bytes):
                return node
            return _guard_call("_mod_", [node.left, node.right], node)
        guard = _GUARDED_OPERATORS.get(op)
        if guard is None:
            return node
        folded = _fold(op, node)
        if folded is not None:
            return folded
        if _cannot_explode(op, node.left, node.right):
            return node
        return _guard_call(guard, [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        op = type(node.op)
        op_text = ast.Constant(IOPERATOR_TO_STR[op])
        guarded = op in _GUARDED_OPERATORS and not _cannot_explode(op, None, node.value)
        target = node.target
        if isinstance(target, ast.Attribute):
            # Always through guards: the current value must pass the attribute read guard.
            self.check_attribute(target, target.attr)
            obj = self.visit(target.value)
            value = self.visit(node.value)
            call = _guard_call("_aug_attr_", [obj, ast.Constant(target.attr), op_text, value],
                               node)
            statement = ast.Expr(call)
            copy_locations(statement, node)
            return statement
        if isinstance(target, ast.Subscript) and guarded:
            obj = self.visit(target.value)
            key = self.visit(target.slice)
            value = self.visit(node.value)
            statement = ast.Expr(_guard_call("_aug_item_", [obj, key, op_text, value], node))
            copy_locations(statement, node)
            return statement
        # Names, and items with a harmless operator: native in-place operation
        # (items are written through _write_ by visit_Subscript).
        node = self.node_contents_visit(node)
        if not guarded or not isinstance(node.target, ast.Name):
            return node
        name = node.target.id
        assign = ast.Assign(
            targets=[ast.Name(name, ast.Store())],
            value=_guard_call("_inplacevar_", [op_text, ast.Name(name, ast.Load()), node.value],
                              node))
        copy_locations(assign, node)
        return assign


# ----------------------------------------------------------------------------------------------
# Checks that need the whole tree
# ----------------------------------------------------------------------------------------------

_SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_LOOP_NODES = (ast.For, ast.While, ast.AsyncFor)


def _scan_finally(node: ast.AST, in_loop: bool, report: Callable[[ast.AST, str], None]) -> None:
    if isinstance(node, _SCOPE_NODES):
        return
    if isinstance(node, ast.Return):
        report(node, "return")
        return
    if isinstance(node, ast.Yield | ast.YieldFrom | ast.Await):
        report(node, {ast.Yield: "yield", ast.YieldFrom: "yield from",
                      ast.Await: "await"}[type(node)])
        return
    if isinstance(node, ast.Break | ast.Continue) and not in_loop:
        report(node, "break" if isinstance(node, ast.Break) else "continue")
        return
    if isinstance(node, _LOOP_NODES):
        for child in node.body:
            _scan_finally(child, True, report)
        for child in node.orelse:
            _scan_finally(child, in_loop, report)
        return
    for child in ast.iter_child_nodes(node):
        _scan_finally(child, in_loop, report)


def check_finally_blocks(tree: ast.AST, transformer: SandboxTransformer) -> None:
    """Refuse ``return``/``break``/``continue`` that leave a ``finally`` block (PEP 765):
    they silently drop the exception in flight, KeyboardInterrupt and SystemExit included.
    ``yield``/``yield from``/``await`` inside ``finally`` are refused too: they pause the
    exception in flight, and dropping the paused generator discards it."""

    def report(node: ast.AST, keyword: str) -> None:
        effect = ("pause the exception in flight, and dropping the paused generator would "
                  "discard it" if keyword in ("yield", "yield from", "await")
                  else "swallow exceptions")
        transformer.violate(node, f"'{keyword}' inside 'finally' is not allowed in the sandbox "
                                  f"(it would {effect}, including interrupts)", keyword)

    for node in ast.walk(tree):
        if isinstance(node, ast.Try | ast.TryStar):
            for statement in node.finalbody:
                _scan_finally(statement, False, report)


def combine_violations(violations: Iterable[Violation]) -> SecurityViolation:
    """One SecurityViolation listing every problem, first line first."""
    unique: dict[tuple[int | None, str], Violation] = {}
    for item in violations:
        unique.setdefault((item.lineno, item.message), item)
    ordered = sorted(unique.values(), key=lambda v: (v.lineno is None, v.lineno or 0))
    text = "\n".join(violation_text(v.lineno, v.message) for v in ordered)
    first = ordered[0]
    return SecurityViolation(text, lineno=first.lineno, construct=first.construct)


# ----------------------------------------------------------------------------------------------
# Compilation with an LRU cache
# ----------------------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple[bytes, str, frozenset[str]], types.CodeType] = OrderedDict()
_SAFE_MODULE_NAMES = frozenset(SAFE_MODULES)
_CACHE_LOCK = threading.Lock()


def _syntax_error(message: str, filename: str, lineno: int | None = 1, offset: int | None = 1,
                  text: str | None = None, end_lineno: int | None = None,
                  end_offset: int | None = None) -> SyntaxError:
    return SyntaxError(message, (filename, lineno, offset, text, end_lineno, end_offset))


def _clean_syntax_error(exc: SyntaxError, filename: str) -> SyntaxError:
    return _syntax_error(exc.msg, filename, exc.lineno, exc.offset, exc.text,
                         exc.end_lineno, exc.end_offset)


_TOO_DEEP = "the code is nested too deeply to compile"


def _compile(source: str, allowed: frozenset[str], filename: str) -> types.CodeType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning/DeprecationWarning of user code
        try:
            tree = ast.parse(source, filename=filename, mode="exec")
        except SyntaxError as exc:
            raise _clean_syntax_error(exc, filename) from None
        except ValueError as exc:  # null bytes in the source
            raise _syntax_error(str(exc), filename) from None
        except (RecursionError, MemoryError):
            raise _syntax_error(_TOO_DEEP, filename) from None
        transformer = SandboxTransformer(allowed)
        try:
            check_finally_blocks(tree, transformer)
            tree = transformer.visit(tree)
        except RecursionError:
            raise _syntax_error(_TOO_DEEP, filename) from None
        if transformer.violations:
            raise combine_violations(transformer.violations)
        ast.fix_missing_locations(tree)
        try:
            return compile(tree, filename, "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise _clean_syntax_error(exc, filename) from None
        except (RecursionError, MemoryError):
            raise _syntax_error(_TOO_DEEP, filename) from None


def compile_restricted_code(source: str, *, allowed_imports: frozenset[str] = frozenset(),
                            filename: str = DEFAULT_FILENAME) -> types.CodeType:
    """Check, rewrite and compile ``source``; cached by sha256(source), filename and the allowed
    imports (``allowed_imports`` ∩ :data:`SAFE_MODULES`, order-insensitive).

    Raises ``SyntaxError`` for invalid Python and :class:`SecurityViolation` (listing every
    problem with its line) for code that breaks the sandbox policy.
    """
    if type(source) is not str:
        raise TypeError(f"source must be a str, not {type(source).__name__}")
    if isinstance(allowed_imports, str):
        raise TypeError("allowed_imports must be a set of module names, not a str")
    requested = (allowed_imports if type(allowed_imports) is frozenset
                 else frozenset(allowed_imports))
    allowed = requested & _SAFE_MODULE_NAMES
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).digest()
    key = (digest, filename, allowed)  # a frozenset: the same key in any order
    with _CACHE_LOCK:
        code = _CACHE.get(key)
        if code is not None:
            _CACHE.move_to_end(key)
            return code
    code = _compile(source, allowed, filename)
    with _CACHE_LOCK:
        _CACHE[key] = code
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return code


def clear_cache() -> None:
    """Forget every compiled program (tests and benchmarks use this)."""
    with _CACHE_LOCK:
        _CACHE.clear()
