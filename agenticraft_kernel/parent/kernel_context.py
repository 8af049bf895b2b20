"""Who the kernel runs cells for, and what it asks the administrator's policy for.

Precedence (low to high), as in the architecture: built-in defaults < config file <
``AGENTICRAFT_*`` environment < the kernel's traitlets config (``c.SecureKernel.limits``,
``sandbox_type``). The result is only a *request*: ``SandboxManager.authorize`` resolves it
through the policy, which no user setting can loosen. Nothing here compares a limit with a ceiling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agenticraft.security.context import current_user
from agenticraft.wire.limits import coerce_limit

#: The process sandbox preloads these in its zygote so a notebook's worker starts warm. Not
#: jedi: IPython imports it at the first completion, as in the stock kernel; preloaded, its
#: ~7 MB were in every sandbox process of every kernel (bench_kernel.py: PSS 104 -> 98 MB).
PRELOAD = ("IPython", "IPython.core.interactiveshell", "IPython.core.completer",
           "comm", "agenticraft_kernel.worker.ipython_executor", "agenticraft_kernel.worker.shell",
           "agenticraft_kernel.worker.magics",
           "traitlets.config")


@dataclasses.dataclass(frozen=True)
class KernelRequest:
    """What this kernel asks for: resolved by ``SandboxManager.authorize`` into a context."""

    user_id: str
    sandbox_type: str | None
    limit_overrides: dict[str, Any]
    policy_files: tuple[str, ...] = ()

    def context_request(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "sandbox_type": self.sandbox_type}


def notebook_defaults(overrides: Mapping[str, Any], settings_defaults: Mapping[str, Any],
                      ceiling_allows_files: bool) -> dict[str, Any]:
    """The kernel's own built-in default: the notebook's directory (the kernel's working
    directory) is readable, because notebooks read the data next to them; writable only with
    the ``write`` permission. Below every other source: a config file, ``AGENTICRAFT_*`` or the
    kernel's traitlets that say ``filesystem_access`` win, and an administrator's ceiling of
    ``filesystem_access = false`` turns it off."""
    if ("filesystem_access" in overrides or "filesystem_access" in settings_defaults
            or not ceiling_allows_files):
        return dict(overrides)
    return {"filesystem_access": True, **overrides}


def build_request(*, user_id: str | None, sandbox_type: str | None,
                  limits: Mapping[str, Any], policy_files: list[str] | tuple[str, ...] = (),
                  env: Mapping[str, str] | None = None) -> KernelRequest:
    """The kernel's request from its traitlets config (env and config file are read by
    ``load_settings`` inside the manager). Limit names and values are validated here so a
    typo in ``c.SecureKernel.limits`` is an error naming it, not a silent default."""
    overrides = {str(name): coerce_limit(str(name), value) for name, value in limits.items()}
    return KernelRequest(user_id=user_id or current_user(env),
                         sandbox_type=(sandbox_type or None),
                         limit_overrides=overrides,
                         policy_files=tuple(str(Path(p).expanduser()) for p in policy_files))
