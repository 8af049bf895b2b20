"""Tools that agents and workflows call by name; every one runs inside a sandbox.

``ToolRegistry`` holds them; each :class:`Tool` declares what it needs (permissions, network,
filesystem, sandbox type). Built-ins: ``calculator`` (restricted sandbox), ``python`` (process
sandbox), ``read_file`` (needs ``filesystem_access``; confined to the working directory) and
``web_search`` (needs ``network_access`` and a :class:`WebSearchBackend`). A plain function
registered as a tool is sent into the process sandbox as source and called there.
"""

from __future__ import annotations

from agenticraft.agents.tools.base import FunctionTool, Param, Tool, ToolRegistry, tool
from agenticraft.agents.tools.builtin import (
    CalculatorTool,
    PythonTool,
    ReadFileTool,
    SearchBackend,
    WebSearchBackend,
    WebSearchTool,
    builtin_tools,
    default_registry,
)
from agenticraft.agents.tools.runtime import (
    close_default_manager,
    default_manager,
    set_default_manager,
)

__all__ = [
    "CalculatorTool",
    "FunctionTool",
    "Param",
    "PythonTool",
    "ReadFileTool",
    "SearchBackend",
    "Tool",
    "ToolRegistry",
    "WebSearchBackend",
    "WebSearchTool",
    "builtin_tools",
    "close_default_manager",
    "default_manager",
    "default_registry",
    "set_default_manager",
    "tool",
]
