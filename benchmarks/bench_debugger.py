"""What JupyterLab's debugger costs the secure kernel, same run, interleaved.

    python benchmarks/bench_debugger.py [--n 100] [--starts 5]

* start-up until ``kernel_info`` is answered: with the debugger offered (the first
  ``kernel_info`` waits for the sandbox, to say whether it can hold the debugger) and with
  ``--SecureKernel.enable_debugger=False`` (answered at once), alternating;
* ``1+1`` round trip: debugger offered but never started, debugger switched off, and a kernel
  whose debugger was started (initialize, attach, configurationDone: its cells then run in the
  live worker under pydevd's tracing, not in a process forked from a checkpoint), interleaved;
* the time ``initialize`` + ``attach`` take (debugpy's adapter starting inside the sandbox).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, row
from agenticraft_kernel.cli.install import KERNEL_NAME, write_kernel_spec
from bench_kernel import round_trip, stop
from bench_kernel import start as start_kernel

OFF = ["--SecureKernel.enable_debugger=False"]
_seq = itertools.count(1)


def start(ksm: KernelSpecManager, env: dict[str, str], cwd: str,
          extra: list[str]) -> tuple[Any, Any, float, float]:
    return start_kernel(KERNEL_NAME, ksm, env, cwd, extra)


def debug(kc: Any, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = kc.session.msg("debug_request", {"type": "request", "seq": next(_seq),
                                           "command": command, "arguments": arguments or {}})
    kc.control_channel.send(msg)
    while True:
        reply = kc.control_channel.get_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return dict(reply["content"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-debugger-"))
    write_kernel_spec(tmp / "kernels" / KERNEL_NAME)
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])
    env = {**os.environ, "AGENTICRAFT_AUDIT_LOG": str(tmp / "audit.jsonl"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}

    ready: dict[str, list[float]] = {"offered": [], "off": []}
    first: dict[str, list[float]] = {"offered": [], "off": []}
    for _ in range(args.starts):
        for name, extra in (("offered", []), ("off", OFF)):
            km, kc, seconds, result = start(ksm, env, str(tmp), extra)
            ready[name].append(seconds)
            first[name].append(result)
            stop(km, kc)

    kernels = {"offered": start(ksm, env, str(tmp), []), "off": start(ksm, env, str(tmp), OFF),
               "started": start(ksm, env, str(tmp), [])}
    kc = kernels["started"][1]
    began = time.perf_counter()
    assert debug(kc, "initialize", {"clientID": "bench", "adapterID": "",
                                    "pathFormat": "path", "linesStartAt1": True,
                                    "columnsStartAt1": True})["success"]
    assert debug(kc, "attach")["success"]
    attach = time.perf_counter() - began
    assert debug(kc, "configurationDone")["success"]
    trips: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(args.n):
        for name, (_, client, _, _) in kernels.items():
            trips[name].append(round_trip(client))
    for km, client, _, _ in kernels.values():
        stop(km, client)

    print_table(f"debugger costs (load {os.getloadavg()[0]:.1f})", [
        row("start to kernel_info, debugger offered", ready["offered"], ready["off"]),
        row("start to kernel_info, debugger off", ready["off"]),
        row("start to first 1+1, debugger offered", first["offered"], first["off"]),
        row("start to first 1+1, debugger off", first["off"]),
        *[row(f"1+1 round trip, debugger {name}", values, trips["off"])
          for name, values in trips.items()],
        row("initialize + attach (adapter start)", [attach])])

if __name__ == "__main__":
    main()
