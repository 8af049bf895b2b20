"""The supervisor's reads of a worker's channel lose nothing when they are cancelled.

A run stopped for a limit cancels its wait for the worker's next frame, then reads the
checkpoint's ``rolled_back`` frame. With asyncio's ``sock_recv`` the bytes are taken from the
socket in a callback: a task cancelled after that callback and before it resumed dropped them,
the rollback frame never came, and after 10 s the session was killed with all its variables (a
memory bomb in the tour notebook, once in CI). Each case cancels the read at another point of
the loop's turns after the frame arrived."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import pytest

from agenticraft.sandbox.workers import WorkerHandle
from agenticraft.wire import protocol

FRAME = {"ev": "rolled_back", "run": 7, "status": 9}


@pytest.fixture
def channel():
    ours, theirs = socket.socketpair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    handle = WorkerHandle(os.getpid(), [ours.detach(), out_r, err_r], "/nonexistent")
    yield handle, theirs
    handle.chan.close()
    theirs.close()
    for fd in (out_r, out_w, err_r, err_w):
        os.close(fd)


@pytest.mark.parametrize("turns", range(5))
async def test_a_cancelled_read_leaves_the_frame_for_the_next(channel, turns):
    handle, worker = channel
    waiting = asyncio.ensure_future(handle.recv())
    await asyncio.sleep(0)  # it found nothing and waits for the channel
    worker.sendall(protocol.encode(FRAME))
    for _ in range(turns):
        await asyncio.sleep(0)
    if waiting.done():  # it got the frame before the cancel: nothing was at stake
        assert waiting.result() == FRAME
        return
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert await asyncio.wait_for(handle.recv(), 2) == FRAME


@pytest.mark.parametrize("turns", range(5))
async def test_the_rollback_frame_survives_a_cancelled_read(channel, turns):
    handle, worker = channel
    waiting = asyncio.ensure_future(handle.recv())
    await asyncio.sleep(0)
    worker.sendall(protocol.encode(FRAME))
    for _ in range(turns):
        await asyncio.sleep(0)
    if not waiting.done():
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert await handle.recv_rollback(7, timeout=2)
