"""The trust boundary, checked statically: code that runs inside the sandbox imports no host code.

Modules under ``agenticraft/jail/`` and ``agenticraft_kernel/worker/`` run in the confined worker;
``agenticraft/wire/`` is imported by both sides. Every import they contain (module level, inside
functions, under ``TYPE_CHECKING``, relative, or a literal ``importlib.import_module``) must name
one of the allowed first-party packages, the standard library or a third-party package. The
allow-list is for first-party code only, so a new host package is refused without editing this
file. The runtime counterparts (which ``agenticraft*`` modules a real worker has loaded) are
``tests/sandbox/test_worker_boundary.py`` and ``tests/kernel/e2e/test_worker_boundary.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import FIRST_PARTY, SANDBOX_SIDE_PACKAGES, host_modules, within

ROOT = Path(__file__).resolve().parents[1]
#: Attributes of the bare packages that import nothing (``agenticraft.Agent`` is lazy host code).
LIGHT_ATTRIBUTES = frozenset({"__version__", "__all__"})
#: Which first-party packages each side-of-the-boundary folder may import.
RULES: dict[str, tuple[str, ...]] = {
    "agenticraft/jail": SANDBOX_SIDE_PACKAGES,
    "agenticraft_kernel/worker": SANDBOX_SIDE_PACKAGES,
    "agenticraft/wire": ("agenticraft.wire",),
}


@dataclasses.dataclass(frozen=True)
class Import:
    """One imported module (``module``) or attribute of a bare package (``attribute``)."""

    line: int
    module: str
    attribute: str = ""

    @property
    def name(self) -> str:
        return f"{self.module}.{self.attribute}" if self.attribute else self.module


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _resolve_relative(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    package = importer if is_package else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _literal_dynamic_import(node: ast.Call) -> str | None:
    """``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def imports_in(source: str, importer: str, *, is_package: bool = False,
               root: Path = ROOT) -> Iterator[Import]:
    """Every import anywhere in ``source`` (the module ``importer``), names fully resolved."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(node, importer, is_package) if node.level
                    else node.module or "")
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if alias.name != "*" and _is_module(submodule, root):
                    yield Import(node.lineno, submodule)
                elif base in FIRST_PARTY and alias.name not in LIGHT_ATTRIBUTES:
                    yield Import(node.lineno, base, alias.name)
                else:
                    yield Import(node.lineno, base)
        elif isinstance(node, ast.Call) and (target := _literal_dynamic_import(node)):
            yield Import(node.lineno, target)


def is_allowed(imported: Import, allowed: tuple[str, ...]) -> bool:
    """Outside first-party code anything goes (stdlib, third party); inside, only ``allowed``
    and the bare packages themselves (whose ``__init__`` is checked to stay light)."""
    if imported.module.split(".")[0] not in FIRST_PARTY:
        return True
    if imported.attribute:  # ``from agenticraft import Agent``: a lazy import of host code
        return False
    return imported.module in FIRST_PARTY or within(imported.module, allowed)


def violations(path: Path, allowed: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """``file:line imports name`` for every import of ``path`` that ``allowed`` does not cover."""
    importer = module_name(path, root)
    found = imports_in(path.read_text(), importer, is_package=path.name == "__init__.py",
                       root=root)
    return [f"{path.relative_to(root)}:{imp.line} imports {imp.name}"
            for imp in found if not is_allowed(imp, allowed)]


def boundary_violations(root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    for folder, allowed in RULES.items():
        modules = sorted((root / folder).rglob("*.py"))
        assert modules, f"no modules under {folder}: update RULES to the new layout"
        for path in modules:
            problems += violations(path, allowed, root)
    return problems


def heavy_init_imports(package: str, root: Path = ROOT) -> list[str]:
    """First-party imports, other than the bare packages' light attributes, that run when the
    bare package is imported (module level only: imports inside functions, like the lazy
    ``agenticraft.Agent``, run only when called)."""
    path = root / package / "__init__.py"
    tree = ast.parse(path.read_text())
    body = ast.Module(body=[n for n in tree.body
                            if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)],
                      type_ignores=[])
    found = imports_in(ast.unparse(body), package, is_package=True, root=root)
    return [f"{path.relative_to(root)} imports {imp.name} when imported"
            for imp in found if not is_allowed(imp, ())]


# -- the tree -------------------------------------------------------------------------------------
def test_sandbox_side_imports_no_host_module() -> None:
    problems = boundary_violations()
    assert not problems, ("code that runs inside the sandbox imports host code (it may import "
                          "only jail/, wire/, agenticraft_kernel/worker/, stdlib and third-party "
                          "packages):\n" + "\n".join(problems))


@pytest.mark.parametrize("package", FIRST_PARTY)
def test_bare_packages_stay_light(package: str) -> None:
    """Importing ``agenticraft.wire.x`` runs ``agenticraft/__init__.py`` inside the worker."""
    assert heavy_init_imports(package) == []


# -- the checker itself: it must be able to fail --------------------------------------------------
@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    """A miniature tree with the real package names, so submodules resolve as in the repo."""
    for package in ("agenticraft", "agenticraft/jail", "agenticraft/wire", "agenticraft/security",
                    "agenticraft_kernel", "agenticraft_kernel/worker"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    for module in ("agenticraft/security/audit.py", "agenticraft/wire/protocol.py"):
        (tmp_path / module).write_text("")
    return tmp_path


def plant(root: Path, relative: str, source: str) -> Path:
    path = root / relative
    path.write_text(textwrap.dedent(source))
    return path


@pytest.mark.parametrize(("source", "reported"), [
    ("def helper():\n    from agenticraft.security.audit import AuditLog\n",
     "agenticraft/jail/bad.py:2 imports agenticraft.security.audit"),
    ("import agenticraft.sandbox.supervisor\n",
     "agenticraft/jail/bad.py:1 imports agenticraft.sandbox.supervisor"),
    ("from ..security import audit\n",
     "agenticraft/jail/bad.py:1 imports agenticraft.security.audit"),
    ("from agenticraft import security\n",
     "agenticraft/jail/bad.py:1 imports agenticraft.security"),
    ("from agenticraft import Agent\n", "agenticraft/jail/bad.py:1 imports agenticraft.Agent"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from agenticraft_kernel.parent.kernel import SecureKernel\n",
     "agenticraft/jail/bad.py:3 imports agenticraft_kernel.parent.kernel"),
    ("import importlib\ndef load():\n    return importlib.import_module('agenticraft.agents')\n",
     "agenticraft/jail/bad.py:3 imports agenticraft.agents"),
])
def test_checker_reports_planted_host_import(fake_tree: Path, source: str,
                                             reported: str) -> None:
    plant(fake_tree, "agenticraft/jail/bad.py", source)
    assert boundary_violations(fake_tree) == [reported]


def test_checker_accepts_sandbox_side_imports(fake_tree: Path) -> None:
    plant(fake_tree, "agenticraft/jail/good.py", """\
        import json
        import agenticraft
        from agenticraft import __version__
        from agenticraft.wire import protocol
        from . import good
        from ..wire.protocol import encode
        import IPython
        def later():
            from agenticraft_kernel.worker import channel
        """)
    assert boundary_violations(fake_tree) == []


def test_checker_keeps_wire_to_itself(fake_tree: Path) -> None:
    plant(fake_tree, "agenticraft/wire/bad.py", "from agenticraft.jail import zygote\n")
    assert boundary_violations(fake_tree) == ["agenticraft/wire/bad.py:1 imports agenticraft.jail"]


def test_checker_reports_a_heavy_package_init(fake_tree: Path) -> None:
    plant(fake_tree, "agenticraft/__init__.py", """\
        from agenticraft_kernel import __version__
        from agenticraft.security.audit import AuditLog
        def __getattr__(name):
            from agenticraft.agents.agent import Agent
            return Agent
        """)
    assert heavy_init_imports("agenticraft", fake_tree) == [
        "agenticraft/__init__.py imports agenticraft.security.audit when imported"]


def test_runtime_check_names_only_host_modules() -> None:
    """``host_modules`` judges what a worker reports in the runtime boundary tests."""
    loaded = ["agenticraft", "agenticraft_kernel", "agenticraft.wire.protocol", "agenticraft.jail",
              "agenticraft_kernel.worker.shell", "agenticraft.security.audit",
              "agenticraft_kernel.views.secure_args", "agenticraft.sandbox", "agenticraftish"]
    assert host_modules(loaded) == ["agenticraft.sandbox", "agenticraft.security.audit",
                                    "agenticraft_kernel.views.secure_args"]
