"""A server mxlab does not run (a developer's SMTP server under test, a Postfix on the
host, a sink started by ``mxlab sink``): the plan gives it a name, an A record and the
ports relays use; no runtime starts, probes or stops it."""

from __future__ import annotations

from mxlab.lab.kinds.base import Kind
from mxlab.lab.plan import NodePlan


class ExternalKind(Kind):
    name = "external"
    runs = False

    def is_ready(self, node: NodePlan, timeout: float) -> bool:
        return True  # not ours to wait for: a check shows whether it took the mail


KIND = ExternalKind()
