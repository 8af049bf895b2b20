"""The mechanism layer: sandboxes that run code under a resolved SecurityContext."""

from __future__ import annotations

from .base import Sandbox
from .manager import SandboxManager
from .result import ExecutionError, ExecutionResult, Output
from .types import SandboxType

__all__ = ["ExecutionError", "ExecutionResult", "Output", "Sandbox", "SandboxManager",
           "SandboxType"]
