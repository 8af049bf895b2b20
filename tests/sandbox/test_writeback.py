"""The supervisor's copy-back of a writable working directory (``sandbox.writeback``), against
plain directories standing in for the overlay's upper layer and merged view: what a hostile
sandbox can plant there must never make the copy read or write outside the host directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agenticraft.sandbox.writeback import MAX_DEPTH, Overlay

pytestmark = pytest.mark.timeout(30)


def overlay(tmp_path: Path, protect: tuple[str, ...] = ()) -> tuple[Overlay, Path, Path, Path]:
    """An Overlay whose upper layer and merged view are the same plain directory ``upper``."""
    upper, host, outside = tmp_path / "upper", tmp_path / "host", tmp_path / "outside"
    for path in (upper, host, outside):
        path.mkdir()
    flags = os.O_RDONLY | os.O_DIRECTORY
    made = Overlay(str(host), os.open(upper, flags), os.open(upper, flags),
                   protect=[str(host / p) for p in protect])
    return made, upper, host, outside


def test_symlinks_planted_in_the_upper_layer_are_not_copied_or_followed(tmp_path):
    made, upper, host, outside = overlay(tmp_path)
    (outside / "secret.txt").write_text("secret")
    (upper / "escape").symlink_to(outside)
    (upper / "file-link").symlink_to(outside / "secret.txt")
    (upper / "d").mkdir()
    (upper / "d" / "x.txt").write_text("x")
    report = made.sync()
    assert sorted(os.listdir(host)) == ["d"]
    assert (host / "d" / "x.txt").read_text() == "x"
    assert sorted(report.skipped) == ["escape (symlink, not copied)",
                                      "file-link (symlink, not copied)"]
    assert sorted(os.listdir(outside)) == ["secret.txt"]


def test_a_host_symlink_is_replaced_never_written_through(tmp_path):
    made, upper, host, outside = overlay(tmp_path)
    (host / "d").symlink_to(outside)            # the host's own link, pointing out
    (host / "f.txt").symlink_to(outside / "victim.txt")
    (upper / "d").mkdir()
    (upper / "d" / "x.txt").write_text("pwned?")
    (upper / "f.txt").write_text("pwned?")
    made.sync()
    assert os.listdir(outside) == []
    assert not (host / "d").is_symlink() and (host / "d" / "x.txt").read_text() == "pwned?"
    assert not (host / "f.txt").is_symlink() and (host / "f.txt").read_text() == "pwned?"


def test_only_changes_since_the_last_copy_back_are_copied(tmp_path):
    made, upper, host, _ = overlay(tmp_path)
    (upper / "a.txt").write_text("one")
    made.sync()
    (host / "a.txt").write_text("edited on the host")   # the sandbox did not touch it again
    (upper / "b.txt").write_text("two")
    report = made.sync()
    assert report.copied == 1
    assert (host / "a.txt").read_text() == "edited on the host"
    assert (host / "b.txt").read_text() == "two"


def test_fifos_and_deep_trees_do_not_hang_or_crash_the_supervisor(tmp_path):
    made, upper, host, _ = overlay(tmp_path)
    os.mkfifo(upper / "fifo")
    deep = upper
    for _ in range(MAX_DEPTH + 20):
        deep = deep / "d"
    deep.mkdir(parents=True)
    report = made.sync()
    assert "fifo (fifo, not copied)" in report.skipped
    assert not (host / "fifo").exists()
    assert any("deep" in e for e in report.errors)


def test_protected_paths_are_never_written(tmp_path):
    made, upper, host, _ = overlay(tmp_path, protect=("audit.jsonl", "conf"))
    (host / "audit.jsonl").write_text("record")
    (upper / "audit.jsonl").write_text("forged")
    (upper / "conf").mkdir()
    (upper / "conf" / "policy.toml").write_text("forged")
    (upper / "ok.txt").write_text("ok")
    made.sync()
    assert (host / "audit.jsonl").read_text() == "record"
    assert not (host / "conf").exists()
    assert (host / "ok.txt").read_text() == "ok"


def test_a_directory_holding_a_protected_path_is_never_replaced_whole(tmp_path):
    made, upper, host, _ = overlay(tmp_path, protect=("logs/audit.jsonl",))
    (host / "logs").mkdir()
    (host / "logs" / "audit.jsonl").write_text("record")
    (upper / "logs").write_text("a file where the directory was")  # would rmtree the log
    report = made.sync()
    assert (host / "logs" / "audit.jsonl").read_text() == "record"
    assert any("logs" in s for s in report.skipped), report


def test_a_missing_host_directory_is_reported_not_raised(tmp_path):
    made, upper, host, _ = overlay(tmp_path)
    (upper / "a.txt").write_text("a")
    host.rmdir()
    assert made.sync().errors


def test_a_hard_link_to_a_file_outside_is_replaced_not_written_through(tmp_path):
    made, upper, host, outside = overlay(tmp_path)
    (outside / "linked.txt").write_text("outside")
    os.link(outside / "linked.txt", host / "linked.txt")
    (host / "plain.txt").write_text("old")
    inode = (host / "plain.txt").stat().st_ino
    (upper / "linked.txt").write_text("new")
    (upper / "plain.txt").write_text("new")
    made.sync()
    assert (outside / "linked.txt").read_text() == "outside"
    assert (host / "linked.txt").read_text() == "new"
    assert (host / "plain.txt").read_text() == "new"
    assert (host / "plain.txt").stat().st_ino == inode  # rewritten in place


def test_code_is_never_changed_in_a_directory_the_host_imports_from(tmp_path):
    """The host directory itself protected (the host imports from it): Python code is neither
    copied, replaced nor deleted there, in new trees and under replaced directories too; data
    is copied as before, and each kept name is reported."""
    made, upper, host, _ = overlay(tmp_path)
    made.protected([str(host)])
    (host / "app.py").write_text("host")
    (host / "lib").mkdir()
    (host / "lib" / "__init__.py").write_text("host")
    (host / "lib" / "data.txt").write_text("old")
    (upper / "app.py").write_text("forged")
    (upper / "json.py").write_text("forged")
    (upper / "pkg").mkdir()
    (upper / "pkg" / "__init__.py").write_text("forged")
    (upper / "pkg" / "fast.cpython-311-x86_64-linux-gnu.so").write_bytes(b"forged")
    (upper / "pkg" / "data.csv").write_text("a,b")
    (upper / "lib").write_text("a file where the host has a package")
    report = made.sync()
    assert (host / "app.py").read_text() == "host"
    assert not (host / "json.py").exists()
    assert os.listdir(host / "pkg") == ["data.csv"]
    assert os.listdir(host / "lib") == ["__init__.py"]  # its data went, its code stayed
    assert (host / "lib" / "__init__.py").read_text() == "host"
    assert "json.py (Python code, and the host imports from this directory)" in report.skipped
    assert any(s.startswith("lib/__init__.py (kept") for s in report.skipped), report.skipped


def test_code_is_copied_where_the_host_does_not_import_from(tmp_path):
    made, upper, host, _ = overlay(tmp_path, protect=("audit.jsonl",))
    (upper / "helper.py").write_text("def f(): ...")
    assert made.sync().skipped == []
    assert (host / "helper.py").read_text() == "def f(): ..."
