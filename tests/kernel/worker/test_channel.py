"""The worker's event channel: everything a cell produces becomes ordered event frames on the
worker's socket, stream text in batches. Tested with the jail's real ``Worker.emit`` on one end of
a socket pair and the frame protocol reading the other."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ipykernel.iostream import OutStream

from agenticraft.jail.worker import Worker
from agenticraft.wire import protocol
from agenticraft_kernel.worker import channel as channel_module
from agenticraft_kernel.worker.channel import MAX_BUFFER, Channel, EventStream, encode_bundle


class Wire:
    """The supervisor's end of the worker's channel socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(10)

    def events(self, count: int) -> list[dict[str, Any]]:
        frames = [protocol.recv(self.sock) for _ in range(count)]
        assert all(f is not None and f["ev"] == "event" for f in frames), frames
        return [f["data"] for f in frames]  # type: ignore[index]

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(10)
        return False


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Wire]]:
    worker_end, supervisor_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with worker_end, supervisor_end:
        chan = Channel(Worker(worker_end, "exec"))
        chan.begin()
        yield chan, Wire(supervisor_end)


@pytest.fixture
def slow_flush(pair: tuple[Channel, Wire], monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches close only when something forces them (no timing in the test)."""
    monkeypatch.setattr(channel_module, "FLUSH_INTERVAL", 3600.0)
    pair[0].flush()  # a batch starts now


def stream(name: str, text: str) -> dict[str, Any]:
    return {"type": "stream", "name": name, "text": text}


def test_streams_are_batched_until_another_event(pair: tuple[Channel, Wire],
                                                 slow_flush: None) -> None:
    chan, wire = pair
    for i in range(3):
        chan.write_stream("stdout", f"{i}\n")
    chan.write_stream("stderr", "oops\n")
    chan.write_stream("stdout", "more\n")
    assert wire.nothing_pending()
    chan.emit({"type": "display_data", "data": {"text/plain": "1"}})
    assert wire.events(4) == [stream("stdout", "0\n1\n2\n"), stream("stderr", "oops\n"),
                              stream("stdout", "more\n"),
                              {"type": "display_data", "data": {"text/plain": "1"}}]


def test_a_full_buffer_is_sent_at_once(pair: tuple[Channel, Wire], slow_flush: None) -> None:
    chan, wire = pair
    chan.write_stream("stdout", "a")
    assert wire.nothing_pending()
    chan.write_stream("stdout", "x" * MAX_BUFFER)
    assert wire.events(1) == [stream("stdout", "a" + "x" * MAX_BUFFER)]


def test_end_flushes_and_empty_text_sends_nothing(pair: tuple[Channel, Wire],
                                                  slow_flush: None) -> None:
    chan, wire = pair
    chan.write_stream("stdout", "")
    assert wire.nothing_pending()
    chan.write_stream("stdout", "a")
    chan.write_stream("stdout", "b")
    assert wire.nothing_pending()
    chan.end()
    assert wire.events(1) == [stream("stdout", "ab")]
    assert not chan.active


def test_the_flusher_sends_a_batch_nothing_else_forced_out(
        pair: tuple[Channel, Wire], monkeypatch: pytest.MonkeyPatch) -> None:
    chan, wire = pair
    monkeypatch.setattr(channel_module, "FLUSH_INTERVAL", 0.01)
    chan.flush()  # a batch starts now: the write below stays in the buffer
    chan.write_stream("stdout", "left in the buffer")
    assert wire.events(1) == [stream("stdout", "left in the buffer")]  # sent by the thread


def wait_until_the_flusher_waits(chan: Channel) -> None:
    """Block until the flusher thread sleeps on its condition (it has handled every notify)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with chan._lock:
            if chan._wake._waiters:  # type: ignore[attr-defined]
                return
        threading.Event().wait(0.001)
    raise AssertionError("the flusher thread never waited")


def test_a_write_does_not_make_the_flusher_send_before_its_interval(
        pair: tuple[Channel, Wire], slow_flush: None) -> None:
    """Each write notifies the flusher; a notify used to end its interval wait, so the second
    write of a batch sent the batch at once (flaky under load: "flusher sent early")."""
    chan, wire = pair
    chan.write_stream("stdout", "a")  # starts the flusher, which waits out the interval
    wait_until_the_flusher_waits(chan)
    chan.write_stream("stdout", "b")  # notifies it while it waits
    wait_until_the_flusher_waits(chan)  # it woke, looked and went back to waiting
    assert wire.nothing_pending()
    chan.end()
    assert wire.events(1) == [stream("stdout", "ab")]


def test_sigint_is_blocked_while_a_frame_is_written(pair: tuple[Channel, Wire]) -> None:
    chan, _wire = pair
    seen: list[bool] = []
    chan.worker = type("Probe", (), {"emit": lambda self, event: seen.append(
        signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))})()
    chan.emit({"type": "clear_output"})
    assert seen == [True]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_detached_channel_writes_to_the_inherited_pipes(
        pair: tuple[Channel, Wire], capfd: pytest.CaptureFixture[str]) -> None:
    chan, wire = pair
    chan.detached = True
    chan.write_stream("stdout", "to fd 1\n")
    chan.write_stream("stderr", "to fd 2\n")
    chan.emit({"type": "display_data", "data": {}})
    assert capfd.readouterr() == ("to fd 1\n", "to fd 2\n")
    assert wire.nothing_pending()


@pytest.mark.parametrize(("active", "detached"), [(True, True), (False, False)])
def test_a_fork_during_a_run_detaches_the_child(pair: tuple[Channel, Wire], active: bool,
                                                detached: bool) -> None:
    """A fork inside a run is the cell's own; the checkpoint's fork (between runs) is not."""
    chan, _wire = pair
    chan.active = active
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports
        os._exit(0 if chan.detached is detached else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert chan.detached is False  # the parent keeps the channel


def test_event_stream_is_a_text_file_on_the_channel(pair: tuple[Channel, Wire],
                                                    slow_flush: None) -> None:
    chan, wire = pair
    out = EventStream(chan, "stderr")
    # What ipykernel's OutStream says (its class, its encoding, the process's own descriptor).
    assert isinstance(out, OutStream)
    assert (out.encoding, out.writable(), out.isatty(), out.fileno()) == ("UTF-8", True, False, 2)
    assert out.write("héllo") == 5
    with pytest.raises(TypeError, match="must be str, not bytes"):
        out.write(b"raw")  # type: ignore[arg-type]
    out.flush()
    assert wire.events(1) == [stream("stderr", "héllo")]


def test_encode_bundle_makes_binary_data_json_text() -> None:
    assert encode_bundle({"image/png": b"\x89PNG", "text/plain": b"caf\xc3\xa9",
                          "application/pdf": memoryview(b"%PDF"), "text/html": "<b>x</b>",
                          "application/json": {"a": 1}}) == {
        "image/png": "iVBORw==", "text/plain": "café", "application/pdf": "JVBERg==",
        "text/html": "<b>x</b>", "application/json": {"a": 1}}
