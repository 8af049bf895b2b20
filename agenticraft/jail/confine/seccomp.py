"""Seccomp-BPF syscall filter for a freshly forked sandbox child (via libseccomp/pyseccomp).

The filter's default action is ALLOW; a deny list of dangerous syscalls returns EPERM.
It complements Landlock: Landlock decides *which* files/ports/peers are reachable, this
filter removes kernel attack surface and escape hatches (namespaces, ptrace, io_uring, bpf,
keyrings, mount API, ...) and, when requested, non-AF_UNIX sockets and process creation.

Honest limits:

* ``clone3`` always fails with ENOSYS because its flags live in memory that seccomp cannot
  inspect; glibc then falls back to ``clone`` whose flags register is checked.
* Syscalls libseccomp does not know on this architecture are skipped and reported under
  ``"unknown"`` instead of being denied.
* Syscalls of a foreign ABI (e.g. i386 ``int 0x80`` from an x86_64 process, x32) do not
  match the native filter and kill the process (libseccomp "bad arch" action).
* The filter is synchronised to all threads of the process (TSYNC) when the kernel and
  libseccomp support it; otherwise :func:`apply` refuses to run multi-threaded.

Nothing is done at import time besides defining constants; libseccomp is loaded lazily.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
from typing import Any

from agenticraft.jail.confine.libc import (
    CLONE_NAMESPACE_FLAGS,
    CLONE_THREAD,
    PR_GET_SECCOMP,
    PR_SET_SECCOMP,
    prctl,
    set_no_new_privs,
    thread_count,
)

__all__ = [
    "ALWAYS_DENIED",
    "CLONE_NAMESPACE_FLAGS",
    "CLONE_THREAD",
    "apply",
    "probe",
]

AF_UNIX = 1
AF_INET6 = 10
#: ``network_access`` of a filter that allows AF_UNIX, AF_INET and AF_INET6 sockets only: an
#: allow-list, whose own network namespace holds nothing but loopback. Other families (vsock
#: reaches a VM's host, and is not confined by network namespaces) stay refused.
INET_ONLY = "inet"

#: Syscalls that always return EPERM.
ALWAYS_DENIED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "mount_setattr",
    "open_tree",
    "open_tree_attr",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "unshare",
    "setns",
    "setsid",
    "setpgid",
    "memfd_create",
    "memfd_secret",
    "shmget",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "userfaultfd",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "open_by_handle_at",
    "name_to_handle_at",
    "syslog",
    "pidfd_getfd",
    "lookup_dcookie",
    "vhangup",
)

#: Syscalls newer than the libseccomp some hosts have (Debian 12's 2.5.4 resolves none after
#: Linux 6.2), by number: from 424 (Linux 5.1) on, a syscall has the same number on every
#: architecture but alpha and mips (offset tables), where names alone are used.
NEWER_SYSCALLS = {"open_tree_attr": 467}  # Linux 6.15: open_tree with mount attributes
_UNIFIED_NUMBERS = not platform.machine().startswith(("alpha", "mips"))

# Index of the flags argument of clone(2): first on x86_64/aarch64/riscv, second on s390.
_CLONE_FLAGS_ARG = 1 if platform.machine().startswith("s390") else 0


def _import_pyseccomp() -> tuple[Any, str]:
    """Return ``(module, "")`` or ``(None, reason)``; never raises."""
    try:
        import pyseccomp as seccomp
    except Exception as exc:  # ImportError, RuntimeError (no libseccomp), OSError
        return None, f"libseccomp/pyseccomp cannot be loaded ({type(exc).__name__}: {exc})"
    return seccomp, ""


def _kernel_seccomp_status() -> tuple[bool, str]:
    """``(supported, current mode)`` from /proc/self/status, else prctl(PR_GET_SECCOMP).

    The prctl fallback matters when /proc is not reachable any more, e.g. after Landlock.
    """
    proc_error = ""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Seccomp:"):
                    return True, line.split(":", 1)[1].strip()
        proc_error = "/proc/self/status has no Seccomp: line"
    except OSError as exc:
        proc_error = f"cannot read /proc/self/status ({exc.strerror})"
    try:
        mode = prctl(PR_GET_SECCOMP)
    except OSError as exc:
        return False, f"{proc_error}; prctl(PR_GET_SECCOMP) failed ({os.strerror(exc.errno)})"
    return True, str(mode)


def probe() -> dict[str, Any]:
    """Whether a seccomp filter can be loaded here: ``{"available": bool, "detail": str}``."""
    kernel_ok, kernel_info = _kernel_seccomp_status()
    if not kernel_ok:
        return {"available": False, "detail": f"seccomp unavailable: {kernel_info}."}
    lib, reason = _import_pyseccomp()
    if lib is None:
        return {"available": False, "detail": f"seccomp unavailable: {reason}."}
    mode = {"0": "no filter yet", "1": "strict mode", "2": "filter mode"}.get(
        kernel_info, kernel_info
    )
    return {
        "available": True,
        "detail": (
            f"seccomp-BPF filters are supported by the kernel (current mode: {mode}) and "
            "libseccomp is loadable."
        ),
    }


def apply(*, network_access: bool | str,
          allow_process_creation: bool = True) -> dict[str, Any]:
    """Load the sandbox seccomp filter into the calling process (irreversible).

    Returns ``{"denied": [...], "network": "unix-only"|"inet-only"|"allowed", "process_creation":
    bool, "unknown": [...]}``.  ``denied`` names every syscall that got at least one EPERM/ENOSYS
    rule (conditional ones included: ``clone``, ``socket``, ``socketpair``);
    ``unknown`` names requested syscalls libseccomp does not know on this architecture.
    ``network_access`` is a bool or ``INET_ONLY``. A filter compiled ahead of time by
    ``precompile`` (in the zygote) is loaded directly, which saves building it with libseccomp
    in every worker.
    Raises :class:`OSError` when seccomp is unavailable or the filter cannot be loaded.
    """
    key = (_network_mode(network_access), bool(allow_process_creation))
    if key in _COMPILED and thread_count() == 1:
        program, info = _COMPILED[key]
        set_no_new_privs()
        _load_bpf(program)
        return dict(info)
    filt, info = _build(key[0], allow_process_creation)
    try:
        filt.load()
    except OSError as exc:
        raise OSError(
            exc.errno, f"seccomp_load failed, process NOT filtered: {exc.strerror}"
        ) from None
    return info


_COMPILED: dict[tuple[bool | str, bool], tuple[bytes, dict[str, Any]]] = {}


def _network_mode(network_access: bool | str) -> bool | str:
    return INET_ONLY if network_access == INET_ONLY else bool(network_access)
SECCOMP_MODE_FILTER = 2


def precompile() -> None:
    """Build every filter variant once (as BPF bytes) so forked workers only have to load it."""
    import tempfile

    for network in (False, True, INET_ONLY):
        for processes in (False, True):
            filt, info = _build(network, processes)
            with tempfile.TemporaryFile() as fh:
                filt.export_bpf(fh)
                fh.seek(0)
                _COMPILED[(network, processes)] = (fh.read(), info)


def _load_bpf(program: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sock_fprog) with a compiled program."""

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    if len(program) % 8:
        raise OSError(errno.EINVAL, "compiled seccomp program has a partial instruction")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    try:
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog))
    except OSError as exc:
        raise OSError(exc.errno, "seccomp load failed, process NOT filtered: "
                      f"{os.strerror(exc.errno)}") from None


def _build(network_access: bool | str,
           allow_process_creation: bool) -> tuple[Any, dict[str, Any]]:
    """Load the sandbox seccomp filter into the calling process (irreversible).

    Returns ``{"denied": [...], "network": "unix-only"|"allowed", "process_creation": bool,
    "unknown": [...]}``.  ``denied`` names every syscall that got at least one EPERM/ENOSYS
    rule (conditional ones included: ``clone``, ``socket``, ``socketpair``);
    ``unknown`` names requested syscalls libseccomp does not know on this architecture.
    Raises :class:`OSError` when seccomp is unavailable or the filter cannot be loaded.
    """
    kernel_ok, kernel_info = _kernel_seccomp_status()
    if not kernel_ok:
        raise OSError(errno.ENOSYS, f"seccomp confinement requested but unavailable: {kernel_info}")
    seccomp, reason = _import_pyseccomp()
    if seccomp is None:
        raise OSError(errno.ENOSYS, f"seccomp confinement requested but unavailable: {reason}")

    set_no_new_privs()

    eperm = seccomp.ERRNO(errno.EPERM)
    try:
        filt = seccomp.SyscallFilter(seccomp.ALLOW)
    except OSError as exc:
        raise OSError(exc.errno, f"seccomp_init failed: {exc.strerror}") from None

    # Foreign-ABI syscalls (i386 int 0x80, x32) bypass a native-only rule set: kill instead.
    with contextlib.suppress(OSError, AttributeError):
        filt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    tsync = False
    with contextlib.suppress(OSError, AttributeError):
        filt.set_attr(seccomp.Attr.CTL_TSYNC, 1)
        tsync = True
    if not tsync and thread_count() != 1:
        raise OSError(
            errno.EBUSY,
            "seccomp thread synchronisation unsupported and the process has several threads; "
            "refusing to leave threads unfiltered",
        )

    denied: list[str] = []
    unknown: list[str] = []

    def resolve(name: str) -> int | None:
        nr = int(seccomp.resolve_syscall(seccomp.Arch.NATIVE, name))
        if nr < 0 and name in NEWER_SYSCALLS and _UNIFIED_NUMBERS:
            nr = NEWER_SYSCALLS[name]  # (on a kernel without it, a rule nothing can meet)
        if nr < 0:  # __NR_SCMP_ERROR or a pseudo-syscall number: not on this arch
            if name not in unknown:
                unknown.append(name)
            return None
        return nr

    def add(action: int, name: str, *args: Any) -> None:
        nr = resolve(name)
        if nr is None:
            return
        try:
            filt.add_rule(action, nr, *args)
        except OSError as exc:
            raise OSError(
                exc.errno, f"seccomp rule for {name!r} rejected by libseccomp: {exc.strerror}"
            ) from None
        if name not in denied:
            denied.append(name)

    for name in ALWAYS_DENIED:
        add(eperm, name)

    # Namespace creation through clone(): one masked rule per flag (rules are OR-ed).
    for flag in CLONE_NAMESPACE_FLAGS:
        add(eperm, "clone", seccomp.Arg(_CLONE_FLAGS_ARG, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in a struct seccomp cannot read: pretend it does not exist.
    add(seccomp.ERRNO(errno.ENOSYS), "clone3")

    if network_access == INET_ONLY:
        add(eperm, "socket", seccomp.Arg(0, seccomp.GT, AF_INET6))
        for family in (0, *range(AF_UNIX + 2, AF_INET6)):  # AF_UNSPEC, 3..9
            add(eperm, "socket", seccomp.Arg(0, seccomp.EQ, family))
        add(eperm, "socketpair", seccomp.Arg(0, seccomp.NE, AF_UNIX))
    elif not network_access:
        add(eperm, "socket", seccomp.Arg(0, seccomp.NE, AF_UNIX))
        add(eperm, "socketpair", seccomp.Arg(0, seccomp.NE, AF_UNIX))

    if not allow_process_creation:
        add(eperm, "fork")
        add(eperm, "vfork")
        # Threads (CLONE_THREAD) stay allowed; anything else creates a new process.
        add(
            eperm,
            "clone",
            seccomp.Arg(_CLONE_FLAGS_ARG, seccomp.MASKED_EQ, CLONE_THREAD, 0),
        )

    return filt, {
        "denied": denied,
        "network": ("inet-only" if network_access == INET_ONLY
                    else "allowed" if network_access else "unix-only"),
        "process_creation": bool(allow_process_creation),
        "unknown": unknown,
    }
