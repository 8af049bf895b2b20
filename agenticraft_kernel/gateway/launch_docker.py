"""Start the secure kernel's container for Jupyter Enterprise Gateway (``DockerProcessProxy``
or ``DockerSwarmProcessProxy``).

EG runs this script (its kernelspec ``argv``) with *its own* interpreter and Docker SDK, so it
imports only the standard library and ``docker``; ``python -m agenticraft_kernel gateway-spec``
copies it into the kernelspec with the project's seccomp profile next to it. It does what EG's
own ``launch_docker.py`` does (a container or a swarm service labelled ``kernel_id`` on
``EG_DOCKER_NETWORK``, named ``<KERNEL_USERNAME>-<kernel id>``), with what our kernel needs:

- the command is our launcher (``agenticraft_kernel.gateway.launch``), not EG's;
- the container gets only the kernel's values (EG's protocol values, ``KERNEL_*`` and
  ``AGENTICRAFT_*``, ``HOME=/tmp``), never the rest of EG's environment;
- per-kernel limits as EG passes them: ``KERNEL_MEMORY_MB``, ``KERNEL_MAX_PROCESSES`` and
  ``KERNEL_CPU_PERCENT`` set the container's ceilings (the worker's limit plus room for the
  kernel process and the sandbox zygote), and the launcher inside turns every
  ``KERNEL_<LIMIT>`` into the kernel's own request for the sandbox inside;
- hardening: every capability dropped, read-only root with a size-limited ``/tmp``, an init
  process, and in Docker mode ``no-new-privileges`` plus the project's seccomp profile (which,
  unlike Docker's default, lets the sandbox inside create its user and network namespaces).
  A swarm service's spec has neither in the Docker 20.10 API (1.41) this is tested with: there
  the container runs with Docker's default profile and the kernel's ``doctor`` reports
  namespaces off.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECCOMP_PROFILE = HERE / "seccomp.json"
COMMAND = ["python3", "-I", "-c",
           "import sys; sys.path.insert(0, '/opt/agenticraft'); "
           "from agenticraft_kernel.gateway.launch import main; main()"]
#: Memory of the kernel process and the sandbox's zygote, above the worker's own limit.
KERNEL_OVERHEAD_MB = 384
#: Processes of the kernel and the zygote, above the worker's own limit.
KERNEL_OVERHEAD_PIDS = 64
DEFAULTS = {"KERNEL_MEMORY_MB": "512", "KERNEL_MAX_PROCESSES": "32",
            "KERNEL_CPU_PERCENT": "50", "KERNEL_MAX_FILE_SIZE_MB": "10"}
LABEL = "org.agenticraft.gateway"


def container_env(env: dict[str, str], kernel_id: str, port_range: str,
                  response_address: str, public_key: str) -> dict[str, str]:
    """What the kernel's container sees: EG's protocol values and the kernel's requests."""
    kept = {k: v for k, v in env.items()
            if k.startswith(("KERNEL_", "AGENTICRAFT_")) and k != "KERNEL_LAUNCH_TIMEOUT"}
    return {**kept, "KERNEL_ID": kernel_id, "PORT_RANGE": port_range or "0..0",
            "RESPONSE_ADDRESS": response_address, "PUBLIC_KEY": public_key, "HOME": "/tmp"}


def number(env: dict[str, str], name: str) -> float:
    value = env.get(name) or DEFAULTS[name]
    try:
        result = float(value)
    except ValueError:
        sys.exit(f"launch_docker: {name}={value!r} is not a number")
    if result <= 0:
        sys.exit(f"launch_docker: {name}={value!r} must be positive")
    return result


def ceilings(env: dict[str, str]) -> dict[str, int]:
    """The container's ceilings from the kernel's requests."""
    memory = int(number(env, "KERNEL_MEMORY_MB")) + KERNEL_OVERHEAD_MB
    return {"memory_bytes": memory * 1024 * 1024,
            "pids": int(number(env, "KERNEL_MAX_PROCESSES")) + KERNEL_OVERHEAD_PIDS,
            # at least one CPU for the kernel itself; the worker's share is enforced inside
            "nano_cpus": int(max(1.0, number(env, "KERNEL_CPU_PERCENT") / 100) * 1e9),
            "tmp_bytes": max(128, 4 * int(number(env, "KERNEL_MAX_FILE_SIZE_MB"))) << 20}


def launch(kernel_id: str, port_range: str, response_address: str, public_key: str,
           env: dict[str, str]) -> None:
    from docker.client import DockerClient

    image = env.get("KERNEL_IMAGE")
    if not image:
        sys.exit("launch_docker: KERNEL_IMAGE missing (the kernelspec's image_name)")
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", kernel_id):
        sys.exit(f"launch_docker: {kernel_id!r} is not a kernel id")
    user = re.sub(r"[^A-Za-z0-9_.-]", "", env.get("KERNEL_USERNAME", ""))[:64]
    name = f"{user}-{kernel_id}" if user else f"kernel-{kernel_id}"
    labels = {"kernel_id": kernel_id, "component": "kernel", "app": "enterprise-gateway",
              LABEL: "1"}
    network = env.get("EG_DOCKER_NETWORK", "bridge")
    uid_gid = f"{env.get('KERNEL_UID', '10001')}:{env.get('KERNEL_GID', '10001')}"
    limits = ceilings(env)
    environment = container_env(env, kernel_id, port_range, response_address, public_key)
    client = DockerClient.from_env()
    if env.get("EG_DOCKER_MODE", "swarm") == "swarm":
        from docker.types import EndpointSpec, Mount, Resources, RestartPolicy
        client.services.create(
            image, command=COMMAND, name=name, env=environment, labels=labels,
            container_labels=labels, networks=[network], user=uid_gid, workdir="/tmp",
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            restart_policy=RestartPolicy(condition="none"),
            resources=Resources(mem_limit=limits["memory_bytes"], cpu_limit=limits["nano_cpus"]),
            mounts=[Mount("/tmp", "", type="tmpfs", tmpfs_size=limits["tmp_bytes"])],
            read_only=True, init=True, cap_drop=["ALL"])
        return
    client.containers.run(
        image, COMMAND, name=name, hostname=name[:63], environment=environment, labels=labels,
        network=network, user=uid_gid, working_dir="/tmp", detach=True, auto_remove=True,
        init=True, read_only=True, tmpfs={"/tmp": f"size={limits['tmp_bytes']}"},
        cap_drop=["ALL"], mem_limit=limits["memory_bytes"], memswap_limit=limits["memory_bytes"],
        pids_limit=limits["pids"], nano_cpus=limits["nano_cpus"],
        security_opt=["no-new-privileges:true", f"seccomp={SECCOMP_PROFILE.read_text()}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-id", required=True)
    parser.add_argument("--port-range", default="0..0")
    parser.add_argument("--response-address", required=True)
    parser.add_argument("--public-key", required=True)
    args = parser.parse_args(argv)
    launch(args.kernel_id, args.port_range, args.response_address, args.public_key,
           dict(os.environ))


if __name__ == "__main__":
    main()
