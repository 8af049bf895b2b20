"""Memory pages shared between sandboxes (opt-in: ``AGENTICRAFT_SHARE_PAGES=1`` on the host).

Every kernel's zygote preloads the same libraries (IPython, ipykernel: ~40 MB of heap), but
each zygote lays them out at random addresses with its own string-hash seed, so no two heaps
have a page in common (measured: 1 % of pages identical; 97 % with a fixed layout and seed).
With sharing on, the zygote runs without address-space randomisation and with hash seed 0,
and opts its memory (inherited by every worker it forks) into the kernel's same-page merging
(KSM, ``PR_SET_MEMORY_MERGE``, Linux >= 6.4): ksmd then keeps one copy of each identical page
for all of a host's sandboxes.

What it gives up, and why it is opt-in: code inside a sandbox can already read and write its
own memory (it runs Python), so randomising that memory protects nothing across the boundary;
but merged pages are a timing side channel between sandboxes (a write to a merged page takes
longer, which tells whether another sandbox holds a page with the same content), and all
sandboxes' ``hash()`` of a string is the same, known function. Nothing of the host's own
processes (the kernels' parents, the supervisor) is merged or loses its randomisation.
"""

from __future__ import annotations

import os

from agenticraft.jail.confine.libc import PR_SET_MEMORY_MERGE, personality, prctl

ADDR_NO_RANDOMIZE = 0x0040000
QUERY = 0xFFFFFFFF
#: The one hash seed of every sharing sandbox (set before the zygote's interpreter starts).
HASH_SEED = "0"


def fix_layout() -> bool:
    """Switch address-space randomisation off for the next exec of this process. True when
    it was on: the caller must re-exec itself for a fixed layout (and its hash seed)."""
    current = personality(QUERY)
    if current & ADDR_NO_RANDOMIZE and os.environ.get("PYTHONHASHSEED") == HASH_SEED:
        return False
    personality(current | ADDR_NO_RANDOMIZE)
    os.environ["PYTHONHASHSEED"] = HASH_SEED
    return True


def merge() -> str | None:
    """Opt this process's memory, and what it forks, into same-page merging; None when done,
    otherwise why not."""
    try:
        prctl(PR_SET_MEMORY_MERGE, 1)
    except OSError as exc:
        return f"PR_SET_MEMORY_MERGE refused ({exc.strerror}; Linux >= 6.4 needed)"
    return None
