"""Parent side: the parts of ipykernel's frontend contract that the parent serves for the worker.

- ``plain_header``: the frontend request's header, sent with each run so the worker's ipykernel
  objects see the same parent as under ipykernel (ipywidgets' ``Output`` captures by its msg_id).
- ``asks_exit``: ``exit()``/``quit()`` in a cell writes ipykernel's ``ask_exit`` payload; like
  ipykernel, the kernel then stops shortly after the reply (unless ``keepkernel``).
- ``SandboxUsage``: the ``usage_reply`` of jupyter-resource-usage's kernel sidebar (ipykernel's
  message shape), measured on the sandbox's worker tree, where the cells run, not on this process.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil

from agenticraft.jail.tree import descendants

#: How long after its reply a kernel asked to exit stops (ipykernel's ZMQInteractiveShell: 0.1 s).
EXIT_DELAY = 0.1


def plain_header(parent: dict[str, Any]) -> dict[str, Any]:
    """The request's header as plain data (the date is a datetime after deserialising)."""
    header = parent.get("header") or {}
    return {str(k): (v if isinstance(v, str | int | float | bool) or v is None else str(v))
            for k, v in header.items()}


def asks_exit(payload: list[Any]) -> bool:
    """True when a cell's reply payload asks the kernel to exit (``exit()``, ``quit()``)."""
    return any(isinstance(p, dict) and p.get("source") == "ask_exit" and not p.get("keepkernel")
               for p in payload or [])


class SandboxUsage:
    """``usage_reply`` content for the worker process ``pid`` and everything below it."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}  # kept: cpu_percent needs the last call

    def reply(self, pid: int | None) -> dict[str, Any]:
        content: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid()}
        tree = [pid, *descendants(pid)] if pid else []
        processes: dict[int, psutil.Process] = {}
        for p in tree:
            try:
                processes[p] = self._processes.get(p) or psutil.Process(p)
            except psutil.Error:
                continue
        self._processes = processes
        content["kernel_cpu"] = sum(_metric(p, "cpu_percent") for p in processes.values())
        content["kernel_memory"] = sum(_metric(p, "memory_full_info", "pss")
                                       or _metric(p, "memory_info", "rss")
                                       for p in processes.values())
        content["sandbox_pids"] = sorted(processes)
        host_cpu = psutil.cpu_percent()
        if host_cpu:  # the first call returns a meaningless 0.0 (as in ipykernel)
            content["host_cpu_percent"] = host_cpu
        content["cpu_count"] = psutil.cpu_count(logical=True)
        content["host_virtual_memory"] = dict(psutil.virtual_memory()._asdict())
        return content


def _metric(process: psutil.Process, name: str, attribute: str | None = None) -> float:
    try:
        value = getattr(process, name)()
        return float(getattr(value, attribute) if attribute else value)
    except (psutil.Error, AttributeError):
        return 0.0
