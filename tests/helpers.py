"""Helpers shared by the test modules."""

from __future__ import annotations

import os
from pathlib import Path

from agenticraft.sandbox import SandboxManager
from agenticraft.security.config import Settings
from agenticraft.security.policy import Policy


def make_manager(tmp: Path, policy: Policy | None = None, **kwargs) -> SandboxManager:
    return SandboxManager(policy=policy or Policy(), settings=Settings(audit_log_path=tmp / "a"),
                          audit_log=tmp / "audit.jsonl", working_dir=tmp, **kwargs)


def is_gone(pid: int) -> bool:
    """Dead or a zombie waiting to be reaped."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    try:
        proc.wait(timeout=timeout)  # works for non-children too (polls until it disappears)
    except psutil.TimeoutExpired:
        return is_gone(pid)
    return True


RUNNING_AS_ROOT = os.geteuid() == 0
