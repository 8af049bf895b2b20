"""The confinement profile: which paths a worker may read, write, or never see, from a context."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from agenticraft.sandbox.profile import (
    NETWORK_READ_PATHS,
    PACKAGE_ROOT,
    SYSTEM_READ_PATHS,
    build_profile,
    protected_paths,
    python_paths,
)
from agenticraft.security import SecurityContext


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    real = tmp_path / "notebooks"
    real.mkdir()
    return real


def profile(workdir: Path, *, permissions: tuple[str, ...] = ("execute",),
            protect: tuple[str, ...] = (), **limits: Any) -> dict[str, Any]:
    ctx = SecurityContext("tester", permissions, limits, working_dir=str(workdir))
    return build_profile(ctx, scratch_root="/tmp/scratch-root", protect=protect)


def test_filesystem_off_grants_only_system_and_python_paths(workdir: Path) -> None:
    built = profile(workdir, filesystem_access=False)
    assert built["workdir"] is None
    assert str(workdir) not in built["read_paths"] + built["write_paths"]
    assert built["write_paths"] == ["/dev/null"]
    assert set(SYSTEM_READ_PATHS) <= set(built["read_paths"])
    assert set(python_paths()) <= set(built["read_paths"])
    assert built["read_paths"] == sorted(set(built["read_paths"]))


def test_filesystem_on_without_write_reads_the_working_directory(workdir: Path) -> None:
    built = profile(workdir, filesystem_access=True)
    assert built["workdir"] == str(workdir)
    assert str(workdir) in built["read_paths"]
    assert str(workdir) not in built["write_paths"]


def test_write_permission_makes_the_working_directory_writable(workdir: Path) -> None:
    built = profile(workdir, permissions=("execute", "write"), filesystem_access=True)
    assert str(workdir) in built["write_paths"]
    assert str(workdir) not in built["read_paths"]


def test_write_permission_alone_grants_no_directory(workdir: Path) -> None:
    built = profile(workdir, permissions=("execute", "write"), filesystem_access=False)
    assert built["write_paths"] == ["/dev/null"] and built["workdir"] is None


def test_the_working_directory_is_resolved(workdir: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(workdir)
    built = profile(link, filesystem_access=True)
    assert built["workdir"] == str(workdir)
    assert str(link) not in built["read_paths"]


def test_network_files_are_readable_only_with_network_access(workdir: Path) -> None:
    assert not set(NETWORK_READ_PATHS) & set(profile(workdir)["read_paths"])
    assert set(NETWORK_READ_PATHS) <= set(profile(workdir, network_access=True)["read_paths"])


def test_protected_paths_inside_the_working_directory_are_denied(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(workdir / "runtime"))
    audit = workdir / "audit.jsonl"
    built = profile(workdir, permissions=("execute", "write"), filesystem_access=True,
                    protect=(str(audit),))
    assert str(workdir) in built["write_paths"]
    deny = built["deny_paths"]
    assert {str(audit), str(workdir / "runtime"), str(home / ".ssh"), str(home / ".aws"),
            str(home / ".gnupg"), "/etc/agenticraft"} <= set(deny)
    assert deny == protected_paths([str(audit)])


def test_limits_and_scratch_root_travel_in_the_profile(workdir: Path) -> None:
    built = profile(workdir, memory_mb=128, max_file_size_mb=3, max_processes=5,
                    network_access=True, filesystem_access=True)
    assert {k: built[k] for k in ("memory_mb", "max_file_size_mb", "max_processes",
                                  "network_access", "filesystem_access", "scratch_root")} == {
        "memory_mb": 128, "max_file_size_mb": 3, "max_processes": 5, "network_access": True,
        "filesystem_access": True, "scratch_root": "/tmp/scratch-root"}


def test_python_paths_hold_the_interpreter_and_the_package() -> None:
    paths = python_paths()
    assert PACKAGE_ROOT in paths
    assert sysconfig.get_path("stdlib") in paths
    assert all(os.path.isabs(p) and os.path.exists(p) for p in paths)


async def test_a_sandbox_reuses_a_profile_only_while_nothing_it_depends_on_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ProcessSandbox.profile_for`` builds a profile once per kind of context: each caller
    gets its own copy; another HOME gives another profile; and what must exist before a
    sandbox's mounts are made (the audit log, a home's credential directories) is made again
    even when the profile is reused."""
    from agenticraft.sandbox.process import ProcessSandbox

    from helpers import make_manager

    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    manager = make_manager(tmp_path)
    sandbox = ProcessSandbox(manager)
    await sandbox.start()
    try:
        ctx = SecurityContext("tester", ["execute"], {"filesystem_access": True},
                              working_dir=str(home))
        first = sandbox.profile_for(ctx)
        assert str(home / ".aws") in first["deny_paths"]
        first["read_paths"].append("/forged")
        first["deny_paths"].clear()
        again = sandbox.profile_for(ctx)
        assert "/forged" not in again["read_paths"] and str(home / ".aws") in again["deny_paths"]

        (home / ".aws").rmdir()
        for path in (manager.audit.path, manager.audit.head_path):
            os.unlink(path)
        sandbox.profile_for(ctx)
        assert (home / ".aws").is_dir() and os.path.exists(manager.audit.path)

        other = tmp_path / "other-home"
        other.mkdir()
        monkeypatch.setenv("HOME", str(other))
        moved = sandbox.profile_for(ctx)
        assert str(other / ".aws") in moved["deny_paths"]
        assert str(home / ".aws") not in moved["deny_paths"]
    finally:
        await sandbox.close()
