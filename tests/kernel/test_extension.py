"""``%load_ext agenticraft_kernel`` in a stock IPython ``InteractiveShell``: ``%%secure`` runs
its cell in a fresh sandbox (``--in``/``--out`` carry plain data), violations and bad input are
one-line errors, and the views (``%secure_status``, ``%secure_audit``, ``%secure_panel``) work."""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

from agenticraft.agents.tools.runtime import (
    close_default_manager,
    close_manager,
    set_default_manager,
)
from agenticraft.security.policy import BUILTIN_CEILINGS, Policy
from agenticraft.wire.errors import PermissionDenied, ResourceLimitExceeded
from agenticraft.wire.limits import ResourceLimits
from agenticraft.wire.transfer import TransferError
from agenticraft_kernel import extension as magics
from agenticraft_kernel.extension import SecureMagics, secure_magics_of

from helpers import make_manager

CEILING_TIMEOUT = 20


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A stock IPython shell with the extension loaded on a manager of its own (temp audit log,
    a policy whose timeout ceiling is 20 s). IPython adds names to ``builtins`` for good when a
    shell starts; they are taken out again so later test modules see the interpreter as it was."""
    tmp = tmp_path_factory.mktemp("stock")
    policy = Policy(ceilings=BUILTIN_CEILINGS.replace(timeout_seconds=CEILING_TIMEOUT),
                    defaults=ResourceLimits(timeout_seconds=10))
    manager = make_manager(tmp, policy)
    saved_builtins = dict(vars(builtins))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    ip = InteractiveShell.instance(config=config)
    with pytest.MonkeyPatch.context() as mp:  # nothing may reach the user's real audit log
        mp.setenv("AGENTICRAFT_AUDIT_LOG", str(tmp / "default-audit.jsonl"))
        previous = set_default_manager(None)
        magics.load_ipython_extension(ip, manager=manager)
        try:
            yield ip, tmp / "audit.jsonl"
        finally:
            close_manager(manager)
            close_default_manager()
            set_default_manager(previous)
            InteractiveShell.clear_instance()
            for name in set(vars(builtins)) - set(saved_builtins):
                del vars(builtins)[name]
            vars(builtins).update(saved_builtins)


def run(ip: Any, cell: str) -> tuple[Any, Any]:
    with capture_output() as cap:
        result = ip.run_cell(cell)
    return result, cap


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_load_ext_registers_the_magics(env: tuple[Any, Path]) -> None:
    ip, _ = env
    found = secure_magics_of(ip)
    assert isinstance(found, SecureMagics)
    assert {"secure", "secure_status", "secure_audit", "secure_panel"} <= set(
        ip.magics_manager.magics["line"])
    assert "secure" in ip.magics_manager.magics["cell"]
    result, _ = run(ip, "%load_ext agenticraft_kernel")  # by name, as a user types it
    assert result.success


def test_in_and_out_carry_plain_data(env: tuple[Any, Path]) -> None:
    ip, audit = env
    ip.user_ns.update(numbers=[1, 2, 3], names={"k": "v"}, pair=(1.5, None))
    result, cap = run(ip, "%%secure --in numbers,names,pair --out total,doubled,echo\n"
                          "print('inside', numbers)\n"
                          "total = sum(numbers)\n"
                          "doubled = {k: v * 2 for k, v in names.items()}\n"
                          "echo = pair\n")
    assert result.success, cap.stdout
    assert "inside [1, 2, 3]" in cap.stdout
    assert ip.user_ns["total"] == 6
    assert ip.user_ns["doubled"] == {"k": "vv"}
    assert ip.user_ns["echo"] == [1.5, None]  # tuples come back as lists (JSON)
    summary = cap.outputs[-1].data["text/plain"]
    assert "fresh sandbox" in summary and "returned total, doubled, echo" in summary
    last = [r for r in records(audit) if r["type"] == "execution"][-1]
    assert last["outcome"] == "ok" and last["magic"]["in"] == ["numbers", "names", "pair"]


def test_the_cell_runs_in_the_sandbox_not_in_the_notebook(env: tuple[Any, Path]) -> None:
    ip, _ = env
    ip.user_ns.pop("leak", None)
    result, cap = run(ip, "%%secure --out pid\nimport os\nleak = 1\npid = os.getpid()\n")
    assert result.success, cap.stdout
    assert "leak" not in ip.user_ns  # only --out names come back
    assert isinstance(ip.user_ns["pid"], int) and ip.user_ns["pid"] != os.getpid()


def test_sandbox_output_reaches_the_page_only_as_text(env: tuple[Any, Path]) -> None:
    """Issue 13 in a stock kernel: what a %%secure cell produces comes back as stream text
    (rendered escaped), never as a mime bundle, so no script of its own reaches the page."""
    ip, _ = env
    result, cap = run(ip, "%%secure\nfrom IPython.display import HTML, display\n"
                          "display(HTML('<script>window.pwned = 1</script>'))\n"
                          "print('<img src=x onerror=alert(1)>')\n")
    assert result.success, cap.stdout
    assert "onerror" in cap.stdout  # as text
    assert all("<script" not in json.dumps(o.data) and "onerror" not in json.dumps(o.data)
               for o in cap.outputs), [o.data for o in cap.outputs]


def test_out_refuses_what_is_not_plain_data(env: tuple[Any, Path]) -> None:
    ip, _ = env
    for name in ("f", "obj", "missing"):
        ip.user_ns.pop(name, None)
    result, cap = run(ip, "%%secure --out f,obj,missing\ndef f():\n    pass\nobj = object()\n")
    assert isinstance(result.error_in_exec, TransferError)
    lines = cap.stdout.strip().splitlines()
    assert len(lines) == 1 and "TransferError" in lines[0], cap.stdout
    assert "f: <function f" in lines[0] and "obj: <object object" in lines[0]
    assert "missing: the cell did not define it" in lines[0]
    assert "f" not in ip.user_ns and "obj" not in ip.user_ns


def test_in_refuses_what_is_not_plain_data_before_running(env: tuple[Any, Path]) -> None:
    ip, audit = env
    ip.user_ns["thing"] = {"ok": [1, 2], "bad": {1, 2}}
    before = len(records(audit))
    result, cap = run(ip, "%%secure --in thing\nprint('SANDBOX-RAN')\n")
    assert isinstance(result.error_in_exec, TransferError)
    assert "--in thing: a set cannot cross into the sandbox" in cap.stdout
    assert "SANDBOX-RAN" not in cap.stdout and "Traceback" not in cap.stdout
    assert len(records(audit)) == before  # nothing was run


def test_violation_is_a_one_line_error_and_the_notebook_goes_on(env: tuple[Any, Path]) -> None:
    ip, audit = env
    result, cap = run(ip, "%%secure --timeout 1\nimport time\ntime.sleep(30)\n")
    assert isinstance(result.error_in_exec, ResourceLimitExceeded)
    text = cap.stdout.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert "ResourceLimitExceeded" in text and "timeout_seconds (allowed 1.0 s" in text
    assert run(ip, "after = 40 + 2")[0].success and ip.user_ns["after"] == 42
    rec = [r for r in records(audit) if r["type"] == "execution"][-1]
    assert rec["outcome"] == "limit_exceeded" and rec["magic"]["line"] == "--timeout 1"
    assert rec["limits"]["timeout_seconds"] == 1


def test_above_the_ceiling_is_refused_naming_it(env: tuple[Any, Path]) -> None:
    ip, audit = env
    result, cap = run(ip, "%%secure --timeout 60\nprint('SANDBOX-RAN')\n")
    assert isinstance(result.error_in_exec, PermissionDenied)
    assert f"ceiling timeout_seconds={float(CEILING_TIMEOUT)}" in cap.stdout
    assert "SANDBOX-RAN" not in cap.stdout
    denial = [r for r in records(audit) if r["type"] == "authorization"][-1]
    assert denial["allowed"] is False and denial["action"] == "secure_magic"
    assert "timeout_seconds=60.0 is above" in denial["reason"]


def test_errors_of_the_code_show_the_sandbox_traceback(env: tuple[Any, Path]) -> None:
    ip, _ = env
    result, cap = run(ip, "%%secure\nx = 1\n1 / 0\n")
    assert type(result.error_in_exec).__name__ == "ZeroDivisionError"
    assert '"<sandbox>", line 2' in cap.stdout and "division by zero" in cap.stdout


def test_restricted_sandbox_cell(env: tuple[Any, Path]) -> None:
    ip, _ = env
    ip.user_ns["numbers"] = [1, 2, 3]
    result, _cap = run(ip, "%%secure --sandbox restricted --quiet --in numbers --out squares\n"
                           "squares = [n * n for n in numbers]\n")
    assert result.success and ip.user_ns["squares"] == [1, 4, 9]
    result, cap = run(ip, "%%secure --sandbox restricted\nimport os\n")
    assert type(result.error_in_exec).__name__ == "SecurityViolation"
    assert len(cap.stdout.strip().splitlines()) == 1


@pytest.mark.parametrize(("cell", "expected"), [
    ("%%secure --bogus\nx = 1\n", "unrecognized arguments: --bogus"),
    ("%%secure --timeout soon\nx = 1\n", "--timeout: timeout_seconds must be a positive number"),
    ("%%secure --memory -5\nx = 1\n", "--memory: memory_mb must be a positive number"),
    ("%%secure --cpu -1\nx = 1\n", "--cpu: cpu_percent must be a positive number"),
    ("%%secure --memory 1.5\nx = 1\n", "memory_mb must be a whole number"),
    ("%%secure --sandbox vm\nx = 1\n", "invalid choice: 'vm'"),
    ("%%secure --in 1a\nx = 1\n", "'1a' is not a variable name"),
    ("%%secure --in not_defined_anywhere\nx = 1\n", "no such variable"),
    ("%%secure --permissions root\nx = 1\n", "Unknown permission 'root'"),
    ("%%secure --timeout 5\n\n   \n", "the cell is empty"),
    ("%secure --timeout 5", "%secure is a cell magic"),
    ("%secure_audit -n -3", "-n must be a positive whole number"),
    ("%secure_status --verbose", "unrecognized arguments: --verbose"),
])
def test_bad_input_is_a_one_line_usage_error(env: tuple[Any, Path], cell: str,
                                             expected: str) -> None:
    ip, _ = env
    result, cap = run(ip, cell)
    assert type(result.error_in_exec) is UsageError
    lines = cap.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), cap.stderr
    assert expected in lines[0]
    assert "Traceback" not in cap.stdout + cap.stderr


def test_help_prints_usage_and_runs_nothing(env: tuple[Any, Path]) -> None:
    ip, _ = env
    ip.user_ns.pop("not_run", None)
    result, cap = run(ip, "%%secure --help\nnot_run = 1\n")
    assert result.success
    assert "usage: %%secure" in cap.stdout and "--no-network" in cap.stdout
    assert "not_run" not in ip.user_ns


def test_status_and_audit_views(env: tuple[Any, Path]) -> None:
    ip, _ = env
    result, cap = run(ip, "%secure_status")
    assert result.success
    status = cap.outputs[0].data
    assert "enforced here by" in status["text/plain"] and "timeout_seconds" in status["text/plain"]
    assert "10 s" in status["text/plain"]  # the policy's default
    assert "<table" in status["text/html"]
    result, cap = run(ip, "%secure_audit -n 3 --type execution --verify")
    assert result.success
    view = cap.outputs[0].data
    assert "newest 3 records (type=execution)" in view["text/plain"]
    assert "hash chain intact" in view["text/plain"]
    assert view["text/html"].count("<tr>") == 4  # header + 3 records


def test_panel_follows_secure_cells(env: tuple[Any, Path]) -> None:
    ip, _ = env
    result, cap = run(ip, "%secure_panel")
    assert result.success
    data = cap.outputs[0].data
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "AgentiCraft Secure panel" in data["text/plain"]
    panel = secure_magics_of(ip).panel
    assert run(ip, "%%secure --quiet --timeout 3\nsum(range(10))\n")[0].success
    assert "--timeout 3" in panel.cells_html.value and ">ok<" in panel.cells_html.value
    # the finished cell's usage stays on the gauges, against that cell's own limits
    assert panel.readouts["elapsed"].value.endswith("/ 3 s") and panel.bars["elapsed"].max == 3
    assert panel.readouts["memory"].value.endswith("/ 512 MB")
