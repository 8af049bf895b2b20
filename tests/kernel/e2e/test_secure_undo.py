"""``%secure_undo``: back to the state from before the last cell (rebound, deleted and mutated
variables included), once; refused the second time in a row; audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.harness import Kernel, kernel_env, one_error


@pytest.fixture
def fresh(data_dir: Path, tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(data_dir, kernel_env(tmp_path, memory_mb=256, timeout_seconds=5), cwd=tmp_path)
    yield k
    k.close()


STATE = "(a, 'b' in globals(), sorted(c), d['k'], len(e))"


def test_undo_restores_rebound_deleted_and_mutated_variables(fresh: Kernel) -> None:
    reply, _ = fresh.execute("a = 1\nb = 'kept'\nc = [3, 1]\nd = {'k': 'v'}\ne = bytearray(10)")
    assert reply["status"] == "ok"
    reply, _ = fresh.execute("a = 2\ndel b\nc.append(0)\nd['k'] = 'changed'\ne.extend(b'x' * 5)")
    assert reply["status"] == "ok"
    reply, outputs = fresh.execute("%secure_undo")
    assert reply["status"] == "ok", outputs
    assert "Restored" in "".join(o.get("text", "") for o in outputs)
    assert fresh.value(STATE) == "(1, True, [1, 3], 'v', 10)"


def test_undo_twice_in_a_row_is_refused_and_both_are_audited(fresh: Kernel) -> None:
    fresh.execute("x = 1")
    fresh.execute("x = 2")
    reply, _ = fresh.execute("%secure_undo")
    assert reply["status"] == "ok"
    reply, outputs = fresh.execute("%secure_undo")
    assert reply["status"] == "error"
    assert reply["ename"] == "UsageError"
    assert "Nothing to undo" in one_error(outputs)["evalue"]
    assert fresh.value("x") == "1"
    outcomes = [r.get("outcome") for r in fresh.audit() if r.get("served_by") == "kernel"]
    assert outcomes == ["undone", "undo_refused"]


def test_undo_before_any_cell_is_refused(fresh: Kernel) -> None:
    reply, _ = fresh.execute("%secure_undo")
    assert reply["ename"] == "UsageError"


def test_completions_between_cells_keep_the_undo_state(fresh: Kernel) -> None:
    fresh.execute("y = 'before'")
    fresh.execute("y = 'after'")
    msg_id = fresh.kc.complete("y.up", 4)
    assert fresh.shell_reply(msg_id)["content"]["status"] == "ok"
    reply, _ = fresh.execute("%secure_undo")
    assert reply["status"] == "ok"
    assert fresh.value("y") == "'before'"


def test_a_rolled_back_cell_does_not_count(fresh: Kernel) -> None:
    fresh.execute("z = 1")
    fresh.execute("z = 2")
    reply, _ = fresh.execute("z = 3\nblob = bytearray(512 * 1024 * 1024)")  # over memory_mb
    assert reply["status"] == "error"
    reply, _ = fresh.execute("%secure_undo")
    assert reply["status"] == "ok"
    assert fresh.value("z") == "1"


def test_no_process_is_left_behind_by_the_undo_state(fresh: Kernel) -> None:
    import psutil
    for i in range(5):
        fresh.execute(f"v = {i}")
    root = psutil.Process(fresh.km.provisioner.pid)
    tree = root.children(recursive=True)
    # zygote, the sandbox's keeper and init (its PID namespace), the undo state, the live worker
    # (and at most one checkpoint still exiting); one undo state per cell would be 9 or more
    assert len(tree) <= 6, [p.cmdline()[:3] for p in tree]
