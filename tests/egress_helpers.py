"""Loopback HTTP(S) servers for the egress tests and benchmark: ``/`` names the server,
``/redirect`` sends the client elsewhere, ``/bytes/N`` answers N bytes. Each server counts its
requests."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class NamedServer(ThreadingHTTPServer):
    daemon_threads = True
    redirect_to = ""

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.hits = 0

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: NamedServer

    def do_GET(self) -> None:
        self.server.hits += 1
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/bytes/"):
            body = b"x" * int(self.path.rsplit("/", 1)[1])
        else:
            body = f"hello from {self.server.name}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def named_server(name: str, tls: ssl.SSLContext | None = None) -> Iterator[NamedServer]:
    server = NamedServer(name)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def tls_server(name: str, directory: Path) -> Iterator[tuple[NamedServer, str]]:
    """A NamedServer speaking HTTPS, and its certificate (PEM text) for clients to trust."""
    cert, key = self_signed(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with named_server(name, context) as server:
        yield server, cert.read_text()


#: What the proxy's resolver answers (the sandbox itself resolves nothing).
HOSTS = {"svc.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"],
         "internal.test": ["127.0.0.1"]}

#: Ways of reaching server B (or something else unlisted) while only A is listed.
BYPASSES = {
    # name: (code whose `result` is the error text, destination the proxy records)
    "ip literal of the denied server": (
        "socket.create_connection(('127.0.0.1', {b}), timeout=10)", "127.0.0.1:{b}"),
    "localhost": ("urllib.request.urlopen('http://localhost:{b}/', timeout=10)", "localhost:{b}"),
    "decimal spelling": (
        "urllib.request.urlopen('http://2130706433:{b}/', timeout=10)", "2130706433:{b}"),
    "hex spelling": ("socket.create_connection(('0x7f000001', {b}), timeout=10)",
                     "0x7f000001:{b}"),
    "octal spelling": ("socket.create_connection(('0177.0.0.1', {b}), timeout=10)",
                       "0177.0.0.1:{b}"),
    "short spelling": ("requests.get('http://127.1:{b}/', timeout=10).raise_for_status()",
                       "127.1:{b}"),
    "redirect from A to B": (
        "urllib.request.urlopen('http://127.0.0.1:{a}/redirect', timeout=10)", "127.0.0.1:{b}"),
    "name resolving to a metadata address": (
        "requests.get('http://metadata.test:{a}/', timeout=10).raise_for_status()",
        "metadata.test:{a}"),
    "listed name resolving to an unlisted loopback port": (
        "socket.create_connection(('internal.test', {b}), timeout=10)", "internal.test:{b}"),
    "IPv4-mapped IPv6": (
        "urllib.request.urlopen('http://[::ffff:127.0.0.1]:{b}/', timeout=10)",
        "[::ffff:127.0.0.1]:{b}"),
    "IPv6 loopback": ("socket.create_connection(('::1', {a}), timeout=10)", "[::1]:{a}"),
    "IPv6 socket, mapped address": (
        "s = socket.socket(socket.AF_INET6); s.settimeout(10); "
        "s.connect(('::ffff:7f00:1', {b}, 0, 0))", "[::ffff:7f00:1]:{b}"),
    "UDP": ("socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {b}))",
            "127.0.0.1:{b}"),
}
