"""The host side of ``network_access`` allow-lists: a filtering egress proxy per sandbox.

A sandbox with an allow-list keeps its own, empty network namespace; the only way out is a
unix socket of an ``EgressProxy`` running here, on the host, which resolves names itself, checks
every connection after resolution (``AllowList``) and writes one audit record per connection.
"""

from agenticraft.sandbox.egress.allowlist import AllowList, Decision
from agenticraft.sandbox.egress.proxy import EgressProxy
from agenticraft.sandbox.egress.resolver import Resolver, StaticResolver, SystemResolver

__all__ = ["AllowList", "Decision", "EgressProxy", "Resolver", "StaticResolver",
           "SystemResolver"]
