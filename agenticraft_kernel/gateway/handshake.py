"""Enterprise Gateway's remote-launcher protocol, kernel side (what EG's own
``launch_ipykernel.py`` does, for our kernel):

1. the kernel's connection info (its ports and key) plus the launcher's ``pid``/``pgid``, a
   ``comm_port`` and the ``kernel_id`` goes back to EG's response address, as EG's "version 1"
   payload: the JSON encrypted with a fresh AES-128 key (ECB, PKCS#7 padding: EG's choice, not
   ours), that key encrypted with the RSA public key EG passed (PKCS#1 v1.5), all base64;
2. on ``comm_port`` EG later sends one JSON request per connection: ``{"signum": N}`` (a signal
   for the kernel process: 2 is an interrupt, 0 a liveness poll) or ``{"shutdown": 1}``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PAYLOAD_VERSION = 1
#: Signals EG may ask for: interrupt (2), and 0 (a poll that needs no action). Anything else,
#: e.g. SIGKILL, EG does itself by removing the container.
ALLOWED_SIGNALS = frozenset({0, signal.SIGINT})


def parse_port_range(value: str | None) -> tuple[int, int]:
    """``"lower..upper"`` (EG's ``--port-range``); ``"0..0"`` or nothing: any port."""
    if not value:
        return 0, 0
    lower, sep, upper = value.partition("..")
    if not sep:
        raise ValueError(f"port range {value!r} is not LOWER..UPPER")
    low, high = int(lower), int(upper)
    if not (0 <= low <= high <= 65535):
        raise ValueError(f"port range {value!r} is out of order or out of bounds")
    return low, high


def bind_in_range(port_range: tuple[int, int], tries: int = 20) -> socket.socket:
    """A TCP socket bound on all addresses to a free port within the range (any port for 0..0)."""
    low, high = port_range
    last: OSError | None = None
    for _ in range(tries if high else 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("0.0.0.0", random.randint(low, high) if high else 0))
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise RuntimeError(f"no free port in {low}..{high}: {last}")


def encrypt_payload(info: dict[str, Any], public_key_b64: str) -> bytes:
    """EG's version-1 payload for ``info`` (see the module docstring)."""
    from Cryptodome.Cipher import AES, PKCS1_v1_5
    from Cryptodome.PublicKey import RSA
    from Cryptodome.Random import get_random_bytes
    from Cryptodome.Util.Padding import pad

    aes_key = get_random_bytes(16)
    body = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(json.dumps(info).encode(), 16))
    rsa = PKCS1_v1_5.new(RSA.import_key(base64.b64decode(public_key_b64)))
    payload = {"version": PAYLOAD_VERSION,
               "key": base64.b64encode(rsa.encrypt(aes_key)).decode(),
               "conn_info": base64.b64encode(body).decode()}
    return base64.b64encode(json.dumps(payload).encode())


def send_connection_info(response_address: str, payload: bytes, timeout: float = 30.0) -> None:
    """Deliver the payload to EG's ``host:port`` response address (EG reads until EOF)."""
    host, sep, port = response_address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"response address {response_address!r} is not HOST:PORT")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(payload)


def read_request(conn: socket.socket, limit: int = 64 * 1024) -> dict[str, Any] | None:
    """One request: JSON sent until EOF. Too long or not an object: ``None`` (ignored)."""
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
        if len(data) > limit:
            return None
    try:
        request = json.loads(data)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def serve_requests(sock: socket.socket, deliver: Callable[[int], None]) -> threading.Thread:
    """Answer EG's requests on the comm socket in a daemon thread until ``{"shutdown": 1}``:
    allowed signals go to ``deliver``; the kernel itself stops on EG's shutdown_request."""
    sock.listen(8)

    def loop() -> None:
        with sock:
            while True:
                conn, _ = sock.accept()
                with conn:
                    conn.settimeout(10)
                    try:
                        request = read_request(conn)
                    except OSError:
                        continue
                if request is None:
                    continue
                signum = request.get("signum")
                if isinstance(signum, int) and signum in ALLOWED_SIGNALS and signum:
                    deliver(signum)
                elif signum is not None and signum not in ALLOWED_SIGNALS:
                    log.warning("ignoring signal %r requested over the gateway comm port", signum)
                if request.get("shutdown"):
                    return

    thread = threading.Thread(target=loop, name="gateway-comm", daemon=True)
    thread.start()
    return thread


def connection_payload(connection: dict[str, Any], comm_port: int, kernel_id: str) -> dict:
    """The connection info EG expects back: the kernel's file plus pid, pgid, comm port, id."""
    pid = os.getpid()
    return {**connection, "pid": pid, "pgid": os.getpgid(pid), "comm_port": comm_port,
            "kernel_id": kernel_id}
