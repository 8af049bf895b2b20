"""The parent's per-cell trust-boundary work (issue 13), in process, same run.

    python benchmarks/bench_relay.py [--n 20000]

What a ``1+1`` cell costs the parent on top of relaying it: the frame budget (one ``RunBudget``
and a header check per frame), the output policy on the ``execute_result`` bundle, and the
execute_reply's payload/user_expressions check. "without" is the same relay with scripts
allowed (the policy short-circuits) and no budget: the cost of the checks alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import measure, print_table, row
from agenticraft.sandbox.budget import RunBudget
from agenticraft.wire import protocol
from agenticraft.wire.limits import ResourceLimits
from agenticraft_kernel.parent.output_policy import OutputPolicy
from agenticraft_kernel.parent.relay import Relay

LIMITS = ResourceLimits()
FRAMES = [protocol.encode({"ev": "started", "run": 1, "pid": 7}),
          protocol.encode({"ev": "event", "run": 1, "data": {
              "type": "execute_result", "data": {"text/plain": "2"}, "metadata": {},
              "execution_count": 1}}),
          protocol.encode({"ev": "done", "run": 1, "ok": True, "values": {
              "status": "ok", "execution_count": 1, "user_expressions": {}, "payload": []}})]
STREAM = b"".join(FRAMES)


def cell(checked: bool) -> None:
    """Decode a 1+1 cell's frames and relay its result and reply."""
    relay = Relay(lambda *args: None, policy=OutputPolicy(allow_scripts=not checked))
    frames = protocol.FrameBuffer(RunBudget(LIMITS).admit if checked else None)
    frames.push(STREAM)
    while (frame := frames.pop()) is not None:
        if frame["ev"] == "event":
            relay.event(frame["data"])
        elif frame["ev"] == "done":
            values = frame["values"]
            if checked:
                relay.reply_fields(values, LIMITS.max_output_bytes)


def main(n: int) -> None:
    without = measure(lambda: cell(False), n)
    checked = measure(lambda: cell(True), n)
    print_table(f"Parent per-cell relay work for a 1+1 cell ({n} runs each)",
                [row("without the checks", without),
                 row("budget + output policy + reply check", checked, without)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    main(parser.parse_args().n)
