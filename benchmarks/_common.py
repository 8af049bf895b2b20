"""Shared helpers for the benchmark scripts: timing loops and a table printer."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(fn: Callable[[], object], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


async def ameasure(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 3,
                   pause: float = 0.0) -> list[float]:
    """``pause``: seconds idle before each timed call (as a user reading the output would be),
    not timed; 0: back to back."""
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        if pause:
            await asyncio.sleep(pause)
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return samples


def row(name: str, samples: list[float], baseline: list[float] | None = None,
        goal: str = "") -> tuple[str, str, str, str, str]:
    p50 = statistics.median(samples)
    ratio = f"{p50 / statistics.median(baseline):.3f}" if baseline else "-"
    return (name, fmt(p50), fmt(percentile(samples, 0.95)), ratio, goal)


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def print_table(title: str, rows: list[tuple[str, ...]],
                header: tuple[str, ...] = ("case", "p50", "p95", "ratio", "goal")) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
