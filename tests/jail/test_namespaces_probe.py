"""The namespaces probe reports what a worker will really get. Docker's default seccomp profile
refuses unshare(CLONE_NEWUSER) with EPERM (errno 1): the probe once read that errno, "1", as its
success marker, so doctor claimed namespaces and every execution then failed on unshare."""

from __future__ import annotations

import errno

from agenticraft.jail.confine import namespaces


def _refuse(flags: int) -> None:
    raise OSError(errno.EPERM, "unshare failed: Operation not permitted")


def test_eperm_is_reported_as_unavailable(monkeypatch):
    monkeypatch.setattr(namespaces, "unshare", _refuse)
    info = namespaces._probe_in_child()
    assert info["available"] is False
    assert "Operation not permitted" in info["detail"]


def test_other_errors_are_reported_too(monkeypatch):
    def refuse(flags: int) -> None:
        raise OSError(errno.ENOSPC, "unshare failed: No space left on device")

    monkeypatch.setattr(namespaces, "unshare", refuse)
    info = namespaces._probe_in_child()
    assert info["available"] is False
    assert "No space left on device" in info["detail"]
