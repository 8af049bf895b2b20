"""Worker side: the one path by which the executor talks to the kernel while a cell runs.

Everything the cell produces (stream text, displays, results, errors, comm messages, input
requests) becomes an event frame on the worker's channel, in the order it happened. Stream text is
buffered and sent in batches (at most every ``FLUSH_INTERVAL`` seconds, before any other event and
at the end of the run) so a loop of prints costs a few frames, not one per ``print``.

Runs after confinement, on the untrusted side: nothing here decides anything about security.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from ipykernel.iostream import OutStream

from agenticraft.jail.worker import start_sandbox_thread
from agenticraft.wire.streams import StreamBatch

FLUSH_INTERVAL = 0.05
MAX_BUFFER = 64 * 1024


def encode_bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """A mime bundle with ``bytes`` values (PNG, JPEG, PDF) as base64 text, as Jupyter expects."""
    out: dict[str, Any] = {}
    for mime, value in data.items():
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            out[mime] = (raw.decode("utf-8", "replace") if mime.startswith("text/")
                         else base64.b64encode(raw).decode("ascii"))
        else:
            out[mime] = value
    return out


class Channel:
    """Ordered, thread-safe event output with batched streams.

    ``emit`` sends one event after flushing pending stream text. A background thread flushes
    streams that sit in the buffer for ``FLUSH_INTERVAL``. SIGINT is blocked while a frame is being
    written, so an interrupt can never leave half a frame on the channel.
    """

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self._pending = StreamBatch()
        self._last = 0.0
        self.active = False
        self.detached = False  # in a process the cell forked: the channel is not ours to use
        self._fresh()
        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork_parent,
                            after_in_child=self._after_fork_child)

    # -- fork safety: the checkpoint forks the live worker before every run ----------------------
    def _fresh(self) -> None:
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def _before_fork(self) -> None:
        self._lock.acquire()

    def _after_fork_parent(self) -> None:
        self._lock.release()

    def _after_fork_child(self) -> None:
        # The checkpoint forks between runs (inactive). A fork during a run is the cell's own
        # (multiprocessing, os.fork): its output goes to the inherited stdout/stderr pipes.
        self.detached = self.detached or self.active
        self._fresh()

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._flusher, name="agenticraft-flush",
                                            daemon=True)
            start_sandbox_thread(self._thread)  # not the user's: hidden from the debugger

    def _flusher(self) -> None:
        """Send a batch once ``FLUSH_INTERVAL`` has passed since the last flush. Every write
        notifies: a notification only makes it look again, never sends early (it used to end
        the wait, so the second write of a batch sent it at once). Ends when ``end`` retires
        it."""
        me = threading.current_thread()
        with self._lock:
            while self._thread is me:
                if not self._pending or not self.active:  # between runs text is dropped
                    self._wake.wait()
                    continue
                left = self._last + FLUSH_INTERVAL - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                else:
                    self._flush_locked()

    # -- run boundaries ------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a run; text written between runs has no cell to go to and is dropped."""
        with self._lock:
            self._pending.drain()
            self.active = True

    def end(self) -> None:
        """Flush and stop sending: after this the worker sends its final frame alone. The
        flusher thread ends too (the next write starts one): between runs the worker has no
        thread, so the next run's fork is made ahead of time (see jail/worker.py)."""
        with self._lock:
            self._flush_locked()
            self.active = False
            thread, self._thread = self._thread, None
            self._wake.notify_all()
        if thread is not None and thread is not threading.current_thread() and \
                self._pid == os.getpid():
            thread.join()

    # -- output ----------------------------------------------------------------------------------
    def write_stream(self, name: str, text: str) -> None:
        if not text:
            return
        if self.detached:
            os.write(1 if name == "stdout" else 2, text.encode("utf-8", "backslashreplace"))
            return
        with self._lock:
            self._pending.add(name, text)
            now = time.monotonic()
            if self._pending.size >= MAX_BUFFER or now - self._last >= FLUSH_INTERVAL:
                self._flush_locked()
            else:  # the flusher sends it if nothing else does within FLUSH_INTERVAL
                self._ensure_thread()
                self._wake.notify()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def emit(self, event: dict[str, Any], keep: bool = False) -> None:
        """Send one event now. ``keep``: an event of no run (the debugger's reply to a request
        made while a cell ran, ready after it ended) goes with the next run instead."""
        if self.detached:
            return
        with self._lock:
            self._flush_locked()
            self._send(event, keep)

    def _flush_locked(self) -> None:
        self._last = time.monotonic()
        for name, text in self._pending.drain():
            self._send({"type": "stream", "name": name, "text": text})

    def _send(self, event: dict[str, Any], keep: bool = False) -> None:
        main = threading.current_thread() is threading.main_thread()
        if main:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            if keep:
                self.worker.emit(event, keep=True)
            else:
                self.worker.emit(event)
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class EventStream(OutStream):
    """``sys.stdout``/``sys.stderr`` inside the worker: ipykernel's ``OutStream`` class (code that
    checks for it finds it), writing to the channel in order instead of an IOPub thread.

    ``fileno()`` is the process's own descriptor, as ipykernel's is with its fd capture: what a
    subprocess or C code writes there reaches the cell's output through the supervisor.
    """

    def __init__(self, channel: Channel, name: str) -> None:  # no IOPub thread, no fd pipes
        io.TextIOBase.__init__(self)
        self.channel = channel
        self.name = name
        self.session = None
        self.pub_thread = channel  # ``closed`` is "pub_thread is None"
        self.echo = None
        self._isatty = False
        self._should_watch = False
        self._local = threading.local()
        self._parent_header: ContextVar[dict[str, Any]] = ContextVar("parent_header")
        self._parent_header.set({})
        self._parent_header_global: dict[str, Any] = {}
        self._fd = 1 if name == "stdout" else 2

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        self.pub_thread = None

    def write(self, text: str) -> int:  # type: ignore[override]
        if self.pub_thread is None:
            raise ValueError("I/O operation on closed file")
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.channel.write_stream(self.name, text)
        return len(text)

    def flush(self) -> None:
        self.channel.flush()
