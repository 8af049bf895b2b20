"""AgentiCraft Secure kernel vs the stock ``python3`` kernel (ipykernel), same run.

    python benchmarks/bench_kernel.py [--n 200] [--starts 5] [--baseline PYTHON]

* round trip: ``execute_request`` for ``1+1`` until the kernel is idle again (reply + idle
  status), back to back (a notebook's "Run All"), goal ratio <= 1.3; and again with the user's
  pause before each cell (``PACED``: a person reading the output), where each kernel starts
  from an idle machine;
* start-up: process start until the kernel answers ``kernel_info`` (ready), and until the first
  ``1+1`` has run (our worker starts in the background), goal ratio <= 1.5;
* memory: kernel process plus every descendant (our zygote and session worker), RSS and PSS
  (PSS splits pages shared by forked processes fairly), and the secure kernel's PSS by process:
  the parent (ZeroMQ, relay, audit; runs no user code) and the sandbox below it (zygote, PID
  namespace keeper and init, spare child, live session, kept undo state);
* ``--baseline PYTHON``: a third kernel, the secure kernel run by another interpreter (e.g. the
  main branch's venv, an editable install of another checkout): before/after in the same run,
  interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt, print_table, row
from agenticraft_kernel.cli.install import KERNEL_NAME, write_kernel_spec


def start(name: str, ksm: KernelSpecManager, env: dict[str, str], cwd: str,
          extra: list[str] | None = None,
          ) -> tuple[KernelManager, BlockingKernelClient, float, float]:
    """(manager, client, seconds to ready, seconds to the first result); ``extra``: the
    kernel's extra command-line arguments."""
    started = time.perf_counter()
    km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)
    km.start_kernel(env=env, cwd=cwd, extra_arguments=extra or [])
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    ready = time.perf_counter() - started
    kc.execute_interactive("1+1", timeout=60, output_hook=_quiet)
    return km, kc, ready, time.perf_counter() - started


def _quiet(msg: dict[str, object]) -> None:
    """Outputs are not printed (execute_interactive's default hook would)."""


def stop(km: KernelManager, kc: BlockingKernelClient) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


#: The pause before each cell of the paced round trips (a person reading the last output).
PACED = 0.1


def round_trip(kc: BlockingKernelClient) -> float:
    started = time.perf_counter()
    reply = kc.execute_interactive("1+1", timeout=60, output_hook=_quiet)
    assert reply["content"]["status"] == "ok"
    return time.perf_counter() - started


def memory_mb(km: KernelManager) -> tuple[float, float]:
    """(RSS, PSS) in MB of the kernel and all its descendants."""
    root = psutil.Process(km.provisioner.process.pid)  # type: ignore[union-attr]
    rss = pss = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20


def memory_by_process(km: KernelManager) -> list[tuple[str, float]]:
    """(role, PSS MB) of the kernel process and each descendant, from smaps_rollup."""
    root = psutil.Process(km.provisioner.process.pid)  # type: ignore[union-attr]
    out = []
    for depth, proc in _tree(root, 0):
        try:
            pss = _rollup_pss(proc.pid)
            role = ("kernel process" if depth == 0 else "zygote" if depth == 1
                    else "stopped (undo state)" if proc.status() == psutil.STATUS_STOPPED
                    else f"sandbox process (depth {depth})")
        except (OSError, psutil.Error):
            continue
        out.append((role, pss))
    return out


def _tree(proc: psutil.Process, depth: int) -> list[tuple[int, psutil.Process]]:
    found = [(depth, proc)]
    with contextlib.suppress(psutil.Error):
        for child in proc.children():
            found.extend(_tree(child, depth + 1))
    return found


def _rollup_pss(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(n: int, starts: int, baseline: str | None = None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-kernel-"))
    write_kernel_spec(tmp / "kernels" / KERNEL_NAME)
    ours = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])
    stock = KernelSpecManager()
    env = {**os.environ, "AGENTICRAFT_AUDIT_LOG": str(tmp / "audit.jsonl"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "IPYTHONDIR": str(tmp / "ipython")}
    kernels = {"agenticraft-secure": (KERNEL_NAME, ours), "python3 (stock)": ("python3", stock)}
    if baseline:
        write_kernel_spec(tmp / "baseline" / KERNEL_NAME, python=baseline)
        kernels["secure, baseline"] = (KERNEL_NAME, KernelSpecManager(
            kernel_dirs=[str(tmp / "baseline")]))

    ready: dict[str, list[float]] = {k: [] for k in kernels}
    first: dict[str, list[float]] = {k: [] for k in kernels}
    for _ in range(starts):  # interleaved, so both see the same machine state
        for label, (name, ksm) in kernels.items():
            km, kc, to_ready, to_first = start(name, ksm, env, str(tmp))
            ready[label].append(to_ready)
            first[label].append(to_first)
            stop(km, kc)

    running = {label: start(name, ksm, env, str(tmp))[:2]
               for label, (name, ksm) in kernels.items()}
    trips: dict[str, list[float]] = {k: [] for k in kernels}
    for _, kc in running.values():
        for _ in range(20):
            round_trip(kc)  # warm-up
    for _ in range(max(1, n // 20)):  # interleaved blocks of 20
        for label, (_, kc) in running.items():
            trips[label].extend(round_trip(kc) for _ in range(20))
    paced: dict[str, list[float]] = {k: [] for k in kernels}
    for _ in range(max(1, n // 80)):  # interleaved blocks of 20, PACED apart
        for label, (_, kc) in running.items():
            for _ in range(20):
                time.sleep(PACED)
                paced[label].append(round_trip(kc))
    memory = {label: memory_mb(km) for label, (km, _) in running.items()}
    parts = {label: memory_by_process(km) for label, (km, _) in running.items()
             if label != "python3 (stock)"}
    for km, kc in running.values():
        stop(km, kc)

    ours_label, stock_label, *others = list(kernels)
    secure = [ours_label, *others]
    print_table(f"Kernel round trip: execute_request '1+1' to idle ({len(trips[ours_label])} "
                "runs each)", [row(stock_label, trips[stock_label])] + [
        row(label, trips[label], trips[stock_label], "ratio <= 1.3") for label in secure])
    print_table(f"Kernel round trip, {PACED * 1e3:.0f} ms apart ({len(paced[ours_label])} runs "
                "each)", [row(stock_label, paced[stock_label])] + [
        row(label, paced[label], paced[stock_label]) for label in secure])
    print_table(f"Kernel start-up ({starts} starts each)", [
        row(f"{stock_label}: to ready", ready[stock_label]),
        *(row(f"{label}: to ready", ready[label], ready[stock_label], "ratio <= 1.5")
          for label in secure),
        row(f"{stock_label}: to first result", first[stock_label]),
        *(row(f"{label}: to first result", first[label], first[stock_label], "ratio <= 1.5")
          for label in secure),
    ])
    rows = [(label, f"{rss:.1f} MB", f"{pss:.1f} MB",
             f"{pss / memory[stock_label][1]:.2f}" if label != stock_label else "-")
            for label, (rss, pss) in memory.items()]
    print_table("Memory after the round trips: kernel + descendants", rows,
                header=("kernel", "RSS", "PSS", "PSS ratio"))
    for label, procs in parts.items():
        print_table(f"{label}: PSS by process", [(role, f"{pss:.1f} MB") for role, pss in procs],
                    header=("process", "PSS"))
    print(f"\nmedians: round trip {fmt(statistics.median(trips[ours_label]))} vs "
          f"{fmt(statistics.median(trips[stock_label]))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="round trips per kernel")
    parser.add_argument("--starts", type=int, default=5, help="start-ups per kernel")
    parser.add_argument("--baseline", help="python of another install of the secure kernel "
                        "(e.g. /work/main/.venv/bin/python): measured in the same run")
    args = parser.parse_args()
    main(args.n, args.starts, args.baseline)
