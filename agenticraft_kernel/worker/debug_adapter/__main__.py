"""debugpy's adapter, as ``debugpy.listen`` starts it inside the sandbox (see
``worker.debugger``). The adapter daemonizes by leaving its session (``setsid``) and forking; the
sandbox's seccomp filter refuses ``setsid``, and the adapter needs no session of its own: it
stays a process of the sandbox (its unit, its PID namespace) either way. So ``setsid`` is a no-op
here, and then debugpy's own adapter runs unchanged."""

import os
import runpy
import sys

del sys.path[0]  # this directory: nothing here is to be imported
os.setsid = lambda: os.getpid()  # type: ignore[assignment]
import debugpy  # noqa: E402,F401  (the adapter then leaves sys.path alone)

runpy.run_module("debugpy.adapter", run_name="__main__", alter_sys=True)
