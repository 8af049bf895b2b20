"""The built-in tools: calculator, python, read_file and web_search.

=============  ==========  =====================================================================
tool           sandbox     needs
=============  ==========  =====================================================================
calculator     restricted  ``execute``; an arithmetic expression only (checked on the host)
python         process     ``execute``
read_file      process     ``execute`` + ``filesystem_access``; paths under the working directory
web_search     process     ``execute`` + ``network_access``; a search backend (``base_url``)
=============  ==========  =====================================================================
"""

from __future__ import annotations

import abc
import ast
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agenticraft.agents.tools.base import Param, Tool, ToolRegistry, json_literal, with_values
from agenticraft.sandbox.result import ExecutionResult
from agenticraft.security.context import SecurityContext
from agenticraft.wire.errors import ConfigurationError, PermissionDenied

__all__ = ["CalculatorTool", "PythonTool", "ReadFileTool", "SearchBackend", "WebSearchBackend",
           "WebSearchTool", "builtin_tools", "default_registry"]

SEARCH_URL_ENV = "AGENTICRAFT_SEARCH_URL"


class CalculatorTool(Tool):
    """Evaluate an arithmetic expression in the restricted sandbox."""

    name = "calculator"
    description = ("Evaluate an arithmetic expression (+ - * / // % **, parentheses, abs, round, "
                   "min, max, sum, pow) and return the number.")
    sandbox_type = "restricted"
    parameters = {"expression": Param("string", "the arithmetic expression, e.g. '2 + 2 * 3'")}
    MAX_LENGTH = 10_000
    FUNCTIONS = frozenset({"abs", "round", "min", "max", "sum", "pow", "int", "float"})
    _NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Tuple, ast.List,
              ast.Call, ast.Name, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv,
              ast.Mod, ast.Pow, ast.USub, ast.UAdd)

    def check(self, arguments: dict[str, Any], ctx: SecurityContext) -> None:
        expression = arguments["expression"]
        if len(expression) > self.MAX_LENGTH:
            raise ConfigurationError(f"calculator: the expression is longer than "
                                     f"{self.MAX_LENGTH} characters")
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConfigurationError(f"calculator: not an expression ({exc.msg})") from None
        for node in ast.walk(tree):
            bad = None
            if not isinstance(node, self._NODES):
                bad = type(node).__name__
            elif isinstance(node, ast.Constant) and (
                    isinstance(node.value, bool) or not isinstance(node.value, int | float)):
                bad = repr(node.value)
            elif isinstance(node, ast.Name) and node.id not in self.FUNCTIONS:
                bad = node.id
            elif isinstance(node, ast.Call) and (node.keywords
                                                 or not isinstance(node.func, ast.Name)):
                bad = "this call"
            if bad is not None:
                raise ConfigurationError(
                    f"calculator accepts arithmetic only; {bad} is not allowed (use the python "
                    "tool for general code)")

    def build_code(self, arguments: dict[str, Any], ctx: SecurityContext) -> str:
        # Regenerated from the checked syntax tree: no comments or layout tricks get through.
        tree = ast.parse(arguments["expression"].strip(), mode="eval")
        return f"result = ({ast.unparse(tree)})\n"


class PythonTool(Tool):
    """Run Python code in the process sandbox; the result holds every name it binds."""

    name = "python"
    description = ("Run Python code in an isolated process and return the variables it binds "
                   "(bind the answer to `result`) and what it prints.")
    sandbox_type = "process"
    parameters = {"code": Param("string", "the Python code to run")}

    def build_code(self, arguments: dict[str, Any], ctx: SecurityContext) -> str:
        return arguments["code"]


class ReadFileTool(Tool):
    """Read a text file under the working directory (needs ``filesystem_access``).

    The path is checked on the host (it must resolve inside the working directory) and the read
    happens in the process sandbox, where Landlock confines it to the same directory.
    """

    name = "read_file"
    description = "Read a UTF-8 text file from the working directory and return its text."
    sandbox_type = "process"
    filesystem = True
    parameters = {
        "path": Param("string", "path of the file, relative to the working directory"),
        "max_bytes": Param("integer", "read at most this many bytes", False, 1_000_000),
    }

    @staticmethod
    def root(ctx: SecurityContext) -> Path:
        return Path(ctx.working_dir or os.getcwd()).resolve()

    def target(self, path: str, ctx: SecurityContext) -> Path:
        root = self.root(ctx)
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = root / candidate
        return Path(os.path.realpath(candidate))

    def check(self, arguments: dict[str, Any], ctx: SecurityContext) -> None:
        if arguments["max_bytes"] <= 0:
            raise ConfigurationError("read_file: max_bytes must be positive")
        root = self.root(ctx)
        target = self.target(arguments["path"], ctx)
        if not target.is_relative_to(root):
            raise PermissionDenied(
                f"Permission denied: read_file may only read files under the working directory "
                f"{root}; {arguments['path']!r} resolves to {target}, outside it.",
                permission="filesystem_access", user_id=ctx.user_id, ceiling=str(root))

    def build_code(self, arguments: dict[str, Any], ctx: SecurityContext) -> str:
        target = str(self.target(arguments["path"], ctx))
        limit = int(arguments["max_bytes"])
        return (f"path = {json_literal(target)}\n"
                f"with open(path, 'rb') as _fh:\n"
                f"    _data = _fh.read({limit} + 1)\n"
                f"truncated = len(_data) > {limit}\n"
                f"result = _data[:{limit}].decode('utf-8', 'replace')\n")


class SearchBackend(abc.ABC):
    """Where web_search gets its results. ``build_code`` runs *inside* the sandbox (with network
    access) and must bind ``result`` to a list of ``{"title", "url", "snippet"}`` dicts."""

    @abc.abstractmethod
    def build_code(self, query: str, max_results: int) -> str: ...

    def parse(self, value: Any) -> list[dict[str, str]]:
        """Normalise what the sandbox returned (plain JSON data) on the host."""
        if not isinstance(value, list):
            raise ConfigurationError(f"web_search: the backend returned {type(value).__name__}, "
                                     "not a list of results")
        out = []
        for item in value:
            if isinstance(item, dict):
                out.append({k: str(item.get(k) or "") for k in ("title", "url", "snippet")})
        return out


class WebSearchBackend(SearchBackend):
    """A JSON search API: ``GET {base_url}{path}?q=<query>&n=<max_results>``.

    The response is ``{"results": [...]}`` or a bare list; each item has ``title``, ``url``
    (or ``link``) and ``snippet`` (or ``content``/``body``). Point ``base_url`` at a local
    server in tests, or at a search service (e.g. a SearXNG instance's JSON API).
    Configure the default with ``AGENTICRAFT_SEARCH_URL``.
    """

    def __init__(self, base_url: str, *, path: str = "/search", query_param: str = "q",
                 count_param: str | None = "n", timeout: float = 10.0,
                 max_bytes: int = 2_000_000) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"WebSearchBackend: base_url must be an http(s) URL, not "
                                     f"{base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.path = path if path.startswith("/") else "/" + path
        self.query_param = query_param
        self.count_param = count_param
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)

    @classmethod
    def from_env(cls, env: Any = None) -> WebSearchBackend | None:
        env = os.environ if env is None else env
        url = (env.get(SEARCH_URL_ENV) or "").strip()
        return cls(url) if url else None

    def __repr__(self) -> str:
        return f"WebSearchBackend(base_url={self.base_url!r})"

    def build_code(self, query: str, max_results: int) -> str:
        params = {self.query_param: query}
        if self.count_param:
            params[self.count_param] = str(max_results)
        return "\n".join([
            "import json as _json, urllib.parse as _parse, urllib.request as _request",
            f"_url = {json_literal(self.base_url + self.path)} + '?' + "
            f"_parse.urlencode({json_literal(params)})",
            "_req = _request.Request(_url, headers={'Accept': 'application/json', "
            "'User-Agent': 'agenticraft-web-search/0.1'})",
            f"with _request.urlopen(_req, timeout={self.timeout!r}) as _resp:",
            f"    _data = _json.loads(_resp.read({self.max_bytes}).decode('utf-8', 'replace'))",
            "_items = _data.get('results', []) if isinstance(_data, dict) else _data",
            "result = [{'title': str(_i.get('title') or ''),",
            "           'url': str(_i.get('url') or _i.get('link') or ''),",
            "           'snippet': str(_i.get('snippet') or _i.get('content') or "
            "_i.get('body') or '')}",
            f"          for _i in _items[:{int(max_results)}] if isinstance(_i, dict)]",
            "",
        ])


class WebSearchTool(Tool):
    """Search the web through a pluggable backend; needs ``network_access``.

    With network access denied by the resolved context it raises ``PermissionDenied`` before
    anything runs. The search itself runs in the process sandbox (network allowed there).
    """

    name = "web_search"
    description = "Search the web and return a list of results (title, url, snippet)."
    sandbox_type = "process"
    network = True
    parameters = {
        "query": Param("string", "what to search for"),
        "max_results": Param("integer", "how many results to return", False, 5),
    }

    def __init__(self, backend: SearchBackend | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = backend

    def resolve_backend(self) -> SearchBackend:
        backend = self.backend or WebSearchBackend.from_env()
        if backend is None:
            raise ConfigurationError(
                "web_search has no search backend: pass "
                "WebSearchTool(backend=WebSearchBackend(base_url=...)) (or "
                "Agent(search_backend=...)), or set AGENTICRAFT_SEARCH_URL.")
        return backend

    def check(self, arguments: dict[str, Any], ctx: SecurityContext) -> None:
        if not arguments["query"].strip():
            raise ConfigurationError("web_search: the query is empty")
        if not 0 < arguments["max_results"] <= 50:
            raise ConfigurationError("web_search: max_results must be between 1 and 50")
        self.resolve_backend()

    def build_code(self, arguments: dict[str, Any], ctx: SecurityContext) -> str:
        return self.resolve_backend().build_code(arguments["query"], arguments["max_results"])

    def finish(self, result: ExecutionResult) -> ExecutionResult:
        if not result.success:
            return result
        return with_values(result, {"result": self.resolve_backend().parse(result.get("result"))})


def builtin_tools(search_backend: SearchBackend | None = None) -> list[Tool]:
    return [CalculatorTool(), PythonTool(), ReadFileTool(), WebSearchTool(search_backend)]


def default_registry(search_backend: SearchBackend | None = None) -> ToolRegistry:
    """A fresh registry holding the built-in tools."""
    return ToolRegistry(builtin_tools(search_backend))
