"""Inside the sandbox: the doorway from the sandbox's own loopback to the host's egress proxy.

A sandbox with a ``network_access`` allow-list has its own network namespace whose only device
is loopback: no route leads anywhere. The one way out is the host proxy's unix socket. This
module gives ordinary code a way to use it, without deciding anything itself:

* a listener on ``127.0.0.1:PORT`` inside the namespace that relays every connection, byte for
  byte, to the proxy's unix socket (the proxy speaks HTTP proxy and SOCKS5 on it), announced as
  ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (``http://127.0.0.1:PORT``; ``socks5h://`` to the
  same port works too) so pip, requests, httpx and urllib work unmodified;
* ``socket.socket.connect`` for TCP goes through SOCKS5 over that listener (names resolved by
  the proxy), and ``getaddrinfo`` hands names through unresolved, so
  ``socket.create_connection(("allowed.host", 443))`` works. UDP is refused (and the proxy,
  asked, audits the attempt).

None of this is enforcement: code that undoes these wrappers (or calls ``connect`` through
ctypes) still finds only the empty namespace. The allow-list is checked by the host proxy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import struct
import threading
from typing import Any

LOOPBACK = "127.0.0.1"
CHUNK = 64 * 1024
HIGH_WATER = 256 * 1024

_shim: Shim | None = None
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex
_original_sendto = socket.socket.sendto
_original_getaddrinfo = socket.getaddrinfo


class _Pair:
    """Two sockets relayed both ways with bounded buffers."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.peer = {a: b, b: a}
        self.pending: dict[socket.socket, bytearray] = {a: bytearray(), b: bytearray()}
        self.eof: set[socket.socket] = set()

    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self.peer)


class Shim:
    """The loopback listener and its relay loop (one thread, one selector)."""

    def __init__(self, socket_path: str, key: str) -> None:
        self.socket_path = socket_path
        self.key = key.encode() + b"\n"  # the proxy's first line of every connection
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.pairs: dict[socket.socket, _Pair] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None

    # -- lifetime across the worker's checkpoint forks ------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="egress-shim", daemon=True)
            self._thread.start()

    def pause(self) -> None:
        """Stop relaying in this process (before a checkpoint fork: the runner takes over)."""
        if self._thread is not None and self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join()
        self._thread = None
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 64)

    def after_fork(self) -> None:
        """In a forked runner: the parent's connections are the parent's; relay from here."""
        for pair in list(self.pairs.values()):
            for sock in pair.sockets():
                sock.close()
        self.pairs.clear()
        self._thread = None
        self.start()

    # -- the relay loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        for sock in self.pairs:
            self._update(selector, sock)
        try:
            while True:
                for key, mask in selector.select():
                    if key.data == "wake":
                        return
                    if key.data == "accept":
                        self._accept(selector)
                    else:
                        self._service(selector, key.fileobj, mask)  # type: ignore[arg-type]
        finally:
            selector.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            client, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.socket_path)
            upstream.sendall(self.key)
        except OSError:
            client.close()
            upstream.close()
            return
        pair = _Pair(client, upstream)
        for sock in pair.sockets():
            sock.setblocking(False)
            self.pairs[sock] = pair
            selector.register(sock, selectors.EVENT_READ, "data")

    def _interest(self, sock: socket.socket) -> int:
        pair = self.pairs[sock]
        mask = 0
        if sock not in pair.eof and len(pair.pending[pair.peer[sock]]) < HIGH_WATER:
            mask |= selectors.EVENT_READ
        if pair.pending[sock]:
            mask |= selectors.EVENT_WRITE
        return mask

    def _service(self, selector: selectors.BaseSelector, sock: socket.socket, mask: int) -> None:
        pair = self.pairs.get(sock)
        if pair is None:
            return
        other = pair.peer[sock]
        try:
            if mask & selectors.EVENT_READ:
                data = sock.recv(CHUNK)
                if data:
                    pair.pending[other] += data
                else:
                    pair.eof.add(sock)
            for target in (other, sock):
                buffer = pair.pending[target]
                if buffer:
                    sent = target.send(buffer)
                    del buffer[:sent]
                if not buffer and pair.peer[target] in pair.eof:
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pair.eof.update(pair.sockets())
            for buffer in pair.pending.values():
                buffer.clear()
        if len(pair.eof) == 2 and not any(pair.pending.values()):
            for each in pair.sockets():
                if _registered(selector, each):
                    selector.unregister(each)
                self.pairs.pop(each, None)
                each.close()
            return
        for each in pair.sockets():
            self._update(selector, each)

    def _update(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        interest = self._interest(sock)
        registered = _registered(selector, sock)
        if interest and registered:
            selector.modify(sock, interest, "data")
        elif interest:
            selector.register(sock, interest, "data")
        elif registered:
            selector.unregister(sock)

    # -- what code in the sandbox sees ----------------------------------------------------------
    def environment(self) -> dict[str, str]:
        # ALL_PROXY is the HTTP form too: the listener also speaks SOCKS5 (socks5h://... works
        # for clients told so), but httpx refuses to start with a socks ALL_PROXY unless the
        # optional socksio is installed, and requests needs PySocks for it.
        url = f"http://{LOOPBACK}:{self.port}"
        env = {"HTTP_PROXY": url, "HTTPS_PROXY": url, "ALL_PROXY": url, "NO_PROXY": ""}
        return {**env, **{k.lower(): v for k, v in env.items()}}


def _registered(selector: selectors.BaseSelector, sock: socket.socket) -> bool:
    try:
        selector.get_key(sock)
    except KeyError:
        return False
    return True


# -- socket wrappers ----------------------------------------------------------------------------

def _is_inet(sock: socket.socket) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6)


def _is_stream(sock: socket.socket) -> bool:
    return sock.type == socket.SOCK_STREAM


def _to_shim(sock: socket.socket, address: Any) -> bool:
    if _shim is None or not isinstance(address, tuple) or len(address) < 2:
        return True  # nothing to route (or a form only the real connect can judge)
    host, port = address[0], address[1]
    return port == _shim.port and str(host) in (LOOPBACK, "::ffff:127.0.0.1", "localhost")


def _socks_request(sock: socket.socket, command: int, host: str, port: int) -> None:
    """SOCKS5 handshake on ``sock`` (already connected to the shim); raise on refusal."""
    name = host.encode("idna") if not host.isascii() else host.encode()
    if len(name) > 255:
        raise OSError(errno.EINVAL, f"host name too long: {host[:40]}...")
    sock.sendall(b"\x05\x01\x00" + bytes([5, command, 0, 3, len(name)]) + name
                 + struct.pack("!H", port))
    head = _read(sock, 12)
    if head[:2] != b"\x05\x00" or head[2:4] != b"\x05\x00" or len(head) < 12:
        reason = b""
        while len(head) >= 12 and not reason.endswith(b"\n") and len(reason) < 4096:
            more = sock.recv(4096)
            if not more:
                break
            reason += more
        text = reason.decode(errors="replace").strip() or f"the egress proxy refused {host}:{port}"
        code = head[3] if len(head) > 3 else 1
        if code in (2, 7):  # not allowed by the ruleset / command not allowed
            raise PermissionError(errno.EACCES, text)
        raise ConnectionRefusedError(errno.ECONNREFUSED, text)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            break
        data += more
    return data


def _via_proxy(sock: socket.socket, address: tuple[Any, ...]) -> None:
    assert _shim is not None
    host, port = str(address[0]), int(address[1])
    shim = (LOOPBACK, _shim.port) if sock.family == socket.AF_INET else (
        "::ffff:127.0.0.1", _shim.port, 0, 0)
    timeout = sock.gettimeout()
    sock.settimeout(timeout or None)  # a non-blocking socket: the handshake blocks
    try:
        _original_connect(sock, shim)
        _socks_request(sock, 1, host, port)
    finally:
        sock.settimeout(timeout)


def _refuse_udp(address: Any) -> None:
    """Ask the proxy (which audits and refuses it), then raise its answer."""
    assert _shim is not None
    host, port = (str(address[0]), int(address[1])) if isinstance(address, tuple) else ("?", 0)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        _original_connect(probe, (LOOPBACK, _shim.port))
        _socks_request(probe, 3, host, port)
    finally:
        probe.close()
    raise PermissionError(errno.EACCES, "Permission denied: UDP is not allowed")


def _connect(self: socket.socket, address: Any) -> None:
    if _shim is not None and _is_inet(self) and not _to_shim(self, address):
        if _is_stream(self):
            return _via_proxy(self, address)
        if self.type == socket.SOCK_DGRAM:
            _refuse_udp(address)
    return _original_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    try:
        _connect(self, address)
    except OSError as exc:
        return exc.errno or errno.ECONNREFUSED
    return 0


def _sendto(self: socket.socket, data: Any, *args: Any) -> int:
    address = args[-1] if args else None
    if _shim is not None and _is_inet(self) and self.type == socket.SOCK_DGRAM:
        _refuse_udp(address)
    return _original_sendto(self, data, *args)


def _getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                 flags: int = 0) -> list[Any]:
    """Names are the proxy's to resolve: hand them through unresolved to ``connect``."""
    text = host.decode() if isinstance(host, bytes) else host
    if _shim is None or not isinstance(text, str) or _literal(text) or text == "":
        return _original_getaddrinfo(host, port, family, type, proto, flags)
    number = socket.getservbyname(port) if isinstance(port, str) and not port.isdigit() else (
        int(port) if port is not None else 0)
    kind = socket.SOCK_DGRAM if type == socket.SOCK_DGRAM else socket.SOCK_STREAM
    if family == socket.AF_INET6:
        return [(socket.AF_INET6, kind, 0, "", (text, number, 0, 0))]
    return [(socket.AF_INET, kind, 0, "", (text, number))]


def _literal(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text.split("%")[0])
    except OSError:
        return False
    return True


def install(socket_path: str, key: str) -> Shim:
    """Start the doorway in this worker and route the socket API through it."""
    global _shim
    if _shim is None:
        _shim = Shim(socket_path, key)
        _shim.start()
        socket.socket.connect = _connect  # type: ignore[method-assign]
        socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
        socket.socket.sendto = _sendto  # type: ignore[method-assign]
        socket.getaddrinfo = _getaddrinfo
        os.environ.update(_shim.environment())
    return _shim


def active() -> Shim | None:
    return _shim
