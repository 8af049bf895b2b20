"""The egress proxy: a sandbox's only way out, on a unix socket, filtering every connection.

Each connection first sends the proxy's key (a line; see ``key``), then speaks one of three
dialects, told apart by the first byte:

* SOCKS5 (``0x05``): CONNECT with a name (remote DNS), an IPv4 or an IPv6 address. UDP
  ASSOCIATE and BIND are refused. A refusal carries the reason as a line after the reply.
* HTTP ``CONNECT host:port`` (HTTPS through ``HTTPS_PROXY``): a tunnel, or ``403`` + reason.
* Plain HTTP with an absolute URI (``HTTP_PROXY``): forwarded once, with ``Connection: close``;
  redirects are the client's business: its next request is a new connection, checked again.

The proxy runs its own event loop in a thread of the host process that owns the sandbox, so it
keeps serving however the caller's loop is used. Each connection gets one audit record (through
``on_record``) when it is refused or when it closes (with the bytes in each direction).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
import secrets
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from agenticraft.sandbox.egress.allowlist import AllowList, Decision
from agenticraft.sandbox.egress.resolver import Resolver, SystemResolver
from agenticraft.security import records
from agenticraft.wire.network import parse_address

MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT = 10.0
KEY_TIMEOUT = 10.0
#: How long one direction may go on after the other ended (seconds).
AFTER_CLIENT_EOF, AFTER_SERVER_EOF = 60.0, 1.0
CHUNK = 64 * 1024
SOCKS_NOT_ALLOWED, SOCKS_UNREACHABLE, SOCKS_REFUSED, SOCKS_NO_COMMAND, SOCKS_BAD_ADDRESS = (
    2, 4, 5, 7, 8)
_HOP_HEADERS = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"}


class _Budget(Exception):
    pass


class EgressProxy:
    """One filtering proxy: ``start()`` it, hand ``socket_path`` to the sandbox, ``stop()``."""

    def __init__(self, allow: AllowList, *, on_record: Callable[[dict[str, Any]], Any],
                 user_id: str, resolver: Resolver | None = None,
                 max_bytes: int | None = None) -> None:
        self.allow = allow
        self.on_record = on_record
        self.resolver = resolver or SystemResolver()
        self.label: dict[str, Any] = {"user_id": user_id}
        self.max_bytes = max_bytes
        self.used = 0
        #: destination -> reason, for the connections refused since ``begin_run``.
        self.refused: dict[str, str] = {}
        self.directory = ""
        self.socket_path = ""
        #: Every connection starts with this line: only the workers given it (in their profile)
        #: can use the proxy, even if another process of this user finds the socket.
        self.key = secrets.token_hex(16)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = threading.Condition()
        self._active = 0

    # -- lifetime -------------------------------------------------------------------------------
    def start(self) -> str:
        """Listen on a fresh unix socket (in a 0700 directory); return its path."""
        if self._thread is not None:
            return self.socket_path
        self.directory = tempfile.mkdtemp(prefix="agenticraft-egress-")
        os.chmod(self.directory, 0o700)
        self.socket_path = os.path.join(self.directory, "proxy.sock")
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_unix_server(self._accept, path=self.socket_path))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._server.close()
                for task in list(self._tasks):
                    task.cancel()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(asyncio.gather(*self._tasks,
                                                           return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=serve, name="agenticraft-egress", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        # The 0700 directory is the gate on the host. The socket itself may be connected to by
        # anyone who reaches it: a container's user (another uid) reaches it through a bind
        # mount of the socket alone, and every connection must still present the key.
        os.chmod(self.socket_path, 0o666)
        return self.socket_path

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def begin_run(self, **label: Any) -> None:
        """Attribute the next connections to this run (user, cell) and reset its byte budget."""
        self.label = {key: value for key, value in {**self.label, **label}.items()
                      if value is not None}
        self.used = 0
        self.refused = {}

    # -- one client connection ------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._idle:
            self._active += 1
        try:
            key = await asyncio.wait_for(reader.readexactly(len(self.key) + 1), KEY_TIMEOUT)
            if not hmac.compare_digest(key, self.key.encode() + b"\n"):
                self._record(Decision(False, "(no key)", None, "Permission denied: a connection "
                                      "to the egress proxy without its sandbox's key"), "key")
                return
            first = await reader.read(1)
            if first == b"\x05":
                await self._socks(reader, writer)
            elif first:
                await self._http(first, reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError, struct.error, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no connection is open (so every record is written); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    async def _decide(self, host: str, port: int, protocol: str) -> Decision:
        if parse_address(host) is not None:  # nothing to resolve
            decision = self.allow.decide(host, port, self.resolver)
        else:  # resolution may block (DNS): off the loop, so other connections keep flowing
            decision = await asyncio.get_running_loop().run_in_executor(
                None, self.allow.decide, host, port, self.resolver)
        if not decision.allowed:
            self._record(decision, protocol)
        return decision

    def _record(self, decision: Decision, protocol: str, **fields: Any) -> None:
        label = dict(self.label)
        user = str(label.pop("user_id", "anonymous"))
        if decision.address is not None:
            fields.setdefault("address", str(decision.address))
        if not decision.allowed:
            fields["reason"] = decision.reason
            self.refused.setdefault(decision.destination, decision.reason)
        with contextlib.suppress(Exception):  # the audit log's own errors are its concern
            self.on_record(records.network_connection(
                user, decision.destination, decision.allowed, protocol=protocol,
                allow_list=list(self.allow.value), **label, **fields))

    async def _open(self, decision: Decision, port: int) -> tuple[asyncio.StreamReader,
                                                                  asyncio.StreamWriter]:
        assert decision.address is not None
        return await asyncio.wait_for(asyncio.open_connection(str(decision.address), port),
                                      CONNECT_TIMEOUT)

    # -- SOCKS5 ---------------------------------------------------------------------------------
    async def _socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count = (await reader.readexactly(1))[0]
        await reader.readexactly(count)  # offered methods: we answer "no authentication"
        writer.write(b"\x05\x00")
        version, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif kind == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif kind == 3:
            size = (await reader.readexactly(1))[0]
            host = (await reader.readexactly(size)).decode("ascii", "replace")
        else:
            await self._socks_reply(writer, SOCKS_BAD_ADDRESS)
            return
        port = struct.unpack("!H", await reader.readexactly(2))[0]
        if version != 5 or command != 1:
            what = {2: "BIND", 3: "UDP"}.get(command, f"SOCKS command {command}")
            shown = f"{host}:{port}"
            decision = self.allow.deny(shown, None, f"{what} to {shown} is not allowed (TCP "
                                                    "connections only)")
            self._record(decision, "socks5-udp" if command == 3 else "socks5")
            await self._socks_reply(writer, SOCKS_NO_COMMAND, decision.reason)
            return
        decision = await self._decide(host, port, "socks5")
        if not decision.allowed:
            await self._socks_reply(writer, SOCKS_NOT_ALLOWED, decision.reason)
            return
        try:
            upstream = await self._open(decision, port)
        except (OSError, TimeoutError) as exc:
            self._record(decision, "socks5", error=f"connect failed: {exc}")
            await self._socks_reply(writer, SOCKS_REFUSED, f"connect to {decision.destination} "
                                    f"failed: {exc}")
            return
        await self._socks_reply(writer, 0)
        await self._relay(reader, writer, upstream, decision, "socks5", b"")

    @staticmethod
    async def _socks_reply(writer: asyncio.StreamWriter, code: int, reason: str = "") -> None:
        # A refusal's reason follows the reply as one text line: our in-sandbox shim shows it,
        # other SOCKS clients ignore what comes after a failed reply.
        writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0])
                     + (reason.encode() + b"\n" if reason else b""))
        await writer.drain()

    # -- HTTP -----------------------------------------------------------------------------------
    async def _http(self, first: bytes, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._http_error(writer, 431, "request head too large")
            return
        if len(head) > MAX_HEAD:
            await self._http_error(writer, 431, "request head too large")
            return
        line, _, rest = head.partition(b"\r\n")
        parts = line.decode("latin-1").split()
        if len(parts) != 3:
            await self._http_error(writer, 400, "not an HTTP proxy request")
            return
        method, target, version = parts
        if method.upper() == "CONNECT":
            host, port = _split_authority(target, None)
            if host is None or port is None:
                await self._http_error(writer, 400, f"CONNECT needs host:port, not {target!r}")
                return
            opened = await self._connect_http(writer, host, port, "http-connect")
            if opened is None:
                return
            decision, upstream = opened
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._relay(reader, writer, upstream, decision, "http-connect", b"")
            return
        url = urlsplit(target)
        if url.scheme.lower() != "http" or not url.netloc:
            await self._http_error(writer, 400, "only absolute http:// URLs are forwarded; use "
                                   "CONNECT (HTTPS_PROXY) for https")
            return
        host, port = _split_authority(url.netloc.rpartition("@")[2], 80)
        if host is None or port is None:
            await self._http_error(writer, 400, f"bad host in {target!r}")
            return
        opened = await self._connect_http(writer, host, port, "http")
        if opened is None:
            return
        decision, upstream = opened
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        headers = [h for h in rest.split(b"\r\n") if h and
                   h.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS]
        request = (f"{method} {path} {version}\r\n".encode("latin-1")
                   + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n")
        await self._relay(reader, writer, upstream, decision, "http", request)

    async def _connect_http(self, writer: asyncio.StreamWriter, host: str, port: int,
                            dialect: str) -> tuple[Any, Any] | None:
        """Decide on ``host:port`` and connect; on refusal or failure answer the client with an
        HTTP error (403/502) and return None."""
        decision = await self._decide(host, port, dialect)
        if not decision.allowed:
            await self._http_error(writer, 403, decision.reason)
            return None
        try:
            upstream = await self._open(decision, port)
        except (OSError, TimeoutError) as exc:
            self._record(decision, dialect, error=f"connect failed: {exc}")
            await self._http_error(writer, 502, f"connect to {decision.destination} failed: "
                                   f"{exc}")
            return None
        return decision, upstream

    @staticmethod
    async def _http_error(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
        # A refusal's reason is also its status line: clients that show only the status
        # (requests' raise_for_status, pip, urllib3's "Tunnel connection failed") name the list.
        title = {400: "Bad Request", 431: "Request Header Fields Too Large",
                 502: "Bad Gateway"}.get(status) or " ".join(reason.split()).encode(
                     "ascii", "replace").decode()
        body = (reason + "\n").encode()
        writer.write(f"HTTP/1.1 {status} {title}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     f"X-AgentiCraft-Egress: {'denied' if status == 403 else 'error'}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)
        await writer.drain()

    # -- relaying -------------------------------------------------------------------------------
    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                     decision: Decision, protocol: str, first: bytes) -> None:
        up_reader, up_writer = upstream
        counts = {"sent": 0, "received": 0}
        stopped: list[str] = []

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, key: str,
                       data: bytes) -> None:
            try:
                while True:
                    if data:
                        self._charge(len(data))
                        counts[key] += len(data)
                        dst.write(data)
                        await dst.drain()
                    data = await src.read(CHUNK)
                    if not data:
                        break
            except _Budget:
                stopped.append(f"max_network_bytes={self.max_bytes} reached")
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    if dst.can_write_eof():
                        dst.write_eof()

        out = asyncio.ensure_future(pump(reader, up_writer, "sent", first))
        back = asyncio.ensure_future(pump(up_reader, writer, "received", b""))
        try:
            await asyncio.wait({out, back}, return_when=asyncio.FIRST_COMPLETED)
            # Whichever side ended, the other gets a grace period to finish what is in flight
            # (a client that half-closes after its request still gets the whole answer).
            rest = back if out.done() else out
            grace = AFTER_CLIENT_EOF if rest is back else AFTER_SERVER_EOF
            if not stopped:
                await asyncio.wait({rest}, timeout=grace)
        except asyncio.CancelledError:
            pass
        finally:
            out.cancel()
            back.cancel()
            up_writer.close()
            fields: dict[str, Any] = {"bytes_sent": counts["sent"],
                                      "bytes_received": counts["received"]}
            if stopped:
                fields["stopped"] = stopped[0]
            self._record(decision, protocol, **fields)

    def _charge(self, size: int) -> None:
        self.used += size
        if self.max_bytes is not None and self.used > self.max_bytes:
            raise _Budget()


def _split_authority(text: str, default_port: int | None) -> tuple[str | None, int | None]:
    """``host:port`` / ``[v6]:port`` / ``host`` -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        return (host or None), default_port
    if not port_text.isdigit():
        return None, None
    return (host or None), int(port_text)

