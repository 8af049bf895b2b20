"""The container sandbox as the specification's users meet it: selected by name or alias
everywhere a sandbox type is, the spec's examples with sandbox_type="container", the
policy's allow-list and image list, an honest SandboxUnavailable, and the container-level
settings really applied (checked with the engine's own inspect)."""

from __future__ import annotations

import pytest

from agenticraft.security import SecurityContext
from agenticraft.security.policy import Policy, default_container_image
from agenticraft.wire.errors import PermissionDenied, SandboxUnavailable

from helpers import make_manager, plain_ulimits

pytestmark = pytest.mark.timeout(180)


async def test_spec_quick_start_with_container(isolated_agent_state, engine):
    from agenticraft import Agent

    agent = Agent(name="SecureBot", sandbox_enabled=True, sandbox_type="container",
                  memory_limit=256, cpu_limit=50.0)
    code = "result = sum([1, 2, 3, 4, 5])"
    result = await agent.execute_secure(code)
    assert result == {"result": 15}
    assert result.sandbox_type == "container"


async def test_spec_sandbox_manager_example_with_docker_alias(tmp_path, engine):
    from agenticraft.sandbox.types import SandboxType
    from agenticraft.security import SandboxManager

    manager = SandboxManager(policy=Policy(), audit_log=tmp_path / "audit.jsonl",
                             working_dir=tmp_path)
    await manager.initialize()
    assert SandboxType.CONTAINER in manager.available_types()
    try:
        sandbox = await manager.get_sandbox("docker")
        assert sandbox.sandbox_type is SandboxType.CONTAINER
        result = await sandbox.execute_code(code="print('Hello')",
                                            context=SecurityContext(user_id="custom"))
        assert result.success and result.stdout == "Hello\n"
        assert "container" in result.enforced["network_access"]
    finally:
        await manager.close()


async def test_default_sandbox_from_environment(tmp_path, monkeypatch, engine):
    from agenticraft.sandbox import SandboxManager
    from agenticraft.security.config import load_settings

    monkeypatch.setenv("AGENTICRAFT_DEFAULT_SANDBOX", "docker")
    settings = load_settings(env={"AGENTICRAFT_DEFAULT_SANDBOX": "docker"})
    assert settings.default_sandbox_type == "container"
    manager = SandboxManager(policy=Policy(), settings=settings,
                             audit_log=tmp_path / "audit.jsonl", working_dir=tmp_path)
    try:
        sandbox = await manager.get_sandbox()
        result = await sandbox.execute_code("import os\nuid = os.getuid()",
                                            SecurityContext("alice"))
        assert result["uid"] == 10001  # the image's unprivileged user, not root
    finally:
        await manager.close()


async def test_policy_can_refuse_the_container_sandbox(tmp_path):
    policy = Policy.from_dict({"sandbox": {"allowed_types": ["process", "restricted"]}})
    manager = make_manager(tmp_path, policy)
    with pytest.raises(PermissionDenied, match="container"):
        manager.authorize(SecurityContext("a", sandbox_type="docker"), "execute")
    allowed = Policy.from_dict({"sandbox": {"allowed_types": ["docker"],
                                            "default_type": "docker"}})
    assert allowed.allowed_sandbox_types == frozenset({"container"})


async def test_policy_limits_the_images(tmp_path):
    policy = Policy.from_dict({"sandbox": {"container_image": "site/python:1",
                                           "allowed_images": ["site/python:1"]}})
    manager = make_manager(tmp_path, policy)
    ctx = manager.authorize(SecurityContext("a", sandbox_type="container"), "execute")
    assert ctx.image == "site/python:1"
    with pytest.raises(PermissionDenied, match="image 'evil/root:latest'"):
        manager.authorize(SecurityContext("a", sandbox_type="container",
                                          image="evil/root:latest"), "execute")
    assert manager.authorize(SecurityContext("a"), "execute").image is None  # process


async def test_missing_engine_says_what_and_how(tmp_path, monkeypatch):
    from agenticraft.sandbox import container_engine

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    missing = container_engine.probe()
    assert missing and "no socket" in missing[0] and "dockerd" in missing[0]
    manager = make_manager(tmp_path)
    with pytest.raises(SandboxUnavailable) as info:
        await manager.get_sandbox("container")
    assert "container engine" in str(info.value) and "podman" in str(info.value)


async def test_missing_image_names_the_build_script(tmp_path, engine):
    from agenticraft.sandbox.container import ContainerSandbox

    sandbox = ContainerSandbox(make_manager(tmp_path), image="agenticraft-no-such-image:0")
    with pytest.raises(SandboxUnavailable, match=r"build-container-image\.sh"):
        await sandbox.start()
    await sandbox.close()


@pytest.mark.parametrize("content", ["no python here", "python3 without the package"])
async def test_image_without_python_or_package_is_reported(tmp_path, engine, content):
    """A custom image that cannot run the zygote: what is wrong, and what an image needs."""
    import io
    import json
    import tarfile

    from agenticraft.sandbox.container import ContainerSandbox

    if content == "no python here":
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            info = tarfile.TarInfo("README")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content.encode()))
        answer = engine.api.import_image_from_data(data.getvalue())
        # tagged separately: Podman 4.3's compatible import ignores the tag
        image_id = json.loads(answer.splitlines()[-1])["status"]
        engine.images.get(image_id).tag("agenticraft-test-broken", "1")
    else:  # the default image without our package
        container = engine.containers.create(default_container_image(), user="0",
                                             ulimits=plain_ulimits(engine),
                                             command=["rm", "-rf", "/opt/agenticraft/agenticraft"])
        container.start()
        container.wait()
        container.commit("agenticraft-test-broken", "1")
        container.remove()
    try:
        manager = make_manager(tmp_path)
        sandbox = ContainerSandbox(manager, image="agenticraft-test-broken:1")
        ctx = manager.authorize(SecurityContext("a", sandbox_type="container",
                                                image="agenticraft-test-broken:1"), "execute")
        with pytest.raises(SandboxUnavailable) as info:
            await sandbox.run("x = 1", ctx)
        assert "agenticraft-test-broken:1" in str(info.value)
        assert "/opt/agenticraft" in str(info.value)
        await sandbox.close()
    finally:
        engine.images.remove("agenticraft-test-broken:1", force=True)


async def test_container_settings_come_from_the_context(container_sandbox, engine):
    from agenticraft.sandbox.container_engine import is_podman

    ctx = container_sandbox.manager.authorize(SecurityContext(
        "inspect", resource_limits={"memory_mb": 200, "cpu_percent": 25, "max_processes": 8}),
        "execute")
    result = await container_sandbox.run("x = 1", ctx)
    assert result.success
    supervisor = await container_sandbox.supervisor_for(ctx)
    attrs = engine.containers.get(supervisor.zygote.container.id).attrs
    host = attrs["HostConfig"]
    assert host["Memory"] == (200 + 128) * 2**20 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 250_000_000
    assert host["PidsLimit"] == 8 + 16
    assert host["ReadonlyRootfs"] is True
    # Podman would add unbounded ones on /run and /var/tmp: bounded ones are given instead
    extra = {"/run", "/var/tmp"} if is_podman(engine) else set()
    assert set(host["Tmpfs"]) == {"/tmp", "/dev/shm"} | extra
    assert host["CapDrop"] == ["ALL"] or is_podman(engine)  # Podman lists each one dropped
    assert not host["CapAdd"]
    with open(f"/proc/{supervisor.zygote.proc.pid}/status") as fh:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"  # what the engine applied
    assert host["NetworkMode"] == "none"
    # Docker shows the profile itself, Podman the file it was given
    assert {"no-new-privileges:true", "no-new-privileges"} & set(host["SecurityOpt"])
    assert any(o.startswith("seccomp=") and ("AgentiCraft" in o or o.endswith(
        "container_seccomp.json")) for o in host["SecurityOpt"])
    assert attrs["Config"]["User"] == "10001:10001"
    assert attrs["Config"]["Labels"]["org.agenticraft.sandbox"] == "1"


async def test_doctor_inside_matches_what_workers_get(container_sandbox):
    ctx = container_sandbox.manager.authorize(SecurityContext("doc"), "execute")
    result = await container_sandbox.run(
        "import ctypes, os\nuid = os.getuid()\nlibc = ctypes.CDLL(None)\n"
        "seccomp = libc.prctl(21, 0, 0, 0, 0)\nnnp = libc.prctl(39, 0, 0, 0, 0)\n"
        "try:\n    open('/opt/agenticraft/x', 'w')\nexcept OSError as e:\n    write = e.errno",
        ctx)
    mechanisms = container_sandbox.doctor()
    [(_spec, report)] = [item for item in mechanisms.items()
                         if item[1]["mechanisms"] is (await container_sandbox.supervisor_for(
                             ctx)).mechanisms]
    assert result["uid"] == 10001
    assert result["seccomp"] == 2 and result["nnp"] == 1  # filter mode; no_new_privs
    assert result["write"] in (13, 30)  # EACCES (Landlock) or EROFS (read-only root)
    assert report["mechanisms"]["seccomp"]["active"]
    assert "inside: " in report["limits"]["memory_mb"]
    assert "RLIMIT_NPROC" in report["limits"]["max_processes"]  # uid 10001 is not exempt


async def test_dockers_default_seccomp_runs_cells_and_doctor_tells_the_truth(tmp_path, engine):
    """The Enterprise Gateway / Kubernetes case: Docker's default seccomp profile refuses
    unshare(CLONE_NEWUSER). The zygote inside must report namespaces as off (it once claimed
    them, and every execution then failed on unshare), and cells must still run. (Podman's
    default profile allows user namespaces: there they are on, and must work.)"""
    from agenticraft.sandbox.container import ContainerSandbox
    from agenticraft.sandbox.container_engine import is_podman

    manager = make_manager(tmp_path)
    sandbox = ContainerSandbox(manager, seccomp="default")
    try:
        ctx = manager.authorize(SecurityContext("eg", sandbox_type="container"), "execute")
        result = await sandbox.run("import socket\ntry:\n    socket.socket(socket.AF_INET)\n"
                                   "except OSError as e:\n    denied = e.errno\nok = 1", ctx)
        assert result["ok"] == 1 and result["denied"] == 1  # our own seccomp is still there
        supervisor = await sandbox.supervisor_for(ctx)
        namespaces = supervisor.mechanisms["namespaces"]
        if is_podman(engine):
            assert namespaces["active"]
            assert "network namespace" in result.enforced["network_access"]
        else:
            assert not namespaces["active"] and "Operation not permitted" in namespaces["detail"]
            assert "network namespace" not in result.enforced["network_access"]
        assert "container without network" in result.enforced["network_access"]
    finally:
        await sandbox.close()


async def test_agent_user_context_can_name_an_allowed_image(isolated_agent_state, tmp_path):
    """The image is a request like the rest of user_context: the policy's list decides."""
    from agenticraft import Agent
    from agenticraft.agents.tools import set_default_manager

    policy = Policy.from_dict({"sandbox": {"allowed_images": [default_container_image()]}})
    set_default_manager(make_manager(tmp_path, policy))
    agent = Agent(name="img", sandbox_type="container")
    result = await agent.execute_secure("result = 3", user_context={
        "user_id": "alice", "image": default_container_image()})
    assert result == {"result": 3}
    with pytest.raises(PermissionDenied, match="image"):
        await agent.execute_secure("result = 3", user_context={
            "user_id": "alice", "image": "evil/root:latest"})


def test_network_access_maps_to_the_same_meaning_as_in_the_process_sandbox():
    """False and a list: no network for the container (a list's proxy socket alone is bound in,
    read-only); True: the host's network, never the engine's own (which may not exist)."""
    from agenticraft.sandbox.container import ContainerSpec

    def spec(network):
        ctx = SecurityContext("a", resource_limits={"network_access": network})
        return ContainerSpec.for_context(ctx, default_container_image())

    sock = "/tmp/agenticraft-egress-x/proxy.sock"
    listed = spec(["127.0.0.1:80"]).create_kwargs("/tmp/h", ["true"], egress_socket=sock)
    assert listed["network_mode"] == "none"
    bound = [m for m in listed["mounts"] if m["Target"] == sock]
    assert bound and bound[0]["Source"] == sock and bound[0]["ReadOnly"] is True
    assert not any(m["Target"] == "/tmp/agenticraft-egress-x" for m in listed["mounts"])
    assert spec(False).create_kwargs("/tmp/h", ["true"])["network_mode"] == "none"
    assert spec(True).create_kwargs("/tmp/h", ["true"])["network_mode"] == "host"
