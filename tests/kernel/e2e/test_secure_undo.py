"""``%secure_undo`` through jupyter_client: back to the state from before the last cell
(rebound, deleted and mutated variables, a list, a dict and a numpy array), once; a second one in
a row is refused with a clear message; a cell after an undo works; both outcomes are audited;
completions do not count as cells; a rolled-back cell changed nothing, so undo takes back the cell
before it; a session lost beyond rollback says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.harness import Kernel, kernel_env, ok, one_error

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def undo_kernel(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    tmp = tmp_path_factory.mktemp("undo")
    k = Kernel(data_dir, kernel_env(tmp, memory_mb=256, timeout_seconds=5), cwd=tmp)
    yield k
    k.close()


def undo(kernel: Kernel) -> tuple[dict, list[dict]]:
    return kernel.execute("%secure_undo")


SETUP = ("import numpy as np\na = 1\nb = 'kept'\nc = [3, 1]\nd = {'k': 'v'}\n"
         "arr = np.arange(4)\n")
CHANGE = "a = 2\ndel b\nc.append(0)\nd['k'] = 'changed'\nd['new'] = 1\narr[0] = 99\narr *= 2"
STATE = "(a, 'b' in globals(), c, sorted(d.items()), arr.tolist())"
BEFORE = "(1, True, [3, 1], [('k', 'v')], [0, 1, 2, 3])"


def test_undo_restores_rebound_deleted_and_mutated_variables(undo_kernel: Kernel) -> None:
    ok(undo_kernel, SETUP)
    ok(undo_kernel, CHANGE)
    reply, outputs = undo(undo_kernel)
    assert reply["status"] == "ok", outputs
    assert "Restored the variables from before the last cell" in "".join(
        o.get("text", "") for o in outputs)
    assert undo_kernel.value(STATE) == BEFORE


def test_a_second_undo_in_a_row_is_refused_with_a_clear_message(undo_kernel: Kernel) -> None:
    ok(undo_kernel, "x = 1")
    ok(undo_kernel, "x = 2")
    assert undo(undo_kernel)[0]["status"] == "ok"
    reply, outputs = undo(undo_kernel)
    assert reply["status"] == "error"
    assert reply["ename"] == one_error(outputs)["ename"] == "UsageError"
    message = one_error(outputs)["evalue"]
    assert message.startswith("Nothing to undo"), message
    assert "already undone" in message and "once" in message
    assert undo_kernel.value("x") == "1"  # the refusal changed nothing


def test_a_cell_after_an_undo_works_and_can_be_undone(undo_kernel: Kernel) -> None:
    ok(undo_kernel, "n = 10")
    ok(undo_kernel, "n = 20")
    assert undo(undo_kernel)[0]["status"] == "ok"
    ok(undo_kernel, "n += 5\nm = n")
    assert undo_kernel.value("(n, m)") == "(15, 15)"
    ok(undo_kernel, "n = 'gone'")
    assert undo(undo_kernel)[0]["status"] == "ok"
    assert undo_kernel.value("n") == "15"


def status_text(kernel: Kernel) -> str:
    reply, outputs = kernel.execute("%secure_status")
    assert reply["status"] == "ok", outputs
    return "".join(o.get("data", {}).get("text/plain", "") for o in outputs)


def test_status_says_whether_undo_can_go_back_and_why_not(undo_kernel: Kernel) -> None:
    ok(undo_kernel, "s = 1")
    text = status_text(undo_kernel)
    assert "%secure_undo: available (restores the variables from before the last cell" in text
    assert undo(undo_kernel)[0]["status"] == "ok"
    text = status_text(undo_kernel)  # %secure_status itself is no cell that can be undone
    assert "%secure_undo: not available: the last run was already undone" in text
    assert status_text(undo_kernel).count("%secure_undo: not available") == 1
    ok(undo_kernel, "s = 2")
    assert "%secure_undo: available" in status_text(undo_kernel)


def test_panel_says_whether_undo_can_go_back(undo_kernel: Kernel) -> None:
    ok(undo_kernel, "t = 1")
    reply, outputs = undo_kernel.execute("%secure_panel")
    assert reply["status"] == "ok", outputs
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "%secure_undo: available" in text, text
    assert undo(undo_kernel)[0]["status"] == "ok"
    reply, outputs = undo_kernel.execute("%secure_panel")
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "%secure_undo: not available: the last run was already undone" in text, text


def test_undo_is_audited(undo_kernel: Kernel) -> None:
    ok(undo_kernel, "q = 1")
    undo(undo_kernel)
    undo(undo_kernel)
    cells = [r for r in undo_kernel.audit()
             if r.get("type") == "execution" and r.get("served_by") == "kernel"]
    assert [r["outcome"] for r in cells[-2:]] == ["undone", "undo_refused"]
    assert "already undone" in cells[-1]["detail"]
    assert all(r["kernel_id"] and r["code_sha256"] for r in cells[-2:])
    session = [r for r in undo_kernel.audit() if r.get("type") == "session"
               and r.get("event") == "undo"]
    assert [r["outcome"] for r in session[-2:]] == ["restored", "refused"]


def test_completions_between_cells_keep_the_undo_state(undo_kernel: Kernel) -> None:
    ok(undo_kernel, "y = 'before'")
    ok(undo_kernel, "y = 'after'")
    msg_id = undo_kernel.kc.complete("y.up", 4)
    assert undo_kernel.shell_reply(msg_id)["content"]["status"] == "ok"
    assert undo(undo_kernel)[0]["status"] == "ok"
    assert undo_kernel.value("y") == "'before'"


def test_after_a_rolled_back_cell_undo_takes_back_the_cell_before(undo_kernel: Kernel) -> None:
    ok(undo_kernel, "z = 1")
    ok(undo_kernel, "z = 2")
    reply, _ = undo_kernel.execute("z = 3\nblob = bytearray(512 * 1024 * 1024)")  # > memory_mb
    assert reply["ename"] == "ResourceLimitExceeded" and "rolled back" in reply["evalue"]
    assert undo(undo_kernel)[0]["status"] == "ok"
    assert undo_kernel.value("z") == "1"


def test_misplaced_undo_is_a_usage_error(undo_kernel: Kernel) -> None:
    ok(undo_kernel, "p = 1")
    reply, _ = undo_kernel.execute("p = 2\n%secure_undo")
    assert reply["ename"] == "UsageError"
    assert "%secure_undo is answered by the AgentiCraft Secure kernel" in reply["evalue"]


@pytest.fixture
def fresh(data_dir: Path, tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(data_dir, kernel_env(tmp_path, memory_mb=256, timeout_seconds=5), cwd=tmp_path)
    yield k
    k.close()


def test_first_cell_and_lost_state_say_why_there_is_nothing(fresh: Kernel) -> None:
    assert "%secure_undo: not available: no run has finished" in status_text(fresh)
    reply, outputs = undo(fresh)
    assert reply["ename"] == "UsageError"
    assert "no run has finished" in one_error(outputs)["evalue"]
    ok(fresh, "r = 1")
    ok(fresh, "r = 2")
    # the cell kills its checkpoint and then itself: nothing to roll back to
    reply, outputs = fresh.execute("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                                   "os._exit(1)")
    assert reply["status"] == "error"
    assert "variables from earlier cells are gone" in one_error(outputs)["evalue"]
    assert "%secure_undo: not available: the session was replaced" in status_text(fresh)
    reply, outputs = undo(fresh)
    assert reply["ename"] == "UsageError"
    assert "the session was replaced" in one_error(outputs)["evalue"]
    ok(fresh, "r = 'fresh'")
