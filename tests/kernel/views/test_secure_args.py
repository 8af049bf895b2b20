"""The magics' option parser: text in, a request out; every problem one ``UsageError`` line."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from agenticraft_kernel.views import secure_args
from agenticraft_kernel.views.secure_args import AuditRequest, SecureRequest


def test_every_secure_option_becomes_part_of_the_request() -> None:
    line = ("--timeout 2 --memory 64 --cpu 50 --max-file-size 3 --max-output 1000 "
            "--max-processes 4 --no-network --filesystem --permissions execute,write "
            "--in a,b --out c --quiet --sandbox restricted")
    request = secure_args.parse_secure(line)
    assert request == SecureRequest(
        line=line, sandbox="restricted",
        limits={"timeout_seconds": 2.0, "memory_mb": 64, "cpu_percent": 50.0,
                "max_file_size_mb": 3, "max_output_bytes": 1000, "max_processes": 4,
                "network_access": False, "filesystem_access": True},
        permissions=("execute", "write"), inputs=("a", "b"), outputs=("c",), quiet=True)


def test_no_options_is_an_empty_request() -> None:
    assert secure_args.parse_secure("") == SecureRequest()


def test_permissions_accept_spaces_and_aliases() -> None:
    request = secure_args.parse_secure("--permissions 'execute read'")
    assert request.permissions == ("execute", "read_results")


@pytest.mark.parametrize(("line", "message"), [
    ("--timeout abc", "%%secure: --timeout: timeout_seconds must be a positive number"),
    ("--memory 0", "%%secure: --memory: memory_mb must be a positive number"),
    ("--max-processes x", "%%secure: --max-processes: max_processes must be a positive"),
    ("--bogus", "%%secure: unrecognized arguments: --bogus (see %%secure --help)"),
    ("--time 3", "unrecognized arguments: --time 3"),  # no abbreviations
    ("--sandbox vm", "argument --sandbox: invalid choice: 'vm'"),
    ("--in _x", "%%secure: --in: '_x' is not a variable name"),
    ("--out class", "%%secure: --out: 'class' is not a variable name"),
    ("--in ''", "%%secure: --in needs variable names, e.g. --in a,b"),
    ("--permissions fly", "%%secure: --permissions: Unknown permission 'fly'"),
    ("--permissions ,", "%%secure: --permissions needs at least one permission"),
    ("'unclosed", "%%secure: cannot read the options (No closing quotation)"),
])
def test_bad_secure_options_are_one_usage_line(line: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        secure_args.parse_secure(line)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("line", ["--help", "-h", "--timeout 2 --help"])
def test_help_is_a_request_for_help(line: str) -> None:
    request = secure_args.parse_secure(line)
    assert request.help and request.limits == {}


def test_secure_help_names_every_option_and_the_tighten_only_rule() -> None:
    text = secure_args.secure_help()
    assert text.startswith("usage: %%secure")
    for option in ("--sandbox", "--timeout", "--memory", "--cpu", "--max-file-size",
                   "--max-output", "--max-processes", "--network", "--filesystem",
                   "--permissions", "--in", "--out", "--quiet"):
        assert option in text
    assert "can only tighten" in text


def test_audit_fields_keep_only_what_was_asked() -> None:
    assert SecureRequest(line="x" * 600).audit_fields() == {"line": "x" * 500, "limits": {}}
    request = secure_args.parse_secure("--timeout 2 --permissions execute --in a --out b "
                                       "--sandbox process")
    assert request.audit_fields() == {
        "line": request.line, "limits": {"timeout_seconds": 2.0}, "sandbox": "process",
        "permissions": ["execute"], "in": ["a"], "out": ["b"]}


def test_audit_options() -> None:
    assert secure_args.parse_audit("") == AuditRequest()
    assert secure_args.parse_audit("-n 5 --user bob --type execution --verify") == AuditRequest(
        n=5, user="bob", type="execution", verify=True)
    assert secure_args.parse_audit("-h") == AuditRequest(help=True)
    assert secure_args.audit_help().startswith("usage: %secure_audit")


@pytest.mark.parametrize(("line", "message"), [
    ("-n 0", "%secure_audit: -n must be a positive whole number, not '0'"),
    ("-n x", "%secure_audit: -n must be a positive whole number, not 'x'"),
    ("--type nope", "argument --type: invalid choice: 'nope'"),
    ("--verify extra", "unrecognized arguments: extra"),
])
def test_bad_audit_options_are_one_usage_line(line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        secure_args.parse_audit(line)


def test_magics_without_options_know_only_help() -> None:
    description = secure_args.STATUS_DESCRIPTION
    assert secure_args.parse_no_options("%secure_status", "--help", description) is True
    assert secure_args.parse_no_options("%secure_status", "", description) is False
    with pytest.raises(UsageError, match=r"%secure_status: unrecognized arguments: --x"):
        secure_args.parse_no_options("%secure_status", "--x", description)
    text = secure_args.help_of("%secure_panel", secure_args.PANEL_DESCRIPTION)
    assert text.startswith("usage: %secure_panel") and "live panel" in text


@pytest.mark.parametrize("line,expected", [
    ("--network", True), ("--no-network", False), ("--network --timeout 2", True),
    ("--network pypi.org:443,files.pythonhosted.org:443",
     ("files.pythonhosted.org:443", "pypi.org:443")),
    ("--network '[::1]:8080, 10.0.0.0/8:5432'", ("10.0.0.0/8:5432", "[::1]:8080")),
])
def test_network_takes_a_switch_or_an_allow_list(line: str, expected: object) -> None:
    assert secure_args.parse_secure(line).limits["network_access"] == expected


def test_a_bad_destination_is_one_usage_line() -> None:
    with pytest.raises(UsageError, match=r"^%%secure: --network: network_access: 'evil:0'"):
        secure_args.parse_secure("--network evil:0")
