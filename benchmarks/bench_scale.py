"""Many kernels on one machine: AgentiCraft Secure and the stock ``python3`` kernel, same run.

    python benchmarks/bench_scale.py [--n 200] [--busy 0.1] [--rounds 1] [--kernels secure,stock]
        [--baseline PYTHON] [--min-free-gb 3] [--settle SECONDS]

Kind ``shared``: the secure kernel with ``AGENTICRAFT_SHARE_PAGES=1`` (its sandboxes' identical
pages merged by ksmd, which an administrator starts: ``echo 1 > /sys/kernel/mm/ksm/run``);
``--settle`` waits before memory is measured, and ksmd's state and CPU time are printed.

For each kernel type in turn: start ``n`` kernels at once (jupyter_client, one ``start_kernel``
after another, then waiting for all), count the ones that died during start-up (e.g. "Address
already in use" when a port jupyter_client picked was taken before the kernel bound it), put
``busy`` of them in a busy loop, then measure

* start-up: kernels that died before answering ``kernel_info`` ("start-up deaths"), and kernels
  that answered but whose first cell failed (the secure kernel's sandbox could not start);
* canary: a ``1+1`` cell in every idle kernel, execute_request to idle (p50/p95);
* kernel_info latency of the busy kernels (a frontend's "is it alive?");
* PSS per kernel: the kernel process and every descendant, total divided by ``n`` (for the
  secure kernel also split into the parent process and the sandbox below it).

Defaults to 200 kernels as the issue asks; on a shared 2-core VM use a smaller ``--n`` and say so.
``--baseline PYTHON`` adds the kind ``baseline``: the secure kernel run by another install (e.g.
the main branch's venv), for before/after in the same run. No kernel is started while the
machine has less than ``--min-free-gb`` available (those are counted as "not started", never as
deaths), so a run cannot take the memory other work on the machine needs. The load average is
printed with each kind.
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
#: Seconds from the last start until every kernel must have answered kernel_info. A kernel
#: whose bind failed can stay alive without answering (stock ipykernel does, its threads
#: keep the process up): it is a death too.
READY_TIMEOUT = 300.0


def _quiet(msg: dict[str, object]) -> None:
    """Outputs are not printed."""


def available_gb() -> float:
    return psutil.virtual_memory().available / 2**30


def start_all(name: str, ksm: KernelSpecManager, n: int, env: dict[str, str], cwd: str,
              min_free_gb: float = 0.0,
              ) -> tuple[list[tuple[KernelManager, BlockingKernelClient]], int, float, int]:
    """(live kernels with clients, start-up deaths, seconds until all were ready, kernels not
    started for lack of memory)."""
    started = time.perf_counter()
    managers = []
    for i in range(n):
        if available_gb() < min_free_gb:
            print(f"  only {available_gb():.1f} GB available: {n - i} kernels not started",
                  flush=True)
            break
        km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)
        km.start_kernel(env=env, cwd=cwd)
        managers.append(km)
    live, deaths = [], 0
    deadline = time.monotonic() + READY_TIMEOUT  # one for all: a hung kernel costs it once
    for km in managers:
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))
        except RuntimeError:  # "Kernel died before replying to kernel_info", or no reply
            deaths += 1
            kc.stop_channels()
            with contextlib.suppress(Exception):
                km.shutdown_kernel(now=True)
            continue
        live.append((km, kc))
    return live, deaths, time.perf_counter() - started, n - len(managers)


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


def pss_mb(km: KernelManager) -> tuple[float, float]:
    """(PSS of the kernel process, PSS of all its descendants) in MB."""
    root = psutil.Process(km.provisioner.process.pid)  # type: ignore[union-attr]
    own = below = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            pss = getattr(info, "pss", info.rss) / 2**20
            if proc.pid == root.pid:
                own += pss
            else:
                below += pss
    return own, below


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def ksm_state() -> str:
    """ksmd: on/off, pages merged and its CPU time so far (shared pages, see --settle)."""
    base = Path("/sys/kernel/mm/ksm")
    try:
        run, sharing, scan = ((base / f).read_text().strip()
                              for f in ("run", "pages_sharing", "pages_to_scan"))
    except OSError:
        return "no KSM"
    cpu = sum(p.cpu_times().user + p.cpu_times().system
              for p in psutil.process_iter(["name"]) if p.info["name"] == "ksmd")
    return f"ksmd run={run} pages_to_scan={scan}, pages_sharing={sharing}, ksmd CPU {cpu:.1f} s"


def run_one(label: str, name: str, ksm: KernelSpecManager, n: int, busy_fraction: float,
            env: dict[str, str], cwd: str, min_free_gb: float = 0.0,
            settle: float = 0.0) -> dict[str, object]:
    print(f"{label}: starting {n} kernels (load {load()}, {available_gb():.1f} GB available)",
          flush=True)
    live, deaths, startup, skipped = start_all(name, ksm, n, env, cwd, min_free_gb)
    print(f"  {len(live)} ready in {startup:.0f} s, {deaths} died (load {load()})", flush=True)
    # warm: the secure kernel starts its sandbox in the background. A kernel whose first cell
    # fails (its sandbox could not start) is alive but useless: counted apart, not measured.
    failed: list[str] = []
    working = []
    for km, kc in live:
        reply = kc.execute_interactive("1+1", timeout=300, output_hook=_quiet)
        if reply["content"]["status"] == "ok":
            working.append((km, kc))
        else:
            failed.append(f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}")
    if failed:
        print(f"  first cell failed in {len(failed)}: {sorted(set(failed))[:3]}", flush=True)
    unusable, live = [pair for pair in live if pair not in working], working
    n_busy = max(1, round(len(live) * busy_fraction)) if live else 0
    busy, idle = live[:n_busy], live[n_busy:]
    for _, kc in busy:
        kc.execute(BUSY_LOOP)
    time.sleep(1.0)  # let the loops take the CPU: this is load, not synchronisation
    canaries = [canary(kc) for _, kc in idle]
    if canaries:
        slow = sorted(range(len(canaries)), key=canaries.__getitem__)[-5:]
        print("  slowest canaries (order of measurement: ms): " + ", ".join(
            f"#{i}: {canaries[i] * 1e3:.0f}" for i in sorted(slow)), flush=True)
    infos = [kernel_info_latency(kc, INFO_TIMEOUT) for _, kc in busy]
    if settle:
        print(f"  waiting {settle:.0f} s before measuring memory (ksmd merges meanwhile)",
              flush=True)
        time.sleep(settle)  # a measurement over time, not synchronisation
    parts = [pss_mb(km) for km, _ in live]
    pss = sum(a + b for a, b in parts) / max(1, len(live))
    parent = sum(a for a, _ in parts) / max(1, len(live))
    measured_load = load()
    print(f"  {ksm_state()}", flush=True)
    print(f"  measured (load {measured_load}, {available_gb():.1f} GB available)", flush=True)
    for km, kc in live + unusable:
        kc.stop_channels()
        with contextlib.suppress(Exception):
            km.shutdown_kernel(now=True)
    return {"label": label, "n": len(live) + len(unusable) + deaths, "failed": len(failed),
            "deaths": deaths, "startup": startup,
            "canary": canaries, "info": infos, "pss": pss, "parent": parent,
            "skipped": skipped, "load": measured_load}


def main(n: int, busy: float, rounds: int, kinds: list[str], baseline: str | None = None,
         min_free_gb: float = 0.0, settle: float = 0.0) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    write_kernel_spec(tmp / "kernels" / KERNEL_NAME)
    specs = {"secure": ("agenticraft-secure", KERNEL_NAME,
                        KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])),
             "stock": ("python3 (stock)", "python3", KernelSpecManager())}
    # the secure kernel again, its sandboxes sharing pages (AGENTICRAFT_SHARE_PAGES=1)
    specs["shared"] = ("secure, shared pages", KERNEL_NAME, specs["secure"][2])
    if baseline:
        write_kernel_spec(tmp / "baseline" / KERNEL_NAME, python=baseline)
        specs["baseline"] = ("secure, baseline", KERNEL_NAME,
                             KernelSpecManager(kernel_dirs=[str(tmp / "baseline")]))
    env = {**os.environ, "AGENTICRAFT_AUDIT_LOG": str(tmp / "audit.jsonl"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "IPYTHONDIR": str(tmp / "ipython")}
    results = []
    for _ in range(rounds):
        for kind in kinds:
            label, name, ksm = specs[kind]
            kind_env = {**env, "AGENTICRAFT_SHARE_PAGES": "1"} if kind == "shared" else env
            results.append(run_one(label, name, ksm, n, busy, kind_env, str(tmp), min_free_gb,
                                   settle))
    rows = []
    for r in results:
        canaries, answered = r["canary"], r["info"]
        assert isinstance(canaries, list) and isinstance(answered, list)
        infos = [i for i in answered if i is not None]
        silent = len(answered) - len(infos)
        skipped = f" ({r['skipped']} not started)" if r["skipped"] else ""
        rows.append((str(r["label"]), f"{r['n']}{skipped}", str(r["deaths"]), str(r["failed"]),
                     f"{r['startup']:.1f} s",
                     fmt(percentile(canaries, 0.5)) if canaries else "-",
                     fmt(percentile(canaries, 0.95)) if canaries else "-",
                     fmt(percentile(infos, 0.5)) if infos else "-",
                     fmt(max(infos)) if infos else "-", f"{silent}/{len(answered)}",
                     f"{r['pss']:.1f} MB", f"{r['parent']:.1f} MB", str(r["load"])))
    print_table(f"{n} kernels started at once, {busy:.0%} busy ({os.cpu_count()} CPUs)", rows,
                header=("kernel", "n", "start-up deaths", "first cell failed", "all ready",
                        "canary p50", "canary p95", "busy kernel_info p50", "max",
                        f"no reply in {INFO_TIMEOUT:.0f} s", "PSS/kernel", "of it, parent",
                        "load (1/5/15 min)"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="kernels per type")
    parser.add_argument("--busy", type=float, default=0.1, help="fraction in a busy loop")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions (deaths add up)")
    parser.add_argument("--kernels", default="secure,stock",
                        help="comma-separated kinds: secure, shared, stock, baseline")
    parser.add_argument("--baseline", help="python of another install of the secure kernel "
                        "(kind 'baseline', e.g. /work/main/.venv/bin/python)")
    parser.add_argument("--min-free-gb", type=float, default=3.0,
                        help="start no kernel while less memory than this is available")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait before measuring memory (kind 'shared': ksmd "
                        "merges meanwhile)")
    args = parser.parse_args()
    kinds = args.kernels.split(",")
    if args.baseline and "baseline" not in kinds:
        kinds.insert(1, "baseline")
    main(args.n, args.busy, args.rounds, kinds, args.baseline, args.min_free_gb, args.settle)
