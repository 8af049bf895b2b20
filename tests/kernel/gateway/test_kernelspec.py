"""``python -m agenticraft_kernel gateway-spec``: the kernelspec EG reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agenticraft.sandbox.container import SECCOMP_PROFILE
from agenticraft_kernel.__main__ import main
from agenticraft_kernel.gateway import kernelspec


@pytest.mark.parametrize("mode, proxy", [("docker", "DockerProcessProxy"),
                                         ("swarm", "DockerSwarmProcessProxy")])
def test_gateway_spec(tmp_path: Path, mode: str, proxy: str) -> None:
    dest = tmp_path / "agenticraft_docker"
    assert main(["gateway-spec", str(dest), "--mode", mode, "--image", "img:1",
                 "--env", "KERNEL_MEMORY_MB=256"]) == 0
    spec = json.loads((dest / "kernel.json").read_text())
    pp = spec["metadata"]["process_proxy"]
    assert pp["class_name"] == f"enterprise_gateway.services.processproxies.docker_swarm.{proxy}"
    assert pp["config"] == {"image_name": "img:1"}
    assert spec["env"] == {"KERNEL_MEMORY_MB": "256"}
    assert spec["argv"][:2] == ["python", "{resource_dir}/scripts/launch_docker.py"]
    assert spec["interrupt_mode"] == "signal"
    script = Path(kernelspec.__file__).with_name("launch_docker.py")
    assert (dest / "scripts" / "launch_docker.py").read_text() == script.read_text()
    assert (dest / "scripts" / "seccomp.json").read_text() == SECCOMP_PROFILE.read_text()
    assert (dest / "logo-64x64.png").is_file()


def test_launch_docker_imports_only_what_egs_environment_has() -> None:
    """EG runs the script with its own interpreter: stdlib and docker only, no agenticraft."""
    import ast
    tree = ast.parse(Path(kernelspec.__file__).with_name("launch_docker.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"agenticraft", "agenticraft_kernel"}
    assert names - {"__future__", "argparse", "os", "re", "sys", "pathlib"} == {"docker"}
