"""Command line: ``python -m agenticraft_kernel doctor|install|...``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agenticraft_kernel",
                                     description="AgentiCraft Secure for Jupyter")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="show which protections this host enforces")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    from agenticraft_kernel.cli.install import add_arguments
    add_arguments(sub.add_parser("install", help="install the AgentiCraft Secure kernelspec"))
    from agenticraft_kernel.gateway import kernelspec
    kernelspec.add_arguments(sub.add_parser(
        "gateway-spec", help="write a kernelspec for Jupyter Enterprise Gateway's Docker proxies"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        from agenticraft_kernel.cli.doctor import run_doctor
        return run_doctor(as_json=args.json)
    if args.command == "install":
        from agenticraft_kernel.cli.install import run_install
        return run_install(args)
    if args.command == "gateway-spec":
        from agenticraft_kernel.gateway.kernelspec import run
        return run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
