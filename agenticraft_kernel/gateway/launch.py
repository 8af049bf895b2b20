"""Inside the kernel's container: start the secure kernel for Enterprise Gateway.

EG's container process proxies start a container and wait for the kernel inside to call back
with its connection info (``handshake``). EG's own launcher (``launch_ipykernel.py``) does that
for a stock IPython kernel; this does it for ``SecureKernelApp``, so every cell runs in the
sandbox inside the container. Started as the gateway image's command::

    python3 -I -c "import sys; sys.path.insert(0, '/opt/agenticraft'); \
        from agenticraft_kernel.gateway.launch import main; main()"

with EG's values in the environment (``KERNEL_ID``, ``RESPONSE_ADDRESS``, ``PUBLIC_KEY``,
``PORT_RANGE``) and the per-kernel requests EG passes on as ``KERNEL_*`` values:
``KERNEL_USERNAME`` (the sandbox's user) and ``KERNEL_<LIMIT>`` (e.g. ``KERNEL_MEMORY_MB``,
``KERNEL_TIMEOUT_SECONDS``), read like ``AGENTICRAFT_DEFAULT_<LIMIT>``: requests that the
image's policy still caps.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from agenticraft.wire.limits import LIMIT_NAMES
from agenticraft_kernel.gateway import handshake

REQUIRED = ("KERNEL_ID", "RESPONSE_ADDRESS", "PUBLIC_KEY")
CHANNELS = ("shell", "iopub", "stdin", "hb", "control")


def limit_requests(env: Mapping[str, str]) -> dict[str, str]:
    """``KERNEL_<LIMIT>`` -> ``AGENTICRAFT_DEFAULT_<LIMIT>`` (the kernel's limit requests)."""
    return {f"AGENTICRAFT_DEFAULT_{name.upper()}": env[f"KERNEL_{name.upper()}"]
            for name in LIMIT_NAMES if f"KERNEL_{name.upper()}" in env}


def kernel_argv(env: Mapping[str, str], connection_file: str,
                ports: list[int] | None) -> list[str]:
    """SecureKernelApp's arguments: bind on every address of the container (EG connects to
    the container's address), the given ports (EG's port range) or any, EG's user."""
    argv = ["-f", connection_file, "--ip=0.0.0.0"]
    for channel, port in zip(CHANNELS, ports or (), strict=False):
        argv.append(f"--{channel}={port}")
    user = env.get("KERNEL_USERNAME", "").strip()
    if user:
        argv.append(f"--SecureKernel.user_id={user}")
    return argv


def pick_ports(port_range: tuple[int, int]) -> list[int] | None:
    """Five ports within EG's range (bound and released, as EG's launcher does); none for any
    port (the kernel binds port 0 itself, which cannot collide)."""
    if not port_range[1]:
        return None
    sockets = [handshake.bind_in_range(port_range) for _ in CHANNELS]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def main(env: Mapping[str, str] | None = None) -> None:
    env = dict(os.environ if env is None else env)
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        sys.exit(f"gateway launcher: {', '.join(missing)} missing from the environment "
                 "(Enterprise Gateway's container process proxies set them)")
    kernel_id = env["KERNEL_ID"]
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", kernel_id):
        sys.exit(f"gateway launcher: KERNEL_ID {kernel_id!r} is not a kernel id")
    port_range = handshake.parse_port_range(env.get("PORT_RANGE"))
    os.environ.update(limit_requests(env))

    from agenticraft_kernel.parent.app import SecureKernelApp

    connection_file = str(Path(tempfile.gettempdir()) / f"kernel-{kernel_id}.json")
    app = SecureKernelApp.instance()
    app.initialize(kernel_argv(env, connection_file, pick_ports(port_range)))
    connection = json.loads(Path(app.abs_connection_file).read_text())
    comm = handshake.bind_in_range(port_range)
    handshake.serve_requests(comm, lambda signum: os.kill(os.getpid(), signum))
    info = handshake.connection_payload(connection, comm.getsockname()[1], kernel_id)
    handshake.send_connection_info(env["RESPONSE_ADDRESS"],
                                   handshake.encrypt_payload(info, env["PUBLIC_KEY"]))
    app.start()


if __name__ == "__main__":
    main()
