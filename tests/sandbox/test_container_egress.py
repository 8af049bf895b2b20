"""network_access in the container sandbox, through SandboxManager with sandbox_type="container":
the same meaning as in the process sandbox. An allow-list leaves the container without network
(network_mode none); its only way out is the host's egress proxy, whose socket alone is bound
into the container. Two servers on the host's loopback, A listed and B not (the process
sandbox's egress tests, reused): A is reached, B and the bypasses are refused naming the list
and audited, False reaches nothing, True is the host's network as in the process sandbox."""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Iterator

import pytest

from agenticraft.sandbox.egress import StaticResolver
from agenticraft.security import SecurityContext
from egress_helpers import BYPASSES, HOSTS, NamedServer, named_server

from helpers import audit_records, make_manager

pytestmark = pytest.mark.timeout(180)

#: The process sandbox's bypasses that need nothing beyond the image's standard library.
CONTAINER_BYPASSES = ["ip literal of the denied server", "decimal spelling", "hex spelling",
                      "redirect from A to B", "listed name resolving to an unlisted loopback port",
                      "IPv6 loopback", "UDP"]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[NamedServer, NamedServer]]:
    with named_server("A") as a, named_server("B") as b:
        a.redirect_to = f"http://127.0.0.1:{b.port}/"
        yield a, b


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, engine) -> Iterator:
    """The manager's container sandbox (its warm containers live for the module)."""
    manager = make_manager(tmp_path_factory.mktemp("ctr-egress"),
                           egress_resolver=StaticResolver(HOSTS))
    box = asyncio.run(manager.get_sandbox("container"))
    yield box
    asyncio.run(manager.close())


def listed(servers: tuple[NamedServer, NamedServer], *more: str) -> list[str]:
    return [f"127.0.0.1:{servers[0].port}", *more]


def context(network: object, **limits: object) -> SecurityContext:
    return SecurityContext("student", resource_limits={"network_access": network,
                                                      "timeout_seconds": 30, **limits})


async def run(sandbox, code: str, network: object, **limits: object):
    result = await sandbox.execute_code(textwrap.dedent(code), context(network, **limits))
    assert sandbox.egress.wait_idle(10)  # every connection closed and recorded
    return result


def denied(sandbox, destination: str) -> list[dict]:
    return audit_records(sandbox.manager, "network", destination=destination, allowed=False)


FETCH_BOTH_WAYS = """
    import socket, urllib.request
    by_urllib = urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=10).read().decode()
    with socket.create_connection(("127.0.0.1", {port}), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        raw = b""
        while chunk := s.recv(4096):
            raw += chunk
    result = [by_urllib, raw.decode().rsplit("\\r\\n", 1)[-1]]
    """


async def test_listed_server_is_reached_through_the_host_proxy(sandbox, servers):
    a, _ = servers
    before = a.hits
    result = await run(sandbox, FETCH_BOTH_WAYS.format(port=a.port), listed(servers))
    assert result.success, result.error
    assert result.sandbox_type == "container"
    assert result["result"] == ["hello from A"] * 2
    assert a.hits == before + 2
    enforced = result.enforced["network_access"]
    assert "network_mode none" in enforced and "egress proxy" in enforced
    assert f"only 127.0.0.1:{a.port}" in enforced
    allowed = audit_records(sandbox.manager, "network", allowed=True,
                            destination=f"127.0.0.1:{a.port}")
    assert {r["protocol"] for r in allowed} >= {"http", "socks5"}
    assert all(r["user_id"] == "student" and r["bytes_received"] > 0 for r in allowed)


async def test_unlisted_port_is_refused_naming_the_allow_list(sandbox, servers):
    a, b = servers
    before = b.hits
    result = await run(sandbox, f"""
        import socket, urllib.request, urllib.error
        out = {{}}
        try:
            urllib.request.urlopen("http://127.0.0.1:{b.port}/", timeout=10)
        except urllib.error.HTTPError as exc:
            out["urllib"] = f"{{exc.code}} {{exc.read().decode()}}"
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
    assert "Permission denied" in out["socket"] and allow in out["socket"]
    assert b.hits == before
    records = denied(sandbox, f"127.0.0.1:{b.port}")
    assert {r["protocol"] for r in records} >= {"http", "socks5"}
    assert all(r["user_id"] == "student" for r in records)


@pytest.mark.parametrize("name", CONTAINER_BYPASSES)
async def test_bypass_attempts_are_refused_and_audited(sandbox, servers, name):
    a, b = servers
    code, destination = (text.format(a=a.port, b=b.port) for text in BYPASSES[name])
    before = (a.hits, b.hits)
    result = await run(sandbox, f"""
        import socket, urllib.request, urllib.error
        try:
            {code}
            result = "not refused"
        except urllib.error.HTTPError as exc:
            result = f"{{exc.code}} {{exc.read().decode()}}"
        except OSError as exc:
            result = f"{{type(exc).__name__}}: {{exc}}"
        """, listed(servers, f"internal.test:{b.port}"))
    assert result.success, result.error
    assert "Permission denied" in result["result"], result["result"]
    assert f"network_access allows only 127.0.0.1:{a.port}" in result["result"]
    if name == "redirect from A to B":
        assert a.hits == before[0] + 1 and b.hits == before[1]
    else:
        assert (a.hits, b.hits) == before
    records = denied(sandbox, destination)
    assert records, f"no denial audited for {destination}"
    assert records[-1]["user_id"] == "student" and "allows only" in records[-1]["reason"]


async def test_raw_sockets_in_the_container_reach_nothing_but_the_proxy(sandbox, servers):
    """Undo the shim (the socket API's original connect): the container has no route out; the
    only host object in it is the proxy's socket, which wants its key."""
    a, b = servers
    ctx = sandbox.manager.authorize(context(listed(servers)), "execute",
                                    sandbox_type="container")
    path, _key = sandbox.egress.endpoint_for(ctx)
    before = (a.hits, b.hits)
    result = await run(sandbox, f"""
        import os, socket
        from agenticraft.jail import egress_shim
        out = {{"dir": sorted(os.listdir({os.path.dirname(path)!r}))}}
        for port in ({a.port}, {b.port}):
            s = socket.socket()
            s.settimeout(5)
            out[str(port)] = egress_shim._original_connect_ex(s, ("127.0.0.1", port))
        u = socket.socket(socket.AF_UNIX)
        u.connect({path!r})
        u.sendall(b"CONNECT 127.0.0.1:{a.port} HTTP/1.1\\r\\n\\r\\n")
        out["keyless"] = u.recv(100).decode()
        result = out
        """, listed(servers))
    assert result.success, result.error
    out = result["result"]
    assert out["dir"] == ["proxy.sock"]
    assert out[str(a.port)] != 0 and out[str(b.port)] != 0  # ECONNREFUSED: an empty loopback
    assert out["keyless"] == ""
    assert (a.hits, b.hits) == before
    assert audit_records(sandbox.manager, "network", protocol="key", allowed=False)


async def test_false_reaches_nothing(sandbox, servers):
    """Not the servers, and not the proxy of the same user's allow-list: its socket is bound
    into that list's container only."""
    a, b = servers
    before = (a.hits, b.hits)
    listed_ctx = sandbox.manager.authorize(context(listed(servers)), "execute",
                                           sandbox_type="container")
    path, _key = sandbox.egress.endpoint_for(listed_ctx)
    result = await run(sandbox, f"""
        import os, socket, urllib.request
        out = ["HTTP_PROXY" in os.environ, os.path.exists({path!r})]
        for port in ({a.port}, {b.port}):
            for attempt in (lambda: urllib.request.urlopen(f"http://127.0.0.1:{{port}}/",
                                                           timeout=5),
                            lambda: socket.create_connection(("127.0.0.1", port), timeout=5)):
                try:
                    attempt()
                    out.append("reached")
                except OSError as exc:
                    out.append(type(exc).__name__)
        result = out
        """, False)
    assert result.success, result.error
    assert result["result"][:2] == [False, False]
    assert "reached" not in result["result"]
    assert (a.hits, b.hits) == before
    assert "container without network (network_mode none)" in result.enforced["network_access"]


async def test_true_is_the_hosts_network_as_in_the_process_sandbox(sandbox, servers):
    """network_access=True means the host's network for every sandbox type (the engine's own
    networks are not the host's, and there may be none: dockerd --bridge=none)."""
    a, _ = servers
    before = len(audit_records(sandbox.manager, "network"))
    result = await run(sandbox, FETCH_BOTH_WAYS.format(port=a.port), True)
    assert result.success, result.error
    assert result["result"] == ["hello from A"] * 2
    assert "the host's network" in result.enforced["network_access"]
    assert "network_mode host" in result.enforced["network_access"]
    assert len(audit_records(sandbox.manager, "network")) == before  # not through the proxy


async def test_the_container_gets_only_the_proxy_socket(sandbox, servers, engine):
    """What the engine really set up: no network, and of the proxy only its socket, read-only."""
    ctx = sandbox.manager.authorize(context(listed(servers)), "execute",
                                    sandbox_type="container")
    supervisor = await sandbox.supervisor_for(ctx)
    path, _key = sandbox.egress.endpoint_for(ctx)
    attrs = engine.containers.get(supervisor.zygote.container.id).attrs
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts[path]["Source"] == path and mounts[path]["RW"] is False
    assert os.path.dirname(path) not in mounts  # the socket alone, not its directory
    report = sandbox.doctor()
    limits = next(entry["limits"] for entry in report.values()
                  if entry["container"] == supervisor.zygote.container.name)
    assert "egress proxy" in limits["network_access"]


async def test_a_session_keeps_its_way_out_across_rollbacks(sandbox, servers):
    a, _ = servers
    ctx = sandbox.manager.authorize(context(listed(servers)), "execute",
                                    sandbox_type="container")
    fetch = (f"import urllib.request\nlast = urllib.request.urlopen("
             f"'http://127.0.0.1:{a.port}/', timeout=10).read()")
    async with sandbox.session(ctx) as session:
        assert (await session.run(fetch)).success
        crashed = await session.run("import os\nos._exit(1)")
        assert not crashed.success  # rolled back: the checkpoint relays again
        again = await session.run(fetch + "\nresult = last.decode()")
        assert again["result"] == "hello from A"


async def test_allow_list_under_the_engines_default_seccomp(tmp_path, servers, engine):
    """Docker's default seccomp refuses user namespaces, so workers get no network namespace of
    their own: the container's (network_mode none) is the private one, and the list holds.
    (Podman's default profile allows them: there the workers make their own, as on a host.)"""
    from agenticraft.sandbox.container import ContainerSandbox
    from agenticraft.sandbox.container_engine import is_podman

    a, b = servers
    manager = make_manager(tmp_path, egress_resolver=StaticResolver(HOSTS))
    box = ContainerSandbox(manager, seccomp="default")
    manager._sandboxes[box.sandbox_type] = box
    try:
        result = await run(box, f"""
            import socket, urllib.request, urllib.error
            out = [urllib.request.urlopen("http://127.0.0.1:{a.port}/", timeout=10).read().decode()]
            try:
                socket.create_connection(("127.0.0.1", {b.port}), timeout=10)
            except OSError as exc:
                out.append(str(exc))
            result = out
            """, listed(servers))
        assert result.success, result.error
        assert result["result"][0] == "hello from A"
        assert f"network_access allows only 127.0.0.1:{a.port}" in result["result"][1]
        supervisor = await box.supervisor_for(manager.authorize(
            context(listed(servers)), "execute", sandbox_type="container"))
        own = supervisor.mechanisms["namespaces"]["active"]
        assert own is is_podman(engine)
        enforced = result.enforced["network_access"]
        assert "network_mode none" in enforced and "egress proxy" in enforced
        assert ("the container's network namespace (network_mode none) has no other route"
                in enforced) is not own
        assert denied(box, f"127.0.0.1:{b.port}")
    finally:
        await box.close()


@pytest.mark.parametrize("value, container", [
    ("127.0.0.1:80", "container without network (network_mode none); the host egress proxy's "
                     "socket alone is bound into it (read-only)"),
    ("false", "container without network (network_mode none)"),
])
def test_doctor_says_what_a_container_gets(value, container):
    import json
    import subprocess
    import sys

    env = {**os.environ, "AGENTICRAFT_DEFAULT_NETWORK_ACCESS": value}
    out = subprocess.run([sys.executable, "-m", "agenticraft_kernel", "doctor", "--json"],
                         capture_output=True, text=True, check=True, env=env).stdout
    net = json.loads(out)["network"]
    assert net["in_container"] == container
    text = subprocess.run([sys.executable, "-m", "agenticraft_kernel", "doctor"],
                          capture_output=True, text=True, check=True, env=env).stdout
    assert f"in a container     {container}" in text
