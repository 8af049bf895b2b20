"""EG's launcher protocol, kernel side: the payload decrypts the way Enterprise Gateway decrypts
it, and the comm port delivers only the signals EG may ask for."""

from __future__ import annotations

import base64
import json
import socket
import threading

import pytest
from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Util.Padding import unpad

from agenticraft_kernel.gateway import handshake


def eg_decode(data: bytes, private_key) -> dict:
    """EG 3.x's ResponseManager._decode_payload, version-1 branch."""
    payload = json.loads(base64.b64decode(data))
    assert payload["version"] == 1
    aes_key = PKCS1_v1_5.new(private_key).decrypt(base64.b64decode(payload["key"]), b"\x42")
    body = AES.new(aes_key, AES.MODE_ECB).decrypt(base64.b64decode(payload["conn_info"]))
    return json.loads(unpad(body, 16).decode())


def test_payload_decrypts_as_enterprise_gateway_does() -> None:
    key = RSA.generate(2048)
    public = base64.b64encode(key.publickey().export_key(format="DER")).decode()
    info = handshake.connection_payload({"shell_port": 5001, "key": "k"}, 6000, "kid-1")
    assert eg_decode(handshake.encrypt_payload(info, public), key) == info
    assert info["comm_port"] == 6000 and info["kernel_id"] == "kid-1" and info["pid"] > 0


def test_send_connection_info_delivers_until_eof() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        handshake.send_connection_info(f"127.0.0.1:{port}", b"payload")
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(64):
                data += chunk
    assert data == b"payload"


@pytest.mark.parametrize("value, expected", [
    (None, (0, 0)), ("0..0", (0, 0)), ("40000..41000", (40000, 41000))])
def test_port_range(value, expected) -> None:
    assert handshake.parse_port_range(value) == expected


@pytest.mark.parametrize("value", ["40000", "41000..40000", "1..70000", "a..b"])
def test_bad_port_range(value) -> None:
    with pytest.raises(ValueError):
        handshake.parse_port_range(value)


def test_bind_in_range_stays_in_range() -> None:
    sock = handshake.bind_in_range((45000, 45999))
    with sock:
        assert 45000 <= sock.getsockname()[1] <= 45999


def send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(data)


def test_comm_port_delivers_interrupts_only_and_stops_on_shutdown() -> None:
    delivered: list[int] = []
    got = threading.Event()

    def deliver(signum: int) -> None:
        delivered.append(signum)
        got.set()

    sock = handshake.bind_in_range((0, 0))
    port = sock.getsockname()[1]
    thread = handshake.serve_requests(sock, deliver)
    for abuse in (b'{"signum": 9}', b'{"signum": 15}', b'{"signum": 0}', b"not json",
                  b"[2]", b'{"signum": "2"}'):
        send(port, abuse)
    send(port, b'{"signum": 2}')
    assert got.wait(10)
    send(port, b'{"shutdown": 1}')
    thread.join(10)
    assert not thread.is_alive()
    assert delivered == [2]  # requests are served in order: none of the others got through
