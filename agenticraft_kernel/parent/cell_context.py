"""A ``%%secure`` cell's context in the secure kernel: the kernel's own, tightened, never looser.

The kernel's effective context (already resolved through the administrator's policy) is the
ceiling of each cell. A request above it is refused before anything runs, naming the kernel's
value and the administrator's ceiling; a request within it is then resolved through
``SandboxManager.authorize`` like every other request. Denials are audited.

Some limits are fixed for the life of the kernel's session worker (its network namespace,
Landlock rules, rlimits and permissions are set when it starts); ``fresh_reasons`` says when a
tightened cell must therefore run in a fresh sandbox instead of the session.
"""

from __future__ import annotations

from agenticraft.sandbox import SandboxManager
from agenticraft.security import permissions as perms
from agenticraft.security import records
from agenticraft.security.context import SecurityContext
from agenticraft.wire.errors import PermissionDenied
from agenticraft.wire.limits import ResourceLimits
from agenticraft_kernel.views.secure_args import SecureRequest
from agenticraft_kernel.views.status import show_value


def resolve_cell(manager: SandboxManager, kernel_ctx: SecurityContext, request: SecureRequest,
                 *, action: str = "secure_cell") -> SecurityContext:
    """The effective context of one ``%%secure`` cell (``PermissionDenied`` if it loosens)."""
    current = kernel_ctx.resource_limits
    asked = ResourceLimits.from_value(request.limits, base=current)
    ceilings = manager.policy.ceilings
    reasons = [f"{name}={show_value(name, getattr(asked, name))} is above this kernel's "
               f"{show_value(name, getattr(current, name))} (the administrator's ceiling is "
               f"{show_value(name, getattr(ceilings, name))})"
               for name in asked.looser_than(current) if name in request.limits]
    first = next((n for n in asked.looser_than(current) if n in request.limits), None)
    sandbox = request.sandbox or kernel_ctx.sandbox_type
    if sandbox != kernel_ctx.sandbox_type and (
            kernel_ctx.sandbox_type == "restricted"
            or (kernel_ctx.sandbox_type == "container" and sandbox == "process")):
        reasons.append(f"the {sandbox} sandbox allows more than this kernel's "
                       f"{kernel_ctx.sandbox_type} sandbox")
        first = first or "sandbox_type"
    if request.permissions is not None:
        extra = sorted(perms.implied(frozenset(request.permissions)) - kernel_ctx.permissions)
        if extra:
            reasons.append(f"permission(s) {', '.join(extra)} beyond this kernel's "
                           f"({', '.join(sorted(kernel_ctx.permissions))})")
            first = first or extra[0]
    if reasons:
        text = ("Permission denied: %%secure can only tighten this kernel's limits: "
                + "; ".join(reasons) + ". Nothing was run.")
        ceiling = getattr(current, first, None) if first in current.as_dict() else None
        manager.audit.record(records.denial(kernel_ctx.user_id, first, action=action,
                                            reason=text))
        raise PermissionDenied(text, permission=first, user_id=kernel_ctx.user_id,
                               ceiling=ceiling)
    request_ctx = SecurityContext(kernel_ctx.user_id, request.permissions, request.limits,
                                  sandbox_type=sandbox, working_dir=kernel_ctx.working_dir,
                                  image=request.image or (kernel_ctx.image if sandbox
                                                          == kernel_ctx.sandbox_type else None))
    return manager.authorize(request_ctx, "execute", action=action,
                             limit_overrides=current.as_dict(), record_allowed=False)


def fresh_reasons(kernel_ctx: SecurityContext, cell_ctx: SecurityContext,
                  kernel_sandbox: str) -> list[str]:
    """Why this cell cannot run in the kernel's session ([] when it can)."""
    reasons = []
    if kernel_sandbox == "restricted" or cell_ctx.sandbox_type != kernel_sandbox:
        reasons.append(f"the {cell_ctx.sandbox_type} sandbox")
    if cell_ctx.image != kernel_ctx.image and cell_ctx.sandbox_type == kernel_sandbox:
        reasons.append(f"the image {cell_ctx.image}")
    before, after = kernel_ctx.resource_limits, cell_ctx.resource_limits
    for name in ("network_access", "filesystem_access", "max_file_size_mb"):
        if getattr(before, name) != getattr(after, name):
            reasons.append(f"{name} {show_value(name, getattr(after, name))}")
    if after.filesystem_access and (kernel_ctx.has_permission("write")
                                    != cell_ctx.has_permission("write")):
        reasons.append("no write permission")
    return reasons
