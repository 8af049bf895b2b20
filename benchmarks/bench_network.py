"""Egress proxy overhead: a 10 MB download and 100 small requests, direct on the host vs from a
sandbox with a ``network_access`` allow-list (shim -> unix socket -> host proxy), same run.

    python benchmarks/bench_network.py [--rounds 7]

Three paths, each timed ``rounds`` times after one warm-up round, one new connection per
request, with the same http.client code (as urllib uses it):
  direct        the benchmark process -> server (no proxy)
  host proxy    the benchmark process -> the proxy's unix socket -> server (the proxy alone)
  sandbox       code in the process sandbox -> loopback shim -> proxy -> server (timed inside
                the sandbox, so the sandbox's own start-up is not counted)
  container     the same code in the container sandbox (a network_mode none container; the
                proxy's socket bound in), when a container engine and the image are there
The server is the tests' loopback HTTP server (tests/egress_helpers.py), in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))

from _common import fmt, print_table, row  # noqa: E402
from agenticraft.sandbox import SandboxManager  # noqa: E402
from agenticraft.security import SecurityContext  # noqa: E402
from agenticraft.security.config import Settings  # noqa: E402
from agenticraft.security.policy import BUILTIN_CEILINGS, Policy  # noqa: E402
from agenticraft.wire.errors import SandboxUnavailable  # noqa: E402

SIZE = 10 * 1024 * 1024
SMALL = 100

#: The client, run as is on the host and inside the sandbox.
CLIENT = '''
import http.client, socket, time

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path[0])
        self.sock.sendall(self.unix_path[1].encode() + b"\\n")  # the proxy key

def get(server_port, path, proxy=None):
    if proxy is None:
        conn, target = http.client.HTTPConnection("127.0.0.1", server_port), path
    else:
        target = f"http://127.0.0.1:{server_port}{path}"
        conn = (UnixConnection(proxy) if isinstance(proxy, tuple)
                else http.client.HTTPConnection("127.0.0.1", proxy))
    conn.request("GET", target)
    data = conn.getresponse().read()
    conn.close()
    return data

def rounds(server_port, proxy, count, size, small):
    big, many = [], []
    for _ in range(count + 1):  # the first round warms up
        t = time.perf_counter()
        assert len(get(server_port, f"/bytes/{size}", proxy)) == size
        big.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(small):
            get(server_port, "/", proxy)
        many.append(time.perf_counter() - t)
    return big[1:], many[1:]
'''



def sandbox_code(port: int, count: int) -> str:
    return CLIENT + (f"import os\nshim = int(os.environ['HTTP_PROXY'].rsplit(':', 1)[1])\n"
                     f"result = rounds({port}, shim, {count}, {SIZE}, {SMALL})\n")


def host_client() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(CLIENT, namespace)  # the same code the sandbox runs
    return namespace


class _Server:
    def __init__(self, port: int) -> None:
        self.port = port


@contextlib.contextmanager
def server_process() -> Iterator[_Server]:
    """The loopback server in its own process: as a remote server would, it shares no
    interpreter lock with the proxy (which runs in a thread of this, the owner's, process)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from egress_helpers import NamedServer; "
            "s = NamedServer('bench'); print(s.port, flush=True); s.serve_forever()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT.parent / "tests")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield _Server(int(proc.stdout.readline()))
    finally:
        proc.terminate()
        proc.wait()


async def main(count: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    # Two cores for the sandbox: its client and its shim are two threads, and the supervisor's
    # duty-cycle throttling at one core would be measured instead of the network path.
    policy = Policy(ceilings=BUILTIN_CEILINGS.replace(cpu_percent=200))
    manager = SandboxManager(policy=policy, settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl")
    sandbox = await manager.get_sandbox("process")
    rounds = host_client()["rounds"]
    with server_process() as server:
        ctx = SecurityContext("bench", resource_limits={
            "network_access": [f"127.0.0.1:{server.port}"], "timeout_seconds": 600,
            "memory_mb": 1024, "cpu_percent": 200})
        proxy = sandbox.egress.proxy_for(manager.authorize(ctx, "execute"))
        assert proxy is not None
        results = {"direct": rounds(server.port, None, count, SIZE, SMALL),
                   "host proxy": rounds(server.port, (proxy.socket_path, proxy.key), count, SIZE,
                                         SMALL)}
        run = await sandbox.execute_code(sandbox_code(server.port, count), ctx)
        assert run.success, run.error
        results["sandbox"] = tuple(run["result"])
        try:
            container = await manager.get_sandbox("container")
        except SandboxUnavailable as exc:
            print(f"container: not measured ({exc})")
        else:
            run = await container.execute_code(sandbox_code(server.port, count), ctx)
            assert run.success, run.error
            results["container"] = tuple(run["result"])
    await manager.close()

    base_dl, base_small = results["direct"]
    rows = []
    for name, (dl, small) in results.items():
        rows.append(row(f"10 MB download, {name}", dl, base_dl,
                        f"{SIZE / statistics.median(dl) / 1e6:.0f} MB/s"))
        rows.append(row(f"{SMALL} small requests, {name}", small, base_small,
                        f"{fmt(statistics.median(small) / SMALL)} each"))
    print_table(f"Egress proxy overhead ({count} rounds each; ratio = p50 / direct p50)", rows,
                header=("case", "p50", "p95", "ratio", "rate"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(parser.parse_args().rounds))
