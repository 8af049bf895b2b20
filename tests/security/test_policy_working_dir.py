"""A requested working directory may narrow the host's, never point elsewhere."""

from __future__ import annotations

import pytest

from agenticraft.security import Policy, SecurityContext
from agenticraft.wire.errors import PermissionDenied

from helpers import make_manager


@pytest.mark.parametrize("wanted", ["/etc", "..", "../..", "sub/../../x"])
def test_working_dir_outside_root_is_denied(tmp_path, wanted):
    with pytest.raises(PermissionDenied, match="outside the working directory"):
        Policy().resolve(SecurityContext("u", working_dir=wanted), working_root=tmp_path)


def test_working_dir_inside_root_is_kept(tmp_path):
    (tmp_path / "sub").mkdir()
    ctx = Policy().resolve(SecurityContext("u", working_dir="sub"), working_root=tmp_path)
    assert ctx.working_dir == str((tmp_path / "sub").resolve())
    assert Policy().resolve(SecurityContext("u"), working_root=tmp_path).working_dir == str(
        tmp_path.resolve())


async def test_forged_working_dir_cannot_open_etc(tmp_path):
    manager = make_manager(tmp_path)
    sandbox = await manager.get_sandbox("process")
    try:
        with pytest.raises(PermissionDenied):
            await sandbox.execute_code(
                "data = open('/etc/hostname').read()",
                {"user_id": "mallory", "working_dir": "/etc",
                 "resource_limits": {"filesystem_access": True}})
        denied = manager.audit.query(user_id="mallory", event_type="authorization")
        assert denied and denied[-1]["allowed"] is False
    finally:
        await manager.close()
