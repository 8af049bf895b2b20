"""Where the secure kernel's ``1+1`` round trip goes, layer by layer (same run, medians).

    python benchmarks/bench_kernel_parts.py [--n 200]

* shell: ipykernel's own shell (as the worker builds it) running ``1+1`` in this process, its
  outputs going nowhere: the floor both kernels share;
* session, checkpoint: the kernel's sandbox session (``ProcessSession.request``, what the parent
  awaits per cell): supervisor, frames, the worker's fork of the checkpoint, the shell;
* session, checkpoint, paced: the same with the user's reading time between cells (30 ms):
  the runner is then forked, and the pages the last run wrote copied, before the cell comes;
* the same with a cell that prints (most cells do; the worker's output has a flusher thread);
* session, no checkpoint: the same without the fork (what a lazy checkpoint would save);
* kernel round trips (ZeroMQ, execute_request to idle) for both kernels come from
  ``bench_kernel.py``; the difference between its secure number and "session, checkpoint" is the
  parent (ZeroMQ, relay, audit record).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ameasure, measure, print_table, row
from agenticraft.sandbox import SandboxManager
from agenticraft.sandbox.process import ProcessSession
from agenticraft.security.policy import load_policy
from agenticraft_kernel.parent.backends import make_backend
from agenticraft_kernel.parent.kernel_context import PRELOAD, build_request

PAUSE = 0.03
#: A cell that writes to stdout, as most do (the worker's stream flusher is a thread).
PRINTING = "print(1+1)"
EXTRA = {"kind": "execute", "silent": False, "store_history": True, "user_expressions": {},
         "allow_stdin": False, "cell_id": None}


def shell_floor(n: int) -> list[float]:
    from traitlets.config import Config

    from agenticraft_kernel.worker.shell import make_kernel

    class Nowhere:
        def emit(self, event: dict[str, Any]) -> None: ...
        def write_stream(self, name: str, text: str) -> None: ...
        def flush(self) -> None: ...

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = make_kernel(Nowhere(), config, lambda prompt, password: "").shell  # type: ignore[arg-type]
    return measure(lambda: shell.run_cell("1+1", store_history=True), n)


async def session_trips(n: int, checkpoint: bool, pause: float = 0.0,
                        code: str = "1+1") -> list[float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-parts-"))
    request = build_request(user_id=None, sandbox_type=None, limits={})
    manager = SandboxManager(policy=load_policy(), audit_log=str(tmp / "audit.jsonl"),
                             working_dir=str(tmp), process_preload=PRELOAD)
    ctx = manager.authorize(request.context_request(), "execute", action="kernel_start",
                            limit_overrides=request.limit_overrides)
    backend = make_backend(manager, ctx)
    await backend.start()
    if not checkpoint:
        session = backend.session
        assert isinstance(session, ProcessSession)
        session.request = functools.partial(session.request, checkpoint=False)  # type: ignore[method-assign]
    try:
        return await ameasure(lambda: backend.run(code, dict(EXTRA), None, None), n, warmup=10,
                              pause=pause)
    finally:
        await backend.close()
        await manager.close()


def main(n: int) -> None:
    os.environ.setdefault("AGENTICRAFT_AUDIT_LOG", tempfile.mktemp(suffix=".jsonl"))
    with_fork = asyncio.run(session_trips(n, checkpoint=True))
    paced = asyncio.run(session_trips(n, checkpoint=True, pause=PAUSE))
    printing = asyncio.run(session_trips(n, checkpoint=True, pause=PAUSE, code=PRINTING))
    without = asyncio.run(session_trips(n, checkpoint=False))
    floor = shell_floor(n)
    print_table(f"'1+1' by layer ({n} runs each; ratio against the session with checkpoint)", [
        row("ipykernel shell, in process", floor, with_fork),
        row("session without checkpoint fork", without, with_fork),
        row("session with checkpoint fork (the kernel's path)", with_fork),
        row(f"  the same, {PAUSE * 1e3:.0f} ms apart (a user reading the output)", paced,
            with_fork),
        row(f"  {PRINTING!r}, {PAUSE * 1e3:.0f} ms apart", printing, with_fork),
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    main(parser.parse_args().n)
