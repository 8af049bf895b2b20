"""network_access allow-lists, end to end through the process sandbox: two servers on the host's
loopback, A listed and B not. The sandbox reaches A (urllib, requests, a raw socket) only
through the host's egress proxy; every way of naming B (or something else) is refused with the
allow-list in the message, and audited. Names are resolved by the proxy with a stub resolver."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import pytest

from agenticraft.sandbox.egress import StaticResolver
from agenticraft.sandbox.process import ProcessSandbox
from agenticraft.security import SecurityContext
from agenticraft.security.policy import BUILTIN_CEILINGS, Policy
from agenticraft.wire.errors import PermissionDenied
from egress_helpers import BYPASSES, HOSTS, NamedServer, named_server, tls_server

from helpers import audit_records, make_manager

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[NamedServer, NamedServer]]:
    with named_server("A") as a, named_server("B") as b:
        a.redirect_to = f"http://127.0.0.1:{b.port}/"
        yield a, b


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessSandbox]:
    manager = make_manager(tmp_path_factory.mktemp("egress"),
                           egress_resolver=StaticResolver(HOSTS))
    box = ProcessSandbox(manager)
    box.supervisor.start()
    box._started = True
    manager._sandboxes[box.sandbox_type] = box
    yield box
    box.supervisor.close()
    box.egress.close()


def listed(servers: tuple[NamedServer, NamedServer], *more: str) -> list[str]:
    return [f"127.0.0.1:{servers[0].port}", *more]


async def run(sandbox: ProcessSandbox, code: str, network: object, **limits: object):
    ctx = SecurityContext("student", resource_limits={"network_access": network,
                                                      "timeout_seconds": 30, **limits})
    result = await sandbox.execute_code(textwrap.dedent(code), ctx)
    assert sandbox.egress.wait_idle(10)  # every connection closed and recorded
    return result


def denied(sandbox: ProcessSandbox, destination: str) -> list[dict]:
    return audit_records(sandbox.manager, "network", destination=destination, allowed=False)


# -- the allowed server --------------------------------------------------------------------------
async def test_listed_server_is_reached_by_urllib_requests_httpx_and_a_socket(sandbox, servers):
    a, _ = servers
    before = a.hits
    result = await run(sandbox, f"""
        import socket, urllib.request, requests, httpx
        by_urllib = urllib.request.urlopen("http://127.0.0.1:{a.port}/", timeout=10).read()
        by_requests = requests.get("http://127.0.0.1:{a.port}/", timeout=10).text
        by_httpx = httpx.get("http://127.0.0.1:{a.port}/", timeout=10).text
        with socket.create_connection(("127.0.0.1", {a.port}), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            raw = b""
            while chunk := s.recv(4096):
                raw += chunk
        result = [by_urllib.decode(), by_requests, by_httpx,
                  raw.decode().rsplit("\\r\\n", 1)[-1]]
        """, listed(servers))
    assert result.success, result.error
    assert result["result"] == ["hello from A"] * 4
    assert a.hits == before + 4
    assert "egress proxy" in result.enforced["network_access"]
    allowed = audit_records(sandbox.manager, "network", allowed=True,
                            destination=f"127.0.0.1:{a.port}")
    assert {r["protocol"] for r in allowed} >= {"http", "socks5"}
    assert all(r["user_id"] == "student" and r["bytes_received"] > 0 for r in allowed)


async def test_a_name_is_resolved_by_the_proxy(sandbox, servers):
    a, _ = servers
    result = await run(sandbox, f"""
        import socket, requests
        text = requests.get("http://svc.test:{a.port}/", timeout=10).text
        with socket.create_connection(("svc.test", {a.port}), timeout=10) as s:
            peer = s.getpeername()[0]
        result = text
        """, listed(servers, f"svc.test:{a.port}"))
    assert result.success, result.error
    assert result["result"] == "hello from A"


# -- everything else is refused ------------------------------------------------------------------
async def test_unlisted_port_is_refused_naming_the_allow_list(sandbox, servers):
    a, b = servers
    before = b.hits
    result = await run(sandbox, f"""
        import socket, urllib.request, urllib.error, requests, httpx
        out = {{}}
        try:
            urllib.request.urlopen("http://127.0.0.1:{b.port}/", timeout=10)
        except urllib.error.HTTPError as exc:
            out["urllib"] = f"{{exc.code}} {{exc.read().decode()}}"
        r = requests.get("http://127.0.0.1:{b.port}/", timeout=10)
        out["requests"] = f"{{r.status_code}} {{r.text}}"
        r = httpx.get("http://127.0.0.1:{b.port}/", timeout=10)
        out["httpx"] = f"{{r.status_code}} {{r.text}}"
        try:
            socket.create_connection(("127.0.0.1", {b.port}), timeout=10)
        except PermissionError as exc:
            out["socket"] = str(exc)
        result = out
        """, listed(servers))
    assert result.success, result.error
    out = result["result"]
    allow = f"network_access allows only 127.0.0.1:{a.port}"
    assert out["urllib"].startswith("403 Permission denied") and allow in out["urllib"]
    assert out["requests"].startswith("403 Permission denied") and allow in out["requests"]
    assert out["httpx"].startswith("403 Permission denied") and allow in out["httpx"]
    assert "Permission denied" in out["socket"] and allow in out["socket"]
    assert b.hits == before
    assert {r["protocol"] for r in denied(sandbox, f"127.0.0.1:{b.port}")} >= {"http", "socks5"}


async def test_false_reaches_neither(sandbox, servers):
    a, b = servers
    before = (a.hits, b.hits)
    result = await run(sandbox, f"""
        import os, socket, urllib.request
        out = ["HTTP_PROXY" in os.environ]
        for port in ({a.port}, {b.port}):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{{port}}/", timeout=5)
                out.append("reached")
            except OSError as exc:
                out.append(type(exc).__name__)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5)
                out.append("reached")
            except OSError as exc:
                out.append(type(exc).__name__)
        result = out
        """, False)
    assert result.success, result.error
    assert result["result"][0] is False
    assert "reached" not in result["result"]
    assert (a.hits, b.hits) == before


async def test_policy_narrower_than_the_request_is_refused_before_anything_runs(tmp_path,
                                                                                  servers):
    a, b = servers
    ceilings = BUILTIN_CEILINGS.replace(network_access=[f"127.0.0.1:{a.port}"])
    manager = make_manager(tmp_path, Policy(ceilings=ceilings))
    sandbox = await manager.get_sandbox("process")
    try:
        before = a.hits
        for asked in ([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], True, "127.0.0.1"):
            with pytest.raises(PermissionDenied) as info:
                await run(sandbox, f"import urllib.request\nurllib.request.urlopen("
                                   f"'http://127.0.0.1:{a.port}/')", asked)
            assert "network_access" in str(info.value)
            assert f"ceiling network_access=[127.0.0.1:{a.port}]" in str(info.value)
        assert a.hits == before
        assert not audit_records(manager, "execution", outcome="ok")
        ok = await run(sandbox, f"import urllib.request\nresult = urllib.request.urlopen("
                                f"'http://127.0.0.1:{a.port}/').read().decode()",
                       [f"127.0.0.1:{a.port}"])
        assert ok["result"] == "hello from A"
    finally:
        await manager.close()




@pytest.mark.parametrize("name", list(BYPASSES))
async def test_bypass_attempts_are_refused_and_audited(sandbox, servers, name):
    a, b = servers
    code, destination = (text.format(a=a.port, b=b.port) for text in BYPASSES[name])
    before = (a.hits, b.hits)
    result = await run(sandbox, f"""
        import socket, urllib.request, urllib.error, requests
        try:
            {code}
            result = "not refused"
        except urllib.error.HTTPError as exc:
            result = f"{{exc.code}} {{exc.read().decode()}}"
        except (OSError, requests.RequestException) as exc:
            result = f"{{type(exc).__name__}}: {{exc}}"
        """, listed(servers, f"internal.test:{b.port}", f"metadata.test:{a.port}"))
    assert result.success, result.error
    assert "Permission denied" in result["result"], result["result"]
    assert f"network_access allows only 127.0.0.1:{a.port}" in result["result"]
    if name == "redirect from A to B":
        assert a.hits == before[0] + 1 and b.hits == before[1]
    else:
        assert (a.hits, b.hits) == before
    records = denied(sandbox, destination)
    assert records, f"no denial audited for {destination}"
    assert records[-1]["user_id"] == "student"
    assert "allows only" in records[-1]["reason"]
    if name == "UDP":
        assert records[-1]["protocol"] == "socks5-udp"


async def test_byte_budget_stops_a_download(sandbox, servers):
    a, _ = servers
    result = await run(sandbox, f"""
        import urllib.request
        try:
            data = urllib.request.urlopen("http://127.0.0.1:{a.port}/bytes/2000000",
                                          timeout=10).read()
            result = len(data)
        except Exception as exc:
            result = type(exc).__name__
        """, listed(servers), max_network_bytes=100_000)
    assert result.success, result.error
    assert result["result"] != 2_000_000
    cut = [r for r in audit_records(sandbox.manager, "network", allowed=True)
           if r.get("stopped")]
    assert cut and "max_network_bytes=100000" in cut[-1]["stopped"]
    assert cut[-1]["bytes_received"] <= 100_000 + 65_536


async def test_a_session_keeps_its_way_out_across_runs_and_rollbacks(sandbox, servers):
    a, _ = servers
    ctx = sandbox.manager.authorize(
        {"user_id": "student", "resource_limits": {"network_access": listed(servers),
                                                   "timeout_seconds": 30}},
        "execute", sandbox_type="process")
    fetch = (f"import urllib.request\nlast = urllib.request.urlopen("
             f"'http://127.0.0.1:{a.port}/', timeout=10).read()")
    async with sandbox.session(ctx) as session:
        for _ in range(3):
            assert (await session.run(fetch)).success
        crashed = await session.run("import os\nos._exit(1)")
        assert not crashed.success  # rolled back: the checkpoint relays again
        again = await session.run(fetch + "\nresult = last.decode()")
        assert again["result"] == "hello from A"


async def test_other_sandboxes_cannot_use_the_proxy(sandbox, servers):
    a, _ = servers
    ctx = sandbox.manager.authorize({"user_id": "student", "resource_limits": {
        "network_access": listed(servers)}}, "execute", sandbox_type="process")
    path, _key = sandbox.egress.endpoint_for(ctx)
    seen = await run(sandbox, f"import os\nresult = sorted(os.listdir({os.path.dirname(path)!r}))",
                     listed(servers))
    assert seen["result"] == ["proxy.sock"]  # its own proxy, bound into its root
    probe = f"""
        import os, socket
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect({path!r})
            s.sendall(b"CONNECT 127.0.0.1:{a.port} HTTP/1.1\\r\\n\\r\\n")
            result = ["connected", s.recv(100).decode()]
        except OSError as exc:
            result = [type(exc).__name__, os.path.exists({path!r})]
        """
    before = a.hits
    other = await run(sandbox, probe, False)  # a sandbox without network, same user
    assert other.success, other.error
    if sandbox.supervisor.mechanisms["mounts"]["active"]:
        assert other["result"] == ["FileNotFoundError", False]  # not in its private root
    else:  # no private root here: the socket is found, but the proxy wants its key
        assert other["result"] == ["connected", ""]
        assert audit_records(sandbox.manager, "network", protocol="key", allowed=False)
    assert a.hits == before


@pytest.mark.parametrize("family", ["AF_PACKET", "AF_NETLINK", "AF_VSOCK", "AF_APPLETALK"])
async def test_only_unix_and_inet_sockets_exist_with_an_allow_list(sandbox, servers, family):
    result = await run(sandbox, f"""
        import socket
        try:
            socket.socket(socket.{family}, socket.SOCK_DGRAM)
            result = "created"
        except OSError as exc:
            result = exc.errno
        """, listed(servers))
    assert result.success, result.error
    if sandbox.supervisor.mechanisms["seccomp"]["active"]:
        assert result["result"] == 1  # EPERM from the seccomp filter
    else:
        assert result["result"] != "created" or family == "AF_NETLINK"


async def test_https_through_connect_to_a_listed_server_only(sandbox, servers, tmp_path):
    _, b = servers
    with tls_server("C", tmp_path) as (c, pem):
        result = await run(sandbox, f"""
            import os, socket, ssl, urllib.request, urllib.error, requests
            pem = {pem!r}
            context = ssl.create_default_context(cadata=pem)
            out = {{}}
            out["urllib"] = urllib.request.urlopen("https://127.0.0.1:{c.port}/", timeout=10,
                                                   context=context).read().decode()
            bundle = os.path.join(os.environ["TMPDIR"], "ca.pem")
            with open(bundle, "w") as fh:
                fh.write(pem)
            out["requests"] = requests.get("https://127.0.0.1:{c.port}/", timeout=10,
                                           verify=bundle).text
            with socket.create_connection(("127.0.0.1", {c.port}), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                    answer = b""
                    while chunk := tls.recv(4096):
                        answer += chunk
                    out["socket"] = answer.decode().rsplit("\\n", 1)[-1]
            try:
                urllib.request.urlopen("https://127.0.0.1:{b.port}/", timeout=10, context=context)
            except urllib.error.URLError as exc:
                out["refused"] = str(exc.reason)
            result = out
            """, listed(servers, f"127.0.0.1:{c.port}"))
    assert result.success, result.error
    out = result["result"]
    assert out["urllib"] == out["requests"] == "hello from C"
    assert out["socket"].endswith("hello from C")
    assert "Tunnel connection failed: 403 Permission denied" in out["refused"]
    assert "network_access allows only 127.0.0.1:" in out["refused"]
    assert audit_records(sandbox.manager, "network", protocol="http-connect", allowed=True,
                         destination=f"127.0.0.1:{c.port}")
    assert denied(sandbox, f"127.0.0.1:{b.port}")
