"""Many kernels on one machine: AgentiCraft Secure and the stock ``python3`` kernel, same run.

    python benchmarks/bench_scale.py [--n 200] [--busy 0.1] [--rounds 1] [--kernels secure,stock]

For each kernel type in turn: start ``n`` kernels at once (jupyter_client, one ``start_kernel``
after another, then waiting for all), count the ones that died during start-up (e.g. "Address
already in use" when a port jupyter_client picked was taken before the kernel bound it), put
``busy`` of them in a busy loop, then measure

* canary: a ``1+1`` cell in every idle kernel, execute_request to idle (p50/p95);
* kernel_info latency of the busy kernels (a frontend's "is it alive?");
* PSS per kernel: the kernel process and every descendant, total divided by ``n``.

Defaults to 200 kernels as the issue asks; on a shared 2-core VM use a smaller ``--n`` and say so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

import psutil
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt, percentile, print_table
from agenticraft_kernel.cli.install import KERNEL_NAME, write_kernel_spec

BUSY_LOOP = "while True:\n    pass"
INFO_TIMEOUT = 10.0


def _quiet(msg: dict[str, object]) -> None:
    """Outputs are not printed."""


def start_all(name: str, ksm: KernelSpecManager, n: int, env: dict[str, str], cwd: str,
              ) -> tuple[list[tuple[KernelManager, BlockingKernelClient]], int, float]:
    """(live kernels with clients, start-up deaths, seconds until all were ready)."""
    started = time.perf_counter()
    managers = []
    for _ in range(n):
        km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)
        km.start_kernel(env=env, cwd=cwd)
        managers.append(km)
    live, deaths = [], 0
    for km in managers:
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=300)
        except RuntimeError:  # "Kernel died before replying to kernel_info"
            deaths += 1
            kc.stop_channels()
            with contextlib.suppress(Exception):
                km.shutdown_kernel(now=True)
            continue
        live.append((km, kc))
    return live, deaths, time.perf_counter() - started


def canary(kc: BlockingKernelClient) -> float:
    begun = time.perf_counter()
    reply = kc.execute_interactive("1+1", timeout=120, output_hook=_quiet)
    assert reply["content"]["status"] == "ok"
    return time.perf_counter() - begun


def kernel_info_latency(kc: BlockingKernelClient, timeout: float) -> float | None:
    """Seconds to the kernel_info_reply, None without one within ``timeout`` (a kernel that
    answers only between cells never does while its cell loops)."""
    begun = time.perf_counter()
    msg_id = kc.kernel_info()
    while True:
        left = timeout - (time.perf_counter() - begun)
        try:
            reply = kc.get_shell_msg(timeout=max(0.01, left))
        except queue.Empty:
            return None
        if reply["parent_header"].get("msg_id") == msg_id:
            return time.perf_counter() - begun


def pss_mb(km: KernelManager) -> float:
    root = psutil.Process(km.provisioner.process.pid)  # type: ignore[union-attr]
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
    return total / 2**20


def run_one(label: str, name: str, ksm: KernelSpecManager, n: int, busy_fraction: float,
            env: dict[str, str], cwd: str) -> dict[str, object]:
    live, deaths, startup = start_all(name, ksm, n, env, cwd)
    for _, kc in live:  # warm: the secure kernel starts its sandbox worker in the background
        canary(kc)
    n_busy = max(1, round(len(live) * busy_fraction)) if live else 0
    busy, idle = live[:n_busy], live[n_busy:]
    for _, kc in busy:
        kc.execute(BUSY_LOOP)
    time.sleep(1.0)  # let the loops take the CPU: this is load, not synchronisation
    canaries = [canary(kc) for _, kc in idle]
    infos = [kernel_info_latency(kc, INFO_TIMEOUT) for _, kc in busy]
    pss = sum(pss_mb(km) for km, _ in live) / max(1, len(live))
    for km, kc in live:
        kc.stop_channels()
        with contextlib.suppress(Exception):
            km.shutdown_kernel(now=True)
    return {"label": label, "n": n, "deaths": deaths, "startup": startup, "canary": canaries,
            "info": infos, "pss": pss}


def main(n: int, busy: float, rounds: int, kinds: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    write_kernel_spec(tmp / "kernels" / KERNEL_NAME)
    specs = {"secure": ("agenticraft-secure", KERNEL_NAME,
                        KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])),
             "stock": ("python3 (stock)", "python3", KernelSpecManager())}
    env = {**os.environ, "AGENTICRAFT_AUDIT_LOG": str(tmp / "audit.jsonl"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "IPYTHONDIR": str(tmp / "ipython")}
    results = []
    for _ in range(rounds):
        for kind in kinds:
            label, name, ksm = specs[kind]
            results.append(run_one(label, name, ksm, n, busy, env, str(tmp)))
    rows = []
    for r in results:
        canaries, answered = r["canary"], r["info"]
        assert isinstance(canaries, list) and isinstance(answered, list)
        infos = [i for i in answered if i is not None]
        silent = len(answered) - len(infos)
        rows.append((str(r["label"]), str(r["n"]), str(r["deaths"]),
                     f"{r['startup']:.1f} s",
                     fmt(percentile(canaries, 0.5)) if canaries else "-",
                     fmt(percentile(canaries, 0.95)) if canaries else "-",
                     fmt(percentile(infos, 0.5)) if infos else "-",
                     fmt(max(infos)) if infos else "-", f"{silent}/{len(answered)}",
                     f"{r['pss']:.1f} MB"))
    print_table(f"{n} kernels started at once, {busy:.0%} busy ({os.cpu_count()} CPUs)", rows,
                header=("kernel", "n", "start-up deaths", "all ready", "canary p50",
                        "canary p95", "busy kernel_info p50", "max",
                        f"no reply in {INFO_TIMEOUT:.0f} s", "PSS/kernel"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="kernels per type")
    parser.add_argument("--busy", type=float, default=0.1, help="fraction in a busy loop")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions (deaths add up)")
    parser.add_argument("--kernels", default="secure,stock", help="secure,stock or one of them")
    args = parser.parse_args()
    main(args.n, args.busy, args.rounds, args.kernels.split(","))
