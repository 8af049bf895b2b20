"""Finding and killing a real process tree, including a process whose parent exited (it is
re-parented to the nearest subreaper, as the zygote's orphans are)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agenticraft.jail.tree import children, descendants, kill_tree

from helpers import is_gone, parent_of, wait_gone

#: root (a child subreaper) -> middle -> leaf, plus an orphan whose parent exited after forking
#: it, so it was re-parented to root. Prints "orphan middle leaf" once the tree stands, then
#: waits on stdin.
TREE = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, like the zygote

def fork_holder():
    pid = os.fork()
    while pid == 0:  # the child waits until it is killed
        signal.pause()
    return pid

r, w = os.pipe()
gone = os.fork()
if gone == 0:
    os.write(w, b"%d\\n" % fork_holder())
    os._exit(0)
os.waitpid(gone, 0)  # the orphan's parent is dead: root is its parent now
orphan = int(os.read(r, 32))
middle = os.fork()
if middle == 0:
    os.write(w, b"%d\\n" % fork_holder())
    while True:
        signal.pause()
leaf = int(os.read(r, 32))
print(orphan, middle, leaf, flush=True)
sys.stdin.read()
"""


@dataclass
class Tree:
    root: subprocess.Popen[str]
    orphan: int
    middle: int
    leaf: int

    @property
    def below_root(self) -> set[int]:
        return {self.orphan, self.middle, self.leaf}


@pytest.fixture
def tree() -> Iterator[Tree]:
    root = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert root.stdout is not None
    orphan, middle, leaf = map(int, root.stdout.readline().split())
    built = Tree(root, orphan, middle, leaf)
    yield built
    kill_tree(root.pid)
    root.wait(timeout=10)


def test_descendants_include_a_reparented_orphan(tree: Tree) -> None:
    assert parent_of(tree.orphan) == tree.root.pid
    assert sorted(children(tree.root.pid)) == sorted([tree.orphan, tree.middle])
    assert children(tree.middle) == [tree.leaf]
    assert set(descendants(tree.root.pid)) == tree.below_root
    assert descendants(tree.leaf) == []


def test_a_missing_process_has_no_children() -> None:
    gone = os.getpid() + 10**6  # above pid_max on any default configuration
    assert children(gone) == [] and descendants(gone) == []


def test_kill_tree_kills_root_and_every_descendant(tree: Tree) -> None:
    assert kill_tree(tree.root.pid) == 4
    assert tree.root.wait(timeout=10) == -9
    assert all(wait_gone(pid) for pid in tree.below_root)


def test_kill_tree_can_spare_the_root(tree: Tree) -> None:
    assert kill_tree(tree.root.pid, include_root=False) == 3
    assert all(wait_gone(pid) for pid in tree.below_root)
    assert tree.root.poll() is None and not is_gone(tree.root.pid)


def test_kill_tree_leaves_spared_processes_running(tree: Tree) -> None:
    kill_tree(tree.root.pid, include_root=False, spare=[tree.orphan])
    assert wait_gone(tree.middle) and wait_gone(tree.leaf)
    assert not is_gone(tree.orphan)


@pytest.mark.parametrize("pid", [0, -1])
def test_kill_tree_never_signals_a_process_group(pid: int) -> None:
    assert kill_tree(pid) == 0
