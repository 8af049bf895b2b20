"""A network allow-list in the secure kernel (AGENTICRAFT_DEFAULT_NETWORK_ACCESS): cells reach
the listed server and a listed package index (``pip install`` from a directory of wheels served
on loopback), nothing else; ``%secure_status`` shows the list and what enforces it."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from egress_helpers import NamedServer, named_server
from kernel.harness import Kernel, kernel_env

pytestmark = pytest.mark.timeout(300)

WHEEL = "tinypkg-1.0-py3-none-any.whl"


def build_index(root: Path) -> Path:
    """A PEP 503 index with one pure-Python wheel: tinypkg (``tinypkg.VALUE == 42``)."""
    files = {"tinypkg/__init__.py": b"VALUE = 42\n",
             "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\n"
                                               b"Version: 1.0\n",
             "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
                                            b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},sha256={digest(data)},{len(data)}\n"
                     for name, data in files.items()) + "tinypkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(root / WHEEL, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("tinypkg-1.0.dist-info/RECORD", record)
    page = root / "simple" / "tinypkg"
    page.mkdir(parents=True)
    (page / "index.html").write_text(f'<a href="../../{WHEEL}">{WHEEL}</a>\n')
    return root


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[int]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NamedServer, int, int]]:
    index = build_index(tmp_path_factory.mktemp("index"))
    with named_server("A") as a, serve_directory(index) as listed_index, \
            serve_directory(index) as other_index:
        yield a, listed_index, other_index


@pytest.fixture(scope="module")
def net_kernel(data_dir: Path, tmp_path_factory: pytest.TempPathFactory,
               servers: tuple[NamedServer, int, int]) -> Iterator[Kernel]:
    a, index, _ = servers
    tmp = tmp_path_factory.mktemp("kernel-net")
    env = kernel_env(tmp, timeout_seconds=120, memory_mb=1024,
                     network_access=f"127.0.0.1:{a.port},127.0.0.1:{index}")
    k = Kernel(data_dir, env, cwd=tmp)
    yield k
    k.close()


def network_records(kernel: Kernel) -> list[dict]:
    lines = kernel.audit_path.read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("type") == "network"]


def test_cells_reach_only_the_listed_server(net_kernel: Kernel, servers) -> None:
    a, _, other = servers
    reply, _ = net_kernel.execute(
        "import urllib.request, urllib.error\n"
        f"ok = urllib.request.urlopen('http://127.0.0.1:{a.port}/', timeout=10).read()\n"
        "try:\n"
        f"    urllib.request.urlopen('http://127.0.0.1:{other}/', timeout=10)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    refused = exc.read().decode()\n")
    assert reply["status"] == "ok", reply
    assert net_kernel.value("ok") == "b'hello from A'"
    refused = net_kernel.value("refused")
    assert "Permission denied" in refused and f"127.0.0.1:{other}" in refused
    assert "network_access allows only" in refused
    assert any(not r["allowed"] and r["destination"] == f"127.0.0.1:{other}"
               for r in network_records(net_kernel))


def test_secure_status_shows_the_allow_list(net_kernel: Kernel, servers) -> None:
    a, index, _ = servers
    _, outputs = net_kernel.execute("%secure_status")
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    listed = ", ".join(sorted([f"127.0.0.1:{a.port}", f"127.0.0.1:{index}"]))
    assert f"only {listed}" in text, text
    assert "host-side egress proxy" in text


PIP = ("%pip install --no-cache-dir --retries 0 --disable-pip-version-check "
       "--index-url http://127.0.0.1:{port}/simple/ tinypkg")


def test_pip_installs_from_a_listed_index(net_kernel: Kernel, servers) -> None:
    _, index, _ = servers
    reply, outputs = net_kernel.execute(PIP.format(port=index) + "\nimport tinypkg\n",
                                        timeout=150)
    assert reply["status"] == "ok", (reply, outputs)
    assert net_kernel.value("tinypkg.VALUE") == "42"
    assert "site-packages" in net_kernel.value("tinypkg.__file__")


def test_pip_from_an_unlisted_index_fails_with_one_clear_line(net_kernel: Kernel,
                                                             servers) -> None:
    _, _, other = servers
    _, outputs = net_kernel.execute(PIP.format(port=other).replace("tinypkg", "otherpkg"),
                                        timeout=150)
    stderr = "".join(o["text"] for o in outputs
                     if o["msg_type"] == "stream" and o["name"] == "stderr")
    assert "No matching distribution found for otherpkg" in stderr
    clear = [line for line in stderr.splitlines() if "network_access allows only" in line]
    assert len(clear) == 1, stderr
    assert clear[0].startswith(f"[network] Permission denied: 127.0.0.1:{other} is not in the "
                               "allow-list")


def test_secure_cell_can_narrow_the_list_but_not_widen_it(net_kernel: Kernel, servers) -> None:
    a, index, other = servers
    reply, _ = net_kernel.execute(
        f"%%secure --network 127.0.0.1:{a.port} --out got\n"
        "import urllib.request, urllib.error\n"
        f"got = urllib.request.urlopen('http://127.0.0.1:{a.port}/', timeout=10).read().decode()\n"
        "try:\n"
        f"    urllib.request.urlopen('http://127.0.0.1:{index}/simple/', timeout=10)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    got += ' / ' + exc.read().decode()\n")
    assert reply["status"] == "ok", reply
    got = net_kernel.value("got")
    assert got.startswith("'hello from A / Permission denied")  # the index is not in this cell's
    assert f"network_access allows only 127.0.0.1:{a.port}" in got
    reply, _ = net_kernel.execute(f"%%secure --network 127.0.0.1:{other}\nx = 1")
    assert reply["status"] == "error" and reply["ename"] == "PermissionDenied"
    assert "can only tighten" in reply["evalue"] and f"127.0.0.1:{other}" in reply["evalue"]
