"""The parent's sandbox start: a failure of the machinery (the zygote did not answer in time,
as when 200 kernels start at once on two cores) is tried again by the next request instead of
failing every cell for the kernel's life; a refusal stays final."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agenticraft.wire.errors import PermissionDenied, SandboxError, SandboxUnavailable
from agenticraft_kernel.parent.kernel import START_ATTEMPTS, SecureKernel

FAILURE = SandboxError("the zygote did not answer")


class Backend:
    closed = False

    async def close(self) -> None:
        self.closed = True


def kernel_with_starts(outcomes: list[BaseException | None]) -> tuple[SecureKernel, list[Any]]:
    """A kernel whose sandbox starts fail or succeed in the order of ``outcomes``."""
    kernel = SecureKernel(log=logging.getLogger("test-startup-retry"))
    started: list[Any] = []

    async def start() -> None:
        outcome = outcomes.pop(0)
        backend = Backend()
        started.append(backend)
        if outcome is not None:
            kernel.backend = backend  # a failed start may leave parts behind
            kernel._boot_error = outcome
            return
        kernel.backend = backend  # type: ignore[assignment]

    kernel._start_sandbox = start  # type: ignore[method-assign]
    return kernel, started


async def boot(kernel: SecureKernel) -> None:
    """As ``SecureKernel.start`` does."""
    kernel._loop = asyncio.get_running_loop()
    kernel._boot = kernel._loop.create_task(kernel._boot_sandbox())


def test_a_zygote_that_did_not_answer_is_started_again() -> None:
    async def main() -> None:
        kernel, started = kernel_with_starts([FAILURE, None])
        await boot(kernel)
        backend = await kernel._ready()
        assert backend is started[1]
        assert started[0].closed  # what the failed start left was closed
        assert await kernel._ready() is backend  # started once more, not on every request
        assert len(started) == 2
    asyncio.run(main())


def test_start_up_gives_up_after_its_attempts() -> None:
    async def main() -> None:
        kernel, started = kernel_with_starts([FAILURE] * START_ATTEMPTS + [None])
        await boot(kernel)
        await kernel._boot
        assert len(started) == START_ATTEMPTS
        assert kernel._boot_error is FAILURE
        assert await kernel._ready() is started[-1]  # a request tries once more
    asyncio.run(main())


@pytest.mark.parametrize("refusal", [PermissionDenied("sandbox_type 'container' not allowed"),
                                     SandboxUnavailable("process", ["no seccomp"])])
def test_a_refusal_is_final(refusal: BaseException) -> None:
    async def main() -> None:
        kernel, started = kernel_with_starts([refusal, None])
        await boot(kernel)
        for _ in range(2):
            with pytest.raises(type(refusal)):
                await kernel._ready()
        assert len(started) == 1
    asyncio.run(main())


def test_one_retry_per_request() -> None:
    async def main() -> None:
        kernel, started = kernel_with_starts([FAILURE] * (START_ATTEMPTS + 1) + [None])
        await boot(kernel)
        with pytest.raises(SandboxError):
            await kernel._ready()
        assert len(started) == START_ATTEMPTS + 1
        assert await kernel._ready() is started[-1]  # the next request tries again
    asyncio.run(main())


def test_concurrent_requests_share_one_retry() -> None:
    async def main() -> None:
        kernel, started = kernel_with_starts([FAILURE] * START_ATTEMPTS + [None])
        await boot(kernel)
        await kernel._boot
        first, second = await asyncio.gather(kernel._ready(), kernel._ready())
        assert first is second is started[-1]
        assert len(started) == START_ATTEMPTS + 1
    asyncio.run(main())
