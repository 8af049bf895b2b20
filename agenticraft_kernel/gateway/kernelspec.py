"""``python -m agenticraft_kernel gateway-spec DEST``: write a kernelspec directory for Jupyter
Enterprise Gateway (put it in a kernels directory EG reads, e.g. EG's
``/usr/local/share/jupyter/kernels/agenticraft_docker``).

It holds ``kernel.json`` (``metadata.process_proxy`` = EG's ``DockerProcessProxy`` or
``DockerSwarmProcessProxy`` with the kernel image), ``scripts/launch_docker.py`` (run by EG)
and ``scripts/seccomp.json`` (the project's container seccomp profile), plus the logos.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from agenticraft_kernel.cli.install import SPEC_FILES, spec_dir

PROXIES = {
    "docker": "enterprise_gateway.services.processproxies.docker_swarm.DockerProcessProxy",
    "swarm": "enterprise_gateway.services.processproxies.docker_swarm.DockerSwarmProcessProxy",
}
DISPLAY = {"docker": "AgentiCraft Secure on Docker",
           "swarm": "AgentiCraft Secure on Docker Swarm"}


def default_image() -> str:
    from agenticraft import __version__
    return f"agenticraft-eg-kernel:{__version__}"


def gateway_kernel_spec(mode: str, image: str, display_name: str | None = None,
                        env: dict[str, str] | None = None) -> dict[str, Any]:
    """EG's ``kernel.json``: ``python`` is EG's own interpreter (jupyter_client substitutes
    it), ``{resource_dir}`` this kernelspec's directory; interrupts go over EG's comm port."""
    if mode not in PROXIES:
        raise ValueError(f"mode must be one of {', '.join(PROXIES)}, not {mode!r}")
    return {
        "argv": ["python", "{resource_dir}/scripts/launch_docker.py",
                 "--kernel-id", "{kernel_id}", "--port-range", "{port_range}",
                 "--response-address", "{response_address}", "--public-key", "{public_key}"],
        "display_name": display_name or DISPLAY[mode],
        "language": "python",
        "interrupt_mode": "signal",
        "env": dict(env or {}),
        "metadata": {"debugger": False,
                     "process_proxy": {"class_name": PROXIES[mode],
                                       "config": {"image_name": image}}},
    }


def write_gateway_kernel_spec(dest: Path, mode: str = "docker", image: str | None = None,
                              display_name: str | None = None,
                              env: dict[str, str] | None = None) -> Path:
    from agenticraft.sandbox.container import SECCOMP_PROFILE

    scripts = dest / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for name in SPEC_FILES[1:]:
        shutil.copyfile(spec_dir() / name, dest / name)
    shutil.copyfile(Path(__file__).with_name("launch_docker.py"), scripts / "launch_docker.py")
    shutil.copyfile(SECCOMP_PROFILE, scripts / "seccomp.json")
    spec = gateway_kernel_spec(mode, image or default_image(), display_name, env)
    (dest / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
    return dest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dest", type=Path, help="the kernelspec directory to write")
    parser.add_argument("--mode", choices=sorted(PROXIES), default="docker",
                        help="EG's DockerProcessProxy (docker) or DockerSwarmProcessProxy")
    parser.add_argument("--image", help=f"the kernel image (default {default_image()})")
    parser.add_argument("--display-name", help="name shown in the launcher")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="put NAME=VALUE into the spec's env, e.g. KERNEL_MEMORY_MB=256")


def run(args: argparse.Namespace) -> int:
    env = dict(item.split("=", 1) for item in args.env)
    path = write_gateway_kernel_spec(args.dest, args.mode, args.image, args.display_name, env)
    print(f"Wrote the {args.mode} gateway kernelspec to {path}")
    return 0
