"""Frames between supervisor, zygote and workers: JSON, length-prefixed on stream sockets.

Nothing is ever unpickled. A frame that is too long, too deeply nested, not JSON, or not a JSON
object is a protocol violation: the receiver treats the sender as hostile.

The header is the body's length; its top bit marks an *event* frame (output the run produced)
so the host can check each frame against the run's budget for its kind before it reads or
decodes a byte of the body (``FrameBuffer``'s ``admit``).
"""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024
EVENT_FLAG = 1 << 31
#: Deepest nesting of arrays/objects a frame may have (the codec's values nest at most 20
#: levels, inside a frame's own 3-4; rich outputs such as plotly specs stay far below this).
MAX_DEPTH = 64

#: ``admit(size, is_event) -> bool``: decode the frame (True) or discard its body undecoded.
Admit = Callable[[int, bool], bool]


class ProtocolError(Exception):
    """The other side sent something that is not a valid frame."""


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), default=repr).encode()
    flag = EVENT_FLAG if message.get("ev") == "event" else 0
    return HEADER.pack(len(data) | flag) + data


def split_header(header: bytes | bytearray, offset: int = 0) -> tuple[int, bool]:
    """(body size, is an event frame); a size over ``MAX_FRAME`` is a ``ProtocolError``."""
    (word,) = HEADER.unpack_from(header, offset)
    size = word & ~EVENT_FLAG
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the {MAX_FRAME} byte limit")
    return size, bool(word & EVENT_FLAG)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = re.compile(rb"[\[{]")
_PAIR = re.compile(rb"[\[{][\]}]")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def check_depth(data: bytes, limit: int = MAX_DEPTH) -> None:
    """``ProtocolError`` when ``data`` nests arrays/objects deeper than ``limit``.

    Checked on the bytes, before decoding: strings are removed, then the innermost bracket pairs
    are peeled ``limit`` times (each pass is one C-speed regex substitution); anything left is
    nested deeper. Frames with fewer brackets than ``limit`` cannot be too deep and skip it.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    for _ in range(limit):
        if not brackets:
            return
        brackets = _PAIR.sub(b"", brackets)
    if _OPEN.search(brackets):
        raise ProtocolError(f"frame nests deeper than {limit} levels")


def decode(data: bytes) -> dict[str, Any]:
    check_depth(data)
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("frame is nested too deeply to decode") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def recv(sock: socket.socket) -> dict[str, Any] | None:
    """Blocking read of one frame; None on a clean end of stream."""
    header = _recv_exact(sock, HEADER.size)
    if header is None:
        return None
    size, _event = split_header(header)
    body = _recv_exact(sock, size)
    if body is None:
        raise ProtocolError("stream ended inside a frame")
    return decode(body)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            if remaining == size:
                return None
            raise ProtocolError("stream ended inside a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class FrameBuffer:
    """Incremental decoder for the asynchronous supervisor side.

    Bytes are stored as they arrive and decoded one frame at a time (``pop``), so a burst of
    tiny frames is not decoded all at once. Each header is shown to ``admit`` first: a frame it
    refuses is skipped undecoded, its body dropped as it arrives (never buffered whole).
    """

    def __init__(self, admit: Admit | None = None) -> None:
        self._buf = bytearray()
        self._skip = 0
        self._admitted = False  # the header at the front was admitted; its body is awaited
        self.admit = admit

    def push(self, data: bytes) -> None:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buf += data

    def pop(self) -> dict[str, Any] | None:
        """The next admitted frame, or None until a whole one has arrived."""
        while len(self._buf) >= HEADER.size:
            size, event = split_header(self._buf)
            if not self._admitted:
                try:
                    admitted = self.admit is None or self.admit(size, event)
                except Exception:
                    self._drop(size)  # refused for good: the stream stays in step
                    raise
                if not admitted:
                    self._drop(size)
                    continue
                self._admitted = True
            if len(self._buf) < HEADER.size + size:
                return None
            body = bytes(self._buf[HEADER.size:HEADER.size + size])
            del self._buf[:HEADER.size + size]
            self._admitted = False
            return decode(body)
        return None

    def take(self) -> bytes:
        """Everything buffered and not yet decoded; the buffer starts afresh (in step only if
        the stream is at a frame boundary, which the caller must know)."""
        data, self._buf, self._skip, self._admitted = bytes(self._buf), bytearray(), 0, False
        return data

    def _drop(self, size: int) -> None:
        end = HEADER.size + size
        self._skip = max(0, end - len(self._buf))
        del self._buf[:end]

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Push ``data`` and return every whole frame now available."""
        self.push(data)
        frames = []
        while (frame := self.pop()) is not None:
            frames.append(frame)
        return frames


def last_frame(data: bytes, reach: int = 4096) -> dict[str, Any] | None:
    """The frame that ``data`` ends with, if its last ``reach`` bytes end with a whole one.

    For a stream that may be out of step (a process killed in the middle of writing a frame):
    the frame a live process wrote afterwards is still found, at the end.
    """
    for start in range(len(data) - HEADER.size, max(-1, len(data) - HEADER.size - reach), -1):
        (word,) = HEADER.unpack_from(data, start)
        if word & ~EVENT_FLAG == len(data) - start - HEADER.size:
            try:
                return decode(data[start + HEADER.size:])
            except ProtocolError:
                continue
    return None
