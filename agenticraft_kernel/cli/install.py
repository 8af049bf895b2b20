"""``python -m agenticraft_kernel install``: install the kernelspec like ``python -m ipykernel
install`` does (same ``--user``/``--sys-prefix``/``--prefix``/``--name``/``--display-name``).

The spec is ``kernelspec/kernel.json`` plus its logos, with ``argv[0]`` set to this interpreter.
Options that go into the spec (``--sandbox-type``, ``--policy``, ``--env``) are requests like any
other setting: the administrator's ``/etc/agenticraft/policy.toml`` still caps them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KERNEL_NAME = "agenticraft-secure"
SPEC_FILES = ("kernel.json", "logo-32x32.png", "logo-64x64.png", "logo-svg.svg")


def spec_dir() -> Path:
    """The shipped kernelspec: ``agenticraft_kernel/kernelspec`` (package data, one place)."""
    candidate = Path(__file__).resolve().parents[1] / "kernelspec"
    if (candidate / "kernel.json").is_file():
        return candidate
    raise FileNotFoundError("the AgentiCraft Secure kernelspec (kernel.json and logos) is "
                            "missing from this installation")


def offers_debugger(python: str, sandbox_type: str | None) -> bool:
    """The debugger runs in the session's worker: not in restricted kernels, and only with
    debugpy in the kernel's environment (checked for this interpreter; another one is
    assumed to have it)."""
    if sandbox_type == "restricted":
        return False
    if python != sys.executable:
        return True
    import importlib.util
    return importlib.util.find_spec("debugpy") is not None


def kernel_spec(*, python: str = sys.executable, display_name: str | None = None,
                sandbox_type: str | None = None, policy_files: Sequence[str] = (),
                env: dict[str, str] | None = None) -> dict[str, Any]:
    spec = json.loads((spec_dir() / "kernel.json").read_text())
    argv = [python, *spec["argv"][1:]]
    if sandbox_type:
        argv.append(f"--SecureKernel.sandbox_type={sandbox_type}")
    if policy_files:
        paths = ", ".join(json.dumps(str(Path(p).resolve())) for p in policy_files)
        argv.append(f"--SecureKernel.policy_files=[{paths}]")
    spec["argv"] = argv
    # JupyterLab enables its debugger toggle from this field alone (kernel_info then says
    # whether this sandbox can hold it; requests fail with the reason when it cannot).
    spec.setdefault("metadata", {})["debugger"] = offers_debugger(python, sandbox_type)
    if display_name:
        spec["display_name"] = display_name
    if env:
        spec["env"] = dict(env)
    return spec


def write_kernel_spec(dest: Path, **options: Any) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    source = spec_dir()
    for name in SPEC_FILES[1:]:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
    (dest / "kernel.json").write_text(json.dumps(kernel_spec(**options), indent=2) + "\n")
    return dest


def install(*, user: bool = False, prefix: str | None = None, name: str = KERNEL_NAME,
            **options: Any) -> str:
    """Install through jupyter_client's KernelSpecManager; returns the installed directory."""
    from jupyter_client.kernelspec import KernelSpecManager
    with tempfile.TemporaryDirectory() as tmp:
        path = write_kernel_spec(Path(tmp) / name, **options)
        return str(KernelSpecManager().install_kernel_spec(str(path), kernel_name=name,
                                                           user=user, prefix=prefix))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true",
                       help="install for the current user instead of system-wide")
    where.add_argument("--sys-prefix", action="store_true",
                       help=f"install into sys.prefix ({sys.prefix}), e.g. a virtualenv")
    where.add_argument("--prefix", help="install into PREFIX/share/jupyter/kernels")
    parser.add_argument("--name", default=KERNEL_NAME,
                        help=f"kernelspec name (default {KERNEL_NAME!r})")
    parser.add_argument("--display-name", help="name shown in the launcher")
    parser.add_argument("--sandbox-type", choices=("process", "restricted", "container"),
                        help="run cells in this sandbox (the policy must allow it)")
    parser.add_argument("--policy", action="append", default=[], metavar="FILE",
                        help="extra policy file; can only tighten the system policy")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for the kernel, e.g. AGENTICRAFT_DEFAULT_MEMORY_MB=256")


def run_install(args: argparse.Namespace) -> int:
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"--env expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        env[key] = value
    prefix = sys.prefix if args.sys_prefix else args.prefix
    dest = install(user=args.user, prefix=prefix, name=args.name,
                   display_name=args.display_name, sandbox_type=args.sandbox_type,
                   policy_files=args.policy, env=env or None)
    print(f"Installed kernelspec {args.name} in {dest}")
    return 0
