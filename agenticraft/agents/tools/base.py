"""Tools: named capabilities that declare what they need and run inside a sandbox.

A :class:`Tool` declares its needs - ``permissions``, ``network``, ``filesystem`` and the
``sandbox_type`` it runs in - and turns validated arguments into code that runs in that sandbox.
The caller's context is resolved by the policy first; a tool that needs network or filesystem
access runs only when the *resolved* context allows it, and a tool that does not need them runs
with them switched off, whatever the context allows.

A user tool is a plain function (:class:`FunctionTool`): its source, never the live object, is
sent into the process sandbox together with the JSON-encoded arguments, and the value it returns
comes back as JSON data (``result["result"]``). Lambdas, closures, builtins and functions whose
source is unavailable are refused with a clear error.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import dis
import inspect
import textwrap
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from agenticraft.sandbox.result import ExecutionResult
from agenticraft.sandbox.types import SandboxType
from agenticraft.security import permissions as perms
from agenticraft.security.context import SecurityContext
from agenticraft.wire import codec
from agenticraft.wire.errors import ConfigurationError

__all__ = ["FunctionTool", "Param", "Tool", "ToolRegistry", "json_literal", "tool", "with_values"]

JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "any")
_PY_TO_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
               tuple: "array", dict: "object"}


@dataclasses.dataclass(frozen=True)
class Param:
    """One tool argument: JSON type, description, and a default when optional."""

    type: str = "string"
    description: str = ""
    required: bool = True
    default: Any = None

    def __post_init__(self) -> None:
        if self.type not in JSON_TYPES:
            raise ConfigurationError(f"Unknown parameter type {self.type!r}; valid types are: "
                                     f"{', '.join(JSON_TYPES)}")

    def accepts(self, value: Any) -> bool:
        kind = self.type
        if kind == "any":
            return True
        if kind == "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        if kind == "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "boolean":
            return isinstance(value, bool)
        if kind == "array":
            return isinstance(value, list | tuple)
        if kind == "object":
            return isinstance(value, Mapping)
        return isinstance(value, str)


class Tool:
    """A capability an agent calls by name. Subclasses implement :meth:`build_code`.

    Class attributes are defaults that the constructor may override per instance.
    ``permissions`` always includes the base permission of the call site: ``execute`` for
    ``Agent.execute_tool_secure``; inside a workflow ``execute_workflow`` stands in for it.
    Other permissions listed (``write``, ``read_results``) are required in addition.
    """

    name: str = ""
    description: str = ""
    sandbox_type: str = SandboxType.PROCESS.value
    permissions: frozenset[str] = frozenset({perms.EXECUTE})
    network: bool = False
    filesystem: bool = False
    parameters: Mapping[str, Param] = {}

    def __init__(self, name: str | None = None, description: str | None = None, *,
                 sandbox_type: str | SandboxType | None = None,
                 permissions: Iterable[str] | None = None, network: bool | None = None,
                 filesystem: bool | None = None,
                 parameters: Mapping[str, Param] | None = None) -> None:
        if name is not None:
            self.name = name
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigurationError(f"A tool name must be an identifier, not {self.name!r}")
        if description is not None:
            self.description = description
        self.sandbox_type = SandboxType.parse(sandbox_type or self.sandbox_type).value
        if permissions is not None:
            self.permissions = perms.normalize_all(permissions) | {perms.EXECUTE}
        if network is not None:
            self.network = bool(network)
        if filesystem is not None:
            self.filesystem = bool(filesystem)
        if parameters is not None:
            self.parameters = dict(parameters)

    # -- what the tool needs ----------------------------------------------------------------
    @property
    def needs(self) -> dict[str, Any]:
        return {"permissions": sorted(self.permissions), "network": self.network,
                "filesystem": self.filesystem, "sandbox_type": self.sandbox_type}

    def extra_permissions(self) -> frozenset[str]:
        """Permissions required besides the call site's base permission."""
        return frozenset(self.permissions) - {perms.EXECUTE}

    # -- arguments --------------------------------------------------------------------------
    def bind(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Validated arguments with defaults applied (ConfigurationError names the problem)."""
        unknown = sorted(set(arguments) - set(self.parameters))
        if unknown:
            raise ConfigurationError(
                f"Tool {self.name!r} got unknown argument(s) {unknown}; it takes: "
                f"{', '.join(self.parameters) or 'no arguments'}")
        bound: dict[str, Any] = {}
        for pname, param in self.parameters.items():
            if pname in arguments:
                value = arguments[pname]
                if not param.accepts(value):
                    raise ConfigurationError(
                        f"Tool {self.name!r}: argument {pname!r} must be {param.type}, not "
                        f"{type(value).__name__}")
                bound[pname] = value
            elif param.required:
                raise ConfigurationError(
                    f"Tool {self.name!r} needs the argument {pname!r} ({param.description})")
            else:
                bound[pname] = param.default
        json_literal(bound, what=f"arguments of tool {self.name!r}")
        return bound

    # -- running ----------------------------------------------------------------------------
    def check(self, arguments: dict[str, Any], ctx: SecurityContext) -> None:
        """Host-side checks against the resolved context before anything runs."""

    def build_code(self, arguments: dict[str, Any], ctx: SecurityContext) -> str:
        raise NotImplementedError

    def finish(self, result: ExecutionResult) -> ExecutionResult:
        """Post-process the sandbox's result on the host (plain data only)."""
        return result

    # -- description for models -------------------------------------------------------------
    def schema(self) -> dict[str, Any]:
        """An OpenAI-compatible function description."""
        props: dict[str, Any] = {}
        for pname, param in self.parameters.items():
            spec: dict[str, Any] = {"description": param.description} if param.description else {}
            if param.type != "any":
                spec["type"] = param.type
            props[pname] = spec
        required = [p for p, param in self.parameters.items() if param.required]
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": props, "required": required}}}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, sandbox_type={self.sandbox_type!r}, "
                f"network={self.network}, filesystem={self.filesystem}, "
                f"permissions={sorted(self.permissions)})")


class FunctionTool(Tool):
    """A plain Python function run inside the sandbox: its source goes in, JSON comes out.

    The function must be self-contained: module-level imports it uses are re-imported in the
    sandbox, module-level constants that are JSON data are copied in, and anything else it
    refers to (other functions, classes, open files) is refused at registration.
    """

    def __init__(self, func: Callable[..., Any], name: str | None = None,
                 description: str | None = None, **needs: Any) -> None:
        self.func = func
        self._source, self._default_names = function_source(func)
        self._globals = _global_names(func.__code__) | self._default_names
        self.signature = inspect.signature(func)
        doc = inspect.getdoc(func) or ""
        super().__init__(name or func.__name__, description or doc.split("\n\n")[0].strip(),
                         parameters=_parameters_of(self.signature), **needs)
        self._preamble()  # refuse unsendable globals now, not at the first call

    def bind(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        try:
            self.signature.bind(**arguments)
        except TypeError as exc:
            raise ConfigurationError(f"Tool {self.name!r}: {exc}") from None
        values = dict(arguments)
        json_literal(values, what=f"arguments of tool {self.name!r}")
        return values

    def build_code(self, arguments: dict[str, Any], ctx: SecurityContext) -> str:
        return "\n".join([
            "from __future__ import annotations",
            *self._preamble(),
            self._source,
            f"result = {self.func.__name__}(**{json_literal(arguments)})",
            "",
        ])

    def finish(self, result: ExecutionResult) -> ExecutionResult:
        """Only the function's return value comes back (``result["result"]``)."""
        if not result.success:
            return with_values(result, {})
        return with_values(result, {"result": result.get("result")})

    def _preamble(self) -> list[str]:
        lines = []
        env = self.func.__globals__
        for gname in sorted(self._globals):
            if gname == self.func.__name__ or gname not in env:
                continue  # itself (recursion), a builtin, or undefined (NameError as on the host)
            value = env[gname]
            if isinstance(value, types.ModuleType):
                lines.append(f"import {value.__name__} as {gname}")
                continue
            try:
                lines.append(f"{gname} = {json_literal(value)}")
            except ConfigurationError:
                raise ConfigurationError(
                    f"Tool function {self.func.__name__!r} uses the global {gname!r} "
                    f"({type(value).__name__}), which cannot be sent into the sandbox: only its "
                    "source, imported modules and JSON constants are. Define or import it "
                    "inside the function, or pass it as an argument.") from None
        return lines


class ToolRegistry:
    """Tools by name. ``register`` accepts a :class:`Tool` or a plain function."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item, replace=True)

    def register(self, item: Tool | Callable[..., Any], name: str | None = None, *,
                 replace: bool = False, **needs: Any) -> Tool:
        if isinstance(item, Tool):
            if needs:
                raise ConfigurationError("Declare a Tool's needs when constructing it")
            entry = item
            if name is not None and name != item.name:
                raise ConfigurationError(f"Tool {item.name!r} cannot be registered as {name!r}")
        else:
            entry = FunctionTool(item, name=name, **needs)
        if entry.name in self._tools and not replace:
            raise ConfigurationError(
                f"A tool named {entry.name!r} is already registered; pass replace=True to "
                "replace it.")
        self._tools[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self.get(name)
        del self._tools[name]

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except (KeyError, TypeError):
            raise ConfigurationError(
                f"Unknown tool {name!r}; registered tools: "
                f"{', '.join(sorted(self._tools)) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [self._tools[n].schema() for n in self.names()]

    def copy(self) -> ToolRegistry:
        clone = ToolRegistry()
        clone._tools = dict(self._tools)
        return clone

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names()})"


def tool(func: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None, **needs: Any) -> Any:
    """Decorator: ``@tool`` or ``@tool(network=True)`` turns a function into a FunctionTool."""
    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, **needs)
    return wrap(func) if func is not None else wrap


# -- helpers ------------------------------------------------------------------------------------
def with_values(result: ExecutionResult, values: Mapping[str, Any]) -> ExecutionResult:
    """A copy of ``result`` holding ``values`` instead of the names the code bound."""
    return ExecutionResult(values, success=result.success, error=result.error,
                           stdout=result.stdout, stderr=result.stderr,
                           resource_usage=result.resource_usage,
                           execution_time_ms=result.execution_time_ms,
                           sandbox_type=result.sandbox_type, enforced=result.enforced,
                           truncated=result.truncated, outputs=result.outputs)


def json_literal(value: Any, what: str = "value") -> str:
    """``value`` as a Python literal of plain JSON data (a safe way to embed data in code).

    Host values: subclasses of the plain types (a numpy float, an IntEnum) count as their base
    type, and tuples become lists, as JSON would have them.
    """
    try:
        return codec.literal(value, coerce=True, keep_tuples=False)
    except codec.NotPlain as exc:
        raise ConfigurationError(f"The {what} must be JSON data (str, int, float, bool, None, "
                                 f"lists and dicts with string keys): {exc}") from None


def function_source(func: Callable[..., Any]) -> tuple[str, set[str]]:
    """The dedented ``def`` of ``func`` without decorators, and the names its defaults use."""
    what = getattr(func, "__qualname__", repr(func))
    if not isinstance(func, types.FunctionType):
        raise ConfigurationError(
            f"Only plain Python functions (def) can be sandboxed tools; {what} is a "
            f"{type(func).__name__} whose source cannot be sent into the sandbox.")
    if func.__name__ == "<lambda>":
        raise ConfigurationError(
            "A lambda cannot be a sandboxed tool: its source is not a standalone definition. "
            "Define the tool with def.")
    if func.__closure__:
        raise ConfigurationError(
            f"Tool function {what} is a closure over {', '.join(func.__code__.co_freevars)}; "
            "the sandbox receives only its source, so it must not use variables of an enclosing "
            "function. Define it at module level and pass such values as arguments.")
    if inspect.iscoroutinefunction(func) or inspect.isgeneratorfunction(func) or \
            inspect.isasyncgenfunction(func):
        raise ConfigurationError(f"Tool function {what} must be a plain function, not a "
                                 "coroutine or generator function.")
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        raise ConfigurationError(
            f"The source of tool function {what} is not available (defined with exec or in an "
            "interactive prompt?); the sandbox needs it. Define the function in a file or a "
            "notebook cell.") from None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        raise ConfigurationError(f"Cannot parse the source of tool function {what}") from None
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef)
                 and n.name == func.__name__), None)
    if node is None or node.end_lineno is None:
        raise ConfigurationError(f"Cannot find the definition of tool function {what}")
    lines = source.splitlines()
    body = "\n".join(lines[node.lineno - 1:node.end_lineno])  # the def without decorators
    defaults = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
    names = {n.id for d in defaults for n in ast.walk(d) if isinstance(n, ast.Name)}
    return body, names


def _global_names(code: types.CodeType) -> set[str]:
    names = {ins.argval for ins in dis.get_instructions(code)
             if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(ins.argval, str)}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return {n for n in names if not hasattr(builtins, n)}


def _parameters_of(signature: inspect.Signature) -> dict[str, Param]:
    params = {}
    for pname, p in signature.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        annotation = p.annotation
        if isinstance(annotation, str):
            annotation = getattr(builtins, annotation.split("[")[0].strip(), annotation)
        kind = _PY_TO_JSON.get(annotation, "any")  # type: ignore[call-overload]
        required = p.default is p.empty
        params[pname] = Param(kind, "", required, None if required else p.default)
    return params
