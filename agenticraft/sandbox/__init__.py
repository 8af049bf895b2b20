"""The mechanism layer: sandboxes that run code under a resolved SecurityContext."""

from __future__ import annotations

from agenticraft.sandbox.base import Sandbox
from agenticraft.sandbox.manager import SandboxManager
from agenticraft.sandbox.result import ExecutionError, ExecutionResult, Output
from agenticraft.sandbox.types import SandboxType

__all__ = ["ExecutionError", "ExecutionResult", "Output", "Sandbox", "SandboxManager",
           "SandboxType"]
