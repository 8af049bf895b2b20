"""The options of ``%%secure``, ``%secure_audit``, ``%secure_status`` and ``%secure_panel``.

One parser serves both places the magics run: the secure kernel's parent (trusted side) and a
stock IPython kernel with ``%load_ext agenticraft_kernel``. It only turns text into a request;
values are validated by the engine (``coerce_limit``, permission names) and compared with
ceilings only by the policy. Every problem becomes one ``UsageError`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import keyword
import re
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError

from agenticraft.security import permissions as perms
from agenticraft.security.audit import EVENT_TYPES
from agenticraft.security.policy import canonical_sandbox_type
from agenticraft.wire.errors import ConfigurationError
from agenticraft.wire.limits import coerce_limit

SANDBOX_CHOICES = ("process", "restricted", "container", "docker")  # docker = container
#: ``%%secure`` option -> resource limit it sets.
LIMIT_OPTIONS = {"timeout": "timeout_seconds", "memory": "memory_mb", "cpu": "cpu_percent",
                 "max_file_size": "max_file_size_mb", "max_output": "max_output_bytes",
                 "max_processes": "max_processes", "network": "network_access",
                 "filesystem": "filesystem_access"}
EMPTY_CELL = "%%secure: the cell is empty; put the code to run below the %%secure line."
SECURE_EPILOG = """\
In the AgentiCraft Secure kernel the options can only tighten the kernel's own limits for this
cell; asking for more is refused, naming the limit, before anything runs. Limits the running
session cannot change (network, filesystem, file size, permissions) and --sandbox restricted
run the cell in a fresh sandbox; use --in/--out to pass variables. In a stock kernel every
%%secure cell runs in a fresh sandbox; --in a,b copies variables in and --out x,y copies results
back (plain data only: None, bool, int, float, str, and lists, tuples and dicts of these)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises one-line ``UsageError``s instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"{self.prog}: invalid options")


@dataclasses.dataclass(frozen=True)
class SecureRequest:
    """What a ``%%secure`` line asks for (still only a request: the policy resolves it)."""

    line: str = ""
    sandbox: str | None = None
    limits: dict[str, Any] = dataclasses.field(default_factory=dict)
    permissions: tuple[str, ...] | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    quiet: bool = False
    help: bool = False
    image: str | None = None  # the container sandbox's image (implies --sandbox container)

    def audit_fields(self) -> dict[str, Any]:
        """The magic's options as they go into the cell's audit record."""
        fields: dict[str, Any] = {"line": self.line[:500], "limits": dict(self.limits)}
        if self.sandbox:
            fields["sandbox"] = self.sandbox
        if self.permissions is not None:
            fields["permissions"] = list(self.permissions)
        if self.inputs:
            fields["in"] = list(self.inputs)
        if self.outputs:
            fields["out"] = list(self.outputs)
        if self.image:
            fields["image"] = self.image
        return fields


@dataclasses.dataclass(frozen=True)
class AuditRequest:
    """``%secure_audit [-n N] [--user U] [--type T] [--verify]``."""

    n: int = 20
    user: str | None = None
    type: str | None = None
    verify: bool = False
    help: bool = False


def _split(prog: str, line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{prog}: cannot read the options ({exc})") from None


def _names(option: str, value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise UsageError(f"%%secure: {option} needs variable names, e.g. {option} a,b")
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
            raise UsageError(f"%%secure: {option}: {name!r} is not a variable name (letters, "
                             "digits and _, not starting with _)")
    return names


def secure_parser() -> _Parser:
    parser = _Parser(prog="%%secure", add_help=False, allow_abbrev=False,
                     description="Run this cell in the sandbox under tighter limits.",
                     epilog=SECURE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    parser.add_argument("--sandbox", choices=SANDBOX_CHOICES,
                        help="sandbox for this cell (restricted: the restricted Python subset; "
                             "container or docker: a container)")
    parser.add_argument("--timeout", metavar="SECONDS", help="wall-clock limit (timeout_seconds)")
    parser.add_argument("--memory", metavar="MB", help="memory limit (memory_mb)")
    parser.add_argument("--cpu", metavar="PERCENT", help="CPU share, 100 = one core")
    parser.add_argument("--max-file-size", metavar="MB", help="largest file it may write")
    parser.add_argument("--max-output", metavar="BYTES", help="output cap (max_output_bytes)")
    parser.add_argument("--max-processes", metavar="N", help="processes and threads")
    parser.add_argument("--network", nargs="?", const=True, default=None,
                        metavar="HOST:PORT,...",
                        help="network access: alone for any destination, or only these "
                             "destinations (network_access), e.g. --network pypi.org:443")
    parser.add_argument("--no-network", dest="network", action="store_false",
                        help="no network access")
    parser.add_argument("--filesystem", action=argparse.BooleanOptionalAction, default=None,
                        help="access to the working directory (filesystem_access)")
    parser.add_argument("--permissions", metavar="P[,P]",
                        help="permissions for this cell, e.g. execute (no write)")
    parser.add_argument("--in", dest="inputs", metavar="NAMES",
                        help="variables to copy into a fresh sandbox, e.g. --in a,b")
    parser.add_argument("--out", dest="outputs", metavar="NAMES",
                        help="results to copy back from a fresh sandbox, e.g. --out x,y")
    parser.add_argument("--quiet", action="store_true", help="no summary line after the cell")
    parser.add_argument("--image", metavar="NAME",
                        help="container image for this cell (implies --sandbox container; the "
                             "policy may limit which images)")
    return parser


def parse_secure(line: str) -> SecureRequest:
    """``%%secure`` options -> ``SecureRequest``; a ``UsageError`` for anything malformed."""
    args = secure_parser().parse_args(_split("%%secure", line))
    if args.help:
        return SecureRequest(line=line, help=True)
    limits: dict[str, Any] = {}
    for option, limit in LIMIT_OPTIONS.items():
        value = getattr(args, option)
        if value is None:
            continue
        try:
            limits[limit] = coerce_limit(limit, value)
        except ConfigurationError as exc:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"%%secure: {flag}: {exc}") from None
    permissions = None
    if args.permissions is not None:
        try:
            permissions = tuple(sorted(perms.normalize_all(
                [p for p in re.split(r"[,\s]+", args.permissions) if p])))
        except ConfigurationError as exc:
            raise UsageError(f"%%secure: --permissions: {exc}") from None
        if not permissions:
            raise UsageError("%%secure: --permissions needs at least one permission, e.g. "
                             "--permissions execute")
    sandbox = args.sandbox and canonical_sandbox_type(args.sandbox)
    if args.image is not None:
        if sandbox not in (None, "container"):
            raise UsageError("%%secure: --image needs the container sandbox, not --sandbox "
                             f"{sandbox}")
        if not args.image.strip():
            raise UsageError("%%secure: --image: give an image name")
        sandbox = "container"
    return SecureRequest(
        line=line, sandbox=sandbox, limits=limits, permissions=permissions,
        image=args.image.strip() if args.image else None,
        inputs=_names("--in", args.inputs) if args.inputs is not None else (),
        outputs=_names("--out", args.outputs) if args.outputs is not None else (),
        quiet=args.quiet)


def secure_help() -> str:
    return secure_parser().format_help()


def audit_parser() -> _Parser:
    parser = _Parser(prog="%secure_audit", add_help=False, allow_abbrev=False,
                     description="Recent records of the audit log (newest last).")
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    parser.add_argument("-n", metavar="N", default="20", help="how many records (default 20)")
    parser.add_argument("--user", metavar="USER", help="only this user's records")
    parser.add_argument("--type", choices=EVENT_TYPES, help="only records of this type")
    parser.add_argument("--verify", action="store_true", help="check the hash chain too")
    return parser


def parse_audit(line: str) -> AuditRequest:
    args = audit_parser().parse_args(_split("%secure_audit", line))
    if args.help:
        return AuditRequest(help=True)
    try:
        n = int(args.n)
    except ValueError:
        n = -1
    if n <= 0:
        raise UsageError(f"%secure_audit: -n must be a positive whole number, not {args.n!r}")
    return AuditRequest(n=n, user=args.user, type=args.type, verify=args.verify)


def audit_help() -> str:
    return audit_parser().format_help()


def parse_no_options(prog: str, line: str, description: str) -> bool:
    """For magics without options: True when ``--help`` was asked for."""
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False, description=description)
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    return bool(parser.parse_args(_split(prog, line)).help)


def help_of(prog: str, description: str) -> str:
    parser = _Parser(prog=prog, add_help=False, description=description)
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    return parser.format_help()


STATUS_DESCRIPTION = ("The effective security context of this notebook and what this host "
                      "enforces, limit by limit.")
PANEL_DESCRIPTION = ("A live panel: limits, memory/CPU/time gauges while a cell runs, the last "
                     "cells and the audit history.")
