"""``python -m agenticraft_kernel install`` installs the kernelspec as ``python -m ipykernel
install`` does, and ``jupyter kernelspec list`` shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=True)


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env.update(HOME=str(tmp / "home"), JUPYTER_PLATFORM_DIRS="0")
    return env


def test_install_prefix_name_display_name(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    policy = tmp_path / "class.toml"
    policy.write_text("[ceilings]\nmemory_mb = 256\n")
    out = run("-m", "agenticraft_kernel", "install", "--prefix", str(tmp_path / "prefix"),
              "--name", "secure-class", "--display-name", "Secure (class)",
              "--policy", str(policy), "--env", "AGENTICRAFT_DEFAULT_TIMEOUT_SECONDS=20",
              env=env)
    dest = tmp_path / "prefix" / "share" / "jupyter" / "kernels" / "secure-class"
    assert str(dest) in out.stdout
    spec = json.loads((dest / "kernel.json").read_text())
    assert spec["argv"][:4] == [sys.executable, "-P", "-m", "agenticraft_kernel.parent.app"]
    assert "{connection_file}" in spec["argv"]
    assert spec["display_name"] == "Secure (class)"
    assert spec["language"] == "python" and spec["interrupt_mode"] == "signal"
    assert spec["metadata"]["debugger"] is True  # JupyterLab's toggle reads it (debugpy here)
    assert f"--SecureKernel.policy_files=[{json.dumps(str(policy))}]" in spec["argv"]
    assert spec["env"] == {"AGENTICRAFT_DEFAULT_TIMEOUT_SECONDS": "20"}
    assert {p.name for p in dest.iterdir()} >= {"kernel.json", "logo-32x32.png",
                                                "logo-64x64.png", "logo-svg.svg"}
    env["JUPYTER_PATH"] = str(tmp_path / "prefix" / "share" / "jupyter")
    listed = json.loads(run("-m", "jupyter", "kernelspec", "list", "--json",
                            env=env).stdout)["kernelspecs"]
    assert listed["secure-class"]["spec"]["display_name"] == "Secure (class)"


def test_install_user(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    run("-m", "agenticraft_kernel", "install", "--user", env=env)
    user_dir = tmp_path / "home" / ".local" / "share" / "jupyter" / "kernels"
    spec = json.loads((user_dir / "agenticraft-secure" / "kernel.json").read_text())
    assert spec["display_name"] == "AgentiCraft Secure"
    listed = json.loads(run("-m", "jupyter", "kernelspec", "list", "--json",
                            env=env).stdout)["kernelspecs"]
    assert Path(listed["agenticraft-secure"]["resource_dir"]) == user_dir / "agenticraft-secure"


def test_shipped_kernelspec_matches_installer() -> None:
    shipped = json.loads((REPO / "agenticraft_kernel" / "kernelspec" / "kernel.json").read_text())
    assert shipped["argv"][1:] == ["-P", "-m", "agenticraft_kernel.parent.app", "-f",
                                   "{connection_file}"]


def test_the_spec_offers_the_debugger_only_where_it_can_run() -> None:
    """JupyterLab enables its debugger toggle from ``metadata.debugger`` alone: a restricted
    kernel has no session worker to hold a debugger."""
    from agenticraft_kernel.cli.install import kernel_spec
    assert kernel_spec()["metadata"]["debugger"] is True
    assert kernel_spec(sandbox_type="restricted")["metadata"]["debugger"] is False
