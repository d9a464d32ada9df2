"""Node kinds, one module per kind (containerlab's idea): each says how to build its
image, write its config from the plan, start it on each runtime, probe it ready and read
its log for ``trace``. The runtimes, the lab directory and the trace ask this registry,
never a chain of ifs over kind names.

``kind`` is which software runs a node; its ``role`` (mxlab.lab.topology.KIND_ROLES) is
what the node does, and decides which node config the planner gives it: a postfix node
reads a relay's config, a dovecot node a store's. Modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the topology reads MODULES without loading every kind
    from mxlab.lab.kinds.base import Kind

__all__ = ["MODULES", "get"]

# kind -> "module:attribute" of its Kind
MODULES: dict[str, str] = {
    "dns": "mxlab.lab.kinds.ours:DNS",
    "relay": "mxlab.lab.kinds.ours:RELAY",
    "store": "mxlab.lab.kinds.ours:STORE",
    "postfix": "mxlab.lab.kinds.postfix:KIND",
    "dovecot": "mxlab.lab.kinds.dovecot:KIND",
    "external": "mxlab.lab.kinds.external:KIND",
    "sink": "mxlab.lab.kinds.sink:KIND",
    "nsd": "mxlab.lab.kinds.nsd:KIND",
    "unbound": "mxlab.lab.kinds.unbound:KIND",
}


def get(kind: str) -> Kind:
    """The kind called ``kind`` (the topology refuses names this registry lacks)."""
    module, _, attribute = MODULES[kind].partition(":")
    found: Kind = getattr(importlib.import_module(module), attribute)
    return found
